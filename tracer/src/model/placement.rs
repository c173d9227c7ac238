//! Where a process lives: its namespaces, its cgroup, and the container
//! they make up. Parsing only; the kernel's task record and /proc fill it
//! (`views::placement`).
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::HostStr;

/// A process's namespaces (inode numbers, as `/proc/PID/ns/*` shows them:
/// `pid:[4026531836]`), 0 where the source had no answer. Kept small: the
/// table holds one per process, exited ones for two minutes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Namespaces {
    pub pid: u32,
    pub mnt: u32,
    pub net: u32,
    pub uts: u32,
    pub user: u32,
    /// Its PID inside its own PID namespace (the last `NSpid` of
    /// /proc/PID/status); 0 when unknown.
    pub ns_pid: u32,
    /// Which of them differ from the host's: `pid`, `mnt`, `net`, `uts`,
    /// `user`. Absent for a process that shares them all.
    #[serde(default, skip_serializing_if = "Separate::is_empty")]
    pub separate: Separate,
}

/// The namespace kinds, in the order `Separate` names them.
const KINDS: [&str; 5] = ["pid", "mnt", "net", "uts", "user"];

/// A set of namespace kinds (a bit each, in `KINDS` order), written as a
/// list of their names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Separate(u8);

impl Separate {
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    pub fn contains(&self, kind: &str) -> bool {
        KINDS
            .iter()
            .position(|k| *k == kind)
            .is_some_and(|i| self.0 & (1 << i) != 0)
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        KINDS
            .iter()
            .enumerate()
            .filter(|(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, k)| *k)
    }
}

impl Serialize for Separate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.names())
    }
}

impl<'de> Deserialize<'de> for Separate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let names: Vec<String> = Vec::deserialize(d)?;
        Ok(Separate(
            KINDS
                .iter()
                .enumerate()
                .filter(|(_, k)| names.iter().any(|n| n == *k))
                .fold(0, |bits, (i, _)| bits | (1 << i)),
        ))
    }
}

impl JsonSchema for Separate {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Separate".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <Vec<String>>::json_schema(generator)
    }
}

impl Namespaces {
    /// Each namespace with its name, in `KINDS` order.
    pub fn named(&self) -> [(&'static str, u32); 5] {
        [
            ("pid", self.pid),
            ("mnt", self.mnt),
            ("net", self.net),
            ("uts", self.uts),
            ("user", self.user),
        ]
    }

    /// Notes which namespaces differ from `host`'s (unknown ones never do).
    pub fn compare_with(&mut self, host: &Namespaces) {
        self.separate = Separate(
            self.named()
                .iter()
                .zip(host.named())
                .enumerate()
                .filter(|(_, ((_, mine), (_, theirs)))| {
                    *mine != 0 && *theirs != 0 && mine != theirs
                })
                .fold(0, |bits, (i, _)| bits | (1 << i)),
        );
    }

    /// In a PID namespace of its own.
    pub fn separate_pid(&self) -> bool {
        self.separate.contains("pid")
    }
}

/// A container engine whose cgroup or process chain names a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Runtime {
    Docker,
    Containerd,
    CriO,
    Podman,
    Lxc,
    SystemdNspawn,
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Podman => "podman",
            Runtime::Lxc => "lxc",
            Runtime::SystemdNspawn => "systemd-nspawn",
        }
    }
}

/// The container a process runs in, as its cgroup path (or the runtime
/// process above it) names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Container {
    pub runtime: Runtime,
    /// The container's id (64 hex digits) or, for LXC and nspawn, its name.
    pub id: HostStr,
    /// The Kubernetes pod's uid, when the cgroup is a pod's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<HostStr>,
    /// What named it: `cgroup` or `runtime process`.
    pub source: String,
}

/// Hex digits of a container id shown in human output (`docker ps` shows 12).
pub const SHORT_ID: usize = 12;

impl Container {
    /// The id as the runtime's own tools print it: 12 hex digits, or the name.
    pub fn short_id(&self) -> String {
        let id = self.id.as_str();
        if is_hex_id(id) {
            id[..SHORT_ID].to_string()
        } else {
            id.chars().take(40).collect()
        }
    }

