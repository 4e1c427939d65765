//! `--insecure` never overrides a pinned `api_fingerprint`: against the
//! simulator's self-signed certificate, a wrong pin is refused with or
//! without it, and `--insecure` only helps a host that pins nothing.

use crate::lab::write;
use std::sync::Arc;

use homestak_core::site::Site;
use homestak_engine::reconcile::{self, Engine, Setup};
use homestak_pve as pve;

#[tokio::test]
async fn a_pinned_fingerprint_is_checked_even_with_insecure() {
    homestak_tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let site_dir = dir.path().join("site-config");
    write(&site_dir.join("site.yaml"), "defaults: {}\n");
    let mut config = homestak_sim::Config::with_defaults();
    config.listen = Some("127.0.0.1:0".parse().unwrap());
    let sim = homestak_sim::Simulator::start(config).await.unwrap();
    homestak_sim::site_config::update(&site_dir, &sim.ready_info(), "local-zfs", 22).unwrap();
    let site = Arc::new(Site::load(&site_dir).unwrap());
    let setup = Setup {
        state_dir: dir.path().join("state"),
        insecure: true,
        ..Setup::default()
    };
    let tier = Engine::open(setup).unwrap().tier(site, "pve").unwrap();
    let good = tier.host.clone();
    assert!(
        good.api_fingerprint.is_some(),
        "the simulator pins its cert"
    );

    // The right pin works, with or without --insecure.
    for insecure in [false, true] {
        let api = reconcile::connect(&good, insecure, None).unwrap();
        api.version().await.unwrap();
    }

    // A wrong pin is refused, with or without --insecure.
    let mut wrong = good.clone();
    wrong.api_fingerprint =
        Some(homestak_tls::Fingerprint::of_der(b"another certificate").to_string());
    for insecure in [false, true] {
        assert!(matches!(
            reconcile::trust(&wrong, insecure).unwrap(),
            pve::Trust::Pinned(_)
        ));
        let api = reconcile::connect(&wrong, insecure, None).unwrap();
        let err = api.version().await.unwrap_err();
        let text = homestak_base::error_chain(&err);
        assert!(
            text.to_lowercase().contains("certificate"),
            "insecure={insecure}: {text}"
        );
    }

    // No pin: --insecure accepts the self-signed certificate, the system
    // roots do not.
    let mut unpinned = good.clone();
    unpinned.api_fingerprint = None;
    assert!(matches!(
        reconcile::trust(&unpinned, true).unwrap(),
        pve::Trust::Insecure
    ));
    reconcile::connect(&unpinned, true, None)
        .unwrap()
        .version()
        .await
        .unwrap();
    assert!(
        reconcile::connect(&unpinned, false, None)
            .unwrap()
            .version()
            .await
            .is_err()
    );
    let _ = sim.shutdown().await;
}
