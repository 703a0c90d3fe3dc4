//! The real `evmesh` binary in a test: `serve` on 127.0.0.1:0 with every stderr and stdout line
//! kept, signals, kill -9, the exit status, and the client commands against it.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// How long `serve` may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `evmesh serve` process (the real binary) and the address it listens on.
pub struct EvmeshProcess {
    pub child: Child,
    pub addr: String,
    lines: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<Vec<String>>>,
}

impl EvmeshProcess {
    /// Spawns `evmesh serve -f config --listen 127.0.0.1:0 --data-dir data extra...` with
    /// `EVMESH_LOG=info` and waits until it logs its address.
    pub fn start(config: &Path, data: &Path, extra: &[&str]) -> Self {
        Self::spawn(config, data, extra, Some("info"))
    }

    /// As [`EvmeshProcess::start`], with `env` added to the process's environment.
    #[allow(dead_code)]
    pub fn start_with_env(
        config: &Path,
        data: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::spawn_env(config, data, extra, Some("info"), env)
    }

    /// As [`EvmeshProcess::start`], at the default log level (`EVMESH_LOG` unset), as a user
    /// runs it.
    pub fn start_at_default_log_level(config: &Path, data: &Path, extra: &[&str]) -> Self {
        Self::spawn(config, data, extra, None)
    }

    /// As [`EvmeshProcess::start`], with `EVMESH_LOG` set to `log`.
    pub fn start_with_log(config: &Path, data: &Path, extra: &[&str], log: &str) -> Self {
        Self::spawn(config, data, extra, Some(log))
    }

    fn spawn(config: &Path, data: &Path, extra: &[&str], log: Option<&str>) -> Self {
        Self::spawn_env(config, data, extra, log, &[])
    }

    fn spawn_env(
        config: &Path,
        data: &Path,
        extra: &[&str],
        log: Option<&str>,
        env: &[(&str, &str)],
    ) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_evmesh"));
        // ApiServerSources watch evmesh's own API in tests, whatever cluster this machine has.
        cmd.env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .envs(env.iter().copied());
        cmd.args(["serve", "-f"])
            .arg(config)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match log {
            Some(level) => cmd.env("EVMESH_LOG", level),
            None => cmd.env_remove("EVMESH_LOG"),
        };
        let mut child = cmd.spawn().expect("spawn evmesh");
        let stderr = child.stderr.take().expect("stderr");
        let stdout_pipe = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let kept_out = stdout.clone();
        // Stdout too is drained (a full pipe would block the child) and kept for failure reports.
        let stdout_reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout_pipe).lines().map_while(Result::ok) {
                kept_out.lock().expect("stdout lines").push(line);
            }
        });
        let (addr_tx, addr_rx) = mpsc::channel();
        let kept = lines.clone();
        // Keep draining stderr so the child never blocks on a full pipe; keep every line.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("evmesh listening on ").nth(1)
                    && let Some(addr) = rest.split_whitespace().next()
                {
                    let _ = addr_tx.send(addr.trim_end_matches('"').to_string());
                }
                kept.lock().expect("lines").push(line);
            }
        });
        let addr = match addr_rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => addr,
            Err(e) => {
                // Disconnected: stderr closed, the process is exiting; Timeout: still running.
                let exited = match e {
                    mpsc::RecvTimeoutError::Disconnected => child.wait().ok(),
                    mpsc::RecvTimeoutError::Timeout => {
                        let _ = child.kill();
                        let _ = child.wait();
                        None
                    }
                };
                // The process is gone: its stdout reader ends after the last line.
                let _ = stdout_reader.join();
                panic!(
                    "evmesh did not start listening ({e}; exit status {exited:?}); stderr:\n{}\n\
                     stdout:\n{}",
                    lines.lock().expect("lines").join("\n"),
                    tail(&stdout.lock().expect("stdout lines"), 50)
                );
            }
        };
        EvmeshProcess {
            child,
            addr,
            lines,
            stdout,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Every line the process wrote to stderr so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    /// The last 200 lines the process wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        tail(&self.lines(), 200)
    }

    /// For a failure message: the exit status when the process has ended, the last `n` lines of
    /// its stderr and of its stdout.
    pub fn output_tail(&mut self, n: usize) -> String {
        let status = self.child.try_wait().ok().flatten();
        format!(
            "exit status: {}\nstderr (last {n} lines):\n{}\nstdout (last {n} lines):\n{}",
            status.map_or("still running".to_string(), |s| s.to_string()),
            tail(&self.lines(), n),
            tail(&self.stdout.lock().expect("stdout lines"), n)
        )
    }

    /// Whether some stderr line contains every one of `parts`.
    pub fn has_line(&self, parts: &[&str]) -> bool {
        self.lines()
            .iter()
            .any(|l| parts.iter().all(|p| l.contains(p)))
    }

    /// Waits until some stderr line contains every one of `parts`, failing after `timeout`.
    pub async fn wait_for_line(&self, what: &str, parts: &[&str], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.has_line(parts) {
            assert!(
                Instant::now() < deadline,
                "no log line for {what} ({parts:?}) within {timeout:?} in:\n{}",
                self.lines().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, and reap the process.
    pub fn kill9(mut self) {
        self.sigkill();
    }

    /// SIGKILL, and reap the process, keeping this handle (and the output) for later reports.
    pub fn sigkill(&mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    /// Sends `signal` (a name `kill` knows: `TERM`, `HUP`, ...) to this process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Sends SIGTERM to this process.
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Waits for the process to exit, failing after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            if Instant::now() > deadline {
                panic!(
                    "evmesh did not exit within {timeout:?}; stderr:\n{}",
                    self.stderr_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs an `evmesh` client command against this server with `--data-dir data` (where the
    /// admin token is); returns (success, stdout+stderr).
    pub fn cli(&self, data: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_evmesh"))
            .args(args)
            .args(["--server", &self.url(""), "--data-dir"])
            .arg(data)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn evmesh client");
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("write stdin");
        } else {
            drop(child.stdin.take());
        }
        let out = child.wait_with_output().expect("client output");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

impl Drop for EvmeshProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `n` of `lines`, one per line.
fn tail(lines: &[String], n: usize) -> String {
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Writes `yaml` to `dir/mesh.yaml` and returns the path.
pub fn write_config(dir: &Path, yaml: &str) -> PathBuf {
    let path = dir.join("mesh.yaml");
    std::fs::write(&path, yaml).expect("write config");
    path
}
