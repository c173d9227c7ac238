//! F: which process holds which socket, from the `socket:[INODE]` links
//! under `/proc/PID/fd`, as `ss -p`, `netstat -p` and `lsof` attribute
//! them. Listed with getdents64 and read with readlink, never libc.
use std::collections::{BTreeSet, HashMap};

use crate::{model::socket::SocketOwner, proc};

/// Socket inode -> the processes and descriptors that hold it.
#[derive(Clone, Debug, Default)]
pub struct FdView {
    pub owners: HashMap<u64, Vec<SocketOwner>>,
    /// The processes whose fd directory was read.
    pub read: BTreeSet<u32>,
    /// The processes it was asked about (the /proc listing).
    pub listed: BTreeSet<u32>,
}

impl FdView {
    /// Reads the fd links of the processes in `to_read`; `listed` is the
    /// /proc listing. A process that exits meanwhile, or denies access, is
    /// left out of `read`.
    pub fn take(to_read: &BTreeSet<u32>, listed: &BTreeSet<u32>) -> FdView {
        let mut view = FdView {
            listed: listed.clone(),
            ..Default::default()
        };
        for &pid in to_read {
            if let Some(sockets) = socket_fds(pid) {
                view.read.insert(pid);
                for (fd, inode) in sockets {
                    view.owners
                        .entry(inode)
                        .or_default()
                        .push(SocketOwner { pid, fd });
                }
            }
        }
        view
    }

    /// Whether the fd links show `inode`, for the processes read.
    pub fn holds(&self, inode: u64) -> bool {
        self.owners.contains_key(&inode)
    }

    /// Whether this view misses a socket the kernel says `owners` hold: no
    /// fd link shows it, although an owner's fd directory was read or an
    /// owner is missing from the /proc listing altogether. (Owners that
    /// exited before their directory was read say nothing.)
    pub fn misses(&self, inode: u64, owners: &[SocketOwner]) -> bool {
        !self.holds(inode)
            && owners
                .iter()
                .any(|o| self.read.contains(&o.pid) || !self.listed.contains(&o.pid))
    }
}

/// (fd, socket inode) of one process's socket descriptors; `None` when its
/// fd directory cannot be listed.
pub fn socket_fds(pid: u32) -> Option<Vec<(u32, u64)>> {
    let dir = format!("/proc/{pid}/fd");
    let fds = proc::list_numeric_dir(&dir).ok()?;
    Some(
        fds.into_iter()
            .filter_map(|fd| {
                let link = proc::read_link(&format!("{dir}/{fd}")).ok()?;
                Some((fd, socket_inode(&link)?))
            })
            .collect(),
    )
}

/// The inode in a `socket:[INODE]` link target.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn only_socket_links_carry_an_inode() {
        assert_eq!(socket_inode("socket:[12345]"), Some(12345));
        for other in [
            "pipe:[12]",
            "/dev/null",
            "socket:[]",
            "socket:[1",
            "anon_inode:[eventfd]",
        ] {
            assert_eq!(socket_inode(other), None, "{other}");
        }
    }

    #[test]
    fn own_socket_is_attributed_to_this_process() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let me = std::process::id();
        let fd = listener.as_raw_fd() as u32;
        let me_only = BTreeSet::from([me]);
        let view = FdView::take(&me_only, &me_only);
        assert!(view.read.contains(&me));
        let (_, inode) = socket_fds(me)
            .unwrap()
            .into_iter()
            .find(|(f, _)| *f == fd)
            .expect("the listener's descriptor");
        assert!(view.owners[&inode].contains(&SocketOwner { pid: me, fd }));
    }
}
