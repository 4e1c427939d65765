//! systemd services of a simulated VM: unit files in its root, started as
//! real processes ([`super::process`]).
//!
//! A unit is `/etc/systemd/system/<name>.service` (or under
//! `/usr/lib/systemd/system`, `/lib/systemd/system`) in the VM's root,
//! read at each start (so `daemon-reload` has nothing to do), followed by
//! its drop-ins (`<unit>.d/*.conf`, by file name). Understood:
//!
//! - `[Unit] Description=`;
//! - `[Service] ExecStart=` (one command, an empty one resets it; `-`,
//!   `+`, `!` prefixes are ignored; no `$VAR` expansion), `WorkingDirectory=` (default `/`),
//!   `Environment=` (repeatable, quoted assignments), `EnvironmentFile=`
//!   (`-` for optional), `Restart=` (`no`, `on-failure`, `on-abnormal`,
//!   `always`), `RestartSec=` and `TimeoutStopSec=` (`5`, `500ms`, `2s`,
//!   `1min`; the stop timeout is capped at 10 s);
//! - other keys and sections are ignored. Services run as root.
//!
//! `enable` writes `/etc/systemd/system/multi-user.target.wants/<unit>`
//! (a plain file: the simulated VM follows no symlinks); enabled units
//! start when the VM boots. Output goes to `<VM workdir>/journal/<unit>.log`,
//! which `journalctl -u` prints.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::process;
use crate::runtime::Clock;
use crate::ssh::VmRoot;

/// Where unit files are looked up, in order.
pub const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// Where `enable` records a unit.
pub const WANTS_DIR: &str = "/etc/systemd/system/multi-user.target.wants";

/// The longest stop timeout honoured.
const MAX_STOP: Duration = Duration::from_secs(10);

/// `foo` → `foo.service`.
pub fn unit_name(name: &str) -> String {
    if name.contains('.') {
        name.to_string()
    } else {
        format!("{name}.service")
    }
}

/// When a service is started again after it exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    No,
    OnFailure,
    OnAbnormal,
    Always,
}

/// A parsed `.service` file.
#[derive(Clone, Debug, PartialEq)]
pub struct UnitSpec {
    pub description: Option<String>,
    pub exec: Vec<String>,
    pub working_directory: String,
    pub environment: Vec<(String, String)>,
    /// Guest paths; `true` when the file may be missing (`-` prefix).
    pub environment_files: Vec<(String, bool)>,
    pub restart: Restart,
    pub restart_sec: Duration,
    pub timeout_stop: Duration,
}

/// Splits a systemd command line or assignment list: words separated by
/// blanks, with double or single quotes and backslash escapes.
pub fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '"' | '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some('\\') if c == '"' => {
                            if let Some(e) = chars.next() {
                                word.push(e);
                            }
                        }
                        Some(other) => word.push(other),
                        None => return Err(format!("unterminated quote in {text:?}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(e) = chars.next() {
                    word.push(e);
                }
            }
            other => {
                in_word = true;
                word.push(other);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// `5`, `5s`, `500ms`, `1min`, `1min 30s`, `infinity`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text == "infinity" {
        return Some(Duration::from_secs(86_400));
    }
    let mut total = 0.0;
    for part in text.split_whitespace() {
        let split = part
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(part.len());
        let (number, unit) = part.split_at(split);
        let n: f64 = number.parse().ok()?;
        total += n * match unit {
            "" | "s" | "sec" => 1.0,
            "ms" | "msec" => 0.001,
            "m" | "min" => 60.0,
            "h" | "hr" => 3600.0,
            _ => return None,
        };
    }
    Duration::try_from_secs_f64(total).ok()
}

