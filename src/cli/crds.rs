//! `homestak crds`: generate or check the JSON Schemas in `crds/`.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{GlobalArgs, Outcome, output};

/// Arguments of `homestak crds`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only compare DIR with the generated schemas; exit 1 when stale.
    #[arg(long)]
    check: bool,
    /// Directory for the schema files.
    #[arg(long, value_name = "DIR", value_hint = clap::ValueHint::DirPath, default_value = "crds")]
    out: PathBuf,
}

/// Runs `homestak crds`.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    if args.check {
        let stale = homestak_core::crds::check(&args.out)?;
        if global.json {
            let list: Vec<String> = stale.iter().map(ToString::to_string).collect();
            output::print_json(&serde_json::json!({ "stale": list }))?;
        } else if stale.is_empty() {
            println!("{} is up to date", args.out.display());
        } else {
            for s in &stale {
                eprintln!("{s}");
            }
            eprintln!(
                "run `homestak crds --out {}` (or `make crds`) and commit",
                args.out.display()
            );
        }
        return Ok(if stale.is_empty() {
            Outcome::Converged
        } else {
            Outcome::Failed
        });
    }
    let written = write(&args.out)?;
    if global.json {
        let list: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
        output::print_json(&serde_json::json!({ "written": list }))?;
    } else {
        for path in &written {
            println!("wrote {}", path.display());
        }
    }
    Ok(Outcome::Converged)
}

/// Writes every schema core renders into `dir`, creating it; returns the
/// files written.
fn write(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot write {}", dir.display()))?;
    let mut written = Vec::new();
    for doc in homestak_core::crds::documents() {
        let path = dir.join(&doc.file_name);
        std::fs::write(&path, doc.text)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}
