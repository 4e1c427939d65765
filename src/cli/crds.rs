//! `homestak crds`: generate or check the JSON Schemas in `crds/`.

use std::path::PathBuf;

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
    let written = homestak_core::crds::write(&args.out)?;
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
