//! The Prometheus exporter: the collector that turns a [`crate::guard::Guard`]'s state into
//! an exposition ([`collector`]) and the HTTP server that serves it ([`server`]).

pub mod collector;
pub mod server;

pub use collector::{Format, Sample, encode, exposition, gather};
pub use server::{bind, serve};
