//! The create step against a scripted PVE that behaves like real PVE: the
//! POST leaves a placeholder holding only `lock: create` until the import
//! is done. A create whose answer is lost, or whose process died before it
//! saw the task, is followed through its placeholder, never sent twice; a
//! placeholder nobody here intended is never touched.

use std::sync::Arc;

use reqwest::Method;
use serde_json::json;

use super::tests::{controller, want};
use super::{Memory, VmController, VmStep};
use crate::executor::{Controller, StepOutcome};
use crate::store::{CreateIntent, Durability, NodeKey, NodeRecord, Store};
use homestak_base::id::VmId;
use homestak_core::plan::{Action, NodePlan};
use homestak_pve::fake::{self, Reply, Scripted, upid};
use homestak_pve::{Envelope, Upid};

fn id(vmid: u32) -> VmId {
    VmId::new(vmid.into()).unwrap()
}

fn create(vmid: Option<u32>) -> NodePlan {
    NodePlan {
        node: "web".parse().unwrap(),
        action: Action::Create,
        vmid: vmid.map(id),
        changes: Vec::new(),
        reason: None,
        blocked: None,
        pve_node: None,
        foreign: false,
    }
}

fn config_path(vmid: u32) -> String {
    format!("/nodes/pve/qemu/{vmid}/config")
}

fn missing(vmid: u32) -> Reply {
    Reply::error(
        500,
        format!("Configuration file 'nodes/pve/qemu-server/{vmid}.conf' does not exist"),
    )
}

/// PVE's placeholder while a create imports its disks.
fn placeholder() -> Reply {
    Reply::Data(json!({"lock": "create", "digest": "0123"}))
}

/// The VM at `vmid` once the create wrote every option: ours.
fn finished(c: &VmController, vmid: u32) -> Reply {
    let key = super::tests::owner_key();
    let want = &c.desired["web"];
    Reply::Data(json!({
        "name": "web",
        "tags": super::mapping::tags_for(&key, id(vmid), "demo", want).join(";"),
        "description": super::mapping::marks_for("demo", want).to_description(&key, id(vmid)),
        "digest": "4567",
    }))
}

/// `GET /nodes/pve/tasks` listing `upids`, newest first (running: no
/// status, no end).
fn listing(upids: &[&Upid]) -> Reply {
    listing_ended(upids, &[])
}

/// The same with `ended` listed after them, finished with an error.
fn listing_ended(upids: &[&Upid], ended: &[&Upid]) -> Reply {
    let entry = |u: &Upid| {
        json!({"upid": u.as_str(), "node": "pve", "pid": u.pid(), "pstart": u.pstart(),
               "starttime": u.starttime(), "type": u.kind(), "id": u.id(), "user": "root@pam"})
    };
    let data: Vec<_> = upids
        .iter()
        .map(|u| entry(u))
        .chain(ended.iter().map(|u| {
            let mut e = entry(u);
            e["status"] = json!("unable to create VM");
            e["endtime"] = json!(u.starttime() + 5);
            e
        }))
        .collect();
    Reply::Envelope(Envelope {
        total: Some(data.len() as u64),
        data: json!(data),
    })
}

fn posts(script: &Scripted) -> usize {
    script
        .requests()
        .iter()
        .filter(|r| r.method == Method::POST && r.path == "/nodes/pve/qemu")
        .count()
}

fn task_lists(script: &Scripted) -> usize {
    script
        .requests()
        .iter()
        .filter(|r| r.method == Method::GET && r.path == "/nodes/pve/tasks")
        .count()
}

fn step(c: &VmController) -> VmStep {
    VmStep::CreateVm(Arc::new(c.desired["web"].clone()))
}

fn key() -> NodeKey {
    NodeKey::new("demo", &"web".parse().unwrap())
}

/// A store that remembers a create of `vmid` sent by a process that died
/// before it saw the answer.
fn store_with_intent(vmid: u32) -> Arc<dyn Store> {
    let store = Arc::new(crate::store::memory());
    store
        .put_node(
            &key(),
            &NodeRecord {
                vmid: Some(id(vmid)),
                create_intent: Some(CreateIntent {
                    vmid: Some(id(vmid)),
                    pve_node: Some("pve".parse().unwrap()),
                    ..CreateIntent::default()
                }),
                ..NodeRecord::default()
            },
            Durability::Flush,
        )
        .unwrap();
    store
}

