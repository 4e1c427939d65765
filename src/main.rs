//! The `homestak` binary: the command-line front end over the workspace's
//! crates (see [`cli`]; exit codes are documented there).

#![forbid(unsafe_code)]

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