    /// One token for human output: `docker:3f2a9c1b7d4e`.
    pub fn token(&self) -> String {
        format!("{}:{}", self.runtime.name(), self.short_id())
    }

    /// The command that stops the whole container through its runtime,
    /// so the runtime's own restart policy does not bring it back half-made.
    pub fn stop_command(&self) -> String {
        let id = self.short_id();
        match self.runtime {
            Runtime::Docker => format!("docker stop {id}"),
            Runtime::Containerd | Runtime::CriO => format!("crictl stop {id}"),
            Runtime::Podman => format!("podman stop {id}"),
            Runtime::Lxc => format!("lxc-stop -n {id}"),
            Runtime::SystemdNspawn => format!("machinectl terminate {id}"),
        }
    }
}

/// Short text for human output: the container (`docker:3f2a9c1b7d4e`),
/// else the namespaces a process does not share with the host
/// (`ns:pid,mnt`), then its PID in its own PID namespace (`nspid=1`);
/// `None` on the host.
pub fn token(p: &super::Process) -> Option<String> {
    token_of(p.namespaces.as_ref(), p.container.as_deref())
}

/// [`token`] from the parts.
pub fn token_of(ns: Option<&Namespaces>, container: Option<&Container>) -> Option<String> {
    let ns = ns.filter(|ns| !ns.separate.is_empty());
    let mut token = match (container, ns) {
        (Some(c), _) => c.token(),
        (None, Some(ns)) => format!("ns:{}", ns.separate.names().collect::<Vec<_>>().join(",")),
        (None, None) => return None,
    };
    if let Some(ns) = ns.filter(|ns| ns.separate_pid() && ns.ns_pid != 0) {
        token.push_str(&format!(" nspid={}", ns.ns_pid));
    }
    Some(token)
}

/// Whether `p` is in the container `wanted` names: its id or a prefix of
/// it (`docker ps` shows 12 digits), or its name; a bare `ns:N` matches a
/// PID namespace's inode.
pub fn in_container(p: &super::Process, wanted: &str) -> bool {
    if let Some(inode) = wanted.strip_prefix("ns:") {
        return p
            .namespaces
            .as_ref()
            .is_some_and(|ns| inode.parse() == Ok(ns.pid));
    }
    p.container.as_deref().is_some_and(|c| {
        let id = c.id.as_str();
        (wanted.len() >= 4 && id.starts_with(wanted))
            || id == wanted
            || c.pod.as_ref().is_some_and(|pod| pod.as_str() == wanted)
    })
}

/// A 64-digit lowercase hex id, as every OCI runtime makes them.
fn is_hex_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// The container a `/proc/PID/cgroup` file names, if any: every line is
/// looked at (cgroup v1 controllers and the v2 line), the first that
/// matches a runtime's naming wins. The file is the attacker's: any bytes.
pub fn container_of_cgroup(cgroup_file: &[u8]) -> Option<Container> {
    cgroup_file
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            // `ID:CONTROLLERS:PATH`; the path may itself hold colons.
            let mut parts = line.splitn(3, |&b| b == b':');
            let (_, _, path) = (parts.next()?, parts.next()?, parts.next()?);
            Some(path)
        })
        .find_map(|path| container_of_path(&HostStr::from_bytes(path)))
}

/// What one cgroup's path says: the path, and the container it names.
pub type CgroupFacts = (
    Option<std::sync::Arc<HostStr>>,
    Option<std::sync::Arc<Container>>,
);

/// The cgroup v2 path of a `/proc/PID/cgroup` file (its `0::` line).
pub fn v2_path(cgroup_file: &[u8]) -> Option<HostStr> {
    cgroup_file
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"0::"))
        .map(HostStr::from_bytes)
}

