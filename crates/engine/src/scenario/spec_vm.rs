//! `spec-vm-push-roundtrip`: a VM whose node has `spec:` in push mode is
//! created by the engine's one run path ([`Engine::run_once`], as
//! `homestak create` does: its `push_spec` step writes the spec over SSH),
//! the spec is read back from the VM and compared byte for byte with what
//! the site serves for it (`GET /spec/{identity}`), and the VM destroyed.
//!
//! The manifest is `-M NAME`, `--manifest-file PATH`, else a built-in one
//! with one VM named `test` (vmid 99900, the Python tool's test VM) whose
//! spec is `-E/--env`, else the site's spec named `test`, else the site's
//! first spec (`v2/specs/*.yaml`, sorted). `--vm-id NAME=ID` applies to
//! either. The first node with `spec:` is the one verified; it must be in
//! push mode.

use std::sync::Arc;
use std::time::Duration;

use homestak_api::{Mode, Outcome, Reason};
use homestak_base::id::NodeName;
use homestak_core::model::{ExecutionMode, Loader, Manifest};
use homestak_core::site::Site;
use homestak_ssh as ssh;

use super::{Ctx, Needs, PhaseDef, PhaseError, PhaseFuture, ScenarioDef};
use crate::controllers::vm::SPEC_PATH;
use crate::reconcile::{self, Engine, Request, Setup};

pub const SPEC_VM_PUSH_ROUNDTRIP: ScenarioDef = ScenarioDef {
    name: "spec-vm-push-roundtrip",
    runtime: Duration::from_secs(180),
    description: "Deploy a VM whose spec is pushed over SSH, verify it arrived byte for byte, destroy",
    needs: Needs::Host,
    phases,
};

fn phases() -> Vec<PhaseDef> {
    vec![
        PhaseDef {
            name: "provision_vm",
            description: "Create the VM and push its spec (the manifest converged once)",
            run: provision_vm,
        },
        PhaseDef {
            name: "verify_spec",
            description: "Read /etc/homestak/spec.json back over SSH; compare it with the served spec",
            run: verify_spec,
        },
        PhaseDef {
            name: "destroy_vm",
            description: "Destroy the manifest's VMs",
            run: destroy_vm,
        },
    ]
}

/// The built-in manifest's name, VM and vmid (the Python tool's `test` env).
const DEFAULT_MANIFEST: &str = "spec-vm-push-roundtrip";
const DEFAULT_NODE: &str = "test";
const DEFAULT_VMID: u32 = 99900;

/// `--host`, which [`Needs::Host`] made sure of.
fn host(ctx: &Ctx) -> Result<String, PhaseError> {
    ctx.inputs
        .host
        .clone()
        .ok_or_else(|| PhaseError::Target("pass --host NAME".into()))
}

fn site(ctx: &Ctx) -> Result<Site, PhaseError> {
    let root = ctx.site_root()?;
    Site::load(root)
        .map_err(|e| PhaseError::caused(format!("loading the site-config {}", root.display()), e))
}

/// The spec the built-in manifest names: `--env`, else `test`, else the
/// site's first.
fn default_spec(ctx: &Ctx, site: &Site) -> Result<String, PhaseError> {
    if let Some(spec) = &ctx.inputs.env {
        return Ok(spec.clone());
    }
    let specs = site.list_specs();
    if specs.iter().any(|s| s == DEFAULT_NODE) {
        return Ok(DEFAULT_NODE.to_string());
    }
    specs.into_iter().next().ok_or_else(|| {
        PhaseError::failed(
            "the site-config has no spec (v2/specs/*.yaml)",
            Some("add one, or pass -M MANIFEST with a node that has spec:".to_string()),
        )
    })
}

