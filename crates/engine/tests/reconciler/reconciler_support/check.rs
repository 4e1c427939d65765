//! Assertions shared by the steps: counts, per-node expectation maps with a
//! `"*"` default, request counters and the simulator's world. Every check
//! returns the list of differences, so a failing step names all of them.

use std::collections::{BTreeMap, BTreeSet};

use homestak_base::id::VmId;
use homestak_core::plan::marks::{Claim, Marks, OwnerKey, owner_tag};
use homestak_sim::world::World;

use super::case::{Count, RequestsStep, VmExpect, VolumeExpect, WorldStep};

/// Differences found by a check; empty when it passed.
pub type Diffs = Vec<String>;

impl Count {
    /// `Err` says what was expected when `actual` does not match.
    pub fn check(&self, actual: u64) -> Result<(), String> {
        let (op, n) = match self {
            Count::Exact(n) => ("", *n),
            Count::Compare(text) => {
                let text = text.trim();
                let (op, rest) = ["<=", ">=", "==", "<", ">"]
                    .iter()
                    .find_map(|op| text.strip_prefix(op).map(|r| (*op, r)))
                    .unwrap_or(("", text));
                let n = rest.trim().parse::<u64>().map_err(|_| {
                    format!("bad count {text:?}: use a number or <=N, >=N, <N, >N, ==N")
                })?;
                (op, n)
            }
        };
        let ok = match op {
            "<=" => actual <= n,
            ">=" => actual >= n,
            "<" => actual < n,
            ">" => actual > n,
            _ => actual == n,
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "expected {}{n}, got {actual}",
                if op.is_empty() { "" } else { op }
            ))
        }
    }
}

/// Compares a release's requests by asset with what a case expects:
/// every asset asked for must be expected (`"*"` is not special here).
pub fn release_requests(
    expected: &BTreeMap<String, Count>,
    actual: &BTreeMap<String, u64>,
) -> Diffs {
    let mut diffs = Vec::new();
    for (asset, want) in expected {
        let got = actual.get(asset).copied().unwrap_or(0);
        if let Err(why) = want.check(got) {
            diffs.push(format!("release requests for {asset}: {why}"));
        }
    }
    for (asset, got) in actual {
        if !expected.contains_key(asset) {
            diffs.push(format!(
                "release requests for {asset}: {got}, but the case does not list it"
            ));
        }
    }
    diffs
}

/// Compares per-node expectations with what happened. Every node in
/// `actual` must be expected, by name or through `"*"`; every named node
/// must exist. `check` returns a difference for one node.
pub fn per_node<E, A>(
    what: &str,
    expected: &BTreeMap<String, E>,
    actual: &BTreeMap<String, A>,
    mut check: impl FnMut(&E, &A) -> Option<String>,
) -> Diffs {
    let mut diffs = Vec::new();
    let fallback = expected.get("*");
    for name in expected.keys().filter(|k| *k != "*") {
        if !actual.contains_key(name) {
            diffs.push(format!("{what}: node {name} is expected but absent"));
        }
    }
    for (name, got) in actual {
        match expected.get(name).or(fallback) {
            Some(want) => {
                if let Some(d) = check(want, got) {
                    diffs.push(format!("{what}: node {name}: {d}"));
                }
            }
            None => diffs.push(format!(
                "{what}: node {name} is not expected (list it, or give a default with \"*\")"
            )),
        }
    }
    diffs
}

/// The host lease's writes: the node's notes, not the tier's VMs.
pub const LEASE_WRITE: &str = "PUT /nodes/{node}/config";

/// Writes that change the tier: every method but GET, except the host
/// lease's (a converging run takes and gives back the lease, and a daemon
/// renews it, whatever the run does to the VMs; `by:` counts them).
pub fn writes(counts: &BTreeMap<String, u64>) -> u64 {
    counts
        .iter()
        .filter(|(k, _)| !k.starts_with("GET ") && k.as_str() != LEASE_WRITE)
        .map(|(_, n)| n)
        .sum()
}

