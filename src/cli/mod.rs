//! The command-line front end: clap definitions and dispatch only.
//!
//! Each subcommand lives in its own file and calls into the library; nothing
//! here decides anything about infrastructure. Outcomes map to exit codes
//! ([`help::EXIT_CODES`], the table `--help` prints).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod adopt;
mod bootstrap;
mod completions;
pub mod config;
mod converge;
pub mod crds;
mod daemon;
mod help;
mod lifecycle;
mod man;
pub mod manifest;
pub mod output;
mod preflight;
mod progress;
mod report;
mod scenario;
mod seed;
pub mod serve;
pub mod sim;
mod target;
mod watch;

/// homestak: converge Proxmox VE to what your site-config declares.
#[derive(Debug, Parser)]
#[command(
    name = "homestak",
    version,
    about,
    propagate_version = true,
    after_help = help::top()
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand accepts.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Site-config directory. Otherwise: $HOMESTAK_SITE_CONFIG, ../site-config,
    /// ./site-config, /usr/local/etc/homestak, /opt/homestak/site-config.
    #[arg(long, global = true, value_name = "DIR", value_hint = clap::ValueHint::DirPath)]
    pub site_config: Option<PathBuf>,
    /// Print machine-readable JSON instead of human output.
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output (-v info, -vv debug, -vvv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Resolve and list site-config (envs, postures, templates, presets).
    Config(config::Args),
    /// List, validate and show manifests.
    Manifest(manifest::Args),
    /// Generate or check the JSON Schemas in crds/.
    Crds(crds::Args),
    /// Run the built-in Proxmox VE 8.4 API simulator.
    Sim(sim::Args),
    /// Show what a reconcile would change, without changing anything.
    #[command(after_help = help::plan())]
    Plan(converge::PlanArgs),
    /// Converge a manifest on a host (`--once`; the daemon reconciles continuously).
    #[command(after_help = help::reconcile())]
    Reconcile(converge::ReconcileArgs),
    /// Drift report: exit 0 in sync, 2 drifted, 1 on error.
    #[command(after_help = help::status())]
    Status(converge::StatusArgs),
    /// Create a manifest's VMs (the iac-driver verb).
    #[command(after_help = help::seed())]
    Create(seed::CreateArgs),
    /// Destroy the VMs a manifest owns (asks unless --yes).
    #[command(after_help = help::seed())]
    Destroy(seed::DestroyArgs),
    /// Create, verify SSH, destroy: a smoke test of a manifest on a host.
    #[command(after_help = help::seed())]
    Test(seed::TestArgs),
    /// Run the controller daemon: serve specs and repos, reconcile on commit.
    #[command(after_help = help::serve())]
    Serve(Box<serve::Args>),
    /// Run a workflow (pve-setup, user-setup, packer-*, …); --list shows them.
    #[command(after_help = help::scenario())]
    Scenario(Box<scenario::Args>),
    /// On a new host: clone the site-config from a parent's `homestak serve`
    /// (what the daemon's /install.sh runs).
    Bootstrap(bootstrap::Args),
    /// Take over VMs made without homestak (name and vmid match a node); asks unless --yes.
    Adopt(adopt::Args),
    /// Check what a run on a host needs (site-init, API token, SSH keys,
    /// images, nested virtualization): exit 0 all pass, 1 one failed.
    Preflight(preflight::Args),
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell.
    Completions(completions::Args),
    /// Write the man pages: homestak.1 and one per subcommand.
    Man(man::Args),
}

/// How a command ended: the engine's [`Outcome`]. A command that only
/// reads or writes files (`config`, `manifest`, `crds`) ends `Converged`
/// when it succeeds: nothing it checked is out of place.
pub use homestak_api::Outcome;

/// The exit code of an outcome ([`help::EXIT_CODES`]).
fn exit_code(outcome: Outcome) -> ExitCode {
    match outcome {
        Outcome::Converged => ExitCode::SUCCESS,
        Outcome::Failed => ExitCode::from(help::EXIT_FAILED),
        Outcome::Drifted => ExitCode::from(help::EXIT_DRIFT),
        Outcome::Interrupted => ExitCode::from(help::EXIT_INTERRUPTED),
    }
}

