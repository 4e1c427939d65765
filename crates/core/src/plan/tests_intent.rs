//! Planner rules for a create in progress: PVE's `lock: create`
//! placeholder at the vmid a node's recorded create intent names is that
//! node's create, not someone else's VM; anywhere else it stays foreign.

use std::collections::BTreeSet;

use super::tests::{ON, built, desired, foreign, id, remember, want};
use super::*;

/// PVE's placeholder: `lock: create` and nothing else.
fn placeholder(vmid: u32) -> ObservedVm {
    ObservedVm {
        name: Some(format!("VM {vmid}")),
        lock: Some("create".into()),
        power: Power::Stopped,
        tags: BTreeSet::new(),
        cores: None,
        memory_mib: None,
        disk_gib: None,
        bridge: None,
        ..foreign(vmid, "")
    }
}

fn intending(node: &str, vmid: u32) -> Remembered {
    Remembered {
        intent: Some(id(vmid)),
        ..remember(node, vmid)
    }
}

#[test]
fn our_placeholder_at_a_fixed_vmid_is_a_create_to_follow_not_a_conflict() {
    let d = desired(vec![want("a", Some(101))]);
    let o = Observed {
        vms: vec![placeholder(101)],
        remembered: vec![intending("a", 101)],
    };
    let p = plan(&d, &o, ON);
    assert_eq!(p.nodes.len(), 1, "{p:#?}");
    assert_eq!(p.nodes[0].action, Action::Create);
    assert_eq!(p.nodes[0].vmid, Some(id(101)));
    assert!(p.nodes[0].is_actionable());
    assert!(
        p.nodes[0]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("in progress")),
        "{p:#?}"
    );
}

#[test]
fn our_placeholder_at_a_picked_vmid_keeps_that_vmid() {
    let d = desired(vec![want("a", None)]);
    let o = Observed {
        vms: vec![placeholder(130)],
        remembered: vec![intending("a", 130)],
    };
    let p = plan(&d, &o, ON);
    assert_eq!(p.nodes[0].action, Action::Create);
    assert_eq!(
        p.nodes[0].vmid,
        Some(id(130)),
        "another vmid would make a second VM"
    );
}

#[test]
fn a_placeholder_without_our_intent_stays_foreign() {
    // Fixed vmid: a conflict, as for any VM we do not own.
    let o = Observed {
        vms: vec![placeholder(101)],
        remembered: vec![remember("a", 101)],
    };
    let p = plan(&desired(vec![want("a", Some(101))]), &o, ON);
    assert_eq!(p.nodes[0].action, Action::Conflict);
    // Picked vmid: given up for another.
    let p = plan(&desired(vec![want("a", None)]), &o, ON);
    assert_eq!(p.nodes[0].action, Action::Create);
    assert_eq!(p.nodes[0].vmid, None);
    // Another node's intent does not make it this node's.
    let o = Observed {
        vms: vec![placeholder(101)],
        remembered: vec![intending("b", 101)],
    };
    let p = plan(&desired(vec![want("a", Some(101))]), &o, ON);
    assert_eq!(p.nodes[0].action, Action::Conflict);
}

#[test]
fn a_locked_vm_with_owner_marks_is_no_placeholder() {
    // Someone else's VM being restored or cloned at our intended vmid
    // carries tags or a description: it is theirs.
    let mut theirs = placeholder(101);
    theirs.tags.insert("prod".into());
    let o = Observed {
        vms: vec![theirs],
        remembered: vec![intending("a", 101)],
    };
    let p = plan(&desired(vec![want("a", Some(101))]), &o, ON);
    assert_eq!(p.nodes[0].action, Action::Conflict);
}

#[test]
fn a_finished_create_after_a_lost_answer_is_ours_and_nothing_is_pruned() {
    let a = want("a", None);
    let o = Observed {
        vms: vec![built(&a, 130)],
        remembered: vec![intending("a", 130)],
    };
    let p = plan(&desired(vec![a]), &o, ON);
    assert_eq!(p.nodes.len(), 1, "{p:#?}");
    assert_eq!(p.nodes[0].vmid, Some(id(130)));
    assert!(matches!(p.nodes[0].action, Action::NoOp | Action::Update));
}
