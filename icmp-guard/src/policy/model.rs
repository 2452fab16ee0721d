//! The policy as operators think of it: an action per (family, type), optional per-code
//! exceptions, rate limits, allow/deny prefixes and the mode. Compiled to map entries by
//! [`super::compile`].

use std::{collections::BTreeMap, fmt, net::IpAddr, str::FromStr};

use icmp_guard_common::{FAMILY_V4, FAMILY_V6, icmp, policy as kernel};

/// What happens to a matching packet.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Pass,
    Drop,
    Limit,
}

impl Action {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Drop => "drop",
            Self::Limit => "limit",
        }
    }
}

impl FromStr for Action {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "pass" => Ok(Self::Pass),
            "drop" => Ok(Self::Drop),
            "limit" => Ok(Self::Limit),
            other => Err(format!("unknown action '{other}': use pass, drop or limit")),
        }
    }
}

/// Which sources share a rate-limit bucket.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Per {
    Source,
    Prefix,
    Global,
}

impl Per {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::Prefix => "prefix",
            Self::Global => "global",
        }
    }
}

/// A rate limit: `rate` packets per second with bursts of up to `burst` packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Limit {
    pub rate: u32,
    pub burst: u32,
    pub per: Per,
    /// Prefix lengths that group sources with `per = prefix` (1-32 and 1-128).
    pub prefix_v4: u8,
    pub prefix_v6: u8,
    /// The budget shared by sources (or prefixes) without a bucket yet, which caps
    /// spoofed random-source floods; `None` is ten times the limit's rate and burst.
    pub new_sources: Option<NewSources>,
    /// Seconds a source admitted by the new-source budget stays on probation, its packets
    /// charged to the budget as well as to its own bucket; it graduates at a packet that
    /// comes this long after both its first packet and the budget's last refusal.
    pub probation: u32,
    /// Milliseconds a source (per source) or a source of a prefix (per prefix) that the
    /// limit refuses is blocked: all its ICMP dropped as `blocked`, but never its PMTUD
    /// (v4 frag-needed, v6 packet-too-big) and ND messages, and never its TCP or UDP.
    /// 0: no block.
    pub block_ms: u32,
    /// A byte rate besides the packet rate, in the same scope (per source, per prefix, or
    /// global): bytes of the IP packet.
    pub bytes: Option<ByteLimit>,
}

/// A byte rate: `rate` bytes per second, bursts of up to `burst` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByteLimit {
    pub rate: u64,
    pub burst: u64,
}

/// Largest accepted byte rate, bytes per second (100 GB/s), and byte burst (4 GiB).
pub const MAX_BYTE_RATE: u64 = 100_000_000_000;
pub const MAX_BYTE_BURST: u64 = 4 << 30;
/// Smallest accepted byte burst: one 1500-byte packet (a packet larger than the burst
/// never passes).
pub const MIN_BYTE_BURST: u64 = 1500;

impl ByteLimit {
    /// `rate` bytes per second with the default burst: one second's worth, at least 64 KiB.
    pub const fn new(rate: u64) -> Self {
        Self {
            rate,
            burst: if rate > 65_536 { rate } else { 65_536 },
        }
    }

    /// Checks the numbers; the message says what to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.rate == 0 || self.rate > MAX_BYTE_RATE {
            return Err(format!(
                "bytes must be 1 byte/s to 100GB/s, not {}/s",
                super::units::format_bytes(self.rate)
            ));
        }
        if !(MIN_BYTE_BURST..=MAX_BYTE_BURST).contains(&self.burst) {
            return Err(format!(
                "bytes_burst must be {MIN_BYTE_BURST} bytes (one full-size packet) to 4GiB, not {}",
                super::units::format_bytes(self.burst)
            ));
        }
        Ok(())
    }
}

/// Packets per second and burst admitted from sources that have no bucket yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct NewSources {
    pub rate: u32,
    pub burst: u32,
}

/// Prefix lengths that group sources for `per = prefix`, unless a limit says otherwise.
pub const DEFAULT_PREFIX_V4: u8 = 24;
pub const DEFAULT_PREFIX_V6: u8 = 64;
/// The default new-source budget, as a multiple of a limit's rate and burst: enough for
/// many legitimate newcomers, a cap for spoofed floods.
pub const NEW_SOURCE_FACTOR: u32 = 10;

/// Largest accepted rate or burst, packets per second: far above line rate on any link.
pub const MAX_RATE: u32 = 100_000_000;

