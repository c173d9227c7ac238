//! Quarantine: a copy of each member's program, taken while the set is
//! stopped and before it is killed, for analysis later.
//!
//! The copy is read through `/proc/PID/exe`, which still opens the file
//! after it was deleted. Each distinct program is copied once into the
//! quarantine directory, named by its SHA-256, mode 0400 (never
//! executable), with `<sha256>.json` next to it: the original path, and the
//! PID, command line, user and start time of the process that ran it.
//!
//! The directory is often under /tmp, where the intruder can plant links:
//! it is opened through [`SafeDir`] (no symbolic link on the way, root's
//! own, closed to others; created 0700 when missing), every file in it is
//! created exclusively and never through a link, and the copy is read back
//! and hashed again before it is named.
//! System binaries (under /usr, /bin, /sbin, /lib, e.g. a watchdog's
//! /bin/sh) are not copied: they are the distribution's, not the intruder's.
use std::{
    collections::HashMap,
    fs::{File, Permissions},
    io::{Read, Write},
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::Path,
};

use anyhow::{Context, Result};
use schemars::JsonSchema;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::program;
use crate::{
    model::{HostStr, Process, USER_HZ},
    safe_fs::{self, SafeDir},
    users::Users,
};

/// What happened to one member's program.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct QuarantineOutcome {
    pub pid: u32,
    pub original_path: String,
    #[serde(flatten)]
    pub result: Quarantined,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Quarantined {
    /// Copied to `file`.
    Copied {
        sha256: String,
        file: String,
    },
    /// Same program as another member's, already copied.
    SameAs {
        sha256: String,
        pid: u32,
    },
    /// A system binary: left alone.
    SystemBinary,
    Failed {
        error: String,
    },
}

/// The JSON record written next to each copy.
#[derive(Serialize)]
struct Record<'a> {
    sha256: &'a str,
    original_path: &'a str,
    size: u64,
    pid: u32,
    cmdline: &'a [HostStr],
    uid: u32,
    user: HostStr,
    /// Start time in clock ticks since boot (the process identity).
    start_ticks: u64,
    /// Start time as seconds since the Unix epoch.
    started_unix: u64,
}

/// Opens the quarantine directory safely (see the module comment),
/// creating it 0700 if needed; checked before anything is stopped.
pub fn prepare_dir(dir: &Path) -> Result<SafeDir> {
    SafeDir::own(dir).with_context(|| {
        format!(
            "cannot use {} as the quarantine directory (choose a new directory, e.g. under /root)",
            dir.display()
        )
    })
}

/// Copies the programs of `members` (stopped, identity checked) into `dir`,
/// made by [`prepare_dir`]. A copy that fails is an outcome, not an error:
/// the kill goes on.
pub fn quarantine(dir: &SafeDir, members: &[&Process], users: &Users) -> Vec<QuarantineOutcome> {
    // The same program (dev, inode) is hashed and copied once.
    let mut done: HashMap<(u64, u64), (String, u32)> = HashMap::new();
    let mut out = Vec::new();
    for p in members {
        let original_path = program::exe_path(p).unwrap_or("?").to_string();
        let result = if program::runs_system_binary(p) {
            Quarantined::SystemBinary
        } else {
            copy_one(dir, p, &original_path, users, &mut done).unwrap_or_else(|e| {
                Quarantined::Failed {
                    error: format!("{e:#}"),
                }
            })
        };
        out.push(QuarantineOutcome {
            pid: p.pid,
            original_path,
            result,
        });
    }
    out
}

/// Every member's outcome when the quarantine directory itself was refused.
pub fn refused(members: &[&Process], why: &str) -> Vec<QuarantineOutcome> {
    members
        .iter()
        .map(|p| QuarantineOutcome {
            pid: p.pid,
            original_path: program::exe_path(p).unwrap_or("?").to_string(),
            result: if program::runs_system_binary(p) {
                Quarantined::SystemBinary
            } else {
                Quarantined::Failed {
                    error: format!("not copied: {why}"),
                }
            },
        })
        .collect()
}

