//! Renderers: the same events and findings as human lines or JSON.
pub mod bounded;
pub mod catalog;
pub mod events;
pub mod findings;
pub mod kernel;
pub mod live;
pub mod manual;
pub mod net;
pub mod plan;
pub mod schema;
pub mod sink;
pub mod style;