/// The container one cgroup path names, by the runtimes' conventions:
/// - docker: `/docker/ID`, `/system.slice/docker-ID.scope`
/// - containerd and Kubernetes: `cri-containerd-ID.scope`,
///   `/kubepods/.../podUID/ID`, `kubepods-...-podUID.slice/...`
/// - cri-o: `crio-ID.scope`, `/crio/ID`
/// - podman: `libpod-ID.scope`, `/libpod_parent/libpod-ID`
/// - LXC: `/lxc/NAME`, `/lxc.payload.NAME`, `/lxc.payload/NAME`
/// - systemd-nspawn: `/machine.slice/systemd-nspawn@NAME.service`,
///   `machine-NAME.scope`
pub fn container_of_path(path: &HostStr) -> Option<Container> {
    let parts: Vec<&str> = path.as_str().split('/').filter(|p| !p.is_empty()).collect();
    let pod = parts
        .iter()
        .find_map(|p| pod_uid(p))
        .map(|uid| HostStr::from_text(&uid));
    let found = |runtime, id: &str| Container {
        runtime,
        id: HostStr::from_text(id),
        pod: pod.clone(),
        source: "cgroup".into(),
    };
    // Deepest first: a container's own directory sits below its parents'.
    for (i, part) in parts.iter().enumerate().rev() {
        let scoped = |prefix: &str| {
            part.strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix(".scope"))
                .filter(|id| is_hex_id(id))
        };
        if let Some(id) = scoped("docker-") {
            return Some(found(Runtime::Docker, id));
        }
        if let Some(id) = scoped("cri-containerd-") {
            return Some(found(Runtime::Containerd, id));
        }
        if let Some(id) = scoped("crio-") {
            return Some(found(Runtime::CriO, id));
        }
        if let Some(id) =
            scoped("libpod-").or_else(|| part.strip_prefix("libpod-").filter(|id| is_hex_id(id)))
        {
            return Some(found(Runtime::Podman, id));
        }
        let parent = i.checked_sub(1).map(|p| parts[p]);
        if is_hex_id(part) {
            match parent {
                Some("docker") => return Some(found(Runtime::Docker, part)),
                Some("crio") => return Some(found(Runtime::CriO, part)),
                Some(p) if pod_uid(p).is_some() => return Some(found(Runtime::Containerd, part)),
                _ => {}
            }
        }
        if let Some(name) = part
            .strip_prefix("systemd-nspawn@")
            .and_then(|r| r.strip_suffix(".service"))
            .or_else(|| {
                part.strip_prefix("machine-")
                    .and_then(|r| r.strip_suffix(".scope"))
            })
            .filter(|n| !n.is_empty())
        {
            return Some(found(Runtime::SystemdNspawn, &unescape_unit(name)));
        }
    }
    // LXC names its container by the directory right below `lxc` (or in
    // `lxc.payload.NAME`), with the container's own cgroups underneath.
    for (i, part) in parts.iter().enumerate() {
        if let Some(name) = part.strip_prefix("lxc.payload.").filter(|n| !n.is_empty()) {
            return Some(found(Runtime::Lxc, name));
        }
        if matches!(*part, "lxc" | "lxc.payload") {
            if let Some(name) = parts.get(i + 1) {
                return Some(found(Runtime::Lxc, name));
            }
        }
    }
    None
}

/// The container a runtime process above a process names (the process
/// chain, for a container whose cgroup does not say): a containerd shim
/// (`-namespace moby` is Docker's), conmon (podman's or cri-o's), LXC's
/// monitor or systemd-nspawn. `ancestors` nearest first.
pub fn container_of_chain<'p>(
    ancestors: impl IntoIterator<Item = &'p super::Process>,
) -> Option<Container> {
    ancestors.into_iter().find_map(|p| {
        let args: Vec<&str> = p.cmdline.iter().map(HostStr::as_str).collect();
        let value = |flags: &[&str]| {
            args.windows(2)
                .find(|w| flags.contains(&w[0]))
                .map(|w| w[1].to_string())
                .or_else(|| {
                    args.iter().find_map(|a| {
                        flags.iter().find_map(|f| {
                            a.strip_prefix(f)
                                .and_then(|r| r.strip_prefix('='))
                                .map(String::from)
                        })
                    })
                })
        };
        let program = args
            .first()
            .map(|a| a.rsplit('/').next().unwrap_or(a))
            .unwrap_or(p.comm.as_str());
        let (runtime, id) = if program.starts_with("containerd-shim") {
            let runtime = match value(&["-namespace", "--namespace"]).as_deref() {
                Some("moby") => Runtime::Docker,
                _ => Runtime::Containerd,
            };
            (runtime, value(&["-id", "--id"])?)
        } else if program == "conmon" {
            let podman = args
                .iter()
                .any(|a| a.contains("podman") || a.contains("libpod"));
            let runtime = if podman {
                Runtime::Podman
            } else {
                Runtime::CriO
            };
            (runtime, value(&["-c", "--cid"])?)
        } else if program.starts_with("lxc-start") || program == "[lxc monitor]" {
            (Runtime::Lxc, value(&["-n", "--name"])?)
        } else if program == "systemd-nspawn" {
            (Runtime::SystemdNspawn, value(&["-M", "--machine"])?)
        } else {
            return None;
        };
        Some(Container {
            runtime,
            id: HostStr::from_text(&id),
            pod: None,
            source: format!("runtime process {} ({})", p.pid, program),
        })
    })
}

