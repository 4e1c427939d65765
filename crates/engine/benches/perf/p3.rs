//! P3: the daemon. `homestak serve` (the binary) watches a git site-config
//! whose manifest converged; a commit adds VMs; the figures are the time
//! from the commit to the daemon's `reconcile_started` event for it and to
//! its `reconcile_finished` (converged), both from the events' own
//! timestamps (milliseconds), so polling the event log adds nothing.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use homestak_api::v1::EventsResponse;
use homestak_api::{Event, Kind};
use homestak_base::time::Timestamp;

use crate::serve::Serve;
use crate::support::write;
use crate::table::{Table, secs};
use crate::world::{self, MANIFEST};

pub struct P3 {
    pub scale: f64,
    pub debounce: Duration,
    pub before: usize,
    pub added: usize,
    pub to_start: Duration,
    pub to_converged: Duration,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@bench.invalid")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@bench.invalid")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

struct Daemon {
    client: reqwest::Client,
    url: String,
    token: String,
}

impl Daemon {
    async fn events(&self, since: u64) -> EventsResponse {
        self.client
            .get(format!("{}/v1/events?since={since}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("GET /v1/events")
            .json()
            .await
            .expect("events JSON")
    }

    /// Events after `since` until `done` says the wanted one came (hang
    /// guard `within`).
    async fn wait_for(
        &self,
        since: u64,
        within: Duration,
        done: impl Fn(&[Event]) -> bool,
    ) -> Vec<Event> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        let mut next = since;
        loop {
            let got = self.events(next).await;
            next = got.next.max(next);
            seen.extend(got.events);
            if done(&seen) {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not get there within {within:?}: {:#?}",
                seen.iter()
                    .map(|e| format!("{:?} {}", e.kind, e.message))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn finished(events: &[Event]) -> bool {
    events
        .iter()
        .any(|e| e.kind == Kind::ReconcileFinished && e.manifest.as_deref() == Some(MANIFEST))
}

pub async fn measure(
    bin: &Path,
    scale: f64,
    debounce: Duration,
    before: usize,
    added: usize,
) -> P3 {
    crate::progress("p3: homestak serve, commit to converged");
    let w = world::fresh(scale).await;
    let site = &w.site_root;
    w.write_manifest(before);
    write(
        &site.join("controller.yaml"),
        &format!("host: pve\nmanifests:\n  {MANIFEST}: {{}}\n"),
    );
    git(site, &["init", "-q", "-b", "main"]);
    git(site, &["add", "-A"]);
    git(site, &["commit", "-q", "-m", "bench"]);
    let state = w.dir.path().join("serve-state");
    let debounce_flag = format!("{}ms", debounce.as_millis());
    let mut serve = Serve::spawn(
        bin,
        site,
        &state,
        &["--resync", "1h", "--debounce", &debounce_flag],
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let info = loop {
        assert!(
            Instant::now() < deadline,
            "homestak serve never became ready"
        );
        if let Some(info) = serve.ready_info() {
            break info;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let fingerprint: homestak_tls::Fingerprint = info["fingerprint"]
        .as_str()
        .expect("fingerprint")
        .parse()
        .expect("fingerprint parses");
    let d = Daemon {
        client: reqwest::Client::builder()
            .use_preconfigured_tls(homestak_tls::pinned_client_config(fingerprint))
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client"),
        url: info["url"].as_str().expect("url").to_string(),
        token: std::fs::read_to_string(state.join("api-token"))
            .expect("the daemon's api-token")
            .trim()
            .to_string(),
    };
    // The first commit converges first.
    let first = d.wait_for(0, Duration::from_secs(300), finished).await;
    let since = first.iter().map(|e| e.seq).max().unwrap_or(0);

    w.write_manifest(before + added);
    git(site, &["commit", "-q", "-am", "add VMs"]);
    let committed = Timestamp::now();
    let head = git(site, &["rev-parse", "HEAD"]);
    let events = d
        .wait_for(since, Duration::from_secs(300), |seen| {
            seen.iter()
                .skip_while(|e| e.kind != Kind::ReconcileStarted)
                .any(|e| e.kind == Kind::ReconcileFinished)
        })
        .await;
    let started = events
        .iter()
        .find(|e| e.kind == Kind::ReconcileStarted)
        .expect("reconcile_started");
    assert!(
        started.message.contains(&head[..7]),
        "the run after the commit is not for {head}: {}",
        started.message
    );
    let done = events
        .iter()
        .skip_while(|e| e.kind != Kind::ReconcileStarted)
        .find(|e| e.kind == Kind::ReconcileFinished)
        .expect("reconcile_finished");
    assert!(
        done.message.starts_with("converged"),
        "the run after the commit did not converge: {}",
        done.message
    );
    w.shutdown().await;
    P3 {
        scale,
        debounce,
        before,
        added,
        to_start: started.at.since(committed),
        to_converged: done.at.since(committed),
    }
}

pub fn rows(p: &P3, t: &mut Table) {
    let row = "P3";
    t.add(row, "commit -> reconcile start [p3]", secs(p.to_start));
    t.add(row, "commit -> converged [p3]", secs(p.to_converged));
    t.note(
        "p3",
        format!(
            "P3: `homestak serve` watching a git site-config (debounce {} ms, time scale {}); \
             a commit adds {} VMs to {} converged; times from the end of `git commit` to the \
             daemon's reconcile_started / reconcile_finished events (their own timestamps, ms)",
            p.debounce.as_millis(),
            p.scale,
            p.added,
            p.before
        ),
    );
}
