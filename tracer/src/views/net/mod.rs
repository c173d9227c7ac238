//! Views of the host's sockets, each from a different layer, to be diffed
//! like the process views (see `crate::detect`), and to attribute every
//! connection to the process that holds it.
//!
//! | view | source                                                        | module    |
//! |------|---------------------------------------------------------------|-----------|
//! | K    | the kernel: eBPF `iter/task_file` (sockets with their owners), `iter/tcp`, `iter/udp` | `kernel`  |
//! | P    | `/proc/net/{tcp,tcp6,udp,udp6,raw,raw6,packet}` per network namespace, raw system calls | `procnet` |
//! | N    | sock_diag over netlink, as `ss` asks                          | `diag`    |
//! | F    | `/proc/PID/fd` socket links, as `ss -p`, `netstat -p`, `lsof` attribute | `fds`     |
//! | L    | `/proc/net/*` read through libc, as `netstat` reads it         | `libc`    |
//! | S    | the `ss` and `netstat` programs                               | `tools`   |
pub mod diag;
pub mod fds;
pub mod kernel;
pub mod libc;
pub mod procnet;
pub mod tools;