/// Probation of sources admitted by a new-source budget, seconds, unless a limit says
/// otherwise.
pub const DEFAULT_PROBATION: u32 = 5;
/// Longest accepted probation, seconds.
pub const MAX_PROBATION: u32 = 3600;
/// Longest accepted block time, milliseconds: one day.
pub const MAX_BLOCK_MS: u32 = 86_400_000;
/// Smallest accepted `max_size`: an IPv4 header and the 8-byte ICMP header.
pub const MIN_MAX_SIZE: u16 = 28;

impl Limit {
    /// Checks the numbers; the message says what to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.rate == 0 {
            return Err("rate must be at least 1 packet per second (use drop to block)".into());
        }
        if self.burst == 0 {
            return Err("burst must be at least 1 packet".into());
        }
        if self.rate > MAX_RATE || self.burst > MAX_RATE {
            return Err(format!("rate and burst are capped at {MAX_RATE} packets"));
        }
        if !(1..=32).contains(&self.prefix_v4) || !(1..=128).contains(&self.prefix_v6) {
            return Err("prefix_v4 must be 1-32 and prefix_v6 1-128".into());
        }
        if self.per != Per::Prefix
            && (self.prefix_v4, self.prefix_v6) != (DEFAULT_PREFIX_V4, DEFAULT_PREFIX_V6)
        {
            return Err(format!(
                "prefix_v4 and prefix_v6 only apply to per = \"prefix\", not \"{}\"",
                self.per.as_str()
            ));
        }
        if self.probation > MAX_PROBATION {
            return Err(format!("probation must be 0-{MAX_PROBATION} seconds"));
        }
        if self.per == Per::Global && self.probation != DEFAULT_PROBATION {
            return Err(
                "a global limit has no new sources, so no probation: probation applies to \
                 per = \"source\" and per = \"prefix\""
                    .into(),
            );
        }
        if let Some(bytes) = self.bytes {
            bytes.validate()?;
        }
        if self.block_ms > MAX_BLOCK_MS {
            return Err("block must be at most 1 day (86400s)".into());
        }
        if self.block_ms != 0 && self.per == Per::Global {
            return Err(
                "a global limit has no source to block: block applies to per = \"source\" \
                 and per = \"prefix\""
                    .into(),
            );
        }
        if let Some(new) = self.new_sources {
            if self.per == Per::Global {
                return Err(
                    "a global limit has no new sources: new_source_rate and new_source_burst \
                     apply to per = \"source\" and per = \"prefix\""
                        .into(),
                );
            }
            if new.rate == 0 || new.burst == 0 || new.rate > MAX_RATE || new.burst > MAX_RATE {
                return Err(format!(
                    "new_source_rate and new_source_burst must be 1-{MAX_RATE} packets"
                ));
            }
        }
        Ok(())
    }

    /// `rate` per second, bursts of `burst`, per `per`; the other settings their defaults.
    pub const fn new(rate: u32, burst: u32, per: Per) -> Self {
        Self {
            rate,
            burst,
            per,
            prefix_v4: DEFAULT_PREFIX_V4,
            prefix_v6: DEFAULT_PREFIX_V6,
            new_sources: None,
            probation: DEFAULT_PROBATION,
            block_ms: 0,
            bytes: None,
        }
    }

    /// The new-source budget in force: the explicit one, or ten times the limit.
    pub const fn new_source_budget(&self) -> NewSources {
        match self.new_sources {
            Some(new) => new,
            None => NewSources {
                rate: self.rate.saturating_mul(NEW_SOURCE_FACTOR),
                burst: self.burst.saturating_mul(NEW_SOURCE_FACTOR),
            },
        }
    }
}

/// Defaults for `limit` when rate/burst/per are not given.
pub const DEFAULT_LIMIT: Limit = Limit::new(100, 200, Per::Source);

/// Default per-source limit on echo replies: generous, no normal host reaches it.
pub const DEFAULT_REPLY_LIMIT: Limit = Limit::new(1_000, 2_000, Per::Source);

