//! The site resolver on homestak's own fixture (`tests/fixtures/site-config`):
//! layering, vmid allocation, posture tokens, missing and broken files,
//! secrets redaction, host configs and specs. Needs nothing from ../shared.

use std::path::{Path, PathBuf};

use homestak_core::site::{self, InlineVm, Site, VmSettings, auth, resolver, spec};
use serde_json::{Value, json};

/// Every secret value in the fixture; none may appear in Debug output or
/// errors.
const SECRETS: &[&str] = &[
    "fake-alpha-api-token",
    "fake-shared-api-token",
    "fake-root-password-hash",
    "fake-site-token-for-stage",
    "fake-node-token-web1",
    "fake-node-token-web3",
];

fn fixture() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("tests/fixtures/site-config")
}

fn load() -> Site {
    Site::load(&fixture()).expect("fixture loads")
}

/// A copy of the fixture to break in a test.
fn copy() -> tempfile::TempDir {
    fn walk(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                walk(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    walk(&fixture(), dir.path());
    dir
}

fn vm(site: &Site, env: &str, node: &str, index: usize) -> Value {
    let vars = site.resolve_env(env, node).unwrap();
    serde_json::to_value(&vars.vms[index]).unwrap()
}

#[test]
fn env_resolution_has_the_reference_shape() {
    let vars = load().resolve_env("web", "alpha").unwrap();
    let mut value = serde_json::to_value(&vars).unwrap();
    value["vms"] = json!(value["vms"].as_array().unwrap().len());
    assert_eq!(
        value,
        json!({
            "node": "alpha",
            "api_endpoint": "https://127.0.0.1:8006",
            "api_token": "root@pam!homestak=fake-alpha-api-token",
            "ssh_user": "root",
            "automation_user": "ops",
            "ssh_host": "127.0.0.1",
            "datastore": "local-zfs",
            "root_password": "$6$fakesalt$fake-root-password-hash",
            "ssh_keys": [
                "ssh-ed25519 AAAAC3NzaFAKEZED zed@laptop",
                "ssh-ed25519 AAAAC3NzaFAKEAMY amy@desk"
            ],
            "spec_server": "https://127.0.0.1:44443",
            "vms": 5
        })
    );
}

#[test]
fn node_fields_follow_the_node_file() {
    let vars = load().resolve_env("stage", "beta").unwrap();
    assert_eq!(vars.node, "pve-beta");
    assert_eq!(
        vars.api_token.expose(),
        "root@pam!homestak=fake-shared-api-token"
    );
    // Not a local endpoint, so SSH goes to the node's ip.
    assert_eq!(vars.ssh_host, "127.0.1.22");
    assert_eq!(vars.ssh_user, "admin");
    assert_eq!(vars.datastore, "tank");
}

#[test]
fn layering_is_preset_then_template_then_instance() {
    let site = load();
    assert_eq!(
        vm(&site, "web", "alpha", 0),
        json!({
            "cores": 1, "memory": 1024, "disk": 12, "image": "debian-12",
            "tags": ["web"], "name": "web1", "vmid": 30000,
            "bridge": "vmbr0", "gateway": "127.0.3.1",
            "auth_token": "fake-node-token-web1"
        })
    );
    // Direct preset with pass-through key and a static IP.
    assert_eq!(
        vm(&site, "web", "alpha", 2),
        json!({
            "cores": 4, "memory": 8192, "disk": 40, "cpu_type": "host",
            "image": "debian-13", "ip": "127.0.3.10/24", "name": "web3",
            "vmid": 30002, "bridge": "vmbr0", "gateway": "127.0.3.1",
            "auth_token": "fake-node-token-web3"
        })
    );
    // Instance keys win over the template.
    assert_eq!(vm(&site, "web", "alpha", 3)["cores"], json!(3));
    // A missing template is ignored: only computed keys remain.
    assert_eq!(
        vm(&site, "web", "alpha", 4),
        json!({
            "name": "web5", "vmid": 30004, "bridge": "vmbr0",
            "gateway": "127.0.3.1", "auth_token": ""
        })
    );
}

#[test]
fn vmids_are_base_plus_index_with_overrides_and_null() {
    let site = load();
    let vars = site.resolve_env("web", "alpha").unwrap();
    let ids: Vec<Value> = vars
        .vms
        .iter()
        .map(|v| serde_json::to_value(v).unwrap()["vmid"].clone())
        .collect();
    assert_eq!(
        ids,
        [
            json!(30000),
            json!(null),
            json!(30002),
            json!(39999),
            json!(30004)
        ]
    );
    // No vmid_base: the key is absent.
    let s1 = vm(&site, "stage", "alpha", 0);
    assert!(s1.get("vmid").is_none(), "{s1}");
}

#[test]
fn posture_decides_the_vm_token() {
    let site = load();
    // node_token: per-VM token, empty when the VM has none.
    assert_eq!(vm(&site, "web", "alpha", 1)["auth_token"], json!(""));
    // site_token: the shared token.
    assert_eq!(
        vm(&site, "stage", "alpha", 0)["auth_token"],
        json!("fake-site-token-for-stage")
    );
    assert_eq!(
        site.auth_token("prod", "web1").unwrap().expose(),
        "fake-node-token-web1"
    );
    assert_eq!(site.auth_token("dev", "web1").unwrap().expose(), "");
    assert_eq!(site.auth_token("missing", "web1").unwrap().expose(), "");
    assert!(site.node_token("nobody").unwrap().is_none());
    assert_eq!(
        site.site_token().unwrap().map(|s| s.expose()),
        Some("fake-site-token-for-stage")
    );
}

#[test]
fn required_token_never_opens_access_by_misconfiguration() {
    let site = load();
    let web1 = site.resolve_spec("web1").unwrap();
    let req = site.required_token(web1.posture(), "web1").unwrap();
    assert!(req.accepts(Some("fake-node-token-web1")));
    assert!(!req.accepts(Some("fake-node-token-web3")));
    assert!(!req.accepts(None));
    // prod posture but no node token for this identity: a server error.
    let err = site.required_token(web1.posture(), "web2").unwrap_err();
    assert!(matches!(err, auth::Error::NodeTokenNotConfigured { .. }));
    assert_eq!(err.code(), Some("E500"));
    assert_eq!(err.message(), "node_token not configured for web2");
    let base = site.resolve_spec("base").unwrap();
    assert!(
        site.required_token(base.posture(), "base")
            .unwrap()
            .accepts(None)
    );
}

#[test]
fn inline_vm_resolves_like_a_manifest_node() {
    let site = load();
    let vars = site
        .resolve_inline_vm(&InlineVm {
            node: "alpha".into(),
            vm_name: "web1".into(),
            vmid: Some(31000),
            template: Some("small-web".into()),
            vm_preset: Some("large".into()),
            posture: Some("prod".into()),
            overrides: VmSettings {
                disk: Some(64),
                ..VmSettings::default()
            },
            ..InlineVm::default()
        })
        .unwrap();
    let vm = vars.vm().unwrap();
    // Template wins over vm_preset; overrides win over both.
    assert_eq!(
        (vm.cores, vm.disk, vm.vmid()),
        (Some(1), Some(64), Some(31000))
    );
    assert_eq!(vm.auth_token.expose(), "fake-node-token-web1");
    assert_eq!(vars.ssh_keys.len(), 2);

    let auto = site
        .resolve_inline_vm(&InlineVm {
            node: "alpha".into(),
            vm_name: "x".into(),
            vm_preset: Some("small".into()),
            ..InlineVm::default()
        })
        .unwrap();
    // No vmid: PVE chooses, written as null like the reference.
    assert_eq!(
        serde_json::to_value(auto.vm().unwrap()).unwrap()["vmid"],
        json!(null)
    );

    let err = site
        .resolve_inline_vm(&InlineVm {
            node: "alpha".into(),
            vm_name: "x".into(),
            vm_preset: Some("vm-small".into()),
            ..InlineVm::default()
        })
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Preset not found: vms/presets/vm-small.yaml"
    );
}

/// The reference refuses an inline VM with neither a template nor a preset
/// (empty names count as none), before it even looks at the node; a
/// manifest node whose preset the caller layered in resolves through
/// `resolve_manifest_node_vm` instead.
#[test]
fn inline_vm_needs_a_template_or_a_preset() {
    let site = load();
    for (template, vm_preset) in [(None, None), (Some(""), Some("")), (Some(""), None)] {
        let err = site
            .resolve_inline_vm(&InlineVm {
                // An unknown node: the missing template/preset comes first.
                node: "no-such-node".into(),
                vm_name: "bare".into(),
                template: template.map(str::to_string),
                vm_preset: vm_preset.map(str::to_string),
                image: Some("debian-12".into()),
                ..InlineVm::default()
            })
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "resolve_inline_vm requires either template or vm_preset",
            "{template:?} {vm_preset:?}"
        );
    }
    // An empty template beside a real preset: preset mode, as in the
    // reference (`if template:` is false for "").
    let vars = site
        .resolve_inline_vm(&InlineVm {
            node: "alpha".into(),
            vm_name: "x".into(),
            template: Some(String::new()),
            vm_preset: Some("small".into()),
            ..InlineVm::default()
        })
        .unwrap();
    assert_eq!(vars.vms.len(), 1);
    let layered = site
        .resolve_manifest_node_vm(&InlineVm {
            node: "alpha".into(),
            vm_name: "bare".into(),
            image: Some("debian-12".into()),
            ..InlineVm::default()
        })
        .unwrap();
    assert_eq!(layered.vm().unwrap().name.as_deref(), Some("bare"));
}

