//! The status page's HTML, server-rendered. Every value that reaches the
//! page (node names, diffs, messages: they come from manifests, PVE and
//! child tiers) goes through [`esc`]; the markup has no inline script or
//! style, so the CSP can forbid both.

use std::fmt::Write as _;

use homestak_api::v1::{ManifestStatus, StatusResponse};
use homestak_api::{Event, Level, NodeStatus, State, Status, TreeNode};

/// `text` with `& < > " '` escaped, for element text and quoted
/// attribute values alike.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn head(title: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><link rel=\"stylesheet\" href=\"/ui/app.css\">\
         <script src=\"/ui/app.js\" defer></script></head>\n",
        esc(title)
    )
}

/// The login form, with what went wrong last, if anything.
pub fn login(problem: Option<&str>) -> String {
    let mut out = head("homestak · log in");
    out.push_str("<body class=\"login\"><main><h1>homestak</h1>");
    if let Some(problem) = problem {
        let _ = write!(
            out,
            "<p class=\"problem\" id=\"problem\">{}</p>",
            esc(problem)
        );
    }
    out.push_str(
        "<form method=\"post\" action=\"/ui/login\" id=\"login\">\
         <label for=\"token\">API token (read scope)</label>\
         <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"off\" required autofocus>\
         <button type=\"submit\">Log in</button></form>\
         <p class=\"hint\">The token is in <code>api-token</code> in the daemon's state directory, \
         or in <code>api-tokens.yaml</code>. It is kept in a cookie for this site only.</p>\
         </main></body></html>\n",
    );
    out
}

/// A page saying the status could not be read.
pub fn failure(message: &str) -> String {
    let mut out = head("homestak · status");
    let _ = writeln!(
        out,
        "<body><main><h1>homestak</h1><p class=\"problem\">{}</p></main></body></html>",
        esc(message)
    );
    out
}

/// The whole page: the daemon's state, each manifest's tree and last
/// reconcile, and the newest events (newest first; the script adds what
/// follows `last`).
pub fn page(status: &StatusResponse, events: &[Event], last: u64) -> String {
    let mut out = head("homestak · status");
    out.push_str("<body><header><h1>homestak</h1><p class=\"daemon\" id=\"daemon\">");
    let _ = write!(out, "source {}", esc(&status.source));
    if let Some(revision) = &status.revision {
        let _ = write!(out, " · revision <code>{}</code>", esc(short(revision)));
    }
    let _ = write!(out, " · queue {}", status.queue_depth);
    if let Some(running) = &status.running {
        let _ = write!(
            out,
            " · running <b>{}</b> since {}",
            esc(&running.manifest),
            esc(&running.since.to_string())
        );
    }
    out.push_str(
        "</p><form method=\"post\" action=\"/ui/logout\"><button type=\"submit\">Log out</button></form></header>\n<main>",
    );
    if let Some(problem) = &status.source_error {
        let _ = write!(
            out,
            "<p class=\"problem\">Desired state cannot be read: {}</p>",
            esc(problem)
        );
    }
    if status.manifests.is_empty() {
        out.push_str("<p class=\"empty\">No manifest is managed here.</p>");
    }
    for manifest in &status.manifests {
        manifest_section(&mut out, manifest);
    }
    let _ = write!(
        out,
        "<section class=\"events\"><h2>Recent events</h2>\
         <ol id=\"events\" data-next=\"{last}\">"
    );
    for event in events.iter().rev() {
        event_item(&mut out, event);
    }
    out.push_str("</ol></section></main></body></html>\n");
    out
}

/// A revision as shown: commits shortened, other forms whole.
fn short(revision: &str) -> &str {
    if revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit()) {
        &revision[..12]
    } else {
        revision
    }
}

