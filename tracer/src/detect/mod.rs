//! Detectors: each turns views or events into findings.
pub mod connections;
pub mod hidden;
pub mod hidden_net;
pub mod indicators;
pub mod kernel;
pub mod live;
pub mod live_writes;
pub mod masquerade;
pub mod noise;
pub mod sigma;
pub mod zombie_leader;
