//! Every file tracer writes as root goes through here. The host may belong
//! to the attacker: any name tracer writes to may have been planted as a
//! symbolic link to `/etc/shadow`, any directory may be theirs. So:
//! - a directory is opened once, component by component, refusing every
//!   symbolic link on the way (`openat2` with `RESOLVE_NO_SYMLINKS`), and
//!   everything after that is done relative to that descriptor, so no name
//!   can be swapped under tracer between a check and a write;
//! - a directory tracer keeps evidence or state in must be tracer's own
//!   (owned by the effective user, not writable by group or others); a
//!   missing one is created 0700;
//! - a file is created with `O_CREAT | O_EXCL | O_NOFOLLOW` (it cannot exist
//!   yet, let alone be a link) and replaced by renaming over the old name,
//!   which replaces the name and never writes through it.
use std::{
    ffi::OsStr,
    fs::File,
    io::{self, Read as _, Seek as _, Write as _},
    os::{
        fd::{AsFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Component, Path, PathBuf},
};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, ResolveFlags, CWD};

/// A refusal on safety grounds (a link, another user's file or directory,
/// one others can write), as opposed to an I/O error.
#[derive(Debug)]
pub struct Unsafe(String);

impl std::fmt::Display for Unsafe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unsafe {}

fn refused(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, Unsafe(what))
}

/// Whether an error (anywhere in its chain) is a safety refusal.
pub fn is_unsafe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.is::<Unsafe>())
            || c.is::<Unsafe>()
    })
}

/// A directory opened without following links.
#[derive(Debug)]
pub struct SafeDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl SafeDir {
    /// Opens `path` as tracer's own directory, creating what is missing
    /// (mode 0700). Fails, saying why in one line, when any component is a
    /// symbolic link or `..`, or when the directory belongs to another user
    /// or can be written by group or others.
    pub fn own(path: &Path) -> io::Result<SafeDir> {
        let dir = Self::walk(path, true)?;
        dir.check_own()?;
        Ok(dir)
    }

    /// Opens an existing directory without following links, whoever owns
    /// it (the directory of an `--output` file the user named).
    pub fn existing(path: &Path) -> io::Result<SafeDir> {
        Self::walk(path, false)
    }

    fn walk(path: &Path, create: bool) -> io::Result<SafeDir> {
        let say = |what: &str| refused(format!("{}: {what}", path.display()));
        let mut fd = match path.is_absolute() {
            true => open_dir(CWD, Path::new("/"))?,
            false => open_dir(CWD, Path::new("."))?,
        };
        for part in path.components() {
            let name = match part {
                Component::RootDir | Component::CurDir => continue,
                Component::Normal(n) => n,
                Component::ParentDir | Component::Prefix(_) => {
                    return Err(say("`..` is not allowed in this path: give the real path"))
                }
            };
            fd = match open_dir(&fd, Path::new(name)) {
                Ok(next) => next,
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    match rfs::mkdirat(&fd, name, Mode::from_raw_mode(0o700)) {
                        Ok(()) => {}
                        // Another tracer made it meanwhile: it is checked below.
                        Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    open_dir(&fd, Path::new(name))?
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
                    let link = rfs::statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
                        rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::Symlink
                    });
                    return Err(say(&if link {
                        format!(
                            "{} is a symbolic link: give the real path (tracer never writes through links)",
                            name.to_string_lossy()
                        )
                    } else {
                        format!("{} is not a directory", name.to_string_lossy())
                    }));
                }
                Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
            };
        }
        Ok(SafeDir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The directory is the effective user's and closed to others.
    fn check_own(&self) -> io::Result<()> {
        let st = rfs::fstat(&self.fd)?;
        let euid = rustix::process::geteuid().as_raw();
        if st.st_uid != euid {
            return Err(refused(format!(
                "{} is owned by uid {}, not by uid {euid}: use a directory of your own",
                self.path.display(),
                st.st_uid
            )));
        }
        if st.st_mode & 0o022 != 0 {
            return Err(refused(format!(
                "{} is writable by other users (mode {:o}): use a directory only you can write",
                self.path.display(),
                st.st_mode & 0o7777
            )));
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `name` inside this directory, for messages.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Creates `name`, which must not exist (not even as a link), for writing.
    pub fn create_new(&self, name: &str, mode: u32) -> io::Result<File> {
        let fd = rfs::openat(
            &self.fd,
            one_name(name)?,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )
        .map_err(|e| self.error(name, e.into()))?;
        Ok(File::from(fd))
    }

    /// Opens `name` for appending, creating it if missing; never through a
    /// link, and only a regular file of the effective user.
    pub fn append(&self, name: &str, mode: u32) -> io::Result<File> {
        let fd = rfs::openat(
            &self.fd,
            one_name(name)?,
            OFlags::WRONLY | OFlags::APPEND | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )
        .map_err(|e| self.error(name, e.into()))?;
        let st = rfs::fstat(&fd)?;
        let euid = rustix::process::geteuid().as_raw();
        if rfs::FileType::from_raw_mode(st.st_mode) != rfs::FileType::RegularFile {
            return Err(refused(format!(
                "{} is not a regular file",
                self.join(name).display()
            )));
        }
        if st.st_uid != euid {
            return Err(refused(format!(
                "{} belongs to uid {}, not to uid {euid}: tracer does not append to another user's file",
                self.join(name).display(),
                st.st_uid
            )));
        }
        Ok(File::from(fd))
    }

    /// Opens an existing `name` for reading, never through a link.
    pub fn open_read(&self, name: &str) -> io::Result<File> {
        let fd = rfs::openat(
            &self.fd,
            one_name(name)?,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        )
        .map_err(io::Error::from)?;
        Ok(File::from(fd))
    }

    /// Renames `from` to `to` within this directory (replacing `to`, even
    /// a link, as a name: nothing is written through it).
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        rfs::renameat(&self.fd, one_name(from)?, &self.fd, one_name(to)?)
            .map_err(|e| self.error(to, e.into()))
    }

    /// Removes the name `name` (a link is removed, not followed).
    pub fn remove(&self, name: &str) -> io::Result<()> {
        rfs::unlinkat(&self.fd, one_name(name)?, AtFlags::empty()).map_err(io::Error::from)
    }

    /// Whether `name` exists, as itself (a link counts as existing).
    pub fn exists(&self, name: &str) -> bool {
        one_name(name)
            .and_then(|n| Ok(rfs::statat(&self.fd, n, AtFlags::SYMLINK_NOFOLLOW)?))
            .is_ok()
    }

    /// Writes `bytes` as the whole new content of `name`: a temporary file
    /// created exclusively, synced, then renamed over the old name.
    pub fn replace(&self, name: &str, bytes: &[u8], mode: u32) -> io::Result<()> {
        let tmp = format!(".{name}.{}.tmp", std::process::id());
        // A temporary file of ours left by a crash; as a name, never followed.
        let _ = self.remove(&tmp);
        let mut f = self.create_new(&tmp, mode)?;
        let written = f.write_all(bytes).and_then(|()| f.sync_all());
        drop(f);
        if let Err(e) = written.and_then(|()| self.rename(&tmp, name)) {
            let _ = self.remove(&tmp);
            return Err(e);
        }
        Ok(())
    }

    fn error(&self, name: &str, e: io::Error) -> io::Error {
        let at = self.join(name).display().to_string();
        match e.raw_os_error() {
            Some(libc::EEXIST) => refused(format!(
                "{at}: already exists (a planted file or link?): not overwritten"
            )),
            Some(libc::ELOOP) => refused(format!("{at}: is a symbolic link: not followed")),
            _ => io::Error::new(e.kind(), format!("{at}: {e}")),
        }
    }
}

/// A single path component: no `/`, not `.` or `..`, not empty.
fn one_name(name: &str) -> io::Result<&OsStr> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a plain file name"),
        ));
    }
    Ok(OsStr::from_bytes(name.as_bytes()))
}