fn manifest_section(out: &mut String, m: &ManifestStatus) {
    let (badge, class) = match m.in_sync {
        Some(true) => ("in sync", "ok"),
        Some(false) => ("drifted", "warn"),
        None => ("not observed", "unknown"),
    };
    let _ = write!(
        out,
        "<section class=\"manifest\" data-manifest=\"{name}\"><h2>{name} \
         <span class=\"badge {class}\">{badge}</span>",
        name = esc(&m.name)
    );
    if m.suspended {
        out.push_str(" <span class=\"badge unknown\">suspended</span>");
    }
    if m.destroying {
        out.push_str(" <span class=\"badge warn\">being destroyed</span>");
    }
    let _ = write!(
        out,
        "</h2><p class=\"meta\">{} · host {} · drift {} · revision <code>{}</code>",
        m.origin.as_str(),
        esc(m.host.as_deref().unwrap_or("-")),
        m.drift.as_str(),
        esc(short(&m.revision))
    );
    if let Some(applied) = &m.record.last_applied {
        let _ = write!(
            out,
            " · last applied <code>{}</code> at {}",
            esc(short(&applied.revision)),
            esc(&applied.at.to_string())
        );
    }
    out.push_str("</p>");
    match &m.record.last_reconcile {
        Some(run) => {
            let _ = write!(
                out,
                "<table class=\"reconcile\"><tr><th>Last reconcile</th><th>Commit</th>\
                 <th>Outcome</th><th>Duration</th><th>Reason</th><th>Nodes</th></tr>\
                 <tr><td>{at}</td><td><code>{rev}</code></td>\
                 <td class=\"outcome outcome-{outcome}\">{outcome}</td><td>{duration}</td>\
                 <td>{reason}</td><td>{summary}</td></tr></table>",
                at = esc(&run.at.to_string()),
                rev = esc(run.revision.as_deref().map_or("-", short)),
                outcome = esc(&run.outcome.to_string()),
                duration = duration(run.duration_ms),
                reason = esc(run.reason.as_str()),
                summary = esc(run.summary.as_deref().unwrap_or_default()),
            );
            if let Some(message) = &run.message {
                let _ = write!(out, "<p class=\"problem\">{}</p>", esc(message));
            }
        }
        None => out.push_str("<p class=\"meta\">Not reconciled yet.</p>"),
    }
    match &m.status {
        Some(status) => tree(out, status),
        None => {
            let _ = write!(
                out,
                "<p class=\"problem\">No report: {}</p>",
                esc(m.error.as_deref().unwrap_or("not observed"))
            );
        }
    }
    out.push_str("</section>\n");
}

fn duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// The nodes as nested lists: a child tier's nodes under the `pve` node
/// that hosts them, to any depth ([`Status::tree`]).
fn tree(out: &mut String, status: &Status) {
    out.push_str(
        "<div class=\"tree\"><div class=\"row head\"><span>Node</span><span>State</span>\
         <span>VMID</span><span>IP</span><span>Power</span><span>Tier</span></div><ul>",
    );
    for root in status.tree() {
        branch(out, &root);
    }
    out.push_str("</ul></div>");
}

fn branch(out: &mut String, tree: &TreeNode<'_>) {
    node_item(out, tree.node);
    if !tree.children.is_empty() {
        out.push_str("<ul>");
        for child in &tree.children {
            branch(out, child);
        }
        out.push_str("</ul>");
    }
    out.push_str("</li>");
}

/// A node's `<li>`, left open for its children.
fn node_item(out: &mut String, n: &NodeStatus) {
    // The CSS class: the table's word, one token (`in sync` → `in_sync`).
    let state = n.state.label().replace(' ', "_");
    let _ = write!(
        out,
        "<li class=\"node state-{state}\" data-node=\"{name}\"><div class=\"row\">\
         <span class=\"name\">{name}</span><span class=\"state\">{label}</span>\
         <span class=\"vmid\">{vmid}</span><span class=\"ip\">{ip}</span>\
         <span class=\"power\">{power}</span><span class=\"tier\">{tier}</span></div>",
        name = esc(n.node.as_str()),
        label = n.state.label(),
        vmid = n.vmid.map_or("-".into(), |v| v.to_string()),
        ip = esc(n.ip.as_deref().unwrap_or("-")),
        power = esc(&n.power.map_or("-".into(), |p| p.to_string())),
        tier = esc(n.tier.as_deref().unwrap_or("-")),
    );
    let reason = n
        .reason
        .as_ref()
        .filter(|_| matches!(n.state, State::Conflict | State::Orphan | State::Unknown));
    if n.changes.is_empty() && reason.is_none() {
        return;
    }
    out.push_str("<ul class=\"diffs\">");
    for change in &n.changes {
        let _ = write!(
            out,
            "<li><span class=\"field\">{}</span>: <del>{}</del> → <ins>{}</ins> (manifest)</li>",
            esc(&change.field.to_string()),
            esc(&change.from),
            esc(&change.to)
        );
    }
    if let Some(reason) = reason {
        let _ = write!(out, "<li class=\"reason\">{}</li>", esc(reason));
    }
    out.push_str("</ul>");
}

