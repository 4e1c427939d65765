//! Printing helpers shared by the subcommands.

use std::io::Write;

/// Prints a value as pretty JSON on stdout, followed by a newline.
pub fn print_json<T: serde::Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let written = serde_json::to_writer_pretty(&mut out, value)
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(out));
    match written {
        // A reader that stopped early (`| head`) is not a failure.
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Prints an error and its whole cause chain on stderr, one cause per line.
pub fn print_error(err: &anyhow::Error) {
    eprintln!("{}", error_text(err));
}

/// An error and its whole cause chain, one cause per line.
pub fn error_text(err: &anyhow::Error) -> String {
    let mut text = format!("error: {err}");
    for cause in err.chain().skip(1) {
        text.push_str(&format!("\n  caused by: {cause}"));
    }
    text
}

/// How human output is rendered: with colours, which [`print_text`]
/// keeps or strips.
pub const STYLED: homestak_core::plan::Style = homestak_core::plan::Style { color: true };

/// Prints human text on stdout through anstream: colour escapes reach a
/// colour terminal, or any stdout with `CLICOLOR_FORCE` set; otherwise, and
/// always with `NO_COLOR` set, they are stripped. A closed pipe (`| head`)
/// is not an error.
pub fn print_text(text: &str) {
    let mut out = anstream::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}
