//! Durations, byte sizes and byte rates as operators type them: `60s`, `5m`, `1h30m`;
//! `1500`, `64KiB`, `1MB`; `1MiB/s`, `8Mbit/s`, `10 mbytes/second` (nft's words, which are
//! 1024-based like `KiB`).

use std::{fmt, time::Duration};

use super::rate::Period;

/// Parses a duration: an integer of seconds, or numbers with units `ms`, `s`, `m`/`min`,
/// `h`, `d`, run together (`1h30m`). `what` names the value in messages.
pub fn parse_duration(text: &str, what: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let bad = || {
        format!("{what} '{text}' is not a duration: write seconds (60), or 60s, 5m, 1h, 1d, 1h30m")
    };
    if trimmed.is_empty() {
        return Err(bad());
    }
    if trimmed.bytes().all(|b| b.is_ascii_digit()) {
        let seconds = trimmed.parse::<u64>().map_err(|_| bad())?;
        return Ok(Duration::from_secs(seconds));
    }
    let mut total = Duration::ZERO;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let number = rest[..digits].parse::<u64>().map_err(|_| bad())?;
        rest = rest[digits..].trim_start();
        let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_ms: u64 = match rest[..letters].to_ascii_lowercase().as_str() {
            "ms" => 1,
            "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
            "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
            "h" | "hour" | "hours" => 3_600_000,
            "d" | "day" | "days" => 86_400_000,
            _ => return Err(bad()),
        };
        rest = rest[letters..].trim_start();
        let part = number.checked_mul(unit_ms).ok_or_else(bad)?;
        total = total
            .checked_add(Duration::from_millis(part))
            .ok_or_else(bad)?;
    }
    Ok(total)
}

/// A duration as [`parse_duration`] reads it back: `90s` as `1m30s`, `3600s` as `1h`.
pub fn format_duration(duration: Duration) -> String {
    let mut ms = duration.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    if ms > 0 {
        out.push_str(&format!("{ms}ms"));
    }
    out
}

