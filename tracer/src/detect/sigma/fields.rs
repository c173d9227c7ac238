//! The Sigma field names tracer fills, per log source category, and the
//! event they are read from: one reusable set of byte buffers.
use std::io::Write;

use crate::model::HostStr;

/// The `logsource` categories tracer evaluates (all with `product: linux`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Category {
    ProcessCreation,
    NetworkConnection,
    FileEvent,
}

impl Category {
    pub const ALL: [Category; 3] = [
        Category::ProcessCreation,
        Category::NetworkConnection,
        Category::FileEvent,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Category::ProcessCreation => "process_creation",
            Category::NetworkConnection => "network_connection",
            Category::FileEvent => "file_event",
        }
    }

    pub fn from_name(name: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.name() == name)
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// The fields an event of this category carries.
    pub fn has(self, field: Field) -> bool {
        use Field::*;
        match self {
            Category::ProcessCreation => matches!(
                field,
                Image
                    | CommandLine
                    | ParentImage
                    | ParentCommandLine
                    | User
                    | LogonId
                    | CurrentDirectory
                    | ProcessId
                    | ParentProcessId
            ),
            Category::NetworkConnection => matches!(
                field,
                Image
                    | CommandLine
                    | User
                    | LogonId
                    | ProcessId
                    | DestinationIp
                    | DestinationPort
                    | DestinationHostname
                    | SourceIp
                    | SourcePort
                    | Initiated
                    | Protocol
            ),
            Category::FileEvent => {
                matches!(
                    field,
                    Image | CommandLine | User | LogonId | ProcessId | TargetFilename
                )
            }
        }
    }
}

/// A field tracer can fill. Every other field name is absent: a condition
/// on it is false (never true), and `exists: false` on it is true.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    Image,
    CommandLine,
    ParentImage,
    ParentCommandLine,
    User,
    LogonId,
    CurrentDirectory,
    ProcessId,
    ParentProcessId,
    DestinationIp,
    DestinationPort,
    DestinationHostname,
    SourceIp,
    SourcePort,
    Initiated,
    Protocol,
    TargetFilename,
}

pub const FIELD_COUNT: usize = 17;

impl Field {
    pub const ALL: [Field; FIELD_COUNT] = [
        Field::Image,
        Field::CommandLine,
        Field::ParentImage,
        Field::ParentCommandLine,
        Field::User,
        Field::LogonId,
        Field::CurrentDirectory,
        Field::ProcessId,
        Field::ParentProcessId,
        Field::DestinationIp,
        Field::DestinationPort,
        Field::DestinationHostname,
        Field::SourceIp,
        Field::SourcePort,
        Field::Initiated,
        Field::Protocol,
        Field::TargetFilename,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::Image => "Image",
            Field::CommandLine => "CommandLine",
            Field::ParentImage => "ParentImage",
            Field::ParentCommandLine => "ParentCommandLine",
            Field::User => "User",
            Field::LogonId => "LogonId",
            Field::CurrentDirectory => "CurrentDirectory",
            Field::ProcessId => "ProcessId",
            Field::ParentProcessId => "ParentProcessId",
            Field::DestinationIp => "DestinationIp",
            Field::DestinationPort => "DestinationPort",
            Field::DestinationHostname => "DestinationHostname",
            Field::SourceIp => "SourceIp",
            Field::SourcePort => "SourcePort",
            Field::Initiated => "Initiated",
            Field::Protocol => "Protocol",
            Field::TargetFilename => "TargetFilename",
        }
    }

    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// One event's field values as bytes. Kept and refilled for every event,
/// so filling it allocates nothing once its buffers have grown.
#[derive(Default)]
pub struct SigmaEvent {
    values: [Vec<u8>; FIELD_COUNT],
    present: u32,
}

impl SigmaEvent {
    pub fn new() -> SigmaEvent {
        SigmaEvent::default()
    }

    pub fn clear(&mut self) {
        self.present = 0;
    }

    fn slot(&mut self, field: Field) -> &mut Vec<u8> {
        self.present |= 1 << field.index();
        let v = &mut self.values[field.index()];
        v.clear();
        v
    }

    pub fn set(&mut self, field: Field, bytes: &[u8]) {
        self.slot(field).extend_from_slice(bytes);
    }

    pub fn set_host(&mut self, field: Field, value: &HostStr) {
        value.extend_bytes_into(self.slot(field));
    }

    /// A command line: the arguments joined by spaces, as Sigma's
    /// `CommandLine` is.
    pub fn set_args(&mut self, field: Field, args: &[HostStr]) {
        let out = self.slot(field);
        for (i, a) in args.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            a.extend_bytes_into(out);
        }
    }

    pub fn set_num(&mut self, field: Field, n: u64) {
        let _ = write!(self.slot(field), "{n}");
    }

    pub fn set_display(&mut self, field: Field, value: impl std::fmt::Display) {
        let _ = write!(self.slot(field), "{value}");
    }

    pub fn get(&self, field: Field) -> Option<&[u8]> {
        (self.present & (1 << field.index()) != 0).then(|| self.values[field.index()].as_slice())
    }
}

/// The process fields of an event (`Image`, `CommandLine`, `User`,
/// `LogonId`, `ProcessId`, and the parent's), as watch and hidden both
/// fill them.
pub fn fill_process(
    ev: &mut SigmaEvent,
    p: &crate::model::Process,
    parent: Option<&crate::model::Process>,
    user: Option<&HostStr>,
) {
    if let Some(exe) = &p.exe {
        ev.set_host(Field::Image, exe);
    }
    if !p.cmdline.is_empty() {
        ev.set_args(Field::CommandLine, &p.cmdline);
    }
    if let Some(user) = user {
        ev.set_host(Field::User, user);
    }
    ev.set_num(Field::LogonId, u64::from(p.uid));
    ev.set_num(Field::ProcessId, u64::from(p.pid));
    ev.set_num(Field::ParentProcessId, u64::from(p.ppid));
    if let Some(parent) = parent {
        if let Some(exe) = &parent.exe {
            ev.set_host(Field::ParentImage, exe);
        }
        if !parent.cmdline.is_empty() {
            ev.set_args(Field::ParentCommandLine, &parent.cmdline);
        }
    }
}

/// `/proc/PID/cwd`, read only when a rule asks for `CurrentDirectory`.
pub fn fill_cwd(ev: &mut SigmaEvent, pid: u32) {
    use std::os::unix::ffi::OsStrExt;
    if let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) {
        ev.set(Field::CurrentDirectory, cwd.as_os_str().as_bytes());
    }
}
