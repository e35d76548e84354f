//! The spawned processes: workers and the ingress, each its own OS process
//! with its own log file, killed with SIGKILL (no drain, no commit) or stopped
//! with SIGTERM, and sampled for resident memory from `/proc`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::error::ChaosError;

/// What a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// `writ-worker`, interactive profile.
    Worker,
    /// `writ-worker`, bulk profile.
    BulkWorker,
    /// `writ-ingress`.
    Ingress,
}

/// One spawned process.
#[derive(Debug)]
pub struct Proc {
    /// Stable name across restarts (`worker-1`, `ingress`).
    pub name: String,
    /// What it is.
    pub role: Role,
    binary: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Child,
    /// Times it was started.
    pub starts: u32,
}

impl Proc {
    /// Spawns `binary --config config`, appending its output to `log_dir/<name>.log`.
    pub fn spawn(
        name: &str,
        role: Role,
        binary: &Path,
        config: &Path,
        log_dir: &Path,
    ) -> Result<Self, ChaosError> {
        let log = log_dir.join(format!("{name}.log"));
        let child = start(name, role, binary, config, &log)?;
        Ok(Self {
            name: name.to_owned(),
            role,
            binary: binary.to_path_buf(),
            config: config.to_path_buf(),
            log,
            child,
            starts: 1,
        })
    }

    /// The current OS pid (None once reaped).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// SIGKILL, reap, start again.
    pub async fn kill_and_restart(&mut self) -> Result<(), ChaosError> {
        self.kill().await?;
        self.child = start(&self.name, self.role, &self.binary, &self.config, &self.log)?;
        self.starts += 1;
        Ok(())
    }

    /// SIGKILL and reap.
    pub async fn kill(&mut self) -> Result<(), ChaosError> {
        // start_kill is SIGKILL on unix; an already exited child is fine.
        let _ = self.child.start_kill();
        self.child
            .wait()
            .await
            .map_err(|e| ChaosError::io(format!("reaping {}", self.name), e))?;
        Ok(())
    }

    /// SIGTERM, then wait up to `grace` for a clean exit (SIGKILL after it).
    /// Returns whether it exited 0 within the grace period.
    pub async fn terminate(&mut self, grace: Duration) -> Result<bool, ChaosError> {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) on a child we spawned and have not reaped.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => Ok(status
                .map_err(|e| ChaosError::io(format!("waiting for {}", self.name), e))?
                .success()),
            Err(_) => {
                self.kill().await?;
                Ok(false)
            }
        }
    }

    /// Whether it exited on its own (not killed by the harness), with how.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }

    /// Its resident set size in bytes, from `/proc/<pid>/status`.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        parse_vm_rss(&status)
    }

    /// The last `lines` lines of its log, for failure reports.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

fn start(
    name: &str,
    role: Role,
    binary: &Path,
    config: &Path,
    log: &Path,
) -> Result<Child, ChaosError> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| ChaosError::io(format!("opening {}", log.display()), e))?;
    let err = out
        .try_clone()
        .map_err(|e| ChaosError::io("duplicating a log handle", e))?;
    let mut cmd = Command::new(binary);
    if role != Role::Ingress {
        // Names the worker in `writ.dlq.worker.id`; the ingress has no such key.
        cmd.env("WRIT__WORKER_ID", name);
    }
    cmd.arg("--config")
        .arg(config)
        .env(
            "RUST_LOG",
            // Rebalances (writ_kafka, info) are kept: a lost or doubled
            // command is explained by the partition moves around it; offset
            // gaps (writ_kafka::gap, debug) tell records the broker skipped.
            std::env::var("WRIT_CHAOS_CHILD_LOG")
                .unwrap_or_else(|_| "warn,writ_kafka=info,writ_kafka::gap=debug".into()),
        )
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ChaosError::io(format!("spawning {} ({})", name, binary.display()), e))
}

/// `VmRSS:   12345 kB` → bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\twrit-worker\nVmPeak:\t  300 kB\nVmRSS:\t  123456 kB\nThreads:\t9\n";
        assert_eq!(parse_vm_rss(status), Some(123_456 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    #[tokio::test]
    async fn own_process_rss_is_readable_and_kill_restart_reaps() {
        let dir = tempfile::tempdir().unwrap();
        // `sleep --config <file>` fails at once; a shell stand-in that ignores its args lives long enough.
        let script = dir.path().join("stand-in");
        std::fs::write(&script, "#!/bin/sh\nexec sleep 30\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let mut p = Proc::spawn("w", Role::Worker, &script, dir.path(), dir.path()).unwrap();
        let first = p.pid().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(p.rss_bytes().unwrap() > 0);
        assert_eq!(p.exited(), None);
        p.kill_and_restart().await.unwrap();
        assert_ne!(p.pid().unwrap(), first);
        assert_eq!(p.starts, 2);
        assert!(
            !p.terminate(Duration::from_secs(5)).await.unwrap(),
            "sleep dies of SIGTERM, not exit 0"
        );
    }
}
