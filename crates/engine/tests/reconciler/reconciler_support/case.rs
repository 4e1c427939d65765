//! The `case.yaml` format (documented for case authors in
//! `reconciler-tests/README.md`). Every struct refuses unknown keys, so a
//! typo in a case is an error, never a silently skipped check.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

/// One case: a fresh simulator, a site-config, and ordered steps.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// What the case proves, in a sentence or two.
    pub description: String,
    /// Simulator world and behaviour, as in `homestak sim --config`.
    #[serde(default)]
    pub sim: Option<homestak_sim::Config>,
    /// Multiplies every simulated latency.
    #[serde(default = "default_time_scale")]
    pub time_scale: f64,
    /// Makes injected faults reproducible.
    #[serde(default)]
    pub seed: Option<u64>,
    /// The storage VM disks go to (`datastore:` of the node file).
    #[serde(default = "default_datastore")]
    pub datastore: String,
    /// Hang guard for the whole case, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    /// A release on 127.0.0.1 the site's `image_source` points at: asset
    /// name → the size the simulator's `download-url` gives it. Without
    /// it, `image_source` stays `https://127.0.0.1:9/images/`, which
    /// nothing answers.
    #[serde(default)]
    pub release: Option<BTreeMap<String, homestak_sim::config::Size>>,
    pub steps: Vec<Step>,
}

fn default_time_scale() -> f64 {
    0.01
}

fn default_datastore() -> String {
    "local-zfs".into()
}

fn default_timeout() -> u64 {
    120
}

impl Case {
    /// Reads a case; refuses one whose steps assert nothing.
    pub fn load(path: &Path) -> anyhow::Result<Case> {
        let case: Case = homestak_base::yaml::read_file(path)?;
        let asserts = case.steps.iter().any(|s| match s {
            Step::Plan(_)
            | Step::Status(_)
            | Step::Requests(_)
            | Step::World(_)
            | Step::ReleaseRequests(_) => true,
            Step::Reconcile(a) | Step::Destroy(a) => a.expect.is_some() || a.nodes.is_some(),
            _ => false,
        });
        if !asserts {
            anyhow::bail!(
                "{}: no step checks anything; add plan, status, requests or world steps, or \
                 `expect:` to a reconcile",
                path.display()
            );
        }
        Ok(case)
    }
}

/// One step of a case.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Installs (or replaces: a new commit) a manifest file of the case
    /// directory as `manifests/<its name>.yaml`; later steps use it.
    Manifest(String),
    /// Plans without writing and checks the plan.
    Plan(PlanStep),
    /// Plans, applies and records one reconcile (`reconcile --once`).
    Reconcile(ApplyStep),
    /// Removes every VM the manifest owns (`destroy --yes`).
    Destroy(ApplyStep),
    /// The drift report (`status`).
    Status(StatusStep),
    /// Checks the simulator's request counters since the last reset.
    Requests(RequestsStep),
    /// Resets the simulator's request counters.
    ResetRequests,
    /// An out-of-band change through the simulator's control API.
    Sim(SimAction),
    /// Closes the store, deletes it, and opens a fresh one (lost state).
    DeleteStore,
    /// Checks the simulator's world directly.
    World(WorldStep),
    /// Asset name → requests the case's `release:` got since the start
    /// (exact: an asset asked for must be listed).
    ReleaseRequests(BTreeMap<String, Count>),
}

impl Step {
    /// The step's keyword, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Manifest(_) => "manifest",
            Step::Plan(_) => "plan",
            Step::Reconcile(_) => "reconcile",
            Step::Destroy(_) => "destroy",
            Step::Status(_) => "status",
            Step::Requests(_) => "requests",
            Step::ResetRequests => "reset_requests",
            Step::Sim(_) => "sim",
            Step::DeleteStore => "delete_store",
            Step::World(_) => "world",
            Step::ReleaseRequests(_) => "release_requests",
        }
    }
}

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values, sorted (a multiset).
    pub fn sorted(&self) -> Vec<String> {
        let mut v = match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        };
        v.sort();
        v
    }
}

/// A count: an exact number, or a comparison such as `">=1"` or `"<=12"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Count {
    Exact(u64),
    Compare(String),
}

/// `plan:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanStep {
    /// Node → label(s) as `homestak plan` shows them (`create`, `update`,
    /// `grow disk`, `start`, `adopt`, `replace`, `delete`, `no-op`,
    /// `conflict`). Every planned node must be listed unless `"*"` gives
    /// the label of the rest.
    pub expect: BTreeMap<String, OneOrMany>,
    /// Node → the fields its action changes (exact set).
    #[serde(default)]
    pub changes: Option<BTreeMap<String, Vec<String>>>,
    /// The nodes whose action is blocked (exact set).
    #[serde(default)]
    pub blocked: Option<Vec<String>>,
    #[serde(default)]
    pub allow_replace: bool,
    #[serde(default = "yes")]
    pub prune: bool,
    /// `--prune-duplicates`.
    #[serde(default)]
    pub prune_duplicates: bool,
    /// Node → text one of its rows' reasons contains.
    #[serde(default)]
    pub reasons: Option<BTreeMap<String, String>>,
    /// Planning must fail with an error containing this text.
    #[serde(default)]
    pub error: Option<String>,
    /// `pve` node → the labels of its child tier's plan (as `expect:`),
    /// for nodes at any depth.
    #[serde(default)]
    pub children: Option<BTreeMap<String, BTreeMap<String, OneOrMany>>>,
    /// `pve` node → text the note about its child tier's plan contains
    /// (a tier that could not plan, or is not set up yet).
    #[serde(default)]
    pub child_notes: Option<BTreeMap<String, String>>,
}

