//! Decoding the records the kernel programs write.
use crate::model::HostStr;
use tracer_common::{
    ConnectEvent, DatagramEvent, EventKind, ExecEvent, ExitEvent, ForkEvent, MountEvent,
    RenameEvent, TaskRecord,
};

/// One record from the ring buffer.
pub enum KernelEvent {
    Exec(Box<ExecEvent>),
    Fork(ForkEvent),
    Exit(ExitEvent),
    Connect(ConnectEvent),
    Mount(Box<MountEvent>),
    Rename(RenameEvent),
    Datagram(DatagramEvent),
}

/// Copies a `#[repr(C)]` record out of a byte slice, if it is long enough.
fn read_record<T: Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: length checked; every record type is plain data valid for any
    // bit pattern; read_unaligned copes with any alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const T) })
}

/// Decodes one ring-buffer record; `None` for a truncated or unknown one.
pub fn decode(bytes: &[u8]) -> Option<KernelEvent> {
    let kind = u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?);
    Some(match EventKind::from_u32(kind)? {
        EventKind::Exec => KernelEvent::Exec(Box::new(read_record(bytes)?)),
        EventKind::Fork => KernelEvent::Fork(read_record(bytes)?),
        EventKind::Exit => KernelEvent::Exit(read_record(bytes)?),
        EventKind::Connect => KernelEvent::Connect(read_record(bytes)?),
        EventKind::Mount => KernelEvent::Mount(Box::new(read_record(bytes)?)),
        EventKind::Rename => KernelEvent::Rename(read_record(bytes)?),
        EventKind::Datagram => KernelEvent::Datagram(read_record(bytes)?),
    })
}

/// Splits the task iterator's output into records.
pub fn decode_task_records(bytes: &[u8]) -> Vec<TaskRecord> {
    read_records(bytes)
}

/// Splits an iterator's output into fixed-size records (a trailing partial
/// record is dropped).
pub fn read_records<T: Copy>(bytes: &[u8]) -> Vec<T> {
    bytes
        .chunks_exact(std::mem::size_of::<T>())
        .filter_map(read_record)
        .collect()
}

/// A kernel string field, up to its NUL, as the bytes it is.
pub fn text(bytes: &[u8]) -> HostStr {
    HostStr::from_bytes(tracer_common::until_nul(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_or_unknown_records_are_rejected() {
        assert!(decode(&[]).is_none());
        assert!(decode(&9u32.to_ne_bytes()).is_none());
        assert!(decode(&77u32.to_ne_bytes()).is_none());
        // An exec kind with a fork-sized body is truncated, not misread.
        let mut short = vec![0u8; std::mem::size_of::<ForkEvent>()];
        short[..4].copy_from_slice(&(EventKind::Exec as u32).to_ne_bytes());
        assert!(decode(&short).is_none());
    }

    #[test]
    fn task_records_split_on_record_size() {
        let n = std::mem::size_of::<TaskRecord>();
        let mut bytes = vec![0u8; n * 2 + 3];
        bytes[0] = 7;
        bytes[n] = 9;
        let recs = decode_task_records(&bytes);
        assert_eq!(recs.len(), 2);
        assert_eq!((recs[0].tgid, recs[1].tgid), (7, 9));
    }

    #[test]
    fn text_stops_at_nul() {
        assert_eq!(text(b"bash\0\0garbage"), "bash");
        assert_eq!(text(b"sixteen_bytes_xx"), "sixteen_bytes_xx");
        assert_eq!(&*text(b"m\xff\0").to_bytes(), b"m\xff");
    }
}
