//! The test rootkit module (`tests/fixtures/kmod/`), built out of tree
//! against one matrix kernel's unpacked Debian headers with the host's gcc.
//!
//! Debian's arch headers (`linux-headers-RELEASE`) hold `.config`,
//! `Module.symvers` and the generated headers, and a one-line Makefile that
//! includes the `-common` package's Makefile by its absolute installed path
//! (`/usr/src/linux-headers-...-common/Makefile`). Rather than edit the
//! unpacked package, kbuild is run in the arch folder (`make -C`) with a copy
//! of that Makefile whose `include` names the unpacked `-common` (`make -f`):
//! the kernel's Makefile takes its source tree from the file it is read from,
//! its object tree from the folder make runs in. The module's source is
//! copied to the output folder first, so nothing is built in the work tree.
//!
//! Compiler: the kernels name `gcc-10` (5.10) or `gcc-12`; the host's `gcc`
//! is passed as `CC` and any difference in version is reported, not hidden
//! (Debian's own `DEBIAN_KERNEL_NO_CC_VERSION_CHECK` is the only switch set,
//! and it only silences the "compiler differs" notice). No BTF is made for
//! the module (`CONFIG_DEBUG_INFO_BTF_MODULES=`), so pahole is not needed.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use super::fetch::Kernel;

/// The module's name (`tracer_test_rootkit.ko`, and its kernel log prefix).
pub const MODULE: &str = "tracer_test_rootkit";

/// The module's source: `tests/fixtures/kmod/`.
pub fn fixture_dir() -> PathBuf {
    crate::root().join("tests/fixtures/kmod")
}

/// The loader the guest runs as root: `load.sh MODULE.ko [PARAM=VALUE...]`
/// (addresses from /proc/kallsyms, then insmod, then the module's log lines).
#[allow(dead_code)] // For the matrix's module tests.
pub fn loader() -> PathBuf {
    fixture_dir().join("load.sh")
}

/// Builds the module for a fetched kernel into `<kernel dir>/kmod/`.
pub fn build_for(kernel: &Kernel) -> Result<PathBuf> {
    build(&kernel.name, &kernel.headers, &kernel.dir.join("kmod"))
}

