//! `pveum` and `pvesh` on a nested PVE host: PVE's command-line tools call
//! the same API handlers as pveproxy, in-process and as `root@pam`, so
//! these shims route to the nested simulator's handlers (same parameter
//! checks, same errors), without HTTP and without injected HTTP faults.
//!
//! Options are `--key value` or `--key=value` (a repeated key becomes a
//! list; `--flag` alone means 1). `--output-format` takes `text` (the
//! default: a boxed table like PVE's, scalars as they are), `json` and
//! `json-pretty` (PVE's: keys sorted, three-space indent, ` : `). Errors go
//! to stderr with exit status 255, as PVE's CLI does; parameter errors are
//! listed per parameter. Worker tasks run in the foreground as in PVE's
//! CLI: the tool waits for the task, prints its log, then the UPID.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{Shim, need_root};
use crate::api::{self, Ctx, Reply};
use crate::runtime::Shared;
use crate::ssh::Context;
use homestak_pve::schema::wire::{Input, Value as FormValue};
use homestak_pve::schema::{self as params, Method, Rejection};

/// How a result is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    JsonPretty,
}

/// Positional arguments, options and the output format.
#[derive(Debug, PartialEq, Eq)]
pub struct CliArgs {
    pub positional: Vec<String>,
    pub options: Vec<(String, String)>,
    pub format: Format,
}

/// Splits a PVE CLI command line.
pub fn parse_cli(args: &[String]) -> Result<CliArgs, String> {
    let mut out = CliArgs {
        positional: Vec::new(),
        options: Vec::new(),
        format: Format::Text,
    };
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let Some(opt) = arg.strip_prefix("--").filter(|o| !o.is_empty()) else {
            out.positional.push(arg.clone());
            continue;
        };
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => match args.get(i) {
                Some(next) if !next.starts_with("--") => {
                    i += 1;
                    (opt.to_string(), next.clone())
                }
                _ => (opt.to_string(), "1".to_string()),
            },
        };
        if key == "output-format" {
            out.format = match value.as_str() {
                "text" => Format::Text,
                "json" => Format::Json,
                "json-pretty" => Format::JsonPretty,
                other => {
                    return Err(format!(
                        "400 Parameter verification failed.\noutput-format: value '{other}' does not have a value in the enumeration 'text, json, json-pretty, yaml'\n"
                    ));
                }
            };
        } else {
            out.options.push((key, value));
        }
    }
    Ok(out)
}

/// Calls the API handler for `method path` with `options` as `root@pam`.
/// The error is the text PVE's CLI prints.
pub async fn call(
    shared: &Arc<Shared>,
    method: Method,
    path: &str,
    options: &[(String, String)],
) -> Result<Value, String> {
    let mut input = Input::default();
    let mut merged: Vec<(String, Vec<String>)> = Vec::new();
    for (k, v) in options {
        match merged.iter_mut().find(|(name, _)| name == k) {
            Some((_, values)) => values.push(v.clone()),
            None => merged.push((k.clone(), vec![v.clone()])),
        }
    }
    for (k, mut values) in merged {
        let value = if values.len() == 1 {
            FormValue::Str(values.remove(0))
        } else {
            FormValue::List(values)
        };
        input.insert(&k, value);
    }
    let path = format!("/{}", path.trim_matches('/'));
    let (endpoint, p) = match params::validate(method, &path, &input) {
        Ok(v) => v,
        Err(Rejection::NotImplemented(_)) => {
            return Err(format!(
                "No '{}' handler defined for '{path}'\n",
                verb_of(method)
            ));
        }
        Err(Rejection::Params(errors)) => {
            let mut text = String::from("400 Parameter verification failed.\n");
            for (k, e) in errors {
                text.push_str(&format!("{k}: {e}\n"));
            }
            return Err(text);
        }
    };
    let ctx = Ctx {
        shared: shared.clone(),
        user: "root@pam".into(),
    };
    match api::handle(&ctx, endpoint, &p).await {
        Ok(Reply::Data(d) | Reply::WithTotal(d, _) | Reply::WithChanges(d, _)) => Ok(d),
        Err(e) => {
            let mut text = e.message.trim_end().to_string();
            if let Some(errors) = &e.errors {
                for (k, v) in errors {
                    text.push_str(&format!("\n{k}: {v}"));
                }
            }
            text.push('\n');
            Err(text)
        }
    }
}

fn verb_of(method: Method) -> &'static str {
    match method {
        Method::Get => "get",
        Method::Post => "create",
        Method::Put => "set",
        Method::Delete => "delete",
    }
}