/// Parses a size in bytes: an integer, or a number with `B`, `KiB`/`MiB`/`GiB` (1024),
/// `kB`/`MB`/`GB` (1000), nft's `bytes`/`kbytes`/`mbytes` (1024), or bits (`kbit`, `Mbit`,
/// `Gbit`, 1000-based, whole bytes only). A bare `K`, `M` or `G` is refused: it means 1000
/// to some tools and 1024 to others.
pub fn parse_bytes(text: &str, what: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let digits = trimmed
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .count();
    let (number, unit) = trimmed.split_at(digits);
    let unit = unit.trim();
    let bad = || {
        format!(
            "{what} '{text}' is not a size: write bytes (1500), or 64KiB, 1MiB, 1MB, 10 mbytes, 8Mbit"
        )
    };
    if number.is_empty() {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    let (factor, bits) = match unit {
        "" | "B" | "b" | "byte" | "bytes" => (1.0, false),
        "KiB" | "kib" | "kbytes" => (1024.0, false),
        "MiB" | "mib" | "mbytes" => (1024.0 * 1024.0, false),
        "GiB" | "gib" | "gbytes" => (1024.0 * 1024.0 * 1024.0, false),
        "kB" | "KB" | "kb" => (1e3, false),
        "MB" | "mb" => (1e6, false),
        "GB" | "gb" => (1e9, false),
        "bit" | "bits" => (1.0, true),
        "kbit" | "Kbit" => (1e3, true),
        "mbit" | "Mbit" => (1e6, true),
        "gbit" | "Gbit" => (1e9, true),
        "K" | "k" | "M" | "m" | "G" | "g" => {
            return Err(format!(
                "{what} '{text}' is ambiguous: write {number}{}iB (1024-based) or {number}{}B \
                 (1000-based)",
                unit.to_ascii_uppercase(),
                if unit.eq_ignore_ascii_case("k") {
                    "k".to_owned()
                } else {
                    unit.to_ascii_uppercase()
                }
            ));
        }
        _ => return Err(bad()),
    };
    let bytes = value * factor / if bits { 8.0 } else { 1.0 };
    if !bytes.is_finite() || bytes > u64::MAX as f64 / 2.0 {
        return Err(format!("{what} '{text}' is far too large"));
    }
    if bytes.fract() != 0.0 {
        return Err(format!("{what} '{text}' is not a whole number of bytes"));
    }
    Ok(bytes as u64)
}

/// A byte count as people read it: `1500`, `64KiB`, `1MiB`, `1.5MB` stays `1500000`.
pub fn format_bytes(bytes: u64) -> String {
    for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

/// A byte rate as written: `bytes` per `period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRate {
    pub bytes: u64,
    pub period: Period,
}

impl ByteRate {
    /// Parses `SIZE/PERIOD` (`1MiB/s`, `10 mbytes/second`, `600MB/minute`); a size alone is
    /// per second.
    pub fn parse(text: &str, what: &str) -> Result<Self, String> {
        let (size, period) = match text.split_once('/') {
            Some((size, unit)) => (
                size,
                Period::parse_unit(unit).ok_or_else(|| {
                    format!(
                        "{what} '{text}' has an unknown unit '/{}': use /second, /minute, /hour or /day",
                        unit.trim()
                    )
                })?,
            ),
            None => (text, Period::Second),
        };
        let bytes = parse_bytes(size, what)?;
        if bytes == 0 {
            return Err(format!(
                "{what} must be at least 1 byte per {}",
                period.as_str()
            ));
        }
        Ok(Self { bytes, period })
    }

    /// Bytes per second, rounded down (at least 1).
    pub fn per_second(&self) -> u64 {
        (self.bytes / self.period.seconds()).max(1)
    }
}

impl fmt::Display for ByteRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.period {
            Period::Second => write!(f, "{}/s", format_bytes(self.bytes)),
            period => write!(f, "{}/{}", format_bytes(self.bytes), period.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (text, seconds) in [
            ("60", 60),
            ("60s", 60),
            ("5m", 300),
            ("5min", 300),
            ("1h", 3_600),
            ("1h30m", 5_400),
            ("1 h 30 m", 5_400),
            ("2d", 172_800),
            ("90 seconds", 90),
        ] {
            assert_eq!(
                parse_duration(text, "block"),
                Ok(Duration::from_secs(seconds)),
                "{text}"
            );
        }
        assert_eq!(
            parse_duration("1500ms", "block"),
            Ok(Duration::from_millis(1500))
        );
        for bad in [
            "",
            "s",
            "1x",
            "-1s",
            "1.5s",
            "1h30",
            "99999999999999999999d",
        ] {
            let err = parse_duration(bad, "block").expect_err(bad);
            assert!(err.contains("not a duration"), "{bad}: {err}");
        }
        for seconds in [1, 59, 60, 90, 3_600, 5_400, 86_461] {
            let duration = Duration::from_secs(seconds);
            assert_eq!(
                parse_duration(&format_duration(duration), "x"),
                Ok(duration)
            );
        }
        assert_eq!(format_duration(Duration::from_secs(5_400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(1_500)), "1s500ms");
    }

    #[test]
    fn sizes() {
        for (text, bytes) in [
            ("1500", 1_500),
            ("1500B", 1_500),
            ("64KiB", 65_536),
            ("1MiB", 1_048_576),
            ("1 MiB", 1_048_576),
            ("1.5MiB", 1_572_864),
            ("1MB", 1_000_000),
            ("10 mbytes", 10_485_760),
            ("8Mbit", 1_000_000),
            ("1GiB", 1 << 30),
        ] {
            assert_eq!(parse_bytes(text, "size"), Ok(bytes), "{text}");
        }
        let err = parse_bytes("1M", "bytes").expect_err("ambiguous");
        assert!(err.contains("1MiB") && err.contains("1MB"), "{err}");
        for bad in ["", "MiB", "1 furlong", "1.1", "1e3", "-1"] {
            assert!(parse_bytes(bad, "size").is_err(), "{bad}");
        }
        assert_eq!(format_bytes(1_048_576), "1MiB");
        assert_eq!(format_bytes(1_500), "1500");
        assert_eq!(format_bytes(65_536), "64KiB");
    }

    #[test]
    fn byte_rates() {
        let rate = ByteRate::parse("1MiB/s", "bytes").expect("valid");
        assert_eq!((rate.bytes, rate.period), (1_048_576, Period::Second));
        assert_eq!(rate.to_string(), "1MiB/s");
        let nft = ByteRate::parse("10 mbytes/second", "bytes").expect("nft");
        assert_eq!(nft.per_second(), 10_485_760);
        let minute = ByteRate::parse("600MB/minute", "bytes").expect("per minute");
        assert_eq!(minute.per_second(), 10_000_000);
        assert_eq!(minute.to_string(), "600000000/minute");
        assert_eq!(
            ByteRate::parse("8Mbit/s", "bytes").map(|r| r.per_second()),
            Ok(1_000_000)
        );
        assert!(ByteRate::parse("0/s", "bytes").is_err());
        assert!(ByteRate::parse("1MiB/fortnight", "bytes").is_err());
        assert_eq!(
            ByteRate::parse("1MiB", "bytes").map(|r| r.period),
            Ok(Period::Second)
        );
    }
}
