//! Criterion benchmarks: per-event filter costs and `FilterIndex::matching` scaling.
fn main() {}