/// Waits for a worker task of `shared` and returns its log and exit status.
pub async fn wait_task(shared: &Shared, upid: &str) -> Option<(Vec<String>, String)> {
    loop {
        {
            let w = shared.world();
            let task = w.task(upid)?;
            if let Some(status) = &task.exitstatus {
                return Some((task.log.clone(), status.clone()));
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Prints `value` in `format`.
pub fn render(value: &Value, format: Format) -> String {
    match format {
        Format::Json => {
            let mut s = serde_json::to_string(&sorted(value)).unwrap_or_default();
            s.push('\n');
            s
        }
        Format::JsonPretty => {
            let mut s = String::new();
            pretty(&sorted(value), 0, &mut s);
            s.push('\n');
            s
        }
        Format::Text => text(value),
    }
}

/// A copy with object keys in sorted order (PVE's canonical JSON).
fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&m[k])))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// Perl JSON::XS `pretty`: three spaces per level, `"key" : value`.
fn pretty(value: &Value, depth: usize, out: &mut String) {
    let pad = |d: usize| "   ".repeat(d);
    match value {
        Value::Object(m) if !m.is_empty() => {
            out.push_str("{\n");
            for (i, (k, v)) in m.iter().enumerate() {
                out.push_str(&pad(depth + 1));
                out.push_str(&Value::String(k.clone()).to_string());
                out.push_str(" : ");
                pretty(v, depth + 1, out);
                if i + 1 < m.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            out.push_str(&pad(depth));
            out.push('}');
        }
        Value::Array(a) if !a.is_empty() => {
            out.push_str("[\n");
            for (i, v) in a.iter().enumerate() {
                out.push_str(&pad(depth + 1));
                pretty(v, depth + 1, out);
                if i + 1 < a.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            out.push_str(&pad(depth));
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Number(_) | Value::Bool(_) => value.to_string(),
        other => sorted(other).to_string(),
    }
}

/// PVE's default `text` output: scalars as they are, objects as a
/// key/value table, lists of objects as a table with a column per key.
fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let rows = keys
                .into_iter()
                .map(|k| vec![k.clone(), cell(&m[k])])
                .collect();
            table(&["key".into(), "value".into()], rows)
        }
        Value::Array(a) if a.iter().all(Value::is_object) && !a.is_empty() => {
            let mut columns: Vec<String> = a
                .iter()
                .filter_map(Value::as_object)
                .flat_map(|o| o.keys().cloned())
                .collect();
            columns.sort();
            columns.dedup();
            let rows = a
                .iter()
                .map(|row| columns.iter().map(|c| cell(&row[c.as_str()])).collect())
                .collect();
            table(&columns, rows)
        }
        Value::Array(a) => a.iter().map(|v| format!("{}\n", cell(v))).collect(),
        other => format!("{}\n", cell(other)),
    }
}

/// A table with box-drawing borders, as PVE prints on a UTF-8 terminal.
fn table(header: &[String], rows: Vec<Vec<String>>) -> String {
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([header[i].chars().count()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let rule = |left: &str, fill: &str, mid: &str, right: &str| {
        let parts: Vec<String> = widths.iter().map(|w| fill.repeat(w + 2)).collect();
        format!("{left}{}{right}\n", parts.join(mid))
    };
    let line = |cells: &[String]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!(" {c}{} ", " ".repeat(w - c.chars().count())))
            .collect();
        format!("│{}│\n", parts.join("│"))
    };
    let mut out = rule("┌", "─", "┬", "┐");
    out.push_str(&line(header));
    out.push_str(&rule("╞", "═", "╪", "╡"));
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            out.push_str(&rule("├", "─", "┼", "┤"));
        }
        out.push_str(&line(row));
    }
    out.push_str(&rule("└", "─", "┴", "┘"));
    out
}

/// Prints a result, running a returned worker task in the foreground.
async fn finish(
    cx: &mut Context,
    shared: &Shared,
    result: Result<Value, String>,
    format: Format,
) -> u32 {
    let value = match result {
        Ok(v) => v,
        Err(e) => {
            cx.err(e).await;
            return 255;
        }
    };
    if let Some(upid) = value.as_str().filter(|s| s.starts_with("UPID:"))
        && let Some((log, status)) = wait_task(shared, upid).await
    {
        let mut text: String = log.iter().map(|l| format!("{l}\n")).collect();
        if status != "OK" && !status.starts_with("WARNINGS") {
            cx.out(text).await;
            cx.err(format!("{status}\n")).await;
            return 255;
        }
        text.push_str(&render(&value, format));
        cx.out(text).await;
        return 0;
    }
    cx.out(render(&value, format)).await;
    0
}

/// What `pveum` and `pvesh` check first: root, a running tier, well-formed
/// arguments. `Err` is the exit status, after the message on stderr.
async fn start(
    shim: &Shim,
    cx: &mut Context,
    tool: &str,
    args: &[String],
) -> Result<(Arc<Shared>, CliArgs), u32> {
    if let Some(status) = need_root(cx, tool).await {
        return Err(status);
    }
    let Some(shared) = shim.nested(cx, tool).await else {
        return Err(255);
    };
    match parse_cli(args) {
        Ok(cli) => Ok((shared, cli)),
        Err(e) => {
            cx.err(e).await;
            Err(255)
        }
    }
}

