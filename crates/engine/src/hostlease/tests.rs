//! The lease over a PVE node whose config behaves as PVE's (the
//! simulator's [`homestak_sim::nodeconfig`]: comment lines, SHA-1 digest,
//! no digest for an empty file), with hooks to fail reads and to hold
//! writes back until two racers have both read.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use homestak_pve::{BoxFuture, NodeConfig, Target};
use homestak_sim::nodeconfig;

use super::*;

/// One PVE node's config file.
#[derive(Default)]
struct Node {
    raw: Mutex<String>,
    /// Digests sent with each PUT, in order.
    puts: Mutex<Vec<Option<String>>>,
    /// Reads that fail with a 500 before any succeeds.
    failing_reads: AtomicU32,
    /// The first two PUTs wait here for each other.
    gate: Option<tokio::sync::Barrier>,
    gated: AtomicU32,
    /// PUTs done, but answered 596 (a proxy that timed out).
    lose_answers: std::sync::atomic::AtomicBool,
}

fn api_error(status: u16, message: &str) -> pve::Error {
    pve::Error::Api {
        target: Box::new(Target {
            host: "pve.test:8006".into(),
            method: reqwest::Method::PUT,
            path: "/nodes/pve/config".into(),
            vmid: None,
        }),
        status,
        message: message.into(),
        errors: Default::default(),
    }
}

impl Node {
    fn with_notes(notes: &str) -> Arc<Node> {
        let node = Node::default();
        *node.raw.lock().unwrap() = nodeconfig::render(&nodeconfig::NodeConfig {
            description: Some(notes.into()),
            options: Default::default(),
        });
        Arc::new(node)
    }

    fn notes(&self) -> String {
        nodeconfig::parse(&self.raw.lock().unwrap())
            .description
            .unwrap_or_default()
    }

    fn set_notes(&self, notes: &str) {
        *self.raw.lock().unwrap() = nodeconfig::render(&nodeconfig::NodeConfig {
            description: Some(notes.into()),
            options: Default::default(),
        });
    }

    fn record(&self) -> Option<Record> {
        block::Notes::parse(&self.notes()).unwrap().record
    }
}

impl Api for Node {
    fn node_config<'a>(&'a self, _node: &'a PveNode) -> BoxFuture<'a, pve::Result<NodeConfig>> {
        Box::pin(async move {
            if self
                .failing_reads
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(api_error(500, "got timeout"));
            }
            let json = nodeconfig::to_json(&self.raw.lock().unwrap(), None);
            Ok(serde_json::from_value(json).unwrap())
        })
    }

    fn node_config_put<'a>(
        &'a self,
        _node: &'a PveNode,
        update: &'a NodeConfigUpdate,
    ) -> BoxFuture<'a, pve::Result<()>> {
        Box::pin(async move {
            if let Some(gate) = &self.gate
                && self.gated.fetch_add(1, Ordering::SeqCst) < 2
            {
                gate.wait().await;
            }
            self.puts.lock().unwrap().push(update.digest.clone());
            let mut raw = self.raw.lock().unwrap();
            if let Some(digest) = &update.digest
                && !raw.is_empty()
                && *digest != nodeconfig::digest(&raw)
            {
                return Err(api_error(500, nodeconfig::MODIFIED));
            }
            let mut config = nodeconfig::parse(&raw);
            if let Some(text) = &update.description {
                config.description = Some(text.clone());
            }
            *raw = nodeconfig::render(&config);
            if self.lose_answers.load(Ordering::SeqCst) {
                return Err(api_error(596, "Connection timed out"));
            }
            Ok(())
        })
    }
}

fn pn() -> PveNode {
    PveNode::new("pve").unwrap()
}

fn policy(command: &str) -> Policy {
    Policy {
        command: command.into(),
        ..Policy::default()
    }
}

async fn take(node: &Arc<Node>, command: &str, wait: Wait) -> Result<HostLease, Error> {
    HostLease::acquire(
        node.clone(),
        "father",
        pn(),
        &policy(command),
        Path::new(&format!("/state/{command}")),
        wait,
        &|_| {},
    )
    .await
}

/// A lease record of a holder on another machine.
fn elsewhere(expires: Timestamp) -> Record {
    Record {
        state: State::Held,
        holder: Holder {
            command: Some("serve".into()),
            host: "build-02.example".into(),
            pid: 777,
            state_dir: Some("/var/lib/homestak".into()),
            version: Some("0.0.9".into()),
            nonce: "feedface".into(),
            machine: Some("another-machine".into()),
            boot: Some("another-boot".into()),
            pid_start: Some(1),
        },
        acquired: Timestamp::now(),
        renewed: Timestamp::now(),
        expires,
    }
}

