//! The `tracer` binary: parse the command line, run the command, map errors
//! to one line and a documented exit code.
use clap::Parser;
use tracer::{cli::Cli, commands, error};

fn main() {
    let cli = Cli::parse();
    let code = match commands::run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("tracer: {}", one_line(&err));
            error::exit_code_of(&err)
        }
    };
    std::process::exit(code);
}

/// The error and its causes on one line.
fn one_line(err: &anyhow::Error) -> String {
    err.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}
