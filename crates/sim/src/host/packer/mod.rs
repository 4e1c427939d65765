//! `packer` on a simulated host: builds image files from HCL templates, as
//! HashiCorp Packer with the qemu plugin would, strictly enough that a wrong
//! invocation fails the way the real one does.
//!
//! - `packer version`
//! - `packer init [-upgrade] PATH`: installs the plugins the template's
//!   `packer { required_plugins { … } }` names, under the user's
//!   `~/.config/packer/plugins/` (where packer keeps them).
//! - `packer validate [-var k=v] [-var-file F] [-only=…] PATH`
//! - `packer build [-force] [-only=NAME,…] [-var k=v] [-var-file F]
//!   [-color=BOOL] [-on-error=…] [-timestamp-ui] PATH`
//!
//! PATH is a `.pkr.hcl` file or a directory of them; relative paths in the
//! template (`output_directory`, provisioner scripts) are relative to the
//! working directory, as for packer. A build fails on a missing template, an
//! unknown flag or variable, an unset variable, a builder whose plugin
//! `packer init` has not installed, a missing provisioner script, or an
//! existing output directory without `-force`. It takes simulated time
//! ([`BUILD_SECS`], scaled by the time scale) and writes
//! `<output_directory>/<vm_name>`: a valid, empty qcow2 whose virtual size
//! is the source's `disk_size` (see [`qcow2`]).

mod hcl;
pub(crate) mod qcow2;

use std::collections::BTreeMap;

use crate::runtime::Clock;
use crate::ssh::{Context, Program, VmPath};
use hcl::{Body, Value};
use homestak_ssh::BoxFuture;

/// Simulated seconds one image takes (the packer README: 1.5–2 minutes).
pub const BUILD_SECS: f64 = 100.0;
/// The version `packer version` reports.
const VERSION: &str = "1.11.2";
/// The qemu plugin's default `disk_size`.
const DEFAULT_DISK: &str = "40960M";

/// The `packer` command.
pub struct Packer {
    pub clock: Clock,
}

impl Program for Packer {
    fn run<'a>(&'a self, args: &'a [String], cx: &'a mut Context) -> BoxFuture<'a, u32> {
        Box::pin(async move {
            let result = match args.split_first() {
                Some((cmd, _)) if cmd == "version" || cmd == "--version" || cmd == "-v" => {
                    cx.out(format!("Packer v{VERSION}\n")).await;
                    Ok(())
                }
                Some((cmd, rest)) if cmd == "init" => init(rest, cx).await,
                Some((cmd, rest)) if cmd == "validate" => validate(rest, cx).await,
                Some((cmd, rest)) if cmd == "build" => self.build(rest, cx).await,
                Some((cmd, _)) => Err(Failure::Usage(format!(
                    "unknown command {cmd:?}; the simulated packer has version, init, validate and build"
                ))),
                None => Err(Failure::Usage("missing command".into())),
            };
            match result {
                Ok(()) => 0,
                Err(Failure::Usage(message)) => {
                    cx.err(format!(
                        "{message}\nUsage: packer [--version] <command> [<args>]\n"
                    ))
                    .await;
                    1
                }
                Err(Failure::Error(message)) => {
                    cx.err(format!("Error: {message}\n")).await;
                    1
                }
            }
        })
    }
}

/// How a command failed: a wrong invocation (usage shown) or an error.
enum Failure {
    Usage(String),
    Error(String),
}

fn error(message: impl Into<String>) -> Failure {
    Failure::Error(message.into())
}

/// The options of `build` and `validate`.
#[derive(Default)]
struct Options {
    force: bool,
    only: Vec<String>,
    vars: Vec<(String, String)>,
    var_files: Vec<String>,
    path: String,
}