/// The run's manifest, with `--vm-id` applied.
fn manifest(ctx: &Ctx, site: &Site) -> Result<Manifest, PhaseError> {
    let mut manifest = if let Some(name) = &ctx.inputs.manifest {
        Loader::new(ctx.site_root()?)
            .load(name)
            .map_err(|e| PhaseError::caused(format!("loading manifest {name}"), e))?
    } else if let Some(path) = &ctx.inputs.manifest_file {
        Manifest::from_file(path)
            .map_err(|e| PhaseError::caused(format!("loading {}", path.display()), e))?
    } else {
        let spec = default_spec(ctx, site)?;
        let doc = serde_json::json!({
            "schema_version": 2,
            "name": DEFAULT_MANIFEST,
            "nodes": [{
                "name": DEFAULT_NODE,
                "type": "vm",
                "preset": "vm-small",
                "image": "debian-12",
                "vmid": DEFAULT_VMID,
                "spec": spec,
                "execution": {"mode": "push"},
            }],
            "settings": {"verify_ssh": true},
        });
        Manifest::from_json(&doc.to_string())
            .map_err(|e| PhaseError::caused(format!("the built-in manifest with spec {spec}"), e))?
    };
    for (name, vmid) in &ctx.inputs.vm_ids {
        manifest
            .set_vmid(name, *vmid)
            .map_err(|e| PhaseError::caused(format!("--vm-id {name}={vmid}"), e))?;
    }
    Ok(manifest)
}

/// The node whose spec the scenario checks: the first with `spec:`, in
/// push mode. Returns its name and spec.
fn spec_node(manifest: &Manifest) -> Result<(NodeName, String), PhaseError> {
    let node = manifest
        .nodes_in_creation_order()
        .unwrap_or_default()
        .into_iter()
        .find(|n| n.spec.is_some())
        .ok_or_else(|| {
            PhaseError::failed(
                format!("manifest {} has no node with spec:", manifest.name()),
                Some("give a VM node spec: NAME and execution: {mode: push}".to_string()),
            )
        })?;
    if manifest.execution_mode(node) != ExecutionMode::Push {
        return Err(PhaseError::failed(
            format!(
                "node {} of manifest {} gets its spec by pull",
                node.name,
                manifest.name()
            ),
            Some("this scenario pushes: set execution: {mode: push} on the node".to_string()),
        ));
    }
    let spec = node.spec.clone().unwrap_or_default();
    Ok((node.name.clone(), spec))
}

fn setup(ctx: &Ctx) -> Setup {
    Setup {
        insecure: ctx.inputs.insecure,
        state_dir: ctx.inputs.state_dir.clone(),
        open_store: true,
        ssh_key: ctx.inputs.ssh_key.clone(),
        binary: None,
        lease: crate::hostlease::Policy {
            command: SPEC_VM_PUSH_ROUNDTRIP.name.to_string(),
            ..crate::hostlease::Policy::default()
        },
    }
}

/// One run of `manifest` on the host in `mode`, through the engine.
async fn converge(
    ctx: &Ctx,
    site: Site,
    manifest: &Arc<Manifest>,
    mode: Mode,
) -> Result<Engine, PhaseError> {
    let host = host(ctx)?;
    let engine = Engine::open(setup(ctx))
        .map_err(|e| PhaseError::caused("opening the store (another homestak holds it?)", e))?;
    let request = Request {
        manifest: Arc::clone(manifest),
        host: host.clone(),
        site: Arc::new(site),
        revision: None,
        reason: Reason::Cli,
        mode,
        options: reconcile::Options::default(),
        generation: 0,
    };
    let verb = if mode == Mode::Destroy {
        "destroying"
    } else {
        "converging"
    };
    let what = format!("{verb} manifest {} on {host}", manifest.name());
    let run = engine
        .run_once(request, std::future::pending(), &())
        .await
        .map_err(|e| PhaseError::caused(what.clone(), e))?;
    if run.outcome != Outcome::Converged {
        let why = run
            .message
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| run.summary.clone());
        return Err(PhaseError::failed(
            format!("{what}: {}: {why}", run.outcome),
            Some(format!(
                "`homestak status --manifest-file … -H {host}` shows each node's state"
            )),
        ));
    }
    Ok(engine)
}

