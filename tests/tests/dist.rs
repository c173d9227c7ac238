//! The package as an admin meets it: `cargo xtask dist` builds the .deb
//! (static release build, once; later runs are incremental), it installs
//! with dpkg, everything it ships works from where it lands, and `dpkg -r`
//! removes all of it but the conffile. The package is purged at the end,
//! whatever happens.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use tracer_tests::{plain_cargo, running_as_root, target_dir, workspace_root};

const CONFFILE: &str = "/etc/tracer/indicators.txt";
/// The note in the unit's (otherwise empty) Sigma rule directory: under
/// /etc, so a conffile too, kept by `dpkg -r` like the indicators.
const SIGMA_NOTE: &str = "/etc/tracer/sigma/README";
const UNIT: &str = "/usr/lib/systemd/system/tracer.service";

/// Purges the package on drop, so no test run leaves it installed.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "tracer"]).output();
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `cargo xtask dist` with a plain cargo environment and returns its
/// folder.
fn build_dist() -> PathBuf {
    run(plain_cargo()
        .args(["run", "--quiet", "--package", "xtask", "--", "dist"])
        .current_dir(workspace_root()));
    target_dir().join("xtask/dist")
}

fn only_file(dir: &Path, suffix: &str) -> PathBuf {
    let found: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one *{suffix} in {}: {found:?}",
        dir.display()
    );
    found.into_iter().next().unwrap()
}

#[test]
fn the_deb_installs_works_from_usr_bin_and_removes_all_but_its_conffile() {
    if !running_as_root("dist") {
        return;
    }
    let dist = build_dist();
    let deb = only_file(&dist, ".deb");
    let tarball = only_file(&dist, ".tar.gz");

    // SHA256SUMS names both files and checks out.
    let sums = fs::read_to_string(dist.join("SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count(), 2, "{sums}");
    run(Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&dist));

    // The tarball holds the same files as the package.
    let deb_files: Vec<String> = text(&run(Command::new("dpkg-deb").arg("-c").arg(&deb)))
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| {
            l.split_whitespace()
                .last()
                .map(|p| p.trim_start_matches('.').to_string())
        })
        .collect();
    let tar_files = text(&run(Command::new("tar").arg("-tzf").arg(&tarball)));
    for f in &deb_files {
        assert!(
            tar_files.lines().any(|t| t.ends_with(f.as_str())),
            "{f} missing from the tarball"
        );
    }

    let _purge = Installed;
    let _ = Command::new("dpkg").args(["--purge", "tracer"]).output();
    run(Command::new("dpkg").arg("-i").arg(&deb));

    // The static binary runs from /usr/bin.
    let status = run(Command::new("/usr/bin/tracer").arg("status"));
    let status = text(&status);
    assert!(status.contains("static (musl)"), "{status}");

    // Man pages render, with the sections from the README.
    let man = run(Command::new("man")
        .args(["-P", "cat", "tracer-hidden"])
        .env("MANWIDTH", "100"));
    let man = text(&man);
    assert!(
        man.contains("tracer-hidden") && man.contains("EXIT STATUS"),
        "{man}"
    );
    assert!(man.contains("EXAMPLES"), "{man}");
    run(Command::new("man").args(["-P", "cat", "tracer"]));

    // bash completes `tracer ki` to kill-tree.
    let completion = run(Command::new("bash").arg("-c").arg(
        "source /usr/share/bash-completion/completions/tracer
         COMP_WORDS=(tracer ki); COMP_CWORD=1; COMP_LINE='tracer ki'; COMP_POINT=9
         _tracer tracer ki tracer
         printf '%s\\n' \"${COMPREPLY[@]}\"",
    ));
    assert_eq!(text(&completion).trim(), "kill-tree");
    for f in [
        "/usr/share/zsh/vendor-completions/_tracer",
        "/usr/share/fish/vendor_completions.d/tracer.fish",
    ] {
        assert!(Path::new(f).is_file(), "{f} not installed");
    }

    // The unit passes systemd's own check, with no warning either.
    let verify = run(Command::new("systemd-analyze").args(["verify", UNIT]));
    let warnings = String::from_utf8_lossy(&verify.stderr);
    assert!(
        warnings.trim().is_empty(),
        "systemd-analyze verify warned: {warnings}"
    );

    // The shipped schemas are the committed ones.
    for entry in fs::read_dir(workspace_root().join("schemas")).unwrap() {
        let path = entry.unwrap().path();
        let installed = Path::new("/usr/share/tracer/schemas").join(path.file_name().unwrap());
        assert_eq!(
            fs::read(&path).unwrap(),
            fs::read(&installed).unwrap_or_default(),
            "{}",
            installed.display()
        );
    }

    // The indicator file is a conffile.
    let conffiles = text(&run(Command::new("dpkg-query").args([
        "-W",
        "-f=${Conffiles}",
        "tracer",
    ])));
    assert!(conffiles.contains(CONFFILE), "{conffiles}");
    assert!(conffiles.contains(SIGMA_NOTE), "{conffiles}");

    let installed: Vec<String> = text(&run(Command::new("dpkg").args(["-L", "tracer"])))
        .lines()
        .map(String::from)
        .filter(|p| Path::new(p).is_file())
        .collect();
    assert!(
        installed.iter().any(|p| p == "/usr/bin/tracer"),
        "{installed:?}"
    );

    run(Command::new("dpkg").args(["-r", "tracer"]));
    for path in &installed {
        if path == CONFFILE || path == SIGMA_NOTE {
            assert!(
                Path::new(path).exists(),
                "dpkg -r removed the conffile {path}"
            );
        } else {
            assert!(!Path::new(path).exists(), "dpkg -r left {path}");
        }
    }
    let state = text(&run(Command::new("dpkg-query").args([
        "-W",
        "-f=${Status}",
        "tracer",
    ])));
    assert_eq!(state, "deinstall ok config-files");

    run(Command::new("dpkg").args(["--purge", "tracer"]));
    for conffile in [CONFFILE, SIGMA_NOTE] {
        assert!(!Path::new(conffile).exists(), "--purge left {conffile}");
    }
}
