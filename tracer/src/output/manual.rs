//! Man pages and shell completions, generated from the clap definitions so
//! they never drift from the CLI: `tracer(1)` and `tracer-COMMAND(1)` for
//! each command, with the exit codes, environment, files, signals and
//! examples the README documents.
use std::{
    fs,
    io::{self, Write},
    path::Path,
};

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::{
    roff::{bold, roman, Roff},
    Man,
};

use crate::{cli::Cli, error::exit};

/// (term, text) pairs of one man page section.
type Items = &'static [(&'static str, &'static str)];

/// What a page says beyond clap's own sections.
struct Extra {
    environment: Items,
    files: Items,
    signals: Items,
    examples: Items,
}

const EXIT_CODES: [(i32, &str); 6] = [
    (exit::OK, "success; for hidden, nothing found"),
    (
        exit::FINDINGS,
        "hidden found something; kill-tree --kill left something running or saw it come back",
    ),
    (
        exit::ERROR,
        "bad usage or input (unknown flag, malformed indicator file), or a runtime error",
    ),
    (exit::NOT_PRIVILEGED, "not root, or missing CAP_BPF and CAP_PERFMON"),
    (exit::KERNEL_UNSUPPORTED, "the kernel cannot run tracer (no BTF)"),
    (
        exit::REFUSED,
        "kill-tree refused its target (PID 1, a kernel thread, tracer or its ancestors, no such process, not a PID)",
    ),
];

const NO_COLOR: (&str, &str) = (
    "NO_COLOR",
    "When set and not empty, human output has no colour. Colour is used only on a terminal, never in a pipe or file.",
);
const RESPAWN: (&str, &str) = (
    "TRACER_RESPAWN_CHECK_MS",
    "How long kill-tree --kill watches for respawns, in milliseconds (default 2000).",
);
const PERSISTENCE_ROOT: (&str, &str) = (
    "TRACER_PERSISTENCE_ROOT",
    "Root under which persistence files (crontabs, units, rc.local, profiles...) are read (default /).",
);
const BTF: (&str, &str) = (
    "/sys/kernel/btf/vmlinux",
    "The running kernel's BTF: every structure offset tracer's programs use is resolved from it.",
);
const INDICATORS: (&str, &str) = (
    "/etc/tracer/indicators.txt",
    "The packaged indicator list (the built-in pool list, editable), used by the tracer service with --ioc.",
);
const SCHEMAS: (&str, &str) = (
    "/usr/share/tracer/schemas/",
    "JSON Schema of every record type that --json prints; each record carries type and schema_version.",
);
const PRELOAD: (&str, &str) = (
    "/etc/ld.so.preload",
    "Read to name the library that hides processes from libc.",
);

fn extra_for(command: &str) -> Extra {
    match command {
        "watch" => Extra {
            environment: &[NO_COLOR, PERSISTENCE_ROOT],
            files: &[BTF, INDICATORS, SCHEMAS, (
                "/var/log/tracer/events.json",
                "Where the tracer service writes events (--output), rotated to events.json.1, .2, ...",
            )],
            signals: &[
                ("SIGINT, SIGTERM", "Detach every program, print the summary and exit."),
                ("SIGUSR1", "Print the summary so far and go on watching."),
                ("SIGHUP", "Open the --output file again (after logrotate or another tool moved it)."),
            ],
            examples: &[
                ("sudo tracer watch", "Stream execs and connects as human lines."),
                (
                    "sudo tracer watch --json --no-default-iocs --ioc /etc/tracer/indicators.txt --output /var/log/tracer/events.json --output-max-size 100M --output-keep 5",
                    "What the tracer service runs: JSON lines into a rotated file that Vector, Fluent Bit or Filebeat tail.",
                ),
                ("sudo tracer watch --pid 4242 --connect-only", "Connects of process 4242 and its descendants only."),
            ],
        },
        "hidden" => Extra {
            environment: &[NO_COLOR],
            files: &[BTF, PRELOAD, SCHEMAS],
            signals: &[],
            examples: &[
                ("sudo tracer hidden", "Diff the kernel's task list against /proc, libc and ps; exit 1 if anything is found."),
                ("tracer hidden --json --no-kernel", "Without root: compare /proc, libc, ps and direct probes only, as JSON."),
            ],
        },
        "kill-tree" => Extra {
            environment: &[RESPAWN, PERSISTENCE_ROOT],
            files: &[SCHEMAS],
            signals: &[],
            examples: &[
                ("tracer kill-tree 4242", "Dry run: print the tree, the set to stop and why, the persistence, and the command."),
                ("sudo tracer kill-tree 4242 --kill --quarantine /root/quarantine", "Copy the programs, stop everything, kill it, and watch for a respawn."),
            ],
        },
        "status" => Extra {
            environment: &[],
            files: &[BTF],
            signals: &[],
            examples: &[("sudo tracer status", "Which hooks this kernel allows, and why.")],
        },
        _ => Extra {
            environment: &[NO_COLOR, RESPAWN, PERSISTENCE_ROOT],
            files: &[BTF, INDICATORS, SCHEMAS, PRELOAD],
            signals: &[],
            examples: &[
                ("sudo tracer status", "What this kernel allows."),
                ("sudo tracer hidden", "Find hidden and name-spoofed processes."),
                ("sudo tracer watch --json", "Stream events as JSON lines."),
                ("tracer kill-tree 4242", "Plan stopping a malicious tree."),
            ],
        },
    }
}

