//! What the guard saw, as data: the counters and the `stats` document ([`stats`]), the
//! sampled events ([`events`]) and the heaviest sources estimated from them ([`top`]).
//! Printing them is the CLI's (`cli/render`), serving them the exporter's.

pub mod events;
pub mod recon;
pub mod stats;
pub mod top;
pub mod trace;
