//! `homestak crds`. (Placeholder until its module lands.)

use super::{GlobalArgs, Outcome};

/// Arguments of `homestak crds`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `homestak crds`.
pub async fn run(_args: Args, _global: &GlobalArgs) -> anyhow::Result<Outcome> {
    anyhow::bail!("`homestak crds` is not implemented yet")
}
