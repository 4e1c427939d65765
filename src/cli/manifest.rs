//! `homestak manifest list|validate|show`: look at manifests without
//! touching any infrastructure.
//!
//! A manifest is named with `-M NAME` (from the site-config's `manifests/`),
//! `--manifest-file PATH` or `--manifest-json JSON`. `validate` without one
//! checks every manifest of the site-config, which is what a CI job wants.
//! Data goes to stdout (JSON with `--json`), errors to stderr; an invalid
//! manifest exits 1 with one message naming the file.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::{Value, json};

use super::{GlobalArgs, Outcome, output};
use homestak_core::graph::ManifestGraph;
use homestak_core::model::{self, Level, Loader, Manifest, Node};

/// Arguments of `homestak manifest`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

/// The `manifest` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List the manifests of the site-config (manifests/*.yaml).
    List,
    /// Check a manifest; without one, check every manifest of the site-config.
    Validate {
        #[command(flatten)]
        source: Source,
    },
    /// Print a manifest's tree (or levels) and its create and destroy order.
    #[command(group = clap::ArgGroup::new("required_source")
        .required(true)
        .args(["name", "manifest_file", "manifest_json"]))]
    Show {
        #[command(flatten)]
        source: Source,
    },
}

/// Which manifest to read: at most one of the three.
#[derive(Debug, Clone, clap::Args)]
#[group(multiple = false)]
pub struct Source {
    /// Manifest NAME, read from the site-config: manifests/NAME.yaml.
    #[arg(short = 'M', long = "manifest", value_name = "NAME")]
    pub name: Option<String>,
    /// A manifest file anywhere.
    #[arg(long, value_name = "PATH", value_hint = clap::ValueHint::FilePath)]
    pub manifest_file: Option<PathBuf>,
    /// A manifest as a JSON string (the form handed to child reconcilers).
    #[arg(long, value_name = "JSON")]
    pub manifest_json: Option<String>,
}

impl Source {
    /// True when no manifest is named.
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.manifest_file.is_none() && self.manifest_json.is_none()
    }
}

/// Runs `homestak manifest`.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    match args.command {
        Command::List => list(global),
        Command::Validate { source } if source.is_empty() => validate_all(global),
        Command::Validate { source } => validate_one(&source, global),
        Command::Show { source } => show(&source, global),
    }
}

fn site_config(global: &GlobalArgs) -> anyhow::Result<PathBuf> {
    Ok(homestak_core::site::discover::find(
        global.site_config.as_deref(),
    )?)
}

/// Where a manifest came from, as printed.
fn describe(source: &Source, loader: Option<&Loader>) -> String {
    match (source, loader) {
        (
            Source {
                name: Some(name), ..
            },
            Some(loader),
        ) => loader
            .path_of(name)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| name.clone()),
        (
            Source {
                manifest_file: Some(path),
                ..
            },
            _,
        ) => path.display().to_string(),
        _ => "--manifest-json".to_string(),
    }
}

/// Reads the manifest `source` names. Discovery failures are plain errors;
/// manifest errors are returned apart so they can be printed with the file.
fn read(
    source: &Source,
    global: &GlobalArgs,
) -> anyhow::Result<(String, Result<Manifest, model::Error>)> {
    if let Some(name) = &source.name {
        let loader = Loader::new(&site_config(global)?);
        return Ok((describe(source, Some(&loader)), loader.load(name)));
    }
    let described = describe(source, None);
    let result = match (&source.manifest_file, &source.manifest_json) {
        (Some(path), _) => Manifest::from_file(path),
        (None, Some(text)) => Manifest::from_json(text),
        (None, None) => {
            anyhow::bail!("name a manifest with -M, --manifest-file or --manifest-json")
        }
    };
    Ok((described, result))
}

/// The causes below a manifest error (the YAML or JSON parser's
/// description, the I/O error), outermost first.
fn causes(err: &model::Error) -> Vec<String> {
    let mut out = Vec::new();
    let mut cause = std::error::Error::source(err);
    while let Some(c) = cause {
        out.push(c.to_string());
        cause = c.source();
    }
    out
}

