//! `ensure_image` for images shipped in parts, against a scripted PVE and a
//! scripted SSH host: each part downloaded once for every node, one join,
//! the result checked before the parts go, and every pass resuming where
//! an earlier run stopped. Then finding out how an image ships, against a
//! small HTTP server on 127.0.0.1 standing for the release.

use std::collections::HashMap;
use std::sync::Arc;

use reqwest::Method;
use serde_json::{Value, json};

use crate::controllers::vm::{
    HostSsh, ImageSource, Memory, RunState, Timing, VmController, VmStep, source,
};
use crate::executor::{Controller, StepOutcome};
use homestak_core::plan::{Action, DesiredVm, IpConfig, Kind, NodePlan};
use homestak_pve::fake::{Reply as PveReply, Scripted, task_status, task_status_path, upid};
use homestak_ssh::fake::{ConnectFailure, Reply, ScriptedTransport};
use homestak_ssh::{Destination, HostKeyPolicy, Identity};

const CONTENT: &str = "/nodes/pve/storage/local/content";
const DOWNLOAD: &str = "/nodes/pve/storage/local/download-url";
const PATH: &str = "pvesm path local:import/debian-13-pve.qcow2";
const DIR: &str = "/var/lib/vz/import";
const JOIN: &str = "cat /var/lib/vz/import/debian-13-pve.partaa.raw \
    /var/lib/vz/import/debian-13-pve.partab.raw /var/lib/vz/import/debian-13-pve.partac.raw \
    > /var/lib/vz/import/debian-13-pve.qcow2.tmp && mv -f \
    /var/lib/vz/import/debian-13-pve.qcow2.tmp /var/lib/vz/import/debian-13-pve.qcow2";
const CLEAN: &str = "rm -f /var/lib/vz/import/debian-13-pve.partaa.raw \
    /var/lib/vz/import/debian-13-pve.partab.raw /var/lib/vz/import/debian-13-pve.partac.raw";

fn want(name: &str) -> DesiredVm {
    DesiredVm {
        name: name.parse().unwrap(),
        kind: Kind::Vm,
        parent: None,
        vmid: None,
        cores: 1,
        memory_mib: 1024,
        disk_gib: 8,
        image: "debian-13-pve".into(),
        storage: "local-zfs".into(),
        bridge: "vmbr0".into(),
        ip: IpConfig::Dhcp,
        nameserver: None,
        searchdomain: None,
        user: "ops".into(),
        ssh_keys: Vec::new(),
        spec: None,
    }
}

struct Rig {
    api: Arc<Scripted>,
    ssh: ScriptedTransport,
    controller: VmController,
    _dir: tempfile::TempDir,
}

/// A controller for nodes `a` and `b`, both on the split image (three
/// parts, as `image_parts` says), whose host is `user@127.0.0.1:22` with a
/// key that exists unless `key` is false.
fn rig(user: &str, key: bool) -> Rig {
    rig_with(user, key, "https://127.0.0.1:9/rel/", Some(3))
}

/// The same with image source `base_url`, and `parts` given in
/// `image_parts` or (`None`) left for the source to tell.
fn rig_with(user: &str, key: bool, base_url: &str, parts: Option<u32>) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("id_ed25519");
    if key {
        Identity::generate_to(&key_path).unwrap();
    }
    let api = Scripted::new();
    let ssh = ScriptedTransport::new();
    let controller = VmController {
        api: Arc::new(api.client()),
        pve_node: "pve".parse().unwrap(),
        manifest: "demo".into(),
        image_storage: "local".into(),
        default_storage: "local-zfs".into(),
        images: ImageSource {
            base_url: base_url.into(),
            parts: parts
                .map(|n| HashMap::from([("debian-13-pve".to_string(), n)]))
                .unwrap_or_default(),
            sha256: HashMap::new(),
        },
        desired: HashMap::from([
            ("a".parse().unwrap(), want("a")),
            ("b".parse().unwrap(), want("b")),
        ]),
        store: None,
        ssh: None,
        known_hosts: None,
        host_ssh: Some(HostSsh {
            transport: Arc::new(ssh.clone()),
            destination: Destination::new("127.0.0.1", 22, user),
            key: key_path,
            host_key: HostKeyPolicy::InsecureAcceptAny,
            host: "pve".into(),
        }),
        owner_key: crate::controllers::vm::tests::owner_key(),
        spec_ca: None,
        timing: Timing::default(),
        shared: RunState::default(),
    };
    Rig {
        api,
        ssh,
        controller,
        _dir: dir,
    }
}

