//! `homestak sim`. (Placeholder until its module lands.)

use super::{GlobalArgs, Outcome};

/// Arguments of `homestak sim`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `homestak sim`.
pub async fn run(_args: Args, _global: &GlobalArgs) -> anyhow::Result<Outcome> {
    anyhow::bail!("`homestak sim` is not implemented yet")
}