/// Renders one page: clap's sections, then ours.
fn render(man: &Man, extra: &Extra, see_also: &str, w: &mut dyn Write) -> io::Result<()> {
    man.render(w)?;
    let mut roff = Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    for (code, text) in EXIT_CODES {
        item(&mut roff, &code.to_string(), text);
    }
    for (title, items) in [
        ("ENVIRONMENT", extra.environment),
        ("FILES", extra.files),
        ("SIGNALS", extra.signals),
    ] {
        if !items.is_empty() {
            roff.control("SH", [title]);
            for (term, text) in items {
                item(&mut roff, term, text);
            }
        }
    }
    if !extra.examples.is_empty() {
        roff.control("SH", ["EXAMPLES"]);
        for (command, text) in extra.examples {
            roff.control("TP", []);
            roff.text([bold(*command)]);
            roff.text([roman(*text)]);
        }
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(see_also)]);
    roff.to_writer(w)
}

fn item(roff: &mut Roff, term: &str, text: &str) {
    roff.control("TP", []);
    roff.text([bold(term)]);
    roff.text([roman(text)]);
}

/// The commands that get a page of their own (hidden ones do not).
fn public_commands() -> Vec<clap::Command> {
    Cli::command()
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .cloned()
        .collect()
}

/// Writes `tracer.1` and `tracer-COMMAND.1` into `dir`.
pub fn write_man_pages(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let commands = public_commands();
    let pages: Vec<String> = commands
        .iter()
        .map(|c| format!("tracer-{}(1)", c.get_name()))
        .collect();
    let version = env!("CARGO_PKG_VERSION");
    let mut page = Vec::new();
    render(
        &Man::new(Cli::command()).manual("tracer manual"),
        &extra_for(""),
        &pages.join(", "),
        &mut page,
    )?;
    fs::write(dir.join("tracer.1"), page)?;
    for sub in commands {
        let name = sub.get_name().to_string();
        let cmd = sub
            .display_name(format!("tracer-{name}"))
            .bin_name(format!("tracer {name}"))
            .version(version);
        let mut page = Vec::new();
        render(
            &Man::new(cmd).manual("tracer manual"),
            &extra_for(&name),
            "tracer(1)",
            &mut page,
        )?;
        fs::write(dir.join(format!("tracer-{name}.1")), page)?;
    }
    Ok(())
}

/// The completion file names each shell looks for, in `dir`.
pub const COMPLETIONS: [(Shell, &str); 3] = [
    (Shell::Bash, "tracer.bash"),
    (Shell::Zsh, "_tracer"),
    (Shell::Fish, "tracer.fish"),
];

/// Writes each shell's completion file into `dir`; internal commands are
/// left out.
pub fn write_completions(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let cli = Cli::command();
    let mut public = clap::Command::new("tracer")
        .version(env!("CARGO_PKG_VERSION"))
        .about(cli.get_about().cloned().unwrap_or_default())
        .subcommands(public_commands());
    for (shell, file) in COMPLETIONS {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut public, "tracer", &mut out);
        fs::write(dir.join(file), out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_gets_a_page_with_exit_codes_and_examples() {
        let dir = std::env::temp_dir().join(format!("tracer-man-{}", std::process::id()));
        write_man_pages(&dir).unwrap();
        for name in [
            "tracer",
            "tracer-watch",
            "tracer-hidden",
            "tracer-kill-tree",
            "tracer-status",
        ] {
            let page = fs::read_to_string(dir.join(format!("{name}.1"))).unwrap();
            assert!(page.contains(".SH \"EXIT STATUS\""), "{name}: {page}");
            assert!(page.contains(".SH EXAMPLES"), "{name}");
            assert!(page.contains("kill\\-tree refused its target"), "{name}");
        }
        let watch = fs::read_to_string(dir.join("tracer-watch.1")).unwrap();
        assert!(watch.contains("\\-\\-output\\-max\\-size"), "{watch}");
        assert!(watch.contains("SIGUSR1"));
        assert!(!dir.join("tracer-__generate.1").exists());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn completions_know_every_command_but_the_hidden_ones() {
        let dir = std::env::temp_dir().join(format!("tracer-compl-{}", std::process::id()));
        write_completions(&dir).unwrap();
        let bash = fs::read_to_string(dir.join("tracer.bash")).unwrap();
        assert!(bash.contains("kill-tree") && !bash.contains("__libc-readdir"));
        let fish = fs::read_to_string(dir.join("tracer.fish")).unwrap();
        assert!(fish.contains("kill-tree") && !fish.contains("__generate"));
        let _ = fs::remove_dir_all(&dir);
    }
}
