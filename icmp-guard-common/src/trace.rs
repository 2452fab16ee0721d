//! `icmp-guard trace`: what the trace build of the XDP program reads (its filter and its
//! deadline) and what it reports for each matching packet (which check decided). The
//! production build has none of this: it lives in the trace build only
//! (`icmp-guard-ebpf`'s `trace` feature), which userspace swaps into an interface's link
//! for the length of a trace.

/// The trace build's settings map: one [`TraceConfig`]. Private to the trace program,
/// never pinned; `status` reads it through the program to say until when it traces.
pub const MAP: &str = "TRACE";

/// Name of the trace build's guard (compare-and-exchange), as the kernel shows it.
pub const PROGRAM_NAME: &str = "icmp_trace";
/// Name of the trace build's locked guard (5.10, 5.11).
pub const LOCKED_PROGRAM_NAME: &str = "icmp_trace_lock";

/// The first word of every trace line: how userspace tells them from other log records.
pub const TAG: &str = "icmp-guard-trace";

/// What to log, and until when.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceConfig {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) after which nothing is logged; 0 logs nothing.
    pub deadline_ns: u64,
    /// The source prefix packets must come from: IPv4 in the first four bytes.
    pub source: [u8; 16],
    /// Its length in bits; with [`TraceConfig::family`] [`ANY`], every source matches.
    pub prefix_len: u8,
    /// [`crate::FAMILY_V4`], [`crate::FAMILY_V6`] or [`ANY`].
    pub family: u8,
    /// The ICMPv4 type packets must have, when [`TraceConfig::types`] has [`TYPE_V4`].
    pub type_v4: u8,
    /// The ICMPv6 type, when [`TraceConfig::types`] has [`TYPE_V6`].
    pub type_v6: u8,
    /// 0: any type of either family; else only the families whose bit is set, with their
    /// type (`echo-request` is 8 in one and 128 in the other).
    pub types: u8,
    pub _padding: [u8; 3],
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, integers and byte arrays, explicit padding, every bit pattern valid.
unsafe impl aya::Pod for TraceConfig {}

/// Any family (and so any source).
pub const ANY: u8 = 0xff;
/// [`TraceConfig::types`]: ICMPv4 packets of `type_v4`.
pub const TYPE_V4: u8 = 1;
/// [`TraceConfig::types`]: ICMPv6 packets of `type_v6`.
pub const TYPE_V6: u8 = 2;

impl TraceConfig {
    /// True when a packet of `family` from `source` (IPv4 in its first four bytes) with
    /// type `icmp_type` matches the filter.
    #[inline(always)]
    pub fn matches(&self, family: u8, source: &[u8; 16], icmp_type: u8) -> bool {
        if self.types != 0 {
            let (bit, wanted) = if family == crate::FAMILY_V4 {
                (TYPE_V4, self.type_v4)
            } else {
                (TYPE_V6, self.type_v6)
            };
            if self.types & bit == 0 || wanted != icmp_type {
                return false;
            }
        }
        if self.family == ANY {
            return true;
        }
        if self.family != family {
            return false;
        }
        let mut bits = u32::from(self.prefix_len);
        let mut i = 0;
        while i < 16 {
            if bits == 0 {
                return true;
            }
            let mask: u8 = if bits >= 8 {
                0xff
            } else {
                0xffu8 << (8 - bits)
            };
            if (source[i] ^ self.source[i]) & mask != 0 {
                return false;
            }
            bits = bits.saturating_sub(8);
            i += 1;
        }
        true
    }
}

/// Which check decided a packet, as a trace line names it.
pub mod check {
    /// The parser: the packet's structure is malformed or breaks a header rule.
    pub const PARSER: u8 = 1;
    /// A martian source (or a broadcast address of ours as the source).
    pub const MARTIAN: u8 = 2;
    /// The deny list.
    pub const DENY_LIST: u8 = 3;
    /// The smurf rule: an amplifier request to a broadcast or multicast destination.
    pub const SMURF: u8 = 4;
    /// The type/code rule (its action, or a condition it failed).
    pub const RULE: u8 = 5;
    /// The allow list: the rule passed and the source skips the limiters.
    pub const ALLOW_LIST: u8 = 6;
    /// A limiter: the rule's, the error limiter or the fragment limiter.
    pub const LIMITER: u8 = 7;
    /// A non-first fragment with no fragment limiter, passed.
    pub const FRAGMENT: u8 = 8;
    /// Block time: the source went over a limit that has `block` and serves its block.
    pub const BLOCK_TIME: u8 = 9;
    /// The rule's size cap (`max_size`).
    pub const SIZE_CAP: u8 = 10;
    /// Sweep detection: the source (or its prefix) was flagged as sweeping and its probes
    /// are blocked.
    pub const SWEEP: u8 = 11;

    /// The name a trace line uses.
    pub const fn name(check: u8) -> &'static str {
        match check {
            PARSER => "parser",
            MARTIAN => "martian source",
            DENY_LIST => "deny list",
            SMURF => "smurf rule",
            RULE => "type/code rule",
            ALLOW_LIST => "allow list",
            LIMITER => "limiter",
            FRAGMENT => "fragment",
            BLOCK_TIME => "block time",
            SIZE_CAP => "size cap",
            SWEEP => "sweep detection",
            _ => "unknown check",
        }
    }
}

