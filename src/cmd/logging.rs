//! The log on standard error: levels from the config or `RUST_LOG`, and the
//! dependencies' known-harmless warnings kept out of the owner's way.
//!
//! webrtc-rs warns about things that are normal for every call: each DTLS
//! ClientHello from Chromium carries TLS 1.3 extensions it does not know
//! ("Unsupported Extension Type 0 43", about 18 lines per call), and at every
//! hang-up its RTP acceptor reports that the session it was waiting on was
//! closed. Such lines hide the real problems, so [`Benign`] drops them unless
//! the log is at debug level or finer, where they are shown as they come.

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Known-harmless dependency warnings: (target prefix, message prefix, and a
/// word the message must contain, if any).
const HARMLESS: &[(&str, &str, Option<&str>)] = &[
    // TLS 1.3 extensions in a DTLS 1.2 handshake, ignored by design.
    ("dtls::handshake", "Unsupported Extension Type", None),
    // The RTP/RTCP acceptors ending with the session at hang-up.
    (
        "webrtc::peer_connection",
        "Failed to accept RTP",
        Some("closed"),
    ),
    (
        "webrtc::peer_connection",
        "Failed to accept RTCP",
        Some("closed"),
    ),
    (
        "webrtc::peer_connection",
        "Failed to close RTP stream",
        Some("closed"),
    ),
    (
        "webrtc::peer_connection",
        "undeclared_media_processor failed to open",
        None,
    ),
    // RTCP from the page's receive-only video (its receiver reports carry an
    // SSRC we do not receive on); webrtc-rs warns once per such SSRC.
    (
        "webrtc::peer_connection",
        "Incoming unhandled RTCP ssrc",
        None,
    ),
    // The SCTP association of a data channel the viewer opened: the doorbell
    // never uses it, so nothing it says (mostly at hang-up: "conn is closed",
    // "Close Notify", "failed to handle_inbound") can matter to a call.
    ("webrtc_sctp", "", None),
];

/// Whether an event from `target` saying `message` is one of [`HARMLESS`].
pub fn is_harmless(target: &str, message: &str) -> bool {
    HARMLESS.iter().any(|(t, prefix, word)| {
        target.starts_with(t)
            && message.starts_with(prefix)
            && word.is_none_or(|w| message.contains(w))
    })
}

/// Drops [`HARMLESS`] warnings (see the module documentation).
pub struct Benign {
    /// At debug level and finer, show them anyway.
    show: bool,
}

impl Benign {
    pub fn new(max_level: Option<LevelFilter>) -> Benign {
        Benign {
            show: max_level.is_some_and(|l| l >= LevelFilter::DEBUG),
        }
    }
}

/// An event's message and, for records of the `log` crate (which webrtc-rs
/// uses), the target they carry as a field: the event's own target is `log`.
#[derive(Default)]
struct MessageText {
    message: String,
    log_target: Option<String>,
}

impl Visit for MessageText {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_string(),
            "log.target" => self.log_target = Some(value.to_string()),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "log.target" => self.log_target = Some(format!("{value:?}")),
            _ => {}
        }
    }
}

impl<S: Subscriber> Layer<S> for Benign {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        let meta = event.metadata();
        // Levels compare by verbosity (TRACE greatest): only WARN and ERROR
        // are candidates for dropping.
        if self.show || *meta.level() > tracing::Level::WARN {
            return true;
        }
        let mut text = MessageText::default();
        event.record(&mut text);
        let target = text.log_target.as_deref().unwrap_or(meta.target());
        !is_harmless(target, &text.message)
    }
}

use crate::redact::scrub;

/// Standard error, scrubbed. The fmt layer writes each event with one
/// `write_all` of the formatted line, so a secret never straddles two writes.
struct ScrubbedStderr;

impl std::io::Write for ScrubbedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(scrub(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Logs to standard error. `RUST_LOG` wins over `level`.
pub fn init(level: &str) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<EnvFilter>().ok())
        .unwrap_or_else(|| EnvFilter::new(quiet_dependencies(level)));
    let benign = Benign::new(filter.max_level_hint());
    // Under systemd the journal stamps each line; do not print a second time.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(|| ScrubbedStderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let registry = tracing_subscriber::registry().with(benign).with(filter);
    let _ = if journald {
        registry.with(fmt.without_time()).try_init()
    } else {
        registry.with(fmt).try_init()
    };
}

/// The WebRTC stack logs a lot at info; keep it at warn unless asked.
fn quiet_dependencies(level: &str) -> String {
    if level.contains('=') {
        level.to_string()
    } else {
        format!("{level},webrtc=warn,webrtc_ice=error,dtls=warn,webrtc_dtls=warn,srtp=warn,webrtc_srtp=warn,sctp=warn,webrtc_sctp=warn,webrtc_mdns=warn,socketioxide=warn,engineioxide=warn")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_call_noise_seen_in_the_field_is_recognised() {
        assert!(is_harmless(
            "dtls::handshake::handshake_message_client_hello",
            "Unsupported Extension Type 0 43"
        ));
        assert!(is_harmless(
            "webrtc::peer_connection::peer_connection_internal",
            "Failed to accept RTP SessionSRTP has been closed"
        ));
        // The same words from elsewhere, or an error that is not the close,
        // are kept.
        assert!(!is_harmless(
            "webrtc::peer_connection::peer_connection_internal",
            "Failed to accept RTP buffer too short"
        ));
        assert!(!is_harmless(
            "doorbell::call",
            "Unsupported Extension Type 0 43"
        ));
        assert!(is_harmless(
            "webrtc::peer_connection::peer_connection_internal",
            "Incoming unhandled RTCP ssrc(4183523024), on_track will not be fired"
        ));
        assert!(is_harmless(
            "webrtc_sctp::association",
            "[] failed to handle_inbound: ErrChunk"
        ));
    }
    /// webrtc-rs logs through the `log` crate: the target is in a field.
    #[test]
    fn log_crate_records_are_filtered_by_their_own_target() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::registry()
            .with(Benign::new(Some(LevelFilter::INFO)))
            .with(tracing_subscriber::fmt::layer().with_writer(move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            use log::Log;
            let logger = tracing_log::LogTracer::new();
            let warn = |target: &str, message: &str| {
                logger.log(
                    &log::Record::builder()
                        .level(log::Level::Warn)
                        .target(target)
                        .args(format_args!("{message}"))
                        .build(),
                )
            };
            warn(
                "dtls::handshake::handshake_message_client_hello",
                "Unsupported Extension Type 0 43",
            );
            warn("webrtc::peer_connection", "something real");
            tracing::warn!("our own warning");
        });
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(!out.contains("Unsupported Extension Type"), "{out}");
        assert!(out.contains("something real"), "{out}");
        assert!(out.contains("our own warning"), "{out}");
    }
}