/// The smurf and reflection defences, each of which an operator may tune or switch off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Smurf {
    /// Drop v4 echo and timestamp requests to broadcast or multicast destinations (L2, L3,
    /// and the directed broadcasts of the attached interfaces).
    pub broadcast_echo: bool,
    /// Drop ICMPv6 echo requests to multicast beyond link-local scope.
    pub multicast_echo_v6: bool,
    /// Drop ICMP from martian sources (0/8, 127/8, 224/4, 240/4, our broadcasts; v6
    /// multicast, loopback, and :: outside ND and MLD) as invalid.
    pub martian_sources: bool,
    /// Echo replies per second admitted from all sources together: the ceiling a
    /// reflection flood from many sources, real or spoofed, runs into. Sources without a
    /// bucket yet (or on probation) share half of it, so that replies from established
    /// sources keep the other half during a spoofed storm. Counted as `smurf`.
    pub reply_ceiling: u32,
    /// Burst of that ceiling.
    pub reply_ceiling_burst: u32,
}

impl Default for Smurf {
    fn default() -> Self {
        Self {
            broadcast_echo: true,
            multicast_echo_v6: true,
            martian_sources: true,
            reply_ceiling: 10_000,
            reply_ceiling_burst: 20_000,
        }
    }
}

/// The per-source ceiling of ICMP errors that their rule passes (v4 3, 4, 5, 11, 12 and
/// every ICMPv6 type below 128): one source's error flood is capped, while Path MTU
/// Discovery and traceroute, a few errors a second from each router, never meet it.
/// Errors are never charged to another budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorCeiling {
    /// Errors per second per source.
    pub rate: u32,
    pub burst: u32,
}

impl Default for ErrorCeiling {
    fn default() -> Self {
        Self {
            rate: 1_000,
            burst: 2_000,
        }
    }
}

/// The budget of non-first ICMP fragments, which carry no type to classify: per source,
/// under a backstop for all sources together, so that a fragment flood cannot fill the
/// reassembly memory. A fragment whose datagram never completes stays there for
/// `ipfrag_time` (30 s) at 1.0 KB (empty) to 2.5 KB (1,480 bytes of data) each, against
/// `ipfrag_high_thresh` (4 MB) per namespace, above which the kernel refuses every new
/// datagram; so the backstop admits at most `total_burst + total_rate × 30` = 1,300
/// orphans per 30 s by default, ≤ 3.3 MB even at the largest size. A large ping
/// (`ping -s 8972` on a 1500-byte MTU) has six non-first fragments: three a second per
/// source, ten in a burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FragmentBudget {
    /// Fragments per second per source.
    pub rate: u32,
    pub burst: u32,
    /// Fragments per second from all sources together.
    pub total_rate: u32,
    pub total_burst: u32,
}

impl Default for FragmentBudget {
    fn default() -> Self {
        Self {
            rate: 20,
            burst: 60,
            total_rate: 40,
            total_burst: 100,
        }
    }
}

/// One rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct RuleSpec {
    pub action: Action,
    /// Present exactly when `action` is `Limit`.
    pub limit: Option<Limit>,
    /// Largest IP packet (IPv4 total length, or 40 plus the IPv6 payload length) a pass or
    /// limit rule admits; larger ones are dropped as `oversize`.
    pub max_size: Option<u16>,
}

impl RuleSpec {
    pub const PASS: Self = Self {
        action: Action::Pass,
        limit: None,
        max_size: None,
    };
    pub const DROP: Self = Self {
        action: Action::Drop,
        limit: None,
        max_size: None,
    };

    pub const fn limit(limit: Limit) -> Self {
        Self {
            action: Action::Limit,
            limit: Some(limit),
            max_size: None,
        }
    }

    /// The same rule with a maximum size.
    pub const fn with_max_size(mut self, max_size: Option<u16>) -> Self {
        self.max_size = max_size;
        self
    }

    /// Checks the maximum size; the message says what to change.
    pub fn validate_max_size(&self) -> Result<(), String> {
        match self.max_size {
            None => Ok(()),
            Some(_) if self.action == Action::Drop => Err(
                "max_size only applies to action = \"pass\" or \"limit\": a drop rule drops every size"
                    .into(),
            ),
            Some(size) if size < MIN_MAX_SIZE => Err(format!(
                "max_size must be {MIN_MAX_SIZE}-65535 bytes (the IP packet's length), not {size}"
            )),
            Some(_) => Ok(()),
        }
    }
}

/// Enforce verdicts, or only count them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    #[default]
    Enforce,
    DryRun,
}

impl Mode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::DryRun => "dry-run",
        }
    }
}

