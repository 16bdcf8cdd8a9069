//! Where presses come from. Every source turns its input into
//! [`Command`](crate::call::command::Command)s on one channel: `stdin` (each line
//! is a press), `gpio:PIN` (a push button, debounced, with a minimum gap
//! between rings) and the control socket (`doorbell ring`, `hangup`, `status`).
//!
//! The GPIO backend ([`crate::gpio`], rppal) only produces raw edges on a channel;
//! debouncing ([`debounce`], pure) and turning presses into rings
//! ([`run_edges`]) do not depend on it, so tests drive them with synthetic
//! edges and another backend can replace rppal without touching them.

pub mod control;
pub mod debounce;
pub mod stdin;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::call::command::Command;
use crate::gpio::{self, GpioError};
use debounce::{DebounceSettings, Debouncer, Outcome};

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
