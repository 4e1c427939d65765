//! `homestak completions SHELL`: the shell's completion script on stdout.

use clap::CommandFactory;
use clap_complete::Shell;

use super::{Cli, Outcome, output};

/// Arguments of `homestak completions`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

/// Runs `homestak completions`.
pub fn run(args: &Args) -> Outcome {
    output::print_text(&script(args.shell));
    Outcome::Converged
}

/// The completion script for `shell`. Generated into memory first:
/// clap_complete panics on a failed write, and stdout may be a closed pipe.
fn script(shell: Shell) -> String {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "homestak", &mut script);
    String::from_utf8_lossy(&script).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_gets_a_script_naming_the_subcommands() {
        for shell in [
            Shell::Bash,
            Shell::Zsh,
            Shell::Fish,
            Shell::Elvish,
            Shell::PowerShell,
        ] {
            let script = script(shell);
            for name in ["reconcile", "serve", "completions", "man"] {
                assert!(script.contains(name), "{shell}: no {name}");
            }
        }
    }
}