fn parse_options(args: &[String], build: bool) -> Result<Options, Failure> {
    let mut o = Options::default();
    let mut path = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        // Packer's flag package takes `-x`, `--x`, `-x=v` and `-x v`.
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            if path.replace(arg.clone()).is_some() {
                return Err(Failure::Usage(format!(
                    "too many arguments: {arg:?} after the template path"
                )));
            }
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| Failure::Usage(format!("flag needs an argument: -{name}")))
        };
        match name {
            "force" if build => o.force = inline.as_deref() != Some("false"),
            "only" => o.only.extend(value(name)?.split(',').map(str::to_string)),
            "var" => {
                let kv = value(name)?;
                let Some((k, v)) = kv.split_once('=') else {
                    return Err(error(format!(
                        "Invalid -var option: the given value {kv:?} is not valid; expected NAME=VALUE"
                    )));
                };
                o.vars.push((k.to_string(), v.to_string()));
            }
            "var-file" => o.var_files.push(value(name)?),
            "color" | "on-error" if build => {
                value(name)?;
            }
            "timestamp-ui" | "machine-readable" | "debug" if build => {}
            "syntax-only" if !build => {}
            _ => {
                return Err(Failure::Usage(format!(
                    "flag provided but not defined: {arg}"
                )));
            }
        }
    }
    o.path = path.ok_or_else(|| Failure::Usage("a template path is required".into()))?;
    Ok(o)
}

/// A template read from a file or directory, with where it lives.
struct Template {
    body: Body,
    /// Guest directory of the template (`path.root`).
    root: String,
}

async fn load(cx: &mut Context, path: &str) -> Result<Template, Failure> {
    let resolved = cx
        .resolve(path)
        .map_err(|e| error(format!("Failed to read {path}: {e}")))?;
    let meta = tokio::fs::metadata(&resolved.host).await.map_err(|_| {
        error(format!(
            "Failed to initialize build: stat {path}: no such file or directory"
        ))
    })?;
    let files = if meta.is_dir() {
        let mut files = Vec::new();
        let mut dir = tokio::fs::read_dir(&resolved.host)
            .await
            .map_err(|e| error(format!("Failed to read {path}: {e}")))?;
        while let Ok(Some(entry)) = dir.next_entry().await {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".pkr.hcl") || name.ends_with(".pkrvars.hcl") {
                files.push((name.clone(), entry.path()));
            }
        }
        files.retain(|(n, _)| !n.ends_with(".pkrvars.hcl"));
        files.sort();
        if files.is_empty() {
            return Err(error(format!(
                "Could not find any config file in {path}: a directory needs *.pkr.hcl files"
            )));
        }
        files
    } else if path.ends_with(".pkr.hcl") {
        vec![(path.to_string(), resolved.host.clone())]
    } else {
        return Err(error(format!(
            "{path} is not a Packer HCL2 template: the simulated packer reads *.pkr.hcl files"
        )));
    };
    let mut body = Body::default();
    for (name, host) in files {
        let text = tokio::fs::read_to_string(&host)
            .await
            .map_err(|e| error(format!("Failed to read {name}: {e}")))?;
        let part = hcl::parse(&text).map_err(|e| error(format!("{name}: Invalid HCL: {e}")))?;
        body.attrs.extend(part.attrs);
        body.blocks.extend(part.blocks);
    }
    let root = if meta.is_dir() {
        resolved.guest.clone()
    } else {
        parent(&resolved.guest)
    };
    Ok(Template { body, root })
}

fn parent(guest: &str) -> String {
    match guest.rsplit_once('/') {
        Some(("", _)) | None => "/".into(),
        Some((dir, _)) => dir.into(),
    }
}

/// The plugins a template requires: name → source address.
fn required_plugins(t: &Template) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for packer in t.body.blocks("packer") {
        for req in packer.body.blocks("required_plugins") {
            for (name, value) in &req.body.attrs {
                let source = match value {
                    Value::Object(fields) => fields.iter().find_map(|(k, v)| match (k, v) {
                        (k, Value::Str(s)) if k == "source" => Some(s.clone()),
                        _ => None,
                    }),
                    _ => None,
                };
                out.insert(
                    name.clone(),
                    source.unwrap_or_else(|| format!("github.com/hashicorp/{name}")),
                );
            }
        }
    }
    out
}

