//! Captures everything the process logs, for tests that assert what must
//! never be logged (API keys, secret-marked payload fields).

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// The process-wide log capture: TRACE for every target, span opens and
/// closes with their fields, and `log` records (librdkafka, sqlx) bridged in.
#[derive(Clone)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// Installs the capture as the global subscriber (once per process; a test
    /// binary that uses it must not install another) and returns it.
    pub fn install() -> LogCapture {
        static CAPTURE: OnceLock<LogCapture> = OnceLock::new();
        CAPTURE
            .get_or_init(|| {
                let capture = LogCapture(Arc::new(Mutex::new(Vec::new())));
                let sink = capture.clone();
                tracing_subscriber::fmt()
                    .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
                    .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
                    .with_ansi(false)
                    .with_writer(move || sink.clone())
                    .try_init()
                    .expect("the log capture must be the test binary's only global subscriber");
                capture
            })
            .clone()
    }

    /// Everything logged since the capture was installed.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

impl Write for LogCapture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The line of `text` around byte `at` (to show where a secret leaked).
pub fn line_at(text: &str, at: usize) -> &str {
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    &text[start..end]
}
