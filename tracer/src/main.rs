//! The `tracer` binary: parse the command line, run the command, map errors
//! to one line and a documented exit code.
use clap::{error::ErrorKind, Parser};
use tracer::{cli::Cli, commands, error, model::host_str::escape};

/// Longest error line printed: errors may quote user input of any size.
const MAX_ERROR_CHARS: usize = 400;

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => usage_error(e),
    };
    let timings = cli.timings;
    if timings {
        tracer::timings::enable();
    }
    let code = match commands::run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("tracer: {}", one_line(&err));
            error::exit_code_of(&err)
        }
    };
    if timings {
        eprint!("{}", tracer::timings::report());
    }
    std::process::exit(code);
}

/// Help and version as clap prints them; any other usage error as one
/// line (clap's first), exit code 2.
fn usage_error(e: clap::Error) -> ! {
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        _ => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            let first = first.strip_prefix("error: ").unwrap_or(first);
            let usage = text
                .lines()
                .find(|l| l.starts_with("Usage:"))
                .map_or(String::new(), |u| format!(" ({})", u.trim_end()));
            eprintln!(
                "tracer: {}{usage}; see `tracer --help`",
                cut(&escape(first.trim_end()))
            );
            std::process::exit(error::exit::ERROR)
        }
    }
}

/// The error and its causes on one line, escaped and cut.
fn one_line(err: &anyhow::Error) -> String {
    let text = err
        .chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    cut(&escape(&text))
}

/// An already escaped line, cut to `MAX_ERROR_CHARS`.
fn cut(line: &str) -> String {
    match line.char_indices().nth(MAX_ERROR_CHARS) {
        Some((at, _)) => format!("{}… ({} bytes in all)", &line[..at], line.len()),
        None => line.to_string(),
    }
}