#[test]
fn ansible_vars_merge_site_and_posture() {
    let vars = load().resolve_ansible_vars("web").unwrap();
    assert_eq!(
        serde_json::to_value(&vars).unwrap(),
        json!({
            "timezone": "Etc/UTC",
            "pve_remove_subscription_nag": false,
            "packages": ["curl", "htop", "auditd"],
            "ssh_port": 2222,
            "ssh_permit_root_login": "no",
            "ssh_password_authentication": "no",
            "sudo_nopasswd": false,
            "fail2ban_enabled": true,
            "env_name": "web",
            "posture_name": "prod",
            "ssh_authorized_keys": [
                "ssh-ed25519 AAAAC3NzaFAKEZED zed@laptop",
                "ssh-ed25519 AAAAC3NzaFAKEAMY amy@desk"
            ]
        })
    );
    // stage has no v1 posture: defaults apply.
    let stage = load().resolve_ansible_vars("stage").unwrap();
    assert_eq!(
        (stage.ssh_port, stage.ssh_permit_root_login.as_str()),
        (22, "prohibit-password")
    );
}

#[test]
fn missing_and_broken_documents() {
    let site = load();
    // A missing env resolves to no VMs (the reference's answer).
    assert!(site.resolve_env("nope", "alpha").unwrap().vms.is_empty());
    let err = site.resolve_env("web", "ghost").unwrap_err();
    assert_eq!(err.to_string(), "Node config not found: nodes/ghost.yaml");
    // An empty node file counts as not found.
    assert!(matches!(
        site.resolve_env("web", "empty").unwrap_err(),
        resolver::Error::NodeNotFound { .. }
    ));
    assert!(matches!(
        site.resolve_env("web", "no-datastore").unwrap_err(),
        resolver::Error::MissingDatastore { .. }
    ));
    assert!(matches!(
        site.resolve_env("null-vms", "alpha").unwrap_err(),
        resolver::Error::VmsNull { .. }
    ));
    assert!(matches!(
        site.resolve_ansible_vars("null-packages").unwrap_err(),
        resolver::Error::PackagesNull { .. }
    ));
    // A broken env fails only when used, naming the file and position.
    let err = site.resolve_env("broken", "alpha").unwrap_err();
    let cause = std::error::Error::source(&err).unwrap().to_string();
    assert!(cause.contains("envs/broken.yaml:"), "{cause}");
    assert!(
        site.problems()
            .iter()
            .any(|p| p.path().ends_with("envs/broken.yaml"))
    );
    assert!(site.resolve_env("web", "alpha").is_ok());
}

