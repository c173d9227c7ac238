#![no_std]
//! Library target so tracer's build script can depend on this crate and be
//! rebuilt when the kernel programs change; the programs are in main.rs.