fn provision_vm(ctx: &mut Ctx) -> PhaseFuture<'_> {
    Box::pin(async move {
        let site = site(ctx)?;
        let manifest = Arc::new(manifest(ctx, &site)?);
        let (node, spec) = spec_node(&manifest)?;
        let engine = converge(ctx, site, &manifest, Mode::Apply).await?;
        let record = engine
            .store()
            .and_then(|s| s.list_nodes(manifest.name()).ok())
            .and_then(|records| records.into_iter().find(|(n, _)| *n == node))
            .map(|(_, r)| r);
        let (Some(vmid), Some(ip)) = (
            record.as_ref().and_then(|r| r.vmid),
            record.as_ref().and_then(|r| r.ip.clone()),
        ) else {
            return Err(PhaseError::failed(
                format!("the store has no vmid and address of VM {node} after the run"),
                Some("check settings.verify_ssh: true in the manifest".to_string()),
            ));
        };
        let vmid = u32::from(vmid);
        let c = &mut ctx.context;
        c.set("manifest", manifest.name().to_string());
        c.set("spec", spec.clone());
        c.set("vm_name", node.to_string());
        c.set("vm_id", vmid);
        c.set("vm_ip", ip.clone());
        c.set(format!("{node}_vmid"), vmid);
        c.set(format!("{node}_ip"), ip.clone());
        Ok(format!(
            "VM {node} (vmid {vmid}) at {ip}, spec {spec} pushed"
        ))
    })
}

fn verify_spec(ctx: &mut Ctx) -> PhaseFuture<'_> {
    Box::pin(async move {
        let Some(ip) = ctx.context.get_str("vm_ip") else {
            return Err(PhaseError::failed(
                "no vm_ip in the context",
                Some("run provision_vm first, or load it with --context-file".to_string()),
            ));
        };
        let site = site(ctx)?;
        let manifest = manifest(ctx, &site)?;
        let (node, _) = spec_node(&manifest)?;
        let host_name = host(ctx)?;
        // What the engine pushed: the spec as `GET /spec/{identity}` answers it.
        let tier = reconcile::desired::resolve(&site, &manifest, &host_name).map_err(|e| {
            PhaseError::caused(format!("resolving manifest {}", manifest.name()), e)
        })?;
        let vm = tier
            .desired
            .vms
            .iter()
            .find(|v| v.name == node)
            .ok_or_else(|| {
                PhaseError::failed(format!("node {node} is not a VM of host {host_name}"), None)
            })?;
        let Some(spec) = &vm.spec else {
            return Err(PhaseError::failed(format!("node {node} has no spec"), None));
        };
        let host = site
            .host_config(&host_name)
            .map_err(|e| PhaseError::caused(format!("the config of host {host_name}"), e))?;
        let check = reconcile::ssh_check(&host, &setup(ctx))
            .map_err(|e| PhaseError::caused("loading the SSH key", e))?;
        let target = ssh::Target::new(
            ssh::Destination::new(&ip, check.port, &vm.user),
            check.identity.clone(),
            check.host_key.clone(),
        );
        let session = check.transport.connect(&target).await.map_err(|e| {
            PhaseError::caused(format!("SSH to VM {node} ({ip}:{})", check.port), e)
        })?;
        let line = format!("cat {SPEC_PATH}");
        let command = if vm.user == "root" {
            ssh::Command::shell(line)
        } else {
            ssh::Command::new("sudo").args(["-n", "sh", "-c"]).arg(line)
        };
        let read = session.exec_ok(&command).await;
        let _ = session.close().await;
        let there = read
            .map_err(|e| PhaseError::caused(format!("reading {SPEC_PATH} on VM {node} ({ip})"), e))?
            .stdout;
        let hex = |bytes: &[u8]| homestak_base::digest::hex(&homestak_base::digest::sha256(bytes));
        if there != spec.document.as_bytes() {
            // Digests and sizes only: the document is the VM's configuration.
            return Err(PhaseError::failed(
                format!(
                    "{SPEC_PATH} on VM {node} ({ip}) is not spec {} as served: {} bytes, sha256 {} \
                     there; {} bytes, sha256 {} served",
                    spec.identity,
                    there.len(),
                    hex(&there),
                    spec.document.len(),
                    spec.digest
                ),
                Some("run provision_vm again (push_spec rewrites a differing file)".to_string()),
            ));
        }
        ctx.context.set("spec_digest", spec.digest.clone());
        Ok(format!(
            "{SPEC_PATH} on {node} ({ip}) is spec {} byte for byte ({} bytes, sha256 {})",
            spec.identity,
            there.len(),
            spec.digest
        ))
    })
}