/// Parses a unit file's text.
pub fn parse_unit(text: &str) -> Result<UnitSpec, String> {
    let mut spec = UnitSpec {
        description: None,
        exec: Vec::new(),
        working_directory: "/".into(),
        environment: Vec::new(),
        environment_files: Vec::new(),
        restart: Restart::No,
        restart_sec: Duration::from_millis(100),
        timeout_stop: Duration::from_secs(5),
    };
    let mut section = String::new();
    let mut pending = String::new();
    for raw in text.lines() {
        // A trailing backslash continues the line.
        if let Some(part) = raw.strip_suffix('\\') {
            pending.push_str(part);
            pending.push(' ');
            continue;
        }
        pending.push_str(raw);
        let line = std::mem::take(&mut pending);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {line:?} is not KEY=VALUE"));
        };
        let (key, value) = (key.trim(), value.trim());
        match (section.as_str(), key) {
            ("Unit", "Description") => spec.description = Some(value.to_string()),
            ("Service", "ExecStart") => {
                let value = value.trim_start_matches(['-', '+', '!', '@']);
                spec.exec = split_words(value)?;
            }
            ("Service", "WorkingDirectory") => {
                spec.working_directory = value.trim_start_matches('-').to_string();
            }
            ("Service", "Environment") => {
                for assignment in split_words(value)? {
                    if let Some((k, v)) = assignment.split_once('=') {
                        spec.environment.push((k.to_string(), v.to_string()));
                    }
                }
            }
            ("Service", "EnvironmentFile") => {
                let optional = value.starts_with('-');
                spec.environment_files
                    .push((value.trim_start_matches('-').to_string(), optional));
            }
            ("Service", "Restart") => {
                spec.restart = match value {
                    "no" => Restart::No,
                    "on-failure" => Restart::OnFailure,
                    "on-abnormal" => Restart::OnAbnormal,
                    "always" => Restart::Always,
                    other => return Err(format!("Restart={other} is not simulated")),
                }
            }
            ("Service", "RestartSec") => {
                spec.restart_sec =
                    parse_duration(value).ok_or_else(|| format!("bad RestartSec={value}"))?;
            }
            ("Service", "TimeoutStopSec") => {
                spec.timeout_stop = parse_duration(value)
                    .ok_or_else(|| format!("bad TimeoutStopSec={value}"))?
                    .min(MAX_STOP);
            }
            _ => {}
        }
    }
    if spec.exec.is_empty() {
        return Err("Service has no ExecStart= setting, which is required".into());
    }
    Ok(spec)
}

/// Reads `KEY=VALUE` lines (comments, blank lines and quotes allowed).
fn parse_env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

/// A service's state as `systemctl show` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Active {
    Inactive,
    Active,
    Failed,
}

impl Active {
    pub fn as_str(self) -> &'static str {
        match self {
            Active::Inactive => "inactive",
            Active::Active => "active",
            Active::Failed => "failed",
        }
    }
}

/// What `systemctl status` and `show` report about a service.
#[derive(Clone, Debug)]
pub struct ServiceState {
    pub active: Active,
    pub pid: Option<u32>,
    /// `success`, `exit-code`, `signal`, `resources`.
    pub result: &'static str,
    pub exit_code: Option<u32>,
    pub since_ms: i64,
    pub restarts: u32,
    pub description: Option<String>,
}

impl Default for ServiceState {
    fn default() -> Self {
        ServiceState {
            active: Active::Inactive,
            pid: None,
            result: "success",
            exit_code: None,
            since_ms: 0,
            restarts: 0,
            description: None,
        }
    }
}

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Service {
    state: Mutex<ServiceState>,
    running: tokio::sync::Mutex<Option<Running>>,
}

impl Service {
    fn set(&self, f: impl FnOnce(&mut ServiceState)) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn get(&self) -> ServiceState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The services of one VM.
pub struct Units {
    root: VmRoot,
    journal: PathBuf,
    services: Mutex<BTreeMap<String, Arc<Service>>>,
}

impl Units {
    pub fn new(root: VmRoot, journal: PathBuf) -> Self {
        Units {
            root,
            journal,
            services: Mutex::default(),
        }
    }

    fn service(&self, unit: &str) -> Arc<Service> {
        self.services
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(unit.to_string())
            .or_default()
            .clone()
    }

    /// The guest path of `unit`'s file, if there is one.
    pub fn unit_file(&self, unit: &str) -> Option<String> {
        UNIT_DIRS.iter().map(|d| format!("{d}/{unit}")).find(|p| {
            self.root
                .resolve("/", p)
                .is_ok_and(|path| path.host.is_file())
        })
    }

