//! `homestak man --out DIR`: one roff man page per command, `homestak.1`
//! and `homestak-SUB[-SUB…].1` for every subcommand at every depth.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::CommandFactory;

use super::{Cli, GlobalArgs, Outcome, output};

/// Arguments of `homestak man`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory for the pages (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// Runs `homestak man`.
pub fn run(args: &Args, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let written = write_pages(&args.out)?;
    if global.json {
        let list: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
        output::print_json(&serde_json::json!({ "written": list }))?;
    } else {
        let text: String = written
            .iter()
            .map(|path| format!("wrote {}\n", path.display()))
            .collect();
        output::print_text(&text);
    }
    Ok(Outcome::Converged)
}

/// Writes every page into `out`, returning their paths. Building the
/// command first gives each subcommand its `homestak-…` page name and the
/// global flags.
fn write_pages(out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut command = without_help_subcommands(Cli::command());
    command.build();
    let mut written = Vec::new();
    write_tree(&command, out, &mut written)?;
    Ok(written)
}

/// clap's implicit `help` subcommands would each get a page saying nothing.
fn without_help_subcommands(command: clap::Command) -> clap::Command {
    command
        .disable_help_subcommand(true)
        .mut_subcommands(without_help_subcommands)
}

fn write_tree(
    command: &clap::Command,
    out: &Path,
    written: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    // clap_mangen names a subcommand's source after the subcommand ("list 0.1.0").
    let page = clap_mangen::Man::new(command.clone())
        .source(concat!("homestak ", env!("CARGO_PKG_VERSION")))
        .manual("homestak manual");
    let path = page
        .generate_to(out)
        .with_context(|| format!("cannot write {}", out.join(page.get_filename()).display()))?;
    written.push(path);
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_tree(sub, out, written)?;
    }
    Ok(())
}
