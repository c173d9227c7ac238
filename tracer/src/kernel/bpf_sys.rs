//! The few `bpf(2)` commands the BPF inventory needs, straight from the
//! kernel (no /proc): walk program and link ids, read their info (with the
//! translated instructions, to find helper calls), open pins, and ask what a
//! process's perf-event fd is attached to. aya 0.14 exposes neither the
//! instructions nor a link's attach point, hence these raw calls. Field
//! offsets are those of the stable UAPI `union bpf_attr` and info structs.
use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

const BPF_MAP_UPDATE_ELEM: u32 = 2;
const BPF_OBJ_GET: u32 = 7;
const BPF_PROG_GET_NEXT_ID: u32 = 11;
const BPF_PROG_GET_FD_BY_ID: u32 = 13;
const BPF_OBJ_GET_INFO_BY_FD: u32 = 15;
const BPF_TASK_FD_QUERY: u32 = 20;
const BPF_LINK_GET_FD_BY_ID: u32 = 30;
const BPF_LINK_GET_NEXT_ID: u32 = 31;
const BPF_LINK_CREATE: u32 = 28;
const BPF_ITER_CREATE: u32 = 33;
/// `enum bpf_attach_type`'s `BPF_TRACE_ITER`.
const BPF_TRACE_ITER: u32 = 28;

/// `union bpf_attr`, as bytes; every command here fits in 64.
#[repr(C, align(8))]
struct Attr([u8; 64]);

impl Attr {
    fn new() -> Self {
        Attr([0; 64])
    }
    fn u32(mut self, at: usize, v: u32) -> Self {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(mut self, at: usize, v: u64) -> Self {
        self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn get_u32(&self, at: usize) -> u32 {
        u32::from_ne_bytes(self.0[at..at + 4].try_into().unwrap())
    }
}

fn bpf(cmd: u32, attr: &mut Attr) -> io::Result<i64> {
    // SAFETY: attr is a valid, writable bpf_attr of the size passed; every
    // pointer placed in it points at a live buffer of the length given.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut Attr,
            std::mem::size_of::<Attr>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn fd_from(r: i64) -> OwnedFd {
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(r as i32) }
}

fn ids(cmd: u32) -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let mut attr = Attr::new().u32(0, start);
        match bpf(cmd, &mut attr) {
            Ok(_) => {
                start = attr.get_u32(4);
                out.push(start);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            Err(e) => return Err(e),
        }
    }
}

/// Every loaded program's id.
/// Sets `key` of an array or hash map to `value`.
pub fn map_update(map: &OwnedFd, key: u32, value: &[u8]) -> io::Result<()> {
    let mut attr = Attr::new()
        .u32(0, map.as_raw_fd() as u32)
        .u64(8, &key as *const u32 as u64)
        .u64(16, value.as_ptr() as u64);
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

/// Attaches an iterator program (no iterator arguments) and returns its link.
pub fn iter_link(prog: &OwnedFd) -> io::Result<OwnedFd> {
    let mut attr = Attr::new()
        .u32(0, prog.as_raw_fd() as u32)
        .u32(8, BPF_TRACE_ITER);
    bpf(BPF_LINK_CREATE, &mut attr).map(fd_from)
}

/// Creates one iterator from an iterator link: reading it runs the program.
pub fn iter_create(link: &OwnedFd) -> io::Result<OwnedFd> {
    let mut attr = Attr::new().u32(0, link.as_raw_fd() as u32);
    bpf(BPF_ITER_CREATE, &mut attr).map(fd_from)
}

pub fn program_ids() -> io::Result<Vec<u32>> {
    ids(BPF_PROG_GET_NEXT_ID)
}

/// Every link's id.
pub fn link_ids() -> io::Result<Vec<u32>> {
    ids(BPF_LINK_GET_NEXT_ID)
}

pub fn program_fd(id: u32) -> io::Result<OwnedFd> {
    bpf(BPF_PROG_GET_FD_BY_ID, &mut Attr::new().u32(0, id)).map(fd_from)
}

pub fn link_fd(id: u32) -> io::Result<OwnedFd> {
    bpf(BPF_LINK_GET_FD_BY_ID, &mut Attr::new().u32(0, id)).map(fd_from)
}

/// Opens a pinned object.
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    bpf(BPF_OBJ_GET, &mut Attr::new().u64(0, c.as_ptr() as u64)).map(fd_from)
}

fn info_by_fd(fd: &OwnedFd, info: &mut [u8]) -> io::Result<()> {
    let mut attr = Attr::new()
        .u32(0, fd.as_raw_fd() as u32)
        .u32(4, info.len() as u32)
        .u64(8, info.as_mut_ptr() as u64);
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).map(|_| ())
}

