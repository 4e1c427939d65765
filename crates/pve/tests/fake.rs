//! The scripted fake, task waiting and PVE 8.4 response shapes (our own
//! small fixtures, written from NOTES §6-§7), through the real client code.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use homestak_pve::fake::{self, Reply, Scripted};
use homestak_pve::tasks::{self, Check, WaitOptions};
use homestak_pve::{
    self as pve, Api, Backoff, BoxFuture, ConfigUpdate, DownloadUrl, Envelope, ErrorKind, Resize,
    ResourceKind, TaskStatus, Upid, VmOptions,
};
use reqwest::Method;
use serde_json::json;

use crate::ids::{pn, vmid};

fn quick() -> WaitOptions {
    WaitOptions {
        timeout: Duration::from_secs(30),
        poll: Backoff::new(Duration::from_millis(1), Duration::from_millis(2)),
        log_tail: 5,
    }
}

fn log_page(lines: std::ops::Range<u64>, total: u64) -> Reply {
    let data: Vec<_> = lines
        .map(|n| json!({"n": n + 1, "t": format!("line {}", n + 1)}))
        .collect();
    Reply::Envelope(Envelope {
        data: json!(data),
        total: Some(total),
    })
}

#[tokio::test]
async fn wait_polls_until_stopped_and_counts_warnings() {
    let script = Scripted::new();
    let upid = fake::upid("pve", "qmcreate", "100");
    let path = fake::task_status_path(&upid);
    script
        .once(
            Method::GET,
            &path,
            Reply::Data(fake::task_status(&upid, None)),
        )
        .once(
            Method::GET,
            &path,
            Reply::Data(fake::task_status(&upid, None)),
        )
        .data(
            Method::GET,
            &path,
            fake::task_status(&upid, Some("WARNINGS: 2")),
        );
    let client = script.client();
    let done = tasks::wait(&client, &upid, &quick()).await.unwrap();
    assert_eq!(done.warnings, 2);
    let requests = script.requests();
    assert_eq!(requests.len(), 3);
    assert!(
        requests
            .iter()
            .all(|r| r.method == Method::GET && r.path == path)
    );
    assert_eq!(script.writes(), 0);
}

#[tokio::test]
async fn failed_task_reports_exit_status_and_log_tail() {
    let script = Scripted::new();
    let upid = fake::upid("pve", "qmcreate", "100");
    let exit = "cannot import from 'local:import/noble.qcow2' - no such volume";
    script
        .data(
            Method::GET,
            &fake::task_status_path(&upid),
            fake::task_status(&upid, Some(exit)),
        )
        .once(Method::GET, &fake::task_log_path(&upid), log_page(0..5, 30))
        .once(
            Method::GET,
            &fake::task_log_path(&upid),
            log_page(25..30, 30),
        );
    let client = script.client();
    let err = tasks::wait(&client, &upid, &quick()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TaskFailed);
    assert_eq!(err.pve_message(), Some(exit));
    assert_eq!(
        err.to_string(),
        format!("PVE task qmcreate on node pve (vmid 100) failed: {exit}")
    );
    let pve::Error::TaskFailed { log_tail, .. } = err else {
        unreachable!()
    };
    assert_eq!(
        log_tail,
        ["line 26", "line 27", "line 28", "line 29", "line 30"]
    );
    let logs: Vec<_> = script
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/log"))
        .collect();
    assert_eq!(logs[0].param("start"), Some("0"));
    assert_eq!(logs[1].param("start"), Some("25"));
    assert_eq!(logs[1].param("limit"), Some("5"));
    assert!(script.unused_once().is_empty());
}

#[tokio::test]
async fn check_reads_once_and_never_waits() {
    let script = Scripted::new();
    let upid = fake::upid("pve", "qmstart", "100");
    script.data(
        Method::GET,
        &fake::task_status_path(&upid),
        fake::task_status(&upid, None),
    );
    let check = tasks::check(&script.client(), &upid, 5).await.unwrap();
    assert!(matches!(check, Check::Running(_)));
    assert_eq!(script.requests().len(), 1);
    assert!(check.into_result().unwrap().is_none());
}

