//! One QEMU guest of the matrix: a stock kernel, a busybox initramfs whose
//! /init loads the 9p and overlay modules from the unpacked image, mounts
//! the host's root read-only over virtio-9p with a tmpfs overlay on top,
//! mounts proc, sys, dev, bpffs and tracefs, and chroots into it to run a
//! shell script. Every host tool and binary is thus in the guest unchanged;
//! a second, writable 9p share (`<name>/out/`) brings the results back.
use std::fs;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use super::fetch::Kernel;

/// Where the results share is mounted in the guest.
pub const OUT: &str = "/run/matrix";

/// Modules /init loads (with what modules.dep says they need), unless built in.
const MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay"];

const BUSYBOX: &str = "/bin/busybox";

/// How QEMU runs the guest's CPUs, and why.
pub struct Accel {
    pub name: &'static str,
    args: Vec<&'static str>,
    pub reason: String,
}

/// KVM when it can boot a stock kernel, else TCG; `TRACER_MATRIX_ACCEL`
/// (`kvm` or `tcg`) overrides.
pub fn accelerator() -> Accel {
    let kvm = || Accel {
        name: "kvm",
        args: vec!["-accel", "kvm", "-cpu", "host"],
        reason: String::new(),
    };
    let tcg = |reason: String| Accel {
        name: "tcg",
        args: vec!["-accel", "tcg", "-cpu", "max"],
        reason,
    };
    match std::env::var("TRACER_MATRIX_ACCEL").as_deref() {
        Ok("kvm") => {
            return Accel {
                reason: "TRACER_MATRIX_ACCEL=kvm".into(),
                ..kvm()
            }
        }
        Ok("tcg") => return tcg("TRACER_MATRIX_ACCEL=tcg".into()),
        _ => {}
    }
    if fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return tcg("no usable /dev/kvm".into());
    }
    let modules = fs::read_to_string("/proc/modules").unwrap_or_default();
    if Path::new("/sys/module/kvm_pvm").exists()
        || modules.lines().any(|l| l.starts_with("kvm_pvm "))
    {
        return tcg(
            "/dev/kvm is PVM (kvm_pvm), which cannot boot a stock kernel (it hangs in the decompressor)"
                .into(),
        );
    }
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if !hw {
        return tcg("/dev/kvm exists but the CPU shows no vmx/svm".into());
    }
    Accel {
        reason: "/dev/kvm with vmx/svm".into(),
        ..kvm()
    }
}

/// How one boot went.
pub struct Outcome {
    /// Seconds from QEMU's start to the root filesystem being up.
    pub boot: Option<f64>,
    /// Seconds from QEMU's start to its exit (or to the kill at timeout).
    pub total: f64,
    /// `overlay` or `tmpfs`: how the guest made the host's root writable.
    pub root: Option<String>,
    /// The script ran to its end and the guest powered off.
    pub finished: bool,
    pub timed_out: bool,
    pub console: PathBuf,
    pub out: PathBuf,
    /// Guest lines that say something went wrong before the script ran.
    pub errors: Vec<String>,
    /// Under TCG, the console line of a guest kernel fault of the
    /// emulation's making (see [`EMULATION_FAULTS`]); the guest is stopped
    /// there, as it would only hang until the time limit.
    pub emulation_fault: Option<String>,
}

