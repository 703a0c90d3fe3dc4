//! A Tansu (Kafka-protocol broker) of a test's own, on a loopback port, for tests that stop Kafka,
//! start it late or need it configured otherwise (SASL required, another advertised address); the
//! shared one, `EVMESH_TEST_KAFKA`, must keep running.

use std::time::Duration;

/// A Tansu of this test's own on a free loopback port (the shared one must keep running).
pub struct OwnTansu {
    pub child: std::process::Child,
    pub addr: String,
}

/// How a test's own Tansu is started.
#[derive(Clone, Debug, Default)]
pub struct TansuOptions {
    /// `--authentication`: every client must authenticate with SASL first.
    pub authentication: bool,
    /// The port advertised to clients in metadata, when not the one Tansu listens on (a proxy in
    /// front of it).
    pub advertised_port: Option<u16>,
}

/// The Tansu binary: `EVMESH_TEST_TANSU` (set by `.ci/services/kafka.sh`), else `tansu`.
pub fn tansu_bin() -> String {
    std::env::var("EVMESH_TEST_TANSU").unwrap_or_else(|_| "tansu".into())
}

/// Whether a Tansu binary can be run here; false (with a message saying the test is skipped)
/// only outside CI, where `.ci/services/kafka.sh` always provides one.
pub fn tansu_available(test: &str) -> bool {
    let ok = std::process::Command::new(tansu_bin())
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "no Tansu binary ({}) in CI: `.ci/services/kafka.sh` provides one",
            tansu_bin()
        );
        println!(
            "{test}: no Tansu binary ({}); skipping (`source .ci/services/kafka.sh` sets EVMESH_TEST_TANSU)",
            tansu_bin()
        );
    }
    ok
}

/// A loopback port nothing listens on (yet).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl OwnTansu {
    pub async fn start() -> OwnTansu {
        OwnTansu::start_on(free_port()).await
    }

    pub async fn start_on(port: u16) -> OwnTansu {
        OwnTansu::start_with(port, &TansuOptions::default()).await
    }

    /// A Tansu on `port` configured by `options`.
    pub async fn start_with(port: u16, options: &TansuOptions) -> OwnTansu {
        let bin = tansu_bin();
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised = format!(
            "tcp://127.0.0.1:{}",
            options.advertised_port.unwrap_or(port)
        );
        let mut command = std::process::Command::new(&bin);
        command
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &advertised])
            .args(["--storage-engine", "memory://tansu/"]);
        if options.authentication {
            command.arg("--authentication");
        }
        let child = command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting {bin} failed ({e}); `source .ci/services/kafka.sh` sets EVMESH_TEST_TANSU")
            });
        let addr = format!("127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(&addr).await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "tansu did not listen on {addr}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        OwnTansu { child, addr }
    }
}

impl Drop for OwnTansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
