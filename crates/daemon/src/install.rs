//! What a new host installs homestak from: `GET /install.sh`, a POSIX
//! script, and `GET /bin/homestak`, this daemon's own binary. Both need the
//! repo token, as the site-config repo they go on to clone does.
//!
//! The script is rendered per request with the URL the caller used (its
//! `Host` header, checked), so it fetches from the same daemon. It reads
//! the token from a header file and trusts the daemon's certificate from a
//! CA file the caller put in place first (see the `bootstrap-install`
//! scenario), so no secret is in the script or on a command line:
//!
//! | file | holds |
//! |---|---|
//! | `/etc/homestak/source.header` (0600) | `Authorization: Bearer <repo token>` |
//! | `/etc/homestak/source-ca.pem` | the daemon's certificate |

use super::auth::RepoAuth;
use super::reply::{ApiError, BYTES, Payload, Reply, TEXT};

/// Where the script installs the binary.
pub const BINARY: &str = "/usr/local/bin/homestak";
/// Where it clones the site-config (a directory homestak looks in).
pub const SITE_DIR: &str = "/usr/local/etc/homestak";
/// The header file with the repo token.
pub const HEADER_FILE: &str = "/etc/homestak/source.header";
/// The daemon's certificate, as the caller trusts it.
pub const CA_FILE: &str = "/etc/homestak/source-ca.pem";

/// The paths served here.
pub fn is_install_path(path: &str) -> bool {
    matches!(path, "/install.sh" | "/bin/homestak")
}

/// Answers `/install.sh` and `/bin/homestak`; `host` is the request's
/// `Host` header.
pub fn handle(
    path: &str,
    host: Option<&str>,
    auth: &RepoAuth,
    authorization: Option<&str>,
) -> Reply {
    if let Err(err) = auth.check(authorization) {
        return err.reply();
    }
    match path {
        "/install.sh" => match host.filter(|h| valid_host(h)) {
            Some(host) => Reply {
                status: 200,
                content_type: TEXT,
                payload: Payload::Bytes(script(&format!("https://{host}")).into_bytes()),
                retry_after: None,
                bad_token: false,
            },
            None => ApiError::bad_path(
                "install.sh needs the Host header the daemon was reached by".to_string(),
            )
            .reply(),
        },
        _ => match std::env::current_exe() {
            Ok(exe) => Reply {
                status: 200,
                content_type: BYTES,
                payload: Payload::File(exe),
                retry_after: None,
                bad_token: false,
            },
            Err(err) => {
                ApiError::internal(format!("cannot locate this daemon's binary: {err}")).reply()
            }
        },
    }
}

/// A `Host` header fit to put in a script: a name or an address, with a
/// port; nothing a shell would read as syntax.
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
}

/// The installer for a daemon reached at `source`.
pub fn script(source: &str) -> String {
    format!(
        r#"#!/bin/sh
# homestak installer, served by the homestak daemon at {source}.
# Before running it, put the repo token header in {HEADER_FILE} (mode 0600)
# and the daemon's certificate in {CA_FILE}.
set -e
mkdir -p /usr/local/bin /etc/homestak
curl -fsS --cacert {CA_FILE} -H @{HEADER_FILE} -o {BINARY}.new {source}/bin/homestak
chmod 755 {BINARY}.new
mv -f {BINARY}.new {BINARY}
{BINARY} bootstrap --source {source} --header-file {HEADER_FILE} --ca-file {CA_FILE} --site-dir {SITE_DIR}
"#
    )
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// The file a reply streams.
    fn streamed(reply: &Reply) -> Option<&PathBuf> {
        match &reply.payload {
            Payload::File(path) => Some(path),
            _ => None,
        }
    }

    #[test]
    fn both_paths_need_the_repo_token() {
        let auth = RepoAuth::from_expected("repo-secret");
        for path in ["/install.sh", "/bin/homestak"] {
            assert_eq!(handle(path, Some("h:1"), &auth, None).status, 401);
            let wrong = handle(path, Some("h:1"), &auth, Some("Bearer nope"));
            assert_eq!(wrong.status, 403);
            assert!(wrong.bad_token);
            let ok = handle(path, Some("h:1"), &auth, Some("Bearer repo-secret"));
            assert_eq!(ok.status, 200, "{path}");
        }
        let binary = handle("/bin/homestak", None, &auth, Some("Bearer repo-secret"));
        assert!(streamed(&binary).is_some_and(|p| p.is_file()));
    }

    #[test]
    fn the_script_fetches_from_the_host_asked_and_holds_no_secret() {
        let auth = RepoAuth::from_expected("repo-secret");
        let reply = handle(
            "/install.sh",
            Some("127.0.0.1:44443"),
            &auth,
            Some("Bearer repo-secret"),
        );
        let Payload::Bytes(body) = &reply.payload else {
            panic!("{reply:?}")
        };
        let text = String::from_utf8_lossy(body);
        assert!(text.starts_with("#!/bin/sh"), "{text}");
        assert!(
            text.contains("https://127.0.0.1:44443/bin/homestak"),
            "{text}"
        );
        assert!(
            text.contains("bootstrap --source https://127.0.0.1:44443"),
            "{text}"
        );
        assert!(!text.contains("repo-secret"));
        // A Host header that could smuggle shell syntax is refused.
        for host in ["a;rm -rf /", "x$(id)", "h h", ""] {
            let reply = handle("/install.sh", Some(host), &auth, Some("Bearer repo-secret"));
            assert_eq!(reply.status, 400, "{host}");
        }
    }
}