/// Where `packer init` puts a plugin, in the user's home.
fn plugin_dir(cx: &Context, source: &str) -> Result<VmPath, Failure> {
    let dir = format!("{}/.config/packer/plugins/{source}", cx.home());
    cx.resolve(&dir)
        .map_err(|e| error(format!("cannot use {dir}: {e}")))
}

/// Whether `packer init` installed the plugin whose directory is `dir`.
async fn installed(dir: Result<VmPath, Failure>) -> bool {
    match dir {
        Ok(dir) => tokio::fs::metadata(&dir.host)
            .await
            .is_ok_and(|m| m.is_dir()),
        Err(_) => false,
    }
}

async fn init(args: &[String], cx: &mut Context) -> Result<(), Failure> {
    let mut path = None;
    for arg in args {
        match arg.as_str() {
            "-upgrade" | "--upgrade" => {}
            flag if flag.starts_with('-') => {
                return Err(Failure::Usage(format!(
                    "flag provided but not defined: {flag}"
                )));
            }
            operand => {
                if path.replace(operand).is_some() {
                    return Err(Failure::Usage("init takes one template path".into()));
                }
            }
        }
    }
    let path = path.ok_or_else(|| Failure::Usage("a template path is required".into()))?;
    let template = load(cx, path).await?;
    let plugins = required_plugins(&template);
    if plugins.is_empty() {
        cx.out(
            "No plugins requirement found, make sure you reference a Packer config\n\
             containing a packer.required_plugins block. See\n\
             https://www.packer.io/docs/templates/hcl_templates/blocks/packer\n\
             for more info.\n",
        )
        .await;
        return Ok(());
    }
    for source in plugins.values() {
        if installed(plugin_dir(cx, source)).await {
            continue;
        }
        let dir = plugin_dir(cx, source)?;
        let made = async {
            tokio::fs::create_dir_all(&dir.host).await?;
            let name = source.rsplit('/').next().unwrap_or(source);
            tokio::fs::write(
                dir.host
                    .join(format!("packer-plugin-{name}_v1.1.0_x5.0_linux_amd64")),
                b"simulated plugin\n",
            )
            .await
        };
        made.await
            .map_err(|e| error(format!("Failed getting the {source:?} plugin: {e}")))?;
        cx.out(format!(
            "Installed plugin {source} v1.1.0 in \"{}/packer-plugin-{}_v1.1.0_x5.0_linux_amd64\"\n",
            dir.guest,
            source.rsplit('/').next().unwrap_or(source)
        ))
        .await;
    }
    Ok(())
}

/// One source block to build, resolved.
struct Build {
    /// `qemu.NAME`
    name: String,
    output_directory: String,
    vm_name: String,
    disk_size: u64,
    scripts: Vec<String>,
}

