//! Structured logs: text for people, JSON for collectors. `RUST_LOG` overrides the configured level.

use portcullis_config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

pub(crate) fn init(log: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    // Colour only for a person at a terminal; a pipe or a file gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    // A second init (tests calling in-process) is harmless, so its error is ignored.
    let _ = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
}
