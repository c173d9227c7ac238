//! `cargo xtask matrix`: boots Debian's stock kernels (5.10, 6.1, 6.12) in
//! QEMU and runs `tracer status` and tracer's kernel-touching integration
//! tests inside each guest, then prints one table row per kernel.
//!
//! The guest sees the host's root filesystem (read-only, under a tmpfs
//! overlay), so the binaries under test are built on the host and copied
//! to `target/xtask/matrix/bin/` first: a rebuild in the tree during the
//! run cannot change them under a guest.
pub mod fetch;
pub mod guest;
pub mod kmod;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use crate::{cargo, target_dir};

/// The integration test binaries (tests/tests/NAME.rs) run in every guest,
/// one test thread each.
/// `rootkit_module` loads a module that cannot be unloaded: it runs last.
pub const TESTS: &[&str] = &["kernel", "matrix", "rootkit_module"];

#[derive(clap::Args, Default)]
pub struct Args {
    /// Only these kernels (repeatable): 5.10, 6.1, 6.12. Default: all.
    #[arg(long = "kernel", value_name = "NAME")]
    kernels: Vec<String>,
    /// Seconds each guest may run before it is killed (and counted failed).
    #[arg(long, default_value_t = 1200)]
    timeout: u64,
    /// Update the package lists and fetch a kernel newer than the cached one.
    #[arg(long)]
    refresh: bool,
    /// Only fetch and unpack the kernels, print where they are, boot none.
    #[arg(long)]
    fetch_only: bool,
    /// Run CMD (`sh -c`, as root, in the guest's view of the host's root)
    /// instead of tracer status and the tests, and print what it printed;
    /// builds nothing.
    #[arg(long, value_name = "CMD")]
    command: Option<String>,
    /// Passed to every test binary, after --test-threads=1.
    #[arg(last = true)]
    test_args: Vec<String>,
}

impl Args {
    /// Every kernel, every test, the default time limit: `cargo xtask test`.
    pub fn all() -> Args {
        Args {
            timeout: 1200,
            ..Args::default()
        }
    }
}

/// What the guest needs, copied out of the build tree.
struct Binaries {
    static_tracer: PathBuf,
    tracer: PathBuf,
    /// (test name, executable)
    tests: Vec<(String, PathBuf)>,
}

/// One row of the final table.
struct Row {
    kernel: String,
    release: String,
    accel: &'static str,
    boot: Option<f64>,
    total: Option<f64>,
    hooks: String,
    /// `hidden` and watch start-up in ms, and ps -e's, in the guest.
    bench: String,
    status: String,
    tests: Vec<(String, String)>,
    /// Why this kernel failed, when it did.
    failure: Option<String>,
    /// The guest fault under emulation that made the matrix boot this
    /// kernel a second time.
    retried: Option<String>,
    console: Option<PathBuf>,
}

