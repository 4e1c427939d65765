//! The simulator over real HTTPS: wire protocol, auth, lifecycle, state
//! machine, locks, faults and control endpoints.

mod sim_support;

use sim_support::Sim;

#[tokio::test]
async fn version_and_envelope() {
    let sim = Sim::start(0.001).await;
    let a = sim.call("GET", "/version", &[]).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.content_type.as_deref(),
        Some("application/json;charset=UTF-8")
    );
    assert_eq!(a.data()["release"], "8.4");
    assert!(a.data()["version"].as_str().unwrap().starts_with("8.4."));
    sim.handle.shutdown().await.unwrap();
}
