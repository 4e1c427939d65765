fn main() -> std::process::ExitCode {
    homestak::cli::main()
}