/// Resolves variables, checks plugins and lists the builds of a template.
async fn plan(cx: &mut Context, o: &Options) -> Result<(Template, Vec<Build>), Failure> {
    let template = load(cx, &o.path).await?;
    let vars = variables(cx, &template, o).await?;
    let plugins = required_plugins(&template);
    let cwd = cx.cwd.clone();
    let expand = |v: &Value, what: &str| -> Result<String, Failure> {
        let text = match v {
            Value::Str(s) => s.clone(),
            Value::Num(n) => n.clone(),
            Value::Ref(r) => format!("${{{r}}}"),
            other => {
                return Err(error(format!(
                    "{what}: the simulated packer cannot evaluate {other:?}"
                )));
            }
        };
        interpolate(&text, &vars, &template.root, &cwd).map_err(|e| error(format!("{what}: {e}")))
    };
    let mut sources = BTreeMap::new();
    for block in template.body.blocks("source") {
        let [kind, name] = &block.labels[..] else {
            return Err(error("a source block needs a type and a name"));
        };
        sources.insert(format!("{kind}.{name}"), block);
    }
    let mut builds = Vec::new();
    let build_blocks: Vec<_> = template.body.blocks("build").collect();
    if build_blocks.is_empty() {
        return Err(error("the template has no build block: nothing to build"));
    }
    for build in build_blocks {
        let listed = match build.body.attr("sources") {
            Some(Value::List(items)) => items
                .iter()
                .filter_map(|v| match v {
                    Value::Str(s) | Value::Ref(s) => Some(s.clone()),
                    _ => None,
                })
                .collect::<Vec<_>>(),
            _ => {
                return Err(error(
                    "a build block needs `sources = [\"source.TYPE.NAME\"]`",
                ));
            }
        };
        let mut scripts = Vec::new();
        for p in build.body.blocks("provisioner") {
            for key in ["script", "scripts"] {
                match p.body.attr(key) {
                    Some(Value::List(items)) => {
                        for item in items {
                            scripts.push(expand(item, "provisioner script")?);
                        }
                    }
                    Some(v) => scripts.push(expand(v, "provisioner script")?),
                    None => {}
                }
            }
        }
        for reference in listed {
            let key = reference.strip_prefix("source.").unwrap_or(&reference);
            let Some(source) = sources.get(key) else {
                return Err(error(format!(
                    "Unknown source {reference}: no source block {key} is declared"
                )));
            };
            let kind = &source.labels[0];
            let short = &source.labels[1];
            if !o.only.is_empty() && !o.only.iter().any(|x| x == key || x == short) {
                continue;
            }
            if kind != "qemu" {
                return Err(error(format!(
                    "The builder {kind} is unknown by Packer, and is likely part of a plugin \
                     that is not installed: the simulated host has only the qemu builder"
                )));
            }
            let plugin = plugins.get(kind);
            let ready = match plugin {
                Some(source) => installed(plugin_dir(cx, source)).await,
                None => false,
            };
            if !ready {
                return Err(error(format!(
                    "The builder {kind} is unknown by Packer, and is likely part of a plugin \
                     that is not installed. Declare it in packer.required_plugins and run \
                     `packer init {}` first.",
                    o.path
                )));
            }
            let b = &source.body;
            let output_directory = match b.attr("output_directory") {
                Some(v) => expand(v, "output_directory")?,
                None => format!("output-{short}"),
            };
            let vm_name = match b.attr("vm_name") {
                Some(v) => expand(v, "vm_name")?,
                None => format!("packer-{short}"),
            };
            let disk = match b.attr("disk_size") {
                Some(v) => expand(v, "disk_size")?,
                None => DEFAULT_DISK.into(),
            };
            let disk_size = parse_size(&disk).ok_or_else(|| {
                error(format!(
                    "disk_size {disk:?} is not a size such as 3G or 8192M"
                ))
            })?;
            builds.push(Build {
                name: key.to_string(),
                output_directory,
                vm_name,
                disk_size,
                scripts: scripts.clone(),
            });
        }
    }
    if builds.is_empty() {
        return Err(error(format!(
            "no build matches -only={}",
            o.only.join(",")
        )));
    }
    Ok((template, builds))
}

