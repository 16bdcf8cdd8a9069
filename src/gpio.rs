//! GPIO through `rppal`: the only module that imports it, behind the `rpi`
//! cargo feature. Inputs for buttons (`crate::button`), outputs for the
//! chime relay (`crate::chime`). rppal is no longer maintained upstream; another backend (the
//! Linux GPIO character device directly, libgpiod) replaces this file and
//! nothing else: the rest of the doorbell sees [`open_button`] (edges on a
//! channel) and [`Relay`].
//!
//! Pins are BCM numbers (GPIO17 is physical pin 11), as everywhere in the
//! Raspberry Pi documentation.

use std::time::Duration;
use tokio::sync::mpsc;

/// A GPIO pin that cannot be used, with what to do about it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("GPIO{pin}: {reason}; {fix}")]
pub struct GpioError {
    pub pin: u8,
    pub reason: String,
    pub fix: String,
}

#[cfg(feature = "rpi")]
mod imp {
    use super::*;
    use rppal::gpio::{Gpio, InputPin, Level, OutputPin, Trigger};

    fn explain(pin: u8, e: rppal::gpio::Error) -> GpioError {
        use rppal::gpio::Error as E;
        let (reason, fix) = match e {
            E::UnknownModel => (
                "this is not a Raspberry Pi (or its model cannot be identified)".to_string(),
                "use the stdin button or the control socket on other machines",
            ),
            E::PermissionDenied(path) => (
                format!("permission denied opening {path}"),
                "add the user to the gpio group (sudo usermod -aG gpio USER, then log in again); the doorbell service user is in it already",
            ),
            E::PinNotAvailable(_) => (
                format!("GPIO{pin} does not exist on this board"),
                "use a BCM GPIO number (GPIO17 is physical pin 11)",
            ),
            E::PinUsed(_) => (
                format!("GPIO{pin} is used twice in the config"),
                "give the button and the chime relay different pins",
            ),
            E::Io(io) if io.kind() == std::io::ErrorKind::NotFound => (
                format!("no GPIO device ({io})"),
                "is this a Raspberry Pi with /dev/gpiochip0?",
            ),
            E::Io(io) if io.raw_os_error() == Some(libc::EBUSY) => (
                format!("GPIO{pin} is busy ({io})"),
                "another program holds the pin (another doorbell? a gpio-key overlay in config.txt?)",
            ),
            other => (other.to_string(), "see docs/hardware.md"),
        };
        GpioError {
            pin,
            reason,
            fix: fix.to_string(),
        }
    }

    /// A button input; edges flow while this lives.
    pub struct Button {
        _pin: InputPin,
    }

    /// Opens `pin` as an input with the internal pull-up (or pull-down for an
    /// active-high button) and sends every edge, `true` for high, on `edges`.
    /// Returns the level at opening (`true` = high).
    pub fn open_button(
        pin: u8,
        active_low: bool,
        edges: mpsc::Sender<bool>,
    ) -> Result<(Button, bool), GpioError> {
        let gpio = Gpio::new().map_err(|e| explain(pin, e))?;
        let p = gpio.get(pin).map_err(|e| explain(pin, e))?;
        let mut input = if active_low {
            p.into_input_pullup()
        } else {
            p.into_input_pulldown()
        };
        let high = input.read() == Level::High;
        input
            .set_async_interrupt(Trigger::Both, None, move |event| {
                let high = matches!(event.trigger, Trigger::RisingEdge);
                // A full channel means edges arrive faster than the task runs
                // (a loose wire); dropping some is fine, the next edge
                // carries the level again.
                let _ = edges.try_send(high);
            })
            .map_err(|e| explain(pin, e))?;
        Ok((Button { _pin: input }, high))
    }

    /// An output for a relay (an existing mechanical chime, a light).
    pub struct Relay {
        pin: OutputPin,
        active_low: bool,
    }

    impl Relay {
        pub fn open(pin: u8, active_low: bool) -> Result<Relay, GpioError> {
            let gpio = Gpio::new().map_err(|e| explain(pin, e))?;
            let p = gpio.get(pin).map_err(|e| explain(pin, e))?;
            let mut out = if active_low {
                p.into_output_high()
            } else {
                p.into_output_low()
            };
            // Leave the relay off when the daemon stops.
            out.set_reset_on_drop(true);
            Ok(Relay {
                pin: out,
                active_low,
            })
        }

        pub fn set(&mut self, on: bool) {
            if on != self.active_low {
                self.pin.set_high()
            } else {
                self.pin.set_low()
            }
        }
    }

    /// Whether GPIO can be opened at all here, for `doorbell devices`.
    pub fn describe() -> Result<String, String> {
        let gpio = Gpio::new().map_err(|e| explain(0, e).reason)?;
        drop(gpio);
        let model = rppal::system::DeviceInfo::new()
            .map(|i| i.model().to_string())
            .unwrap_or_else(|_| "unknown model".into());
        Ok(format!("GPIO available ({model})"))
    }
}

#[cfg(not(feature = "rpi"))]
mod imp {
    use super::*;

    fn not_built(pin: u8) -> GpioError {
        GpioError {
            pin,
            reason: "this build has no GPIO support".into(),
            fix: "build with the `rpi` cargo feature (on by default)".into(),
        }
    }

    pub struct Button;

    pub fn open_button(
        pin: u8,
        _active_low: bool,
        _edges: mpsc::Sender<bool>,
    ) -> Result<(Button, bool), GpioError> {
        Err(not_built(pin))
    }

    pub struct Relay;

    impl Relay {
        pub fn open(pin: u8, _active_low: bool) -> Result<Relay, GpioError> {
            Err(not_built(pin))
        }

        pub fn set(&mut self, _on: bool) {}
    }

    pub fn describe() -> Result<String, String> {
        Err(not_built(0).reason)
    }
}

pub use imp::{describe, open_button, Button, Relay};

/// Switches the relay on for `length`, then off, on a blocking thread (GPIO
/// writes are quick, but the relay must not hold the runtime).
pub async fn pulse(relay: std::sync::Arc<std::sync::Mutex<Relay>>, length: Duration) {
    let set = |on: bool| {
        let relay = relay.clone();
        async move {
            let _ = tokio::task::spawn_blocking(move || {
                relay.lock().unwrap_or_else(|p| p.into_inner()).set(on)
            })
            .await;
        }
    };
    set(true).await;
    tokio::time::sleep(length).await;
    set(false).await;
}