fn open_dir(at: impl rustix::fd::AsFd, name: &Path) -> io::Result<OwnedFd> {
    rfs::openat2(
        at,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(io::Error::from)
}

/// Reads a file back from its start and returns its SHA-256: what is on
/// disk, not what tracer meant to write.
pub fn sha256_of(file: &mut File) -> io::Result<[u8; 32]> {
    use sha2::{Digest, Sha256};
    file.rewind()?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finalize().into());
        }
        hasher.update(&buf[..n]);
    }
}

/// The descriptor's file, re-opened for reading through `/proc/self/fd`
/// (a file created write-only cannot be read back otherwise).
pub fn reopen_read(file: &File) -> io::Result<File> {
    use std::os::fd::AsRawFd as _;
    let _ = file.as_fd();
    File::open(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{symlink, PermissionsExt as _};

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tracer-safefs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_missing_directory_is_created_private_and_files_are_exclusive() {
        let base = scratch("create");
        let dir = SafeDir::own(&base.join("a/b")).unwrap();
        let mode = std::fs::metadata(base.join("a/b"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        dir.create_new("x", 0o600)
            .unwrap()
            .write_all(b"one")
            .unwrap();
        let again = dir.create_new("x", 0o600).unwrap_err();
        assert!(again.to_string().contains("already exists"), "{again}");
        dir.replace("x", b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(base.join("a/b/x")).unwrap(), b"two");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn links_are_never_followed() {
        let base = scratch("links");
        let victim = base.join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::fs::create_dir(base.join("real")).unwrap();
        std::fs::set_permissions(base.join("real"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        symlink(&victim, base.join("real/planted")).unwrap();
        symlink(base.join("real"), base.join("linkdir")).unwrap();
        let e = SafeDir::own(&base.join("linkdir")).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let e = SafeDir::own(&base.join("linkdir/sub")).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let dir = SafeDir::own(&base.join("real")).unwrap();
        assert!(dir.create_new("planted", 0o600).is_err());
        assert!(dir.append("planted", 0o600).is_err());
        // Replacing renames over the link: the link goes, its target stays.
        dir.replace("planted", b"new", 0o600).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert!(!std::fs::symlink_metadata(base.join("real/planted"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(SafeDir::own(&base.join("real/../real")).is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_directory_others_can_write_is_refused() {
        let base = scratch("open");
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = SafeDir::own(&base).unwrap_err();
        assert!(e.to_string().contains("writable by other users"), "{e}");
        assert!(SafeDir::existing(&base).is_ok());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn names_are_single_components() {
        for bad in ["", ".", "..", "a/b", "../x"] {
            assert!(one_name(bad).is_err(), "{bad:?}");
        }
    }
}
