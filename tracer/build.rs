//! Builds the eBPF object from `tracer-ebpf` and leaves it in OUT_DIR, where
//! `kernel::load` embeds it: the tracer binary is the one file to copy.
use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    let metadata_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tracer-ebpf");
    let root_dir = metadata_dir
        .canonicalize()
        .context("tracer-ebpf source folder not found")?;
    let root_dir = root_dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    // The eBPF target has no prebuilt `core`: it is built from rust-src with
    // `-Z build-std`, which a stable toolchain accepts under RUSTC_BOOTSTRAP.
    // Set only for this build script and the cargo it spawns, not for the
    // host crates.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    // Build with the toolchain that is building us (rustup sets this).
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "stable".into());
    let package = aya_build::Package {
        name: "tracer-ebpf",
        root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(&toolchain))
        .context("building the eBPF programs failed: run `cargo xtask setup` (installs rust-src and bpf-linker)")
}