#[test]
fn missing_secrets_resolve_empty_except_where_keys_are_needed() {
    let dir = copy();
    std::fs::remove_file(dir.path().join("secrets.yaml")).unwrap();
    let site = Site::load(dir.path()).unwrap();
    let vars = site.resolve_env("stage", "alpha").unwrap();
    assert!(vars.api_token.is_empty() && vars.root_password.is_empty());
    assert!(vars.ssh_keys.is_empty());
    assert!(vars.vms[0].auth_token.is_empty());
    assert!(site.site_token().unwrap().is_none());
    let err = site.resolve_spec("web1").unwrap_err();
    assert_eq!(err.code(), Some("E500"));
    assert!(
        err.to_string()
            .starts_with("E500: Secrets file not found: "),
        "{err}"
    );
    let stage = site
        .postures_v2()
        .get("stage")
        .unwrap()
        .doc
        .as_ref()
        .unwrap()
        .clone()
        .unwrap();
    assert!(matches!(
        site.required_token(&stage, "s1").unwrap_err(),
        auth::Error::SiteTokenNotConfigured
    ));
}

#[test]
fn broken_secrets_fail_strict_lookups_only() {
    let dir = copy();
    std::fs::write(dir.path().join("secrets.yaml"), "api_tokens: [unclosed\n").unwrap();
    let site = Site::load(dir.path()).unwrap();
    assert!(
        site.resolve_env("web", "alpha")
            .unwrap()
            .api_token
            .is_empty()
    );
    assert!(site.auth_token("dev", "web1").is_err());
    // A missing posture answers before secrets are read.
    assert_eq!(site.auth_token("missing", "web1").unwrap().expose(), "");
    assert!(site.host_config("alpha").unwrap().api_token().is_none());
    assert_eq!(site.problems().len(), 2, "broken env and secrets");
}