fn level(level: Level) -> &'static str {
    match level {
        Level::Info => "info",
        Level::Warning => "warning",
        Level::Error => "error",
    }
}

/// One event; `app.js` builds the same markup for the ones that follow.
fn event_item(out: &mut String, e: &Event) {
    let subject = match (&e.manifest, &e.node) {
        (Some(m), Some(n)) => format!("{m}/{n}"),
        (Some(m), None) => m.clone(),
        (None, Some(n)) => n.to_string(),
        (None, None) => String::new(),
    };
    let _ = write!(
        out,
        "<li class=\"event level-{level}\" data-seq=\"{seq}\"><time>{at}</time>\
         <span class=\"kind\">{kind}</span><span class=\"subject\">{subject}</span>\
         <span class=\"message\">{message}</span></li>",
        level = level(e.level),
        seq = e.seq,
        at = esc(&e.at.to_string()),
        kind = e.kind.as_str(),
        subject = esc(&subject),
        message = esc(&e.message),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use homestak_api::Kind;
    use homestak_base::id::NodeName;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
    }

    fn node(name: &str, parent: Option<&str>, tier: &str) -> NodeStatus {
        NodeStatus {
            node: NodeName::new(name).unwrap(),
            parent: parent.map(|p| NodeName::new(p).unwrap()),
            tier: Some(tier.into()),
            vmid: Some(homestak_base::id::VmId::new(99001).unwrap()),
            ip: None,
            power: None,
            state: State::InSync,
            changes: Vec::new(),
            reason: None,
        }
    }

    #[test]
    fn child_tiers_nest_under_their_host_and_loops_end() {
        let status = Status {
            manifest: "m".into(),
            host: "pve".into(),
            in_sync: true,
            nodes: vec![
                node("app", Some("hv"), "hv"),
                node("hv", None, "pve"),
                node("deep", Some("app"), "app"),
                node("edge", None, "pve"),
                // A loop a broken report could carry: shown, not followed.
                node("a", Some("b"), "x"),
                node("b", Some("a"), "x"),
            ],
            last_applied_commit: None,
            deep: false,
        };
        let mut out = String::new();
        tree(&mut out, &status);
        let at = |n: &str| out.find(&format!("data-node=\"{n}\"")).unwrap();
        assert!(at("hv") < at("app") && at("app") < at("deep") && at("deep") < at("edge"));
        let inner = &out[at("hv")..at("edge")];
        assert_eq!(inner.matches("<ul>").count(), 2, "{inner}");
        assert!(out.contains("data-node=\"a\"") && out.contains("data-node=\"b\""));
        assert_eq!(out.matches("<li").count(), out.matches("</li>").count());
        assert_eq!(out.matches("<ul").count(), out.matches("</ul>").count());
    }

    #[test]
    fn events_show_newest_first_escaped() {
        let mut e = Event::info(Kind::Revision, "<b>new</b>").manifest("m");
        e.seq = 7;
        let status = StatusResponse {
            source: "git-head".into(),
            revision: None,
            source_error: None,
            queue_depth: 0,
            running: None,
            manifests: Vec::new(),
        };
        let html = page(&status, &[e], 7);
        assert!(html.contains("data-next=\"7\""));
        assert!(html.contains("&lt;b&gt;new&lt;/b&gt;"));
        assert!(!html.contains("<b>new"));
        assert!(!html.contains("style="), "no inline style");
    }
}
