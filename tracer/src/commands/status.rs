//! `tracer status`: what this kernel offers and which hooks tracer chooses.
use anyhow::Result;
use schemars::JsonSchema;
use serde::Serialize;

use crate::{
    cli::StatusArgs,
    error::exit,
    kernel::{self, offsets::VMLINUX_BTF, HookChoice, Kernel},
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
    pub error: Option<String>,
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
        error: None,
    };
    // Load and attach for real: the only honest answer to "which hooks work".
    let probe = Kernel::load("status").and_then(|mut k| {
        k.attach_watch()?;
        let tasks = k.tasks()?;
        Ok((k.hooks.clone(), tasks.len()))
    });
    match probe {
        Ok((hooks, n)) => {
            status.hooks = hooks;
            status.kernel_tasks = Some(n);
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
