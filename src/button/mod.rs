//! Where presses come from. Every source turns its input into
//! [`Command`](crate::call::driver::Command)s on one channel: `stdin` (each line
//! is a press), `gpio:PIN` (a push button, debounced, with a minimum gap
//! between rings) and the control socket (`doorbell ring`, `hangup`, `status`).
//!
//! The GPIO backend ([`gpio`], rppal) only produces raw edges on a channel;
//! debouncing ([`debounce`], pure) and turning presses into rings
//! ([`run_edges`]) do not depend on it, so tests drive them with synthetic
//! edges and another backend can replace rppal without touching them.

pub mod control;
pub mod debounce;
pub mod gpio;
pub mod stdin;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::call::driver::Command;
use debounce::{DebounceSettings, Debouncer, Outcome};

/// A button source as written in `button.sources`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ButtonSpec {
    Stdin,
    /// A BCM GPIO number.
    Gpio(u8),
}

impl ButtonSpec {
    pub fn parse(s: &str) -> Result<ButtonSpec, String> {
        let s = s.trim();
        if s == "stdin" {
            return Ok(ButtonSpec::Stdin);
        }
        if let Some(pin) = s.strip_prefix("gpio:") {
            return parse_pin(pin)
                .map(ButtonSpec::Gpio)
                .map_err(|e| format!("{s:?}: {e}"));
        }
        Err(format!(
            "{s:?} is not a button source (known: \"stdin\", \"gpio:PIN\" with a BCM pin number)"
        ))
    }
}

/// A BCM GPIO number, `17` or `GPIO17`.
pub fn parse_pin(s: &str) -> Result<u8, String> {
    let digits = s
        .trim()
        .trim_start_matches("GPIO")
        .trim_start_matches("gpio");
    match digits.parse::<u8>() {
        Ok(n) if n <= 53 => Ok(n),
        _ => Err(format!(
            "{s:?} is not a GPIO number (a BCM number 0..=53, e.g. 17 for physical pin 11)"
        )),
    }
}

/// A GPIO pin that cannot be used, with what to do about it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("GPIO{pin}: {reason}; {fix}")]
pub struct GpioError {
    pub pin: u8,
    pub reason: String,
    pub fix: String,
}

/// Turns raw edges (`true` = line high) into rings, until `edges` closes.
/// `high` is the level when the source was opened. Runs on the Tokio clock,
/// so tests can drive it on a paused one.
pub async fn run_edges(
    label: String,
    mut edges: mpsc::Receiver<bool>,
    high: bool,
    settings: DebounceSettings,
    commands: mpsc::Sender<Command>,
) {
    let origin = Instant::now();
    let now = move || Instant::now().duration_since(origin);
    let mut debouncer = Debouncer::new(settings, high, now());
    loop {
        let deadline = debouncer.deadline();
        let outcome = tokio::select! {
            edge = edges.recv() => match edge {
                Some(high) => debouncer.edge(high, now()),
                None => {
                    tracing::debug!(button = %label, "button source closed");
                    return;
                }
            },
            _ = sleep_until(deadline.map(|d| origin + d)) => debouncer.settle(now()),
        };
        match outcome {
            Some(Outcome::Press) => {
                tracing::info!(button = %label, "button pressed");
                if commands.send(Command::Ring { reply: None }).await.is_err() {
                    return;
                }
            }
            Some(Outcome::TooSoon { since_last }) => tracing::info!(
                button = %label,
                "button pressed again {} ms after the last ring; within button.ring_gap, not ringing",
                since_last.as_millis()
            ),
            Some(Outcome::Released) => tracing::debug!(button = %label, "button released"),
            None => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Opens a GPIO button and starts its task. The returned handle keeps the pin
/// (and its interrupt thread) alive; drop it to close the button.
pub fn start_gpio(
    pin: u8,
    settings: DebounceSettings,
    commands: mpsc::Sender<Command>,
) -> Result<gpio::Button, GpioError> {
    let (tx, rx) = mpsc::channel(64);
    let (button, high) = gpio::open_button(pin, settings.active_low, tx)?;
    tracing::info!(
        pin,
        active_low = settings.active_low,
        pressed_now = high != settings.active_low,
        "GPIO button ready"
    );
    tokio::spawn(run_edges(
        format!("gpio:{pin}"),
        rx,
        high,
        settings,
        commands,
    ));
    Ok(button)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sources_parse() {
        assert_eq!(ButtonSpec::parse("stdin"), Ok(ButtonSpec::Stdin));
        assert_eq!(ButtonSpec::parse("gpio:17"), Ok(ButtonSpec::Gpio(17)));
        assert_eq!(ButtonSpec::parse("gpio:GPIO4"), Ok(ButtonSpec::Gpio(4)));
        assert!(ButtonSpec::parse("gpio:99").unwrap_err().contains("BCM"));
        assert!(ButtonSpec::parse("gpio:").is_err());
        assert!(ButtonSpec::parse("gpoi:17")
            .unwrap_err()
            .contains("not a button source"));
    }

    /// The edge task on a paused clock: bounces and a hammering visitor give
    /// the rings the debouncer promises, as commands.
    #[tokio::test(start_paused = true)]
    async fn edges_become_rings_on_the_tokio_clock() {
        let (edge_tx, edge_rx) = mpsc::channel(64);
        let (cmd_tx, mut cmd_rx) = mpsc::channel(8);
        let task = tokio::spawn(run_edges(
            "test".into(),
            edge_rx,
            true,
            DebounceSettings::default(),
            cmd_tx,
        ));
        let step = |ms| tokio::time::sleep(Duration::from_millis(ms));
        // Press with bounces.
        for level in [false, true, false, true, false] {
            edge_tx.send(level).await.unwrap();
            step(2).await;
        }
        step(60).await;
        assert!(matches!(cmd_rx.try_recv(), Ok(Command::Ring { .. })));
        edge_tx.send(true).await.unwrap();
        step(100).await;
        // Hammering within the gap: nothing more.
        for _ in 0..5 {
            edge_tx.send(false).await.unwrap();
            step(200).await;
            edge_tx.send(true).await.unwrap();
            step(300).await;
        }
        assert!(cmd_rx.try_recv().is_err());
        // After the gap: a second ring.
        step(3000).await;
        edge_tx.send(false).await.unwrap();
        step(60).await;
        assert!(matches!(cmd_rx.try_recv(), Ok(Command::Ring { .. })));
        drop(edge_tx);
        task.await.unwrap();
    }
}