/// One trace line's numbers, packed into two words for the log record (each argument of an
/// aya-log record costs the XDP program stack).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Line {
    pub family: u8,
    pub icmp_type: u8,
    pub code: u8,
    /// 0 passed, 1 dropped, 2 would drop (dry run).
    pub verdict: u8,
    /// The [`crate::DropReason`] discriminant, 0 when passed.
    pub reason: u8,
    /// One of [`check`].
    pub check: u8,
    /// The rule's [`crate::policy::action`] and [`crate::policy::condition`] bits.
    pub action: u8,
    pub condition: u8,
    /// The limiter's index in its generation, `u8::MAX` when no limiter decided.
    pub limiter: u8,
    /// Its [`crate::limit::per`].
    pub scope: u8,
    pub burst: u32,
    /// Packets per second.
    pub rate: u32,
}

/// 27 bits.
const RATE_MASK: u64 = (1 << 27) - 1;

impl Line {
    /// No limiter decided.
    pub const NO_LIMITER: u8 = u8::MAX;

    /// Family, type, code, verdict, reason, check, action and condition, a byte each.
    #[inline(always)]
    pub const fn decision_word(&self) -> u64 {
        u64::from_le_bytes([
            self.family,
            self.icmp_type,
            self.code,
            self.verdict,
            self.reason,
            self.check,
            self.action,
            self.condition,
        ])
    }

    /// Limiter (8 bits), scope (2), rate and burst (27 each: both are at most 100M).
    #[inline(always)]
    pub const fn limiter_word(&self) -> u64 {
        (self.limiter as u64)
            | ((self.scope & 3) as u64) << 8
            | ((self.rate as u64) & RATE_MASK) << 10
            | ((self.burst as u64) & RATE_MASK) << 37
    }

    /// The line from its two words.
    pub const fn unpack(decision: u64, limiter: u64) -> Self {
        let b = decision.to_le_bytes();
        Self {
            family: b[0],
            icmp_type: b[1],
            code: b[2],
            verdict: b[3],
            reason: b[4],
            check: b[5],
            action: b[6],
            condition: b[7],
            limiter: limiter as u8,
            scope: ((limiter >> 8) & 3) as u8,
            rate: ((limiter >> 10) & RATE_MASK) as u32,
            burst: ((limiter >> 37) & RATE_MASK) as u32,
        }
    }
}

/// How many tokens a GCRA bucket whose TAT is `ahead_ns` past now holds, of `burst`.
pub const fn tokens_left(ahead_ns: u64, interval_ns: u64, tolerance_ns: u64, burst: u32) -> u32 {
    if interval_ns == 0 || ahead_ns > tolerance_ns {
        return 0;
    }
    let tokens = (tolerance_ns - ahead_ns) / interval_ns + 1;
    if tokens > burst as u64 {
        burst
    } else {
        tokens as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut out = [0; 16];
        out[..4].copy_from_slice(&a);
        out
    }

    #[test]
    fn the_filter_matches_by_prefix_family_and_type() {
        let all = TraceConfig {
            family: ANY,
            ..TraceConfig::default()
        };
        assert!(all.matches(crate::FAMILY_V6, &[0; 16], 128));
        let net = TraceConfig {
            source: v4([198, 51, 100, 0]),
            prefix_len: 25,
            family: crate::FAMILY_V4,
            ..TraceConfig::default()
        };
        assert!(net.matches(crate::FAMILY_V4, &v4([198, 51, 100, 127]), 8));
        assert!(!net.matches(crate::FAMILY_V4, &v4([198, 51, 100, 128]), 8));
        assert!(!net.matches(crate::FAMILY_V6, &v4([198, 51, 100, 1]), 128));
        let typed = TraceConfig {
            type_v4: 13,
            types: TYPE_V4,
            ..net
        };
        assert!(typed.matches(crate::FAMILY_V4, &v4([198, 51, 100, 1]), 13));
        assert!(!typed.matches(crate::FAMILY_V4, &v4([198, 51, 100, 1]), 8));
        let echo = TraceConfig {
            type_v4: 8,
            type_v6: 128,
            types: TYPE_V4 | TYPE_V6,
            ..all
        };
        assert!(echo.matches(crate::FAMILY_V4, &[0; 16], 8));
        assert!(echo.matches(crate::FAMILY_V6, &[0; 16], 128));
        assert!(!echo.matches(crate::FAMILY_V6, &[0; 16], 8));
        let v6_only = TraceConfig {
            type_v6: 135,
            types: TYPE_V6,
            ..all
        };
        assert!(!v6_only.matches(crate::FAMILY_V4, &[0; 16], 135));
    }

    #[test]
    fn a_line_survives_packing() {
        let line = Line {
            family: 1,
            icmp_type: 128,
            code: 0,
            verdict: 2,
            reason: 2,
            check: check::LIMITER,
            action: 2,
            condition: 8,
            limiter: 3,
            scope: 1,
            burst: 100_000_000,
            rate: 100_000_000,
        };
        assert_eq!(
            Line::unpack(line.decision_word(), line.limiter_word()),
            line
        );
    }

    #[test]
    fn tokens_left_counts_what_the_bucket_still_admits() {
        // 10/s, burst 5: interval 100 ms, tolerance 400 ms.
        let (interval, tolerance) = (100_000_000, 400_000_000);
        assert_eq!(tokens_left(0, interval, tolerance, 5), 5);
        assert_eq!(tokens_left(100_000_000, interval, tolerance, 5), 4);
        assert_eq!(tokens_left(400_000_000, interval, tolerance, 5), 1);
        assert_eq!(tokens_left(400_000_001, interval, tolerance, 5), 0);
    }
}