fn yes() -> bool {
    true
}

/// What a reconcile or destroy must end with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every node converged or had nothing to do.
    Success,
    /// The run finished, but not every node converged.
    Failed,
    /// The run was cancelled (`cancel_after`) and wound down.
    Interrupted,
    /// Planning failed before anything ran.
    Error,
}

/// Cancels a run (as Ctrl-C or a daemon shutdown would) once a step
/// event has been seen `count` times.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelAfter {
    /// `started`, `requeued` (a PVE task is in flight) or `done`.
    pub event: String,
    /// The step's name, e.g. `create_vm`.
    pub step: homestak_api::step::Step,
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

/// `reconcile:` and `destroy:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyStep {
    #[serde(default)]
    pub expect: Option<Outcome>,
    /// The plan that was applied, as in [`PlanStep::expect`].
    #[serde(default)]
    pub plan: Option<BTreeMap<String, OneOrMany>>,
    /// Node → end state: `converged`, `unchanged`, `failed`, `skipped`,
    /// `interrupted`, `rolled_back`, `refused`. Exact unless `"*"` is given.
    #[serde(default)]
    pub nodes: Option<BTreeMap<String, String>>,
    /// End state → how many nodes ended so.
    #[serde(default)]
    pub counts: Option<BTreeMap<String, Count>>,
    /// Node → the names of its steps that passed, in order.
    #[serde(default)]
    pub phases: Option<BTreeMap<String, Vec<String>>>,
    /// Node → text its failure, refusal or skip reason contains; `"*"`:
    /// some node's reason contains it.
    #[serde(default)]
    pub detail_contains: Option<BTreeMap<String, String>>,
    /// With `expect: error`, the planning error contains this text.
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub allow_replace: bool,
    #[serde(default = "yes")]
    pub prune: bool,
    /// `--prune-duplicates`.
    #[serde(default)]
    pub prune_duplicates: bool,
    #[serde(default)]
    pub concurrency: Option<usize>,
    #[serde(default)]
    pub per_storage: Option<usize>,
    #[serde(default)]
    pub max_attempts: Option<u32>,
    #[serde(default)]
    pub cancel_after: Option<CancelAfter>,
    /// Kills a child daemon mid-run (a crash; its unit restarts it).
    #[serde(default)]
    pub kill_daemon: Option<KillDaemon>,
    /// How `pve` nodes run their child tiers: `daemon` (default) or `ssh`.
    #[serde(default)]
    pub delegate: Option<homestak_engine::controllers::pve::Delegate>,
    /// `--deep`: read every candidate VM's config.
    #[serde(default)]
    pub deep: bool,
}

/// `kill_daemon: {vm: [hv], after: {event, step, count}}`: SIGKILL the
/// `homestak` service in the VM at the end of `vm` (the `pve` VMs from the
/// root down) once the event has been seen `count` times.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KillDaemon {
    pub vm: Vec<String>,
    pub after: CancelAfter,
}

/// `status:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusStep {
    /// As `homestak status`: 0 in sync, 2 drifted, 1 error.
    #[serde(default)]
    pub exit: Option<i32>,
    /// Node → state (`in_sync`, `drifted`, `missing`, `conflict`,
    /// `orphan`, `delegated`) or `{state, fields, power}`. Exact unless
    /// `"*"` is given.
    #[serde(default)]
    pub nodes: Option<BTreeMap<String, NodeStatus>>,
    /// With `exit: 1`, the error contains this text.
    #[serde(default)]
    pub error: Option<String>,
    /// `--deep`: read every candidate VM's config.
    #[serde(default)]
    pub deep: bool,
}

/// One node's expected status.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum NodeStatus {
    State(String),
    Full(NodeStatusFull),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeStatusFull {
    pub state: String,
    /// The drifted fields (exact set).
    #[serde(default)]
    pub fields: Option<Vec<String>>,
    #[serde(default)]
    pub power: Option<String>,
}

impl NodeStatus {
    pub fn state(&self) -> &str {
        match self {
            NodeStatus::State(s) => s,
            NodeStatus::Full(f) => &f.state,
        }
    }
}

