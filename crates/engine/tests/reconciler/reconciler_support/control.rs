//! The simulator's `/_sim/` control API over HTTPS (pinned certificate,
//! API token), as a case's `sim:` steps use it. Control requests are not
//! counted in the simulator's request counters.

use std::time::Duration;

use anyhow::{Context, bail};
use homestak_sim::{Handle, TierView};
use serde_json::Value;

use super::case::{SimAction, VmRef};
use homestak_base::id::{NodeName, VmId};
use homestak_core::plan::marks::{Marks, OwnerKey, TAG, owner_tag};

/// A client for one simulator's control endpoints.
pub struct Control {
    client: reqwest::Client,
    base: String,
    auth: String,
}

impl Control {
    pub fn new(handle: &Handle) -> anyhow::Result<Control> {
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(homestak_tls::pinned_client_config(handle.fingerprint()))
            .timeout(Duration::from_secs(30))
            .build()
            .context("build the control client")?;
        Ok(Control {
            client,
            base: format!("{}/_sim", handle.url()),
            auth: format!("PVEAPIToken={}", handle.token()),
        })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.base))
            .header("Authorization", &self.auth);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} /_sim{path}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            let message = json["message"].as_str().unwrap_or(&text);
            bail!("{method} /_sim{path} answered {status}: {message}");
        }
        Ok(json["data"].clone())
    }

    /// Carries out one `sim:` action; `key` is the site's ownership key,
    /// for `create_vm` bodies with `marks:`.
    pub async fn apply(
        &self,
        handle: &Handle,
        action: &SimAction,
        key: &OwnerKey,
    ) -> anyhow::Result<()> {
        use reqwest::Method;
        match action {
            SimAction::DeleteVm(vm) => {
                let vmid = resolve(handle, vm)?;
                self.send(Method::DELETE, &format!("/vms/{vmid}"), None)
                    .await?;
            }
            SimAction::PatchVm(body) => {
                let (vmid, body) = split_vm(handle, body)?;
                self.send(Method::PATCH, &format!("/vms/{vmid}"), Some(&body))
                    .await?;
            }
            SimAction::CreateVm(body) => {
                let body = with_marks(body, key)?;
                self.send(Method::POST, "/vms", Some(&body)).await?;
            }
            SimAction::Faults(body) => {
                self.send(Method::PUT, "/faults", Some(body)).await?;
            }
            SimAction::VmFaults(body) => {
                let (vmid, body) = split_vm(handle, body)?;
                self.send(Method::PUT, &format!("/faults/vms/{vmid}"), Some(&body))
                    .await?;
            }
            SimAction::ClearVmFaults(vm) => {
                let vmid = resolve(handle, vm)?;
                self.send(Method::DELETE, &format!("/faults/vms/{vmid}"), None)
                    .await?;
            }
            SimAction::AddImage(body) => {
                self.send(Method::POST, "/images", Some(body)).await?;
            }
            SimAction::DeleteVmIn(nested) => {
                let tier = tier(handle, &nested.tier)?;
                let vmid = vmid_named(&tier, &nested.vm)?;
                tier.delete_vm(vmid).map_err(|e| anyhow::anyhow!(e))?;
            }
        }
        Ok(())
    }
}

/// Expands `marks: {manifest, node, image, written_for?, key?}` in a
/// `create_vm` body into the `tags` and `description` homestak writes:
/// bound to the body's `vmid` (or to `written_for`, as a clone's copy is),
/// under the site's key (or under `key:` text, as another site's are).
fn with_marks(body: &Value, key: &OwnerKey) -> anyhow::Result<Value> {
    let Some(marks) = body.get("marks") else {
        return Ok(body.clone());
    };
    let text = |field: &str| -> anyhow::Result<String> {
        marks
            .get(field)
            .and_then(Value::as_str)
            .map(String::from)
            .with_context(|| format!("create_vm marks need `{field}`"))
    };
    let vmid = body
        .get("vmid")
        .and_then(Value::as_u64)
        .context("create_vm with marks needs a vmid")?;
    let bound = marks
        .get("written_for")
        .and_then(Value::as_u64)
        .unwrap_or(vmid);
    let bound = VmId::try_from(bound)?;
    let other;
    let key = match marks.get("key").and_then(Value::as_str) {
        Some(k) => {
            other = OwnerKey::new(&homestak_base::secret::Secret::new(k))?;
            &other
        }
        None => key,
    };
    let node = NodeName::new(text("node")?)?;
    let manifest = text("manifest")?;
    let m = Marks {
        manifest: manifest.clone(),
        node: node.clone(),
        image: text("image")?,
        spec_hash: "sha256:0000000000000000".into(),
    };
    let mut out = body.clone();
    if let Some(o) = out.as_object_mut() {
        o.remove("marks");
        o.insert(
            "tags".into(),
            format!("{TAG};{}", owner_tag(key, bound, &manifest, &node)).into(),
        );
        o.insert("description".into(), m.to_description(key, bound).into());
    }
    Ok(out)
}

/// The vmid of a VM named by vmid (taken as is: it may not exist yet, as
/// for faults set before a create) or by name (exactly one VM).
pub fn resolve(handle: &Handle, vm: &VmRef) -> anyhow::Result<u32> {
    match vm {
        VmRef::Id(id) => Ok(*id),
        VmRef::Name(name) => {
            let world = handle.world();
            let ids: Vec<u32> = world
                .vms
                .values()
                .filter(|v| v.config.get("name") == Some(name))
                .map(|v| v.vmid)
                .collect();
            match ids.as_slice() {
                [id] => Ok(*id),
                [] => bail!("no VM is named {name:?}"),
                many => bail!(
                    "{} VMs are named {name:?} ({many:?}); name it by vmid",
                    many.len()
                ),
            }
        }
    }
}

/// The nested tier below the `pve` VMs named in `path` (the root tier
/// when empty).
pub fn tier(handle: &Handle, path: &[String]) -> anyhow::Result<TierView> {
    let mut tier = handle.view();
    for name in path {
        let vmid = vmid_named(&tier, name)?;
        tier = tier
            .nested(vmid)
            .ok_or_else(|| anyhow::anyhow!("VM {name:?} (vmid {vmid}) runs no nested PVE tier"))?;
    }
    Ok(tier)
}

/// The vmid of the one VM named `name` on `tier`.
pub fn vmid_named(tier: &TierView, name: &str) -> anyhow::Result<u32> {
    let ids: Vec<u32> = tier
        .world()
        .vms
        .values()
        .filter(|v| v.config.get("name").map(String::as_str) == Some(name))
        .map(|v| v.vmid)
        .collect();
    match ids.as_slice() {
        [id] => Ok(*id),
        [] => bail!("no VM is named {name:?} on that tier"),
        many => bail!("{} VMs are named {name:?}: {many:?}", many.len()),
    }
}

/// Takes `vm:` out of an action body.
fn split_vm(handle: &Handle, body: &Value) -> anyhow::Result<(u32, Value)> {
    let Value::Object(map) = body else {
        bail!("expected a mapping with `vm:` and the fields to send");
    };
    let mut map = map.clone();
    let Some(vm) = map.remove("vm") else {
        bail!("missing `vm:` (a vmid or a VM name)");
    };
    let vm: VmRef = serde_json::from_value(vm).context("`vm:` is a vmid or a VM name")?;
    Ok((resolve(handle, &vm)?, Value::Object(map)))
}
