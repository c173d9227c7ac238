//! Debian's stock kernels for the matrix, fetched with a private apt
//! configuration under `target/xtask/matrix/apt/` (own sources list, lists,
//! cache and dpkg status; the host's apt state and /boot are never touched)
//! from the mirror the host's own sources name, and unpacked with
//! `dpkg-deb -x`: the image to `<name>/image/`, the headers (arch, common
//! and kbuild packages) to `<name>/headers/`. A kernel once unpacked is
//! recorded in `<name>/kernel.json`; later runs download nothing.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

use crate::{output, run};

/// One kernel of the matrix: where Debian ships it.
pub struct Spec {
    /// Short name: `--kernel NAME`, and the cache folder's name.
    pub name: &'static str,
    pub suite: &'static str,
    /// Image package names start so, then the ABI, then `-amd64-unsigned`.
    prefix: &'static str,
}

pub const KERNELS: &[Spec] = &[
    Spec {
        name: "5.10",
        suite: "bullseye",
        prefix: "linux-image-5.10.0-",
    },
    Spec {
        name: "6.1",
        suite: "bookworm",
        prefix: "linux-image-6.1.0-",
    },
    Spec {
        name: "6.12",
        suite: "bookworm-backports",
        prefix: "linux-image-6.12.",
    },
];

const SUFFIX: &str = "-amd64-unsigned";

/// Used when the host's sources give no Signed-By.
const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// An unpacked kernel, ready to boot or to build a module against.
#[allow(dead_code)] // `headers` for those who build modules; `name` for completeness.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// `5.10`, `6.1`, `6.12`.
    pub name: String,
    /// `uname -r` in the guest, e.g. `6.1.0-50-amd64`.
    pub release: String,
    /// The Debian package version, e.g. `6.1.176-1`.
    pub version: String,
    pub suite: String,
    pub vmlinuz: PathBuf,
    /// `.../lib/modules/RELEASE` of the unpacked image (modules.dep, kernel/...).
    pub modules: PathBuf,
    /// Where the headers packages were unpacked (holds usr/src, usr/lib).
    pub headers: PathBuf,
    /// `headers/usr/src/linux-headers-RELEASE`: the kbuild dir (`make -C` it).
    pub build: PathBuf,
    /// `<name>/`, the kernel's cache folder.
    pub dir: PathBuf,
}

/// `target/xtask/matrix` of the main tree (shared by every target dir), or
/// `TRACER_MATRIX_DIR`.
pub fn matrix_dir() -> Result<PathBuf> {
    let dir = std::env::var_os("TRACER_MATRIX_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::root().join("target/xtask/matrix"));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

pub fn spec(name: &str) -> Result<&'static Spec> {
    KERNELS.iter().find(|k| k.name == name).with_context(|| {
        let names: Vec<&str> = KERNELS.iter().map(|k| k.name).collect();
        format!(
            "no kernel {name:?} in the matrix (there are {})",
            names.join(", ")
        )
    })
}

/// The kernel `name` (`5.10`, `6.1`, `6.12`), downloaded and unpacked on
/// first use; afterwards read from the cache without any network access.
#[allow(dead_code)] // The entry point for building modules against a kernel.
pub fn prepare(name: &str) -> Result<Kernel> {
    prepare_with(name, false)
}

/// Like `prepare`; with `refresh`, the package lists are updated first and
/// a newer kernel in the suite replaces the cached one.
pub fn prepare_with(name: &str, refresh: bool) -> Result<Kernel> {
    let spec = spec(name)?;
    let dir = matrix_dir()?.join(spec.name);
    let stamp = dir.join("kernel.json");
    if !refresh {
        if let Some(k) = cached(&stamp, &dir) {
            return Ok(k);
        }
    }
    let apt = Apt::new(&matrix_dir()?.join("apt"))?;
    apt.update(refresh)?;
    let (image, version) = apt.newest_image(spec)?;
    let release = image
        .strip_prefix("linux-image-")
        .and_then(|r| r.strip_suffix("-unsigned"))
        .context("image package name")?
        .to_string();
    if let Some(k) = cached(&stamp, &dir).filter(|k| k.version == version && k.release == release) {
        println!("matrix {name}: {image} {version} is still the newest, cached");
        return Ok(k);
    }
    let headers = format!("linux-headers-{release}");
    let mut header_packages = vec![headers.clone()];
    header_packages.extend(apt.header_dependencies(&headers, &version)?);

    println!(
        "matrix {name}: fetching {image} {version} and {} from {}",
        header_packages.join(" "),
        spec.suite
    );
    let image_deb = apt.download(&image, &version, spec.suite)?;
    let mut header_debs = Vec::new();
    for p in &header_packages {
        header_debs.push(apt.download(p, &version, spec.suite)?);
    }

    // Unpack next to the final folders, then swap them in: an interrupted
    // run leaves no half-unpacked kernel that looks complete.
    let _ = fs::remove_file(&stamp);
    for (folder, debs) in [("image", vec![image_deb]), ("headers", header_debs)] {
        let tmp = dir.join(format!("{folder}.tmp"));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp)?;
        for deb in debs {
            run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp))?;
        }
        let dest = dir.join(folder);
        let _ = fs::remove_dir_all(&dest);
        fs::rename(&tmp, &dest)?;
    }
    // The package leaves modules.dep to its postinst: make it here.
    run(Command::new("depmod")
        .arg("-b")
        .arg(dir.join("image"))
        .arg(&release))
    .context("depmod (Debian package kmod)")?;
    let record = json!({
        "name": spec.name,
        "suite": spec.suite,
        "image": image,
        "release": release,
        "version": version,
        "headers": header_packages,
    });
    fs::write(&stamp, serde_json::to_string_pretty(&record)? + "\n")?;
    let k = cached(&stamp, &dir).with_context(|| {
        format!(
            "{image} unpacked into {} lacks a vmlinuz or modules",
            dir.display()
        )
    })?;
    println!("matrix {name}: {} unpacked in {}", k.release, dir.display());
    Ok(k)
}

