//! A Tansu (Kafka-protocol broker) of a test's own, on a loopback port, for tests that stop Kafka
//! or start it late (the shared one, `EVMESH_TEST_KAFKA`, must keep running).

use std::time::Duration;

/// A Tansu of this test's own on a free loopback port (the shared one must keep running).
pub struct OwnTansu {
    pub child: std::process::Child,
    pub addr: String,
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
        let bin = std::env::var("EVMESH_TEST_TANSU").unwrap_or_else(|_| "tansu".into());
        let url = format!("tcp://127.0.0.1:{port}");
        let child = std::process::Command::new(&bin)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
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
