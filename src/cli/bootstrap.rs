//! `homestak bootstrap`: the half of an install that runs on the new host
//! (the daemon's `/install.sh` calls it once it has fetched this binary):
//! clones, or brings up to date, the site-config from the parent's
//! `homestak serve` over its authenticated git repos, then checks it loads.
//!
//! The token comes from a header file and the daemon's certificate from a
//! CA file; they reach git through `GIT_CONFIG_*` variables, never its
//! command line (which `ps` shows).

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::{GlobalArgs, Outcome, output};

/// Arguments of `homestak bootstrap`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The parent daemon's URL, e.g. https://10.0.12.5:44443.
    #[arg(long, value_name = "URL")]
    pub source: String,
    /// File holding the `Authorization: Bearer …` header (the repo token).
    #[arg(long, value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    pub header_file: PathBuf,
    /// The parent daemon's certificate (PEM), trusted for the clone.
    #[arg(long, value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    pub ca_file: PathBuf,
    /// Where the site-config goes.
    #[arg(long, value_name = "DIR", value_hint = clap::ValueHint::DirPath, default_value = "/usr/local/etc/homestak")]
    pub site_dir: PathBuf,
    /// The repository to clone (`NAME.git` on the daemon).
    #[arg(long, value_name = "NAME", default_value = "site-config")]
    pub repo: String,
}

/// Runs `homestak bootstrap`.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    let header = std::fs::read_to_string(&args.header_file).with_context(|| {
        format!(
            "cannot read the header file {} (it holds `Authorization: Bearer <repo token>`)",
            args.header_file.display()
        )
    })?;
    let header = header
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{} holds no Authorization header",
                args.header_file.display()
            )
        })?
        .trim()
        .to_string();
    if !args.ca_file.is_file() {
        anyhow::bail!("no CA file at {}", args.ca_file.display());
    }
    if !args
        .repo
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        anyhow::bail!("{:?} is not a repository name", args.repo);
    }
    let url = format!("{}/{}.git", args.source.trim_end_matches('/'), args.repo);
    let existing = args.site_dir.join(".git").is_dir();
    let action = if existing {
        git(
            &args,
            &header,
            &["-C", path(&args.site_dir)?, "pull", "--ff-only", "--quiet"],
        )?;
        "updated"
    } else {
        if let Some(parent) = args.site_dir.parent() {
            std::fs::create_dir_all(parent)?;
        }
        git(
            &args,
            &header,
            &["clone", "--quiet", &url, path(&args.site_dir)?],
        )?;
        "cloned"
    };
    // The copy must be a site-config homestak can use.
    homestak_core::site::Site::load(&args.site_dir)?;
    let commit = std::process::Command::new("git")
        .args(["-C", path(&args.site_dir)?, "rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if global.json {
        output::print_json(&serde_json::json!({
            "site_config": args.site_dir,
            "action": action,
            "commit": commit,
        }))?;
    } else {
        output::print_text(&format!(
            "site-config {action} at {} ({commit}) from {url}\n",
            args.site_dir.display()
        ));
    }
    Ok(Outcome::Converged)
}

fn path(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .ok_or_else(|| anyhow::anyhow!("{} is not UTF-8", p.display()))
}

/// Runs git with the token header and the CA in its environment.
fn git(args: &Args, header: &str, words: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new("git")
        .args(words)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_COUNT", "2")
        .env("GIT_CONFIG_KEY_0", "http.extraHeader")
        .env("GIT_CONFIG_VALUE_0", header)
        .env("GIT_CONFIG_KEY_1", "http.sslCAInfo")
        .env("GIT_CONFIG_VALUE_1", &args.ca_file)
        .stdin(std::process::Stdio::null())
        .output()
        .context("cannot run git; install it (apt-get install git)")?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        anyhow::bail!(
            "git {} failed: {}",
            words.first().copied().unwrap_or_default(),
            stderr.trim()
        );
    }
    Ok(())
}