/// The kernel recorded in `stamp`, when its files are all there.
fn cached(stamp: &Path, dir: &Path) -> Option<Kernel> {
    let record: Value = serde_json::from_str(&fs::read_to_string(stamp).ok()?).ok()?;
    let release = record["release"].as_str()?.to_string();
    let image = dir.join("image");
    let vmlinuz = image.join(format!("boot/vmlinuz-{release}"));
    let modules = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|m| image.join(m).join(&release))
        .find(|m| m.join("modules.dep").is_file())?;
    let headers = dir.join("headers");
    let build = headers.join(format!("usr/src/linux-headers-{release}"));
    if !vmlinuz.is_file() || !build.is_dir() {
        return None;
    }
    Some(Kernel {
        name: record["name"].as_str()?.to_string(),
        release,
        version: record["version"].as_str()?.to_string(),
        suite: record["suite"].as_str()?.to_string(),
        vmlinuz,
        modules,
        headers,
        build,
        dir: dir.to_path_buf(),
    })
}

/// apt-get and apt-cache with a configuration of their own.
struct Apt {
    dir: PathBuf,
}

impl Apt {
    fn new(dir: &Path) -> Result<Apt> {
        for sub in [
            "lists/partial",
            "cache/archives/partial",
            "state",
            "empty",
            "debs",
        ] {
            fs::create_dir_all(dir.join(sub))?;
        }
        let status = dir.join("state/status");
        if !status.exists() {
            fs::write(&status, "")?;
        }
        let (mirror, keyring) = host_mirror()?;
        let sources: String = KERNELS
            .iter()
            .map(|k| format!("deb [signed-by={keyring}] {mirror} {} main\n", k.suite))
            .collect();
        let list = dir.join("sources.list");
        if fs::read_to_string(&list).ok().as_deref() != Some(sources.as_str()) {
            fs::write(&list, &sources)?;
            // Lists of another mirror or suite set: fetch afresh.
            let _ = fs::remove_file(dir.join("lists/updated"));
        }
        Ok(Apt {
            dir: dir.to_path_buf(),
        })
    }

