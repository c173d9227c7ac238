//! `cargo xtask dist`: the static release build packaged the way hosts
//! expect it: a .deb (cargo-deb, from `[package.metadata.deb]` in
//! tracer/Cargo.toml), a .tar.gz of the same files for hosts without dpkg,
//! and SHA256SUMS. Everything lands in target/xtask/dist/.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Result};

use crate::{build, cargo, output, run, scratch, setup::MUSL, target_dir};

/// cargo-deb, installed by this step when missing (only dist needs it).
const CARGO_DEB: &str = "cargo-deb@3.8.0";

pub fn dist() -> Result<u8> {
    build::build_static()?;
    let release = target_dir().join(MUSL).join("release");
    let bin = release.join("tracer");

    // Man pages, completions and schemas, from the binary being shipped.
    let generated = release.join("dist");
    let _ = std::fs::remove_dir_all(&generated);
    run(Command::new(&bin).arg("__generate").arg(&generated))?;

    let out = scratch("dist")?;
    for entry in std::fs::read_dir(&out)? {
        let path = entry?.path();
        if path.is_file() {
            std::fs::remove_file(&path)?;
        }
    }
    let version = env!("CARGO_PKG_VERSION");
    let deb = out.join(format!("tracer_{version}_amd64.deb"));
    ensure_cargo_deb()?;
    run(cargo()
        .args([
            "deb",
            "-p",
            "tracer",
            "--no-build",
            "--target",
            MUSL,
            "--output",
        ])
        .arg(&deb))?;

    let tarball = tarball_of(&deb, &out, version)?;
    let sums = output(
        Command::new("sha256sum")
            .args([file_name(&deb), file_name(&tarball)])
            .current_dir(&out),
    )?;
    std::fs::write(out.join("SHA256SUMS"), format!("{sums}\n"))?;
    println!("dist: {}", deb.display());
    println!("dist: {}", tarball.display());
    println!("dist: {}", out.join("SHA256SUMS").display());
    Ok(0)
}

fn ensure_cargo_deb() -> Result<()> {
    let installed = cargo()
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        println!("dist: installing {CARGO_DEB} (a few minutes, once)");
        run(cargo().args(["install", "--locked", CARGO_DEB]))?;
    }
    Ok(())
}

/// The .deb's files as `tracer-VERSION/` (usr/, etc/ inside), gzipped, so
/// that the two can never differ.
fn tarball_of(deb: &Path, out: &Path, version: &str) -> Result<PathBuf> {
    let stage = scratch("dist-stage")?;
    let top = format!("tracer-{version}");
    let root = stage.join(&top);
    let _ = std::fs::remove_dir_all(&root);
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root))?;
    let tarball = out.join(format!("tracer-{version}-x86_64-linux-musl.tar.gz"));
    run(Command::new("tar")
        .args(["--owner=0", "--group=0", "--numeric-owner", "-czf"])
        .arg(&tarball)
        .arg("-C")
        .arg(&stage)
        .arg(&top))?;
    std::fs::remove_dir_all(&root)?;
    if !tarball.is_file() {
        bail!("tar did not write {}", tarball.display());
    }
    Ok(tarball)
}

fn file_name(path: &Path) -> &std::ffi::OsStr {
    path.file_name().expect("a file path")
}
