//! One module per `cargo xtask` task. A task uses [`crate::util`], never another task.

pub mod bench;
pub mod demo;
pub mod dist;
pub mod fleet;
pub mod fuzz;
pub mod kernels;
pub mod lint;
pub mod test;
