//! `homestak config`: resolve and list site-config.
//!
//! - `config resolve --env E --node N` prints the tofu variables of env `E`
//!   on node `N`; with `--ansible`, the env's ansible variables instead.
//!   With `--json` the output is exactly the reference's object (secrets
//!   included, since that object feeds tofu); the human summary never shows
//!   a token or password.
//! - `config list envs|postures|templates|presets|specs|hosts`.

use std::fmt::Write as _;
use std::io::Write as _;

use clap::{Subcommand, ValueEnum};

use super::{GlobalArgs, Outcome, output};
use homestak_core::site::{AnsibleVars, IpConfig, Secret, Site, TofuVars, discover};

/// Arguments of `homestak config`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

/// `homestak config` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Resolve an env for a target node (tofu variables), or its ansible
    /// variables with --ansible.
    Resolve(ResolveArgs),
    /// List envs, postures, templates, presets, specs or hosts.
    List(ListArgs),
}

/// Arguments of `homestak config resolve`.
#[derive(Debug, clap::Args)]
pub struct ResolveArgs {
    /// Environment (envs/ENV.yaml).
    #[arg(long, short = 'E')]
    pub env: String,
    /// Target PVE node (nodes/NODE.yaml); not needed with --ansible.
    #[arg(
        long,
        short = 'H',
        visible_alias = "host",
        required_unless_present = "ansible"
    )]
    pub node: Option<String>,
    /// Print the ansible variables instead of the tofu variables.
    #[arg(long)]
    pub ansible: bool,
}

/// Arguments of `homestak config list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// What to list.
    #[arg(value_enum)]
    pub what: ListKind,
}

/// Listable site-config entities.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ListKind {
    /// envs/*.yaml
    Envs,
    /// postures/*.yaml (v1)
    Postures,
    /// vms/*.yaml
    Templates,
    /// vms/presets/*.yaml
    Presets,
    /// v2/specs/*.yaml
    Specs,
    /// nodes/*.yaml and hosts/*.yaml
    Hosts,
}

/// Runs `homestak config`.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    let root = discover::find(global.site_config.as_deref())?;
    let site = Site::load(&root)?;
    match args.command {
        Command::Resolve(resolve) => {
            if resolve.ansible {
                let vars = site.resolve_ansible_vars(&resolve.env)?;
                if global.json {
                    output::print_json(&vars)?;
                } else {
                    print_text(&ansible_summary(&vars))?;
                }
            } else {
                // clap guarantees --node without --ansible.
                let node = resolve.node.as_deref().unwrap_or_default();
                let vars = site.resolve_env(&resolve.env, node)?;
                if global.json {
                    output::print_json(&vars)?;
                } else {
                    print_text(&tofu_summary(&resolve.env, &vars))?;
                }
            }
        }
        Command::List(list) => {
            let names = match list.what {
                ListKind::Envs => site.list_envs(),
                ListKind::Postures => site.list_postures(),
                ListKind::Templates => site.list_templates(),
                ListKind::Presets => site.list_presets(),
                ListKind::Specs => site.list_specs(),
                ListKind::Hosts => site.list_hosts(),
            };
            if global.json {
                output::print_json(&names)?;
            } else if names.is_empty() {
                eprintln!("no {} in {}", list_label(list.what), root.display());
            } else {
                print_text(&(names.join("\n") + "\n"))?;
            }
        }
    }
    Ok(Outcome::Converged)
}

fn list_label(kind: ListKind) -> &'static str {
    match kind {
        ListKind::Envs => "envs",
        ListKind::Postures => "postures",
        ListKind::Templates => "templates",
        ListKind::Presets => "presets",
        ListKind::Specs => "specs",
        ListKind::Hosts => "hosts",
    }
}

fn print_text(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// "set" or "not set": the only thing the human output says about a secret.
fn presence(secret: &Secret) -> &'static str {
    if secret.is_empty() { "not set" } else { "set" }
}

fn or_dash(text: &str) -> &str {
    if text.is_empty() { "-" } else { text }
}

