//! ALSA's own error messages, in our log at debug level instead of raw lines
//! on standard error.
//!
//! libasound reports through a printf-style handler that a Rust function
//! cannot implement (it is variadic), so a few lines of C (`alsa_log.c`,
//! built by `build.rs` with the `audio` feature) format each message and call
//! [`sink`]. On a machine without a sound card `doorbell check` used to print
//! a dozen `ALSA lib confmisc.c...` lines; the reasons that matter are in our
//! own errors, with their fixes.

use std::ffi::{c_char, c_int, CStr};
use std::sync::Once;

type Sink = extern "C" fn(*const c_char, c_int, *const c_char, c_int, *const c_char);

extern "C" {
    fn doorbell_alsa_log_install(sink: Sink) -> c_int;
}

fn text(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: libasound passes NUL-terminated strings (file and function
    // names, and the message alsa_log.c formatted into a NUL-terminated
    // buffer), valid for the duration of the call.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

extern "C" fn sink(
    file: *const c_char,
    line: c_int,
    function: *const c_char,
    err: c_int,
    message: *const c_char,
) {
    let message = text(message);
    let function = text(function);
    let file = text(file);
    if err != 0 {
        tracing::debug!(target: "alsa", "{file}:{line} ({function}) {message}: error {err}");
    } else {
        tracing::debug!(target: "alsa", "{file}:{line} ({function}) {message}");
    }
}

/// Installs the handler once per process; call before the first use of ALSA.
pub fn route_to_log() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: `sink` has the signature alsa_log.c expects and lives for
        // the whole program; installing a handler has no other precondition.
        let rc = unsafe { doorbell_alsa_log_install(sink) };
        if rc != 0 {
            tracing::debug!("ALSA refused our error handler ({rc}); its messages go to stderr");
        }
    });
}
