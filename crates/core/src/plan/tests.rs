//! Planner tests: rules as unit tests, renderings as snapshots.
//!
//! Snapshots live in `src/plan/snapshots/`; run with `UPDATE_SNAPSHOTS=1`
//! to rewrite them after a deliberate change, then review the diff.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::marks::{Claim, Marks, TAG};
use super::*;
use homestak_base::id::PveNode;

pub(super) fn id(vmid: u32) -> VmId {
    VmId::new(vmid.into()).unwrap()
}

fn name(node: &str) -> NodeName {
    NodeName::new(node).unwrap()
}

pub(super) fn want(name: &str, vmid: Option<u32>) -> DesiredVm {
    DesiredVm {
        name: NodeName::new(name).unwrap(),
        kind: Kind::Vm,
        parent: None,
        vmid: vmid.map(id),
        cores: 2,
        memory_mib: 2048,
        disk_gib: 10,
        image: "debian-12".into(),
        storage: "local-zfs".into(),
        bridge: "vmbr0".into(),
        ip: IpConfig::Dhcp,
        nameserver: None,
        searchdomain: None,
        user: "homestak".into(),
        ssh_keys: vec!["ssh-ed25519 AAAA test@example".into()],
        spec: None,
    }
}

pub(super) fn desired(vms: Vec<DesiredVm>) -> Desired {
    Desired {
        manifest: "demo".into(),
        host: "pve".into(),
        vms,
    }
}

/// The VM homestak would have created for `w`.
pub(super) fn built(w: &DesiredVm, vmid: u32) -> ObservedVm {
    ObservedVm {
        vmid: id(vmid),
        name: Some(w.name.to_string()),
        node: PveNode::new("pve").unwrap(),
        power: Power::Running,
        lock: None,
        template: false,
        tags: BTreeSet::from([TAG.to_string(), owner_tag(vmid)]),
        claim: Some(Claim::Owned(Marks {
            manifest: "demo".into(),
            node: w.name.clone(),
            image: w.image.clone(),
            spec_hash: w.spec_hash(),
        })),
        owner_tag: Some(owner_tag(vmid)),
        cores: Some(w.cores),
        memory_mib: Some(w.memory_mib),
        disk_gib: Some(w.disk_gib),
        bridge: Some(w.bridge.clone()),
        ip: Some(w.ip.clone()),
    }
}

pub(super) fn foreign(vmid: u32, name: &str) -> ObservedVm {
    ObservedVm {
        vmid: id(vmid),
        name: Some(name.into()),
        node: PveNode::new("pve").unwrap(),
        power: Power::Running,
        lock: None,
        template: false,
        tags: BTreeSet::new(),
        claim: None,
        owner_tag: None,
        cores: Some(1),
        memory_mib: Some(512),
        disk_gib: Some(4),
        bridge: Some("vmbr0".into()),
        ip: None,
    }
}

/// A stand-in for the keyed tag the adapter computes.
fn owner_tag(vmid: u32) -> String {
    format!("homestak-{vmid:016x}")
}

pub(super) fn remember(node: &str, vmid: u32) -> Remembered {
    Remembered {
        node: name(node),
        vmid: id(vmid),
        spec_hash: None,
        intent: None,
    }
}

pub(super) const ON: Options = Options {
    allow_replace: false,
    prune: true,
    prune_duplicates: false,
};

#[test]
fn empty_world_creates_everything_in_order() {
    let d = desired(vec![want("a", Some(101)), want("b", None)]);
    let p = plan(&d, &Observed::default(), ON);
    let actions: Vec<_> = p
        .nodes
        .iter()
        .map(|n| (n.node.as_str(), n.action, n.vmid.map(VmId::get)))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("a", Action::Create, Some(101)),
            ("b", Action::Create, None)
        ]
    );
    assert!(!p.is_converged());
}

#[test]
fn converged_world_is_a_noop() {
    let a = want("a", Some(101));
    let d = desired(vec![a.clone()]);
    let o = Observed {
        vms: vec![built(&a, 101)],
        remembered: vec![remember("a", 101)],
    };
    let p = plan(&d, &o, ON);
    assert!(p.is_converged(), "{p:#?}");
}

