//! Test fixtures that need a build of their own: the getdents64 hider, an
//! eBPF program (tests/fixtures/getdents-hider) that the kernel matrix's
//! `matrix` tests load into each guest with the `getdents_hider` loader.
use std::path::PathBuf;

use anyhow::{Context as _, Result};

use crate::{cargo, root, target_dir};

/// Where `cargo build` leaves the object, under the fixture's own target
/// folder. The tests look here by default (next to their loader binary's
/// `debug/`), or at `TRACER_HIDER_OBJ`.
pub fn getdents_hider_object() -> PathBuf {
    target_dir().join("getdents-hider/bpfel-unknown-none/release/getdents-hider")
}

/// Builds the hider's eBPF object as tracer/build.rs builds tracer-ebpf
/// (bpfel-unknown-none, `-Z build-std=core` under RUSTC_BOOTSTRAP=1,
/// bpf-linker with BTF); cargo makes it quick when nothing changed.
pub fn build_getdents_hider() -> Result<PathBuf> {
    let manifest = root().join("tests/fixtures/getdents-hider/Cargo.toml");
    let mut cmd = cargo();
    cmd.current_dir(root().join("tests/fixtures/getdents-hider"))
        .args(["build", "--release", "--target", "bpfel-unknown-none"])
        .args(["-Z", "build-std=core", "--bins"])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir().join("getdents-hider"))
        .env("RUSTC_BOOTSTRAP", "1")
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            [
                "--cfg=bpf_target_arch=\"x86_64\"",
                "-Cdebuginfo=2",
                "-Clink-arg=--btf",
            ]
            .join("\x1f"),
        )
        // As aya-build does: the host's compiler wrappers are not for this target.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTFLAGS");
    crate::run(&mut cmd).context(
        "building the getdents64 hider failed: run `cargo xtask setup` (rust-src, bpf-linker)",
    )?;
    let object = getdents_hider_object();
    anyhow::ensure!(object.is_file(), "cargo built no {}", object.display());
    println!("fixtures: getdents64 hider {}", object.display());
    Ok(object)
}
