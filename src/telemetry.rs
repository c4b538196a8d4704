//! Logging: `tracing` to stderr, human-readable or JSON lines. `RUST_LOG` filters (default `info`).

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

pub fn init(format: LogFormat) {
    init_with_default(format, "info");
}

/// Like [`init`], with another default filter when `RUST_LOG` is unset.
pub fn init_with_default(format: LogFormat, default_filter: &str) {
    let mut filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // tungstenite traces the whole handshake request, whose URL holds Socket Mode's one-time
    // connection ticket (a credential): never below debug, whatever RUST_LOG says.
    if let Ok(cap) = "tungstenite::handshake=debug".parse() {
        filter = filter.add_directive(cap);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
