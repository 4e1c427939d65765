//! The packer scenarios of the Python iac-driver: build images on a host
//! with KVM over SSH (or here with `--local`), then fetch them here or
//! publish them into the host's PVE storage. The phases are
//! [`crate::packer`]'s functions; this file only reads their inputs from
//! the run (flags and context) and records what they did in the context.
//!
//! Inputs beyond the flags, from the context (`--context-file`): `packer_dir`
//! (the local packer tree for `sync_packer`; else `HOMESTAK_PACKER_DIR`,
//! else `packer` next to the site-config, else `./packer`), `images_dir`
//! (where `fetch_images` writes; default `/tmp/packer-images`) and
//! `remote_packer_dir` (default `/opt/homestak/packer`).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::{Ctx, Needs, PhaseDef, PhaseError, PhaseFuture, ScenarioDef};
use crate::packer::{self as pk, Built};

fn phase_error(err: pk::PackerError) -> PhaseError {
    PhaseError::Failed {
        what: "packer".into(),
        hint: None,
        source: Some(Box::new(err)),
    }
}

/// The packer tree on the target: this machine's with `--local`.
fn remote_dir(ctx: &Ctx) -> Result<String, PhaseError> {
    if ctx.inputs.local {
        return Ok(local_dir(ctx).to_string_lossy().into_owned());
    }
    Ok(ctx
        .context
        .get_str("remote_packer_dir")
        .unwrap_or_else(|| pk::REMOTE_DIR.to_string()))
}

fn local_dir(ctx: &Ctx) -> PathBuf {
    if let Some(dir) = ctx.context.get_str("packer_dir") {
        return dir.into();
    }
    if let Some(dir) = std::env::var_os("HOMESTAK_PACKER_DIR") {
        return dir.into();
    }
    if let Some(parent) = ctx.inputs.site_root.as_deref().and_then(|r| r.parent()) {
        return parent.join("packer");
    }
    PathBuf::from("packer")
}

fn images_dir(ctx: &Ctx) -> PathBuf {
    ctx.context
        .get_str("images_dir")
        .map_or_else(|| PathBuf::from(pk::FETCH_DIR), PathBuf::from)
}

/// What `build_images` built (this run, or an earlier one via the context).
fn built(ctx: &Ctx, dir: &str) -> Vec<Built> {
    let names: Vec<String> = match ctx.context.get("built_images") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        _ => ctx.inputs.templates.clone(),
    };
    names
        .into_iter()
        .map(|template| Built {
            path: format!("{dir}/{}", pk::image_path(&template)),
            template,
        })
        .collect()
}

fn names(built: &[Built]) -> String {
    built
        .iter()
        .map(|b| b.template.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn sync_packer(ctx: &mut Ctx) -> PhaseFuture<'_> {
    Box::pin(async move {
        if ctx.inputs.local {
            return Ok("nothing to sync: --local builds in the local packer tree".into());
        }
        let local = local_dir(ctx);
        let remote = remote_dir(ctx)?;
        let shell = ctx.shell().await?;
        let files = pk::sync_packer(&*shell, &local, &remote)
            .await
            .map_err(phase_error)?;
        ctx.context
            .set("remote_ip", shell.destination().host.to_string());
        Ok(format!(
            "Synced {files} files of {} to {}:{remote}",
            local.display(),
            shell.destination().host
        ))
    })
}

fn build_images(ctx: &mut Ctx) -> PhaseFuture<'_> {
    Box::pin(async move {
        let dir = remote_dir(ctx)?;
        let shell = ctx.shell().await?;
        let templates = if ctx.inputs.templates.is_empty() {
            pk::list_templates(&*shell, &dir)
                .await
                .map_err(phase_error)?
        } else {
            ctx.inputs.templates.clone()
        };
        let built = pk::build_images(&*shell, &dir, &templates)
            .await
            .map_err(phase_error)?;
        let list: Vec<Value> = built
            .iter()
            .map(|b| Value::from(b.template.clone()))
            .collect();
        ctx.context.set("built_images", Value::Array(list));
        ctx.context
            .set("remote_ip", shell.destination().host.to_string());
        for b in &built {
            ctx.context
                .set(format!("{}_image", b.template), b.path.clone());
        }
        Ok(format!(
            "Built {} images on {}: {}",
            built.len(),
            shell.destination().host,
            names(&built)
        ))
    })
}

fn fetch_images(ctx: &mut Ctx) -> PhaseFuture<'_> {
    Box::pin(async move {
        let dir = remote_dir(ctx)?;
        let dest = images_dir(ctx);
        let built = built(ctx, &dir);
        if built.is_empty() {
            return Err(PhaseError::failed(
                "no images to fetch",
                Some("run build_images first, or pass --templates".to_string()),
            ));
        }
        let shell = ctx.shell().await?;
        let fetched = pk::fetch_images(&*shell, &built, &dest)
            .await
            .map_err(phase_error)?;
        let list: Vec<Value> = built
            .iter()
            .map(|b| Value::from(b.template.clone()))
            .collect();
        ctx.context.set("fetched_images", Value::Array(list));
        ctx.context
            .set("images_dir", dest.to_string_lossy().into_owned());
        for (b, path) in built.iter().zip(&fetched) {
            ctx.context.set(
                format!("{}_local", b.template),
                path.to_string_lossy().into_owned(),
            );
        }
        Ok(format!(
            "Fetched {} images to {}: {}",
            fetched.len(),
            dest.display(),
            names(&built)
        ))
    })
}