fn copy_one(
    dir: &SafeDir,
    p: &Process,
    original_path: &str,
    users: &Users,
    done: &mut HashMap<(u64, u64), (String, u32)>,
) -> Result<Quarantined> {
    let exe = format!("/proc/{}/exe", p.pid);
    let mut src = File::open(&exe).with_context(|| format!("cannot open {exe}"))?;
    let meta = src.metadata()?;
    if let Some((sha256, pid)) = done.get(&(meta.dev(), meta.ino())) {
        return Ok(Quarantined::SameAs {
            sha256: sha256.clone(),
            pid: *pid,
        });
    }
    // Copy under a temporary name while hashing, check what landed on
    // disk, then name it by its hash.
    let partial = format!(".partial-{}", p.pid);
    // Ours, from a run that died: the directory is tracer's own.
    let _ = dir.remove(&partial);
    let dst = dir.create_new(&partial, 0o600)?;
    let copied = copy_hashing(&mut src, &dst).and_then(|(hasher, size)| {
        let sha = hasher.finalize();
        let on_disk = safe_fs::sha256_of(&mut safe_fs::reopen_read(&dst)?)?;
        if on_disk[..] != sha[..] {
            anyhow::bail!("the copy on disk does not hash like the program read");
        }
        dst.set_permissions(Permissions::from_mode(0o400))?;
        Ok((hex(&sha), size))
    });
    drop(dst);
    let (sha256, size) = match copied {
        Ok(done) => done,
        Err(e) => {
            // Leave no half copy behind in the evidence directory.
            let _ = dir.remove(&partial);
            return Err(e);
        }
    };
    dir.rename(&partial, &sha256)?;
    write_record(dir, &sha256, original_path, size, p, users.name(p.uid))?;
    done.insert((meta.dev(), meta.ino()), (sha256.clone(), p.pid));
    Ok(Quarantined::Copied {
        file: dir.join(&sha256).display().to_string(),
        sha256,
    })
}

/// Copies `src` into `dst` while hashing it; returns the hash state and size.
fn copy_hashing(src: &mut File, mut dst: &File) -> Result<(Sha256, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n])?;
        size += n as u64;
    }
    dst.sync_all()?;
    Ok((hasher, size))
}

fn write_record(
    dir: &SafeDir,
    sha256: &str,
    original_path: &str,
    size: u64,
    p: &Process,
    user: HostStr,
) -> Result<()> {
    let record = Record {
        sha256,
        original_path,
        size,
        pid: p.pid,
        cmdline: &p.cmdline,
        uid: p.uid,
        user,
        start_ticks: p.start_ticks,
        started_unix: started_unix(p.start_ticks),
    };
    let mut bytes = serde_json::to_vec_pretty(&record)?;
    bytes.push(b'\n');
    dir.replace(&format!("{sha256}.json"), &bytes, 0o400)?;
    Ok(())
}

/// Boot-relative start ticks as Unix time: now minus the time since start.
fn started_unix(start_ticks: u64) -> u64 {
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let uptime_s = crate::proc::boottime_ns() / 1_000_000_000;
    now_unix.saturating_sub(uptime_s.saturating_sub(start_ticks / USER_HZ))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn a_dropped_program_is_copied_once_by_hash_and_read_only() {
        let dir = std::env::temp_dir().join(format!("tracer-quarantine-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let dropped = dir.join("m");
        fs::copy("/bin/sleep", &dropped).unwrap();
        let mut child = std::process::Command::new(&dropped)
            .arg("30")
            .spawn()
            .unwrap();
        // Until it has exec'd, the child is still a copy of this test; and
        // mid-exec its exe may be new while its arguments are not yet.
        let p = (0..500)
            .find_map(|_| {
                let p = crate::proc::read_process(child.id()).filter(|p| {
                    p.exe.as_deref() == dropped.to_str()
                        && p.cmdline.get(1).map(|a| a.as_str()) == Some("30")
                });
                if p.is_none() {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                p
            })
            .expect("the child never exec'd");
        fs::remove_file(&dropped).unwrap(); // read through /proc/PID/exe all the same
                                            // Two members running the same program: one copy.
        let q = prepare_dir(&dir.join("q")).unwrap();
        let outcomes = quarantine(&q, &[&p, &p], &Users::load());
        let _ = child.kill();
        let _ = child.wait();
        let Quarantined::Copied { sha256, file } = &outcomes[0].result else {
            panic!("{outcomes:?}")
        };
        assert_eq!(outcomes[0].original_path, dropped.to_str().unwrap());
        assert!(matches!(&outcomes[1].result, Quarantined::SameAs { pid, .. } if *pid == p.pid));
        let original = fs::read("/bin/sleep").unwrap();
        assert_eq!(*sha256, hex(&Sha256::digest(&original)));
        let meta = fs::metadata(file).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o400);
        assert_eq!(
            fs::metadata(dir.join("q")).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let record: serde_json::Value =
            serde_json::from_slice(&fs::read(format!("{file}.json")).unwrap()).unwrap();
        assert_eq!(record["pid"], p.pid);
        assert_eq!(record["sha256"], sha256.as_str());
        assert_eq!(record["size"], original.len() as u64);
        assert_eq!(record["cmdline"][1], "30");
        assert!(record["started_unix"].as_u64().unwrap() > 1_600_000_000);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn system_binaries_are_left_alone() {
        let dir =
            std::env::temp_dir().join(format!("tracer-quarantine-sys-{}", std::process::id()));
        let sh = Process {
            pid: 1,
            exe: Some("/usr/bin/dash".into()),
            ..Default::default()
        };
        let q = prepare_dir(&dir).unwrap();
        let outcomes = quarantine(&q, &[&sh], &Users::default());
        assert!(matches!(outcomes[0].result, Quarantined::SystemBinary));
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        fs::remove_dir(&dir).unwrap();
    }
}
