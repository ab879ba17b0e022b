//! Shared by the integration tests: start the real `omega-braind` binary with
//! a config in a temporary directory and talk to it over its socket. Every
//! wait polls a condition with [`DEADLINE`]; nothing sleeps to synchronize.
// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The admin token of the in-process nodes the sync tests start (the node
/// refuses tokens under 32 bytes).
pub const ADMIN_TOKEN: &str = "braind-test-admin-token-0123456789";

/// The bound of every wait.
pub const DEADLINE: Duration = Duration::from_secs(60);
/// How often a wait re-checks its condition (a poll interval, not a sync point:
/// every wait has a deadline). Spinning instead would take a core from the
/// daemon under test on a 2-core machine.
const POLL: Duration = Duration::from_millis(5);

/// The model directory (`OMEGA_MODEL_DIR` or the workspace's `models/`).
pub use omega_embed::default_model_dir as model_dir;

/// A running daemon; killed on drop.
pub struct Daemon {
    pub child: Option<Child>,
    /// Its data directory (the socket is `brain.sock` in it).
    pub dir: PathBuf,
    pub stderr: PathBuf,
}

impl Daemon {
    /// Writes `config` to `dir/braind.toml`, starts the daemon on `dir/data`
    /// and waits until `health` answers.
    pub fn start(dir: &Path, config: &str) -> Daemon {
        Self::start_with_env(dir, config, &[])
    }

    /// [`Self::start`] with extra environment variables.
    pub fn start_with_env(dir: &Path, config: &str, env: &[(&str, &str)]) -> Daemon {
        let cfg = dir.join("braind.toml");
        std::fs::write(&cfg, config).unwrap();
        let data = dir.join("data");
        let stderr = dir.join(format!(
            "stderr-{}.log",
            std::process::id() as u128 * 1000 + now_ms() % 1000
        ));
        let child = Command::new(env!("CARGO_BIN_EXE_omega-braind"))
            .arg("--data-dir")
            .arg(&data)
            .arg("--model-dir")
            .arg(model_dir())
            .arg("--config")
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut d = Daemon {
            child: Some(child),
            dir: data,
            stderr,
        };
        let t = Instant::now();
        loop {
            if let Ok(r) = d.try_call(&json!({"id": 0, "op": "health"})) {
                if r["ok"] == json!(true) {
                    break;
                }
            }
            if let Some(st) = d.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited {st}: {}", d.stderr_text());
            }
            assert!(
                t.elapsed() < DEADLINE,
                "daemon did not answer: {}",
                d.stderr_text()
            );
            std::thread::sleep(POLL);
        }
        d
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("brain.sock")
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// A new connection whose reads time out after [`DEADLINE`].
    pub fn connect(&self) -> Conn {
        Conn::new(UnixStream::connect(self.socket()).unwrap())
    }

    /// One request on a new connection.
    pub fn try_call(&self, req: &Value) -> std::io::Result<Value> {
        let s = UnixStream::connect(self.socket())?;
        s.set_read_timeout(Some(DEADLINE))?;
        let mut c = Conn {
            r: BufReader::new(s.try_clone()?),
            w: s,
        };
        c.send_raw(format!("{req}\n").as_bytes())?;
        c.recv()
    }

    pub fn call(&self, req: Value) -> Value {
        self.try_call(&req).unwrap()
    }

    /// One request that must succeed; its `result`.
    pub fn ok(&self, req: Value) -> Value {
        let r = self.call(req.clone());
        assert_eq!(r["ok"], json!(true), "{req} -> {r}");
        r["result"].clone()
    }

    pub fn kill9(&mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap(); // SIGKILL
        c.wait().unwrap();
    }

    /// Sends SIGTERM and returns at once.
    pub fn sigterm(&self) {
        let c = self.child.as_ref().unwrap();
        let st = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    /// Waits (with [`DEADLINE`]) for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut c = self.child.take().unwrap();
        let t = Instant::now();
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            assert!(
                t.elapsed() < DEADLINE,
                "daemon did not stop: {}",
                self.stderr_text()
            );
            std::thread::sleep(POLL);
        }
    }

    /// SIGTERM, then: exit status 0 and the socket file removed.
    pub fn terminate(&mut self) {
        self.sigterm();
        let st = self.wait_exit();
        assert!(st.success(), "exit {st}: {}", self.stderr_text());
        assert!(!self.socket().exists(), "socket removed at shutdown");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// One connection, newline-delimited JSON each way.
pub struct Conn {
    pub r: BufReader<UnixStream>,
    pub w: UnixStream,
}

impl Conn {
    /// Wraps a connected stream; reads time out after [`DEADLINE`].
    pub fn new(s: UnixStream) -> Conn {
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        Conn {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        }
    }

    /// Sets the read timeout (the socket option is shared by both halves).
    pub fn set_read_timeout(&self, d: Duration) {
        self.w.set_read_timeout(Some(d)).unwrap();
    }

    pub fn send_raw(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.w.write_all(b)
    }

    pub fn send(&mut self, req: &Value) {
        self.send_raw(format!("{req}\n").as_bytes()).unwrap();
    }

    /// The next response line; `UnexpectedEof` when the daemon closed.
    pub fn recv(&mut self) -> std::io::Result<Value> {
        let mut l = String::new();
        if self.r.read_line(&mut l)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed",
            ));
        }
        serde_json::from_str(&l)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    pub fn call(&mut self, req: &Value) -> Value {
        self.send(req);
        self.recv().unwrap()
    }
}

/// Polls `f` until it holds; fails the test after [`DEADLINE`].
pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(POLL);
    }
}