#[test]
fn owned_vm_missing_from_store_is_adopted() {
    let a = want("a", None);
    let o = Observed {
        vms: vec![built(&a, 130)],
        remembered: vec![],
    };
    let p = plan(&desired(vec![a]), &o, ON);
    assert_eq!(p.nodes[0].action, Action::Adopt);
    assert_eq!(p.nodes[0].vmid, Some(id(130)));
    assert!(p.nodes[0].changes.is_empty());
}

#[test]
fn foreign_vm_on_our_vmid_is_a_conflict_and_never_pruned() {
    let d = desired(vec![want("a", Some(101))]);
    let o = Observed {
        vms: vec![foreign(101, "theirs")],
        remembered: vec![],
    };
    let p = plan(&d, &o, ON);
    assert_eq!(
        p.nodes.len(),
        1,
        "a foreign VM must not be planned for deletion"
    );
    assert_eq!(p.nodes[0].action, Action::Conflict);
    assert!(!p.nodes[0].is_actionable());
}

#[test]
fn an_unmarked_vm_with_the_nodes_name_on_its_vmid_points_to_adopt() {
    let d = desired(vec![want("a", Some(101))]);
    let reason = |vm: ObservedVm| {
        let p = plan(
            &d,
            &Observed {
                vms: vec![vm],
                remembered: vec![],
            },
            ON,
        );
        assert_eq!(p.nodes[0].action, Action::Conflict);
        p.nodes[0].reason.clone().unwrap_or_default()
    };
    let hint = "homestak adopt -M demo -H pve";
    assert!(reason(foreign(101, "a")).contains(hint));
    // Another name, a template, or homestak marks of any kind: no hint.
    assert!(!reason(foreign(101, "theirs")).contains("adopt"));
    let mut template = foreign(101, "a");
    template.template = true;
    assert!(!reason(template).contains("adopt"));
    let mut other = built(&want("a", Some(101)), 101);
    if let Some(Claim::Owned(m)) = other.claim.as_mut() {
        m.manifest = "other".into();
    }
    assert!(!reason(other).contains("adopt"));
}

#[test]
fn tag_without_description_marks_is_not_ownership() {
    let a = want("a", Some(101));
    let mut imposter = foreign(101, "a");
    imposter.tags.insert(TAG.to_string());
    let p = plan(
        &desired(vec![a]),
        &Observed {
            vms: vec![imposter],
            remembered: vec![remember("a", 101)],
        },
        ON,
    );
    assert_eq!(p.nodes[0].action, Action::Conflict);
}

#[test]
fn marks_of_another_manifest_are_not_ours() {
    let a = want("a", None);
    let mut other = built(&a, 140);
    if let Some(Claim::Owned(m)) = other.claim.as_mut() {
        m.manifest = "other".into();
    }
    let p = plan(
        &desired(vec![a]),
        &Observed {
            vms: vec![other],
            remembered: vec![],
        },
        ON,
    );
    assert_eq!(p.nodes.len(), 1);
    assert_eq!(p.nodes[0].action, Action::Create);
}

#[test]
fn growth_is_an_update_and_shrink_needs_replace() {
    let mut a = want("a", Some(101));
    let before = built(&a, 101);
    a.cores = 4;
    a.disk_gib = 20;
    let o = Observed {
        vms: vec![before.clone()],
        remembered: vec![remember("a", 101)],
    };
    let p = plan(&desired(vec![a.clone()]), &o, ON);
    let fields: Vec<Field> = p.nodes[0].changes.iter().map(|c| c.field).collect();
    assert_eq!(p.nodes[0].action, Action::Update);
    assert_eq!(fields, vec![Field::Cores, Field::Disk]);

    a.disk_gib = 5;
    let p = plan(&desired(vec![a.clone()]), &o, ON);
    assert_eq!(p.nodes[0].action, Action::Replace);
    assert!(p.nodes[0].blocked.is_some());
    let p = plan(
        &desired(vec![a]),
        &o,
        Options {
            allow_replace: true,
            ..ON
        },
    );
    assert!(p.nodes[0].blocked.is_none() && p.nodes[0].is_actionable());
}

