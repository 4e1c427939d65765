//! `GET` and `PUT /nodes/{node}/config`: the node's notes, written under
//! the node config lock with PVE's `digest` check (`PVE::API2::NodeConfig`).

use super::{Ctx, Error, Reply};
use crate::nodeconfig::{self, MODIFIED};
use homestak_pve::schema::Params;

pub fn get(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    let w = ctx.shared.world();
    let node = w.node(ctx.node(p))?;
    Ok(Reply::Data(nodeconfig::to_json(
        &node.config,
        p.str("property"),
    )))
}

/// Load, `assert_if_modified`, set, delete, write: all under the world's
/// lock, as PVE does under `/var/lock/pvenode.lock`.
pub fn put(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    let mut w = ctx.shared.world_mut();
    let node = w.node_mut(ctx.node(p))?;
    // An empty file has no digest, and then any write goes through.
    if let Some(wanted) = p.str("digest")
        && !node.config.is_empty()
        && wanted != nodeconfig::digest(&node.config)
    {
        return Err(Error::internal(MODIFIED));
    }
    let mut config = nodeconfig::parse(&node.config);
    if let Some(text) = p.str("description") {
        config.description = Some(text.to_string());
    }
    for key in p
        .str("delete")
        .unwrap_or_default()
        .split([',', ';', ' ', '\0'])
        .filter(|k| !k.is_empty())
    {
        if key == "description" {
            config.description = None;
        } else {
            config.options.remove(key);
        }
    }
    node.config = nodeconfig::render(&config);
    Ok(Reply::Data(serde_json::Value::Null))
}
