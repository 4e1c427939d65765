//! `/nodes/{node}/tasks…`: the task list (with `total`), status, log and
//! stop.

use serde_json::{Value, json};

use super::{Ctx, Error, Reply};
use crate::tasks::{Task, Upid, split_token};
use homestak_pve::schema::Params;

fn find(ctx: &Ctx, p: &Params) -> Result<Task, Error> {
    let upid = p.str("upid").unwrap_or_default();
    if Upid::decode(upid).is_none() {
        return Err(Error::param("upid", "unable to parse worker upid"));
    }
    let w = ctx.shared.world();
    w.node(ctx.node(p))?;
    w.task(upid)
        .filter(|t| t.upid.node == ctx.node(p))
        .cloned()
        .ok_or_else(|| Error::param("upid", "no such task"))
}

pub fn list(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    let node = ctx.node(p);
    let w = ctx.shared.world();
    w.node(node)?;
    let source = p.str("source").unwrap_or("archive");
    let errors = p.flag("errors");
    let vmid = p.int("vmid").map(|v| v.to_string());
    let matching: Vec<&Task> = w
        .tasks
        .iter()
        .rev()
        .filter(|t| t.upid.node == node)
        .filter(|t| match source {
            "active" => t.running(),
            "archive" => !t.running(),
            _ => true,
        })
        .filter(|t| !errors || t.exitstatus.as_deref().is_some_and(|s| s != "OK"))
        .filter(|t| p.str("typefilter").is_none_or(|f| t.upid.kind == f))
        .filter(|t| {
            p.str("userfilter")
                .is_none_or(|f| split_token(&t.upid.user).0.contains(f))
        })
        .filter(|t| vmid.as_ref().is_none_or(|v| t.upid.id == *v))
        .filter(|t| p.int("since").is_none_or(|s| t.upid.starttime >= s))
        .filter(|t| p.int("until").is_none_or(|u| t.upid.starttime <= u))
        .collect();
    let total = matching.len() as u64;
    let start = p.int("start").unwrap_or(0).max(0) as usize;
    let limit = p.int("limit").unwrap_or(50).max(0) as usize;
    let page: Vec<Value> = matching
        .into_iter()
        .skip(start)
        .take(limit)
        .map(Task::list_json)
        .collect();
    Ok(Reply::WithTotal(Value::Array(page), total))
}

pub fn index(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    find(ctx, p)?;
    Ok(super::subdirs(&["log", "status"]))
}

pub fn status(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    Ok(Reply::Data(find(ctx, p)?.status_json()))
}

pub fn log(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    let task = find(ctx, p)?;
    let mut lines = task.log_lines();
    if lines.is_empty() {
        lines.push("no content".into());
    }
    let total = lines.len() as u64;
    let start = p.int("start").unwrap_or(0).max(0) as usize;
    let limit = p.int("limit").unwrap_or(50).max(0) as usize;
    let data: Vec<Value> = lines
        .into_iter()
        .enumerate()
        .skip(start)
        .take(limit)
        .map(|(i, t)| json!({"n": i + 1, "t": t}))
        .collect();
    Ok(Reply::WithTotal(Value::Array(data), total))
}

pub fn stop(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    let task = find(ctx, p)?;
    ctx.shared.abort_task(&task.upid.encode());
    Ok(Reply::Data(Value::Null))
}