#[test]
fn stopped_vm_only_needs_start() {
    let a = want("a", Some(101));
    let mut vm = built(&a, 101);
    vm.power = Power::Stopped;
    let p = plan(
        &desired(vec![a]),
        &Observed {
            vms: vec![vm],
            remembered: vec![remember("a", 101)],
        },
        ON,
    );
    assert_eq!(p.nodes[0].label(), "start");
}

#[test]
fn removed_node_is_pruned_only_when_pruning() {
    let a = want("a", Some(101));
    let gone = want("gone", Some(102));
    let o = Observed {
        vms: vec![built(&a, 101), built(&gone, 102), foreign(103, "x")],
        remembered: vec![remember("a", 101), remember("gone", 102)],
    };
    let p = plan(&desired(vec![a.clone()]), &o, ON);
    assert_eq!(p.nodes.len(), 2);
    assert_eq!(
        (p.nodes[1].action, p.nodes[1].vmid),
        (Action::Delete, Some(id(102)))
    );
    let p = plan(&desired(vec![a]), &o, Options::default());
    assert_eq!(p.nodes[1].action, Action::NoOp);
}

#[test]
fn hidden_spec_change_is_reported_as_spec() {
    let mut a = want("a", Some(101));
    let vm = built(&a, 101);
    a.ssh_keys.push("ssh-ed25519 BBBB new@example".into());
    let p = plan(
        &desired(vec![a]),
        &Observed {
            vms: vec![vm],
            remembered: vec![remember("a", 101)],
        },
        ON,
    );
    assert_eq!(p.nodes[0].action, Action::Update);
    assert_eq!(p.nodes[0].changes[0].field, Field::Spec);
}

#[test]
fn disk_growth_alone_also_refreshes_the_spec_mark() {
    // The disk size is part of the spec hash in the marks, and a resize
    // does not rewrite them: the plan must carry the spec change, or the
    // next run finds the marks stale and reports drift.
    let mut a = want("a", Some(101));
    let vm = built(&a, 101);
    a.disk_gib = 20;
    let p = plan(
        &desired(vec![a.clone()]),
        &Observed {
            vms: vec![vm],
            remembered: vec![remember("a", 101)],
        },
        ON,
    );
    let fields: Vec<Field> = p.nodes[0].changes.iter().map(|c| c.field).collect();
    assert_eq!(fields, vec![Field::Disk, Field::Spec]);
    assert_eq!(p.nodes[0].label(), "grow disk");
    assert_eq!(p.nodes[0].change(Field::Spec).unwrap().to, a.spec_hash());
}

#[test]
fn start_with_a_hidden_spec_change_refreshes_the_marks() {
    let mut a = want("a", Some(101));
    let mut vm = built(&a, 101);
    vm.power = Power::Stopped;
    a.ssh_keys.push("ssh-ed25519 BBBB new@example".into());
    let p = plan(
        &desired(vec![a]),
        &Observed {
            vms: vec![vm],
            remembered: vec![remember("a", 101)],
        },
        ON,
    );
    let fields: Vec<Field> = p.nodes[0].changes.iter().map(|c| c.field).collect();
    assert_eq!(fields, vec![Field::Spec, Field::Power]);
    assert_eq!(p.nodes[0].label(), "start");
}

#[test]
fn a_visible_config_change_carries_the_new_spec_without_a_spec_line() {
    let mut a = want("a", Some(101));
    let vm = built(&a, 101);
    a.cores = 4;
    a.ssh_keys.push("ssh-ed25519 BBBB new@example".into());
    let p = plan(
        &desired(vec![a]),
        &Observed {
            vms: vec![vm],
            remembered: vec![remember("a", 101)],
        },
        ON,
    );
    let fields: Vec<Field> = p.nodes[0].changes.iter().map(|c| c.field).collect();
    assert_eq!(fields, vec![Field::Cores]);
}