#[test]
fn secrets_never_show_in_debug_or_errors() {
    let site = load();
    let vars = site.resolve_env("web", "alpha").unwrap();
    let host = site.host_config("alpha").unwrap();
    let spec = site.resolve_spec("web1").unwrap();
    let texts = [
        format!("{site:?}"),
        format!("{vars:?}"),
        format!("{host:?}"),
        serde_json::to_string(&host).unwrap(),
        format!("{spec:?}"),
        site.required_token(spec.posture(), "web2")
            .unwrap_err()
            .to_string(),
    ];
    for text in &texts {
        for secret in SECRETS {
            assert!(!text.contains(secret), "{secret} leaked in {text}");
        }
    }
}

/// Fails when loading `site` found a problem in the file `name`.
fn assert_no_problem_in(site: &Site, name: &str) {
    let problems = site.problems();
    assert!(
        !problems.iter().any(|p| p.to_string().contains(name)),
        "{problems:?}"
    );
}

#[test]
fn host_config_passes_any_node_name_through_as_the_reference_does() {
    // The PVE node name is checked where the API is used, not at load:
    // the resolvers answer for a node file the Python tool answered for.
    let dir = copy();
    let nodes = dir.path().join("nodes");
    std::fs::write(
        nodes.join("beta.yaml"),
        "api_endpoint: https://127.0.1.2:8006\nnode: pve.beta\n",
    )
    .unwrap();
    let site = Site::load(dir.path()).unwrap();
    let beta = site.host_config("beta").unwrap();
    assert_eq!(beta.node_name.as_deref(), Some("pve.beta"));
    assert_no_problem_in(&site, "beta.yaml");
}

