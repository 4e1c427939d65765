//! What reaches a non-terminal stderr (journald, CI logs): log lines
//! without ANSI colour escapes.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::{BIN, text};

#[test]
fn no_colour_escape_reaches_a_stderr_that_is_not_a_terminal() {
    let site = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/site-config");
    let out = Command::new(BIN)
        .arg("--site-config")
        .arg(&site)
        .args(["manifest", "list"])
        .env("HOMESTAK_LOG", "trace")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TRACE"),
        "trace logging produced no line: {stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "escape codes on a pipe: {stderr:?}"
    );
}
