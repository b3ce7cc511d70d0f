//! tracing setup: human format on a terminal, JSON lines otherwise or when
//! configured; the level from `[log] level`, overridden by `RUST_LOG`.
//!
//! Every line of a client session carries the listener's `session` span
//! (id, protocol, listener, client, login, owner, end: see
//! [`crate::net::listener`]). In JSON each line has a `spans` array with
//! the fields of every span it is in, so the session's fields are in
//! `spans[0]`; the human format prints them before the message.

use crate::config::{LogConfig, LogFormat};
use std::io::IsTerminal;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Install the global subscriber (once; later calls are ignored).
pub fn init(log: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("mailshare={0},{0}", log.level)));
    let json = match log.format {
        LogFormat::Json => true,
        LogFormat::Human => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let ansi = !json && std::io::stderr().is_terminal();
    let _ = subscriber(filter, json, ansi, std::io::stderr).try_init();
}

/// The subscriber `init` installs, writing to `writer` (tests pass a
/// buffer); `ansi`: colours in the human format.
pub fn subscriber<W>(
    filter: EnvFilter,
    json: bool,
    ansi: bool,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    if json {
        // The list of spans (not the innermost one alone): the session's
        // fields stay on a line even inside a nested span.
        Box::new(
            builder
                .json()
                .with_current_span(false)
                .with_span_list(true)
                .finish(),
        )
    } else {
        Box::new(builder.finish())
    }
}