/// Checks the request counters; `counts` is `METHOD /template` → n.
pub fn requests(step: &RequestsStep, counts: &BTreeMap<String, u64>) -> Diffs {
    let mut diffs = Vec::new();
    let writes = writes(counts);
    let total: u64 = counts.values().sum();
    let mut one = |label: &str, want: &Option<Count>, got: u64| {
        if let Some(want) = want
            && let Err(e) = want.check(got)
        {
            diffs.push(format!("{label}: {e}"));
        }
    };
    one("writes", &step.writes, writes);
    one("reads", &step.reads, total - writes);
    one("total", &step.total, total);
    if let Some(by) = &step.by {
        for (key, want) in by {
            let got = counts.get(key).copied().unwrap_or(0);
            if let Err(e) = want.check(got) {
                diffs.push(format!("{key}: {e}"));
            }
        }
        if step.exact {
            for (key, n) in counts {
                if !by.contains_key(key) && *n > 0 {
                    diffs.push(format!("{key}: {n} request(s) not expected"));
                }
            }
        }
    }
    if !diffs.is_empty() {
        diffs.push(format!("counts were: {}", render_counts(counts)));
    }
    diffs
}

/// `{"GET /x": 3, …}` on one line.
pub fn render_counts(counts: &BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{k}: {n}")).collect();
    format!("{{{}}}", parts.join(", "))
}

/// One VM of the world as the checks see it.
struct SeenVm {
    vmid: u32,
    name: String,
    cores: u64,
    memory: u64,
    disk_gib: u64,
    power: String,
    tags: String,
    marks: Option<Marks>,
    image: Option<String>,
    lock: String,
}

/// The world's VMs; `owned` means marks that verify under `key` for the
/// VM's own vmid (a clone's or a template's do not).
fn seen(world: &World, key: &OwnerKey) -> Vec<SeenVm> {
    world
        .vms
        .values()
        .map(|vm| {
            let tags = vm.config.get("tags").cloned().unwrap_or_default();
            let tag_set: BTreeSet<String> = tags.split(';').map(String::from).collect();
            let template = vm.config.get("template").is_some_and(|t| t == "1");
            let marks = VmId::try_from(u64::from(vm.vmid))
                .ok()
                .and_then(|vmid| {
                    Claim::read(
                        key,
                        vmid,
                        vm.config.get("description").map(String::as_str),
                        &tag_set,
                        template,
                    )
                })
                .and_then(|c| match c {
                    // Legacy marks count only where a store vouches.
                    Claim::Owned(m) => Some(m),
                    _ => None,
                });
            // An owned VM's own keyed tag is implied by `owned`; cases
            // write the tags a user would (a wrong keyed tag still shows).
            let own_tag = marks.as_ref().and_then(|m| {
                let vmid = VmId::try_from(u64::from(vm.vmid)).ok()?;
                Some(owner_tag(key, vmid, &m.manifest, &m.node))
            });
            let tags = tags
                .split(';')
                .filter(|t| Some(*t) != own_tag.as_deref())
                .collect::<Vec<_>>()
                .join(";");
            SeenVm {
                vmid: vm.vmid,
                name: vm.config.get("name").cloned().unwrap_or_default(),
                cores: vm
                    .config
                    .get("cores")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1),
                memory: vm.memory_mib(),
                disk_gib: homestak_engine::controllers::vm::mapping::bytes_to_gib(vm.maxdisk()),
                power: serde_json::to_value(vm.power)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                tags,
                marks,
                image: vm.image.clone(),
                lock: vm.lock().unwrap_or_default().to_string(),
            }
        })
        .collect()
}

fn describe(vm: &SeenVm) -> String {
    format!(
        "{} (vmid {}, {} cores, {} MiB, {} GiB, {}, tags {:?}{})",
        vm.name,
        vm.vmid,
        vm.cores,
        vm.memory,
        vm.disk_gib,
        vm.power,
        vm.tags,
        match &vm.marks {
            Some(m) => format!(", owned by {}/{}", m.manifest, m.node),
            None => ", not owned".into(),
        }
    )
}