fn rd_u32(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
}

fn rd_u64(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().unwrap())
}

/// What `bpf_prog_info` says about one program.
#[derive(Clone, Debug, Default)]
pub struct ProgInfo {
    pub id: u32,
    pub prog_type: u32,
    pub name: Vec<u8>,
    pub tag: [u8; 8],
    /// Boot-time ns when it was loaded.
    pub load_time_ns: u64,
    pub uid: u32,
    pub map_ids: Vec<u32>,
    /// The translated instructions (8 bytes each); empty when the kernel
    /// withholds them.
    pub xlated: Vec<u8>,
    /// BTF id of the kernel function a tracing program attaches to.
    pub attach_btf_id: u32,
}

/// `bpf_prog_info` up to `attach_btf_id` (UAPI since 5.x).
const PROG_INFO_LEN: usize = 232;

pub fn prog_info(fd: &OwnedFd) -> io::Result<ProgInfo> {
    let mut info = vec![0u8; PROG_INFO_LEN];
    info_by_fd(fd, &mut info)?;
    let xlated_len = rd_u32(&info, 20) as usize;
    let nr_maps = rd_u32(&info, 52) as usize;
    // Second call with buffers sized from the first.
    let mut xlated = vec![0u8; xlated_len];
    let mut maps = vec![0u32; nr_maps];
    let mut again = vec![0u8; PROG_INFO_LEN];
    again[20..24].copy_from_slice(&(xlated_len as u32).to_ne_bytes());
    again[32..40].copy_from_slice(&(xlated.as_mut_ptr() as u64).to_ne_bytes());
    again[52..56].copy_from_slice(&(nr_maps as u32).to_ne_bytes());
    again[56..64].copy_from_slice(&(maps.as_mut_ptr() as u64).to_ne_bytes());
    info_by_fd(fd, &mut again)?;
    xlated.truncate(rd_u32(&again, 20) as usize);
    maps.truncate(rd_u32(&again, 52) as usize);
    let name = tracer_common::until_nul(&again[64..80]).to_vec();
    Ok(ProgInfo {
        id: rd_u32(&again, 4),
        prog_type: rd_u32(&again, 0),
        name,
        tag: again[8..16].try_into().unwrap(),
        load_time_ns: rd_u64(&again, 40),
        uid: rd_u32(&again, 48),
        map_ids: maps,
        xlated,
        attach_btf_id: rd_u32(&again, 224),
    })
}

/// What `bpf_link_info` says about one link.
#[derive(Clone, Debug, Default)]
pub struct LinkInfo {
    pub id: u32,
    pub prog_id: u32,
    pub link_type: u32,
    /// Where it attaches, as far as the kernel says (tracepoint name,
    /// kernel function, cgroup id, interface index...).
    pub target: String,
}

pub fn link_info(fd: &OwnedFd) -> io::Result<LinkInfo> {
    let mut name = vec![0u8; 256];
    let mut info = vec![0u8; 96];
    // raw_tracepoint.tp_name, iter.target_name and perf_event's
    // tracepoint/kprobe name all take a user buffer; which one the kernel
    // fills depends on the type, so ask for the type first.
    info_by_fd(fd, &mut info)?;
    let link_type = rd_u32(&info, 0);
    let mut again = vec![0u8; 96];
    let name_at = match link_type {
        1 | 4 => Some((16, 24)),
        7 => Some((24, 32)),
        _ => None,
    };
    if let Some((ptr, len)) = name_at {
        again[ptr..ptr + 8].copy_from_slice(&(name.as_mut_ptr() as u64).to_ne_bytes());
        again[len..len + 4].copy_from_slice(&(name.len() as u32).to_ne_bytes());
        info_by_fd(fd, &mut again)?;
        info = again;
    }
    let text = || String::from_utf8_lossy(tracer_common::until_nul(&name)).into_owned();
    let target = match link_type {
        1 => format!("raw_tracepoint/{}", text()),
        2 => format!(
            "tracing attach_type {} btf_id {}",
            rd_u32(&info, 16),
            rd_u32(&info, 24)
        ),
        3 => format!("cgroup id {}", rd_u64(&info, 16)),
        4 => format!("iter/{}", text()),
        5 => format!("netns inode {}", rd_u32(&info, 16)),
        6 => format!("xdp ifindex {}", rd_u32(&info, 16)),
        7 => match rd_u32(&info, 16) {
            3 | 4 => format!("kprobe/{}", text()),
            5 => format!("tracepoint/{}", text()),
            1 | 2 => format!("uprobe/{}", text()),
            // 0: the kernel fills no perf-event link info (before 6.6).
            0 => "perf_event link (this kernel does not say which event: Linux before 6.6)"
                .to_string(),
            t => format!("perf_event type {t}"),
        },
        11 => format!("tcx ifindex {}", rd_u32(&info, 16)),
        13 => format!("netkit ifindex {}", rd_u32(&info, 16)),
        t => format!("link type {t}"),
    };
    Ok(LinkInfo {
        id: rd_u32(&info, 4),
        prog_id: rd_u32(&info, 8),
        link_type,
        target,
    })
}