/// The notes with `record` as the block after `before`.
fn notes_with(before: &str, record: &Record) -> String {
    block::Notes::parse(before).unwrap().with(record)
}

const USER_NOTES: &str = "# Rack 2\n\nDo not reboot: the NAS mounts from here.\n";

#[tokio::test]
async fn a_free_host_is_taken_and_given_back_and_the_users_notes_stay() {
    let node = Node::with_notes(USER_NOTES);
    let lease = take(&node, "reconcile", Wait::No).await.unwrap();
    let held = node.record().unwrap();
    assert_eq!(held.state, State::Held);
    assert_eq!(&held.holder, lease.holder());
    assert_eq!(held.holder.state_dir.as_deref(), Some("/state/reconcile"));
    assert_eq!(held.holder.pid, std::process::id());
    assert!(held.expires > Timestamp::now());
    assert!(node.notes().starts_with(USER_NOTES), "{}", node.notes());
    // The write was conditional on the digest.
    assert!(node.puts.lock().unwrap().iter().all(Option::is_some));

    lease.release().await.unwrap();
    let parsed = block::Notes::parse(&node.notes()).unwrap();
    assert_eq!(parsed.before, USER_NOTES);
    assert_eq!(parsed.after, "");
    let free = parsed.record.unwrap();
    assert_eq!(free.state, State::Free);
    assert_eq!(free.holder.nonce, held.holder.nonce, "who held it last");
    // Free: the next one takes it at once.
    take(&node, "serve", Wait::No)
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_held_lease_refuses_at_once_with_no_wait_and_names_the_holder() {
    let node = Node::with_notes("");
    let other = elsewhere(Timestamp::now().plus(Duration::from_secs(60)));
    node.set_notes(&notes_with(USER_NOTES, &other));
    let before = node.notes();
    let err = take(&node, "reconcile", Wait::No).await.unwrap_err();
    let text = err.to_string();
    for part in [
        "host father",
        "`serve` (pid 777 on build-02.example, state dir /var/lib/homestak, homestak 0.0.9)",
        &other.expires.to_string(),
        "--lease-timeout",
    ] {
        assert!(text.contains(part), "{part:?} missing in {text}");
    }
    assert!(matches!(err, Error::Held { waited: None, .. }));
    assert_eq!(node.notes(), before, "a refused taker writes nothing");
}

#[tokio::test]
async fn a_lapsed_lease_is_taken_over() {
    let node = Node::with_notes("");
    let lapsed = elsewhere(Timestamp::now().plus(Duration::from_secs(0)));
    node.set_notes(&notes_with(USER_NOTES, &lapsed));
    let lease = take(&node, "reconcile", Wait::No).await.unwrap();
    assert_eq!(node.record().unwrap().holder.nonce, lease.holder().nonce);
    assert!(node.notes().starts_with(USER_NOTES));
}

/// A record as a homestak on this machine with `pid` started at
/// `pid_start` would write it.
fn on_this_machine(pid: u32, pid_start: u64) -> Record {
    let me = identity::this_process();
    let mut record = elsewhere(Timestamp::now().plus(Duration::from_secs(600)));
    record.holder.host = me.host.clone();
    record.holder.machine = me.machine.clone();
    record.holder.boot = me.boot.clone();
    record.holder.pid = pid;
    record.holder.pid_start = Some(pid_start);
    record
}

fn proc_readable() -> bool {
    let readable = identity::pid_start(std::process::id()).is_some();
    if !readable {
        println!("SKIPPED: /proc/<pid>/stat cannot be read here");
    }
    readable
}

#[tokio::test]
async fn the_lease_of_a_dead_process_on_this_machine_is_taken_over_at_once() {
    if !proc_readable() {
        return;
    }
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = child.id();
    let start = identity::pid_start(pid).unwrap();
    let node = Node::with_notes("");
    node.set_notes(&notes_with("", &on_this_machine(pid, start)));
    // While it runs, its lease holds (for ten more minutes).
    let err = take(&node, "reconcile", Wait::No).await.unwrap_err();
    assert!(err.to_string().contains(&format!("pid {pid} ")), "{err}");
    // SIGKILLed: taken over at once, not after the ten minutes.
    child.kill().unwrap();
    child.wait().unwrap();
    let lease = take(&node, "reconcile", Wait::No).await.unwrap();
    assert_eq!(node.record().unwrap().holder.nonce, lease.holder().nonce);
    // A pid that runs again but is another process (its start time
    // differs) does not hold it either.
    node.set_notes(&notes_with(
        "",
        &on_this_machine(std::process::id(), start + 1),
    ));
    drop(lease);
    take(&node, "reconcile", Wait::No).await.unwrap();
}

#[tokio::test]
async fn in_one_process_a_lease_holds_until_given_back_or_dropped() {
    let node = Node::with_notes("");
    let first = take(&node, "serve", Wait::No).await.unwrap();
    let err = take(&node, "reconcile", Wait::No).await.unwrap_err();
    assert!(err.to_string().contains("state dir /state/serve"), "{err}");
    // Dropped without giving it back (an engine that went away): taken
    // over at once by the next one in this process.
    drop(first);
    take(&node, "reconcile", Wait::No).await.unwrap();
}

#[tokio::test]
async fn two_takers_at_once_exactly_one_wins() {
    for round in 0..20 {
        let node = Arc::new(Node {
            gate: Some(tokio::sync::Barrier::new(2)),
            ..Node::default()
        });
        node.set_notes(USER_NOTES);
        // Both read the same digest before either write lands.
        let (a, b) = tokio::join!(
            take(&node, "reconcile", Wait::No),
            take(&node, "serve", Wait::No)
        );
        let puts = node.puts.lock().unwrap().clone();
        assert!(
            puts.len() >= 2 && puts[0] == puts[1],
            "round {round}: {puts:?}"
        );
        let (winner, loser) = match (a, b) {
            (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
            (a, b) => panic!("round {round}: exactly one must win: {a:?} / {b:?}"),
        };
        assert_eq!(node.record().unwrap().holder.nonce, winner.holder().nonce);
        assert!(
            loser.to_string().contains(&format!(
                "`{}`",
                winner.holder().command.as_deref().unwrap()
            )),
            "the loser names the winner: {loser}"
        );
        assert!(node.notes().starts_with(USER_NOTES));
    }
}

#[tokio::test]
async fn a_waiter_hears_who_holds_it_and_takes_it_once_given_back() {
    let node = Node::with_notes("");
    let first = take(&node, "serve", Wait::No).await.unwrap();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let waiter = {
        let node = node.clone();
        let heard = heard.clone();
        tokio::spawn(async move {
            HostLease::acquire(
                node,
                "father",
                pn(),
                &policy("reconcile"),
                Path::new("/state/reconcile"),
                Wait::For(Duration::from_secs(60)),
                &move |held| heard.lock().unwrap().push(held.holder()),
            )
            .await
        })
    };
    while heard.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(heard.lock().unwrap()[0].contains("`serve`"));
    first.release().await.unwrap();
    let second = waiter.await.unwrap().unwrap();
    assert_eq!(node.record().unwrap().holder.nonce, second.holder().nonce);
    assert_eq!(heard.lock().unwrap().len(), 1, "told once per holder");
}

#[tokio::test]
async fn waiting_gives_up_after_the_timeout_and_says_how_long_it_waited() {
    let node = Node::with_notes("");
    node.set_notes(&notes_with(
        "",
        &elsewhere(Timestamp::now().plus(Duration::from_secs(600))),
    ));
    let err = take(&node, "reconcile", Wait::For(Duration::from_millis(300)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Held { waited: Some(w), .. } if w >= Duration::from_millis(300)));
    assert!(err.to_string().contains("still after waiting"), "{err}");
}

#[tokio::test]
async fn a_lease_someone_else_took_is_lost_by_its_holder() {
    let node = Node::with_notes(USER_NOTES);
    let lease = HostLease::acquire(
        node.clone(),
        "father",
        pn(),
        &Policy {
            ttl: Duration::from_millis(300),
            ..policy("serve")
        },
        Path::new("/state/serve"),
        Wait::No,
        &|_| {},
    )
    .await
    .unwrap();
    let first = node.record().unwrap().expires;
    // Renewed in the background.
    let mut renewed = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if node.record().unwrap().expires > first {
            renewed = true;
            break;
        }
    }
    assert!(renewed, "the lease was never renewed");
    assert!(!lease.is_lost());
    // Someone overwrote the block (a hand edit, a homestak that judged it
    // lapsed): the holder notices at its next renewal.
    node.set_notes(&notes_with(
        USER_NOTES,
        &elsewhere(Timestamp::now().plus(Duration::from_secs(60))),
    ));
    let why = tokio::time::timeout(Duration::from_secs(5), lease.lost().wait())
        .await
        .expect("lost within the hang guard");
    assert!(why.contains("build-02.example"), "{why}");
    assert!(lease.is_lost());
    // Giving it back leaves the new holder alone.
    lease.release().await.unwrap();
    assert_eq!(node.record().unwrap().holder.nonce, "feedface");
}

#[tokio::test]
async fn an_empty_node_config_gets_a_free_block_before_the_lease_is_taken_under_its_digest() {
    let node = Arc::new(Node::default());
    let lease = take(&node, "reconcile", Wait::No).await.unwrap();
    let puts = node.puts.lock().unwrap().clone();
    assert_eq!(puts.len(), 2, "{puts:?}");
    assert_eq!(
        puts[0], None,
        "the seed: PVE checks no digest on an empty file"
    );
    assert!(puts[1].is_some(), "the lease itself is conditional");
    assert_eq!(node.record().unwrap().holder.nonce, lease.holder().nonce);
}

/// The seed is the same bytes from every homestak version: its absent
/// values are empty lines (`0` for numbers), and it reads back as absent.
#[test]
fn the_seed_block_is_the_one_every_version_writes() {
    let text = concat!(
        "<!-- homestak:lease begin (written by homestak; do not edit) -->\n",
        "```text\n",
        "lease: free\n",
        "command: \n",
        "host: \n",
        "pid: 0\n",
        "state_dir: \n",
        "version: \n",
        "acquired: 1970-01-01T00:00:00Z\n",
        "renewed: 1970-01-01T00:00:00Z\n",
        "expires: 1970-01-01T00:00:00Z\n",
        "nonce: none\n",
        "machine: \n",
        "boot: \n",
        "pid_start: 0\n",
        "format: 1\n",
        "```\n",
        "<!-- homestak:lease end -->\n",
    );
    assert_eq!(seed().render(), text);
    assert_eq!(block::Notes::parse(text).unwrap().record, Some(seed()));
}

#[tokio::test]
async fn transient_read_errors_are_retried() {
    let node = Node::with_notes("");
    node.failing_reads.store(2, Ordering::SeqCst);
    take(&node, "reconcile", Wait::No).await.unwrap();
}

#[tokio::test]
async fn writes_whose_answers_are_lost_still_take_renew_and_give_back() {
    let node = Node::with_notes(USER_NOTES);
    node.lose_answers.store(true, Ordering::SeqCst);
    // Taken: the read after the lost answer shows the lease is ours.
    let lease = HostLease::acquire(
        node.clone(),
        "father",
        pn(),
        &Policy {
            ttl: Duration::from_millis(600),
            ..policy("serve")
        },
        Path::new("/state/serve"),
        Wait::No,
        &|_| {},
    )
    .await
    .unwrap();
    assert_eq!(
        node.puts.lock().unwrap().len(),
        1,
        "one write, not one per retry"
    );
    // Renewed: still held well past the first expiry.
    let first = node.record().unwrap().expires;
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(!lease.is_lost(), "{:?}", lease.lost().why());
    assert!(node.record().unwrap().expires > first);
    // Given back.
    lease.release().await.unwrap();
    assert_eq!(node.record().unwrap().state, State::Free);
    assert!(node.notes().starts_with(USER_NOTES));
}

// The retries' backoff on a paused clock.
#[tokio::test(start_paused = true)]
async fn an_api_error_says_what_to_do_by_its_kind() {
    let node = Node::with_notes("");
    node.failing_reads.store(100, Ordering::SeqCst);
    let err = take(&node, "reconcile", Wait::No).await.unwrap_err();
    assert!(err.to_string().contains("check that PVE answers"), "{err}");
}

#[tokio::test]
async fn a_damaged_block_is_refused_with_what_to_do() {
    let node = Node::with_notes("");
    node.set_notes(
        "notes\n<!-- homestak:lease begin (written by homestak; do not edit) -->\nlease: held\n",
    );
    let err = take(&node, "reconcile", Wait::No).await.unwrap_err();
    assert!(matches!(
        err,
        Error::Damaged {
            source: Problem::Unterminated,
            ..
        }
    ));
    assert!(err.to_string().contains("remove it"), "{err}");
}