pub fn run(args: &Args) -> Result<u8> {
    let started = Instant::now();
    let names: Vec<String> = if args.kernels.is_empty() {
        fetch::KERNELS.iter().map(|k| k.name.to_string()).collect()
    } else {
        for k in &args.kernels {
            fetch::spec(k)?;
        }
        args.kernels.clone()
    };
    if args.fetch_only {
        for name in &names {
            let k = fetch::prepare_with(name, args.refresh)?;
            println!(
                "matrix {name}: {} {}\n  vmlinuz {}\n  modules {}\n  headers {}",
                k.release,
                k.version,
                k.vmlinuz.display(),
                k.modules.display(),
                k.build.display()
            );
        }
        return Ok(0);
    }
    crate::setup::require_root("matrix (the guests read the host's whole root filesystem)")?;
    let bins = match args.command {
        Some(_) => None,
        None => Some(build()?),
    };
    let accel = guest::accelerator();
    if accel.name == "kvm" {
        println!("matrix: accelerator kvm ({})", accel.reason);
    } else {
        println!("matrix: accelerator tcg, {}", accel.reason);
    }

    let mut rows = Vec::new();
    for name in &names {
        let mut row = Row {
            kernel: name.clone(),
            release: String::new(),
            accel: accel.name,
            boot: None,
            total: None,
            hooks: String::new(),
            bench: String::new(),
            status: String::new(),
            tests: Vec::new(),
            failure: None,
            retried: None,
            console: None,
        };
        let kernel = match fetch::prepare_with(name, args.refresh) {
            Ok(k) => k,
            Err(e) => {
                println!("matrix {name}: FAILED, could not fetch the kernel: {e:#}");
                row.failure = Some(format!("fetch: {e:#}"));
                rows.push(row);
                continue;
            }
        };
        row.release = kernel.release.clone();
        println!(
            "matrix {name}: booting {} ({}, {})",
            kernel.release, kernel.version, kernel.suite
        );
        let script = match (&bins, &args.command) {
            (Some(bins), _) => {
                // The test rootkit module, built against this kernel's
                // headers; where it cannot be, the module test says why.
                let module = kmod::build_for(&kernel).map_err(|e| format!("{e:#}"));
                if let Err(why) = &module {
                    println!("matrix {name}: test module not built: {why}");
                }
                script(bins, &module, &args.test_args)
            }
            (None, cmd) => command_script(cmd.as_deref().unwrap_or("true")),
        };
        let boot = || {
            guest::run(
                &kernel,
                &accel,
                &script,
                Duration::from_secs(args.timeout),
                |line| println!("matrix {name}: {line}"),
            )
        };
        let mut outcome = boot();
        // Under TCG a guest kernel can fault in its own text patching (an
        // int3 left behind) or stall its CPU, in runs that pass on every
        // other boot (see `guest::EMULATION_FAULTS`). Such a guest is
        // booted once more, and the row says so; a fault that comes back
        // fails the kernel as any other.
        if let Ok(o) = &outcome {
            if let Some(fault) = o.emulation_fault.clone() {
                let kept = o.console.with_file_name("console-first-boot.log");
                let _ = fs::rename(&o.console, &kept);
                println!(
                    "matrix {name}: the guest kernel faulted under TCG ({fault}); booting it once \
                     more (first console: {})",
                    kept.display()
                );
                row.retried = Some(fault);
                outcome = boot();
            }
        }
        match outcome {
            Ok(o) => {
                match &bins {
                    Some(bins) => collect(&mut row, &o, bins),
                    None => collect_command(&mut row, &o),
                }
                println!(
                    "matrix {name}: finished in {:.0} s, console log {}",
                    o.total,
                    o.console.display()
                );
            }
            Err(e) => {
                println!("matrix {name}: FAILED, could not boot: {e:#}");
                row.failure = Some(format!("boot: {e:#}"));
            }
        }
        rows.push(row);
    }
    print_table(&rows);
    println!("matrix: {:.0} s in all", started.elapsed().as_secs_f64());
    let failed: Vec<&Row> = rows
        .iter()
        .filter(|r| r.failure.is_some() || r.tests.iter().any(|(_, t)| !t.starts_with("ok")))
        .collect();
    for r in &rows {
        if let Some(fault) = &r.retried {
            println!(
                "matrix {}: booted twice: the first guest faulted under TCG: {fault}",
                r.kernel
            );
        }
    }
    for r in &failed {
        let why = r.failure.clone().unwrap_or_else(|| "tests failed".into());
        let log = r
            .console
            .as_ref()
            .map(|c| format!(" (console: {})", c.display()))
            .unwrap_or_default();
        println!("matrix {}: FAILED: {why}{log}", r.kernel);
    }
    Ok(if failed.is_empty() { 0 } else { 1 })
}