fn destroy_vm(ctx: &mut Ctx) -> PhaseFuture<'_> {
    Box::pin(async move {
        let site = site(ctx)?;
        let manifest = Arc::new(manifest(ctx, &site)?);
        let engine = converge(ctx, site, &manifest, Mode::Destroy).await?;
        drop(engine);
        Ok(format!(
            "destroyed the VMs of manifest {}{}",
            manifest.name(),
            ctx.context
                .get_str("vm_id")
                .map(|id| format!(" (vmid {id})"))
                .unwrap_or_default()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{Context, Inputs};
    use homestak_base::id::VmId;

    fn site_with(specs: &[&str]) -> (tempfile::TempDir, Ctx) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("site.yaml"),
            "defaults:\n  domain: t.local\n",
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("v2/specs")).unwrap();
        for spec in specs {
            std::fs::write(
                dir.path().join(format!("v2/specs/{spec}.yaml")),
                "schema_version: 1\n",
            )
            .unwrap();
        }
        let ctx = Ctx::new(
            Inputs {
                host: Some("pve".into()),
                site_root: Some(dir.path().to_path_buf()),
                state_dir: dir.path().join("state"),
                ..Inputs::default()
            },
            Context::new(),
        );
        (dir, ctx)
    }

    #[test]
    fn the_built_in_manifest_takes_env_then_test_then_the_first_spec() {
        let (_dir, mut ctx) = site_with(&["web", "api", "test"]);
        let loaded = super::site(&ctx).unwrap();
        assert_eq!(default_spec(&ctx, &loaded).unwrap(), "test");
        ctx.inputs.env = Some("web".into());
        assert_eq!(default_spec(&ctx, &loaded).unwrap(), "web");

        let (_dir, ctx) = site_with(&["web", "api"]);
        let loaded = super::site(&ctx).unwrap();
        assert_eq!(default_spec(&ctx, &loaded).unwrap(), "api");
        let manifest = manifest(&ctx, &loaded).unwrap();
        assert_eq!(manifest.name(), DEFAULT_MANIFEST);
        assert_eq!(
            spec_node(&manifest).unwrap(),
            (NodeName::new(DEFAULT_NODE).unwrap(), "api".to_string())
        );

        let (_dir, ctx) = site_with(&[]);
        let loaded = super::site(&ctx).unwrap();
        let err = default_spec(&ctx, &loaded).unwrap_err().to_string();
        assert!(err.contains("no spec (v2/specs/*.yaml)"), "{err}");
    }

    #[test]
    fn vm_id_overrides_apply_to_the_manifest_and_unknown_names_are_refused() {
        let (_dir, mut ctx) = site_with(&["web"]);
        let loaded = super::site(&ctx).unwrap();
        let vmid = VmId::new(99123).unwrap();
        ctx.inputs.vm_ids = vec![(NodeName::new("test").unwrap(), vmid)];
        let manifest = manifest(&ctx, &loaded).unwrap();
        let node = manifest.node("test").unwrap();
        assert_eq!(node.vmid.map(u32::from), Some(99123));
        ctx.inputs.vm_ids = vec![(NodeName::new("nobody").unwrap(), vmid)];
        let err = homestak_base::error_chain(&manifest_err(&ctx, &loaded));
        assert!(err.contains("--vm-id nobody=99123"), "{err}");
    }

    fn manifest_err(ctx: &Ctx, site: &Site) -> PhaseError {
        match manifest(ctx, site) {
            Ok(_) => panic!("the manifest was accepted"),
            Err(err) => err,
        }
    }

    #[tokio::test]
    async fn a_pull_mode_manifest_is_refused_before_anything_runs() {
        let (dir, mut ctx) = site_with(&["web"]);
        let path = dir.path().join("pull.yaml");
        std::fs::write(
            &path,
            "schema_version: 2\nname: pulled\nnodes:\n  - name: web\n    type: vm\n    \
             spec: web\n    execution: {mode: pull}\n",
        )
        .unwrap();
        ctx.inputs.manifest_file = Some(path);
        let err = provision_vm(&mut ctx).await.unwrap_err().to_string();
        assert!(
            err.contains("node web of manifest pulled gets its spec by pull"),
            "{err}"
        );
        // Nothing was opened: no store in the state directory.
        assert!(!dir.path().join("state/store").exists());
    }
}