#[test]
fn an_owned_vm_without_a_visible_disk_size_gets_its_disk_grown() {
    // A VM still being created (an interrupted run) shows no boot disk yet:
    // the plan must keep the resize, or the disk stays at the image's size.
    let a = want("a", Some(101));
    let mut vm = built(&a, 101);
    vm.disk_gib = None;
    vm.lock = Some("create".into());
    vm.power = Power::Stopped;
    let p = plan(
        &desired(vec![a]),
        &Observed {
            vms: vec![vm],
            remembered: vec![remember("a", 101)],
        },
        ON,
    );
    let fields: Vec<Field> = p.nodes[0].changes.iter().map(|c| c.field).collect();
    assert_eq!(fields, vec![Field::Disk, Field::Power]);
    assert_eq!(p.nodes[0].change(Field::Disk).unwrap().from, "(none)");
}

#[test]
fn planning_is_deterministic() {
    let (d, o) = mixed_world();
    assert_eq!(plan(&d, &o, ON), plan(&d, &o, ON));
}

/// One of everything, for the snapshots.
fn mixed_world() -> (Desired, Observed) {
    let same = want("steady", Some(101));
    let mut grow = want("grow", Some(102));
    let new = want("fresh", None);
    let mut image = want("reimage", Some(104));
    let lost = want("lost-store", Some(105));
    let clash = want("clash", Some(106));
    let stopped = want("stopped", Some(107));
    let old = want("retired", Some(108));

    let mut observed = vec![
        built(&same, 101),
        built(&grow, 102),
        built(&image, 104),
        built(&lost, 105),
        foreign(106, "someone-else"),
        built(&stopped, 107),
        built(&old, 108),
    ];
    observed[5].power = Power::Stopped;
    grow.cores = 4;
    grow.memory_mib = 4096;
    grow.disk_gib = 32;
    image.image = "debian-13".into();
    let d = desired(vec![same, grow, new, image, lost, clash, stopped]);
    let o = Observed {
        vms: observed,
        remembered: ["steady", "grow", "reimage", "clash", "stopped", "retired"]
            .iter()
            .zip([101, 102, 104, 106, 107, 108])
            .map(|(n, v)| remember(n, v))
            .collect(),
    };
    (d, o)
}

fn snapshot(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/plan/snapshots")
        .join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "missing snapshot {}; run with UPDATE_SNAPSHOTS=1",
            path.display()
        )
    });
    assert_eq!(
        expected, actual,
        "snapshot {name} differs; if intended, rerun with UPDATE_SNAPSHOTS=1 and review"
    );
}

#[test]
fn snapshot_mixed_plan_human() {
    let (d, o) = mixed_world();
    let p = plan(&d, &o, ON);
    snapshot("mixed.txt", &render_human(&p, &d, Style { color: false }));
}

#[test]
fn snapshot_mixed_plan_json() {
    let (d, o) = mixed_world();
    let p = plan(&d, &o, ON);
    let json = serde_json::to_string_pretty(&p.to_json()).unwrap() + "\n";
    snapshot("mixed.json", &json);
}

#[test]
fn snapshot_converged_plan_human() {
    let a = want("a", Some(101));
    let d = desired(vec![a.clone()]);
    let o = Observed {
        vms: vec![built(&a, 101)],
        remembered: vec![remember("a", 101)],
    };
    snapshot(
        "converged.txt",
        &render_human(&plan(&d, &o, ON), &d, Style { color: false }),
    );
}

#[test]
fn color_codes_only_when_asked() {
    let (d, o) = mixed_world();
    let p = plan(&d, &o, ON);
    assert!(render_human(&p, &d, Style { color: true }).contains("\x1b["));
    assert!(!render_human(&p, &d, Style { color: false }).contains("\x1b["));
}

/// `vm` with its marks judged `claim` (the adapter's verdict).
fn judged(mut vm: ObservedVm, claim: impl FnOnce(Marks) -> Claim) -> ObservedVm {
    let marks = vm.claim.take().map(|c| c.marks().clone()).unwrap();
    vm.claim = Some(claim(marks));
    if vm.marks().is_none() {
        vm.owner_tag = None;
    }
    vm
}

