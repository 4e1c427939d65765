//! `/nodes/{node}/storage…`: list, status, content, and `download-url`,
//! a `download` task whose length grows with the file size. The simulator
//! never fetches the URL; sizes come from the config's `downloads`, and so
//! do the digests a `checksum` is compared with.

use serde_json::{Value, json};

use super::{Ctx, Error, Reply};
use crate::runtime::Clock;
use crate::tasks::encode_text;
use homestak_pve::schema::Params;
use homestak_pve::schema::formats::split_list;

pub fn list(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    let w = ctx.shared.world();
    let node = w.node(ctx.node(p))?;
    let content: Vec<&str> = p
        .str("content")
        .map(|c| split_list(c).collect())
        .unwrap_or_default();
    let out = node
        .storages
        .values()
        .filter(|s| p.str("storage").is_none_or(|want| want == s.id))
        .filter(|s| content.iter().all(|c| s.supports(c)))
        .map(|s| s.list_json())
        .collect();
    Ok(Reply::Data(Value::Array(out)))
}

pub fn status(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    let w = ctx.shared.world();
    let s = w.storage(ctx.node(p), p.str("storage").unwrap_or_default())?;
    let mut v = s.list_json();
    if let Value::Object(m) = &mut v {
        m.remove("storage");
        m.remove("used_fraction");
    }
    Ok(Reply::Data(v))
}

pub fn content(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    let w = ctx.shared.world();
    let s = w.storage(ctx.node(p), p.str("storage").unwrap_or_default())?;
    let vmid = p.int("vmid");
    let out = s
        .volumes
        .values()
        .filter(|v| s.listed(v))
        .filter(|v| p.str("content").is_none_or(|c| c == v.content))
        .filter(|v| vmid.is_none_or(|id| v.vmid == Some(id as u32)))
        .map(|v| s.volume_json(v))
        .collect();
    Ok(Reply::Data(Value::Array(out)))
}

/// Filename rules of `download-url` per content type (ST Status.pm).
fn check_filename(content: &str, filename: &str) -> Result<(), Error> {
    let lower = filename.to_ascii_lowercase();
    let ok = match content {
        "iso" => lower.ends_with(".iso") || lower.ends_with(".img"),
        "vztmpl" => [".tar.gz", ".tar.xz", ".tar.zst", ".tar.bz2"]
            .iter()
            .any(|e| lower.ends_with(e)),
        "import" => {
            if !filename
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'+' | b'=' | b'_'))
            {
                return Err(Error::param(
                    "filename",
                    "invalid filename or wrong extension",
                ));
            }
            [".ova", ".qcow2", ".raw", ".vmdk"]
                .iter()
                .any(|e| lower.ends_with(e))
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::param("filename", "wrong file extension"))
    }
}

pub fn download_url(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    let node = ctx.node(p).to_string();
    let sid = p.str("storage").unwrap_or_default().to_string();
    let content = p.str("content").unwrap_or_default().to_string();
    let filename = p.str("filename").unwrap_or_default().to_string();
    let url = p.str("url").unwrap_or_default().to_string();
    check_filename(&content, &filename)?;
    let name = format!("{content}/{filename}");
    {
        let w = ctx.shared.world();
        let s = w.storage(&node, &sid)?;
        if !s.kind.file_based() {
            return Err(Error::internal(format!(
                "can't upload to storage type '{}', not a file based storage!",
                s.kind.pve_name()
            )));
        }
        if !s.supports(&content) {
            return Err(Error::internal(format!(
                "storage '{sid}' is not configured for content-type '{content}'"
            )));
        }
        if s.volumes.contains_key(&name) {
            return Err(Error::internal(format!(
                "refusing to override existing file '{}/{name}'",
                s.path()
            )));
        }
    }
    let downloads = &ctx.shared.config.downloads;
    let size = downloads
        .sizes
        .get(&url)
        .map_or(downloads.default_size.0, |s| s.0);
    let virtual_size = (content == "import").then_some(downloads.default_virtual_size.0.max(size));
    // What PVE's download_file_from_url says when the digest differs.
    let mismatch = p
        .str("checksum")
        .filter(|_| p.str("checksum-algorithm") == Some("sha256"))
        .and_then(|expect| {
            let file = url.rsplit('/').next().unwrap_or_default();
            let got = downloads.sha256.get(file)?;
            (!got.eq_ignore_ascii_case(expect))
                .then(|| format!("checksum mismatch: got '{got}' != expect '{expect}'"))
        });
    let pve = filename.contains("-pve");
    let n = node.clone();
    let upid = ctx.shared.spawn_task(
        &n,
        "download",
        &encode_text(&filename),
        &ctx.user,
        None,
        move |shared, upid, inject| async move {
            shared.task_log(&upid, format!("downloading {url} to {name}"));
            let secs = shared.config.latency.download
                + size as f64
                    / (1024.0 * 1024.0)
                    / shared.config.latency.download_mib_per_s.max(0.001);
            shared.clock.sleep(secs).await;
            if inject {
                return Err(
                    "download failed: 500 Can't connect (injected fault, homestak sim)".to_string(),
                );
            }
            // PVE removes the temporary file; nothing is stored.
            if let Some(mismatch) = mismatch {
                return Err(mismatch);
            }
            let mut w = shared.world_mut();
            let s = w.storage_mut(&node, &sid).map_err(|e| e.message)?;
            s.add_file(&name, &content, size, virtual_size, pve, Clock::now());
            drop(w);
            shared.task_log(&upid, json!({"downloaded": size}).to_string());
            Ok(())
        },
    );
    Ok(Reply::Data(Value::String(upid)))
}