/// `podUID` (or the systemd driver's `kubepods-besteffort-podUID.slice`,
/// with underscores for the uid's dashes) → the pod's uid.
fn pod_uid(part: &str) -> Option<String> {
    let part = part.strip_suffix(".slice").unwrap_or(part);
    let at = part.rfind("pod")?;
    if !part.starts_with("kubepods") && at != 0 {
        return None;
    }
    let uid = &part[at + 3..];
    let ok = uid.len() >= 32
        && uid
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_');
    ok.then(|| uid.replace('_', "-"))
}

/// systemd escapes `-` in unit names as `\x2d`.
fn unescape_unit(name: &str) -> String {
    name.replace("\\x2d", "-")
}

/// The inode of a `/proc/PID/ns/*` link target (`pid:[4026531836]`).
pub fn ns_inode(link: &str) -> Option<u32> {
    link.split_once(":[")?.1.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2a9c1b7d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8";

    fn of(path: &str) -> Option<(Runtime, String, Option<String>)> {
        container_of_path(&HostStr::from_text(path)).map(|c| {
            (
                c.runtime,
                c.id.as_str().to_string(),
                c.pod.map(|p| p.as_str().to_string()),
            )
        })
    }

    #[test]
    fn each_runtimes_cgroup_naming_is_recognised() {
        let docker = Some((Runtime::Docker, ID.to_string(), None));
        assert_eq!(of(&format!("/system.slice/docker-{ID}.scope")), docker);
        assert_eq!(of(&format!("/docker/{ID}")), docker);
        assert_eq!(of(&format!("/docker/{ID}/init.scope")), docker);
        assert_eq!(
            of(&format!("/system.slice/crio-{ID}.scope")).unwrap().0,
            Runtime::CriO
        );
        assert_eq!(
            of(&format!("/machine.slice/libpod-{ID}.scope/container"))
                .unwrap()
                .0,
            Runtime::Podman
        );
        assert_eq!(
            of("/lxc.payload.web1/system.slice").map(|c| c.1),
            Some("web1".into())
        );
        assert_eq!(
            of("/lxc/web2").map(|c| (c.0, c.1)),
            Some((Runtime::Lxc, "web2".into()))
        );
        assert_eq!(
            of("/machine.slice/systemd-nspawn@deb\\x2dtest.service/payload").map(|c| (c.0, c.1)),
            Some((Runtime::SystemdNspawn, "deb-test".into()))
        );
    }

    #[test]
    fn kubernetes_pods_name_the_container_and_the_pod() {
        let pod = "7b1c3a52-9d8e-4f11-a2b3-c4d5e6f70809";
        let cgroupfs = format!("/kubepods/burstable/pod{pod}/{ID}");
        assert_eq!(
            of(&cgroupfs),
            Some((Runtime::Containerd, ID.into(), Some(pod.into())))
        );
        let systemd = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{ID}.scope",
            pod.replace('-', "_")
        );
        assert_eq!(
            of(&systemd),
            Some((Runtime::Containerd, ID.into(), Some(pod.into())))
        );
    }

    #[test]
    fn plain_services_and_lookalikes_are_not_containers() {
        for path in [
            "/",
            "/system.slice/ssh.service",
            "/user.slice/user-1000.slice/session-3.scope",
            "/system.slice/docker.service",
            "/system.slice/docker-short.scope",
            "/docker/notanid",
            &format!("/system.slice/docker-{}.scope", ID.to_uppercase()),
        ] {
            assert_eq!(of(path), None, "{path}");
        }
    }

    #[test]
    fn the_cgroup_file_is_read_line_by_line_and_survives_any_bytes() {
        let mut file =
            format!("12:pids:/system.slice/docker.service\n0::/docker/{ID}\n").into_bytes();
        file.extend_from_slice(b"\xff:\n::\n");
        let file = &file[..];
        let c = container_of_cgroup(file).unwrap();
        assert_eq!(
            (c.runtime, c.short_id()),
            (Runtime::Docker, ID[..12].to_string())
        );
        assert_eq!(c.stop_command(), format!("docker stop {}", &ID[..12]));
        assert_eq!(
            v2_path(file).map(|p| p.as_str().to_string()),
            Some(format!("/docker/{ID}"))
        );
        assert_eq!(container_of_cgroup(b"\xff\xfe\n0::\n"), None);
        assert_eq!(container_of_cgroup(b""), None);
    }

    #[test]
    fn a_runtime_process_above_names_the_container() {
        let shim = crate::respond::plan::tests::proc(
            900,
            1,
            "/usr/bin/containerd-shim-runc-v2",
            &format!("/usr/bin/containerd-shim-runc-v2 -namespace moby -id {ID} -address /run/containerd/containerd.sock"),
        );
        let c = container_of_chain([&shim]).unwrap();
        assert_eq!((c.runtime, c.id.as_str()), (Runtime::Docker, ID));
        assert!(c.source.contains("900"));
        let conmon = crate::respond::plan::tests::proc(
            901,
            1,
            "/usr/bin/conmon",
            &format!(
                "/usr/bin/conmon --api-version 1 -c {ID} -u {ID} --exit-command /usr/bin/podman"
            ),
        );
        assert_eq!(
            container_of_chain([&conmon]).unwrap().runtime,
            Runtime::Podman
        );
        let bash = crate::respond::plan::tests::proc(902, 1, "/bin/bash", "bash -c -id x");
        assert_eq!(container_of_chain([&bash]), None);
    }

    #[test]
    fn tokens_name_the_container_first_then_the_namespaces() {
        let mut p = crate::model::Process::default();
        assert_eq!(token(&p), None);
        p.namespaces = Some(Namespaces {
            pid: 9,
            ns_pid: 1,
            separate: Separate(0b101),
            ..Default::default()
        });
        assert_eq!(token(&p).as_deref(), Some("ns:pid,net nspid=1"));
        assert!(in_container(&p, "ns:9"));
        p.container = container_of_path(&HostStr::from_text(
            "/docker/3f2a9c1b7d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8",
        ))
        .map(std::sync::Arc::new);
        assert_eq!(token(&p).as_deref(), Some("docker:3f2a9c1b7d4e nspid=1"));
        assert!(in_container(&p, "3f2a9c1b7d4e"));
        assert!(
            !in_container(&p, "3f"),
            "too short a prefix matches nothing"
        );
        assert!(!in_container(&p, "ffff"));
    }

    #[test]
    fn ns_pid_and_ns_links_parse() {
        assert_eq!(
            crate::proc::parse_status_ns_pid(b"Name:\tsh\nNSpid:\t4242\t17\t1\nNSsid:\t1\n"),
            Some(1)
        );
        assert_eq!(crate::proc::parse_status_ns_pid(b"Name:\tsh\n"), None);
        assert_eq!(ns_inode("pid:[4026531836]"), Some(4026531836));
        assert_eq!(ns_inode("pid:[x]"), None);
    }

    #[test]
    fn separate_namespaces_are_the_known_ones_that_differ() {
        let host = Namespaces {
            pid: 1,
            mnt: 2,
            net: 3,
            uts: 4,
            user: 5,
            ..Default::default()
        };
        let mut ns = Namespaces {
            pid: 10,
            mnt: 2,
            net: 30,
            uts: 0,
            user: 5,
            ns_pid: 1,
            ..Default::default()
        };
        ns.compare_with(&host);
        assert_eq!(ns.separate.names().collect::<Vec<_>>(), ["pid", "net"]);
        let json = serde_json::to_string(&ns).unwrap();
        assert!(json.contains(r#""separate":["pid","net"]"#), "{json}");
        let back: Namespaces = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ns);
        assert!(ns.separate_pid());
    }
}