#[test]
fn clones_restores_templates_and_forged_marks_are_never_touched() {
    let a = want("a", None);
    let gone = want("gone", None);
    let strays = vec![
        judged(built(&a, 105), |marks| Claim::Copied {
            marks,
            written_for: id(101),
        }),
        judged(built(&a, 106), Claim::Template),
        judged(built(&gone, 107), Claim::Forged),
        judged(built(&gone, 108), Claim::Unproven),
    ];
    // The store lost: only copies of `a` remain, so `a` is created anew.
    let mut vms = strays.clone();
    vms.push(foreign(109, "x"));
    let p = plan(
        &desired(vec![a.clone()]),
        &Observed {
            vms,
            remembered: vec![],
        },
        Options {
            prune_duplicates: true,
            ..ON
        },
    );
    assert_eq!(p.nodes[0].action, Action::Create);
    assert_eq!(p.nodes.len(), 5, "{p:#?}");
    for n in &p.nodes[1..] {
        assert_eq!(n.action, Action::NoOp, "{n:?}");
        assert!(!n.is_actionable());
        let reason = n.reason.as_deref().unwrap();
        assert!(reason.contains("left untouched"), "{reason}");
    }
    assert!(
        p.nodes[1]
            .reason
            .as_deref()
            .unwrap()
            .contains("written for vmid 101")
    );
    assert!(p.nodes[2].reason.as_deref().unwrap().contains("template"));

    // With the original present, a copy is no duplicate to prune either.
    let mut vms = vec![built(&a, 101)];
    vms.extend(strays);
    let p = plan(
        &desired(vec![a]),
        &Observed {
            vms,
            remembered: vec![remember("a", 101)],
        },
        Options {
            prune_duplicates: true,
            ..ON
        },
    );
    assert_eq!(p.nodes[0].action, Action::NoOp);
    assert_eq!(p.nodes[0].vmid, Some(id(101)));
    assert!(p.nodes.iter().all(|n| n.action != Action::Delete), "{p:#?}");
}

#[test]
fn a_copy_on_the_manifest_vmid_is_a_conflict() {
    let a = want("a", Some(105));
    let copy = judged(built(&a, 105), |marks| Claim::Copied {
        marks,
        written_for: id(101),
    });
    let p = plan(
        &desired(vec![a]),
        &Observed {
            vms: vec![copy],
            remembered: vec![],
        },
        ON,
    );
    assert_eq!(p.nodes[0].action, Action::Conflict);
}

#[test]
fn duplicates_are_reported_and_destroyed_only_on_request() {
    let a = want("a", None);
    let o = Observed {
        vms: vec![built(&a, 101), built(&a, 102)],
        remembered: vec![remember("a", 101)],
    };
    let p = plan(&desired(vec![a.clone()]), &o, ON);
    assert_eq!(p.nodes.len(), 2);
    assert_eq!(
        (p.nodes[1].action, p.nodes[1].vmid),
        (Action::NoOp, Some(id(102)))
    );
    assert!(
        p.nodes[1]
            .reason
            .as_deref()
            .unwrap()
            .contains("--prune-duplicates")
    );
    let p = plan(
        &desired(vec![a]),
        &o,
        Options {
            prune_duplicates: true,
            ..ON
        },
    );
    assert_eq!(
        (p.nodes[1].action, p.nodes[1].vmid),
        (Action::Delete, Some(id(102)))
    );
}

#[test]
fn a_legacy_vm_the_store_vouches_for_is_rekeyed_by_a_tag_update() {
    let a = want("a", Some(101));
    let mut vm = judged(built(&a, 101), Claim::Legacy);
    vm.owner_tag = Some(owner_tag(101));
    vm.tags = BTreeSet::from([TAG.to_string()]);
    let p = plan(
        &desired(vec![a]),
        &Observed {
            vms: vec![vm],
            remembered: vec![remember("a", 101)],
        },
        ON,
    );
    assert_eq!(p.nodes[0].action, Action::Update);
    assert_eq!(p.nodes[0].changes[0].field, Field::Tags);
}

#[test]
fn steps_act_on_the_pve_node_the_vm_sits_on() {
    let a = want("a", Some(101));
    let mut vm = built(&a, 101);
    vm.node = PveNode::new("pve2").unwrap();
    vm.power = Power::Stopped;
    let p = plan(
        &desired(vec![a]),
        &Observed {
            vms: vec![vm],
            remembered: vec![remember("a", 101)],
        },
        ON,
    );
    assert_eq!(p.nodes[0].pve_node, Some(PveNode::new("pve2").unwrap()));
}