fn vm_diffs(want: &VmExpect, vm: &SeenVm) -> Diffs {
    let mut d = Vec::new();
    let mut field = |name: &str, want: Option<String>, got: String| {
        if let Some(want) = want
            && want != got
        {
            d.push(format!("{name}: expected {want}, got {got}"));
        }
    };
    field(
        "vmid",
        want.vmid.map(|v| v.to_string()),
        vm.vmid.to_string(),
    );
    field(
        "cores",
        want.cores.map(|v| v.to_string()),
        vm.cores.to_string(),
    );
    field(
        "memory",
        want.memory.map(|v| format!("{v} MiB")),
        format!("{} MiB", vm.memory),
    );
    field(
        "disk",
        want.disk.map(|v| format!("{v} GiB")),
        format!("{} GiB", vm.disk_gib),
    );
    field("power", want.power.clone(), vm.power.clone());
    field("tags", want.tags.clone(), vm.tags.clone());
    field("lock", want.lock.clone(), vm.lock.clone());
    field(
        "owned",
        want.owned.map(|v| v.to_string()),
        vm.marks.is_some().to_string(),
    );
    field(
        "manifest",
        want.manifest.clone(),
        vm.marks
            .as_ref()
            .map(|m| m.manifest.clone())
            .unwrap_or_default(),
    );
    if let Some(image) = &want.image {
        let got = vm.image.clone().unwrap_or_default();
        let file = format!("/{image}.qcow2");
        if got != *image && !got.ends_with(&file) {
            d.push(format!("image: expected {image}, got {got:?}"));
        }
    }
    d
}

/// Checks the world against a `world:` step.
/// The size of volume `volid` on any node, if it exists.
fn volume_size(world: &World, volid: &str) -> Option<u64> {
    let (storage, name) = volid.split_once(':')?;
    world
        .nodes
        .values()
        .find_map(|n| n.storages.get(storage)?.volumes.get(name))
        .map(|v| v.size)
}

/// `volumes:` and `host_commands:` of a `world:` step.
fn storage_and_host(step: &WorldStep, world: &World, host_commands: &[String]) -> Diffs {
    let mut diffs = Vec::new();
    for (volid, want) in &step.volumes {
        let got = volume_size(world, volid);
        match (want, got) {
            (VolumeExpect::Word(w), Some(_)) if w == "present" => {}
            (VolumeExpect::Word(w), None) if w == "absent" => {}
            (VolumeExpect::Word(w), _) if w != "present" && w != "absent" => diffs.push(format!(
                "volume {volid}: write present, absent or {{ size: N }}, not {w:?}"
            )),
            (VolumeExpect::Word(w), got) => diffs.push(format!(
                "volume {volid} should be {w}, {}",
                got.map_or("it is absent".to_string(), |s| format!("it has {s} bytes"))
            )),
            (VolumeExpect::Sized(s), Some(size)) if s.size.0 == size => {}
            (VolumeExpect::Sized(s), got) => diffs.push(format!(
                "volume {volid} should have {} bytes, {}",
                s.size.0,
                got.map_or("it is absent".to_string(), |s| format!("it has {s}"))
            )),
        }
    }
    if let Some(counts) = &step.host_commands {
        for (text, want) in counts {
            let n = host_commands
                .iter()
                .filter(|c| c.contains(text.as_str()))
                .count() as u64;
            if let Err(e) = want.check(n) {
                diffs.push(format!(
                    "host commands containing {text:?}: {e} (ran: {host_commands:?})"
                ));
            }
        }
    }
    diffs
}

