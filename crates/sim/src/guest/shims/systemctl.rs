//! `systemctl` and `journalctl` for a simulated VM's services.
//!
//! Units with a file in the VM ([`units`](crate::guest::units)) are
//! real services. Built in, always there: `ssh` (`sshd`) and
//! `qemu-guest-agent`, active while the VM runs; on PVE images also
//! `pveproxy`, `pvedaemon`, `pve-cluster` and `pvestatd`, active while the
//! nested API runs (`start` starts it again after a failure; stopping them
//! is refused: they run as long as the VM).
//!
//! Subcommands: `start`, `stop`, `restart`, `enable [--now]`, `disable
//! [--now]`, `is-active [-q]`, `is-enabled`, `status`, `show [-p PROP]
//! [--value]` (`Id`, `Description`, `LoadState`, `ActiveState`,
//! `SubState`, `Result`, `MainPID`, `ExecMainStatus`, `UnitFileState`,
//! `NRestarts`), `daemon-reload`. Messages and exit statuses are
//! systemd's. `journalctl -u UNIT [-n N]` prints what the unit's processes
//! wrote to stdout and stderr, without journald's line prefixes.

use super::{Shim, need_root};
use crate::guest::units::{Active, ServiceState, unit_name};
use crate::ssh::Context;
use homestak_ssh::BoxFuture;

const SSH_UNITS: &[&str] = &["ssh.service", "sshd.service", "qemu-guest-agent.service"];
const PVE_UNITS: &[&str] = &[
    "pveproxy.service",
    "pvedaemon.service",
    "pve-cluster.service",
    "pvestatd.service",
];

/// What a unit name refers to.
enum Kind {
    /// Always active while the VM runs.
    System,
    /// Follows the nested API.
    Pve,
    /// A unit file in the VM.
    File(String),
    Missing,
}

/// One unit's state as `show` prints it.
struct Shown {
    load: &'static str,
    active: &'static str,
    sub: &'static str,
    file_state: &'static str,
    path: Option<String>,
    state: ServiceState,
}

pub(crate) struct Systemctl(pub Shim);

impl Systemctl {
    fn kind(&self, unit: &str) -> Kind {
        if SSH_UNITS.contains(&unit) {
            return Kind::System;
        }
        if self.0.0.pve.is_some() && PVE_UNITS.contains(&unit) {
            return Kind::Pve;
        }
        match self.0.0.units.unit_file(unit) {
            Some(path) => Kind::File(path),
            None => Kind::Missing,
        }
    }

    fn pve_running(&self) -> bool {
        self.0.0.pve.as_ref().is_some_and(|p| p.running())
    }

    fn shown(&self, unit: &str) -> Shown {
        let units = &self.0.0.units;
        let running = |on: bool| Shown {
            load: "loaded",
            active: if on { "active" } else { "failed" },
            sub: if on { "running" } else { "failed" },
            file_state: "enabled",
            path: Some(format!("/lib/systemd/system/{unit}")),
            state: ServiceState::default(),
        };
        match self.kind(unit) {
            Kind::System => running(true),
            Kind::Pve => running(self.pve_running()),
            Kind::Missing => Shown {
                load: "not-found",
                active: "inactive",
                sub: "dead",
                file_state: "",
                path: None,
                state: ServiceState::default(),
            },
            Kind::File(path) => {
                let state = units.state(unit);
                let (active, sub) = match state.active {
                    Active::Active => ("active", "running"),
                    Active::Inactive => ("inactive", "dead"),
                    Active::Failed => ("failed", "failed"),
                };
                Shown {
                    load: "loaded",
                    active,
                    sub,
                    file_state: if units.is_enabled(unit) {
                        "enabled"
                    } else {
                        "disabled"
                    },
                    path: Some(path),
                    state,
                }
            }
        }
    }

    async fn start(&self, unit: &str, cx: &mut Context) -> u32 {
        match self.kind(unit) {
            Kind::System => 0,
            Kind::Pve => match self.0.0.pve.as_ref() {
                Some(pve) if pve.start().await.is_ok() => 0,
                _ => job_failed(cx, unit).await,
            },
            Kind::Missing => {
                cx.err(format!("Failed to start {unit}: Unit {unit} not found.\n"))
                    .await;
                5
            }
            Kind::File(_) => match self.0.0.units.start(unit).await {
                Ok(()) => 0,
                Err(reason) => {
                    self.journal_note(unit, &format!("Failed to start: {reason}"));
                    job_failed(cx, unit).await
                }
            },
        }
    }

    async fn stop(&self, unit: &str, cx: &mut Context) -> u32 {
        match self.kind(unit) {
            Kind::System | Kind::Pve => {
                cx.err(format!(
                    "Failed to stop {unit}: the simulated VM keeps {unit} running while it runs; stop the VM instead\n"
                ))
                .await;
                1
            }
            Kind::Missing => {
                cx.err(format!("Failed to stop {unit}: Unit {unit} not loaded.\n"))
                    .await;
                5
            }
            Kind::File(_) => {
                self.0.0.units.stop(unit).await;
                0
            }
        }
    }