/// Boots `kernel` and runs `script` (sh, as root, in the chroot of the
/// host's root) in it, with `<dir>/out` mounted at [`OUT`]. `progress` gets
/// one short line per milestone.
pub fn run(
    kernel: &Kernel,
    accel: &Accel,
    script: &str,
    timeout: Duration,
    mut progress: impl FnMut(&str),
) -> Result<Outcome> {
    let out = kernel.dir.join("out");
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out)?;
    fs::write(out.join("run.sh"), script)?;
    let initramfs = initramfs(kernel)?;
    let console = kernel.dir.join("console.log");
    let mut log =
        fs::File::create(&console).with_context(|| format!("creating {}", console.display()))?;

    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(&accel.args)
        .args([
            // One vCPU: with two, TCG's emulation of code patched while
            // the other CPU runs it faulted or stalled guests in three of
            // four matrix runs.
            "-smp",
            "1",
            "-m",
            "2048",
            "-nic",
            "none",
            "-nographic",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(&initramfs)
        .arg("-append")
        .arg(cmdline())
        .arg("-virtfs")
        .arg("local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap")
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=matrixout,security_model=none",
            out.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = qemu.spawn().context("starting qemu-system-x86_64")?;
    let (tx, rx) = mpsc::channel::<String>();
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
                let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
                buf.clear();
            }
        });
    }
    drop(tx);

    let mut outcome = Outcome {
        boot: None,
        total: 0.0,
        root: None,
        finished: false,
        timed_out: false,
        console: console.clone(),
        out,
        errors: Vec::new(),
        emulation_fault: None,
    };
    let deadline = start + timeout;
    let mut step_start = start;
    loop {
        let now = Instant::now();
        if now >= deadline {
            outcome.timed_out = true;
            let _ = child.kill();
            progress(&format!(
                "timed out after {} s, guest killed",
                timeout.as_secs()
            ));
            break;
        }
        match rx.recv_timeout(deadline - now) {
            Ok(line) => {
                log.write_all(line.as_bytes())?;
                let line = line.trim_end();
                if let Some(fault) = (accel.name == "tcg")
                    .then(|| emulation_fault(line))
                    .flatten()
                {
                    progress(&format!(
                        "guest kernel fault under TCG: {fault}; guest killed"
                    ));
                    outcome.emulation_fault = Some(fault);
                    let _ = child.kill();
                    break;
                }
                // A marker may follow kernel output on the same line.
                let Some(at) = line.find("matrix: ") else {
                    continue;
                };
                let words: Vec<&str> = line[at + 8..].split_whitespace().collect();
                let secs = start.elapsed().as_secs_f64();
                match words.as_slice() {
                    ["root", mode, ..] => {
                        outcome.boot = Some(secs);
                        outcome.root = Some(mode.to_string());
                        progress(&format!("up after {secs:.1} s (root: 9p + {mode})"));
                    }
                    ["step", name] => {
                        step_start = Instant::now();
                        progress(&format!("{name} ..."));
                    }
                    ["done", name, rc] => progress(&format!(
                        "{name} exited {rc} after {:.1} s",
                        step_start.elapsed().as_secs_f64()
                    )),
                    ["end"] => outcome.finished = true,
                    ["error", ..] => {
                        let msg = line[at + 8..]
                            .trim_start_matches("error")
                            .trim()
                            .to_string();
                        progress(&format!("guest error: {msg}"));
                        outcome.errors.push(msg);
                    }
                    _ => {}
                }
            }
            // Both pipes closed: QEMU is gone.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    let status = child.wait()?;
    outcome.total = start.elapsed().as_secs_f64();
    log.flush()?;
    if !outcome.timed_out && !status.success() {
        outcome
            .errors
            .push(format!("qemu-system-x86_64 exited with {status}"));
    }
    Ok(outcome)
}

/// Faults of a guest kernel that come from TCG's emulation of
/// cross-modified code or of timers, not from what ran in the guest: the
/// int3 that text patching left in place after its handler stood down, and
/// CPUs that stall (seen with two vCPUs; the guests have one since).
const EMULATION_FAULTS: &[&str] = &[
    "Oops: int3",
    "BUG: soft lockup",
    "self-detected stall on CPU",
];

/// The console line of the first emulation fault, without its timestamp.
pub fn emulation_fault(console: &str) -> Option<String> {
    console
        .lines()
        .find(|l| EMULATION_FAULTS.iter().any(|f| l.contains(f)))
        .map(|l| match l.split_once("] ") {
            Some((stamp, rest)) if stamp.trim_start().starts_with('[') => rest.trim().to_string(),
            _ => l.trim().to_string(),
        })
}

/// The kernel command line, plus `TRACER_MATRIX_APPEND` when set.
fn cmdline() -> String {
    let mut line = String::from("console=ttyS0 panic=-1 loglevel=4");
    if let Ok(extra) = std::env::var("TRACER_MATRIX_APPEND") {
        line.push(' ');
        line.push_str(&extra);
    }
    line
}

/// The guest's /init.
fn init_script(modules: &[String]) -> String {
    let modules = modules.join(" ");
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() {{ echo "matrix: error $*"; sync; poweroff -f; echo o > /proc/sysrq-trigger; sleep 60; }}
for m in {modules}; do
    insmod /modules/$m.ko || echo "matrix: error insmod $m failed"
done
# -nic none: loopback only, which tests use.
ip link set lo up
mkdir -p /host /newroot /rw
opts=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o ro,$opts,cache=loose hostroot /host || fail "mounting the host's root over 9p"
mount -t tmpfs -o mode=755 tmpfs /rw
mkdir -p /rw/upper /rw/work
if mount -t overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work overlay /newroot; then
    mode=overlay
else
    echo "matrix: overlay on 9p refused, tmpfs on /tmp /var/tmp /root instead"
    mount --bind /host /newroot
    mode=tmpfs
    for d in var/tmp root; do mount -t tmpfs tmpfs /newroot/$d; done
fi
r=/newroot
mount -t tmpfs -o mode=1777 tmpfs $r/tmp
mount -t tmpfs -o mode=755 tmpfs $r/run
mount -t proc proc $r/proc
mount -t sysfs sysfs $r/sys
mount -t devtmpfs devtmpfs $r/dev
mkdir -p $r/dev/pts $r/dev/shm
mount -t devpts devpts $r/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $r/dev/shm
mount -t bpf bpf $r/sys/fs/bpf || echo "matrix: error mounting bpffs"
mount -t tracefs tracefs $r/sys/kernel/tracing || echo "matrix: error mounting tracefs"
mount -t debugfs debugfs $r/sys/kernel/debug
mount -t cgroup2 cgroup2 $r/sys/fs/cgroup
mkdir -p $r{out}
mount -t 9p -o $opts matrixout $r{out} || fail "mounting the results share"
echo "matrix: root $mode $(cut -d' ' -f1 /proc/uptime)"
chroot $r /bin/sh {out}/run.sh
echo $? > $r{out}/run.rc
sync
umount $r{out}
echo "matrix: end"
poweroff -f
echo o > /proc/sysrq-trigger
sleep 60
"#,
        out = OUT,
    )
}