#[tokio::test]
async fn a_failed_log_read_does_not_hide_the_task_error() {
    let script = Scripted::new();
    let upid = fake::upid("pve", "qmstart", "100");
    script.data(
        Method::GET,
        &fake::task_status_path(&upid),
        fake::task_status(&upid, Some("VM 100 already running")),
    );
    // No log route: the fake answers 501 like PVE would for an unknown path.
    let check = tasks::check(&script.client(), &upid, 5).await.unwrap();
    match check {
        Check::Failed {
            exitstatus,
            log_tail,
            ..
        } => {
            assert_eq!(exitstatus, "VM 100 already running");
            assert!(log_tail.is_empty());
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn wait_gives_up_with_a_task_timeout() {
    let script = Scripted::new();
    let upid = fake::upid("pve", "qmshutdown", "100");
    script.data(
        Method::GET,
        &fake::task_status_path(&upid),
        fake::task_status(&upid, None),
    );
    let options = WaitOptions {
        timeout: Duration::from_millis(20),
        ..quick()
    };
    let err = tasks::wait(&script.client(), &upid, &options)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TaskTimeout);
    assert!(
        err.to_string().contains("re-check before retrying"),
        "{err}"
    );
}

/// A hand-written fake: overrides one call, inherits "not implemented".
struct OnlyTasks {
    calls: AtomicUsize,
}

impl Api for OnlyTasks {
    fn task_status<'a>(&'a self, upid: &'a Upid) -> BoxFuture<'a, pve::Result<TaskStatus>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let exit = (n > 0).then_some("OK");
        let status = serde_json::from_value(fake::task_status(upid, exit));
        Box::pin(async move { Ok(status.unwrap()) })
    }
}

#[tokio::test]
async fn hand_written_fakes_override_only_what_they_need() {
    let api: Arc<dyn Api> = Arc::new(OnlyTasks {
        calls: AtomicUsize::new(0),
    });
    let err = api.version().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotImplemented);
    assert_eq!(
        err.to_string(),
        "PVE call version is not implemented by this client"
    );
    let upid = fake::upid("pve", "qmstop", "100");
    let done = tasks::wait(api.as_ref(), &upid, &quick()).await.unwrap();
    assert_eq!(done.warnings, 0);
}

