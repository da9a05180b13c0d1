//! Signal names as `kill` accepts them: `TERM`, `SIGTERM`, `sigkill`, `9`.

use nix::sys::signal::Signal;
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("unknown signal {0:?}: expected a name like TERM or SIGKILL, or a number 1-31")]
    Unknown(String),
}

/// Parses a signal the way runc's `kill` does: a number, or a name with or without the
/// `SIG` prefix, case-insensitive. Real-time signals are not accepted (nix has no variants).
pub fn parse_signal(text: &str) -> Result<Signal, SignalError> {
    let unknown = || SignalError::Unknown(text.to_string());
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(unknown());
    }
    if let Ok(number) = trimmed.parse::<i32>() {
        return Signal::try_from(number).map_err(|_| unknown());
    }
    let upper = trimmed.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).map_err(|_| unknown())
}

/// The exit code a shell reports for a process killed by `signal`: 128 + its number.
pub fn exit_code_for_signal(signal: Signal) -> i32 {
    128 + signal as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_prefixes() {
        let cases = [
            ("TERM", Signal::SIGTERM),
            ("SIGTERM", Signal::SIGTERM),
            ("sigkill", Signal::SIGKILL),
            ("kill", Signal::SIGKILL),
            ("9", Signal::SIGKILL),
            ("15", Signal::SIGTERM),
            ("HUP", Signal::SIGHUP),
            (" USR1 ", Signal::SIGUSR1),
        ];
        for (text, want) in cases {
            assert_eq!(parse_signal(text).unwrap(), want, "{text}");
        }
    }

    #[test]
    fn rejects_garbage_naming_it() {
        for text in ["", "NOPE", "0", "-1", "999", "SIG"] {
            let err = parse_signal(text).unwrap_err();
            assert!(err.to_string().contains(&format!("{text:?}")), "{err}");
        }
    }

    #[test]
    fn exit_code_is_128_plus() {
        assert_eq!(exit_code_for_signal(Signal::SIGKILL), 137);
        assert_eq!(exit_code_for_signal(Signal::SIGTERM), 143);
    }
}