/// Builds `<dir>/initramfs.cpio`: busybox, the modules /init loads
/// (decompressed), and /init.
fn initramfs(kernel: &Kernel) -> Result<PathBuf> {
    let modules = module_order(&kernel.modules)?;
    let mut cpio = Cpio::default();
    for d in ["bin", "dev", "proc", "sys", "modules"] {
        cpio.dir(d);
    }
    cpio.char_dev("dev/console", 5, 1);
    let busybox = fs::read(BUSYBOX)
        .with_context(|| format!("reading {BUSYBOX} (Debian package busybox-static)"))?;
    cpio.file("bin/busybox", 0o755, &busybox);
    cpio.symlink("bin/sh", "busybox");
    let mut names = Vec::new();
    for (name, path) in &modules {
        let data = if path.extension().is_some_and(|e| e == "xz") {
            let out = Command::new("xz")
                .arg("-dc")
                .arg(path)
                .output()
                .context("starting xz (Debian package xz-utils)")?;
            if !out.status.success() {
                bail!("xz -dc {} failed", path.display());
            }
            out.stdout
        } else if path.extension().is_some_and(|e| e == "ko") {
            fs::read(path)?
        } else {
            bail!("{}: unknown module compression", path.display());
        };
        cpio.file(&format!("modules/{name}.ko"), 0o644, &data);
        names.push(name.clone());
    }
    cpio.file("init", 0o755, init_script(&names).as_bytes());
    let file = kernel.dir.join("initramfs.cpio");
    fs::write(&file, cpio.finish())?;
    Ok(file)
}

