//! The `[recon]` section: sweep detection ([`icmp_guard_common::recon`]) as operators set
//! it, its checks, and its kernel form.

use std::{fmt, str::FromStr, time::Duration};

use icmp_guard_common::recon::{self as kernel, ReconConfig, bits_for};

use super::units::{format_duration, parse_duration};

/// When sweep detection runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Enabled {
    /// On an interface that forwards (a router), off on one that does not (a host).
    Auto,
    On,
    Off,
}

/// What happens to a source once it is flagged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SweepAction {
    /// Its probes (echo, timestamp and address-mask requests) are dropped for `block`.
    Drop,
    /// It is only reported (log, `top`, metrics).
    Log,
}

impl Enabled {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::On => "on",
            Self::Off => "off",
        }
    }
}

impl SweepAction {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Drop => "drop",
            Self::Log => "log",
        }
    }
}

impl FromStr for Enabled {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(Self::Auto),
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            other => Err(format!(
                "enabled must be \"auto\", \"on\" or \"off\", not \"{other}\""
            )),
        }
    }
}

impl FromStr for SweepAction {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "drop" => Ok(Self::Drop),
            "log" => Ok(Self::Log),
            other => Err(format!(
                "action must be \"drop\" or \"log\", not \"{other}\""
            )),
        }
    }
}

/// Smallest destination threshold: fewer would flag a host pinging its neighbours.
pub const MIN_THRESHOLD: u32 = 8;
/// Largest threshold: up to here the 1024-bit sketch is within its stated accuracy.
pub const MAX_THRESHOLD: u32 = 1024;
/// Shortest and longest window.
pub const MIN_WINDOW: Duration = Duration::from_secs(1);
pub const MAX_WINDOW: Duration = Duration::from_secs(3600);
/// Longest block.
pub const MAX_BLOCK: Duration = Duration::from_secs(86_400);

/// Sweep detection's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recon {
    pub enabled: Enabled,
    /// Distinct destinations per window that flag one source.
    pub sweep_threshold: u32,
    #[serde(with = "duration_text")]
    pub window: Duration,
    pub action: SweepAction,
    #[serde(with = "duration_text")]
    pub block: Duration,
    /// Source prefixes whose sources together are counted.
    pub prefix_v4: u8,
    pub prefix_v6: u8,
    /// Distinct destinations per window that flag one source prefix; 0 turns prefixes off.
    pub prefix_threshold: u32,
}

impl Default for Recon {
    fn default() -> Self {
        Self {
            enabled: Enabled::Auto,
            sweep_threshold: 32,
            window: Duration::from_secs(10),
            action: SweepAction::Drop,
            block: Duration::from_secs(60),
            prefix_v4: 24,
            prefix_v6: 48,
            prefix_threshold: 128,
        }
    }
}

impl Recon {
    /// Every setting in range, or one sentence that says which is not and why.
    pub fn validate(&self) -> Result<(), String> {
        if !(MIN_THRESHOLD..=MAX_THRESHOLD).contains(&self.sweep_threshold) {
            return Err(format!(
                "sweep_threshold must be from {MIN_THRESHOLD} to {MAX_THRESHOLD} destinations, not {}",
                self.sweep_threshold
            ));
        }
        if self.prefix_threshold != 0
            && !(MIN_THRESHOLD..=MAX_THRESHOLD).contains(&self.prefix_threshold)
        {
            return Err(format!(
                "prefix_threshold must be 0 (off) or from {MIN_THRESHOLD} to {MAX_THRESHOLD} destinations, not {}",
                self.prefix_threshold
            ));
        }
        if !(MIN_WINDOW..=MAX_WINDOW).contains(&self.window) {
            return Err(format!(
                "window must be from 1s to 1h, not {}",
                format_duration(self.window)
            ));
        }
        if self.block < MIN_WINDOW || self.block > MAX_BLOCK {
            return Err(format!(
                "block must be from 1s to 1d, not {}",
                format_duration(self.block)
            ));
        }
        if !(8..=32).contains(&self.prefix_v4) {
            return Err(format!(
                "prefix_v4 must be from 8 to 32, not {}",
                self.prefix_v4
            ));
        }
        if !(16..=128).contains(&self.prefix_v6) {
            return Err(format!(
                "prefix_v6 must be from 16 to 128, not {}",
                self.prefix_v6
            ));
        }
        Ok(())
    }

    /// The kernel form (thresholds as bits of the sketch, the epoch half the window).
    pub fn compile(&self) -> ReconConfig {
        ReconConfig {
            mode: match self.enabled {
                Enabled::Auto => kernel::mode::AUTO,
                Enabled::On => kernel::mode::ON,
                Enabled::Off => kernel::mode::OFF,
            },
            action: match self.action {
                SweepAction::Drop => kernel::action::DROP,
                SweepAction::Log => kernel::action::LOG,
            },
            prefix_v4: self.prefix_v4,
            prefix_v6: self.prefix_v6,
            source_bits: bits_for(self.sweep_threshold),
            prefix_bits: if self.prefix_threshold == 0 {
                0
            } else {
                bits_for(self.prefix_threshold)
            },
            sweep_threshold: self.sweep_threshold as u16,
            prefix_threshold: self.prefix_threshold as u16,
            _padding: 0,
            epoch_ns: (self.window.as_nanos() / 2) as u64,
            block_ns: self.block.as_nanos() as u64,
        }
    }