fn with_store(c: VmController, store: &Arc<dyn Store>) -> VmController {
    VmController {
        store: Some(store.clone()),
        ..c
    }
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_is_followed_not_sent_again() {
    let script = Scripted::new();
    let task = upid("pve", "qmcreate", "120");
    let store: Arc<dyn Store> = Arc::new(crate::store::memory());
    let c = with_store(controller(&script, want(None)), &store);
    script
        .always(Method::GET, "/cluster/nextid", Reply::Data(json!("120")))
        .once(Method::GET, &config_path(120), missing(120))
        .once(Method::GET, &config_path(120), placeholder())
        .always(Method::GET, &config_path(120), finished(&c, 120))
        // The create is done by PVE, but its answer never arrives.
        .always(Method::POST, "/nodes/pve/qemu", Reply::Timeout)
        .always(Method::GET, "/nodes/pve/tasks", listing(&[&task]))
        .once(
            Method::GET,
            &fake::task_status_path(&task),
            Reply::Data(fake::task_status(&task, None)),
        )
        .always(
            Method::GET,
            &fake::task_status_path(&task),
            Reply::Data(fake::task_status(&task, Some("OK"))),
        );
    let node = create(None);
    let mut m = Memory::default();

    let out = c.run(&node, &step(&c), &mut m).await;
    assert!(
        matches!(&out, StepOutcome::Failed(e) if e.transient),
        "{out:?}"
    );
    // The vmid was recorded before the POST went out.
    let record = store.get_node(&key()).unwrap().unwrap();
    assert_eq!(record.create_intent.and_then(|i| i.vmid), Some(id(120)));
    assert_eq!(record.vmid, Some(id(120)));

    // The retry finds the placeholder at the intended vmid and follows its
    // task instead of picking another vmid.
    let out = c.run(&node, &step(&c), &mut m).await;
    assert!(matches!(out, StepOutcome::Requeue(_)), "{out:?}");
    assert_eq!(m.upid.as_ref(), Some(&task));
    let out = c.run(&node, &step(&c), &mut m).await;
    assert!(matches!(out, StepOutcome::Done), "{out:?}");

    assert_eq!(posts(&script), 1, "one create, one VM");
    assert_eq!(m.vmid, Some(id(120)));
    assert!(m.created);
    let record = store.get_node(&key()).unwrap().unwrap();
    assert!(record.create_intent.is_none(), "{record:?}");
}

#[tokio::test]
async fn a_create_a_dead_process_sent_is_followed_by_the_next_one() {
    // The store holds the intent of vmid 130 (the process died between the
    // POST and its answer); PVE still imports.
    let store = store_with_intent(130);
    let script = Scripted::new();
    let task = upid("pve", "qmcreate", "130");
    let older = upid("pve", "qmcreate", "130");
    let c = with_store(controller(&script, want(None)), &store);
    script
        .once(Method::GET, &config_path(130), placeholder())
        .always(Method::GET, &config_path(130), finished(&c, 130))
        .always(
            Method::GET,
            "/nodes/pve/tasks",
            listing_ended(&[&task], &[&older]),
        )
        .always(
            Method::GET,
            &fake::task_status_path(&older),
            Reply::Data(fake::task_status(&older, Some("unable to create VM 130"))),
        )
        .once(
            Method::GET,
            &fake::task_status_path(&task),
            Reply::Data(fake::task_status(&task, None)),
        )
        .always(
            Method::GET,
            &fake::task_status_path(&task),
            Reply::Data(fake::task_status(&task, Some("OK"))),
        );
    // The planner points the node at the intended vmid.
    let node = create(Some(130));
    let mut m = Memory::default();
    let out = c.run(&node, &step(&c), &mut m).await;
    assert!(matches!(out, StepOutcome::Requeue(_)), "{out:?}");
    // A crash now resumes the same task: it is recorded as in flight.
    let flight = store.get_node(&key()).unwrap().unwrap().in_flight.unwrap();
    assert_eq!(flight.upid, task.to_string());
    let out = c.run(&node, &step(&c), &mut m).await;
    assert!(matches!(out, StepOutcome::Done), "{out:?}");
    assert_eq!(
        posts(&script),
        0,
        "the create was sent once, by the dead process"
    );
    assert_eq!(script.writes(), 0);
    assert!(m.created);
}

#[tokio::test]
async fn a_placeholder_we_never_intended_is_left_alone() {
    // A remembered vmid (no intent) now holds someone's create in progress.
    let script = Scripted::new();
    script
        .always(Method::GET, &config_path(140), placeholder())
        .always(Method::GET, "/cluster/nextid", Reply::Data(json!("141")))
        .always(Method::GET, &config_path(141), missing(141))
        .always(
            Method::POST,
            "/nodes/pve/qemu",
            Reply::Data(json!(upid("pve", "qmcreate", "141").to_string())),
        );
    let c = controller(&script, want(None));
    let node = create(Some(140));
    let mut m = Memory::default();
    let out = c.run(&node, &step(&c), &mut m).await;
    assert!(
        matches!(&out, StepOutcome::Failed(e) if e.transient),
        "{out:?}"
    );
    assert_eq!(m.vmid, None, "given up for another vmid");
    let out = c.run(&node, &step(&c), &mut m).await;
    assert!(matches!(out, StepOutcome::Requeue(_)), "{out:?}");
    assert_eq!(m.vmid, Some(id(141)));
    assert_eq!(task_lists(&script), 0, "their task is none of our business");
    let touched = script
        .requests()
        .iter()
        .any(|r| r.method != Method::GET && r.path.contains("/140"));
    assert!(!touched);

    // A vmid the manifest names: refused, untouched.
    let script = Scripted::new();
    script.always(Method::GET, &config_path(142), placeholder());
    let c = controller(&script, want(Some(142)));
    let mut m = Memory::default();
    let out = c.run(&create(Some(142)), &step(&c), &mut m).await;
    assert!(
        matches!(&out, StepOutcome::Failed(e) if !e.transient),
        "{out:?}"
    );
    assert_eq!(script.writes(), 0);
    assert_eq!(task_lists(&script), 0);
}

#[tokio::test]
async fn our_placeholder_at_a_vmid_the_manifest_names_is_no_conflict() {
    let store = store_with_intent(150);
    let script = Scripted::new();
    let task = upid("pve", "qmcreate", "150");
    script
        .always(Method::GET, &config_path(150), placeholder())
        .always(Method::GET, "/nodes/pve/tasks", listing(&[&task]))
        .always(
            Method::GET,
            &fake::task_status_path(&task),
            Reply::Data(fake::task_status(&task, None)),
        );
    let c = with_store(controller(&script, want(Some(150))), &store);
    let mut m = Memory::default();
    let out = c.run(&create(Some(150)), &step(&c), &mut m).await;
    assert!(matches!(out, StepOutcome::Requeue(_)), "{out:?}");
    assert_eq!(m.upid.as_ref(), Some(&task));
    assert_eq!(script.writes(), 0);
}

#[tokio::test]
async fn a_failed_create_is_sent_again_at_the_same_vmid_once_pve_removed_it() {
    let store = store_with_intent(160);
    let script = Scripted::new();
    let task = upid("pve", "qmcreate", "160");
    let again = upid("pve", "qmcreate", "160");
    script
        .once(Method::GET, &config_path(160), placeholder())
        // The task failed in between; PVE removed its placeholder.
        .always(Method::GET, &config_path(160), missing(160))
        .always(Method::GET, "/nodes/pve/tasks", listing(&[&task]))
        .always(
            Method::GET,
            &fake::task_status_path(&task),
            Reply::Data(fake::task_status(
                &task,
                Some("unable to create VM 160 - import failed"),
            )),
        )
        .always(
            Method::GET,
            &fake::task_log_path(&task),
            Reply::Data(json!([])),
        )
        .always(
            Method::POST,
            "/nodes/pve/qemu",
            Reply::Data(json!(again.to_string())),
        );
    let c = with_store(controller(&script, want(None)), &store);
    let node = create(Some(160));
    let mut m = Memory::default();
    let out = c.run(&node, &step(&c), &mut m).await;
    assert!(
        matches!(&out, StepOutcome::Failed(e) if e.transient),
        "{out:?}"
    );
    let out = c.run(&node, &step(&c), &mut m).await;
    assert!(matches!(out, StepOutcome::Requeue(_)), "{out:?}");
    let vmids: Vec<String> = script
        .requests()
        .iter()
        .filter(|r| r.method == Method::POST)
        .filter_map(|r| {
            r.params
                .iter()
                .find(|(k, _)| k == "vmid")
                .map(|(_, v)| v.clone())
        })
        .collect();
    assert_eq!(vmids, ["160"]);
}

#[tokio::test]
async fn a_placeholder_its_failed_task_left_behind_is_reported_not_removed() {
    let store = store_with_intent(170);
    let script = Scripted::new();
    let task = upid("pve", "qmcreate", "170");
    script
        .always(Method::GET, &config_path(170), placeholder())
        .always(Method::GET, "/nodes/pve/tasks", listing(&[&task]))
        .always(
            Method::GET,
            &fake::task_status_path(&task),
            Reply::Data(fake::task_status(&task, Some("unexpected status"))),
        )
        .always(
            Method::GET,
            &fake::task_log_path(&task),
            Reply::Data(json!([])),
        );
    let c = with_store(controller(&script, want(None)), &store);
    let mut m = Memory::default();
    let out = c.run(&create(Some(170)), &step(&c), &mut m).await;
    match out {
        StepOutcome::Failed(e) => {
            assert!(!e.transient, "{e:?}");
            assert!(e.message.contains("qm unlock 170"), "{e:?}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(script.writes(), 0);
}
