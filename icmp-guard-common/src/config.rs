//! The guard's settings: one [`Config`] in the one-entry `CONFIG` array, read with a single
//! lookup per packet.
//!
//! Userspace writes the whole value (`bpf_map_update_elem` copies it in place), changing
//! one field at a time: a packet reading the value while it is written sees every other
//! field as it was. The settings of the policy live per generation
//! ([`Config::generations`]): a policy swap writes the idle generation's, then flips
//! [`Config::active_generation`] in a second write (see [`crate::policy`] for why a swap is
//! atomic).

/// The one entry of `CONFIG`.
pub const INDEX: u32 = 0;
/// Entries of `CONFIG`.
pub const ENTRIES: u32 = 1;

/// Bump whenever the meaning of pinned map entries changes (slot numbering, key encoding,
/// struct fields) so that a binary never works on another version's maps.
pub const LAYOUT_VERSION: u32 = 8;

/// What a first `attach` writes to [`Config::events_per_sec`].
pub const EVENTS_PER_SEC_DEFAULT: u32 = 1000;

/// Value of [`Config::mode`] when verdicts are enforced.
pub const MODE_ENFORCE: u32 = 0;
/// Value of [`Config::mode`] when verdicts are only counted.
pub const MODE_DRY_RUN: u32 = 1;

/// A limiter index that names no limiter (see [`GenerationConfig::error_limiter`]).
pub const NO_LIMITER: u8 = u8::MAX;

/// Bits of [`GenerationConfig::flags`].
pub mod generation_flags {
    /// The IPv4 allow/deny trie holds entries of this generation: without it, the trie is
    /// not looked up.
    pub const LISTS_V4: u8 = 1;
    /// The IPv6 trie holds entries of this generation.
    pub const LISTS_V6: u8 = 2;
    /// A limit of this generation has a block time: sources are looked up in
    /// `BLOCKED_V4`/`BLOCKED_V6` ([`crate::block`]); without it, they are not.
    pub const BLOCKS: u8 = 4;
}

/// Everything the program reads from `CONFIG`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// [`MODE_ENFORCE`] or [`MODE_DRY_RUN`] (every verdict counted, every packet passed).
    pub mode: u32,
    /// The generation (0 or 1) of the live policy tables.
    pub active_generation: u32,
    /// Sampled events each CPU may emit per second ([`crate::events`]); 0 disables them.
    /// Fresh maps hold 0 until `attach` writes [`EVENTS_PER_SEC_DEFAULT`].
    pub events_per_sec: u32,
    /// The policy revision: userspace adds one with every policy change it applies, so
    /// `status`, the log and metrics can name the policy a guard runs (0: none applied yet).
    /// The program does not read it.
    pub policy_revision: u32,
    /// The layout version of the pinned state, [`LAYOUT_VERSION`], written when the maps
    /// are created: what a map's entries mean can change without its shape changing.
    pub layout: u32,
    /// The seed of the hash that places a sweep sketch in `RECON_V4`/`RECON_V6`
    /// ([`crate::recon::set_v4`]): random, written once with the layout stamp and never
    /// changed, so that a remote sender cannot choose sources that share a set.
    pub recon_seed: u32,
    /// The policy's settings, per generation.
    pub generations: [GenerationConfig; 2],
}

/// The settings of one policy generation besides its tables.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenerationConfig {
    /// Checks switched off: a bitmask of [`crate::policy::checks_off`]. Zero, the state of
    /// fresh maps, means every check is on.
    pub checks_off: u32,
    /// Bits of [`generation_flags`].
    pub flags: u8,
    /// The limiter of ICMP errors that their rule passes: a per-source ceiling, so that one
    /// source's error flood is capped while PMTUD and traceroute never meet it;
    /// [`NO_LIMITER`] for none.
    pub error_limiter: u8,
    /// The limiter of non-first ICMP fragments (per source, with a global backstop), which
    /// carry no type to classify; [`NO_LIMITER`] for none.
    pub fragment_limiter: u8,
    pub _padding: u8,
    /// Sweep detection ([`crate::recon`]).
    pub recon: crate::recon::ReconConfig,
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, integers only, explicit padding, every bit pattern valid.
unsafe impl aya::Pod for Config {}

impl Config {
    /// The live generation's settings.
    #[inline(always)]
    pub fn generation(&self, generation: u32) -> &GenerationConfig {
        &self.generations[(generation & 1) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_has_no_implicit_padding() {
        assert_eq!(size_of::<GenerationConfig>(), 8 + 32);
        assert_eq!(size_of::<Config>(), 6 * 4 + 2 * 40);
    }
}