/// An IPv4 or IPv6 prefix. Host bits must be zero, so that `10.0.0.1/8` is caught as the
/// typo it usually is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub const fn max_prefix(addr: &IpAddr) -> u8 {
        match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        }
    }

    pub const fn family(&self) -> u8 {
        match self.addr {
            IpAddr::V4(_) => FAMILY_V4,
            IpAddr::V6(_) => FAMILY_V6,
        }
    }

    /// True when every address of `other` is in `self`.
    pub fn contains(&self, other: &Self) -> bool {
        if self.family() != other.family() || other.prefix < self.prefix {
            return false;
        }
        let (mine, theirs) = (self.octets(), other.octets());
        let prefix = usize::from(self.prefix);
        mine.iter().zip(&theirs).enumerate().all(|(index, (a, b))| {
            let keep = prefix.saturating_sub(index * 8).min(8);
            let mask = if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
            a & mask == b & mask
        })
    }

    /// The network of `address`/`prefix` (host bits cleared).
    pub fn network_of(address: IpAddr, prefix: u8) -> Self {
        let max = Self::max_prefix(&address);
        let prefix = prefix.min(max);
        let keep = |octets: &mut [u8]| {
            for (index, byte) in octets.iter_mut().enumerate() {
                let bits = usize::from(prefix).saturating_sub(index * 8).min(8);
                *byte &= if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
            }
        };
        let addr = match address {
            IpAddr::V4(v4) => {
                let mut octets = v4.octets();
                keep(&mut octets);
                IpAddr::from(octets)
            }
            IpAddr::V6(v6) => {
                let mut octets = v6.octets();
                keep(&mut octets);
                IpAddr::from(octets)
            }
        };
        Self { addr, prefix }
    }

    /// The address bytes (4 or 16).
    pub fn octets(&self) -> Vec<u8> {
        match self.addr {
            IpAddr::V4(addr) => addr.octets().to_vec(),
            IpAddr::V6(addr) => addr.octets().to_vec(),
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| format!("'{text}' is not an IPv4 or IPv6 address or prefix"))?;
        let max = Self::max_prefix(&addr);
        let prefix = match prefix_text {
            None => max,
            Some(prefix_text) => prefix_text
                .parse::<u8>()
                .ok()
                .filter(|prefix| *prefix <= max)
                .ok_or_else(|| {
                    format!("prefix length /{prefix_text} in '{text}' is out of range 0-{max}")
                })?,
        };
        let cidr = Self { addr, prefix };
        let bytes = cidr.octets();
        let host_bits_set = bytes.iter().enumerate().any(|(index, byte)| {
            let bit = index * 8;
            let keep = (prefix as usize).saturating_sub(bit).min(8);
            let mask = if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
            byte & !mask != 0
        });
        if host_bits_set {
            return Err(format!(
                "'{text}' has host bits set after /{prefix}: did you mean the network address?"
            ));
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A refused policy change; the message names the rule and says what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("refusing to {action} {what}: {why}; add --force (or force = true) if you mean it")]
    Protected {
        /// `drop` or `rate-limit`.
        action: &'static str,
        what: String,
        why: &'static str,
    },
    #[error(
        "refusing to deny {cidr}: {why}; add --force (or force = true under [lists]) if you mean it"
    )]
    ProtectedPrefix { cidr: Cidr, why: String },
    #[error("the policy has {count} {what}, more than the {max} one policy may hold: {advice}")]
    TooMany {
        what: &'static str,
        count: usize,
        max: u32,
        advice: &'static str,
    },
    #[error("invalid limit for {what}: {reason}")]
    BadLimit { what: String, reason: String },
    #[error("invalid [recon] setting: {reason}")]
    BadRecon { reason: String },
    #[error("{cidr} is in both the allow and the deny list: keep it in one")]
    AllowAndDeny { cidr: Cidr },
    #[error("{cidr} is already in the {} list: remove it there first", list.name())]
    ListedInOther { cidr: Cidr, list: List },
}

/// One of the two source lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum List {
    /// Sources that bypass the deny list and rate limits.
    Allow,
    /// Sources whose ICMP is always dropped.
    Deny,
}

impl List {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }

    /// The other list.
    pub const fn other(self) -> Self {
        match self {
            Self::Allow => Self::Deny,
            Self::Deny => Self::Allow,
        }
    }
}