/// `first` followed by the causes of `err`, one per line, the way `main`
/// prints errors.
fn with_causes(first: String, err: &model::Error) -> String {
    let mut text = first;
    for cause in causes(err) {
        let _ = write!(text, "\n  caused by: {cause}");
    }
    text
}

/// Prints a manifest error on stderr: the message (with the file in front
/// for validation problems), then each cause.
fn print_manifest_error(err: &model::Error) {
    eprintln!("{}", with_causes(format!("error: {}", err.located()), err));
}

fn list(global: &GlobalArgs) -> anyhow::Result<Outcome> {
    let site = site_config(global)?;
    let loader = Loader::new(&site);
    let names = loader.list()?;
    let rows: Vec<(String, Result<Manifest, model::Error>)> = names
        .into_iter()
        .map(|name| {
            let loaded = loader.load(&name);
            (name, loaded)
        })
        .collect();
    if global.json {
        let manifests: Vec<Value> = rows
            .iter()
            .map(|(name, loaded)| match loaded {
                Ok(m) => json!({
                    "name": name,
                    "valid": true,
                    "schema_version": m.schema_version().number(),
                    "depth": m.depth(),
                    "nodes": m.nodes().map(<[Node]>::len),
                    "description": m.description(),
                }),
                Err(err) => json!({"name": name, "valid": false, "error": err.to_string()}),
            })
            .collect();
        output::print_json(&json!({
            "site_config": site.display().to_string(),
            "manifests": manifests,
        }))?;
        return Ok(Outcome::Converged);
    }
    if rows.is_empty() {
        println!("no manifests in {}", loader.dir().display());
        return Ok(Outcome::Converged);
    }
    let table: Vec<[String; 4]> = rows
        .iter()
        .map(|(name, loaded)| match loaded {
            Ok(m) => [
                name.clone(),
                format!("v{}", m.schema_version().number()),
                match m.nodes() {
                    Some(nodes) => format!("{} node{}", nodes.len(), plural(nodes.len())),
                    None => format!("{} level{}", m.depth(), plural(m.depth())),
                },
                m.description().to_string(),
            ],
            Err(err) => [name.clone(), "-".into(), "invalid".into(), err.to_string()],
        })
        .collect();
    print!(
        "{}",
        render_table(["NAME", "SCHEMA", "SIZE", "DESCRIPTION"], &table)
    );
    Ok(Outcome::Converged)
}

/// Left-aligned columns separated by two spaces; the last one is not padded.
fn render_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = header.map(String::from);
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn validate_one(source: &Source, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    let (described, loaded) = read(source, global)?;
    match loaded {
        Ok(m) => {
            if global.json {
                output::print_json(&validation_json(&described, Ok(&m)))?;
            } else {
                println!("{described}: valid ({})", size_summary(&m));
            }
            Ok(Outcome::Converged)
        }
        Err(err) => {
            if global.json {
                output::print_json(&validation_json(&described, Err(&err)))?;
            } else {
                print_manifest_error(&err);
            }
            Ok(Outcome::Failed)
        }
    }
}

fn validate_all(global: &GlobalArgs) -> anyhow::Result<Outcome> {
    let site = site_config(global)?;
    let loader = Loader::new(&site);
    let names = loader.list()?;
    let mut results = Vec::new();
    let mut invalid = 0;
    for name in &names {
        let path = loader.path_of(name)?;
        let loaded = loader.load(name);
        if loaded.is_err() {
            invalid += 1;
        }
        if !global.json {
            match &loaded {
                Ok(m) => println!("ok    {name} ({})", size_summary(m)),
                Err(err) => println!("{}", with_causes(format!("FAIL  {name}: {err}"), err)),
            }
        }
        results.push(validation_json(
            &path.display().to_string(),
            loaded.as_ref(),
        ));
    }
    if global.json {
        output::print_json(&json!({
            "site_config": site.display().to_string(),
            "valid": names.len() - invalid,
            "invalid": invalid,
            "manifests": results,
        }))?;
    } else if names.is_empty() {
        println!("no manifests in {}", loader.dir().display());
    } else {
        println!("{} valid, {invalid} invalid", names.len() - invalid);
    }
    Ok(if invalid == 0 {
        Outcome::Converged
    } else {
        Outcome::Failed
    })
}