/// Builds the static tracer, the debug tracer and the test binaries, and
/// copies them to target/xtask/matrix/bin/.
fn build() -> Result<Binaries> {
    crate::fixtures::build_getdents_hider()?;
    crate::build::build_static()?;
    crate::run(cargo().args(["build", "-p", "tracer"]))?;
    let out = cargo()
        .args([
            "test",
            "--no-run",
            "-p",
            "tracer-tests",
            "--message-format=json",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("starting cargo test --no-run")?;
    if !out.status.success() {
        bail!("cargo test --no-run -p tracer-tests failed: {}", out.status);
    }
    let mut built = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let target = &msg["target"];
        if msg["reason"] == "compiler-artifact"
            && target["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "test"))
        {
            if let (Some(name), Some(exe)) = (target["name"].as_str(), msg["executable"].as_str()) {
                built.push((name.to_string(), PathBuf::from(exe)));
            }
        }
    }

    let bin = fetch::matrix_dir()?.join("bin");
    let _ = fs::remove_dir_all(&bin);
    fs::create_dir_all(bin.join("static"))?;
    fs::create_dir_all(bin.join("debug"))?;
    let copy = |from: &Path, to: PathBuf| -> Result<PathBuf> {
        fs::copy(from, &to).with_context(|| format!("copying {}", from.display()))?;
        Ok(to)
    };
    let static_tracer = copy(
        &target_dir().join(crate::setup::MUSL).join("release/tracer"),
        bin.join("static/tracer"),
    )?;
    let tracer = copy(&target_dir().join("debug/tracer"), bin.join("debug/tracer"))?;
    let mut tests = Vec::new();
    for name in TESTS {
        let (_, exe) = built.iter().find(|(n, _)| n == name).with_context(|| {
            format!("cargo built no test binary {name} (tests/tests/{name}.rs)")
        })?;
        tests.push((name.to_string(), copy(exe, bin.join(name))?));
    }
    Ok(Binaries {
        static_tracer,
        tracer,
        tests,
    })
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The script the guest runs in the chroot of the host's root.
fn script(bins: &Binaries, module: &Result<PathBuf, String>, test_args: &[String]) -> String {
    let out = guest::OUT;
    let mut s = format!(
        r#"export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 TERM=dumb
out={out}
# step NAME CMD...: stdout to NAME.out, stderr to NAME.err, exit code to NAME.rc
step() {{
    name=$1; shift
    echo "matrix: step $name"
    "$@" > $out/$name.out 2> $out/$name.err < /dev/null
    rc=$?
    echo $rc > $out/$name.rc
    echo "matrix: done $name $rc"
}}
uname -r > $out/uname
step status {static_tracer} status --json
# Start-up in this guest, beside ps -e (TCG is slow: ratios only): the
# median of 3 runs each, in ms.
ms() {{ s=$(date +%s%N); "$@" > /dev/null 2>&1; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); }}
med() {{ sort -n | sed -n 2p; }}
# watch start-up: until its start record is out.
watch_start() {{
  f=/tmp/watch-start.$$; : > $f
  {static_tracer} watch --json --no-default-iocs > $f 2> /dev/null & p=$!
  n=0; while [ ! -s $f ] && [ $n -lt 6000 ]; do sleep 0.01; n=$((n + 1)); done
  kill -INT $p; wait $p
}}
{{
  echo "ps $(for i in 1 2 3; do ms ps -e; done | med)"
  echo "hidden $(for i in 1 2 3; do ms {static_tracer} hidden --json; done | med)"
  echo "watch $(for i in 1 2 3; do ms watch_start; done | med)"
}} > $out/bench.out 2>&1
"#,
        static_tracer = quote(&bins.static_tracer.display().to_string()),
    );
    // The tests' scratch folders go to the guest's tmpfs; cargo test runs
    // test binaries in their package's folder.
    let _ = writeln!(
        s,
        "cd {}",
        quote(&crate::root().join("tests").display().to_string())
    );
    let args: Vec<String> = test_args.iter().map(|a| quote(a)).collect();
    let module = match module {
        Ok(ko) => format!("TRACER_KMOD={}", quote(&ko.display().to_string())),
        Err(why) => format!("TRACER_KMOD_UNAVAILABLE={}", quote(why)),
    };
    for (name, exe) in &bins.tests {
        let _ = writeln!(
            s,
            "step test-{name} env TRACER_BIN={} TRACER_MATRIX=1 {module} CARGO_TARGET_DIR=/tmp/matrix-target {} --test-threads=1 {}",
            quote(&bins.tracer.display().to_string()),
            quote(&exe.display().to_string()),
            args.join(" ")
        );
    }
    s
}

/// The script that runs `--command`.
fn command_script(cmd: &str) -> String {
    format!(
        "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
         export HOME=/root LANG=C.UTF-8 TERM=dumb\n\
         cd /\n\
         echo 'matrix: step command'\n\
         sh -c {} > {out}/command.out 2>&1 < /dev/null\n\
         rc=$?\n\
         echo $rc > {out}/command.rc\n\
         echo \"matrix: done command $rc\"\n",
        quote(cmd),
        out = guest::OUT
    )
}

/// Fills `row` from a `--command` guest, and prints what the command printed.
fn collect_command(row: &mut Row, o: &guest::Outcome) {
    row.boot = o.boot;
    row.total = Some(o.total);
    row.console = Some(o.console.clone());
    let rc = fs::read_to_string(o.out.join("command.rc")).ok();
    let text = fs::read_to_string(o.out.join("command.out")).unwrap_or_default();
    println!("---- {} ----\n{}----", row.kernel, text);
    row.status = match rc.as_deref().map(str::trim) {
        Some(code) => format!("command exit {code}"),
        None => "command not run".into(),
    };
    let mut why = Vec::new();
    if o.timed_out {
        why.push("timed out".to_string());
    } else if o.boot.is_none() {
        why.push("never came up".to_string());
    } else if rc.as_deref().map(str::trim) != Some("0") {
        why.push(format!("command: {}", row.status));
    }
    why.extend(o.errors.iter().cloned());
    if !why.is_empty() {
        row.failure = Some(why.join("; "));
    }
}

/// `hidden 820 (4.1x), watch 300 (1.5x), ps -e 200` from the guest's
/// `NAME MS` lines.
///
/// ```text
/// ps 200
/// hidden 820
/// ```
fn bench_cell(text: &str) -> String {
    let ms = |name: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
    };
    let Some(ps) = ms("ps ").filter(|&p| p > 0.0) else {
        return "-".into();
    };
    let part = |name: &str| match ms(&format!("{name} ")) {
        Some(v) => format!("{name} {v:.0} ({:.1}x)", v / ps),
        None => format!("{name} ?"),
    };
    format!("{}, {}, ps -e {ps:.0}", part("hidden"), part("watch"))
}

/// Fills `row` from the guest's outcome and result files.
fn collect(row: &mut Row, o: &guest::Outcome, bins: &Binaries) {
    row.boot = o.boot;
    row.total = Some(o.total);
    row.console = Some(o.console.clone());
    let read = |name: &str| fs::read_to_string(o.out.join(name)).ok();
    let rc = |name: &str| read(&format!("{name}.rc")).map(|s| s.trim().to_string());

    row.status = match rc("status") {
        None => "not run".into(),
        Some(code) => format!("exit {code}"),
    };
    match read("status.out").and_then(|s| serde_json::from_str::<Value>(&s).ok()) {
        Some(status) => {
            let hooks: Vec<String> = status["hooks"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|h| {
                    format!(
                        "{}={}",
                        h["event"].as_str().unwrap_or("?"),
                        h["hook"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            row.hooks = if hooks.is_empty() {
                match status["error"].as_str() {
                    Some(e) => format!("none: {}", first_line(e)),
                    None => "none".into(),
                }
            } else {
                hooks.join(" ")
            };
        }
        None if rc("status").is_some() => {
            let err = read("status.err").unwrap_or_default();
            row.hooks = format!("no JSON: {}", first_line(&err));
        }
        None => {}
    }
    row.bench = read("bench.out")
        .map(|b| bench_cell(&b))
        .unwrap_or_default();
    for (name, _) in &bins.tests {
        let step = format!("test-{name}");
        let result = match rc(&step) {
            None => "not run".to_string(),
            Some(code) => {
                let log = read(&format!("{step}.out")).unwrap_or_default();
                match test_counts(&log) {
                    Some((passed, _)) if code == "0" => format!("ok {passed} passed"),
                    Some((passed, failed)) => format!("{passed} passed, {failed} failed"),
                    None => format!("exit {code}, no test summary"),
                }
            }
        };
        row.tests.push((name.clone(), result));
    }
    let mut why = Vec::new();
    if o.timed_out {
        why.push("timed out".to_string());
    } else if o.boot.is_none() {
        why.push("never came up".to_string());
    } else if let Some(fault) = &o.emulation_fault {
        why.push(format!("the guest kernel faulted again: {fault}"));
    } else if !o.finished {
        why.push("did not finish its script".to_string());
    }
    why.extend(o.errors.iter().cloned());
    if !why.is_empty() {
        row.failure = Some(why.join("; "));
    }
}

fn first_line(s: &str) -> String {
    let line = s
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let mut line = line.to_string();
    if line.len() > 100 {
        let mut cut = 100;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str("...");
    }
    line
}

/// Summed `test result:` counts of a libtest log: (passed, failed).
fn test_counts(log: &str) -> Option<(u32, u32)> {
    let mut found = None;
    for line in log.lines().filter(|l| l.starts_with("test result:")) {
        let count = |what: &str| {
            line.split(';')
                .find_map(|part| {
                    part.trim()
                        .strip_suffix(what)?
                        .trim()
                        .rsplit(' ')
                        .next()?
                        .parse::<u32>()
                        .ok()
                })
                .unwrap_or(0)
        };
        let (p, f) = found.unwrap_or((0, 0));
        found = Some((p + count(" passed"), f + count(" failed")));
    }
    found
}

fn print_table(rows: &[Row]) {
    let secs = |s: Option<f64>| s.map(|s| format!("{s:.1}")).unwrap_or_else(|| "-".into());
    let mut table = vec![vec![
        "kernel".to_string(),
        "release".into(),
        "accel".into(),
        "boot s".into(),
        "total s".into(),
        "status".into(),
    ]];
    table[0].extend(TESTS.iter().map(|t| format!("test {t}")));
    table[0].push("start-up (ms, ratio to ps -e)".into());
    table[0].push("hooks".into());
    for r in rows {
        let mut cells = vec![
            r.kernel.clone(),
            if r.release.is_empty() {
                "-".into()
            } else {
                r.release.clone()
            },
            r.accel.to_string(),
            secs(r.boot),
            secs(r.total),
            match (r.status.is_empty(), &r.retried) {
                (true, _) => "-".into(),
                (false, None) => r.status.clone(),
                (false, Some(_)) => format!("{} (2nd boot)", r.status),
            },
        ];
        for t in TESTS {
            cells.push(
                r.tests
                    .iter()
                    .find(|(n, _)| n == t)
                    .map(|(_, res)| res.clone())
                    .unwrap_or_else(|| "-".into()),
            );
        }
        cells.push(if r.bench.is_empty() {
            "-".into()
        } else {
            r.bench.clone()
        });
        cells.push(if r.hooks.is_empty() {
            "-".into()
        } else {
            r.hooks.clone()
        });
        table.push(cells);
    }
    let widths: Vec<usize> = (0..table[0].len())
        .map(|i| {
            table
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    println!();
    for r in &table {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
            }
        }
        println!("{}", line.trim_end());
    }
    println!();
}

#[cfg(test)]
mod tests {
    #[test]
    fn start_up_cell_gives_ratios_to_ps() {
        let cell = super::bench_cell("ps 200\nhidden 820\nwatch 300\n");
        assert_eq!(cell, "hidden 820 (4.1x), watch 300 (1.5x), ps -e 200");
        assert_eq!(super::bench_cell("garbage"), "-");
    }
}