    /// `unit`'s drop-ins (`<dir>/<unit>.d/*.conf`) in the order systemd
    /// applies them: by file name, a name in `/etc` hiding the same name
    /// further down.
    fn drop_ins(&self, unit: &str) -> Vec<(String, PathBuf)> {
        let mut found = BTreeMap::new();
        for dir in UNIT_DIRS.iter().rev() {
            let Ok(path) = self.root.resolve("/", &format!("{dir}/{unit}.d")) else {
                continue;
            };
            let Ok(entries) = std::fs::read_dir(&path.host) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".conf") && entry.path().is_file() {
                    found.insert(name, entry.path());
                }
            }
        }
        found.into_iter().collect()
    }

    fn wants_path(&self, unit: &str) -> Option<PathBuf> {
        self.root
            .resolve("/", &format!("{WANTS_DIR}/{unit}"))
            .ok()
            .map(|p| p.host)
    }

    pub fn is_enabled(&self, unit: &str) -> bool {
        self.wants_path(unit).is_some_and(|p| p.is_file())
    }

    /// Marks `unit` to start at boot; the message `systemctl` prints.
    pub fn enable(&self, unit: &str) -> Result<Option<String>, String> {
        let file = self
            .unit_file(unit)
            .ok_or_else(|| format!("Failed to enable unit: Unit file {unit} does not exist."))?;
        let wants = self
            .wants_path(unit)
            .ok_or("cannot resolve the wants directory")?;
        if wants.is_file() {
            return Ok(None);
        }
        if let Some(dir) = wants.parent() {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        std::fs::write(&wants, format!("{file}\n")).map_err(|e| e.to_string())?;
        Ok(Some(format!(
            "Created symlink {WANTS_DIR}/{unit} → {file}.\n"
        )))
    }

    pub fn disable(&self, unit: &str) -> Option<String> {
        let wants = self.wants_path(unit)?;
        std::fs::remove_file(&wants)
            .ok()
            .map(|()| format!("Removed \"{WANTS_DIR}/{unit}\".\n"))
    }

    pub fn state(&self, unit: &str) -> ServiceState {
        self.services
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(unit)
            .map(|s| s.get())
            .unwrap_or_default()
    }

    /// Reads and checks `unit`'s file and builds its process.
    fn prepare(&self, unit: &str) -> Result<(UnitSpec, process::Launch), String> {
        let file = self
            .unit_file(unit)
            .ok_or_else(|| format!("Unit {unit} not found."))?;
        let path = self.root.resolve("/", &file).map_err(|e| e.to_string())?;
        let mut text = std::fs::read_to_string(&path.host).map_err(|e| format!("{file}: {e}"))?;
        for (name, host) in self.drop_ins(unit) {
            let more = std::fs::read_to_string(&host).map_err(|e| format!("{name}: {e}"))?;
            text.push('\n');
            text.push_str(&more);
        }
        let spec = parse_unit(&text).map_err(|e| format!("{file}: {e}"))?;
        // As systemd: what the files set overrides `Environment=`.
        let mut env = spec.environment.clone();
        for (file, optional) in &spec.environment_files {
            let read = self
                .root
                .resolve("/", file)
                .ok()
                .and_then(|p| std::fs::read_to_string(p.host).ok());
            match read {
                Some(text) => env.extend(parse_env_file(&text)),
                None if *optional => {}
                None => return Err(format!("Failed to load environment files: {file}")),
            }
        }
        let exe = process::find_executable(&self.root, "/", &spec.exec[0])?;
        let launch = process::launch(
            &self.root,
            "root",
            &spec.working_directory,
            exe,
            &spec.exec[1..],
            &env,
        )?;
        Ok((spec, launch))
    }

    /// Starts `unit` unless it runs. The error is what `systemctl` prints.
    pub async fn start(&self, unit: &str) -> Result<(), String> {
        let service = self.service(unit);
        let mut running = service.running.lock().await;
        if running.as_ref().is_some_and(|r| !r.task.is_finished()) {
            return Ok(());
        }
        let (spec, launch) = match self.prepare(unit) {
            Ok(ready) => ready,
            Err(e) if e.starts_with("Unit ") => return Err(e),
            Err(e) => {
                service.set(|s| {
                    s.active = Active::Failed;
                    s.result = "resources";
                    s.since_ms = Clock::now_ms();
                });
                return Err(e);
            }
        };
        let journal = self.journal.join(format!("{unit}.log"));
        let child = spawn_logged(&launch, &journal).await.inspect_err(|_| {
            service.set(|s| {
                s.active = Active::Failed;
                s.result = "resources";
                s.since_ms = Clock::now_ms();
            })
        })?;
        service.set(|s| {
            *s = ServiceState {
                active: Active::Active,
                pid: child.id(),
                since_ms: Clock::now_ms(),
                description: spec.description.clone(),
                ..ServiceState::default()
            }
        });
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(supervise(
            service.clone(),
            child,
            spec,
            launch,
            journal,
            stop_rx,
        ));
        *running = Some(Running { stop, task });
        Ok(())
    }

    /// Stops `unit` (SIGTERM, SIGKILL after its stop timeout) and waits.
    pub async fn stop(&self, unit: &str) {
        let service = self.service(unit);
        let mut running = service.running.lock().await;
        if let Some(r) = running.take() {
            let _ = r.stop.send(());
            let _ = r.task.await;
        }
    }

    /// Starts every enabled unit (at boot). Failures are kept in each
    /// unit's state.
    pub async fn start_enabled(&self) {
        let Ok(dir) = self.root.resolve("/", WANTS_DIR) else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(&dir.host) else {
            return;
        };
        let mut units: Vec<String> = entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".service"))
            .collect();
        units.sort();
        for unit in units {
            if let Err(error) = self.start(&unit).await {
                tracing::debug!(%unit, %error, "enabled unit failed to start at boot");
            }
        }
    }

    /// Stops every service (VM stop).
    pub async fn stop_all(&self) {
        let names: Vec<String> = self
            .services
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        for name in names {
            self.stop(&name).await;
        }
    }

    /// Where `unit`'s output goes, on the host.
    pub fn journal_file(&self, unit: &str) -> PathBuf {
        self.journal.join(format!("{unit}.log"))
    }

    /// `{unit: {active, pid, result}}` for `/_sim/`.
    pub fn view(&self) -> Value {
        let services = self.services.lock().unwrap_or_else(|e| e.into_inner());
        Value::Object(
            services
                .iter()
                .map(|(name, s)| {
                    let st = s.get();
                    (
                        name.clone(),
                        json!({"active": st.active.as_str(), "pid": st.pid, "result": st.result,
                               "exit_code": st.exit_code, "restarts": st.restarts}),
                    )
                })
                .collect(),
        )
    }
}

