//! The Prometheus exporter: the collector that turns a [`crate::guard::Guard`]'s state into
//! an exposition ([`collector`]), the HTTP server that serves it ([`server`]), and what
//! `run` adds to it: readiness, liveness and the policy file's reload state ([`service`]).

pub mod collector;
pub mod server;
pub mod service;

pub use collector::{Format, Sample, encode, exposition, gather};
pub use server::{bind, serve};
pub use service::{Reload, Service};