/// Human summary of a tofu resolution. Never contains a secret value.
fn tofu_summary(env: &str, vars: &TofuVars) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "env {env} on node {}", vars.node);
    let rows = [
        ("api endpoint", or_dash(&vars.api_endpoint).to_string()),
        ("api token", presence(&vars.api_token).to_string()),
        (
            "ssh",
            format!("{}@{}", vars.ssh_user, or_dash(&vars.ssh_host)),
        ),
        ("automation user", vars.automation_user.clone()),
        ("datastore", vars.datastore.clone()),
        ("root password", presence(&vars.root_password).to_string()),
        ("ssh keys", vars.ssh_keys.len().to_string()),
        ("spec server", or_dash(&vars.spec_server).to_string()),
    ];
    for (label, value) in rows {
        let _ = writeln!(s, "  {label:<16} {value}");
    }
    if vars.vms.is_empty() {
        let _ = writeln!(s, "\n  no VMs");
        return s;
    }
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".to_string());
    let mut table = vec![
        [
            "NAME",
            "VMID",
            "CORES",
            "MEMORY",
            "DISK",
            "IMAGE",
            "NETWORK",
            "AUTH TOKEN",
        ]
        .map(str::to_string),
    ];
    for vm in &vars.vms {
        let ip = match vm.ip_config() {
            IpConfig::Unset => "dhcp".to_string(),
            IpConfig::Dhcp => "dhcp".to_string(),
            IpConfig::Static { address, prefix } => format!("{address}/{prefix}"),
        };
        let mut network = format!("{} {ip}", vm.bridge);
        if let Some(gw) = &vm.gateway {
            let _ = write!(network, " via {gw}");
        }
        table.push([
            opt(vm.name.clone()),
            vm.vmid()
                .map_or_else(|| "auto".to_string(), |v| v.to_string()),
            opt(vm.cores.map(|v| v.to_string())),
            opt(vm.memory.map(|v| format!("{v} MiB"))),
            opt(vm.disk.map(|v| format!("{v} GiB"))),
            opt(vm.image.clone()),
            network,
            presence(&vm.auth_token).to_string(),
        ]);
    }
    s.push('\n');
    s.push_str(&render_table(&table));
    s
}

/// Human summary of ansible variables (SSH public keys are counted).
fn ansible_summary(vars: &AnsibleVars) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "ansible variables for env {} (posture {})",
        vars.env_name, vars.posture_name
    );
    let rows = [
        ("timezone", vars.timezone.clone()),
        (
            "pve subscription nag",
            if vars.pve_remove_subscription_nag {
                "removed"
            } else {
                "kept"
            }
            .to_string(),
        ),
        ("ssh port", vars.ssh_port.to_string()),
        ("root login", vars.ssh_permit_root_login.clone()),
        ("password auth", vars.ssh_password_authentication.clone()),
        ("sudo nopasswd", vars.sudo_nopasswd.to_string()),
        ("fail2ban", vars.fail2ban_enabled.to_string()),
        (
            "authorized keys",
            vars.ssh_authorized_keys.len().to_string(),
        ),
        (
            "packages",
            if vars.packages.is_empty() {
                "-".to_string()
            } else {
                vars.packages.join(", ")
            },
        ),
    ];
    for (label, value) in rows {
        let _ = writeln!(s, "  {label:<20} {value}");
    }
    s
}

/// Left-aligned columns separated by two spaces, indented by two.
fn render_table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::from(" ");
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            line.push(' ');
            if i + 1 == N {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$} ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use homestak_core::site::ResolvedVm;

    fn vars() -> TofuVars {
        TofuVars {
            node: "pve".into(),
            api_endpoint: "https://127.0.0.1:8006".into(),
            api_token: Secret::new("root@pam!x=SECRET-API"),
            ssh_user: "root".into(),
            automation_user: "homestak".into(),
            ssh_host: "127.0.0.1".into(),
            datastore: "local-zfs".into(),
            root_password: Secret::new("$6$SECRET-HASH"),
            ssh_keys: vec!["ssh-ed25519 AAAA k@h".into()],
            spec_server: String::new(),
            vms: vec![ResolvedVm {
                cores: Some(2),
                memory: Some(2048),
                disk: Some(10),
                image: Some("debian-12".into()),
                name: Some("dev1".into()),
                ip: Some(Some("10.0.0.5/24".into())),
                vmid: Some(Some(10000)),
                bridge: "vmbr0".into(),
                gateway: Some("10.0.0.1".into()),
                extra: Default::default(),
                auth_token: Secret::new("SECRET-VM-TOKEN"),
            }],
        }
    }

    #[test]
    fn human_summary_never_prints_secrets() {
        let text = tofu_summary("dev", &vars());
        for secret in ["SECRET-API", "SECRET-HASH", "SECRET-VM-TOKEN"] {
            assert!(!text.contains(secret), "{secret} leaked:\n{text}");
        }
        assert!(text.contains("dev1"), "{text}");
        assert!(text.contains("10.0.0.5/24 via 10.0.0.1"), "{text}");
        assert!(text.contains("api token        set"), "{text}");
    }

    #[test]
    fn json_output_carries_the_secrets_tofu_needs() {
        let json = serde_json::to_value(vars()).unwrap();
        assert_eq!(json["api_token"], "root@pam!x=SECRET-API");
        assert_eq!(json["vms"][0]["auth_token"], "SECRET-VM-TOKEN");
    }

    #[test]
    fn table_aligns_columns() {
        let rows = [
            ["A".to_string(), "BB".to_string()],
            ["ccc".to_string(), "d".to_string()],
        ];
        assert_eq!(render_table(&rows), "  A    BB\n  ccc  d\n");
    }
}