/// `pveum`: the `user token` commands.
pub struct Pveum(pub Shim);

impl crate::ssh::Program for Pveum {
    fn run<'a>(
        &'a self,
        args: &'a [String],
        cx: &'a mut Context,
    ) -> homestak_ssh::BoxFuture<'a, u32> {
        Box::pin(async move {
            let (shared, cli) = match start(&self.0, cx, "pveum", args).await {
                Ok(started) => started,
                Err(status) => return status,
            };
            let words: Vec<&str> = cli.positional.iter().map(String::as_str).collect();
            let (method, path) = match words.as_slice() {
                ["user", "token", "add", user, token] => {
                    (Method::Post, format!("/access/users/{user}/token/{token}"))
                }
                ["user", "token", "modify", user, token] => {
                    (Method::Put, format!("/access/users/{user}/token/{token}"))
                }
                ["user", "token", "remove" | "delete", user, token] => (
                    Method::Delete,
                    format!("/access/users/{user}/token/{token}"),
                ),
                ["user", "token", "list", user] => {
                    (Method::Get, format!("/access/users/{user}/token"))
                }
                _ => {
                    cx.err(format!(
                        "unknown command 'pveum {}'\nUSAGE: pveum user token <add|list|modify|remove> <userid> [<tokenid>] [OPTIONS] (the simulated subset)\n",
                        words.join(" ")
                    ))
                    .await;
                    return 255;
                }
            };
            let result = call(&shared, method, &path, &cli.options).await;
            finish(cx, &shared, result, cli.format).await
        })
    }
}

/// `pvesh get|create|set|delete PATH [OPTIONS]`.
pub struct Pvesh(pub Shim);

impl crate::ssh::Program for Pvesh {
    fn run<'a>(
        &'a self,
        args: &'a [String],
        cx: &'a mut Context,
    ) -> homestak_ssh::BoxFuture<'a, u32> {
        Box::pin(async move {
            let (shared, cli) = match start(&self.0, cx, "pvesh", args).await {
                Ok(started) => started,
                Err(status) => return status,
            };
            let method = match cli.positional.first().map(String::as_str) {
                Some("get") => Method::Get,
                Some("create") => Method::Post,
                Some("set") => Method::Put,
                Some("delete") => Method::Delete,
                other => {
                    cx.err(format!(
                        "unknown command 'pvesh {}'\nUSAGE: pvesh <get|create|set|delete> <api_path> [OPTIONS] [FORMAT_OPTIONS]\n",
                        other.unwrap_or_default()
                    ))
                    .await;
                    return 255;
                }
            };
            let [_, path] = cli.positional.as_slice() else {
                cx.err("400 not enough arguments\npvesh <get|create|set|delete> <api_path> [OPTIONS]\n")
                    .await;
                return 255;
            };
            let result = call(&shared, method, path, &cli.options).await;
            finish(cx, &shared, result, cli.format).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn command_lines_split_like_pves_cli() {
        let cli = parse_cli(&words(
            "user token add root@pam homestak --privsep 0 --comment=x --output-format json --force",
        ))
        .unwrap();
        assert_eq!(cli.positional, words("user token add root@pam homestak"));
        assert_eq!(
            cli.options,
            [
                ("privsep".to_string(), "0".to_string()),
                ("comment".to_string(), "x".to_string()),
                ("force".to_string(), "1".to_string())
            ]
        );
        assert_eq!(cli.format, Format::Json);
        assert!(parse_cli(&words("--output-format yaml2")).is_err());
    }

    #[test]
    fn output_formats_follow_pve() {
        let v = json!({"value": "s", "info": {"privsep": 0}, "full-tokenid": "root@pam!h"});
        assert_eq!(
            render(&v, Format::Json),
            "{\"full-tokenid\":\"root@pam!h\",\"info\":{\"privsep\":0},\"value\":\"s\"}\n"
        );
        assert_eq!(
            render(&v, Format::JsonPretty),
            "{\n   \"full-tokenid\" : \"root@pam!h\",\n   \"info\" : {\n      \"privsep\" : 0\n   },\n   \"value\" : \"s\"\n}\n"
        );
        assert_eq!(
            render(&json!({"release": "8.4", "version": "8.4.1"}), Format::Text),
            "┌─────────┬───────┐\n│ key     │ value │\n╞═════════╪═══════╡\n│ release │ 8.4   │\n├─────────┼───────┤\n│ version │ 8.4.1 │\n└─────────┴───────┘\n"
        );
        assert_eq!(render(&json!("UPID:x"), Format::Text), "UPID:x\n");
        assert_eq!(render(&Value::Null, Format::Text), "");
        assert_eq!(render(&json!([]), Format::JsonPretty), "[]\n");
    }
}
