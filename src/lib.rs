//! evmesh
