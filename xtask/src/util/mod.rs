//! What the tasks share: child processes, cargo's paths, Ctrl-C handling, apt-get, number
//! formatting, and the set-up every task runs first. Tasks import from here, never from
//! each other.

pub mod apt;
pub mod cargo;
pub mod interrupt;
pub mod numbers;
pub mod process;
pub mod setup;