#[test]
fn host_config_prefers_nodes_then_hosts() {
    let site = load();
    let beta = site.host_config("beta").unwrap();
    assert!(!beta.is_host_only);
    assert_eq!(beta.node_name.as_deref(), Some("pve-beta"));
    // Host configs take ssh_host from the endpoint, not from `ip`.
    assert_eq!(beta.ssh_host.as_deref(), Some("127.0.1.2"));
    assert_eq!(beta.ssh_user, "admin");
    assert_eq!(beta.packer_release, "v1.2.3");
    assert_eq!(
        beta.api_token().map(|t| t.expose()).unwrap_or_default(),
        "root@pam!homestak=fake-shared-api-token"
    );
    let metal = site.host_config("metal").unwrap();
    assert!(metal.is_host_only);
    assert_eq!(
        (metal.ssh_host.as_deref(), metal.ssh_user.as_str()),
        (Some("127.0.2.5"), "installer")
    );
    assert!(metal.api_token().is_none() && metal.api_endpoint.is_none());
    // Written as the reference wrote them: absent is empty.
    let written = serde_json::to_value(&metal).unwrap();
    assert_eq!(written["api_endpoint"], "");
    assert_eq!(written["node_name"], "");
    assert_eq!(
        site.list_hosts(),
        ["alpha", "beta", "empty", "metal", "no-datastore"]
    );
    // The reference's guidance: both paths tried, the hosts there are,
    // and how to provision the host.
    let err = site.host_config("gamma").unwrap_err().to_string();
    let root = site.root().display().to_string();
    assert_eq!(
        err,
        format!(
            "Host 'gamma' not found.\n  - No node config: {root}/nodes/gamma.yaml (PVE not installed?)\n  - No host config: {root}/hosts/gamma.yaml (physical machine)\n\nAvailable hosts: alpha, beta, empty, metal, no-datastore\n\nTo provision a new host, create {root}/hosts/gamma.yaml:\n  ssh root@<ip> \"cd /usr/local/etc/homestak && make host-config\""
        )
    );
}

#[test]
fn spec_resolution_fills_defaults_keys_and_posture() {
    let site = load();
    let spec = site.resolve_spec("web1").unwrap();
    let value = serde_json::to_value(&spec).unwrap();
    assert_eq!(
        value["identity"],
        json!({"hostname": "web1", "domain": "lab.test"})
    );
    // The spec's own timezone wins over the site's.
    assert_eq!(value["config"], json!({"timezone": "Europe/Paris"}));
    assert_eq!(
        value["access"]["users"],
        json!([
            {"name": "ops", "sudo": true, "ssh_keys": [
                "ssh-ed25519 AAAAC3NzaFAKEAMY amy@desk",
                "ssh-ed25519 AAAAC3NzaFAKEZED zed@laptop"
            ]},
            {"name": "nokeys"}
        ])
    );
    assert_eq!(
        value["access"]["_posture"]["auth"]["method"],
        json!("node_token")
    );
    assert!(spec.served()["access"].get("_posture").is_none());
    assert_eq!(spec.posture_name(), "prod");

    let code = |id: &str| site.resolve_spec(id).unwrap_err().code();
    assert_eq!(code("nope"), Some("E200"));
    assert_eq!(code("../secrets"), Some("E200"));
    assert_eq!(code("badkey"), Some("E202"));
    assert!(matches!(
        site.resolve_spec("../secrets").unwrap_err(),
        spec::Error::InvalidIdentity { .. }
    ));
    assert_eq!(site.list_specs(), ["badkey", "base", "web1"]);
}

#[test]
fn lists_are_sorted_file_stems() {
    let site = load();
    assert_eq!(
        site.list_envs(),
        ["broken", "null-packages", "null-vms", "stage", "web"]
    );
    assert_eq!(site.list_templates(), ["small-web"]);
    assert_eq!(site.list_presets(), ["large", "small"]);
    assert_eq!(site.list_postures(), ["null-packages", "prod"]);
    assert_eq!(site.preset_v2("vm-small").unwrap().unwrap().cores, Some(1));
    assert!(site.preset_v2("vm-huge").unwrap().is_none());
}

