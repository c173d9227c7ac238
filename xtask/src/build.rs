//! Building, running and testing the tracer.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::{cargo, exit_code, run, setup, setup::MUSL, target_dir};

fn cargo_build(release: bool, target: Option<&str>) -> Result<()> {
    let mut cmd = cargo();
    cmd.args(["build", "-p", "tracer"]);
    if release {
        cmd.arg("--release");
    }
    if let Some(target) = target {
        cmd.args(["--target", target]);
    }
    run(&mut cmd)
}

pub fn build(release: bool) -> Result<()> {
    setup::run()?;
    cargo_build(release, None)
}

/// Sets up and builds the release binary; returns its path.
pub fn build_release() -> Result<PathBuf> {
    build(true)?;
    Ok(target_dir().join("release/tracer"))
}

pub fn build_static() -> Result<()> {
    setup::run()?;
    cargo_build(true, Some(MUSL))?;
    let bin = target_dir().join(MUSL).join("release/tracer");
    let kind = static_kind(&bin)?;
    println!("{}: {kind} (no PT_INTERP)", bin.display());
    Ok(())
}

/// Reads the ELF program headers: fails if the binary asks for an
/// interpreter (dynamic loader), else says whether it is static-pie.
fn static_kind(bin: &Path) -> Result<&'static str> {
    let data = std::fs::read(bin).with_context(|| format!("reading {}", bin.display()))?;
    let bytes = |at: usize, n: usize| data.get(at..at + n).context("truncated ELF file");
    let le = |at: usize, n: usize| -> Result<usize> {
        Ok(bytes(at, n)?
            .iter()
            .rev()
            .fold(0usize, |acc, &b| acc << 8 | b as usize))
    };
    if bytes(0, 6)? != b"\x7fELF\x02\x01" {
        bail!("{} is not a 64-bit little-endian ELF file", bin.display());
    }
    let (phoff, phentsize, phnum) = (le(0x20, 8)?, le(0x36, 2)?, le(0x38, 2)?);
    for i in 0..phnum {
        const PT_INTERP: usize = 3;
        if le(phoff + i * phentsize, 4)? == PT_INTERP {
            bail!(
                "{} has a PT_INTERP program header: it is dynamically linked",
                bin.display()
            );
        }
    }
    const ET_DYN: usize = 3;
    Ok(if le(0x10, 2)? == ET_DYN {
        "static-pie"
    } else {
        "static"
    })
}

/// Builds the release binary and runs it as root; returns its exit code.
pub fn run_tracer(args: &[String]) -> Result<u8> {
    let bin = build_release()?;
    let mut cmd = if crate::is_root() {
        Command::new(&bin)
    } else {
        setup::sudo(&bin)
    };
    let mut child = cmd
        .args(args)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    // Ctrl-C reaches the tracer too (same process group): let it detach and
    // print its summary while we wait for it.
    // SAFETY: setting a signal disposition to SIG_IGN.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    Ok(exit_code(child.wait()?))
}

/// The README's test command, after setup and a build.
pub fn test(args: &[String]) -> Result<u8> {
    build(false)?;
    let status = cargo()
        .args([
            "test",
            "--workspace",
            // Every failing test binary is reported, not only the first.
            "--no-fail-fast",
            "--exclude",
            "tracer-ebpf",
            "--",
            "--test-threads=1",
        ])
        .args(args)
        .status()
        .context("starting cargo test")?;
    Ok(exit_code(status))
}

#[cfg(test)]
mod tests {
    #[test]
    fn dynamic_binary_has_an_interpreter() {
        assert!(super::static_kind(std::path::Path::new("/bin/true")).is_err());
    }
}
