//! The spec delivery of a VM in its spec hash and serialised form: an
//! unset spec server is `None` in memory and `""` on the wire, so hashes
//! recorded in marks by earlier versions still match.

use homestak_base::secret::Secret;

use super::tests::want;
use super::*;
use crate::model::ExecutionMode;

fn with_spec(mode: ExecutionMode, server: Option<&str>) -> DesiredVm {
    let mut vm = want("web", Some(100));
    vm.spec = Some(SpecDelivery {
        identity: "web".into(),
        mode,
        server: server.map(str::to_string),
        digest: "ab12".into(),
        document: "{}\n".into(),
        token: Some(Secret::new("t0ken")),
        root_password: None,
    });
    vm
}

/// Hashes computed by the version before `server` became an `Option`
/// (then `""` when unset): a change here re-plans every VM with a spec.
#[test]
fn spec_hashes_are_those_of_earlier_versions() {
    let push = with_spec(ExecutionMode::Push, None);
    assert_eq!(push.spec_hash(), PUSH_HASH);
    let pull = with_spec(ExecutionMode::Pull, Some("https://127.0.0.1:44443"));
    assert_eq!(pull.spec_hash(), PULL_HASH);
    // Neither the token nor the password is part of it.
    let mut other = pull.clone();
    if let Some(spec) = other.spec.as_mut() {
        spec.token = None;
        spec.root_password = Some(Secret::new("$6$x"));
    }
    assert_eq!(other.spec_hash(), PULL_HASH);
    // A server does change it.
    let served = with_spec(ExecutionMode::Push, Some("https://127.0.0.1:44443"));
    assert_ne!(served.spec_hash(), PUSH_HASH);
}

const PUSH_HASH: &str = "sha256:91af11bb384a03c3";
const PULL_HASH: &str = "sha256:9b7aea2e35d7550b";

#[test]
fn an_unset_server_is_written_and_read_as_the_empty_string() {
    let push = with_spec(ExecutionMode::Push, None);
    let json = serde_json::to_value(&push).unwrap();
    assert_eq!(json["spec"]["server"], "");
    // As an earlier version wrote it.
    let back: DesiredVm = serde_json::from_value(json).unwrap();
    let spec = back.spec.unwrap();
    assert_eq!(spec.server, None);
    assert_eq!(spec.mode, ExecutionMode::Push);
    // Secrets are never serialised.
    assert_eq!((spec.token, spec.root_password), (None, None));
    let pull = with_spec(ExecutionMode::Pull, Some("http://127.0.0.1:8080"));
    let json = serde_json::to_value(&pull).unwrap();
    assert_eq!(json["spec"]["server"], "http://127.0.0.1:8080");
    let back: DesiredVm = serde_json::from_value(json).unwrap();
    assert_eq!(
        back.spec.unwrap().server.as_deref(),
        Some("http://127.0.0.1:8080")
    );
}
