//! Retrying a notification for a bounded time.
//!
//! When the Telegram API or a webhook is down, a ring message that arrives
//! half a minute late is still worth having, one that arrives after the call
//! timed out is not, and a notifier that never gives up would pile up work.
//! So every send is retried with exponential backoff (0.5 s, 1 s, 2 s, ...
//! capped at 8 s; a server's own `retry after` wins when it is longer) until
//! the next wait would end beyond the bound; errors that cannot get better
//! (a refused token, an unknown chat) are not retried. Every failed attempt is
//! logged with its reason. The schedule is [`crate::backoff::Backoff`]
//! without jitter: the bound arithmetic must hold exactly (the retries fit in
//! the notify limit the call loop gives), and one doorbell's few messages do
//! not make a thundering herd.

use std::fmt;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

use crate::backoff::Backoff;

/// First wait after a failure.
const FIRST_WAIT: Duration = Duration::from_millis(500);
/// Longest wait between two attempts.
const MAX_WAIT: Duration = Duration::from_secs(8);

/// What an error says about trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// It may work next time (network, timeout, server error).
    Yes,
    /// The server asked to wait this long (flood control).
    After(Duration),
    /// It will not get better by itself.
    No,
}

/// Errors that know whether to try again.
pub trait Retryable: fmt::Display {
    fn retry(&self) -> Retry;
}

/// The last error, and how hard we tried.
#[derive(Debug)]
pub struct GaveUp<E> {
    pub error: E,
    pub attempts: u32,
    pub elapsed: Duration,
}

impl<E: fmt::Display> fmt::Display for GaveUp<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.attempts > 1 {
            write!(
                f,
                "{} (gave up after {} attempts in {:.1} s)",
                self.error,
                self.attempts,
                self.elapsed.as_secs_f64()
            )
        } else {
            self.error.fmt(f)
        }
    }
}

/// The wait after failed attempt number `attempt` (1-based).
pub fn backoff(attempt: u32) -> Duration {
    Backoff::new(FIRST_WAIT, MAX_WAIT, 0.0).wait(attempt)
}

/// Runs `attempt` until it succeeds, fails for good, or the next try would
/// start later than `bound` after the first one. `what` names the send in the
/// log lines (`telegram: ring message to chat 123`).
pub async fn retry<T, E, F, Fut>(
    what: &str,
    bound: Duration,
    mut attempt: F,
) -> Result<T, GaveUp<E>>
where
    E: Retryable,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let start = Instant::now();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let error = match attempt().await {
            Ok(value) => {
                if attempts > 1 {
                    tracing::info!("{what}: sent at attempt {attempts}");
                }
                return Ok(value);
            }
            Err(error) => error,
        };
        let wait = match error.retry() {
            Retry::No => None,
            Retry::Yes => Some(backoff(attempts)),
            Retry::After(d) => Some(d.max(backoff(attempts))),
        };
        let elapsed = start.elapsed();
        match wait {
            Some(wait) if elapsed + wait <= bound => {
                tracing::warn!(
                    "{what}: attempt {attempts} failed, retrying in {:.1} s: {error}",
                    wait.as_secs_f64()
                );
                tokio::time::sleep(wait).await;
            }
            _ => {
                return Err(GaveUp {
                    error,
                    attempts,
                    elapsed,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[derive(Debug)]
    struct Fails(Retry);

    impl fmt::Display for Fails {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "failed ({:?})", self.0)
        }
    }

    impl Retryable for Fails {
        fn retry(&self) -> Retry {
            self.0
        }
    }

    /// Runs `retry` against an attempt that fails `fails` times with `kind`,
    /// returning the start times of the attempts (since the first) and the result.
    async fn run(
        bound: Duration,
        fails: usize,
        kind: Retry,
    ) -> (Vec<Duration>, Result<u32, GaveUp<Fails>>) {
        let start = Instant::now();
        let starts = RefCell::new(Vec::new());
        let result = retry("test", bound, || {
            starts.borrow_mut().push(start.elapsed());
            let n = starts.borrow().len();
            async move {
                if n <= fails {
                    Err(Fails(kind))
                } else {
                    Ok(n as u32)
                }
            }
        })
        .await;
        (starts.into_inner(), result)
    }

    fn secs(v: &[f64]) -> Vec<Duration> {
        v.iter().map(|&s| Duration::from_secs_f64(s)).collect()
    }

    #[test]
    fn backoff_doubles_up_to_eight_seconds() {
        let waits: Vec<f64> = (1..=7).map(|n| backoff(n).as_secs_f64()).collect();
        assert_eq!(waits, [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]);
        assert_eq!(backoff(u32::MAX), MAX_WAIT);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_until_the_bound_and_no_longer() {
        let (starts, result) = run(Duration::from_secs(30), usize::MAX, Retry::Yes).await;
        assert_eq!(starts, secs(&[0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 23.5]));
        let gave_up = result.unwrap_err();
        assert_eq!(gave_up.attempts, 7);
        assert!(gave_up.elapsed <= Duration::from_secs(30));
        let text = gave_up.to_string();
        assert!(text.contains("gave up after 7 attempts"), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_after_failures_is_a_success() {
        let (starts, result) = run(Duration::from_secs(30), 2, Retry::Yes).await;
        assert_eq!(starts, secs(&[0.0, 0.5, 1.5]));
        assert_eq!(result.unwrap(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_failures_are_not_retried() {
        let (starts, result) = run(Duration::from_secs(30), usize::MAX, Retry::No).await;
        assert_eq!(starts.len(), 1);
        let text = result.unwrap_err().to_string();
        assert_eq!(
            text, "failed (No)",
            "one attempt: no retry count in the message"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_servers_retry_after_is_honoured_within_the_bound() {
        let kind = Retry::After(Duration::from_secs(3));
        let (starts, result) = run(Duration::from_secs(10), usize::MAX, kind).await;
        assert_eq!(starts, secs(&[0.0, 3.0, 6.0, 9.0]));
        assert!(result.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_bound_means_one_attempt() {
        let (starts, result) = run(Duration::ZERO, usize::MAX, Retry::Yes).await;
        assert_eq!(starts.len(), 1);
        assert!(result.is_err());
    }
}
