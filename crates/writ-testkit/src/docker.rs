//! Is a Docker engine reachable? A cheap, non-panicking probe, cached per process, that decides whether testcontainers is an option.

use std::io::{Read, Write};
use std::sync::OnceLock;
use std::time::Duration;

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// True when `DOCKER_HOST` or `/var/run/docker.sock` answers `GET /_ping` with `OK`.
pub(crate) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let ok = probe();
        if !ok {
            eprintln!("writ-testkit: no Docker engine reachable; not using testcontainers");
        }
        ok
    })
}

fn probe() -> bool {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if h.starts_with("tcp://") => {
            let addr = h.trim_start_matches("tcp://").trim_end_matches('/');
            let Ok(mut addrs) = std::net::ToSocketAddrs::to_socket_addrs(addr) else {
                return false;
            };
            let Some(a) = addrs.next() else { return false };
            std::net::TcpStream::connect_timeout(&a, PROBE_TIMEOUT)
                .map(|s| ping(s, PROBE_TIMEOUT))
                .unwrap_or(false)
        }
        Ok(h) if h.starts_with("unix://") => unix_ping(h.trim_start_matches("unix://")),
        Ok(_) => false,
        Err(_) => unix_ping("/var/run/docker.sock"),
    }
}

#[cfg(unix)]
fn unix_ping(path: &str) -> bool {
    if !std::path::Path::new(path).exists() {
        return false;
    }
    std::os::unix::net::UnixStream::connect(path)
        .map(|s| ping(s, PROBE_TIMEOUT))
        .unwrap_or(false)
}

#[cfg(not(unix))]
fn unix_ping(_path: &str) -> bool {
    false
}

/// Anything that can carry one HTTP/1.0 exchange with read/write timeouts.
trait Stream: Read + Write {
    fn timeouts(&self, t: Duration) -> std::io::Result<()>;
}

impl Stream for std::net::TcpStream {
    fn timeouts(&self, t: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }
}

#[cfg(unix)]
impl Stream for std::os::unix::net::UnixStream {
    fn timeouts(&self, t: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }
}

fn ping(mut s: impl Stream, t: Duration) -> bool {
    if s.timeouts(t).is_err()
        || s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.take(4096).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    text.starts_with("HTTP/1.") && text.contains(" 200 ") && text.ends_with("OK")
}