    /// The settings a kernel form was compiled from; `None` for maps no policy wrote.
    pub fn from_kernel(config: &ReconConfig) -> Option<Self> {
        if config.epoch_ns == 0 {
            return None;
        }
        Some(Self {
            enabled: match config.mode {
                kernel::mode::ON => Enabled::On,
                kernel::mode::AUTO => Enabled::Auto,
                _ => Enabled::Off,
            },
            sweep_threshold: u32::from(config.sweep_threshold),
            window: Duration::from_nanos(config.epoch_ns * 2),
            action: if config.action == kernel::action::LOG {
                SweepAction::Log
            } else {
                SweepAction::Drop
            },
            block: Duration::from_nanos(config.block_ns),
            prefix_v4: config.prefix_v4,
            prefix_v6: config.prefix_v6,
            prefix_threshold: u32::from(config.prefix_threshold),
        })
    }
}

impl fmt::Display for Recon {
    /// One line for `policy show`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "enabled {}, {} destinations per {} flag a source ({} per /{} or /{} prefix), action {}",
            self.enabled.as_str(),
            self.sweep_threshold,
            format_duration(self.window),
            if self.prefix_threshold == 0 {
                "none".to_owned()
            } else {
                self.prefix_threshold.to_string()
            },
            self.prefix_v4,
            self.prefix_v6,
            self.action.as_str(),
        )?;
        if self.action == SweepAction::Drop {
            write!(f, " for {}", format_duration(self.block))?;
        }
        Ok(())
    }
}

/// Durations as the policy file writes them ("10s").
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    use crate::policy::units::{format_duration, parse_duration};

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_duration(*duration))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_duration(&text, "duration").map_err(serde::de::Error::custom)
    }
}

/// Parses a duration setting of `[recon]`.
pub fn duration(text: &str, field: &str) -> Result<Duration, String> {
    parse_duration(text, field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_compile_to_bits_and_half_windows() {
        let recon = Recon::default();
        recon.validate().expect("defaults are valid");
        let config = recon.compile();
        assert_eq!(config.mode, kernel::mode::AUTO);
        assert_eq!(config.source_bits, 32);
        assert_eq!(config.epoch_ns, 5_000_000_000);
        assert_eq!(Recon::from_kernel(&config), Some(recon));
    }

    #[test]
    fn a_policy_file_sets_shows_and_diffs_the_section() {
        use crate::policy::{Policy, diff, document::Document, file};
        let text = "[recon]\nenabled = \"on\"\nsweep_threshold = 40\nwindow = \"20s\"\n\
                    action = \"log\"\nblock = \"5m\"\nprefix_v4 = 22\nprefix_v6 = 64\n\
                    prefix_threshold = 0\n";
        let policy = file::parse(text).expect("a valid [recon] section");
        let recon = policy.recon;
        assert_eq!(
            recon,
            Recon {
                enabled: Enabled::On,
                sweep_threshold: 40,
                window: Duration::from_secs(20),
                action: SweepAction::Log,
                block: Duration::from_secs(300),
                prefix_v4: 22,
                prefix_v6: 64,
                prefix_threshold: 0,
            }
        );
        // `policy show` writes it back, and reads back the same.
        let shown = file::render(&policy);
        assert!(shown.contains("[recon]\nenabled = \"on\""), "{shown}");
        assert_eq!(file::parse(&shown).expect("round trip").recon, recon);
        // The JSON document carries it.
        let document = Document::of(&policy, None, None);
        let json = serde_json::to_value(&document).expect("json");
        assert_eq!(json["recon"]["window"], "20s");
        assert_eq!(json["recon"]["action"], "log");
        let back: Document = serde_json::from_value(json).expect("document");
        assert_eq!(back.to_policy().expect("policy").recon, recon);
        // A diff names each field.
        let changes = diff::diff(&Policy::default_profile(), &policy);
        let fields: Vec<&str> = changes
            .iter()
            .filter(|change| change.section == "recon")
            .map(|change| change.subject.as_str())
            .collect();
        assert_eq!(
            fields,
            [
                "enabled",
                "sweep_threshold",
                "window",
                "action",
                "block",
                "prefix_v4",
                "prefix_v6",
                "prefix_threshold"
            ]
        );
    }

    #[test]
    fn a_bad_value_in_the_file_is_refused_at_its_line() {
        use crate::policy::file;
        for (text, needle) in [
            (
                "[recon]\nsweep_threshold = 2\n",
                "sweep_threshold must be from 8 to 1024",
            ),
            ("[recon]\nenabled = \"maybe\"\n", "enabled must be"),
            ("[recon]\naction = \"reject\"\n", "action must be"),
            ("[recon]\nwindow = \"soon\"\n", "not a duration"),
            ("[recon]\nwindow = \"2h\"\n", "window must be from 1s to 1h"),
            ("[recon]\nbogus = 1\n", "bogus"),
        ] {
            let error = file::parse(text).expect_err(text);
            let message = error.to_string();
            assert!(message.contains(needle), "{text}: {message}");
            if !text.contains("bogus") {
                assert_eq!(error.line, 2, "{message}");
            }
        }
    }

    #[test]
    fn out_of_range_settings_are_refused_by_name() {
        let bad = [
            Recon {
                sweep_threshold: 2,
                ..Recon::default()
            },
            Recon {
                prefix_threshold: 5000,
                ..Recon::default()
            },
            Recon {
                window: Duration::from_millis(10),
                ..Recon::default()
            },
            Recon {
                block: Duration::ZERO,
                ..Recon::default()
            },
            Recon {
                prefix_v4: 33,
                ..Recon::default()
            },
        ];
        let names = [
            "sweep_threshold",
            "prefix_threshold",
            "window",
            "block",
            "prefix_v4",
        ];
        for (recon, name) in bad.iter().zip(names) {
            let error = recon.validate().expect_err(name);
            assert!(error.starts_with(name), "{error}");
        }
    }
}
