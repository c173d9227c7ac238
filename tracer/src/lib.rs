//! tracer: live response for Linux hosts, from the kernel's point of view.
//!
//! One flow, with parts switched on per command:
//! kernel programs -> events -> process table -> detectors -> findings -> output.
pub mod cli;
pub mod commands;
pub mod detect;
pub mod error;
#[cfg(test)]
mod fuzz;
pub mod getdents;
pub mod kernel;
pub mod model;
pub mod mountinfo;
pub mod output;
pub mod proc;
pub mod respond;
pub mod safe_fs;
pub mod sched;
pub mod table;
pub mod timings;
pub mod users;
pub mod views;