/// What a process's perf-event (or raw tracepoint) fd has attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdAttach {
    pub prog_id: u32,
    /// `tracepoint/NAME`, `raw_tracepoint/NAME`, `kprobe/FUNC`...
    pub target: String,
}

/// `BPF_TASK_FD_QUERY`: what `fd` of process `pid` has attached.
pub fn task_fd_query(pid: u32, fd: u32) -> io::Result<FdAttach> {
    let mut buf = vec![0u8; 256];
    let mut attr = Attr::new()
        .u32(0, pid)
        .u32(4, fd)
        .u32(12, buf.len() as u32)
        .u64(16, buf.as_mut_ptr() as u64);
    bpf(BPF_TASK_FD_QUERY, &mut attr)?;
    let name = String::from_utf8_lossy(tracer_common::until_nul(&buf)).into_owned();
    let kind = match attr.get_u32(28) {
        0 => "raw_tracepoint",
        1 => "tracepoint",
        2 => "kprobe",
        3 => "kretprobe",
        4 => "uprobe",
        5 => "uretprobe",
        _ => "perf_event",
    };
    Ok(FdAttach {
        prog_id: attr.get_u32(24),
        target: format!("{kind}/{name}"),
    })
}

/// A BPF program type's name, as bpftool prints it.
pub fn prog_type_name(t: u32) -> &'static str {
    const NAMES: &[&str] = &[
        "unspec",
        "socket_filter",
        "kprobe",
        "sched_cls",
        "sched_act",
        "tracepoint",
        "xdp",
        "perf_event",
        "cgroup_skb",
        "cgroup_sock",
        "lwt_in",
        "lwt_out",
        "lwt_xmit",
        "sock_ops",
        "sk_skb",
        "cgroup_device",
        "sk_msg",
        "raw_tracepoint",
        "cgroup_sock_addr",
        "lwt_seg6local",
        "lirc_mode2",
        "sk_reuseport",
        "flow_dissector",
        "cgroup_sysctl",
        "raw_tracepoint_writable",
        "cgroup_sockopt",
        "tracing",
        "struct_ops",
        "ext",
        "lsm",
        "sk_lookup",
        "syscall",
        "netfilter",
    ];
    NAMES.get(t as usize).copied().unwrap_or("unknown")
}

/// Helper-call targets in translated instructions, as offsets from
/// `__bpf_call_base` (what the kernel leaves in `imm` of a helper call).
pub fn helper_call_offsets(xlated: &[u8]) -> Vec<i32> {
    const BPF_JMP_CALL: u8 = 0x85;
    let mut out: Vec<i32> = xlated
        .chunks_exact(8)
        // src_reg 0: a helper (1 is a BPF-to-BPF call, 2 a kfunc).
        .filter(|i| i[0] == BPF_JMP_CALL && (i[1] >> 4) == 0)
        .map(|i| i32::from_ne_bytes(i[4..8].try_into().unwrap()))
        .filter(|&imm| imm != 0)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_calls_are_read_from_call_instructions_only() {
        let insn = |code: u8, regs: u8, imm: i32| {
            let mut b = vec![code, regs, 0, 0];
            b.extend_from_slice(&imm.to_ne_bytes());
            b
        };
        let mut prog = Vec::new();
        prog.extend(insn(0x85, 0x00, -4096)); // helper call
        prog.extend(insn(0x85, 0x10, 12)); // bpf-to-bpf call
        prog.extend(insn(0xb7, 0x00, 999)); // mov r0, 999
        prog.extend(insn(0x85, 0x00, -4096)); // same helper again
        prog.extend(insn(0x85, 0x00, 0)); // withheld (imm zeroed)
        prog.extend(insn(0x95, 0x00, 0)); // exit
        assert_eq!(helper_call_offsets(&prog), vec![-4096]);
    }

    #[test]
    fn program_types_have_bpftool_names() {
        assert_eq!(prog_type_name(5), "tracepoint");
        assert_eq!(prog_type_name(26), "tracing");
        assert_eq!(prog_type_name(9999), "unknown");
    }
}