    /// Appends a line to the unit's journal (what systemd would log).
    fn journal_note(&self, unit: &str, line: &str) {
        use std::io::Write;
        let path = self.0.0.units.journal_file(unit);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "systemd[1]: {unit}: {line}");
        }
    }

    async fn status(&self, unit: &str, cx: &mut Context) -> u32 {
        let shown = self.shown(unit);
        if shown.load == "not-found" {
            cx.err(format!("Unit {unit} could not be found.\n")).await;
            return 4;
        }
        let dot = if shown.active == "active" {
            "●"
        } else {
            "○"
        };
        let description = shown
            .state
            .description
            .clone()
            .unwrap_or_else(|| unit.trim_end_matches(".service").to_string());
        let mut text = format!(
            "{dot} {unit} - {description}\n     Loaded: loaded ({}; {}; preset: enabled)\n",
            shown.path.as_deref().unwrap_or_default(),
            shown.file_state
        );
        let since = if shown.state.since_ms > 0 {
            format!(" since {}", date(shown.state.since_ms))
        } else {
            String::new()
        };
        text.push_str(&format!(
            "     Active: {} ({}){since}\n",
            shown.active, shown.sub
        ));
        if let Some(pid) = shown.state.pid {
            text.push_str(&format!(
                "   Main PID: {pid} ({})\n",
                unit.trim_end_matches(".service")
            ));
        }
        cx.out(text).await;
        if shown.active == "active" { 0 } else { 3 }
    }

    async fn show(&self, units: &[String], props: &[String], value_only: bool, cx: &mut Context) {
        let mut text = String::new();
        for (i, unit) in units.iter().enumerate() {
            if i > 0 {
                text.push('\n');
            }
            let s = self.shown(unit);
            let all = [
                ("Id", unit.clone()),
                (
                    "Description",
                    s.state.description.clone().unwrap_or_default(),
                ),
                ("LoadState", s.load.to_string()),
                ("ActiveState", s.active.to_string()),
                ("SubState", s.sub.to_string()),
                ("Result", s.state.result.to_string()),
                ("MainPID", s.state.pid.unwrap_or(0).to_string()),
                ("ExecMainStatus", s.state.exit_code.unwrap_or(0).to_string()),
                ("UnitFileState", s.file_state.to_string()),
                ("NRestarts", s.state.restarts.to_string()),
            ];
            for (name, value) in all {
                if !props.is_empty() && !props.iter().any(|p| p == name) {
                    continue;
                }
                if value_only {
                    text.push_str(&format!("{value}\n"));
                } else {
                    text.push_str(&format!("{name}={value}\n"));
                }
            }
        }
        cx.out(text).await;
    }
}

async fn job_failed(cx: &mut Context, unit: &str) -> u32 {
    cx.err(format!(
        "Job for {unit} failed because the control process exited with error code.\nSee \"systemctl status {unit}\" and \"journalctl -xeu {unit}\" for details.\n"
    ))
    .await;
    1
}

/// `Tue 2025-11-25 21:34:00 UTC`
fn date(ms: i64) -> String {
    let fmt = time::macros::format_description!(
        "[weekday repr:short] [year]-[month]-[day] [hour]:[minute]:[second] UTC"
    );
    time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_default()
}

