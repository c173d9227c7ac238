//! `cargo xtask setup`: make a fresh machine able to build, test and bench
//! tracer. Every step checks first, so a second run is quick.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::{cargo, output, run as run_cmd};

pub const MUSL: &str = "x86_64-unknown-linux-musl";
const PACKAGES: &[&str] = &[
    "bpftool",
    "bpftrace",
    "unhide",
    "forkstat",
    "procps",
    "psmisc",
    "iproute2",
    // Peers of `bench net`: netstat, and lsof.
    "net-tools",
    "lsof",
    "gcc",
    // Headers for the test that compiles an ld.so.preload hider; only a
    // Recommends of gcc, which is installed without recommends.
    "libc6-dev",
    "musl-tools",
    // capsh: tests that run tracer without a capability.
    "libcap2-bin",
    // `xtask matrix`: QEMU guests of Debian's stock kernels; busybox for
    // their initramfs, xz for 6.12's .ko.xz modules, depmod (kmod) for the
    // unpacked images' modules.dep, cpio to look into or extend an initramfs.
    "qemu-system-x86",
    "busybox-static",
    "xz-utils",
    "cpio",
    "kmod",
    // The test module's kbuild against each kernel's headers.
    "make",
];

pub fn run() -> Result<()> {
    let sysroot = PathBuf::from(output(Command::new("rustc").args(["--print", "sysroot"]))?);
    rust_src(&sysroot)?;
    // Before bpf-linker: its build wants a C toolchain.
    apt_packages()?;
    bpf_linker(&sysroot)?;
    musl_target(&sysroot)
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo")
        })
}

/// `~/.cargo/bin` may not be on PATH; every child we start should see it.
pub fn prepend_cargo_bin_to_path() {
    let bin = cargo_home().join("bin");
    let path = std::env::var_os("PATH").unwrap_or_default();
    if !std::env::split_paths(&path).any(|p| p == bin) {
        let joined = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&path)));
        if let Ok(joined) = joined {
            // Single-threaded here: called first thing in main.
            std::env::set_var("PATH", joined);
        }
    }
}

fn step(name: &str, what: &str) {
    println!("setup: {name:<12} {what}");
}

fn rust_src(sysroot: &Path) -> Result<()> {
    if sysroot.join("lib/rustlib/src/rust/library").is_dir() {
        step("rust-src", "already present");
        return Ok(());
    }
    run_cmd(Command::new("rustup").args(["component", "add", "rust-src"]))?;
    step("rust-src", "installed");
    Ok(())
}

fn musl_target(sysroot: &Path) -> Result<()> {
    if sysroot.join("lib/rustlib").join(MUSL).join("lib").is_dir() {
        step("musl target", "already present");
        return Ok(());
    }
    run_cmd(Command::new("rustup").args(["target", "add", MUSL]))?;
    step("musl target", "installed");
    Ok(())
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn bpf_linker(sysroot: &Path) -> Result<()> {
    // An installed bpf-linker finds libLLVM through its RUNPATH; check it starts.
    if let Some(path) = find_on_path("bpf-linker") {
        if Command::new(&path)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            step("bpf-linker", "already present");
            return Ok(());
        }
        step(
            "bpf-linker",
            &format!("{} does not start, reinstalling", path.display()),
        );
    }
    // bpf-linker links the LLVM shipped with rustc: point LLVM_PREFIX at it.
    let version = output(Command::new("rustc").arg("-vV"))?;
    let major = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("no `LLVM version` in `rustc -vV`")?
        .to_string();
    let lib = std::fs::read_dir(sysroot.join("lib"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .with_context(|| format!("no libLLVM.so.* in {}/lib", sysroot.display()))?;
    // Kept outside target/: the installed binary's RUNPATH points here.
    let prefix = cargo_home().join("xtask-llvm-prefix");
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)?;
    for name in [Path::new("libLLVM.so"), Path::new(lib.file_name().unwrap())] {
        let link = prefix_lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&lib, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    step(
        "bpf-linker",
        &format!("installing against LLVM {major} (about a minute)"),
    );
    run_cmd(
        cargo()
            .args([
                "install",
                "--force",
                "bpf-linker",
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{major}"))
            .env("LLVM_PREFIX", &prefix),
    )?;
    step("bpf-linker", "installed");
    Ok(())
}

fn apt_packages() -> Result<()> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${Status}\n"])
        .args(PACKAGES)
        .output()
        .context("dpkg-query not found: install these packages by hand")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let installed: Vec<&str> = stdout
        .lines()
        .filter(|l| l.ends_with(" install ok installed"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed.contains(p))
        .collect();
    if missing.is_empty() {
        step("apt packages", "already present");
        return Ok(());
    }
    step("apt packages", &format!("installing {}", missing.join(" ")));
    let apt = |args: &[&str]| -> Result<()> {
        let mut cmd = if crate::is_root() {
            Command::new("env")
        } else {
            sudo("env")
        };
        run_cmd(
            cmd.arg("DEBIAN_FRONTEND=noninteractive")
                .arg("apt-get")
                .args(args),
        )
    };
    apt(&["update", "-q"])?;
    apt(&[
        &["install", "-y", "-q", "--no-install-recommends"],
        missing.as_slice(),
    ]
    .concat())?;
    step("apt packages", "installed");
    Ok(())
}

pub fn sudo(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("sudo");
    cmd.arg(program);
    cmd
}

/// Fails early with a clear message when something must run as root.
pub fn require_root(what: &str) -> Result<()> {
    if !crate::is_root() {
        bail!("{what} needs root: run it with sudo");
    }
    Ok(())
}