/// The modules of [`MODULES`] that are not built in, with their
/// dependencies, each after what it needs: (name, file).
fn module_order(modules_dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let dep = fs::read_to_string(modules_dir.join("modules.dep"))
        .with_context(|| format!("reading {}/modules.dep", modules_dir.display()))?;
    let builtin = fs::read_to_string(modules_dir.join("modules.builtin")).unwrap_or_default();
    let name_of = |path: &str| {
        let file = path.rsplit('/').next().unwrap_or(path);
        file.split(".ko").next().unwrap_or(file).replace('-', "_")
    };
    let deps: Vec<(String, String, Vec<String>)> = dep
        .lines()
        .filter_map(|l| {
            let (module, needs) = l.split_once(':')?;
            Some((
                name_of(module),
                module.to_string(),
                needs.split_whitespace().map(name_of).collect(),
            ))
        })
        .collect();
    let mut order = Vec::new();
    fn visit(
        name: &str,
        deps: &[(String, String, Vec<String>)],
        builtin: &str,
        dir: &Path,
        order: &mut Vec<(String, PathBuf)>,
    ) -> Result<()> {
        if order.iter().any(|(n, _)| n == name) {
            return Ok(());
        }
        let Some((_, path, needs)) = deps.iter().find(|(n, _, _)| n == name) else {
            let built_in = builtin.lines().any(|l| {
                let file = l.rsplit('/').next().unwrap_or(l);
                file.trim_end_matches(".ko").replace('-', "_") == name
            });
            if built_in {
                return Ok(());
            }
            bail!("module {name} is neither in modules.dep nor built in");
        };
        for n in needs {
            visit(n, deps, builtin, dir, order)?;
        }
        order.push((name.to_string(), dir.join(path)));
        Ok(())
    }
    for m in MODULES {
        visit(m, &deps, &builtin, modules_dir, &mut order)?;
    }
    Ok(order)
}

/// A newc cpio archive in memory (what the kernel unpacks as initramfs);
/// written here so that /dev/console needs no mknod on the host.
#[derive(Default)]
struct Cpio {
    data: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), body: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            if mode & 0o170000 == 0o040000 { 2 } else { 1 },
            0,
            body.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.data.extend_from_slice(b"070701");
        for f in fields {
            self.data.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.data.extend_from_slice(name.as_bytes());
        self.data.push(0);
        self.pad();
        self.data.extend_from_slice(body);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.data.len().is_multiple_of(4) {
            self.data.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }

    fn file(&mut self, name: &str, perm: u32, body: &[u8]) {
        self.entry(name, 0o100000 | perm, (0, 0), body);
    }

    fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120777, (0, 0), target.as_bytes());
    }

    fn char_dev(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020600, (major, minor), &[]);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.data
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_text_patching_int3_is_an_emulation_fault_and_a_tracer_error_is_not() {
        let oops = "matrix: done status 0\n\
                    [    9.799970] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\n\
                    [    9.800251] CPU: 0 UID: 0 PID: 384 Comm: tracer\n";
        assert_eq!(
            super::emulation_fault(oops).as_deref(),
            Some("Oops: int3: 0000 [#1] PREEMPT SMP NOPTI")
        );
        let null = "[   12.1] BUG: kernel NULL pointer dereference, address: 0000000000000008\n\
                    [   12.2] Oops: 0000 [#1] PREEMPT SMP NOPTI\n";
        assert_eq!(super::emulation_fault(null), None);
    }
}
