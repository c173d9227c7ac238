//! `/proc/self/mountinfo`: where a file system is mounted in tracer's
//! own mount namespace, and mounting one where only tracer sees it.
use std::io;

/// Mount points of every mount of `fs_type` (`bpf`, `tracefs`) in
/// mountinfo text.
pub fn mount_points_of_type(mountinfo: &str, fs_type: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            let mount_point = fields.get(4)?;
            (*fields.get(dash + 1)? == fs_type).then(|| unescape(mount_point))
        })
        .collect()
}

/// Mount points of `fs_type` in tracer's own mount namespace.
pub fn own_mount_points_of_type(fs_type: &str) -> io::Result<Vec<String>> {
    let bytes = crate::proc::read_file("/proc/self/mountinfo")?;
    Ok(mount_points_of_type(
        &String::from_utf8_lossy(&bytes),
        fs_type,
    ))
}

/// Undoes mountinfo's octal escapes (`\040` for a space and so on).
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// In the calling thread only: a private mount namespace (every mount
/// made private, so nothing propagates to the host) with `fs_type` mounted
/// on `dir`. The thread must only read files and end: its file system
/// view is no longer the process's.
pub fn mount_privately(fs_type: &str, dir: &str) -> io::Result<()> {
    use rustix::{
        mount::{mount, mount_change, MountFlags, MountPropagationFlags},
        thread::{unshare_unsafe, UnshareFlags},
    };
    // SAFETY: FILES is not unshared, so fds stay valid across threads; the
    // caller's thread only reads files and ends.
    unsafe { unshare_unsafe(UnshareFlags::NEWNS | UnshareFlags::FS)? };
    mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )?;
    mount(fs_type, dir, fs_type, MountFlags::empty(), None)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_are_found_by_type() {
        let text = "\
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw
90 22 0:50 / /proc/4242 rw,relatime shared:7 - tmpfs none rw
92 22 0:51 / /proc/4444/cmdline rw - tmpfs my\\040src rw
94 22 0:53 / /tmp/b\\040f rw - bpf bpf rw
";
        assert_eq!(mount_points_of_type(text, "bpf"), ["/tmp/b f"]);
        assert_eq!(mount_points_of_type(text, "tmpfs").len(), 3);
        assert!(mount_points_of_type(text, "tracefs").is_empty());
    }

    #[test]
    fn octal_escapes_are_decoded() {
        assert_eq!(unescape(r"/a\040b\011c\134d\x"), "/a b\tc\\d\\x");
    }
}