/// The whole policy.
#[derive(Clone, Debug, Eq)]
pub struct Policy {
    pub mode: Mode,
    /// One rule per (family, type): always 512 entries.
    pub types: BTreeMap<(u8, u8), RuleSpec>,
    /// Per-code exceptions: (family, type, code).
    pub codes: BTreeMap<(u8, u8, u8), RuleSpec>,
    pub allow: Vec<Cidr>,
    pub deny: Vec<Cidr>,
    pub smurf: Smurf,
    pub errors: ErrorCeiling,
    pub fragments: FragmentBudget,
    /// Sweep detection (`[recon]`).
    pub recon: super::recon::Recon,
    /// The operator's `--force` (`force = true` under `[lists]`) for deny entries that
    /// cover messages the network needs ([`protected_prefix`]). Not kept in the kernel: it
    /// is checked when entries are added ([`Policy::check_added_entries`]).
    pub force_lists: bool,
}

/// Two policies are equal when they enforce the same: [`Policy::force_lists`] is how one
/// was written, not what it does.
impl PartialEq for Policy {
    fn eq(&self, other: &Self) -> bool {
        self.mode == other.mode
            && self.types == other.types
            && self.codes == other.codes
            && self.allow == other.allow
            && self.deny == other.deny
            && self.smurf == other.smurf
            && self.errors == other.errors
            && self.fragments == other.fragments
            && self.recon == other.recon
    }
}

/// Why denying every source in `cidr` breaks the network, when it does: it covers the
/// sources of neighbour discovery and MLD (`::`, link-local, an IPv6 on-link prefix) or
/// every router, whose "fragmentation needed" Path MTU Discovery needs (0.0.0.0/0).
/// `on_link` are the prefixes of the attached interfaces.
pub fn protected_prefix(cidr: &Cidr, on_link: &[Cidr]) -> Option<String> {
    let covers = |inner: &Cidr| cidr.contains(inner);
    match cidr.addr {
        IpAddr::V6(_) => {
            let unspecified: Cidr = Cidr {
                addr: IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                prefix: 128,
            };
            let link_local = Cidr {
                addr: IpAddr::V6(std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)),
                prefix: 64,
            };
            if covers(&unspecified) {
                return Some(
                    "it covers ::, the source of neighbour solicitations for duplicate address \
                     detection (RFC 4861, RFC 4862) and of MLD reports (RFC 3810); dropping \
                     them cuts the host off its link"
                        .to_owned(),
                );
            }
            let fe80 = Cidr {
                addr: link_local.addr,
                prefix: 10,
            };
            if covers(&link_local) || (fe80.contains(cidr) && cidr.prefix <= 64) {
                return Some(
                    "it covers the link-local addresses that neighbour discovery (RFC 4861) and \
                     MLD (RFC 3810) come from; dropping them cuts the host off its link"
                        .to_owned(),
                );
            }
        }
        IpAddr::V4(_) => {
            if cidr.prefix == 0 {
                return Some(
                    "it covers every router, whose \"fragmentation needed\" messages Path MTU \
                     Discovery needs (RFC 1191); dropping them black-holes large packets"
                        .to_owned(),
                );
            }
        }
    }
    // On IPv6 an on-link prefix is where neighbour discovery comes from; an IPv4 host
    // needs no ICMP from its neighbours (ARP is not ICMP).
    on_link
        .iter()
        .find(|prefix| prefix.addr.is_ipv6() && cidr.addr.is_ipv6() && covers(prefix))
        .map(|prefix| {
            format!(
                "it covers {prefix}, an on-link prefix of an attached interface, whose \
                 neighbours' neighbour discovery (RFC 4861) it would drop"
            )
        })
}

/// How to describe (family, type[, code]) in messages.
pub fn describe(family: u8, icmp_type: u8, code: Option<u8>) -> String {
    let name = icmp::type_name(family, icmp_type).unwrap_or("unassigned");
    match code {
        Some(code) => match super::names::code_name(family, icmp_type, code) {
            Some(code_name) => format!(
                "{} {icmp_type}/{code} ({name}/{code_name})",
                icmp::family_label(family)
            ),
            None => format!("{} {icmp_type}/{code} ({name})", icmp::family_label(family)),
        },
        None => format!("{} {icmp_type} ({name})", icmp::family_label(family)),
    }
}

impl Policy {
    /// The safe default profile (PRODUCT.md).
    pub fn default_profile() -> Self {
        let mut types = BTreeMap::new();
        for family in [FAMILY_V4, FAMILY_V6] {
            for icmp_type in 0..=255u8 {
                let rule = kernel::default_rule(family, icmp_type);
                let spec = match rule.action {
                    kernel::action::PASS => RuleSpec::PASS,
                    kernel::action::LIMIT if rule.limiter == 1 => {
                        RuleSpec::limit(DEFAULT_REPLY_LIMIT)
                    }
                    kernel::action::LIMIT => RuleSpec::limit(DEFAULT_LIMIT),
                    _ => RuleSpec::DROP,
                };
                types.insert((family, icmp_type), spec);
            }
        }
        Self {
            mode: Mode::Enforce,
            types,
            codes: BTreeMap::new(),
            allow: Vec::new(),
            deny: Vec::new(),
            smurf: Smurf::default(),
            errors: ErrorCeiling::default(),
            fragments: FragmentBudget::default(),
            recon: super::recon::Recon::default(),
            force_lists: false,
        }
    }