#[tokio::test]
async fn pve_84_shapes_decode_through_the_client() {
    let script = Scripted::new();
    let resize_upid = fake::upid("pve", "resize", "100");
    let download_upid = fake::upid("pve", "download", "noble.qcow2");
    script
        .data(
            Method::GET,
            "/cluster/resources",
            json!([
                {"id":"qemu/100","type":"qemu","vmid":100,"name":"vm1","node":"pve",
                 "status":"running","template":0,"tags":"homestak;m-demo","maxcpu":2,
                 "maxmem":2147483648u64,"maxdisk":34359738368u64,"uptime":42},
                {"id":"storage/pve/local","type":"storage","storage":"local","node":"pve",
                 "status":"available","content":"iso,import,vztmpl","plugintype":"dir","shared":0}
            ]),
        )
        .data(
            Method::GET,
            "/nodes/pve/qemu/100/agent/network-get-interfaces",
            json!({"result":[
                {"name":"lo","ip-addresses":[{"ip-address":"127.0.0.1","ip-address-type":"ipv4","prefix":8}]},
                {"name":"eth0","hardware-address":"bc:24:11:00:00:01","ip-addresses":[
                    {"ip-address":"127.1.0.100","ip-address-type":"ipv4","prefix":8}],
                 "statistics":{"rx-bytes":1,"tx-bytes":2}}
            ]}),
        )
        .data(Method::PUT, "/nodes/pve/qemu/100/resize", json!(resize_upid.as_str()))
        .data(Method::POST, "/nodes/pve/qemu/100/config", json!(null))
        .data(Method::PUT, "/nodes/pve/qemu/100/config", json!(null))
        .data(
            Method::POST,
            "/nodes/pve/storage/local/download-url",
            json!(download_upid.as_str()),
        );
    let client = script.client();

    let resources = client
        .cluster_resources(Some(ResourceKind::Vm))
        .await
        .unwrap();
    assert_eq!(resources[0].vmid, Some(100));
    assert_eq!(
        resources[0].tag_set().into_iter().collect::<Vec<_>>(),
        ["homestak", "m-demo"]
    );
    assert_eq!(resources[1].plugintype.as_deref(), Some("dir"));

    let interfaces = client
        .agent_network_interfaces(&pn("pve"), vmid(100))
        .await
        .unwrap();
    assert_eq!(
        pve::types::reachable_ipv4(&interfaces),
        Some("127.1.0.100".parse().unwrap())
    );

    let upid = client
        .qemu_resize(&pn("pve"), vmid(100), &Resize::to_gib("scsi0", 32))
        .await
        .unwrap();
    assert_eq!(upid, Some(resize_upid));

    let update = ConfigUpdate {
        options: VmOptions {
            cores: Some(4),
            memory: Some(4096),
            ..VmOptions::default()
        },
        digest: Some("d1g35t".into()),
        background_delay: Some(5),
        ..ConfigUpdate::default()
    };
    assert_eq!(
        client
            .qemu_config_post(&pn("pve"), vmid(100), &update)
            .await
            .unwrap(),
        None
    );
    client
        .qemu_config_put(&pn("pve"), vmid(100), &update)
        .await
        .unwrap();

    let download = DownloadUrl {
        url: "https://images.example.invalid/noble.img".into(),
        content: "import".into(),
        filename: "noble.qcow2".into(),
        checksum: None,
        verify_certificates: None,
    };
    let upid = client
        .download_url(&pn("pve"), "local", &download)
        .await
        .unwrap();
    assert_eq!(upid.kind(), "download");

    let requests = script.requests();
    assert_eq!(requests[0].param("type"), Some("vm"));
    let post = requests
        .iter()
        .find(|r| r.method == Method::POST && r.path.ends_with("/config"))
        .unwrap();
    assert_eq!(post.param("background_delay"), Some("5"));
    assert_eq!(post.param("digest"), Some("d1g35t"));
    let put = requests
        .iter()
        .find(|r| r.method == Method::PUT && r.path.ends_with("/config"))
        .unwrap();
    assert_eq!(
        put.param("background_delay"),
        None,
        "PUT has no background_delay"
    );
    assert_eq!(script.writes(), 4);
}

#[tokio::test]
async fn scripted_errors_and_unknown_routes() {
    let script = Scripted::new();
    script
        .always(
            Method::GET,
            "/nodes/pve/qemu/100/status/current",
            Reply::error(
                500,
                "Configuration file 'nodes/pve/qemu-server/100.conf' does not exist",
            ),
        )
        .once(
            Method::GET,
            "/cluster/nextid",
            Reply::param_error("vmid", "VM 100 already exists"),
        )
        .data(Method::GET, "/cluster/nextid", json!("101"))
        .always(Method::GET, "/nodes", Reply::Timeout);
    let client = script.client();

    let err = client.qemu_status(&pn("pve"), vmid(100)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::VmNotFound);
    assert!(err.to_string().contains("(vmid 100)"), "{err}");

    let err = client.next_vmid(Some(vmid(100))).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(client.next_vmid(Some(vmid(101))).await.unwrap(), 101);

    assert_eq!(client.nodes().await.unwrap_err().kind(), ErrorKind::Timeout);

    let err = client.qemu_list(&pn("pve")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotImplemented);
    assert_eq!(
        err.pve_message(),
        Some("Method 'GET /api2/json/nodes/pve/qemu' not implemented")
    );
}

#[tokio::test]
async fn wildcard_routes_and_later_replies_win() {
    let script = Scripted::new();
    let a = fake::upid("pve", "qmstart", "100");
    let b = fake::upid("pve", "qmstart", "101");
    script
        .data(
            Method::GET,
            "/nodes/pve/tasks/*",
            fake::task_status(&a, Some("OK")),
        )
        .data(
            Method::GET,
            "/nodes/pve/tasks/*",
            fake::task_status(&b, Some("OK")),
        );
    let status = script.client().task_status(&a).await.unwrap();
    // The later script entry replaced the earlier one for the same route.
    assert_eq!(status.upid, b);
}
