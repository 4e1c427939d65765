//! `/access/ticket` and `/access/users/{userid}/token…`. The simulator
//! knows one user, `root@pam`, with full rights; ACLs are not simulated.

use serde_json::{Map, Value, json};

use super::{Ctx, Error, Reply};
use crate::Secret;
use crate::auth;
use crate::runtime::Clock;
use crate::vm::uuid_from;
use crate::world::Token;
use homestak_pve::schema::Params;

const USER: &str = "root@pam";

pub fn ticket(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    let username = p.str("username").unwrap_or_default();
    let user = match (username.contains('@'), p.str("realm")) {
        (true, _) => username.to_string(),
        (false, Some(realm)) => format!("{username}@{realm}"),
        (false, None) => username.to_string(),
    };
    let w = ctx.shared.world();
    if user != USER || !auth::check_password(&w, p.str("password").unwrap_or_default()) {
        return Err(Error::status(401, "authentication failure"));
    }
    let (ticket, csrf) = auth::issue_ticket(&w, USER, Clock::now());
    Ok(Reply::Data(json!({
        "username": USER,
        "ticket": ticket,
        "CSRFPreventionToken": csrf,
        "cap": {
            "vms": {"VM.Allocate": 1, "VM.Audit": 1, "VM.Backup": 1, "VM.Clone": 1, "VM.Config.CDROM": 1,
                    "VM.Config.CPU": 1, "VM.Config.Cloudinit": 1, "VM.Config.Disk": 1, "VM.Config.HWType": 1,
                    "VM.Config.Memory": 1, "VM.Config.Network": 1, "VM.Config.Options": 1, "VM.Console": 1,
                    "VM.Migrate": 1, "VM.Monitor": 1, "VM.PowerMgmt": 1, "VM.Snapshot": 1,
                    "VM.Snapshot.Rollback": 1, "Permissions.Modify": 1},
            "storage": {"Datastore.Allocate": 1, "Datastore.AllocateSpace": 1, "Datastore.AllocateTemplate": 1,
                        "Datastore.Audit": 1, "Permissions.Modify": 1},
            "nodes": {"Sys.Audit": 1, "Sys.Console": 1, "Sys.Modify": 1, "Sys.PowerMgmt": 1, "Sys.Syslog": 1,
                      "Sys.Incoming": 1, "Permissions.Modify": 1},
            "dc": {"Sys.Audit": 1, "Sys.Modify": 1, "SDN.Audit": 1},
            "access": {"User.Modify": 1, "Group.Allocate": 1, "Permissions.Modify": 1},
            "sdn": {"SDN.Allocate": 1, "SDN.Audit": 1, "Permissions.Modify": 1},
            "mapping": {"Mapping.Audit": 1, "Mapping.Modify": 1, "Mapping.Use": 1, "Permissions.Modify": 1},
        },
    })))
}

fn user(p: &Params) -> Result<&str, Error> {
    let userid = p.str("userid").unwrap_or_default();
    if userid != USER {
        return Err(Error::internal(format!("no such user ('{userid}')")));
    }
    Ok(userid)
}

fn info(t: &Token) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(c) = &t.comment {
        m.insert("comment".into(), json!(c));
    }
    m.insert("expire".into(), json!(t.expire));
    m.insert("privsep".into(), json!(u8::from(t.privsep)));
    m
}

/// Privileges `GET /access/permissions` lists for `root@pam` and its
/// tokens: PVE's built-in ones that homestak's calls need, and a few more.
const PRIVILEGES: &[&str] = &[
    "Datastore.Allocate",
    "Datastore.AllocateSpace",
    "Datastore.AllocateTemplate",
    "Datastore.Audit",
    "Sys.Audit",
    "Sys.Modify",
    "VM.Allocate",
    "VM.Audit",
    "VM.Config.CDROM",
    "VM.Config.Cloudinit",
    "VM.Config.CPU",
    "VM.Config.Disk",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.Monitor",
    "VM.PowerMgmt",
];

/// `GET /access/permissions`: the caller's privileges. Every caller is
/// `root@pam` (or its token) here, so every privilege, propagated, on the
/// path asked (default `/`).
pub fn permissions(_ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    let path = p.str("path").unwrap_or("/");
    let privileges: Map<String, Value> = PRIVILEGES
        .iter()
        .map(|n| ((*n).to_string(), json!(1)))
        .collect();
    Ok(Reply::Data(json!({ path: privileges })))
}

pub fn token_list(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    let userid = user(p)?;
    let prefix = format!("{userid}!");
    let w = ctx.shared.world();
    let out = w
        .tokens
        .iter()
        .filter_map(|(id, t)| {
            let tokenid = id.strip_prefix(&prefix)?;
            let mut m = info(t);
            m.insert("tokenid".into(), json!(tokenid));
            Some(Value::Object(m))
        })
        .collect();
    Ok(Reply::Data(Value::Array(out)))
}

fn full_id(p: &Params) -> Result<String, Error> {
    Ok(format!(
        "{}!{}",
        user(p)?,
        p.str("tokenid").unwrap_or_default()
    ))
}

fn missing(p: &Params) -> Error {
    Error::internal(format!(
        "no such token '{}' for user '{}'",
        p.str("tokenid").unwrap_or_default(),
        p.str("userid").unwrap_or_default()
    ))
}

pub fn token_get(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    let id = full_id(p)?;
    let w = ctx.shared.world();
    let t = w.tokens.get(&id).ok_or_else(|| missing(p))?;
    Ok(Reply::Data(Value::Object(info(t))))
}

pub fn token_create(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    let id = full_id(p)?;
    let mut w = ctx.shared.world_mut();
    if w.tokens.contains_key(&id) {
        return Err(Error::param("tokenid", "Token already exists."));
    }
    let value = uuid_from(rand::random(), rand::random());
    let token = Token {
        secret: Secret::new(value.clone()),
        comment: p.str("comment").map(String::from),
        expire: p.int("expire").unwrap_or(0),
        privsep: p.bool("privsep").unwrap_or(true),
    };
    let mut shown = Map::new();
    if let Some(c) = &token.comment {
        shown.insert("comment".into(), json!(c));
    }
    if p.has("expire") {
        shown.insert("expire".into(), json!(token.expire));
    }
    shown.insert("privsep".into(), json!(u8::from(token.privsep)));
    w.tokens.insert(id.clone(), token);
    Ok(Reply::Data(
        json!({"full-tokenid": id, "info": shown, "value": value}),
    ))
}

/// Echoes the given values as strings, as PVE does.
pub fn token_update(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    let id = full_id(p)?;
    let mut w = ctx.shared.world_mut();
    let t = w.tokens.get_mut(&id).ok_or_else(|| missing(p))?;
    let mut echo = Map::new();
    if let Some(c) = p.str("comment") {
        t.comment = Some(c.to_string());
        echo.insert("comment".into(), json!(c));
    }
    if let Some(e) = p.str("expire") {
        t.expire = p.int("expire").unwrap_or(0);
        echo.insert("expire".into(), json!(e));
    }
    if let Some(ps) = p.str("privsep") {
        t.privsep = p.flag("privsep");
        echo.insert("privsep".into(), json!(ps));
    }
    Ok(Reply::Data(Value::Object(echo)))
}

pub fn token_delete(ctx: &Ctx, p: &Params) -> Result<Reply, Error> {
    let id = full_id(p)?;
    let mut w = ctx.shared.world_mut();
    w.tokens.remove(&id).ok_or_else(|| missing(p))?;
    Ok(Reply::Data(Value::Null))
}
