//! `stdout` notifier: prints the link for whoever watches the terminal (the
//! demo, a first test run). With `--events json` standard output belongs to the
//! event stream, whose `notified` event carries the link, so it is off there.

use futures_util::future::{BoxFuture, FutureExt};
use std::io::Write;

use super::{Notifier, NotifyError, Ring};

pub struct StdoutNotifier;

impl Notifier for StdoutNotifier {
    fn name(&self) -> &str {
        "stdout"
    }

    fn ring(&self, ring: Ring) -> BoxFuture<'static, Result<(), NotifyError>> {
        let line = format!("Ding dong! Someone is at the door. Answer: {}\n", ring.link);
        async move { print(&line) }.boxed()
    }

    fn ring_failed(
        &self,
        _call: u64,
        reason: String,
    ) -> BoxFuture<'static, Result<(), NotifyError>> {
        let line = format!("Ding dong! Someone rang, but no call could be set up: {reason}\n");
        async move { print(&line) }.boxed()
    }
}

fn print(line: &str) -> Result<(), NotifyError> {
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| NotifyError {
            notifier: "stdout".into(),
            message: e.to_string(),
        })
}