#[test]
fn reload_sees_changes() {
    let dir = copy();
    let site = Site::load(dir.path()).unwrap();
    std::fs::write(dir.path().join("envs/new.yaml"), "vms: []\n").unwrap();
    assert!(!site.list_envs().contains(&"new".to_string()));
    assert!(
        site.reload()
            .unwrap()
            .list_envs()
            .contains(&"new".to_string())
    );
}

/// Our documents validate against the schemas generated from our types.
#[test]
fn fixture_documents_validate_against_generated_schemas() {
    validate_tree(&fixture(), &["envs/broken.yaml"]);
}

/// The real site-config data (../shared) parses into our types and
/// validates against our schemas.
#[test]
fn shared_fixture_documents_fit_our_types() {
    let shared = std::env::var_os("HOMESTAK_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("../shared")
        })
        .join("site-config-fixture");
    if !shared.is_dir() {
        println!("SKIPPED: {} not present", shared.display());
        return;
    }
    let site = Site::load(&shared).unwrap();
    assert_no_problem_in(&site, "beta.yaml");
    validate_tree(&shared, &[]);
}

#[test]
fn generated_schemas_reject_wrong_types() {
    let (preset, index) = compile("preset");
    assert!(preset.validate(&json!({"cores": 2}), index).is_ok());
    assert!(preset.validate(&json!({"cores": "two"}), index).is_err());
    let (spec, index) = compile("spec");
    assert!(spec.validate(&json!({"schema_version": 1}), index).is_ok());
    assert!(
        spec.validate(&json!({"platform": {}}), index).is_err(),
        "schema_version is required"
    );
    let names: Vec<&str> = site::json_schemas().iter().map(|(n, _)| *n).collect();
    for name in ["spec", "posture", "preset", "node", "host"] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
}

fn compile(name: &str) -> (boon::Schemas, boon::SchemaIndex) {
    let schema = site::json_schemas()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| s)
        .unwrap();
    let mut compiler = boon::Compiler::new();
    let mut compiled = boon::Schemas::new();
    let url = format!("file:///{name}.json");
    compiler
        .add_resource(&url, serde_json::to_value(&schema).unwrap())
        .unwrap();
    let index = compiler.compile(&url, &mut compiled).unwrap();
    (compiled, index)
}

fn validate_tree(root: &Path, skip: &[&str]) {
    let dirs = [
        ("nodes", "node"),
        ("hosts", "host"),
        ("envs", "env"),
        ("vms", "template"),
        ("vms/presets", "preset"),
        ("postures", "posture-v1"),
        ("v2/postures", "posture"),
        ("v2/presets", "preset"),
        ("v2/specs", "spec"),
    ];
    let mut checked = 0;
    for (dir, name) in dirs {
        let Ok(listing) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        let (compiled, index) = compile(name);
        for entry in listing {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if path.extension().is_none_or(|e| e != "yaml") || skip.contains(&rel.as_str()) {
                continue;
            }
            let doc: Option<Value> = homestak_base::yaml::read_file(&path).unwrap();
            let doc = doc.unwrap_or_else(|| json!({}));
            if let Err(err) = compiled.validate(&doc, index) {
                panic!("{rel} does not match the {name} schema: {err}");
            }
            checked += 1;
        }
    }
    assert!(checked > 10, "only {checked} documents checked");
}

/// The daemon shares one `Site` across tasks and swaps it on reload.
#[test]
fn site_and_outputs_are_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Site>();
    assert_send_sync::<homestak_core::site::TofuVars>();
    assert_send_sync::<homestak_core::site::ResolvedSpec>();
    assert_send_sync::<resolver::Error>();
    assert_send_sync::<spec::Error>();
    assert_send_sync::<auth::Error>();
}