async fn spawn_logged(
    launch: &process::Launch,
    journal: &std::path::Path,
) -> Result<tokio::process::Child, String> {
    if let Some(dir) = journal.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(journal)
        .map_err(|e| format!("cannot open the journal: {e}"))?;
    let out = log.try_clone().map_err(|e| e.to_string())?;
    process::spawn(
        launch,
        std::process::Stdio::null,
        || {
            out.try_clone()
                .map(Into::into)
                .unwrap_or_else(|_| std::process::Stdio::null())
        },
        || {
            log.try_clone()
                .map(Into::into)
                .unwrap_or_else(|_| std::process::Stdio::null())
        },
    )
    .await
    .map_err(|e| format!("{}: {e}", launch.guest_exe))
}

/// Watches one service: restarts it as its policy says, stops it when
/// asked.
async fn supervise(
    service: Arc<Service>,
    mut child: tokio::process::Child,
    spec: UnitSpec,
    launch: process::Launch,
    journal: PathBuf,
    mut stop: oneshot::Receiver<()>,
) {
    let mut guard = process::GroupGuard(child.id());
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status.ok();
                let code = status.map(process::exit_code);
                let clean = status.is_some_and(|s| s.success());
                let by_signal = status.is_some_and(|s| s.code().is_none());
                // Leftovers of its group go now, while the group id is theirs.
                process::signal_group(guard.0.unwrap_or(0), nix::sys::signal::Signal::SIGKILL);
                guard.0 = None;
                let again = match spec.restart {
                    Restart::No => false,
                    Restart::Always => true,
                    Restart::OnFailure => !clean,
                    Restart::OnAbnormal => by_signal,
                };
                service.set(|s| {
                    s.pid = None;
                    s.exit_code = code;
                    s.result = if clean { "success" } else if by_signal { "signal" } else { "exit-code" };
                    s.active = if clean { Active::Inactive } else { Active::Failed };
                    s.since_ms = Clock::now_ms();
                });
                if !again {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(spec.restart_sec) => {}
                    _ = &mut stop => {
                        service.set(|s| s.active = Active::Inactive);
                        return;
                    }
                }
                match spawn_logged(&launch, &journal).await {
                    Ok(next) => {
                        child = next;
                        guard = process::GroupGuard(child.id());
                        service.set(|s| {
                            s.active = Active::Active;
                            s.pid = child.id();
                            s.restarts += 1;
                            s.since_ms = Clock::now_ms();
                        });
                    }
                    Err(_) => {
                        service.set(|s| { s.active = Active::Failed; s.result = "resources"; });
                        return;
                    }
                }
            }
            _ = &mut stop => {
                let status = process::terminate(&mut child, spec.timeout_stop).await;
                guard.0 = None;
                service.set(|s| {
                    s.pid = None;
                    s.exit_code = status.map(process::exit_code);
                    s.active = Active::Inactive;
                    s.result = "success";
                    s.since_ms = Clock::now_ms();
                });
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_exec_start_in_a_drop_in_replaces_the_command() {
        let unit = "[Service]\nExecStart=/usr/bin/homestak serve\nRestart=on-failure\n";
        let drop_in =
            "[Service]\nExecStart=\nExecStart=/usr/local/bin/homestak serve\nRestart=always\n";
        let spec = parse_unit(&format!("{unit}\n{drop_in}")).unwrap();
        assert_eq!(spec.exec, ["/usr/local/bin/homestak", "serve"]);
        assert_eq!(spec.restart, Restart::Always);
        let reset = parse_unit(&format!("{unit}\n[Service]\nExecStart=\n"));
        assert!(
            reset.is_err(),
            "a reset with nothing after it leaves no command"
        );
    }

    #[test]
    fn unit_files_parse_like_systemd_reads_them() {
        let text = "# homestak child\n[Unit]\nDescription=homestak reconciler\n\n[Service]\n\
            ExecStart=/usr/local/bin/homestak serve \\\n  --state-dir \"/var/lib/homestak\" --listen 127.1.2.3:8443\n\
            WorkingDirectory=/var/lib/homestak\n\
            Environment=\"RUST_LOG=info\" HOMESTAK_STATE_DIR=/var/lib/homestak\n\
            EnvironmentFile=-/etc/default/homestak\n\
            Restart=on-failure\nRestartSec=2s\nTimeoutStopSec=1min\nUser=root\n\n[Install]\nWantedBy=multi-user.target\n";
        let spec = parse_unit(text).unwrap();
        assert_eq!(spec.description.as_deref(), Some("homestak reconciler"));
        assert_eq!(
            spec.exec,
            [
                "/usr/local/bin/homestak",
                "serve",
                "--state-dir",
                "/var/lib/homestak",
                "--listen",
                "127.1.2.3:8443"
            ]
        );
        assert_eq!(spec.working_directory, "/var/lib/homestak");
        assert_eq!(
            spec.environment,
            [
                ("RUST_LOG".to_string(), "info".to_string()),
                (
                    "HOMESTAK_STATE_DIR".to_string(),
                    "/var/lib/homestak".to_string()
                )
            ]
        );
        assert_eq!(
            spec.environment_files,
            [("/etc/default/homestak".to_string(), true)]
        );
        assert_eq!(spec.restart, Restart::OnFailure);
        assert_eq!(spec.restart_sec, Duration::from_secs(2));
        assert_eq!(spec.timeout_stop, MAX_STOP);
        assert!(
            parse_unit("[Service]\nType=simple\n")
                .unwrap_err()
                .contains("ExecStart")
        );
        assert!(parse_unit("[Service]\nExecStart=\"x\n").is_err());
        assert!(parse_unit("[Service]\nExecStart=x\nRestart=on-watchdog\n").is_err());
    }

    #[test]
    fn durations_and_env_files() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1min 30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("3 fortnights"), None);
        assert_eq!(
            parse_env_file("# c\nA=1\nB=\"two words\"\n\nC='x'\nbad\n"),
            [
                ("A".to_string(), "1".to_string()),
                ("B".to_string(), "two words".to_string()),
                ("C".to_string(), "x".to_string())
            ]
        );
        assert_eq!(unit_name("homestak"), "homestak.service");
        assert_eq!(unit_name("ssh.socket"), "ssh.socket");
    }
}
