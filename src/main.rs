//! The `homestak` binary: everything lives in the library, which this only
//! enters through `homestak::cli::main` (exit codes are documented there).

fn main() -> std::process::ExitCode {
    homestak::cli::main()
}
