//! Numbers for people, as `ip -s -h` prints them: three significant digits and an SI
//! suffix (`1.23M`, `340k`, `12.3G`), base 1000; below 1000 the number itself.

/// A counter: as is, or `ip -h`'s form when `human`.
pub fn count(value: u64, human: bool) -> String {
    if !human || value < 1000 {
        return value.to_string();
    }
    scaled(value as f64)
}

/// A rate per second: one decimal below 100 (`12.5`), none from 100 (`340`), and `ip -h`'s
/// form from 1000 when `human` (`340k`).
pub fn rate(value: f64, human: bool) -> String {
    if human && value >= 999.5 {
        scaled(value)
    } else if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// `value` >= 1000 with a suffix and three significant digits, as iproute2's `print_num`.
fn scaled(value: f64) -> String {
    const SUFFIXES: [char; 6] = ['k', 'M', 'G', 'T', 'P', 'E'];
    let mut scaled = value / 1000.0;
    let mut suffix = 0;
    // Rounding may carry into the next unit (999.9k is 1.00M).
    while suffix + 1 < SUFFIXES.len() && scaled >= 999.5 {
        scaled /= 1000.0;
        suffix += 1;
    }
    let text = if scaled < 9.995 {
        format!("{scaled:.2}")
    } else if scaled < 99.95 {
        format!("{scaled:.1}")
    } else {
        format!("{scaled:.0}")
    };
    format!("{text}{}", SUFFIXES[suffix])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_as_ip_h_prints_them() {
        for (value, expected) in [
            (0, "0"),
            (999, "999"),
            (1_000, "1.00k"),
            (1_234, "1.23k"),
            (12_345, "12.3k"),
            (340_000, "340k"),
            (999_499, "999k"),
            (999_999, "1.00M"),
            (1_200_000, "1.20M"),
            (1_234_567_890, "1.23G"),
            (u64::MAX, "18.4E"),
        ] {
            assert_eq!(count(value, true), expected, "{value}");
        }
        assert_eq!(count(1_234_567, false), "1234567");
    }

    #[test]
    fn rates_keep_their_decimals_below_a_thousand() {
        assert_eq!(rate(12.34, true), "12.3");
        assert_eq!(rate(340.4, true), "340");
        assert_eq!(rate(340_400.0, true), "340k");
        assert_eq!(rate(340_400.0, false), "340400");
        assert_eq!(rate(999.4, true), "999");
        assert_eq!(rate(999.6, true), "1.00k");
    }
}