/// Builds `tracer_test_rootkit.ko` for kernel `kernel_name` (`5.10`, `6.1`,
/// `6.12`: for messages) against the headers unpacked in `headers_dir`
/// (the folder holding `usr/src/linux-headers-*`, or the arch headers
/// folder itself), in `out_dir` (emptied first). Returns the `.ko`'s path.
/// An error is one line saying why (the full log is in `out_dir/build.log`).
pub fn build(kernel_name: &str, headers_dir: &Path, out_dir: &Path) -> Result<PathBuf> {
    let kb = Kbuild::find(headers_dir)
        .with_context(|| format!("kmod {kernel_name}: headers in {}", headers_dir.display()))?;
    let cc = compiler(&kb.config).with_context(|| format!("kmod {kernel_name}: compiler"))?;
    println!(
        "kmod {kernel_name}: building {MODULE}.ko for {} with {} (the kernel was built with {})",
        kb.release, cc.host, cc.kernel
    );
    if let Some(note) = &cc.note {
        println!("kmod {kernel_name}: note: {note}");
    }

    let _ = fs::remove_dir_all(out_dir);
    let src = out_dir.join("src");
    fs::create_dir_all(&src).with_context(|| format!("creating {}", src.display()))?;
    let fixture = fixture_dir();
    for entry in fs::read_dir(&fixture).with_context(|| format!("reading {}", fixture.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            fs::copy(entry.path(), src.join(entry.file_name()))
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    let wrapper = out_dir.join("kbuild.mk");
    fs::write(&wrapper, &kb.makefile)?;

    let log_path = out_dir.join("build.log");
    let log = fs::File::create(&log_path)?;
    let mut make = Command::new("make");
    make.arg("-C")
        .arg(&kb.arch)
        .arg("-f")
        .arg(&wrapper)
        .arg(format!("M={}", src.display()))
        .arg("CC=gcc")
        .arg("DEBIAN_KERNEL_NO_CC_VERSION_CHECK=y")
        .arg("CONFIG_DEBUG_INFO_BTF_MODULES=")
        .arg("modules")
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let status = make
        .status()
        .context("starting make (Debian package make)")?;
    let text = fs::read_to_string(&log_path).unwrap_or_default();
    if !status.success() {
        let why = first_error(&text).unwrap_or_else(|| format!("make exited with {status}"));
        bail!(
            "kmod {kernel_name}: kbuild failed for {}: {why} (log: {})",
            kb.release,
            log_path.display()
        );
    }
    for line in text.lines().filter(|l| l.contains("warning:")) {
        println!("kmod {kernel_name}: {}", line.trim());
    }

    let ko = src.join(format!("{MODULE}.ko"));
    let bytes = fs::read(&ko).with_context(|| {
        format!(
            "kmod {kernel_name}: make succeeded but left no {}",
            ko.display()
        )
    })?;
    let magic = vermagic(&bytes).context("the module has no vermagic")?;
    if magic.split_whitespace().next() != Some(kb.release.as_str()) {
        bail!(
            "kmod {kernel_name}: the module's vermagic {magic:?} is not for {}",
            kb.release
        );
    }
    println!(
        "kmod {kernel_name}: built {} (vermagic {magic})",
        ko.display()
    );
    Ok(ko)
}

/// The kbuild entry of one unpacked headers set.
struct Kbuild {
    /// `.../usr/src/linux-headers-RELEASE`: `.config`, `Module.symvers`.
    arch: PathBuf,
    /// The arch Makefile with its `include` pointed at the unpacked `-common`.
    makefile: String,
    /// `KERNELRELEASE`, as in `uname -r`.
    release: String,
    config: String,
}

impl Kbuild {
    fn find(headers_dir: &Path) -> Result<Kbuild> {
        let arch = if headers_dir.join(".config").is_file() {
            headers_dir.to_path_buf()
        } else {
            let usr_src = headers_dir.join("usr/src");
            let mut found: Vec<PathBuf> = fs::read_dir(&usr_src)
                .with_context(|| format!("reading {}", usr_src.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("linux-headers-"))
                        && p.join(".config").is_file()
                })
                .collect();
            found.sort();
            match found.len() {
                1 => found.remove(0),
                0 => bail!(
                    "no linux-headers-* with a .config under {}",
                    usr_src.display()
                ),
                _ => bail!(
                    "several arch headers under {}: {found:?}",
                    usr_src.display()
                ),
            }
        };
        let read = |name: &str| {
            let p = arch.join(name);
            fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
        };
        let original = read("Makefile")?;
        let config = read(".config")?;
        if !arch.join("Module.symvers").is_file() {
            bail!("{} has no Module.symvers", arch.display());
        }
        let parent = arch.parent().context("arch headers folder has no parent")?;
        let (makefile, common) = point_include_at(&original, parent)?;
        if !common.join("Makefile").is_file() {
            bail!(
                "the -common headers are not unpacked: no {}/Makefile",
                common.display()
            );
        }
        // scripts/ links into the linux-kbuild-* package (fixdep, modpost).
        let modpost = arch.join("scripts/mod/modpost");
        if !modpost.is_file() {
            bail!(
                "{} is missing: the linux-kbuild-* package is not unpacked beside the headers",
                modpost.display()
            );
        }
        let release = original
            .lines()
            .find_map(|l| {
                let l = l.trim();
                let v = l.strip_prefix("override KERNELRELEASE")?.trim_start();
                Some(v.strip_prefix('=')?.trim().to_string())
            })
            .or_else(|| {
                arch.file_name()?
                    .to_str()?
                    .strip_prefix("linux-headers-")
                    .map(str::to_string)
            })
            .context("no KERNELRELEASE")?;
        Ok(Kbuild {
            arch,
            makefile,
            release,
            config,
        })
    }
}

/// Rewrites the arch Makefile's `include /usr/src/linux-headers-X-common/Makefile`
/// (whatever folder it names) to `<usr_src>/linux-headers-X-common/Makefile`.
/// Returns the new text and the `-common` folder.
fn point_include_at(makefile: &str, usr_src: &Path) -> Result<(String, PathBuf)> {
    let mut common = None;
    let mut out = String::new();
    for line in makefile.lines() {
        let dir = line
            .strip_prefix("include ")
            .and_then(|p| p.trim().strip_suffix("/Makefile"))
            .and_then(|d| Path::new(d).file_name()?.to_str())
            .filter(|name| name.starts_with("linux-headers-") && name.ends_with("-common"));
        match dir {
            Some(name) if common.is_none() => {
                let dir = usr_src.join(name);
                out.push_str(&format!("include {}/Makefile\n", dir.display()));
                common = Some(dir);
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    let common =
        common.context("the arch headers' Makefile includes no linux-headers-*-common/Makefile")?;
    Ok((out, common))
}

struct Compiler {
    /// e.g. `gcc 12.2.0`.
    host: String,
    /// `CONFIG_CC_VERSION_TEXT`.
    kernel: String,
    note: Option<String>,
}

/// The host's gcc against the kernel's `CONFIG_CC_VERSION_TEXT`.
fn compiler(config: &str) -> Result<Compiler> {
    let kernel = config_value(config, "CONFIG_CC_VERSION_TEXT")
        .context("the .config has no CONFIG_CC_VERSION_TEXT")?;
    if config_value(config, "CONFIG_CC_IS_CLANG").as_deref() == Some("y") {
        bail!("the kernel was built with clang ({kernel}); only gcc is set up here");
    }
    let out = Command::new("gcc")
        .arg("-dumpfullversion")
        .output()
        .context("starting gcc (Debian package gcc)")?;
    if !out.status.success() {
        bail!("gcc -dumpfullversion failed");
    }
    let host_version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let kernel_version = cc_version(&kernel);
    let major = |v: &str| v.split('.').next().and_then(|m| m.parse::<u32>().ok());
    let note = match (
        kernel_version.as_deref().and_then(major),
        major(&host_version),
    ) {
        (Some(k), Some(h)) if k != h => Some(format!(
            "gcc {host_version} builds for a kernel built with gcc {}: kbuild's flag probes run \
             with gcc {host_version}; a real incompatibility shows as a build error",
            kernel_version.as_deref().unwrap_or("?")
        )),
        (None, _) => Some(format!("cannot read a gcc version from {kernel:?}")),
        _ => None,
    };
    Ok(Compiler {
        host: format!("gcc {host_version}"),
        kernel,
        note,
    })
}

/// `KEY`'s value in a .config, quotes removed.
fn config_value(config: &str, key: &str) -> Option<String> {
    config.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix('=')?;
        Some(v.trim().trim_matches('"').to_string())
    })
}

/// The version in a `CONFIG_CC_VERSION_TEXT` such as
/// `gcc-10 (Debian 10.2.1-6) 10.2.1 20210110`: the first word after the
/// parenthesis that looks like N.N[.N].
fn cc_version(text: &str) -> Option<String> {
    let after = text.rsplit_once(')').map(|(_, a)| a).unwrap_or(text);
    after
        .split_whitespace()
        .find(|w| {
            let parts: Vec<&str> = w.split('.').collect();
            parts.len() >= 2
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_string)
}

/// The `vermagic=` string of a `.ko`'s modinfo.
fn vermagic(ko: &[u8]) -> Option<String> {
    let key = b"vermagic=";
    let at = ko.windows(key.len()).position(|w| w == key)? + key.len();
    let end = ko[at..].iter().position(|&b| b == 0)? + at;
    Some(String::from_utf8_lossy(&ko[at..end]).into_owned())
}

/// The first compiler or make error of a kbuild log, trimmed to one line.
fn first_error(log: &str) -> Option<String> {
    let line = log
        .lines()
        .find(|l| l.contains("error:") || l.contains("Error:") || l.contains(": not found"))
        .or_else(|| log.lines().find(|l| l.contains("***")))?;
    let mut line = line.trim().to_string();
    if line.len() > 200 {
        let mut cut = 200;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str("...");
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_is_pointed_at_the_unpacked_common() {
        let mk = "include /usr/src/linux-headers-5.10.0-32-common/Makefile\n\
                  override ARCH = x86\noverride KERNELRELEASE = 5.10.0-32-amd64\n";
        let (out, common) = point_include_at(mk, Path::new("/m/5.10/headers/usr/src")).unwrap();
        assert_eq!(
            common,
            Path::new("/m/5.10/headers/usr/src/linux-headers-5.10.0-32-common")
        );
        assert!(out.starts_with(
            "include /m/5.10/headers/usr/src/linux-headers-5.10.0-32-common/Makefile\n"
        ));
        assert!(out.contains("override KERNELRELEASE = 5.10.0-32-amd64\n"));
        // Already pointed elsewhere (an edited copy): pointed here again.
        let (again, _) = point_include_at(&out, Path::new("/x")).unwrap();
        assert!(again.starts_with("include /x/linux-headers-5.10.0-32-common/Makefile\n"));
        assert!(point_include_at("override ARCH = x86\n", Path::new("/x")).is_err());
    }

    #[test]
    fn cc_versions() {
        assert_eq!(
            cc_version("gcc-10 (Debian 10.2.1-6) 10.2.1 20210110").as_deref(),
            Some("10.2.1")
        );
        assert_eq!(
            cc_version("x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0").as_deref(),
            Some("12.2.0")
        );
        assert_eq!(cc_version("gcc"), None);
        let config = "# x\nCONFIG_CC_VERSION_TEXT=\"gcc-12 (Debian 12.2.0-14) 12.2.0\"\nCONFIG_CC_IS_GCC=y\n";
        assert_eq!(
            config_value(config, "CONFIG_CC_VERSION_TEXT").as_deref(),
            Some("gcc-12 (Debian 12.2.0-14) 12.2.0")
        );
        assert_eq!(config_value(config, "CONFIG_CC_IS_CLANG"), None);
    }

    /// `cargo test -p xtask -- --ignored kmod`: builds the module against
    /// every kernel unpacked under the matrix folder (`<name>/headers`), or
    /// under `TRACER_KMOD_KERNELS` (same layout), into `<name>/kmod-test/`.
    #[test]
    #[ignore = "needs unpacked kernel headers (cargo xtask matrix --fetch-only)"]
    fn builds_against_unpacked_headers() {
        let base = std::env::var_os("TRACER_KMOD_KERNELS")
            .map(PathBuf::from)
            .unwrap_or_else(|| super::super::fetch::matrix_dir().unwrap());
        let mut built = 0;
        let mut failed = Vec::new();
        for k in super::super::fetch::KERNELS {
            let headers = base.join(k.name).join("headers");
            if !headers.is_dir() {
                println!("kmod {}: no {}", k.name, headers.display());
                continue;
            }
            match build(k.name, &headers, &base.join(k.name).join("kmod-test")) {
                Ok(ko) => {
                    println!("kmod {}: {}", k.name, ko.display());
                    built += 1;
                }
                Err(e) => failed.push(format!("{e:#}")),
            }
        }
        assert!(failed.is_empty(), "{failed:#?}");
        assert!(built > 0, "no headers under {}", base.display());
    }

    #[test]
    fn vermagic_and_errors() {
        let ko = b"\x7fELF...\0license=GPL\0vermagic=6.1.0-50-amd64 SMP preempt mod_unload modversions \0name=x\0";
        assert_eq!(
            vermagic(ko).as_deref(),
            Some("6.1.0-50-amd64 SMP preempt mod_unload modversions ")
        );
        let log = "  CC [M]  /o/src/x.o\n/o/src/x.c:3:1: error: unknown type name '__kernel_ino_t'\nmake[2]: *** [x] Error 1\n";
        assert_eq!(
            first_error(log).as_deref(),
            Some("/o/src/x.c:3:1: error: unknown type name '__kernel_ino_t'")
        );
    }
}