/// Variable values: declared defaults, then -var-file, then -var.
async fn variables(
    cx: &mut Context,
    t: &Template,
    o: &Options,
) -> Result<BTreeMap<String, String>, Failure> {
    let mut declared = BTreeMap::new();
    for v in t.body.blocks("variable") {
        let Some(name) = v.labels.first() else {
            return Err(error("a variable block needs a name"));
        };
        let default = match v.body.attr("default") {
            Some(Value::Str(s) | Value::Num(s)) => Some(s.clone()),
            Some(Value::Bool(b)) => Some(b.to_string()),
            Some(_) => Some(String::new()),
            None => None,
        };
        declared.insert(name.clone(), default);
    }
    let mut given = Vec::new();
    for file in &o.var_files {
        let path = cx
            .resolve(file)
            .map_err(|e| error(format!("Failed to read {file}: {e}")))?;
        let text = tokio::fs::read_to_string(&path.host).await.map_err(|_| {
            error(format!(
                "Failed to read variables file {file}: no such file"
            ))
        })?;
        let body = hcl::parse(&text).map_err(|e| error(format!("{file}: Invalid HCL: {e}")))?;
        for (k, v) in body.attrs {
            let value = match v {
                Value::Str(s) | Value::Num(s) => s,
                Value::Bool(b) => b.to_string(),
                other => format!("{other:?}"),
            };
            given.push((k, value, file.clone()));
        }
    }
    for (k, v) in &o.vars {
        given.push((k.clone(), v.clone(), "the command line".into()));
    }
    for (k, v, origin) in given {
        if !declared.contains_key(&k) {
            return Err(error(format!(
                "Undefined -var variable: a variable named {k:?} was assigned on {origin}, but \
                 the root module does not declare a variable of that name"
            )));
        }
        declared.insert(k, Some(v));
    }
    let mut values = BTreeMap::new();
    for (k, v) in declared {
        match v {
            Some(v) => {
                values.insert(k, v);
            }
            None => {
                return Err(error(format!(
                    "Unset variable {k:?}: a used variable must be set or have a default value"
                )));
            }
        }
    }
    Ok(values)
}

