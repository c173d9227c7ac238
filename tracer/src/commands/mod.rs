//! One module per command; each wires the shared parts together.
pub mod generate;
pub mod hidden;
pub mod ioc_bench;
pub mod kill_tree;
pub mod net;
pub mod status;
pub mod watch;

use anyhow::Result;

use crate::cli::Command;

/// Runs a command and returns its exit code.
pub fn run(command: Command) -> Result<i32> {
    match command {
        Command::Watch(args) => watch::run(args),
        Command::Hidden(args) => hidden::run(args),
        Command::KillTree(args) => kill_tree::run(args),
        Command::Net(args) => net::run(args),
        Command::Status(args) => status::run(args),
        Command::LibcReaddir => crate::views::libc_readdir::print_listing(),
        Command::LibcCat { files } => crate::views::net::libc::print_files(&files),
        Command::IocBench { files, lookups } => ioc_bench::run(&files, lookups),
        Command::Generate { dir } => generate::run(&dir),
    }
}

/// The selector `--file PATH` or `--remote ADDR` names, if either.
pub fn selector_of(
    args: &crate::cli::SelectArgs,
) -> Result<Option<crate::views::selection::Selector>> {
    use crate::views::selection::{Remote, Selector};
    if let Some(path) = &args.file {
        return Ok(Some(Selector::File(path.clone())));
    }
    match &args.remote {
        Some(text) => Ok(Some(Selector::Remote(
            Remote::parse(text).map_err(crate::error::UserError::BadInput)?,
        ))),
        None => Ok(None),
    }
}
