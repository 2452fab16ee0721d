//! Rates as operators type them: `100`, `100/s`, and nft's and iptables' `10/second`,
//! `3/minute`, `100/hour`, `1000/day` (and `/week`, as nft has it). A unit may be
//! abbreviated as iptables allows (`/sec`, `/min`, `/m`, `/h`, `/d`).
//!
//! The kernel's limiter counts whole packets per second, so a rate is accepted when it is
//! a whole number of packets per second (`120/minute` is 2/s, `86400/day` is 1/s). A rate
//! below one packet per second, or between two whole ones (`90/minute`), cannot be enforced
//! as written: it is refused with a sentence that says what can be, never rounded quietly.

use std::fmt;

/// The period a rate is counted over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    Second,
    Minute,
    Hour,
    Day,
    Week,
}

impl Period {
    /// Its length in seconds.
    pub const fn seconds(self) -> u64 {
        match self {
            Self::Second => 1,
            Self::Minute => 60,
            Self::Hour => 3_600,
            Self::Day => 86_400,
            Self::Week => 604_800,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Second => "second",
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Week => "week",
        }
    }

    /// Every period, shortest first.
    pub const ALL: [Self; 5] = [
        Self::Second,
        Self::Minute,
        Self::Hour,
        Self::Day,
        Self::Week,
    ];

    /// The unit after the `/`: the full word, its plural, or any abbreviation iptables
    /// accepts (a prefix of the word: `s`, `sec`, `m`, `min`, `h`, `d`), case-insensitive.
    pub fn parse_unit(text: &str) -> Option<Self> {
        let unit = text.trim().to_ascii_lowercase();
        // A plural ("seconds", "mins"), but not "ms": one letter is an abbreviation.
        let unit = unit
            .strip_suffix('s')
            .filter(|singular| singular.len() >= 2)
            .unwrap_or(&unit);
        if unit.is_empty() {
            return None;
        }
        Self::ALL
            .into_iter()
            .find(|period| period.as_str().starts_with(unit))
    }
}

/// A rate as written: `packets` per `period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub packets: u64,
    pub period: Period,
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.packets, self.period.as_str())
    }
}

impl Rate {
    /// Parses `N`, `N/s`, `N/second`, `N/minute`, ... (`what` names the value in messages:
    /// "rate").
    pub fn parse(text: &str, what: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        let (number, period) = match trimmed.split_once('/') {
            Some((number, unit)) => (
                number.trim(),
                Period::parse_unit(unit).ok_or_else(|| {
                    format!(
                        "{what} '{text}' has an unknown unit '/{}': use /second, /minute, /hour or /day",
                        unit.trim()
                    )
                })?,
            ),
            None => (trimmed, Period::Second),
        };
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "{what} '{text}' is not a whole number of packets, such as 100 or 10/second"
            ));
        }
        let packets = number
            .parse::<u64>()
            .map_err(|_| format!("{what} '{text}' is far too large"))?;
        Ok(Self { packets, period })
    }

    /// Whole packets per second, when the rate is one; else a sentence that says why it
    /// cannot be enforced and what can. A rate of zero passes through as 0 (the model
    /// refuses it with its own message).
    pub fn per_second(&self, what: &str) -> Result<u64, String> {
        let seconds = self.period.seconds();
        if self.packets.is_multiple_of(seconds) {
            return Ok(self.packets / seconds);
        }
        let per_second = self.packets as f64 / seconds as f64;
        if self.packets < seconds {
            Err(format!(
                "{what} {self} is one packet every {} s, below the 1 packet per second the \
                 kernel's limiter can enforce (it counts whole packets per second): use 1/second \
                 or more, or drop the type",
                format_seconds(seconds as f64 / self.packets as f64)
            ))
        } else {
            Err(format!(
                "{what} {self} is {per_second:.2} packets per second, and the kernel's limiter \
                 counts whole packets per second: use {}/second or {}/second",
                per_second.floor(),
                per_second.ceil()
            ))
        }
    }
}

/// 60, 1.5, 0.33: seconds without trailing zeros.
fn format_seconds(seconds: f64) -> String {
    let text = format!("{seconds:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_second(text: &str) -> Result<u64, String> {
        Rate::parse(text, "rate")?.per_second("rate")
    }

    #[test]
    fn nft_and_iptables_units() {
        for (text, expected) in [
            ("100", 100),
            ("100/s", 100),
            ("100/second", 100),
            ("100/seconds", 100),
            ("100 / Second", 100),
            ("100/sec", 100),
            ("120/minute", 2),
            ("120/min", 2),
            ("120/m", 2),
            ("120/mins", 2),
            ("7200/hour", 2),
            ("7200/h", 2),
            ("86400/day", 1),
            ("172800/d", 2),
            ("604800/week", 1),
            ("0/second", 0),
        ] {
            assert_eq!(per_second(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn what_the_limiter_cannot_enforce_is_refused_with_a_reason() {
        let slow = per_second("1/minute").expect_err("below 1/s");
        assert!(slow.contains("one packet every 60 s"), "{slow}");
        assert!(slow.contains("1/second or more"), "{slow}");
        let day = per_second("10/day").expect_err("below 1/s");
        assert!(day.contains("every 8640 s"), "{day}");
        let between = per_second("90/minute").expect_err("1.5/s");
        assert!(between.contains("1.50 packets per second"), "{between}");
        assert!(between.contains("use 1/second or 2/second"), "{between}");
    }

    #[test]
    fn nonsense_is_refused() {
        for (text, needle) in [
            ("10/fortnight", "unknown unit '/fortnight'"),
            ("10/", "unknown unit"),
            ("10/ms", "unknown unit '/ms'"),
            ("abc", "not a whole number"),
            ("-1/s", "not a whole number"),
            ("1.5/s", "not a whole number"),
            ("/s", "not a whole number"),
            ("", "not a whole number"),
            ("99999999999999999999999/s", "far too large"),
        ] {
            let err = Rate::parse(text, "rate").expect_err(text);
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
