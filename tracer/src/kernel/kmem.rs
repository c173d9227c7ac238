//! Reads kernel memory through tracer's `kmem_iter` program
//! (`bpf_probe_read_kernel`), for the checks of the syscall table and the
//! syscall dispatcher's code. The reader holds its own descriptors of the
//! program and its request map, so the checks can use it on another thread
//! while the rest of tracer keeps the loaded object.
use std::{
    io::Read as _,
    os::fd::{AsFd as _, OwnedFd},
};

use anyhow::{bail, Context as _, Result};
use tracer_common::{KmemRequest, KMEM_CHUNK, KMEM_MAX_CHUNKS};

use super::bpf_sys;

/// Regions larger than this are refused: the checks read a table of a few
/// KiB and one function.
const MAX_READ: usize = 1 << 20;

pub struct KernelMemory {
    /// The iterator link; each read creates one iterator from it.
    link: OwnedFd,
    request: OwnedFd,
    /// How to recognise a `struct module`, when the kernel's BTF said.
    pub module_layout: Option<super::offsets::ModuleLayout>,
}

impl KernelMemory {
    /// Takes descriptors of the loaded `kmem_iter` program and its map.
    pub(super) fn new(
        ebpf: &mut aya::Ebpf,
        module_layout: Option<super::offsets::ModuleLayout>,
    ) -> Result<KernelMemory> {
        let prog: &aya::programs::Iter = ebpf
            .program("kmem_iter")
            .context("kmem_iter missing from tracer's eBPF object")?
            .try_into()?;
        let prog_fd = prog.fd()?.as_fd().try_clone_to_owned()?;
        let link = bpf_sys::iter_link(&prog_fd).context("attaching kmem_iter")?;
        let map = ebpf
            .map("KMEM_REQUEST")
            .context("KMEM_REQUEST missing from tracer's eBPF object")?;
        let request = match map {
            aya::maps::Map::Array(data) => data.fd().as_fd().try_clone_to_owned()?,
            _ => bail!("KMEM_REQUEST is not an array map"),
        };
        Ok(KernelMemory {
            link,
            request,
            module_layout,
        })
    }

    /// `len` bytes of kernel memory at `addr`. Fails, saying where, when any
    /// part cannot be read: a check must not judge zeroes.
    pub fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>> {
        if len > MAX_READ {
            bail!("{len} bytes at {addr:#x} is more than the checks read ({MAX_READ})");
        }
        let mut out = Vec::with_capacity(len + KMEM_CHUNK);
        while out.len() < len {
            let at = addr.wrapping_add(out.len() as u64);
            let chunks = ((len - out.len()).div_ceil(KMEM_CHUNK) as u64).min(KMEM_MAX_CHUNKS);
            let req = KmemRequest { addr: at, chunks };
            // SAFETY: KmemRequest is two u64s, no padding.
            let bytes: &[u8] = unsafe {
                std::slice::from_raw_parts(
                    &req as *const KmemRequest as *const u8,
                    std::mem::size_of::<KmemRequest>(),
                )
            };
            bpf_sys::map_update(&self.request, 0, bytes).context("setting the read request")?;
            let mut file = std::fs::File::from(bpf_sys::iter_create(&self.link)?);
            let mut raw = Vec::new();
            file.read_to_end(&mut raw).context("reading kmem_iter")?;
            let got = decode(&raw, at)?;
            if got.len() as u64 != chunks * KMEM_CHUNK as u64 {
                bail!(
                    "kmem_iter returned {} bytes for {} at {at:#x}",
                    got.len(),
                    chunks * KMEM_CHUNK as u64
                );
            }
            out.extend_from_slice(&got);
        }
        out.truncate(len);
        Ok(out)
    }
}

/// The data of the iterator's chunks, or the first chunk that failed.
fn decode(raw: &[u8], addr: u64) -> Result<Vec<u8>> {
    const RECORD: usize = 8 + KMEM_CHUNK;
    if !raw.len().is_multiple_of(RECORD) {
        bail!("kmem_iter wrote {} bytes, not whole chunks", raw.len());
    }
    let mut out = Vec::with_capacity(raw.len());
    for (i, rec) in raw.chunks_exact(RECORD).enumerate() {
        let status = i64::from_ne_bytes(rec[..8].try_into().expect("8 bytes"));
        if status != 0 {
            let at = addr.wrapping_add((i * KMEM_CHUNK) as u64);
            bail!(
                "the kernel refused to read {KMEM_CHUNK} bytes at {at:#x}: {}",
                std::io::Error::from_raw_os_error(-status as i32)
            );
        }
        out.extend_from_slice(&rec[8..]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_and_partial_chunks_are_errors() {
        let mut ok = vec![0u8; 8];
        ok.extend([7u8; KMEM_CHUNK]);
        assert_eq!(decode(&ok, 0x1000).unwrap(), vec![7u8; KMEM_CHUNK]);
        let mut bad = (-14i64).to_ne_bytes().to_vec();
        bad.extend([0u8; KMEM_CHUNK]);
        let mut both = ok.clone();
        both.extend(&bad);
        let e = decode(&both, 0x1000).unwrap_err().to_string();
        assert!(e.contains("0x1100"), "{e}");
        assert!(decode(&ok[..100], 0).is_err());
    }
}
