//! `homestak config`. (Placeholder until its module lands.)

use super::{GlobalArgs, Outcome};

/// Arguments of `homestak config`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `homestak config`.
pub async fn run(_args: Args, _global: &GlobalArgs) -> anyhow::Result<Outcome> {
    anyhow::bail!("`homestak config` is not implemented yet")
}