fn validation_json(source: &str, loaded: Result<&Manifest, &model::Error>) -> Value {
    match loaded {
        Ok(m) => json!({
            "source": source,
            "valid": true,
            "name": m.name(),
            "schema_version": m.schema_version().number(),
            "depth": m.depth(),
            "nodes": m.nodes().map(<[Node]>::len),
        }),
        Err(err) => json!({
            "source": source,
            "valid": false,
            "error": err.to_string(),
            "causes": causes(err),
            "file": err.path().map(|p| p.display().to_string()),
            "line": yaml_position(err).map(|(line, _)| line),
            "column": yaml_position(err).map(|(_, column)| column),
        }),
    }
}

fn yaml_position(err: &model::Error) -> Option<(u64, u64)> {
    match err {
        model::Error::Yaml { position, .. } => *position,
        _ => None,
    }
}

fn size_summary(m: &Manifest) -> String {
    let version = m.schema_version().number();
    match (m.nodes(), ManifestGraph::new(m)) {
        (Some(nodes), Ok(graph)) => {
            let tiers = graph.max_depth() + 1;
            format!(
                "schema v{version}, {} node{} in {tiers} tier{}",
                nodes.len(),
                plural(nodes.len()),
                plural(tiers)
            )
        }
        _ => format!(
            "schema v{version}, {} level{}",
            m.depth(),
            plural(m.depth())
        ),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn show(source: &Source, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    let (described, loaded) = read(source, global)?;
    let m = match loaded {
        Ok(m) => m,
        Err(err) => {
            print_manifest_error(&err);
            return Ok(Outcome::Failed);
        }
    };
    let graph = match m.nodes() {
        Some(_) => Some(ManifestGraph::new(&m).context("building the manifest graph")?),
        None => None,
    };
    if global.json {
        output::print_json(&show_json(&described, &m, graph.as_ref())?)?;
    } else {
        print!("{}", render_show(&described, &m, graph.as_ref())?);
    }
    Ok(Outcome::Converged)
}

/// Create order and destroy order by name: the graph's for a node tree,
/// the level order (and its reverse) otherwise.
fn orders(m: &Manifest, graph: Option<&ManifestGraph>) -> (Vec<String>, Vec<String>) {
    let names = |nodes: Vec<&Node>| nodes.iter().map(|n| n.name.to_string()).collect();
    match graph {
        Some(g) => (names(g.create_order()), names(g.destroy_order())),
        None => {
            let create: Vec<String> = m.levels().iter().map(|l| l.name.to_string()).collect();
            let destroy = create.iter().rev().cloned().collect();
            (create, destroy)
        }
    }
}

fn show_json(source: &str, m: &Manifest, graph: Option<&ManifestGraph>) -> anyhow::Result<Value> {
    let levels: Vec<Value> = m
        .levels()
        .iter()
        .map(|l| {
            let mut v = serde_json::to_value(l).unwrap_or(Value::Null);
            if let Value::Object(map) = &mut v {
                map.insert("is_inline".into(), json!(l.is_inline()));
                map.insert("is_vm_preset_mode".into(), json!(l.is_vm_preset_mode()));
            }
            v
        })
        .collect();
    let graph_json = match graph {
        None => Value::Null,
        Some(g) => {
            let mut nodes = Vec::new();
            for node in g.create_order() {
                let name = node.name.as_str();
                nodes.push(json!({
                    "name": name,
                    "type": node.kind,
                    "depth": g.depth(name)?,
                    "parent": g.parent(name)?.map(|p| p.name.to_string()),
                    "children": g.children(name)?.iter().map(|c| c.name.to_string()).collect::<Vec<_>>(),
                    "is_root": g.is_root(name)?,
                    "is_leaf": g.is_leaf(name)?,
                    "parent_ip_key": g.parent_ip_key(name)?,
                    "execution_mode": m.execution_mode(node),
                }));
            }
            json!({
                "roots": g.roots().iter().map(|n| n.name.to_string()).collect::<Vec<_>>(),
                "max_depth": g.max_depth(),
                "nodes": nodes,
            })
        }
    };
    let (create, destroy) = orders(m, graph);
    Ok(json!({
        "source": source,
        "manifest": m.to_value(),
        "levels": levels,
        "graph": graph_json,
        "create_order": create,
        "destroy_order": destroy,
    }))
}

fn render_show(
    source: &str,
    m: &Manifest,
    graph: Option<&ManifestGraph>,
) -> anyhow::Result<String> {
    let mut out = String::new();
    let shape = m.pattern().map(|p| format!(", {p}")).unwrap_or_default();
    writeln!(
        out,
        "Manifest {} (schema v{}{shape})",
        m.name(),
        m.schema_version().number()
    )?;
    if !m.description().is_empty() {
        writeln!(out, "  {}", m.description())?;
    }
    writeln!(out, "  source:    {source}")?;
    let s = m.settings();
    writeln!(
        out,
        "  settings:  verify_ssh={} cleanup_on_failure={} timeout_buffer={}s on_error={}",
        s.verify_ssh, s.cleanup_on_failure, s.timeout_buffer, s.on_error
    )?;
    if let Some(execution) = m.execution() {
        let mode = execution.default_mode.unwrap_or_default();
        writeln!(out, "  execution: default mode {mode}")?;
    }
    writeln!(out)?;
    match graph {
        Some(g) => {
            writeln!(out, "Tree:")?;
            for root in g.roots() {
                render_node(&mut out, g, m, root, "  ", None)?;
            }
        }
        None => {
            writeln!(out, "Levels (each runs inside the one before):")?;
            for (i, level) in m.levels().iter().enumerate() {
                writeln!(out, "  {}. {}", i + 1, level_line(level))?;
            }
        }
    }
    let (create, destroy) = orders(m, graph);
    writeln!(out)?;
    writeln!(out, "Create order:  {}", create.join(" → "))?;
    writeln!(out, "Destroy order: {}", destroy.join(" → "))?;
    Ok(out)
}

/// One node and, indented below it, its children. `last` is `None` for a
/// root, else whether the node is the last of its siblings.
fn render_node(
    out: &mut String,
    g: &ManifestGraph,
    m: &Manifest,
    node: &Node,
    indent: &str,
    last: Option<bool>,
) -> anyhow::Result<()> {
    let (branch, child_indent) = match last {
        None => ("", indent.to_string()),
        Some(true) => ("└─ ", format!("{indent}   ")),
        Some(false) => ("├─ ", format!("{indent}│  ")),
    };
    writeln!(out, "{indent}{branch}{}", node_line(m, node))?;
    let children = g.children(node.name.as_str())?;
    let count = children.len();
    for (i, child) in children.into_iter().enumerate() {
        render_node(out, g, m, child, &child_indent, Some(i + 1 == count))?;
    }
    Ok(())
}

fn node_line(m: &Manifest, node: &Node) -> String {
    let mut line = format!("{} [{}]", node.name, node.kind);
    let mut field = |key: &str, value: Option<String>| {
        if let Some(value) = value {
            let _ = write!(line, " {key}={value}");
        }
    };
    field("spec", node.spec.clone());
    field("preset", node.preset.clone());
    field("image", node.image.clone());
    field("vmid", node.vmid.map(|v| v.to_string()));
    field("disk", node.disk.map(|d| format!("{d}G")));
    field("exec", Some(m.execution_mode(node).to_string()));
    line
}

fn level_line(level: &Level) -> String {
    let mut line = level.name.to_string();
    let mut field = |key: &str, value: Option<String>| {
        if let Some(value) = value {
            let _ = write!(line, " {key}={value}");
        }
    };
    field("env", level.env.clone());
    field("template", level.template.clone());
    field("vm_preset", level.vm_preset.clone());
    field("image", level.image.clone());
    field("vmid", level.vmid.map(|v| v.to_string()));
    field(
        "vmid_offset",
        (level.vmid_offset != 0).then(|| level.vmid_offset.to_string()),
    );
    if let Some(scenario) = &level.post_scenario {
        let args = level.post_scenario_args.join(" ");
        let _ = write!(line, " then: {scenario} {args}");
    }
    line.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/manifests")
            .join(name)
    }

    #[test]
    fn show_renders_tree_and_orders() {
        let m = Manifest::from_file(&fixture("valid-v2-tree.yaml")).unwrap();
        let g = ManifestGraph::new(&m).unwrap();
        let text = render_show("f.yaml", &m, Some(&g)).unwrap();
        let expected_tree = "\
Tree:
  hv [pve] preset=vm-large image=debian-13-pve vmid=98200 disk=96G exec=push
  ├─ web [vm] preset=vm-small image=debian-12 exec=pull
  ├─ cache [ct] spec=base exec=pull
  └─ inner-hv [pve] preset=medium image=debian-13-pve exec=pull
     └─ leaf [vm] preset=vm-small image=debian-12 exec=pull
  solo [vm] preset=vm-xsmall image=debian-12 vmid=98300 exec=pull
";
        assert!(text.contains(expected_tree), "{text}");
        assert!(
            text.contains("Create order:  hv → solo → web → cache → inner-hv → leaf"),
            "{text}"
        );
        assert!(
            text.contains("Destroy order: leaf → inner-hv → cache → web → solo → hv"),
            "{text}"
        );
    }

    #[test]
    fn show_renders_v1_levels() {
        let m = Manifest::from_file(&fixture("valid-v1.yaml")).unwrap();
        let text = render_show("f.yaml", &m, None).unwrap();
        assert!(
            text.contains("  1. outer env=dev vmid_offset=10\n"),
            "{text}"
        );
        assert!(
            text.contains("  2. middle template=nested-pve vmid=98100 then: pve-setup --local\n"),
            "{text}"
        );
        assert!(
            text.contains("Destroy order: inner → middle → outer"),
            "{text}"
        );
    }

    #[test]
    fn show_json_is_complete() {
        let m = Manifest::from_file(&fixture("valid-v2-tree.yaml")).unwrap();
        let g = ManifestGraph::new(&m).unwrap();
        let v = show_json("f.yaml", &m, Some(&g)).unwrap();
        assert_eq!(
            v["create_order"],
            json!(["hv", "solo", "web", "cache", "inner-hv", "leaf"])
        );
        assert_eq!(v["graph"]["roots"], json!(["hv", "solo"]));
        assert_eq!(v["graph"]["nodes"][2]["parent_ip_key"], json!("hv_ip"));
        assert_eq!(v["graph"]["nodes"][2]["execution_mode"], json!("pull"));
        assert_eq!(v["levels"][3]["is_inline"], json!(false));
        assert_eq!(v["manifest"]["name"], json!("lab-tree"));
    }

    #[test]
    fn validation_json_reports_position() {
        let err = Manifest::from_file(&fixture("invalid-yaml.yaml")).unwrap_err();
        let v = validation_json("x", Err(&err));
        assert_eq!(v["valid"], json!(false));
        assert_eq!(
            (v["line"].clone(), v["column"].clone()),
            (json!(6), json!(4))
        );
    }

    #[test]
    fn tables_align() {
        let table = render_table(
            ["A", "BB"],
            &[
                ["long".to_string(), "x".to_string()],
                ["s".to_string(), "y".to_string()],
            ],
        );
        assert_eq!(table, "A     BB\nlong  x\ns     y\n");
    }
}
