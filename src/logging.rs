//! Log output through `tracing`: human-readable or JSON lines on stderr.
//!
//! Logs carry UIDs, AE titles and addresses; never patient names or birth dates.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LoggingConfig};

/// Install the global subscriber. `RUST_LOG`, when set, overrides the configured level.
pub fn init(config: &LoggingConfig) {
    // ONNX Runtime's INFO output is very chatty.
    let directives = format!("{},ort=warn,sqlx=warn", config.level);
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&directives))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match config.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}

/// An error and its causes on one line, `error: cause: cause`: library errors never repeat their
/// cause's text, so each part appears once.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
