//! `tracer status`: what this kernel offers and which hooks tracer chooses.
use anyhow::Result;
use serde::Serialize;

use crate::{
    cli::StatusArgs,
    error::exit,
    kernel::{self, offsets::VMLINUX_BTF, sockets::IteratorStatus, HookChoice, Kernel},
};

#[derive(Serialize)]
struct Status {
    tracer: &'static str,
    kernel: String,
    btf: bool,
    privileged: bool,
    static_build: bool,
    hooks: Vec<HookChoice>,
    kernel_tasks: Option<usize>,
    /// Whether each socket iterator loaded, and the fallback when not.
    socket_iterators: Vec<IteratorStatus>,
    error: Option<String>,
}

pub fn run(args: StatusArgs) -> Result<i32> {
    let mut status = Status {
        tracer: env!("CARGO_PKG_VERSION"),
        kernel: kernel::kernel_release(),
        btf: std::path::Path::new(VMLINUX_BTF).exists(),
        privileged: kernel::check_privileges("status").is_ok(),
        static_build: cfg!(target_env = "musl"),
        hooks: Vec::new(),
        kernel_tasks: None,
        socket_iterators: Vec::new(),
        error: None,
    };
    // Load and attach for real: the only honest answer to "which hooks work".
    let probe = Kernel::load("status").and_then(|mut k| {
        k.attach_watch()?;
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
        println!("{}", serde_json::to_string_pretty(&status)?);
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