/// Entry point of the `homestak` binary.
pub fn main() -> ExitCode {
    homestak_tls::install_crypto_provider();
    let cli = match Cli::try_parse_from(legacy_spelling(std::env::args_os().collect())) {
        Ok(cli) => cli,
        Err(err) => {
            let code = if err.use_stderr() {
                help::EXIT_USAGE
            } else {
                0
            };
            // Printing help to a closed pipe is not worth a panic.
            let _ = err.print();
            return ExitCode::from(code);
        }
    };
    init_logging(cli.global.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(help::EXIT_FAILED);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(outcome) => exit_code(outcome),
        Err(err) => {
            output::print_error(&err);
            ExitCode::from(help::EXIT_FAILED)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let global = cli.global;
    match cli.command {
        Command::Config(args) => config::run(args, &global).await,
        Command::Manifest(args) => manifest::run(args, &global).await,
        Command::Crds(args) => crds::run(args, &global).await,
        Command::Sim(args) => sim::run(args, &global).await,
        Command::Plan(args) => converge::plan(args, &global).await,
        Command::Reconcile(args) => converge::reconcile(args, &global).await,
        Command::Status(args) => converge::status(args, &global).await,
        Command::Create(args) => seed::create(args, &global).await,
        Command::Destroy(args) => seed::destroy(args, &global).await,
        Command::Test(args) => seed::test(args, &global).await,
        Command::Serve(args) => serve::run(*args, &global).await,
        Command::Scenario(args) => scenario::run(*args, &global).await,
        Command::Bootstrap(args) => bootstrap::run(args, &global).await,
        Command::Adopt(args) => adopt::run(args, &global).await,
        Command::Preflight(args) => preflight::run(args, &global).await,
        Command::Completions(args) => Ok(completions::run(&args)),
        Command::Man(args) => man::run(&args, &global),
    }
}

/// The Python tool's `./run.sh` spellings, mapped onto the subcommands:
/// `--scenario NAME` / `-S NAME` → `scenario NAME`, `--list-scenarios` →
/// `scenario --list`, `--preflight` → `preflight`. The verbs (`create`, …)
/// are subcommands already. Nothing changes once a subcommand is named.
fn legacy_spelling(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    use clap::CommandFactory;
    let command = Cli::command();
    let subcommands: Vec<&str> = command.get_subcommands().map(|c| c.get_name()).collect();
    let text: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    for (i, word) in text.iter().enumerate().skip(1) {
        if subcommands.contains(&word.as_str()) || word == "--" {
            return args;
        }
        let (replacement, taken): (Vec<String>, usize) = match word.as_str() {
            "--scenario" | "-S" => match text.get(i + 1) {
                Some(name) => (vec!["scenario".into(), name.clone()], 2),
                None => (vec!["scenario".into()], 1),
            },
            "--list-scenarios" => (vec!["scenario".into(), "--list".into()], 1),
            "--preflight" => (vec!["preflight".into()], 1),
            w if w.starts_with("--scenario=") => (
                vec!["scenario".into(), w["--scenario=".len()..].to_string()],
                1,
            ),
            _ => continue,
        };
        args.drain(i..i + taken);
        for (k, word) in replacement.into_iter().enumerate() {
            args.insert(1 + k, word.into());
        }
        return args;
    }
    args
}

/// Colour in log lines only on a terminal, and never when `NO_COLOR` is
/// set to anything but the empty string (no-color.org): journald and CI
/// logs get plain text.
fn log_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOMESTAK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Through the progress display while it draws, so lines never garble it.
        .with_writer(progress::LogWriter::stderr())
        .with_ansi(log_colour(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn log_colour_needs_a_terminal_and_no_no_color() {
        use std::ffi::OsStr;
        assert!(log_colour(true, None));
        assert!(log_colour(true, Some(OsStr::new(""))));
        assert!(!log_colour(true, Some(OsStr::new("1"))));
        assert!(!log_colour(false, None));
    }

    #[test]
    fn reconcile_without_once_is_a_usage_error() {
        let err = Cli::try_parse_from(["homestak", "reconcile", "-M", "m", "-H", "h"])
            .expect_err("refused");
        assert!(err.use_stderr());
        assert!(err.to_string().contains("--once"), "{err}");
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn spelled(line: &str) -> String {
        let args = line.split(' ').map(std::ffi::OsString::from).collect();
        legacy_spelling(args)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn the_python_tools_spellings_map_onto_the_subcommands() {
        assert_eq!(
            spelled("run.sh --scenario pve-setup --host father --skip ensure_pve"),
            "run.sh scenario pve-setup --host father --skip ensure_pve"
        );
        assert_eq!(
            spelled("run.sh -v -S user-setup --local"),
            "run.sh scenario user-setup -v --local"
        );
        assert_eq!(
            spelled("run.sh --site-config /s --scenario=packer-sync --remote 127.0.0.1"),
            "run.sh scenario packer-sync --site-config /s --remote 127.0.0.1"
        );
        assert_eq!(spelled("run.sh --list-scenarios"), "run.sh scenario --list");
        assert_eq!(
            spelled("run.sh --preflight --host mother"),
            "run.sh preflight --host mother"
        );
        // A named subcommand is left alone, even with a flag of the same name.
        assert_eq!(
            spelled("run.sh create -M n1 -H father --json-output"),
            "run.sh create -M n1 -H father --json-output"
        );
        assert_eq!(
            spelled("run.sh scenario pve-setup --list-phases"),
            "run.sh scenario pve-setup --list-phases"
        );
        let parsed = Cli::try_parse_from(legacy_spelling(
            "run.sh --scenario pve-setup --list-phases"
                .split(' ')
                .map(std::ffi::OsString::from)
                .collect(),
        ));
        assert!(matches!(
            parsed.map(|c| c.command),
            Ok(Command::Scenario(_))
        ));
    }
}
