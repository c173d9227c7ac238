//! A module rootkit, for real, in the kernel matrix's guests: the test
//! module (tests/fixtures/kmod) takes itself off the module list, out of
//! kallsyms and `/sys/module`, patches `sys_call_table[kill]` and, where
//! the kernel has `x64_sys_call`, one of its direct call sites. `tracer
//! hidden` must name each patch with where it points, name the module
//! (found in memory: it is on no list any more), and link them.
//!
//! A loaded module cannot be taken out again (it refuses rmmod), so this
//! binary runs last in each guest, and only there: the host has no
//! loadable modules (CONFIG_MODULES is off) and says so.
use std::{path::PathBuf, process::Command, time::Duration};

use serde_json::Value;
use tracer_tests::{evidence, run, running_as_root, tracer, workspace_root};

const MODULE: &str = "tracer_test_rootkit";

/// The module built for this guest's kernel, or why it could not be; `None`
/// outside the matrix.
fn module() -> Option<Result<PathBuf, String>> {
    if std::env::var_os("TRACER_MATRIX").is_none() {
        eprintln!(
            "rootkit_module: needs a kernel with loadable modules and no lockdown: \
             runs in the kernel matrix (cargo xtask matrix), not on this host"
        );
        return None;
    }
    Some(match std::env::var("TRACER_KMOD") {
        Ok(path) => Ok(PathBuf::from(path)),
        Err(_) => Err(
            std::env::var("TRACER_KMOD_UNAVAILABLE").unwrap_or_else(|_| {
                "the matrix set neither TRACER_KMOD nor TRACER_KMOD_UNAVAILABLE".into()
            }),
        ),
    })
}

fn kernel_findings(report: &Value) -> Vec<Value> {
    // One list since schema 2: the kernel's findings have layer `kernel`.
    report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["layer"] == "kernel")
        .cloned()
        .collect()
}

#[test]
fn patched_syscalls_and_the_module_behind_them_are_named() {
    if !running_as_root("patched_syscalls_and_the_module_behind_them_are_named") {
        return;
    }
    let Some(module) = module() else { return };
    let module = module.unwrap_or_else(|why| panic!("the test module is not available: {why}"));
    let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap();
    let has_dispatcher = kallsyms.lines().any(|l| l.ends_with(" x64_sys_call"));

    let loaded = Command::new("sh")
        .arg(workspace_root().join("tests/fixtures/kmod/load.sh"))
        .arg(&module)
        .output()
        .expect("run load.sh");
    assert!(
        loaded.status.success(),
        "loading {} failed: {}{}",
        module.display(),
        String::from_utf8_lossy(&loaded.stdout),
        String::from_utf8_lossy(&loaded.stderr)
    );
    let modules = std::fs::read_to_string("/proc/modules").unwrap();
    assert!(!modules.contains(MODULE), "the module did not hide itself");

    let out = run(&mut tracer(&["hidden", "--json"]), Duration::from_secs(300));
    assert!(
        !out.stderr.contains("panicked"),
        "tracer panicked: {}",
        out.stderr
    );
    let report = out.json();
    let found = kernel_findings(&report);
    let describe = || serde_json::to_string_pretty(&found).unwrap();

    // The table entry for kill, leading into the module's code.
    let table = found
        .iter()
        .find(|f| {
            f["kind"] == "hooked-function-pointer"
                && evidence(f, "pointer").is_some_and(|p| p.starts_with("sys_call_table[62]"))
        })
        .unwrap_or_else(|| panic!("no finding for sys_call_table[62]: {}", describe()));
    assert_eq!(
        evidence(table, "verdict"),
        Some("outside kernel text (_stext.._etext)")
    );
    assert_eq!(
        evidence(table, "points to"),
        Some(format!("code of module [{MODULE}]").as_str()),
        "{}",
        describe()
    );

    // The module, named though it is on no list.
    let hidden = found
        .iter()
        .find(|f| f["kind"] == "hidden-kernel-module" && evidence(f, "module") == Some(MODULE))
        .unwrap_or_else(|| panic!("the hidden module is not named: {}", describe()));
    let related = |f: &Value, id: &Value| f["related"].as_array().is_some_and(|r| r.contains(id));
    assert!(related(table, &hidden["id"]), "{}", describe());
    assert!(related(hidden, &table["id"]), "{}", describe());

    // The dispatcher's rewritten call site, where the kernel has one.
    if has_dispatcher {
        let site = found
            .iter()
            .find(|f| evidence(f, "pointer").is_some_and(|p| p.starts_with("x64_sys_call+")))
            .unwrap_or_else(|| panic!("no finding for the x64_sys_call site: {}", describe()));
        assert_eq!(
            evidence(site, "points to"),
            Some(format!("code of module [{MODULE}]").as_str())
        );
        assert!(related(site, &hidden["id"]), "{}", describe());
    }

    // Nothing else of the kernel's is blamed: only the module's doing.
    let others: Vec<&Value> = found
        .iter()
        .filter(|f| {
            !matches!(
                f["kind"].as_str(),
                Some("hooked-function-pointer" | "hidden-kernel-module")
            )
        })
        .collect();
    assert!(others.is_empty(), "unexpected kernel findings: {others:#?}");
    let notes = report["kernel"]["notes"].to_string();
    assert!(
        notes.contains("patched"),
        "the dispatch checks did not run: {notes}"
    );
}