impl crate::ssh::Program for Systemctl {
    fn run<'a>(&'a self, args: &'a [String], cx: &'a mut Context) -> BoxFuture<'a, u32> {
        Box::pin(async move {
            let mut words = Vec::new();
            let mut props = Vec::new();
            let (mut now, mut quiet, mut value_only) = (false, false, false);
            let mut iter = args.iter();
            while let Some(arg) = iter.next() {
                match arg.as_str() {
                    "--now" => now = true,
                    "-q" | "--quiet" => quiet = true,
                    "--value" => value_only = true,
                    "--no-pager" | "--no-block" | "--full" | "-l" | "--no-legend" => {}
                    "-p" | "--property" => props.extend(
                        iter.next()
                            .map(|p| p.split(',').map(String::from).collect::<Vec<_>>())
                            .unwrap_or_default(),
                    ),
                    other if other.starts_with("--property=") => {
                        props.extend(other["--property=".len()..].split(',').map(String::from))
                    }
                    other if other.starts_with('-') => {
                        cx.err(format!("systemctl: unrecognized option '{other}'\n"))
                            .await;
                        return 1;
                    }
                    other => words.push(other.to_string()),
                }
            }
            let Some((verb, names)) = words.split_first() else {
                cx.err("systemctl: the simulated VM lists no units; name a command\n")
                    .await;
                return 1;
            };
            if verb == "reboot" && names.is_empty() {
                let ctx = &self.0.0;
                return crate::guest::power::Reboot::now(&ctx.shared, ctx.boot.vmid, cx).await;
            }
            let units: Vec<String> = names.iter().map(|n| unit_name(n)).collect();
            let changes = matches!(
                verb.as_str(),
                "start" | "stop" | "restart" | "enable" | "disable" | "daemon-reload"
            );
            if changes && let Some(status) = need_root(cx, "systemctl").await {
                return status;
            }
            if units.is_empty() && !matches!(verb.as_str(), "daemon-reload") {
                cx.err(format!(
                    "Too few arguments.\n(systemctl {verb} needs a unit name)\n"
                ))
                .await;
                return 1;
            }
            let mut status = 0;
            match verb.as_str() {
                "daemon-reload" => {}
                "start" => {
                    for unit in &units {
                        status = status.max(self.start(unit, cx).await);
                    }
                }
                "stop" => {
                    for unit in &units {
                        status = status.max(self.stop(unit, cx).await);
                    }
                }
                "restart" => {
                    for unit in &units {
                        let stopped = self.stop(unit, cx).await;
                        status = status.max(if stopped == 0 {
                            self.start(unit, cx).await
                        } else {
                            stopped
                        });
                    }
                }
                "enable" => {
                    for unit in &units {
                        match self.kind(unit) {
                            Kind::System | Kind::Pve => {}
                            _ => match self.0.0.units.enable(unit) {
                                Ok(message) => {
                                    if let Some(m) = message {
                                        cx.err(m).await;
                                    }
                                }
                                Err(e) => {
                                    cx.err(format!("{e}\n")).await;
                                    status = 1;
                                    continue;
                                }
                            },
                        }
                        if now {
                            status = status.max(self.start(unit, cx).await);
                        }
                    }
                }
                "disable" => {
                    for unit in &units {
                        if let Kind::File(_) = self.kind(unit)
                            && let Some(m) = self.0.0.units.disable(unit)
                        {
                            cx.err(m).await;
                        }
                        if now {
                            status = status.max(self.stop(unit, cx).await);
                        }
                    }
                }
                "is-active" => {
                    let mut any = false;
                    let mut text = String::new();
                    for unit in &units {
                        let s = self.shown(unit);
                        any |= s.active == "active";
                        text.push_str(s.active);
                        text.push('\n');
                    }
                    if !quiet {
                        cx.out(text).await;
                    }
                    status = if any { 0 } else { 3 };
                }
                "is-enabled" => {
                    let mut text = String::new();
                    for unit in &units {
                        let s = self.shown(unit);
                        if s.load == "not-found" {
                            cx.err(format!(
                                "Failed to get unit file state for {unit}: No such file or directory\n"
                            ))
                            .await;
                            status = 1;
                            continue;
                        }
                        if s.file_state != "enabled" {
                            status = 1;
                        }
                        text.push_str(s.file_state);
                        text.push('\n');
                    }
                    if !quiet {
                        cx.out(text).await;
                    }
                }
                "status" => {
                    for unit in &units {
                        status = status.max(self.status(unit, cx).await);
                    }
                }
                "show" => self.show(&units, &props, value_only, cx).await,
                other => {
                    cx.err(format!(
                        "Unknown command verb '{other}' (the simulated systemctl knows start, stop, restart, enable, disable, is-active, is-enabled, status, show, daemon-reload).\n"
                    ))
                    .await;
                    status = 1;
                }
            }
            status
        })
    }
}

pub(crate) struct Journalctl(pub Shim);

impl crate::ssh::Program for Journalctl {
    fn run<'a>(&'a self, args: &'a [String], cx: &'a mut Context) -> BoxFuture<'a, u32> {
        Box::pin(async move {
            let mut unit = None;
            let mut lines: Option<usize> = None;
            let mut iter = args.iter();
            while let Some(arg) = iter.next() {
                match arg.as_str() {
                    "-u" | "--unit" => unit = iter.next().map(|u| unit_name(u)),
                    "-n" | "--lines" => lines = iter.next().and_then(|n| n.parse().ok()),
                    "--no-pager" | "-b" | "--boot" | "-x" | "-e" | "-xe" | "-xeu" => {
                        if arg == "-xeu" {
                            unit = iter.next().map(|u| unit_name(u));
                        }
                    }
                    other if other.starts_with("--unit=") => {
                        unit = Some(unit_name(&other["--unit=".len()..]));
                    }
                    other if other.starts_with("--lines=") => {
                        lines = other["--lines=".len()..].parse().ok();
                    }
                    other => {
                        cx.err(format!(
                            "journalctl: option {other} is not simulated (use -u UNIT [-n N])\n"
                        ))
                        .await;
                        return 1;
                    }
                }
            }
            let Some(unit) = unit else {
                cx.err("journalctl: the simulated journal is per unit; use -u UNIT\n")
                    .await;
                return 1;
            };
            let text =
                std::fs::read_to_string(self.0.0.units.journal_file(&unit)).unwrap_or_default();
            if text.is_empty() {
                cx.out("-- No entries --\n").await;
                return 0;
            }
            let all: Vec<&str> = text.lines().collect();
            let skip = lines.map_or(0, |n| all.len().saturating_sub(n));
            let out: String = all[skip..].iter().map(|l| format!("{l}\n")).collect();
            cx.out(out).await;
            0
        })
    }
}