    /// A policy that passes every type: the base for operators who list only drops.
    pub fn pass_all() -> Self {
        let mut policy = Self::default_profile();
        for spec in policy.types.values_mut() {
            *spec = RuleSpec::PASS;
        }
        policy
    }

    /// Sets a rule for a whole type (`code` None) or one code. Protected messages need
    /// `force` to be dropped or rate-limited (a limit low enough drops them too).
    pub fn set(
        &mut self,
        family: u8,
        icmp_type: u8,
        code: Option<u8>,
        spec: RuleSpec,
        force: bool,
    ) -> Result<(), PolicyError> {
        if (spec.action != Action::Pass || spec.max_size.is_some())
            && !force
            && let Some(why) = kernel::protected(family, icmp_type, code)
        {
            return Err(PolicyError::Protected {
                action: match spec.action {
                    Action::Drop => "drop",
                    Action::Limit => "rate-limit",
                    Action::Pass => "cap the size of",
                },
                what: describe(family, icmp_type, code),
                why,
            });
        }
        if let Some(limit) = spec.limit {
            limit.validate().map_err(|reason| PolicyError::BadLimit {
                what: describe(family, icmp_type, code),
                reason,
            })?;
        }
        spec.validate_max_size()
            .map_err(|reason| PolicyError::BadLimit {
                what: describe(family, icmp_type, code),
                reason,
            })?;
        match code {
            None => {
                self.types.insert((family, icmp_type), spec);
                // A type-wide rule replaces the type's exceptions.
                self.codes
                    .retain(|(f, t, _), _| !(*f == family && *t == icmp_type));
            }
            Some(code) => {
                if self.types.get(&(family, icmp_type)) == Some(&spec) {
                    self.codes.remove(&(family, icmp_type, code));
                } else {
                    self.codes.insert((family, icmp_type, code), spec);
                }
            }
        }
        Ok(())
    }

    /// The prefixes of `list`.
    pub fn list(&self, list: List) -> &[Cidr] {
        match list {
            List::Allow => &self.allow,
            List::Deny => &self.deny,
        }
    }

    fn list_mut(&mut self, list: List) -> &mut Vec<Cidr> {
        match list {
            List::Allow => &mut self.allow,
            List::Deny => &mut self.deny,
        }
    }

    /// Adds `cidrs` to `list`; a prefix already in the other list is refused and nothing
    /// is added.
    pub fn add_to_list(&mut self, list: List, cidrs: &[Cidr]) -> Result<(), PolicyError> {
        let other = list.other();
        if let Some(cidr) = cidrs.iter().find(|cidr| self.list(other).contains(cidr)) {
            return Err(PolicyError::ListedInOther {
                cidr: *cidr,
                list: other,
            });
        }
        for cidr in cidrs {
            if !self.list(list).contains(cidr) {
                self.list_mut(list).push(*cidr);
            }
        }
        Ok(())
    }

    /// Removes `cidrs` from `list`; returns those that were not in it.
    pub fn remove_from_list(&mut self, list: List, cidrs: &[Cidr]) -> Vec<Cidr> {
        let missing: Vec<Cidr> = cidrs
            .iter()
            .filter(|cidr| !self.list(list).contains(cidr))
            .copied()
            .collect();
        self.list_mut(list).retain(|listed| !cidrs.contains(listed));
        missing
    }

    /// Refuses deny entries that are in `self` but not in `before` (all of them without
    /// `before`) and cover messages the network needs ([`protected_prefix`]), unless
    /// [`Self::force_lists`]. Entries already live were forced when they were added.
    pub fn check_added_entries(
        &self,
        before: Option<&Self>,
        on_link: &[Cidr],
    ) -> Result<(), PolicyError> {
        if self.force_lists {
            return Ok(());
        }
        for cidr in &self.deny {
            if before.is_some_and(|before| before.deny.contains(cidr)) {
                continue;
            }
            if let Some(why) = protected_prefix(cidr, on_link) {
                return Err(PolicyError::ProtectedPrefix { cidr: *cidr, why });
            }
        }
        Ok(())
    }

