//! A real `redis-server` (Debian's, installed by `scripts/setup.sh`) for
//! tests: the durable settings the Redis store requires (`appendonly yes`,
//! `appendfsync always`, no snapshots, `noeviction`), its own temp dir, a
//! free loopback port; killed (SIGKILL) when dropped. It can be killed and
//! started again on the same dir and port, as a crashed primary would be.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one; panics (saying how to install it) if there is no `redis-server`.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts one with `settings` (redis-server flags) overriding the
    /// durable defaults.
    pub fn start_with(settings: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        for _ in 0..5 {
            // A port free now; another process may take it before Redis
            // does, so try again if Redis cannot bind it.
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("probe a free port")
                .port();
            match launch(dir.path(), port, settings) {
                Ok(child) => {
                    return Self {
                        child: Some(child),
                        port,
                        dir,
                    };
                }
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("redis-server did not start: {log}"),
            }
        }
        panic!("redis-server found no free port in 5 attempts");
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills it with SIGKILL (nothing is flushed on the way out).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same dir and port, with the durable settings
    /// (killing it first if it runs).
    pub fn restart(&mut self) {
        self.kill();
        match launch(self.dir.path(), self.port, &[]) {
            Ok(child) => self.child = Some(child),
            Err(log) => panic!("redis-server did not start again: {log}"),
        }
    }
}

/// Runs redis-server on `port` in `dir` (the durable settings, then
/// `settings`); returns once it accepts
/// connections, or its log if it exits first (or is not ready within 10 s).
fn launch(dir: &Path, port: u16, settings: &[&str]) -> Result<Child, String> {
    let mut child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--dir"])
        .arg(dir)
        .args([
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
        ])
        .args(settings)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run redis-server ({e}): install it with `bash scripts/setup.sh`"));
    let stdout = child.stdout.take().expect("stdout");
    let (ready_tx, ready) = mpsc::channel();
    // Reads its log: says when it is ready, then keeps the pipe drained.
    std::thread::spawn(move || {
        let mut log = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            log.push_str(&line);
            log.push('\n');
            if line.contains("Ready to accept connections") {
                let _ = ready_tx.send(Ok(()));
            }
        }
        let _ = ready_tx.send(Err(log));
    });
    let outcome = ready
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| Err("not ready within 10 s".into()));
    match outcome {
        Ok(()) => Ok(child),
        Err(log) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(log)
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