fn create(node: &str) -> NodePlan {
    NodePlan {
        node: node.parse().unwrap(),
        action: Action::Create,
        vmid: None,
        changes: Vec::new(),
        reason: None,
        blocked: None,
        pve_node: None,
        foreign: false,
    }
}

fn file(name: &str, size: u64) -> Value {
    json!({"volid": format!("local:import/{name}"), "content": "import", "size": size,
           "format": name.rsplit('.').next().unwrap()})
}

fn part(i: u32) -> Value {
    file(
        &source::part_file("debian-13-pve", i).unwrap(),
        100 + u64::from(i),
    )
}

fn content(files: Vec<Value>) -> PveReply {
    PveReply::Data(Value::Array(files))
}

async fn pass(rig: &Rig, node: &str, m: &mut Memory) -> StepOutcome {
    let step = VmStep::EnsureImage(Arc::new(want(node)));
    rig.controller.run(&create(node), &step, m).await
}

/// The `download-url` requests made: (filename, url).
fn downloads(api: &Scripted) -> Vec<(String, String)> {
    api.requests()
        .iter()
        .filter(|r| r.method == Method::POST && r.path == DOWNLOAD)
        .map(|r| {
            let get = |k: &str| {
                r.params
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            (get("filename"), get("url"))
        })
        .collect()
}

/// PVE answers the download of each of the first `parts` parts with a
/// task that is still running.
fn script_part_downloads(rig: &Rig, parts: u32) {
    for i in 0..parts {
        let t = upid(
            "pve",
            "download",
            &source::part_file("debian-13-pve", i).unwrap(),
        );
        rig.api
            .once(Method::POST, DOWNLOAD, PveReply::Data(json!(t.to_string())))
            .data(Method::GET, &task_status_path(&t), task_status(&t, None));
    }
}

fn requeued(out: &StepOutcome) -> bool {
    matches!(out, StepOutcome::Requeue(_))
}

#[tokio::test]
async fn parts_are_downloaded_once_for_every_node_then_joined_once() {
    let rig = rig("root", true);
    let tasks: Vec<_> = (0..3)
        .map(|i| {
            upid(
                "pve",
                "download",
                &source::part_file("debian-13-pve", i).unwrap(),
            )
        })
        .collect();
    for t in &tasks {
        rig.api
            .once(Method::POST, DOWNLOAD, PveReply::Data(json!(t.to_string())));
        rig.api
            .data(Method::GET, &task_status_path(t), task_status(t, None));
    }
    // a: nothing there; b: nothing there; a: all parts; a after the join;
    // b: the joined image.
    let joined = file("debian-13-pve.qcow2", 303);
    rig.api
        .once(Method::GET, CONTENT, content(vec![]))
        .once(Method::GET, CONTENT, content(vec![]))
        .once(
            Method::GET,
            CONTENT,
            content(vec![part(0), part(1), part(2)]),
        )
        .once(
            Method::GET,
            CONTENT,
            content(vec![part(0), part(1), part(2), joined.clone()]),
        )
        .once(Method::GET, CONTENT, content(vec![joined]));
    rig.ssh
        .expect(PATH, Reply::ok(format!("{DIR}/debian-13-pve.qcow2\n")))
        .expect(JOIN, Reply::ok(""))
        .expect(CLEAN, Reply::ok(""));

    let (mut ma, mut mb) = (Memory::default(), Memory::default());
    assert!(requeued(&pass(&rig, "a", &mut ma).await));
    // b follows a's three tasks instead of starting its own.
    assert!(requeued(&pass(&rig, "b", &mut mb).await));
    assert_eq!(
        downloads(&rig.api),
        [
            (
                "debian-13-pve.partaa.raw".to_string(),
                "https://127.0.0.1:9/rel/debian-13-pve.qcow2.partaa".to_string()
            ),
            (
                "debian-13-pve.partab.raw".into(),
                "https://127.0.0.1:9/rel/debian-13-pve.qcow2.partab".into()
            ),
            (
                "debian-13-pve.partac.raw".into(),
                "https://127.0.0.1:9/rel/debian-13-pve.qcow2.partac".into()
            ),
        ]
    );
    assert_eq!(
        rig.ssh.connect_attempts(),
        0,
        "no join before every part is there"
    );

    let out = pass(&rig, "a", &mut ma).await;
    assert!(matches!(out, StepOutcome::Done), "{out:?}");
    let out = pass(&rig, "b", &mut mb).await;
    assert!(matches!(out, StepOutcome::Done), "{out:?}");
    assert_eq!(rig.ssh.executed_lines(), [PATH, JOIN, CLEAN]);
    assert_eq!(rig.ssh.connect_attempts(), 1);
    assert_eq!(rig.api.writes(), 3, "three downloads, nothing else");
    assert!(
        rig.api.unused_once().is_empty(),
        "{:?}",
        rig.api.unused_once()
    );
}

#[tokio::test]
async fn parts_from_an_interrupted_run_are_not_downloaded_again() {
    let rig = rig("root", true);
    let t = upid("pve", "download", "debian-13-pve.partab.raw");
    rig.api
        .once(Method::POST, DOWNLOAD, PveReply::Data(json!(t.to_string())))
        .once(Method::GET, CONTENT, content(vec![part(0), part(2)]));
    let mut m = Memory::default();
    assert!(requeued(&pass(&rig, "a", &mut m).await));
    let got: Vec<String> = downloads(&rig.api).into_iter().map(|(f, _)| f).collect();
    assert_eq!(got, ["debian-13-pve.partab.raw"]);
}

#[tokio::test]
async fn a_joined_image_is_used_as_it_is_and_leftover_parts_are_removed() {
    let rig = rig("root", true);
    let joined = file("debian-13-pve.qcow2", 303);
    rig.api
        .once(Method::GET, CONTENT, content(vec![joined.clone()]))
        .once(Method::GET, CONTENT, content(vec![joined, part(1)]));
    rig.ssh
        .expect(PATH, Reply::ok(format!("{DIR}/debian-13-pve.qcow2\n")))
        .expect(
            "rm -f /var/lib/vz/import/debian-13-pve.partab.raw",
            Reply::ok(""),
        );
    let mut m = Memory::default();
    // Present, nothing left over: no SSH at all.
    assert!(matches!(pass(&rig, "a", &mut m).await, StepOutcome::Done));
    assert_eq!(rig.ssh.connect_attempts(), 0);
    // A part an interrupted join left behind is removed.
    assert!(matches!(pass(&rig, "a", &mut m).await, StepOutcome::Done));
    assert!(rig.ssh.unmet().is_empty(), "{:?}", rig.ssh.unmet());
    assert_eq!(rig.api.writes(), 0);
}

#[tokio::test]
async fn a_missing_key_fails_before_anything_is_downloaded() {
    let rig = rig("root", false);
    rig.api.always(Method::GET, CONTENT, content(vec![]));
    match pass(&rig, "a", &mut Memory::default()).await {
        StepOutcome::Failed(e) => {
            assert!(!e.transient, "{e:?}");
            for text in [
                "image debian-13-pve ships in 3 parts",
                "root@127.0.0.1:22",
                "set ssh_key in nodes/pve.yaml",
                "cannot read SSH private key",
            ] {
                assert!(e.message.contains(text), "{text:?} not in {}", e.message);
            }
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(rig.api.writes(), 0);
}

#[tokio::test]
async fn a_refused_login_names_the_host_and_what_to_fix() {
    let rig = rig("root", true);
    rig.api.always(
        Method::GET,
        CONTENT,
        content(vec![part(0), part(1), part(2)]),
    );
    rig.ssh.fail_connects([ConnectFailure::AuthRefused]);
    match pass(&rig, "a", &mut Memory::default()).await {
        StepOutcome::Failed(e) => {
            assert!(!e.transient, "{e:?}");
            assert!(e.message.contains("authorized_keys"), "{}", e.message);
            assert!(e.message.contains("root@127.0.0.1:22"), "{}", e.message);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The claim on the join is released: a later attempt may join.
    rig.ssh
        .expect(PATH, Reply::ok(format!("{DIR}/debian-13-pve.qcow2\n")))
        .expect(
            JOIN,
            Reply::fail(1, "cat: write error: No space left on device\n"),
        );
    match pass(&rig, "b", &mut Memory::default()).await {
        StepOutcome::Failed(e) => {
            assert!(!e.transient, "{e:?}");
            assert!(e.message.contains("No space left"), "{}", e.message);
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn a_short_join_is_removed_and_the_parts_kept() {
    let rig = rig("root", true);
    let parts = vec![part(0), part(1), part(2)];
    let mut after = parts.clone();
    after.push(file("debian-13-pve.qcow2", 200));
    rig.api
        .once(Method::GET, CONTENT, content(parts))
        .once(Method::GET, CONTENT, content(after));
    rig.ssh
        .expect(PATH, Reply::ok(format!("{DIR}/debian-13-pve.qcow2\n")))
        .expect(JOIN, Reply::ok(""))
        .expect(
            "rm -f /var/lib/vz/import/debian-13-pve.qcow2",
            Reply::ok(""),
        );
    match pass(&rig, "a", &mut Memory::default()).await {
        StepOutcome::Failed(e) => {
            assert!(e.transient, "{e:?}");
            assert!(e.message.contains("has 200 bytes"), "{}", e.message);
            assert!(e.message.contains("have 303"), "{}", e.message);
        }
        other => panic!("expected a transient failure, got {other:?}"),
    }
    assert!(rig.ssh.unmet().is_empty(), "{:?}", rig.ssh.unmet());
}

#[tokio::test]
async fn another_user_joins_through_sudo() {
    let rig = rig("pveadmin", true);
    rig.api
        .once(
            Method::GET,
            CONTENT,
            content(vec![part(0), part(1), part(2)]),
        )
        .once(
            Method::GET,
            CONTENT,
            content(vec![file("debian-13-pve.qcow2", 303)]),
        );
    let sudo = |line: &str| format!("sudo -n sh -c '{line}'");
    rig.ssh
        .expect(
            &sudo(PATH),
            Reply::ok(format!("{DIR}/debian-13-pve.qcow2\n")),
        )
        .expect(&sudo(JOIN), Reply::ok(""))
        .expect(&sudo(CLEAN), Reply::ok(""));
    let out = pass(&rig, "a", &mut Memory::default()).await;
    assert!(matches!(out, StepOutcome::Done), "{out:?}");
    assert!(rig.ssh.unmet().is_empty(), "{:?}", rig.ssh.unmet());
}

#[tokio::test]
async fn an_unexpected_import_path_is_refused() {
    let rig = rig("root", true);
    rig.api.always(
        Method::GET,
        CONTENT,
        content(vec![part(0), part(1), part(2)]),
    );
    rig.ssh.expect(PATH, Reply::ok("/dev/zvol/rpool/x\n"));
    match pass(&rig, "a", &mut Memory::default()).await {
        StepOutcome::Failed(e) => {
            assert!(!e.transient, "{e:?}");
            assert!(e.message.contains("file-based storage"), "{}", e.message);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(rig.ssh.executed_lines(), [PATH], "nothing joined");
}

#[tokio::test]
async fn a_downloaded_file_that_went_away_is_fetched_again() {
    let rig = rig("root", true);
    let first = upid("pve", "download", "debian-13-pve.partaa.raw");
    let second = upid("pve", "download", "debian-13-pve.partaa.raw");
    rig.api
        .always(Method::GET, CONTENT, content(vec![part(1), part(2)]))
        .once(
            Method::POST,
            DOWNLOAD,
            PveReply::Data(json!(first.to_string())),
        )
        .once(
            Method::POST,
            DOWNLOAD,
            PveReply::Data(json!(second.to_string())),
        )
        .data(
            Method::GET,
            &task_status_path(&first),
            task_status(&first, Some("OK")),
        );
    let mut m = Memory::default();
    assert!(requeued(&pass(&rig, "a", &mut m).await));
    // Done, but the listing of this pass was made before that was seen.
    assert!(requeued(&pass(&rig, "a", &mut m).await));
    assert_eq!(downloads(&rig.api).len(), 1);
    // A later listing still lacks it: someone removed it.
    assert!(requeued(&pass(&rig, "a", &mut m).await));
    assert_eq!(downloads(&rig.api).len(), 2);
}

// How an image ships, asked of a release on 127.0.0.1.

/// The SHA-256 an image is downloaded against (same rig and release).
mod checksum;

/// How the test release answers for a path.
#[derive(Clone, Copy)]
enum Serve {
    Found,
    /// 200 with this body (a checksum file).
    Body(&'static str),
    Status(u16),
    /// A redirect (302) to another path, as GitHub's release downloads do.
    To(&'static str),
}

/// Requests a release got: (path, `Range` header).
type Hits = Arc<std::sync::Mutex<Vec<(String, Option<String>)>>>;

/// A release on 127.0.0.1 serving `/rel/<asset>` (anything not listed is
/// 404), and the requests it got: (path, `Range` header).
struct Release {
    base_url: String,
    hits: Hits,
}

impl Release {
    async fn start(assets: &[(&str, Serve)]) -> Release {
        use axum::http::{HeaderMap, StatusCode, Uri, header};
        use axum::response::IntoResponse;

        let table: Arc<HashMap<String, Serve>> = Arc::new(
            assets
                .iter()
                .map(|(name, serve)| {
                    let path = if name.starts_with('/') {
                        name.to_string()
                    } else {
                        format!("/rel/{name}")
                    };
                    (path, *serve)
                })
                .collect(),
        );
        let hits = Hits::default();
        let seen = hits.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
            let (table, seen) = (table.clone(), seen.clone());
            async move {
                let range = headers
                    .get(header::RANGE)
                    .and_then(|v| v.to_str().ok())
                    .map(String::from);
                seen.lock().unwrap().push((uri.path().to_string(), range));
                match table.get(uri.path()) {
                    Some(Serve::Found) => (StatusCode::PARTIAL_CONTENT, "Q").into_response(),
                    Some(Serve::Body(text)) => (StatusCode::OK, *text).into_response(),
                    Some(Serve::Status(code)) => {
                        StatusCode::from_u16(*code).unwrap().into_response()
                    }
                    Some(Serve::To(target)) => {
                        (StatusCode::FOUND, [(header::LOCATION, *target)]).into_response()
                    }
                    None => StatusCode::NOT_FOUND.into_response(),
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Release {
            base_url: format!("http://{addr}/rel/"),
            hits,
        }
    }

    /// The paths asked for, in order.
    fn paths(&self) -> Vec<String> {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .map(|(p, _)| p.clone())
            .collect()
    }
}

const WHOLE: &str = "/rel/debian-13-pve.qcow2";

#[tokio::test]
async fn a_whole_asset_is_asked_about_once_and_downloaded_whole() {
    let release = Release::start(&[("debian-13-pve.qcow2", Serve::Found)]).await;
    let rig = rig_with("root", true, &release.base_url, None);
    let t = upid("pve", "download", "debian-13-pve.qcow2");
    rig.api
        .always(Method::GET, CONTENT, content(vec![]))
        .once(Method::POST, DOWNLOAD, PveReply::Data(json!(t.to_string())))
        .data(Method::GET, &task_status_path(&t), task_status(&t, None));
    let (mut ma, mut mb) = (Memory::default(), Memory::default());
    assert!(requeued(&pass(&rig, "a", &mut ma).await));
    assert!(requeued(&pass(&rig, "b", &mut mb).await));
    assert!(requeued(&pass(&rig, "a", &mut ma).await));
    assert_eq!(
        downloads(&rig.api),
        [(
            "debian-13-pve.qcow2".to_string(),
            format!("{}debian-13-pve.qcow2", release.base_url)
        )]
    );
    // One question for the run, for the first byte only; one for the
    // checksum file, which this release lacks.
    assert_eq!(
        *release.hits.lock().unwrap(),
        [
            (WHOLE.to_string(), Some("bytes=0-0".to_string())),
            (format!("{WHOLE}.sha256"), None)
        ]
    );
    assert_eq!(rig.ssh.connect_attempts(), 0);
    assert_eq!(checksum::checksums(&rig.api), [None]);
}

#[tokio::test]
async fn parts_are_found_in_order_until_one_is_missing() {
    let release = Release::start(&[
        ("debian-13-pve.qcow2.partaa", Serve::Found),
        // Followed, as GitHub's redirects to signed URLs are.
        (
            "debian-13-pve.qcow2.partab",
            Serve::To("/objects/debian-13-pve.qcow2.partab"),
        ),
        ("/objects/debian-13-pve.qcow2.partab", Serve::Found),
        ("debian-13-pve.qcow2.partac", Serve::Found),
        ("debian-13-pve.qcow2.partae", Serve::Found),
    ])
    .await;
    let rig = rig_with("root", true, &release.base_url, None);
    script_part_downloads(&rig, 3);
    rig.api.always(Method::GET, CONTENT, content(vec![]));
    let (mut ma, mut mb) = (Memory::default(), Memory::default());
    assert!(requeued(&pass(&rig, "a", &mut ma).await));
    assert!(requeued(&pass(&rig, "b", &mut mb).await));
    let base = &release.base_url;
    assert_eq!(
        downloads(&rig.api),
        [
            (
                "debian-13-pve.partaa.raw".to_string(),
                format!("{base}debian-13-pve.qcow2.partaa")
            ),
            (
                "debian-13-pve.partab.raw".into(),
                format!("{base}debian-13-pve.qcow2.partab")
            ),
            (
                "debian-13-pve.partac.raw".into(),
                format!("{base}debian-13-pve.qcow2.partac")
            ),
        ]
    );
    // partad is missing: partae is never asked for, nor anything twice.
    assert_eq!(
        release.paths(),
        [
            WHOLE,
            "/rel/debian-13-pve.qcow2.partaa",
            "/rel/debian-13-pve.qcow2.partab",
            "/objects/debian-13-pve.qcow2.partab",
            "/rel/debian-13-pve.qcow2.partac",
            "/rel/debian-13-pve.qcow2.partad",
        ]
    );
}

#[tokio::test]
async fn neither_the_asset_nor_a_first_part_is_a_clear_refusal() {
    let release = Release::start(&[]).await;
    let rig = rig_with("root", true, &release.base_url, None);
    rig.api.always(Method::GET, CONTENT, content(vec![]));
    for node in ["a", "b"] {
        match pass(&rig, node, &mut Memory::default()).await {
            StepOutcome::Failed(e) => {
                assert!(!e.transient, "{e:?}");
                for text in [
                    "image debian-13-pve is not at its source".to_string(),
                    format!("{}debian-13-pve.qcow2,", release.base_url),
                    format!("{}debian-13-pve.qcow2.partaa", release.base_url),
                    "image_source".to_string(),
                ] {
                    assert!(e.message.contains(&text), "{text:?} not in {}", e.message);
                }
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    // Asked once for both nodes; nothing downloaded.
    assert_eq!(release.paths(), [WHOLE, "/rel/debian-13-pve.qcow2.partaa"]);
    assert_eq!(rig.api.writes(), 0);
}

#[tokio::test]
async fn an_image_in_storage_is_never_asked_about() {
    let release = Release::start(&[("debian-13-pve.qcow2", Serve::Found)]).await;
    let rig = rig_with("root", true, &release.base_url, None);
    rig.api.always(
        Method::GET,
        CONTENT,
        content(vec![file("debian-13-pve.qcow2", 303)]),
    );
    let out = pass(&rig, "a", &mut Memory::default()).await;
    assert!(matches!(out, StepOutcome::Done), "{out:?}");
    assert!(release.paths().is_empty(), "{:?}", release.paths());
    assert_eq!(rig.api.writes(), 0);
}

#[tokio::test]
async fn image_parts_in_site_yaml_skips_asking() {
    let release = Release::start(&[("debian-13-pve.qcow2", Serve::Found)]).await;
    let rig = rig_with("root", true, &release.base_url, Some(2));
    rig.api.always(Method::GET, CONTENT, content(vec![]));
    for i in 0..2 {
        let t = upid(
            "pve",
            "download",
            &source::part_file("debian-13-pve", i).unwrap(),
        );
        rig.api
            .once(Method::POST, DOWNLOAD, PveReply::Data(json!(t.to_string())));
    }
    assert!(requeued(&pass(&rig, "a", &mut Memory::default()).await));
    let got: Vec<String> = downloads(&rig.api).into_iter().map(|(_, u)| u).collect();
    assert_eq!(
        got,
        [
            format!("{}debian-13-pve.qcow2.partaa", release.base_url),
            format!("{}debian-13-pve.qcow2.partab", release.base_url),
        ]
    );
    assert!(release.paths().is_empty(), "{:?}", release.paths());
}

#[tokio::test]
async fn no_clear_answer_leaves_the_whole_asset_to_pve() {
    let release = Release::start(&[("debian-13-pve.qcow2", Serve::Status(403))]).await;
    let rig = rig_with("root", true, &release.base_url, None);
    let t = upid("pve", "download", "debian-13-pve.qcow2");
    rig.api
        .always(Method::GET, CONTENT, content(vec![]))
        .once(Method::POST, DOWNLOAD, PveReply::Data(json!(t.to_string())))
        .data(
            Method::GET,
            &task_status_path(&t),
            task_status(&t, Some("download failed: 404 Not Found")),
        );
    let mut m = Memory::default();
    assert!(requeued(&pass(&rig, "a", &mut m).await));
    let got: Vec<String> = downloads(&rig.api).into_iter().map(|(f, _)| f).collect();
    assert_eq!(got, ["debian-13-pve.qcow2"]);
    // PVE could not download it either: the failure says what to try.
    match pass(&rig, "a", &mut m).await {
        StepOutcome::Failed(e) => {
            assert!(e.transient, "{e:?}");
            for text in ["404 Not Found", "403 Forbidden", "image_parts"] {
                assert!(e.message.contains(text), "{text:?} not in {}", e.message);
            }
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(
        release.paths(),
        [WHOLE.to_string(), format!("{WHOLE}.sha256")],
        "the answers are kept for the run"
    );
}

#[tokio::test]
async fn an_unreachable_source_leaves_the_whole_asset_to_pve() {
    // A loopback port nothing listens on any more.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let rig = rig_with("root", true, &format!("http://{closed}/rel/"), None);
    let t = upid("pve", "download", "debian-13-pve.qcow2");
    rig.api.always(Method::GET, CONTENT, content(vec![])).once(
        Method::POST,
        DOWNLOAD,
        PveReply::Data(json!(t.to_string())),
    );
    assert!(requeued(&pass(&rig, "a", &mut Memory::default()).await));
    assert_eq!(downloads(&rig.api).len(), 1);
}

#[tokio::test]
async fn an_unclear_part_fails_for_now_and_is_asked_again() {
    let release = Release::start(&[
        ("debian-13-pve.qcow2.partaa", Serve::Found),
        ("debian-13-pve.qcow2.partab", Serve::Status(503)),
    ])
    .await;
    let rig = rig_with("root", true, &release.base_url, None);
    rig.api.always(Method::GET, CONTENT, content(vec![]));
    for _ in 0..2 {
        match pass(&rig, "a", &mut Memory::default()).await {
            StepOutcome::Failed(e) => {
                assert!(e.transient, "{e:?}");
                assert!(e.message.contains("partab"), "{}", e.message);
                assert!(e.message.contains("503"), "{}", e.message);
            }
            other => panic!("expected a transient failure, got {other:?}"),
        }
    }
    // Not kept: the second attempt asked again.
    assert_eq!(
        release
            .paths()
            .iter()
            .filter(|p| p.as_str() == WHOLE)
            .count(),
        2
    );
    assert_eq!(rig.api.writes(), 0);
}

#[tokio::test]
async fn nodes_asking_at_the_same_time_share_one_question() {
    let release = Release::start(&[
        ("debian-13-pve.qcow2.partaa", Serve::Found),
        ("debian-13-pve.qcow2.partab", Serve::Found),
    ])
    .await;
    let rig = rig_with("root", true, &release.base_url, None);
    rig.api.always(Method::GET, CONTENT, content(vec![]));
    script_part_downloads(&rig, 2);
    let (mut ma, mut mb) = (Memory::default(), Memory::default());
    let (a, b) = tokio::join!(pass(&rig, "a", &mut ma), pass(&rig, "b", &mut mb));
    assert!(requeued(&a) && requeued(&b), "{a:?} {b:?}");
    assert_eq!(
        release.paths(),
        [
            WHOLE,
            "/rel/debian-13-pve.qcow2.partaa",
            "/rel/debian-13-pve.qcow2.partab",
            "/rel/debian-13-pve.qcow2.partac",
        ]
    );
    assert_eq!(downloads(&rig.api).len(), 2);
}

#[tokio::test]
async fn a_download_still_running_after_download_images_fails_the_node() {
    let release = Release::start(&[("debian-13-pve.qcow2", Serve::Found)]).await;
    let mut rig = rig_with("root", true, &release.base_url, None);
    rig.controller.timing.download_timeout = std::time::Duration::from_millis(50);
    let t = upid("pve", "download", "debian-13-pve.qcow2");
    rig.api
        .always(Method::GET, CONTENT, content(vec![]))
        .once(Method::POST, DOWNLOAD, PveReply::Data(json!(t.to_string())))
        .data(Method::GET, &task_status_path(&t), task_status(&t, None));
    let mut m = Memory::default();
    // Started, then waited on while the task runs.
    assert!(requeued(&pass(&rig, "a", &mut m).await));
    assert!(requeued(&pass(&rig, "a", &mut m).await));
    tokio::time::sleep(std::time::Duration::from_millis(80)).await;
    match pass(&rig, "a", &mut m).await {
        StepOutcome::Failed(err) => {
            assert!(!err.transient, "{}", err.message);
            assert!(err.message.contains("download_images"), "{}", err.message);
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}