    /// Checks what `set` cannot see alone: lists that contradict each other.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if let Some(cidr) = self.allow.iter().find(|cidr| self.deny.contains(cidr)) {
            return Err(PolicyError::AllowAndDeny { cidr: *cidr });
        }
        self.recon
            .validate()
            .map_err(|reason| PolicyError::BadRecon { reason })?;
        Limit::new(
            self.smurf.reply_ceiling,
            self.smurf.reply_ceiling_burst,
            Per::Global,
        )
        .validate()
        .map_err(|reason| PolicyError::BadLimit {
            what: "the echo-reply ceiling".to_owned(),
            reason,
        })?;
        let checks = [
            ("the error ceiling", self.errors.rate, self.errors.burst),
            (
                "the fragment budget",
                self.fragments.rate,
                self.fragments.burst,
            ),
            (
                "the fragment backstop",
                self.fragments.total_rate,
                self.fragments.total_burst,
            ),
        ];
        for (what, rate, burst) in checks {
            Limit::new(rate, burst, Per::Global)
                .validate()
                .map_err(|reason| PolicyError::BadLimit {
                    what: what.to_owned(),
                    reason,
                })?;
        }
        Ok(())
    }

    /// The rule that applies to (family, type, code).
    pub fn rule_for(&self, family: u8, icmp_type: u8, code: u8) -> RuleSpec {
        self.codes
            .get(&(family, icmp_type, code))
            .or_else(|| self.types.get(&(family, icmp_type)))
            .copied()
            .unwrap_or(RuleSpec::DROP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_refuse_nonsense() {
        let v4: Cidr = "192.0.2.0/24".parse().expect("valid");
        assert_eq!(v4.to_string(), "192.0.2.0/24");
        let host: Cidr = "2001:db8::1".parse().expect("valid");
        assert_eq!(host.prefix, 128);
        for (bad, needle) in [
            ("10.0.0.0/33", "out of range 0-32"),
            ("::/129", "out of range 0-128"),
            ("10.0.0.1/8", "host bits"),
            ("bogus", "not an IPv4 or IPv6"),
            ("10.0.0.0/-1", "out of range"),
        ] {
            let err = bad.parse::<Cidr>().expect_err(bad);
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn protected_messages_need_force() {
        let mut policy = Policy::default_profile();
        let err = policy
            .set(FAMILY_V4, 3, Some(4), RuleSpec::DROP, false)
            .expect_err("PTB is protected");
        assert!(err.to_string().contains("RFC 1191"), "{err}");
        assert!(
            policy
                .set(FAMILY_V6, 135, None, RuleSpec::DROP, false)
                .is_err()
        );
        assert_eq!(
            policy,
            Policy::default_profile(),
            "a refusal changes nothing"
        );
        policy
            .set(FAMILY_V6, 2, None, RuleSpec::DROP, true)
            .expect("forced");
        assert_eq!(policy.rule_for(FAMILY_V6, 2, 0), RuleSpec::DROP);
        // A size cap below what they carry drops them too.
        let capped = RuleSpec::PASS.with_max_size(Some(100));
        let err = policy
            .set(FAMILY_V6, 2, None, capped, false)
            .expect_err("a capped PTB needs force");
        assert!(err.to_string().contains("cap the size of"), "{err}");
        policy
            .set(FAMILY_V6, 2, None, capped, true)
            .expect("forced");
    }

    #[test]
    fn code_rules_override_and_type_rules_reset_them() {
        let mut policy = Policy::default_profile();
        policy
            .set(FAMILY_V4, 3, Some(1), RuleSpec::DROP, false)
            .expect("3/1 is not protected");
        assert_eq!(policy.rule_for(FAMILY_V4, 3, 1), RuleSpec::DROP);
        assert_eq!(policy.rule_for(FAMILY_V4, 3, 4), RuleSpec::PASS);
        policy
            .set(FAMILY_V4, 3, None, RuleSpec::PASS, false)
            .expect("valid");
        assert!(policy.codes.is_empty());
    }

    #[test]
    fn limits_are_validated() {
        let mut policy = Policy::default_profile();
        let zero = Limit::new(0, 0, Per::Source);
        assert!(matches!(
            policy.set(FAMILY_V4, 8, None, RuleSpec::limit(zero), false),
            Err(PolicyError::BadLimit { .. })
        ));
        let refused = |limit: Limit| {
            let mut policy = Policy::default_profile();
            match policy.set(FAMILY_V4, 8, None, RuleSpec::limit(limit), false) {
                Err(PolicyError::BadLimit { reason, .. }) => reason,
                other => panic!("{limit:?} accepted: {other:?}"),
            }
        };
        let prefix = Limit::new(10, 10, Per::Prefix);
        assert!(
            refused(Limit {
                prefix_v4: 0,
                ..prefix
            })
            .contains("1-32")
        );
        assert!(
            refused(Limit {
                prefix_v6: 129,
                ..prefix
            })
            .contains("1-128")
        );
        let source = Limit {
            prefix_v4: 16,
            ..Limit::new(10, 10, Per::Source)
        };
        assert!(refused(source).contains("only apply to per = \"prefix\""));
        let new_sources = Some(NewSources { rate: 5, burst: 5 });
        let global = Limit {
            new_sources,
            ..Limit::new(10, 10, Per::Global)
        };
        assert!(refused(global).contains("global limit has no new sources"));
        let zero_budget = Some(NewSources { rate: 0, burst: 5 });
        assert!(
            refused(Limit {
                new_sources: zero_budget,
                ..prefix
            })
            .contains("new_source_rate")
        );
        let mut policy = Policy::default_profile();
        let tuned = Limit {
            prefix_v4: 16,
            prefix_v6: 48,
            new_sources,
            ..prefix
        };
        policy
            .set(FAMILY_V4, 8, None, RuleSpec::limit(tuned), false)
            .expect("a prefix limit with its own prefixes and budget");
    }

    #[test]
    fn deny_entries_over_protected_sources_need_force() {
        let cidr = |text: &str| text.parse::<Cidr>().expect("valid");
        let on_link = [cidr("2001:db8::/64"), cidr("192.0.2.0/24")];
        for (entry, rfc) in [
            ("::/0", "RFC 4861"),
            ("::/128", "RFC 3810"),
            ("fe80::/10", "RFC 4861"),
            ("fe80::/64", "RFC 4861"),
            ("2001:db8::/32", "RFC 4861"),
            ("2001:db8::/64", "RFC 4861"),
            ("0.0.0.0/0", "RFC 1191"),
        ] {
            let why = protected_prefix(&cidr(entry), &on_link)
                .unwrap_or_else(|| panic!("{entry} is protected"));
            assert!(why.contains(rfc), "{entry}: {why}");
        }
        for entry in [
            "2001:db8:bad::/48",
            "2001:db8::66/128",
            "fe80::1/128",
            "192.0.2.0/24",
            "203.0.113.0/24",
        ] {
            assert_eq!(protected_prefix(&cidr(entry), &on_link), None, "{entry}");
        }
        let mut policy = Policy::default_profile();
        let before = policy.clone();
        policy.deny.push(cidr("::/0"));
        let err = policy
            .check_added_entries(Some(&before), &[])
            .expect_err("needs force");
        assert!(
            err.to_string().starts_with("refusing to deny ::/0: "),
            "{err}"
        );
        assert!(err.to_string().contains("--force"), "{err}");
        assert!(
            policy.check_added_entries(Some(&policy), &[]).is_ok(),
            "entries already live were forced before"
        );
        policy.force_lists = true;
        assert!(policy.check_added_entries(Some(&before), &[]).is_ok());
    }

    #[test]
    fn protected_messages_need_force_to_be_rate_limited_too() {
        let mut policy = Policy::default_profile();
        let slow = RuleSpec::limit(Limit::new(1, 1, Per::Source));
        for (family, icmp_type, code) in [
            (FAMILY_V4, 3, Some(4)),
            (FAMILY_V4, 3, None),
            (FAMILY_V6, 2, None),
            (FAMILY_V6, 135, None),
        ] {
            let err = policy
                .set(family, icmp_type, code, slow, false)
                .expect_err("protected");
            assert!(
                err.to_string().starts_with("refusing to rate-limit "),
                "{err}"
            );
        }
        policy
            .set(FAMILY_V6, 135, None, slow, true)
            .expect("forced");
    }

    #[test]
    fn allow_and_deny_may_not_overlap_exactly() {
        let mut policy = Policy::default_profile();
        let cidr: Cidr = "198.51.100.7/32".parse().expect("valid");
        policy.allow.push(cidr);
        policy.deny.push(cidr);
        assert!(policy.validate().is_err());
    }
}