pub fn world(step: &WorldStep, world: &World, host_commands: &[String], key: &OwnerKey) -> Diffs {
    let vms = seen(world, key);
    let mut diffs = storage_and_host(step, world, host_commands);
    let mut matched = Vec::new();
    for want in &step.vms {
        let hits: Vec<&SeenVm> = vms
            .iter()
            .filter(|vm| want.name.as_ref().is_none_or(|n| *n == vm.name))
            .filter(|vm| want.vmid.is_none_or(|id| id == vm.vmid))
            .collect();
        let label = match (&want.name, want.vmid) {
            (Some(n), Some(id)) => format!("VM {n} (vmid {id})"),
            (Some(n), None) => format!("VM {n}"),
            (None, Some(id)) => format!("vmid {id}"),
            (None, None) => {
                diffs.push("a `vms:` entry needs a name or a vmid".into());
                continue;
            }
        };
        match hits.as_slice() {
            [vm] => {
                matched.push(vm.vmid);
                for d in vm_diffs(want, vm) {
                    diffs.push(format!("{label}: {d}"));
                }
            }
            [] => diffs.push(format!("{label}: not found")),
            many => diffs.push(format!(
                "{label}: {} VMs match: {}",
                many.len(),
                many.iter()
                    .map(|v| describe(v))
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
        }
    }
    if step.exact {
        for vm in vms.iter().filter(|vm| !matched.contains(&vm.vmid)) {
            diffs.push(format!("unexpected VM {}", describe(vm)));
        }
    }
    if let Some(count) = &step.count
        && let Err(e) = count.check(vms.len() as u64)
    {
        diffs.push(format!("number of VMs: {e}"));
    }
    if let Some(by_name) = &step.count_by_name {
        for (name, want) in by_name {
            let n = vms.iter().filter(|vm| vm.name == *name).count() as u64;
            if let Err(e) = want.check(n) {
                diffs.push(format!("VMs named {name}: {e}"));
            }
        }
    }
    if step.unique_names {
        let mut names: BTreeMap<&str, u64> = BTreeMap::new();
        for vm in &vms {
            *names.entry(vm.name.as_str()).or_default() += 1;
        }
        for (name, n) in names.into_iter().filter(|(_, n)| *n > 1) {
            diffs.push(format!("{n} VMs are named {name}"));
        }
    }
    for gone in &step.absent {
        let hit = match gone {
            super::case::VmRef::Id(id) => vms.iter().find(|vm| vm.vmid == *id),
            super::case::VmRef::Name(name) => vms.iter().find(|vm| vm.name == *name),
        };
        if let Some(vm) = hit {
            diffs.push(format!("{gone} should be absent, found {}", describe(vm)));
        }
    }
    if let Some(tasks) = &step.tasks {
        for (kind, want) in tasks {
            let of_kind: Vec<_> = world
                .tasks
                .iter()
                .filter(|t| t.upid.kind == *kind)
                .collect();
            let ok = of_kind
                .iter()
                .filter(|t| {
                    t.exitstatus
                        .as_deref()
                        .is_some_and(|s| s == "OK" || s.starts_with("WARNINGS"))
                })
                .count() as u64;
            let failed: Vec<&str> = of_kind
                .iter()
                .filter_map(|t| t.exitstatus.as_deref())
                .filter(|s| *s != "OK" && !s.starts_with("WARNINGS"))
                .collect();
            if let Some(w) = &want.ok
                && let Err(e) = w.check(ok)
            {
                diffs.push(format!("{kind} tasks that succeeded: {e}"));
            }
            if let Some(w) = &want.failed
                && let Err(e) = w.check(failed.len() as u64)
            {
                diffs.push(format!("{kind} tasks that failed: {e} ({failed:?})"));
            }
            if let Some(text) = &want.failed_with
                && !failed.iter().any(|s| s.contains(text.as_str()))
            {
                diffs.push(format!(
                    "no failed {kind} task says {text:?} (failures: {failed:?})"
                ));
            }
        }
    }
    if !diffs.is_empty() {
        let all: Vec<String> = vms.iter().map(describe).collect();
        diffs.push(format!(
            "the world holds: {}",
            if all.is_empty() {
                "no VM".into()
            } else {
                all.join("; ")
            }
        ));
    }
    diffs
}