/// `requests:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestsStep {
    /// The nested tier whose counters to check (as in `world:`).
    #[serde(default)]
    pub tier: Vec<String>,
    /// Requests other than GET.
    #[serde(default)]
    pub writes: Option<Count>,
    #[serde(default)]
    pub reads: Option<Count>,
    #[serde(default)]
    pub total: Option<Count>,
    /// `"METHOD /path/{template}"` → count.
    #[serde(default)]
    pub by: Option<BTreeMap<String, Count>>,
    /// `by` lists every kind of request made.
    #[serde(default)]
    pub exact: bool,
    /// Print the counts under the case's result line.
    #[serde(default)]
    pub print: Option<String>,
}

/// `sim:` — one action of the simulator's control API. VMs are named by
/// vmid or by name (`vm: demo-1`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimAction {
    /// `DELETE /_sim/vms/{vmid}`: the VM vanishes at once.
    DeleteVm(VmRef),
    /// `PATCH /_sim/vms/{vmid}`: `{vm, cores?, sockets?, memory?, name?,
    /// tags?, description?, power?}`.
    PatchVm(Value),
    /// `POST /_sim/vms`: a foreign VM (no marks), body passed through.
    CreateVm(Value),
    /// `PUT /_sim/faults`: global fault rates.
    Faults(Value),
    /// `PUT /_sim/faults/vms/{vmid}`: `{vm, …rates}`.
    VmFaults(Value),
    /// `DELETE /_sim/faults/vms/{vmid}`.
    ClearVmFaults(VmRef),
    /// `POST /_sim/images`.
    AddImage(Value),
    /// A VM of a nested tier vanishes at once: `{tier: [hv], vm: app}`.
    DeleteVmIn(NestedVm),
}

/// A VM of a nested tier, by name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NestedVm {
    /// The `pve` VMs from the root down to the tier (`[hv]`, `[hv, hv2]`).
    pub tier: Vec<String>,
    pub vm: String,
}

/// A VM by vmid or by name.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum VmRef {
    Id(u32),
    Name(String),
}

impl std::fmt::Display for VmRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmRef::Id(id) => write!(f, "vmid {id}"),
            VmRef::Name(name) => write!(f, "VM {name:?}"),
        }
    }
}

/// `world:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorldStep {
    /// The nested tier to look at: the `pve` VMs from the root down
    /// (`[hv]`); the root tier when empty.
    #[serde(default)]
    pub tier: Vec<String>,
    /// Each entry names exactly one VM (by `name` and/or `vmid`) and checks
    /// the fields it gives.
    #[serde(default)]
    pub vms: Vec<VmExpect>,
    /// No VM exists besides those in `vms`.
    #[serde(default)]
    pub exact: bool,
    /// Number of VMs.
    #[serde(default)]
    pub count: Option<Count>,
    /// Name → number of VMs with that name.
    #[serde(default)]
    pub count_by_name: Option<BTreeMap<String, Count>>,
    /// Every VM name occurs at most once.
    #[serde(default)]
    pub unique_names: bool,
    /// VMs that must not exist.
    #[serde(default)]
    pub absent: Vec<VmRef>,
    /// Task type (`qmcreate`, `qmstart`, …) → counts by outcome.
    #[serde(default)]
    pub tasks: Option<BTreeMap<String, TaskCounts>>,
    /// Volume id → `present`, `absent` or `{ size: 1200M }` (exact).
    #[serde(default)]
    pub volumes: BTreeMap<String, VolumeExpect>,
    /// Text → how many command lines run over SSH on the node (since the
    /// simulator started) contain it.
    #[serde(default)]
    pub host_commands: Option<BTreeMap<String, Count>>,
}

/// What a volume must be.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum VolumeExpect {
    /// `present` or `absent`.
    Word(String),
    Sized(VolumeSize),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeSize {
    pub size: homestak_sim::config::Size,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskCounts {
    #[serde(default)]
    pub ok: Option<Count>,
    #[serde(default)]
    pub failed: Option<Count>,
    /// Text some failed task's exit status contains.
    #[serde(default)]
    pub failed_with: Option<String>,
}

/// One VM as the world must show it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmExpect {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub vmid: Option<u32>,
    #[serde(default)]
    pub cores: Option<u64>,
    /// MiB.
    #[serde(default)]
    pub memory: Option<u64>,
    /// Boot disk, GiB.
    #[serde(default)]
    pub disk: Option<u64>,
    /// `running` | `stopped`.
    #[serde(default)]
    pub power: Option<String>,
    /// Carries homestak's tag and description marks.
    #[serde(default)]
    pub owned: Option<bool>,
    /// The manifest its marks name.
    #[serde(default)]
    pub manifest: Option<String>,
    /// Normalised PVE tags (`a;b`).
    #[serde(default)]
    pub tags: Option<String>,
    /// Image its boot disk was imported from (`debian-12`).
    #[serde(default)]
    pub image: Option<String>,
    /// Its config lock (`create`, …); `""` for none.
    #[serde(default)]
    pub lock: Option<String>,
}
