//! `tracer status`: what this kernel offers and which hooks tracer chooses.
use anyhow::Result;
use schemars::JsonSchema;
use serde::Serialize;

use crate::{
    cli::StatusArgs,
    error::exit,
    kernel::{self, offsets::VMLINUX_BTF, sockets::IteratorStatus, HookChoice, Kernel},
    model::host_str::escape,
    respond::persistence,
    views::{bpf::BpfProgram, file_writes, kallsyms::PendingKallsyms, kernel_hooks::KernelInput},
};

/// What `tracer status --json` prints.
#[derive(Serialize, JsonSchema)]
pub struct Status {
    pub tracer: &'static str,
    pub kernel: String,
    pub btf: bool,
    pub privileged: bool,
    pub static_build: bool,
    pub hooks: Vec<HookChoice>,
    pub kernel_tasks: Option<usize>,
    /// Whether each socket iterator loaded, and the fallback when not.
    pub socket_iterators: Vec<IteratorStatus>,
    /// Loaded BPF programs that are not tracer's.
    pub bpf_programs: Vec<BpfProgram>,
    /// Kernel checks that cannot run here, one line each.
    pub kernel_checks: Vec<String>,
    pub error: Option<String>,
}

pub fn run(args: StatusArgs) -> Result<i32> {
    if !args.sigma.is_empty() {
        return sigma_summary(&args);
    }
    let mut status = Status {
        tracer: env!("CARGO_PKG_VERSION"),
        kernel: kernel::kernel_release(),
        btf: std::path::Path::new(VMLINUX_BTF).exists(),
        privileged: kernel::check_privileges("status").is_ok(),
        static_build: cfg!(target_env = "musl"),
        hooks: Vec::new(),
        kernel_tasks: None,
        socket_iterators: Vec::new(),
        bpf_programs: Vec::new(),
        kernel_checks: Vec::new(),
        error: None,
    };
    // Load and attach for real: the only honest answer to "which hooks work".
    let mut loaded = Kernel::load("status");
    let ksyms = PendingKallsyms::start(loaded.as_mut().ok());
    let kernel_state = KernelInput::collect(
        loaded
            .as_mut()
            .map_err(|_| "tracer's programs did not load"),
        ksyms,
    )
    .finish();
    status.bpf_programs = kernel_state
        .bpf
        .programs
        .into_iter()
        .filter(|p| !p.tracer_own)
        .collect();
    status.kernel_checks = kernel_state.notes;
    let probe = loaded.and_then(|mut k| {
        k.attach_watch()?;
        let places = persistence::places(&persistence::Roots::from_env());
        k.hooks.push(file_writes::watch_places(&places).1);
        let file_users = k.file_user_choice();
        k.hooks.push(file_users);
        let kallsyms = k.kallsyms_choice();
        k.hooks.push(kallsyms);
        let tasks = k.tasks()?;
        Ok((k.hooks.clone(), tasks.len(), k.socket_iterators.clone()))
    });
    match probe {
        Ok((hooks, n, iterators)) => {
            status.hooks = hooks;
            status.kernel_tasks = Some(n);
            status.socket_iterators = iterators;
        }
        Err(e) => status.error = Some(format!("{e:#}")),
    }
    if args.json {
        crate::output::schema::write_pretty(&mut std::io::stdout().lock(), &status)?;
    } else {
        println!("tracer {}", status.tracer);
        println!("kernel      {}", status.kernel);
        println!(
            "btf         {}",
            if status.btf { VMLINUX_BTF } else { "missing" }
        );
        println!("privileged  {}", status.privileged);
        println!(
            "build       {}",
            if status.static_build {
                "static (musl)"
            } else {
                "dynamic (glibc)"
            }
        );
        if let Some(n) = status.kernel_tasks {
            println!("kernel view {n} tasks from iter/task");
        }
        for h in &status.hooks {
            println!("hook        {:<8} {}  ({})", h.event, h.hook, h.reason);
        }
        for it in &status.socket_iterators {
            if it.loaded {
                println!("sockets     {:<16} loaded", it.iterator);
            } else {
                println!("sockets     {:<16} {}", it.iterator, it.fallback);
            }
        }
        println!(
            "bpf         {} program{} not tracer's",
            status.bpf_programs.len(),
            if status.bpf_programs.len() == 1 {
                ""
            } else {
                "s"
            }
        );
        for p in &status.bpf_programs {
            let mut owners: Vec<String> = p
                .owners
                .iter()
                .map(|o| format!("{}({})", o.pid, escape(&o.comm)))
                .collect();
            owners.dedup();
            println!(
                "  prog {:<6} {:<14} {:<16} attach {}  owners {}{}",
                p.id,
                p.prog_type,
                escape(&p.name),
                if p.attach.is_empty() {
                    "-".into()
                } else {
                    p.attach.join(",")
                },
                if owners.is_empty() {
                    "none".into()
                } else {
                    owners.join(",")
                },
                if p.pins.is_empty() {
                    String::new()
                } else {
                    format!(
                        "  pinned {}",
                        p.pins
                            .iter()
                            .map(|x| x.display().to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    )
                }
            );
        }
        for note in &status.kernel_checks {
            println!("check       {}", escape(note));
        }
        if let Some(e) = &status.error {
            println!("error       {e}");
        }
    }
    Ok(if status.error.is_some() {
        exit::ERROR
    } else {
        exit::OK
    })
}

/// `status --sigma PATH`: load the rules as watch would and say what
/// loaded and what did not, without loading anything into the kernel.
/// Exit 0 when every rule loaded, 8 when some were skipped.
fn sigma_summary(args: &StatusArgs) -> Result<i32> {
    let rules = crate::detect::sigma::SigmaRules::load(&args.sigma)?;
    let summary = &rules.summary;
    if args.json {
        crate::output::schema::write_pretty(&mut std::io::stdout().lock(), summary)?;
    } else {
        for s in &summary.skipped {
            println!("{}", s.line());
        }
        println!("{}", escape(&summary.line()));
    }
    Ok(if summary.skipped.is_empty() {
        exit::OK
    } else {
        exit::RULES_SKIPPED
    })
}
