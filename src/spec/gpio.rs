//! GPIO pins as the config names them: button sources (`stdin`, `gpio:17`)
//! and the chime relay (`gpio:PIN` or empty).

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

/// The relay output of `chime.relay`: `gpio:PIN`, or empty for none.
pub fn parse_relay(s: &str) -> Result<Option<u8>, String> {
    let r = s.trim();
    if r.is_empty() {
        return Ok(None);
    }
    match r.strip_prefix("gpio:") {
        Some(pin) => parse_pin(pin).map(Some),
        None => Err(format!(
            "{r:?} is not a relay output (\"gpio:PIN\" or empty)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn relays_parse() {
        assert_eq!(parse_relay(""), Ok(None));
        assert_eq!(parse_relay("gpio:27"), Ok(Some(27)));
        assert!(parse_relay("27").is_err());
        assert!(parse_relay("gpio:64").is_err());
    }
}