    fn command(&self, program: &str) -> Command {
        let d = |sub: &str| self.dir.join(sub).display().to_string();
        let mut cmd = Command::new(program);
        for (key, value) in [
            ("Dir::Etc::sourcelist", d("sources.list")),
            ("Dir::Etc::sourceparts", d("empty")),
            ("Dir::Etc::preferences", d("empty/none")),
            ("Dir::Etc::preferencesparts", d("empty")),
            ("Dir::State", d("state")),
            ("Dir::State::status", d("state/status")),
            ("Dir::State::Lists", d("lists")),
            ("Dir::Cache", d("cache")),
            ("APT::Architecture", "amd64".to_string()),
            ("APT::Architectures", "amd64".to_string()),
            // The lists live under target/, which apt's _apt user may not
            // be able to write.
            ("APT::Sandbox::User", "root".to_string()),
        ] {
            cmd.arg("-o").arg(format!("{key}={value}"));
        }
        cmd
    }

    /// `apt-get update`, unless done before (or `force`).
    fn update(&self, force: bool) -> Result<()> {
        let done = self.dir.join("lists/updated");
        if done.exists() && !force {
            return Ok(());
        }
        println!(
            "matrix: apt-get update (private lists in {})",
            self.dir.display()
        );
        run(self.command("apt-get").args(["-q", "update"]))?;
        fs::write(&done, "")?;
        Ok(())
    }

    /// (version, suite) of every version of `package` apt knows.
    fn madison(&self, package: &str) -> Result<Vec<(String, String)>> {
        let out = output(self.command("apt-cache").args(["madison", package]))?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let cols: Vec<&str> = l.split('|').map(str::trim).collect();
                let dist = cols.get(2)?.split_whitespace().nth(1)?;
                let suite = dist.split('/').next()?;
                Some((cols.get(1)?.to_string(), suite.to_string()))
            })
            .collect())
    }

    /// The newest generic amd64 image package in the spec's suite: (name, version).
    fn newest_image(&self, spec: &Spec) -> Result<(String, String)> {
        let pattern = format!("^{}.*{}$", regex_escape(spec.prefix), regex_escape(SUFFIX));
        let out = output(
            self.command("apt-cache")
                .args(["search", "--names-only"])
                .arg(&pattern),
        )?;
        let mut best: Option<(String, String)> = None;
        for name in out.lines().filter_map(|l| l.split_whitespace().next()) {
            let Some(abi) = name
                .strip_prefix(spec.prefix)
                .and_then(|n| n.strip_suffix(SUFFIX))
            else {
                continue;
            };
            // Not the cloud or PREEMPT_RT flavours.
            if abi.ends_with("-cloud") || abi.ends_with("-rt") {
                continue;
            }
            for (version, suite) in self.madison(name)? {
                if suite != spec.suite {
                    continue;
                }
                if best
                    .as_ref()
                    .is_none_or(|(_, v)| version_newer(&version, v).unwrap_or(false))
                {
                    best = Some((name.to_string(), version));
                }
            }
        }
        best.with_context(|| {
            format!(
                "no {}*{SUFFIX} package in {} (apt-cache search {pattern})",
                spec.prefix, spec.suite
            )
        })
    }

    /// The `-common` headers and the `linux-kbuild-*` package that
    /// `headers` (version `version`) depends on.
    fn header_dependencies(&self, headers: &str, version: &str) -> Result<Vec<String>> {
        let out = output(
            self.command("apt-cache")
                .args(["show", "--no-all-versions"])
                .arg(format!("{headers}={version}")),
        )?;
        let depends = out
            .lines()
            .find_map(|l| l.strip_prefix("Depends:"))
            .with_context(|| format!("{headers} {version} has no Depends"))?;
        let wanted: Vec<String> = depends
            .split(',')
            .filter_map(|alt| alt.split('|').next()?.split_whitespace().next())
            .filter(|p| {
                (p.starts_with("linux-headers-") && p.ends_with("-common"))
                    || p.starts_with("linux-kbuild-")
            })
            .map(str::to_string)
            .collect();
        if !wanted.iter().any(|p| p.ends_with("-common")) {
            bail!("{headers} {version} depends on no linux-headers-*-common: {depends}");
        }
        Ok(wanted)
    }

    /// `apt-get download` of `package` into apt/debs/, at `version` when the
    /// suite has it (kernel packages of one upload share it), else the
    /// newest there; nothing is downloaded when the file is there already.
    fn download(&self, package: &str, version: &str, suite: &str) -> Result<PathBuf> {
        let versions = self.madison(package)?;
        let version = if versions.iter().any(|(v, _)| v == version) {
            version.to_string()
        } else {
            let mut in_suite = versions.into_iter().filter(|(_, s)| s == suite);
            let mut best = in_suite
                .next()
                .with_context(|| format!("{package} is not in {suite}"))?
                .0;
            for (v, _) in in_suite {
                if version_newer(&v, &best)? {
                    best = v;
                }
            }
            best
        };
        let debs = self.dir.join("debs");
        // NAME_VERSION_ARCH.deb, ARCH amd64 or all.
        let prefix = format!("{package}_{}_", version.replace(':', "%3a"));
        let find = || -> Option<PathBuf> {
            fs::read_dir(&debs)
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
                })
        };
        if let Some(file) = find() {
            return Ok(file);
        }
        run(self
            .command("apt-get")
            .current_dir(&debs)
            .args(["-q", "download"])
            .arg(format!("{package}={version}")))?;
        find().with_context(|| {
            format!(
                "apt-get download {package}={version} left no {prefix}*.deb in {}",
                debs.display()
            )
        })
    }
}

