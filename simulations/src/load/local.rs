//! `omega-sim load --local`'s node: a real `omega_node::RunningNode` in a
//! child process (this binary re-executed with the hidden `load-node`
//! subcommand), so that the node's memory is its own (`node_rss_mb` reads
//! the child's `/proc/PID/status`) and the node and the simulated devices
//! do not share a runtime. The child gets a fresh temporary data directory
//! (the embedded redb store), the certificate directory the devices' CA
//! lives in, and a configuration for load: the per-device rate limit off,
//! room for every device's connection. It prints its QUIC address on
//! stdout and runs until its stdin closes (the parent ending, however it
//! ends, closes it).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use omega_node::{Config, RunningNode, ServeOptions};

/// The hidden subcommand the child runs.
pub const CHILD_COMMAND: &str = "load-node";

/// What the first line of the child's stdout starts with.
const READY: &str = "quic ";

/// The configuration of a node under load from `devices` devices.
pub fn load_config(devices: usize) -> String {
    // Every device holds one connection; some slack for faulty devices
    // reconnecting while their old connection is still being closed.
    let connections = (devices * 2 + 64).max(Config::default().max_connections);
    format!(
        "listen = \"127.0.0.1:0\"\n\
         admin = \"127.0.0.1:0\"\n\
         rate_limit_interval_secs = 0\n\
         max_connections = {connections}\n\
         regions = [\"{}\"]\n",
        omega_protocol::DEFAULT_REGION
    )
}

/// A node running in a child process.
#[derive(Debug)]
pub struct LocalNode {
    child: Child,
    stdin: Option<ChildStdin>,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl LocalNode {
    /// Starts `exe load-node` on a fresh data directory with the
    /// certificates in `certs` and [`load_config`]; waits for its address.
    pub fn start(exe: &Path, certs: &Path, devices: usize) -> Result<Self> {
        let dir = tempfile::tempdir().context("a temporary data directory")?;
        let config = dir.path().join("node.toml");
        std::fs::write(&config, load_config(devices)).context("writing node.toml")?;
        let mut child = Command::new(exe)
            .arg(CHILD_COMMAND)
            .arg("--certs")
            .arg(certs)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let stdin = child.stdin.take();
        let Some(stdout) = child.stdout.take() else {
            bail!("the node's stdout is not piped");
        };
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        let addr = match read {
            Ok(_) => line
                .trim()
                .strip_prefix(READY)
                .and_then(|a| a.parse::<SocketAddr>().ok()),
            Err(_) => None,
        };
        let Some(addr) = addr else {
            let _ = child.kill();
            let status = child.wait();
            bail!("the node did not start ({status:?}); its errors are above");
        };
        Ok(Self {
            child,
            stdin,
            addr,
            _dir: dir,
        })
    }

    /// The node's QUIC address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A memory line of the node's `/proc/PID/status` (`VmHWM:` peak,
    /// `VmRSS:` now) in MiB.
    pub fn memory_mb(&self, key: &str) -> Option<f64> {
        proc_status_mb(&format!("/proc/{}/status", self.pid()), key)
    }

    /// Closes the node's stdin (it shuts down cleanly) and waits for it;
    /// kills it after `grace`.
    pub fn stop(mut self, grace: Duration) -> Result<()> {
        drop(self.stdin.take());
        let deadline = std::time::Instant::now() + grace;
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("the node exited with {status}");
                }
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("the node did not stop within {grace:?}: killed");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A memory line of a `/proc/.../status` file in MiB.
pub fn proc_status_mb(path: &str, key: &str) -> Option<f64> {
    std::fs::read_to_string(path).ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
    })
}

/// What the child is told.
#[derive(Debug, Clone)]
pub struct ChildArgs {
    /// The certificate directory.
    pub certs: PathBuf,
    /// The (fresh) data directory.
    pub data_dir: PathBuf,
    /// The configuration file.
    pub config: PathBuf,
}

/// The child's body: runs the node until stdin closes.
pub async fn serve_child(args: ChildArgs) -> Result<()> {
    let config = Config::from_file(&args.config)?;
    let node = RunningNode::start(ServeOptions {
        data_dir: args.data_dir,
        model_dir: None,
        certs_dir: args.certs,
        config,
        admin_token: None,
    })
    .await
    .context("starting the node")?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{READY}{}", node.quic_addr())?;
        out.flush()?;
    }
    // Blocks a thread until the parent closes the pipe (or is gone).
    tokio::task::spawn_blocking(|| {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin().lock();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
    })
    .await
    .context("waiting on stdin")?;
    if !node.shutdown().await {
        bail!("the node did not shut down cleanly");
    }
    Ok(())
}