/// Expands `${var.x}`, `${path.root}` and `${path.cwd}` in `text`.
fn interpolate(
    text: &str,
    vars: &BTreeMap<String, String>,
    root: &str,
    cwd: &str,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated ${{ in {text:?}"))?;
        let expr = after[..end].trim();
        let value = if let Some(name) = expr.strip_prefix("var.") {
            vars.get(name)
                .cloned()
                .ok_or_else(|| format!("Reference to undeclared input variable {name:?}"))?
        } else if expr == "path.root" {
            root.to_string()
        } else if expr == "path.cwd" {
            cwd.to_string()
        } else {
            return Err(format!(
                "the simulated packer cannot evaluate ${{{expr}}} (only var.*, path.root, path.cwd)"
            ));
        };
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `3G`, `8192M`, `20480` (MiB, as the qemu plugin reads a bare number).
fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, "M"),
    };
    let n: u64 = number.parse().ok()?;
    let shift = match unit.trim_end_matches(['b', 'B', 'i']) {
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        "T" | "t" => 40,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

async fn validate(args: &[String], cx: &mut Context) -> Result<(), Failure> {
    let o = parse_options(args, false)?;
    let (_, builds) = plan(cx, &o).await?;
    check_scripts(cx, &builds).await?;
    cx.out("The configuration is valid.\n").await;
    Ok(())
}

async fn check_scripts(cx: &mut Context, builds: &[Build]) -> Result<(), Failure> {
    for b in builds {
        for script in &b.scripts {
            let path = cx
                .resolve(script)
                .map_err(|e| error(format!("{}: script {script}: {e}", b.name)))?;
            if !tokio::fs::metadata(&path.host)
                .await
                .is_ok_and(|m| m.is_file())
            {
                return Err(error(format!(
                    "{}: provisioner shell: Bad script {script:?}: stat {script}: no such file or directory",
                    b.name
                )));
            }
        }
    }
    Ok(())
}

impl Packer {
    async fn build(&self, args: &[String], cx: &mut Context) -> Result<(), Failure> {
        let o = parse_options(args, true)?;
        let (_, builds) = plan(cx, &o).await?;
        check_scripts(cx, &builds).await?;
        let mut outputs = Vec::new();
        for b in &builds {
            let dir = cx
                .resolve(&b.output_directory)
                .map_err(|e| error(format!("{}: output_directory: {e}", b.name)))?;
            if cx.mounted(&dir.guest).is_some() {
                return Err(error(format!(
                    "{}: output_directory {} is a storage directory; build elsewhere and copy \
                     the image there",
                    b.name, b.output_directory
                )));
            }
            if tokio::fs::symlink_metadata(&dir.host).await.is_ok() {
                if !o.force {
                    cx.out(format!(
                        "Build '{}' errored after 0 seconds: Output directory exists: {}\n\n\
                         Use the force flag to delete it prior to building.\n",
                        b.name, b.output_directory
                    ))
                    .await;
                    return Err(error(format!(
                        "Output directory exists: {} (use -force to replace it)",
                        b.output_directory
                    )));
                }
                cx.out(format!(
                    "==> {}: Deleting previous output directory...\n",
                    b.name
                ))
                .await;
                tokio::fs::remove_dir_all(&dir.host)
                    .await
                    .map_err(|e| error(format!("cannot delete {}: {e}", b.output_directory)))?;
            }
            outputs.push(dir);
        }
        for (b, dir) in builds.iter().zip(outputs) {
            cx.out(format!("{}: output will be in this color.\n\n", b.name))
                .await;
            cx.out(format!(
                "==> {}: Retrieving ISO\n==> {}: Starting VM, booting disk image\n",
                b.name, b.name
            ))
            .await;
            for script in &b.scripts {
                cx.out(format!(
                    "==> {}: Provisioning with shell script: {script}\n",
                    b.name
                ))
                .await;
            }
            self.clock.sleep(BUILD_SECS).await;
            let image = qcow2::empty_image(b.disk_size)
                .ok_or_else(|| error(format!("{}: disk_size is too large", b.name)))?;
            let file = cx
                .root
                .resolve(&dir.guest, &b.vm_name)
                .map_err(|e| error(format!("{}: vm_name: {e}", b.name)))?;
            let written = async {
                tokio::fs::create_dir_all(&dir.host).await?;
                tokio::fs::write(&file.host, &image).await
            };
            written
                .await
                .map_err(|e| error(format!("{}: cannot write {}: {e}", b.name, file.guest)))?;
            cx.out(format!(
                "==> {}: Gracefully halting virtual machine...\n\
                 Build '{}' finished after {:.0} seconds.\n",
                b.name, b.name, BUILD_SECS
            ))
            .await;
        }
        cx.out("\n==> Builds finished. The artifacts of successful builds are:\n")
            .await;
        for b in &builds {
            cx.out(format!(
                "--> {}: VM files in directory: {}\n",
                b.name, b.output_directory
            ))
            .await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_interpolation() {
        assert_eq!(parse_size("3G"), Some(3 << 30));
        assert_eq!(parse_size("8192M"), Some(8192 << 20));
        assert_eq!(parse_size("20480"), Some(20480 << 20));
        assert_eq!(parse_size("3Q"), None);
        let vars = BTreeMap::from([("v".to_string(), "12".to_string())]);
        assert_eq!(
            interpolate("debian-${var.v}/${path.root}", &vars, "/t", "/c").unwrap(),
            "debian-12//t"
        );
        assert!(interpolate("${var.nope}", &vars, "/", "/").is_err());
        assert!(interpolate("${timestamp()}", &vars, "/", "/").is_err());
    }

    #[test]
    fn unknown_flags_are_usage_errors() {
        let args: Vec<String> = ["-frobnicate", "t.pkr.hcl"].map(String::from).into();
        assert!(matches!(parse_options(&args, true), Err(Failure::Usage(_))));
        let args: Vec<String> = ["-force", "t.pkr.hcl"].map(String::from).into();
        assert!(matches!(
            parse_options(&args, false),
            Err(Failure::Usage(_))
        ));
        let args: Vec<String> = ["-force", "-var", "a=b", "-only=qemu.x", "t.pkr.hcl"]
            .map(String::from)
            .into();
        let o = parse_options(&args, true).ok().unwrap();
        assert!(o.force);
        assert_eq!(o.vars, [("a".to_string(), "b".to_string())]);
        assert_eq!(o.only, ["qemu.x"]);
    }
}
