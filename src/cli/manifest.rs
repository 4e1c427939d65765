//! `homestak manifest`. (Placeholder until its module lands.)

use super::{GlobalArgs, Outcome};

/// Arguments of `homestak manifest`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `homestak manifest`.
pub async fn run(_args: Args, _global: &GlobalArgs) -> anyhow::Result<Outcome> {
    anyhow::bail!("`homestak manifest` is not implemented yet")
}
