//! The create step's vmid rules against a scripted PVE: vmids handed out
//! in a run never collide, a vmid someone else took is given up unless the
//! manifest names it, and a failed read never makes a second VM.

use std::collections::HashMap;
use std::sync::Arc;

use reqwest::Method;
use serde_json::json;

use super::{ImageSource, Memory, RunState, Timing, VmController, VmStep};
use crate::executor::{AsStep, Controller, StepOutcome};
use homestak_api::step::Step;
use homestak_base::id::VmId;
use homestak_core::plan::{Action, DesiredVm, IpConfig, Kind, NodePlan};
use homestak_pve::fake::{Reply, Scripted, upid};

fn id(vmid: u32) -> VmId {
    VmId::new(vmid.into()).unwrap()
}

pub(crate) fn want(vmid: Option<u32>) -> DesiredVm {
    DesiredVm {
        name: "web".parse().unwrap(),
        kind: Kind::Vm,
        parent: None,
        vmid: vmid.map(id),
        cores: 1,
        memory_mib: 1024,
        disk_gib: 8,
        image: "debian-12".into(),
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

/// The ownership key of the tests' site.
pub(crate) fn owner_key() -> homestak_core::plan::marks::OwnerKey {
    homestak_core::plan::marks::OwnerKey::new(&homestak_base::secret::Secret::new(
        "test-ownership-key-0123456789abcdef",
    ))
    .unwrap()
}

pub(crate) fn controller(script: &Arc<Scripted>, want: DesiredVm) -> VmController {
    VmController {
        api: Arc::new(script.client()),
        pve_node: "pve".parse().unwrap(),
        manifest: "demo".into(),
        image_storage: "local".into(),
        default_storage: "local-zfs".into(),
        images: ImageSource {
            base_url: "https://127.0.0.1:9/".into(),
            parts: HashMap::new(),
            sha256: HashMap::new(),
        },
        desired: HashMap::from([(want.name.clone(), want)]),
        store: None,
        ssh: None,
        known_hosts: None,
        host_ssh: None,
        owner_key: crate::controllers::vm::tests::owner_key(),
        spec_ca: None,
        timing: Timing::default(),
        shared: RunState::default(),
    }
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

fn missing(vmid: u32) -> Reply {
    Reply::error(
        500,
        format!("Configuration file 'nodes/pve/qemu-server/{vmid}.conf' does not exist"),
    )
}

/// A VM someone made by hand: no tag, no marks.
fn foreign() -> Reply {
    Reply::Data(json!({"name": "hand-made", "cores": 2, "digest": "abc"}))
}

/// The create step as `c` plans it for its one desired VM.
fn create_vm(c: &VmController) -> VmStep {
    VmStep::CreateVm(Arc::new(c.desired["web"].clone()))
}

fn created_vmids(script: &Scripted) -> Vec<String> {
    script
        .requests()
        .iter()
        .filter(|r| r.method == Method::POST && r.path == "/nodes/pve/qemu")
        .filter_map(|r| {
            r.params
                .iter()
                .find(|(k, _)| k == "vmid")
                .map(|(_, v)| v.clone())
        })
        .collect()
}

#[tokio::test]
async fn allocation_skips_reserved_and_taken_vmids() {
    let script = Scripted::new();
    script
        .once(Method::GET, "/cluster/nextid", Reply::Data(json!("100")))
        .once(
            Method::GET,
            "/cluster/nextid",
            Reply::param_error("vmid", "VM 101 already exists"),
        )
        .once(Method::GET, "/cluster/nextid", Reply::Data(json!("102")))
        .always(Method::GET, "/nodes/pve/qemu/102/config", missing(102))
        .always(
            Method::POST,
            "/nodes/pve/qemu",
            Reply::Data(json!(upid("pve", "qmcreate", "102").to_string())),
        );
    let c = controller(&script, want(None));
    // Another node of the plan will create vmid 100.
    c.reserve([id(100)]);
    let mut m = Memory::default();
    let out = c.run(&create(None), &create_vm(&c), &mut m).await;
    assert!(matches!(out, StepOutcome::Requeue(_)), "{out:?}");
    assert_eq!(m.vmid, Some(id(102)));
    assert_eq!(created_vmids(&script), ["102"]);
}

#[tokio::test]
async fn a_remembered_vmid_someone_took_is_given_up_for_another() {
    let script = Scripted::new();
    script
        .always(Method::GET, "/nodes/pve/qemu/105/config", foreign())
        .always(Method::GET, "/cluster/nextid", Reply::Data(json!("106")))
        .always(Method::GET, "/nodes/pve/qemu/106/config", missing(106))
        .always(
            Method::POST,
            "/nodes/pve/qemu",
            Reply::Data(json!(upid("pve", "qmcreate", "106").to_string())),
        );
    let c = controller(&script, want(None));
    let node = create(Some(105));
    let mut m = Memory::default();
    match c.run(&node, &create_vm(&c), &mut m).await {
        StepOutcome::Failed(e) => assert!(e.transient, "{e:?}"),
        other => panic!("expected a transient failure, got {other:?}"),
    }
    assert_eq!(m.vmid, None);
    assert_eq!(script.writes(), 0, "the foreign VM is never touched");
    let out = c.run(&node, &create_vm(&c), &mut m).await;
    assert!(matches!(out, StepOutcome::Requeue(_)), "{out:?}");
    assert_eq!(created_vmids(&script), ["106"]);
}

#[tokio::test]
async fn a_vmid_the_manifest_names_is_never_given_up() {
    let script = Scripted::new();
    script.always(Method::GET, "/nodes/pve/qemu/105/config", foreign());
    let c = controller(&script, want(Some(105)));
    let mut m = Memory::default();
    match c.run(&create(Some(105)), &create_vm(&c), &mut m).await {
        StepOutcome::Failed(e) => {
            assert!(!e.transient, "{e:?}");
            assert!(e.message.contains("vmid 105"), "{e:?}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(m.vmid, Some(id(105)));
    assert_eq!(script.writes(), 0);
}

#[tokio::test]
async fn a_failed_read_keeps_the_vmid_an_earlier_attempt_may_have_created() {
    let script = Scripted::new();
    script.always(
        Method::GET,
        "/nodes/pve/qemu/107/config",
        Reply::error(503, "Service Unavailable"),
    );
    let c = controller(&script, want(None));
    // An earlier attempt picked 107 and sent the create; its answer was lost.
    let mut m = Memory {
        vmid: Some(id(107)),
        ..Memory::default()
    };
    match c.run(&create(None), &create_vm(&c), &mut m).await {
        StepOutcome::Failed(e) => assert!(e.transient, "{e:?}"),
        other => panic!("expected a transient failure, got {other:?}"),
    }
    assert_eq!(m.vmid, Some(id(107)), "a new vmid could mean a second VM");
    assert_eq!(script.writes(), 0);
}

fn with_store(script: &Arc<Scripted>, store: Arc<dyn crate::store::Store>) -> VmController {
    let mut c = controller(script, want(None));
    c.store = Some(store);
    c
}

#[tokio::test]
async fn pruning_a_duplicate_keeps_the_nodes_record() {
    use crate::store::{Durability, NodeKey, NodeRecord, Store};
    let store = Arc::new(crate::store::memory());
    let key = NodeKey::new("demo", &"web".parse().unwrap());
    store
        .put_node(
            &key,
            &NodeRecord {
                vmid: Some(id(101)),
                ..NodeRecord::default()
            },
            Durability::Flush,
        )
        .unwrap();
    let script = Scripted::new();
    let c = with_store(&script, store.clone());
    let delete = |vmid| NodePlan {
        action: Action::Delete,
        ..create(Some(vmid))
    };
    let forget = VmStep::ForgetVm;

    // A second VM with the node's marks (vmid 102) is pruned: the record of
    // vmid 101, the node's VM, stays.
    let out = c.run(&delete(102), &forget, &mut Memory::default()).await;
    assert!(matches!(out, StepOutcome::Done), "{out:?}");
    assert_eq!(store.get_node(&key).unwrap().unwrap().vmid, Some(id(101)));

    // The node's own VM is deleted: its record goes.
    let out = c.run(&delete(101), &forget, &mut Memory::default()).await;
    assert!(matches!(out, StepOutcome::Done), "{out:?}");
    assert!(store.get_node(&key).unwrap().is_none());
}

#[tokio::test]
async fn the_address_is_in_the_store_as_soon_as_the_agent_reports_it() {
    use crate::store::{NodeKey, Store};
    // A run killed after `wait_ssh` trusted the VM's host key but before
    // `mark_converged` must leave the address where a destroy finds it
    // (to forget that key).
    let store = Arc::new(crate::store::memory());
    let script = Scripted::new();
    script.data(
        Method::GET,
        "/nodes/pve/qemu/100/agent/network-get-interfaces",
        json!({"result": [
            {"name": "lo", "ip-addresses": [{"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8}]},
            {"name": "eth0", "ip-addresses": [{"ip-address": "192.0.2.15", "ip-address-type": "ipv4", "prefix": 24}]}
        ]}),
    );
    let c = with_store(&script, store.clone());
    let mut m = Memory {
        vmid: Some(id(100)),
        ..Memory::default()
    };
    let out = c
        .run(&create(Some(100)), &VmStep::WaitAgentIp, &mut m)
        .await;
    assert!(matches!(out, StepOutcome::Done), "{out:?}");
    let key = NodeKey::new("demo", &"web".parse().unwrap());
    let record = store.get_node(&key).unwrap().expect("a record");
    assert_eq!(record.ip.as_deref(), Some("192.0.2.15"));
}

#[test]
fn every_vm_step_is_named_by_its_own_step() {
    let w = Arc::new(want(None));
    let all = [
        VmStep::EnsureImage(w.clone()),
        VmStep::CreateVm(w.clone()),
        VmStep::AdoptVm,
        VmStep::UpdateConfig(w.clone()),
        VmStep::ResizeDisk(w.clone()),
        VmStep::StartVm,
        VmStep::WaitAgentIp,
        VmStep::WaitSsh(w.clone()),
        VmStep::MarkConverged(w),
        VmStep::StopVm,
        VmStep::DestroyVm,
        VmStep::ForgetVm,
    ];
    // Named alike, so a step cannot report (or resume) as another.
    for step in &all {
        let variant = format!("{step:?}");
        let variant = variant.split('(').next().unwrap_or_default();
        assert_eq!(variant, format!("{:?}", step.as_step()));
    }
}

/// Only steps that allocate or free volumes hold a storage slot: the image
/// on the import storage, the create and the destroy on the VM's storage.
#[test]
fn only_allocating_steps_hold_a_storage() {
    let script = Scripted::new();
    let c = controller(&script, want(None));
    let on = |plan: &NodePlan| -> Vec<(Step, Option<String>)> {
        c.steps(plan)
            .into_iter()
            .map(|p| (p.work.as_step(), p.storage))
            .collect()
    };
    let held: Vec<(Step, Option<String>)> = vec![
        (Step::EnsureImage, Some("local".into())),
        (Step::CreateVm, Some("local-zfs".into())),
    ];
    let created = on(&create(None));
    assert_eq!(
        created
            .iter()
            .filter(|(_, s)| s.is_some())
            .cloned()
            .collect::<Vec<_>>(),
        held
    );
    assert!(created.iter().any(|(s, _)| *s == Step::ResizeDisk));
    let grow = NodePlan {
        action: Action::Update,
        changes: vec![homestak_core::plan::Change {
            field: homestak_core::plan::Field::Disk,
            from: "4".into(),
            to: "8".into(),
        }],
        ..create(Some(100))
    };
    assert_eq!(on(&grow)[0], (Step::ResizeDisk, None));
    let deleted = on(&delete_plan(100));
    assert_eq!(
        deleted,
        [
            (Step::StopVm, None),
            (Step::DestroyVm, Some("local-zfs".into())),
            (Step::ForgetVm, None)
        ]
    );
}

/// The config of our `web` VM with marks written for `written_for`.
fn marked(written_for: u32) -> Reply {
    let key = owner_key();
    let want = want(None);
    let vmid = id(written_for);
    Reply::Data(json!({
        "name": "web",
        "tags": super::mapping::tags_for(&key, vmid, "demo", &want).join(";"),
        "description": super::mapping::marks_for("demo", &want).to_description(&key, vmid),
        "digest": "abc",
    }))
}

fn delete_plan(vmid: u32) -> NodePlan {
    NodePlan {
        action: Action::Delete,
        ..create(Some(vmid))
    }
}

#[tokio::test]
async fn a_clone_carrying_our_marks_is_never_destroyed() {
    let script = Scripted::new();
    // vmid 105 is a clone of 101: PVE copied its tags and notes.
    script.always(Method::GET, "/nodes/pve/qemu/105/config", marked(101));
    let c = controller(&script, want(None));
    for step in [VmStep::StopVm, VmStep::DestroyVm] {
        match c
            .run(&delete_plan(105), &step, &mut Memory::default())
            .await
        {
            StepOutcome::Failed(e) => {
                assert!(!e.transient, "{e:?}");
                assert!(e.message.contains("vmid 105"), "{e:?}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    assert_eq!(script.writes(), 0, "the clone is never touched");
}

#[tokio::test]
async fn a_template_made_from_our_vm_is_never_destroyed() {
    let script = Scripted::new();
    let Reply::Data(mut config) = marked(101) else {
        unreachable!()
    };
    config["template"] = json!(1);
    script.always(
        Method::GET,
        "/nodes/pve/qemu/101/config",
        Reply::Data(config),
    );
    let c = controller(&script, want(None));
    let out = c
        .run(
            &delete_plan(101),
            &VmStep::DestroyVm,
            &mut Memory::default(),
        )
        .await;
    assert!(
        matches!(out, StepOutcome::Failed(ref e) if !e.transient),
        "{out:?}"
    );
    assert_eq!(script.writes(), 0);
}

#[tokio::test]
async fn a_vm_that_migrated_is_destroyed_on_its_new_node() {
    let script = Scripted::new();
    script
        .always(Method::GET, "/nodes/pve/qemu/101/config", missing(101))
        .always(
            Method::GET,
            "/cluster/resources",
            Reply::Data(json!([
                {"id": "qemu/101", "type": "qemu", "vmid": 101, "node": "pve2", "status": "stopped"}
            ])),
        )
        .always(Method::GET, "/nodes/pve2/qemu/101/config", marked(101))
        .always(
            Method::DELETE,
            "/nodes/pve2/qemu/101",
            Reply::Data(json!(upid("pve2", "qmdestroy", "101").to_string())),
        );
    let c = controller(&script, want(None));
    let mut m = Memory::default();
    let out = c.run(&delete_plan(101), &VmStep::DestroyVm, &mut m).await;
    assert!(matches!(out, StepOutcome::Requeue(_)), "{out:?}");
    let deletes: Vec<String> = script
        .requests()
        .iter()
        .filter(|r| r.method == Method::DELETE)
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(deletes, ["/nodes/pve2/qemu/101"]);
}

#[tokio::test]
async fn a_vm_gone_from_the_whole_cluster_is_done() {
    let script = Scripted::new();
    script
        .always(Method::GET, "/nodes/pve/qemu/101/config", missing(101))
        .always(Method::GET, "/cluster/resources", Reply::Data(json!([])));
    let c = controller(&script, want(None));
    let out = c
        .run(
            &delete_plan(101),
            &VmStep::DestroyVm,
            &mut Memory::default(),
        )
        .await;
    assert!(matches!(out, StepOutcome::Done), "{out:?}");
    assert_eq!(script.writes(), 0);
}