/// The storage images are published to: the host's `image_storage` with
/// `--host`, else `local`.
fn storage(ctx: &Ctx) -> String {
    host_config(ctx).map_or_else(|| "local".to_string(), |h| h.image_storage)
}

/// The site's config of the build host: `--host`, else the node whose
/// address is `--remote`.
fn host_config(ctx: &Ctx) -> Option<homestak_core::site::HostConfig> {
    let site = homestak_core::site::Site::load(ctx.inputs.site_root.as_deref()?).ok()?;
    if let Some(name) = &ctx.inputs.host {
        return site.host_config(name).ok();
    }
    let remote = ctx.inputs.remote.as_deref()?;
    site.nodes()
        .names()
        .into_iter()
        .filter_map(|n| site.host_config(&n).ok())
        .find(|h| h.ssh_host.as_deref() == Some(remote))
}

fn publish_images(ctx: &mut Ctx) -> PhaseFuture<'_> {
    Box::pin(async move {
        let dir = remote_dir(ctx)?;
        let built = built(ctx, &dir);
        if built.is_empty() {
            return Err(PhaseError::failed(
                "no images to publish",
                Some("run build_images first, or pass --templates".to_string()),
            ));
        }
        let storage = storage(ctx);
        let shell = ctx.shell().await?;
        let volids = pk::publish_images(&*shell, &built, &storage)
            .await
            .map_err(phase_error)?;
        let list: Vec<Value> = volids.iter().cloned().map(Value::from).collect();
        ctx.context.set("published_images", Value::Array(list));
        Ok(format!(
            "Published {} images to {}: {}",
            volids.len(),
            shell.destination().host,
            volids.join(", ")
        ))
    })
}

fn verify_images(ctx: &mut Ctx) -> PhaseFuture<'_> {
    Box::pin(async move {
        let volids: Vec<String> = match ctx.context.get("published_images") {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            _ => Vec::new(),
        };
        let Some(host) = host_config(ctx) else {
            return Err(PhaseError::failed(
                "no PVE API to check the published images with",
                Some(
                    "pass --host NAME (a node of the site-config), or --skip verify_images"
                        .to_string(),
                ),
            ));
        };
        let api = crate::reconcile::connect(&host, ctx.inputs.insecure, None).map_err(|e| {
            PhaseError::caused(format!("connecting to the PVE API of {}", host.name), e)
        })?;
        let node = crate::reconcile::pve_node(&host)
            .map_err(|e| PhaseError::caused(format!("the PVE node of {}", host.name), e))?;
        pk::verify_images(&*api, &node, &host.image_storage, &volids)
            .await
            .map_err(phase_error)?;
        Ok(format!(
            "The PVE API of {} lists {}",
            host.name,
            volids.join(", ")
        ))
    })
}

const SYNC: PhaseDef = PhaseDef {
    name: "sync_packer",
    description: "Sync the local packer tree to the build host",
    run: sync_packer,
};
const BUILD: PhaseDef = PhaseDef {
    name: "build_images",
    description: "Build packer images",
    run: build_images,
};
const FETCH: PhaseDef = PhaseDef {
    name: "fetch_images",
    description: "Fetch images to this machine",
    run: fetch_images,
};
const PUBLISH: PhaseDef = PhaseDef {
    name: "publish_images",
    description: "Publish images to PVE storage",
    run: publish_images,
};
const VERIFY: PhaseDef = PhaseDef {
    name: "verify_images",
    description: "Check the PVE API lists the published images",
    run: verify_images,
};

pub const PACKER_BUILD: ScenarioDef = ScenarioDef {
    name: "packer-build",
    runtime: Duration::from_secs(180),
    description: "Build Debian cloud images with packer",
    needs: Needs::Target,
    phases: || vec![BUILD],
};

pub const PACKER_BUILD_FETCH: ScenarioDef = ScenarioDef {
    name: "packer-build-fetch",
    runtime: Duration::from_secs(300),
    description: "Build on remote host, fetch images locally",
    needs: Needs::Target,
    phases: || vec![BUILD, FETCH],
};

pub const PACKER_BUILD_PUBLISH: ScenarioDef = ScenarioDef {
    name: "packer-build-publish",
    runtime: Duration::from_secs(420),
    description: "Build and publish images to PVE storage",
    needs: Needs::Target,
    phases: || vec![BUILD, PUBLISH, VERIFY],
};

pub const PACKER_SYNC: ScenarioDef = ScenarioDef {
    name: "packer-sync",
    runtime: Duration::from_secs(30),
    description: "Sync local packer changes to remote host",
    needs: Needs::Target,
    phases: || vec![SYNC],
};

pub const PACKER_SYNC_BUILD_FETCH: ScenarioDef = ScenarioDef {
    name: "packer-sync-build-fetch",
    runtime: Duration::from_secs(360),
    description: "Sync local changes, build remotely, fetch images",
    needs: Needs::Target,
    phases: || vec![SYNC, BUILD, FETCH],
};