fn version_newer(a: &str, b: &str) -> Result<bool> {
    Ok(Command::new("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .context("starting dpkg --compare-versions")?
        .success())
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = ".+*?()[]{}|^$\\".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

/// The Debian mirror the host's apt sources use (not its security archive),
/// and the keyring they name: `TRACER_MATRIX_MIRROR` overrides the mirror.
fn host_mirror() -> Result<(String, String)> {
    let mut entries = Vec::new();
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        match file.extension().and_then(|e| e.to_str()) {
            Some("sources") => entries.extend(deb822_entries(&text)),
            Some("list") => entries.extend(one_line_entries(&text)),
            _ if file.ends_with("sources.list") => entries.extend(one_line_entries(&text)),
            _ => {}
        }
    }
    let debian = |suite: &str| {
        let codename = suite.split('-').next().unwrap_or("");
        [
            "buster",
            "bullseye",
            "bookworm",
            "trixie",
            "forky",
            "duke",
            "sid",
            "stable",
            "oldstable",
            "testing",
            "unstable",
        ]
        .contains(&codename)
            && !suite.ends_with("-security")
    };
    let found = entries
        .into_iter()
        .find(|e| e.suites.iter().any(|s| debian(s)) && !e.uri.contains("security"));
    let keyring = found
        .as_ref()
        .and_then(|e| e.signed_by.clone())
        .filter(|k| Path::new(k).is_file())
        .unwrap_or_else(|| DEBIAN_KEYRING.to_string());
    if let Some(mirror) = std::env::var_os("TRACER_MATRIX_MIRROR") {
        return Ok((mirror.to_string_lossy().into_owned(), keyring));
    }
    let found = found.context(
        "no Debian mirror in /etc/apt/sources.list{,.d}: set TRACER_MATRIX_MIRROR to one",
    )?;
    Ok((found.uri.trim_end_matches('/').to_string(), keyring))
}

struct Entry {
    uri: String,
    suites: Vec<String>,
    signed_by: Option<String>,
}

/// `Types: deb` stanzas of a deb822 `.sources` file.
fn deb822_entries(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .filter(|l| !l.starts_with('#'))
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| v.trim().to_string())
                })
        };
        if !field("Types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb")) {
            continue;
        }
        if field("Enabled").is_some_and(|e| e == "no") {
            continue;
        }
        let suites: Vec<String> = field("Suites")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        for uri in field("URIs").unwrap_or_default().split_whitespace() {
            out.push(Entry {
                uri: uri.to_string(),
                suites: suites.clone(),
                signed_by: field("Signed-By"),
            });
        }
    }
    out
}

/// `deb [options] URI suite components` lines.
fn one_line_entries(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line.strip_prefix("deb ") else {
            continue;
        };
        let mut rest = rest.trim();
        let mut signed_by = None;
        if let Some(opts) = rest.strip_prefix('[') {
            let Some((opts, after)) = opts.split_once(']') else {
                continue;
            };
            signed_by = opts
                .split_whitespace()
                .find_map(|o| o.strip_prefix("signed-by="))
                .map(str::to_string);
            rest = after.trim();
        }
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        out.push(Entry {
            uri: uri.to_string(),
            suites: vec![suite.to_string()],
            signed_by,
        });
    }
    out
}
