//! The SHA-256 a whole image is downloaded against: from the release's
//! checksum file or site.yaml, once per run, and a mismatch that PVE
//! reports fails the step for good.

use super::*;

/// The `checksum` of each `download-url` request, as `algorithm:digest`.
pub(super) fn checksums(api: &Scripted) -> Vec<Option<String>> {
    api.requests()
        .iter()
        .filter(|r| r.method == Method::POST && r.path == DOWNLOAD)
        .map(|r| {
            let get = |k: &str| {
                r.params
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.clone())
            };
            Some(format!(
                "{}:{}",
                get("checksum-algorithm")?,
                get("checksum")?
            ))
        })
        .collect()
}

const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[tokio::test]
async fn the_release_checksum_file_makes_pve_check_the_download() {
    let sums: &'static str = Box::leak(
        format!(
            "{}  debian-12.qcow2\n{DIGEST}  debian-13-pve.qcow2\n",
            "f".repeat(64)
        )
        .into_boxed_str(),
    );
    let release = Release::start(&[
        ("debian-13-pve.qcow2", Serve::Found),
        ("debian-13-pve.qcow2.sha256", Serve::Body(sums)),
    ])
    .await;
    let rig = rig_with("root", true, &release.base_url, None);
    let t = upid("pve", "download", "debian-13-pve.qcow2");
    rig.api
        .always(Method::GET, CONTENT, content(vec![]))
        .once(Method::POST, DOWNLOAD, PveReply::Data(json!(t.to_string())))
        .data(Method::GET, &task_status_path(&t), task_status(&t, None));
    let (mut ma, mut mb) = (Memory::default(), Memory::default());
    assert!(requeued(&pass(&rig, "a", &mut ma).await));
    assert!(requeued(&pass(&rig, "b", &mut mb).await));
    assert_eq!(checksums(&rig.api), [Some(format!("sha256:{DIGEST}"))]);
    // Asked once for the run, however many nodes need the image.
    let asked = release
        .paths()
        .iter()
        .filter(|p| p.ends_with(".sha256"))
        .count();
    assert_eq!(asked, 1);
}

#[tokio::test]
async fn site_yaml_digests_win_and_a_mismatch_fails_for_good() {
    let release = Release::start(&[("debian-13-pve.qcow2", Serve::Found)]).await;
    let mut rig = rig_with("root", true, &release.base_url, None);
    rig.controller
        .images
        .sha256
        .insert("debian-13-pve".into(), DIGEST.into());
    let t = upid("pve", "download", "debian-13-pve.qcow2");
    let mismatch = format!(
        "checksum mismatch: got '{}' != expect '{DIGEST}'",
        "e".repeat(64)
    );
    rig.api
        .always(Method::GET, CONTENT, content(vec![]))
        .once(Method::POST, DOWNLOAD, PveReply::Data(json!(t.to_string())))
        .data(
            Method::GET,
            &task_status_path(&t),
            task_status(&t, Some(mismatch.as_str())),
        );
    let mut m = Memory::default();
    assert!(requeued(&pass(&rig, "a", &mut m).await));
    assert_eq!(checksums(&rig.api), [Some(format!("sha256:{DIGEST}"))]);
    // The source's checksum file is not asked for.
    assert!(!release.paths().iter().any(|p| p.ends_with(".sha256")));
    let StepOutcome::Failed(err) = pass(&rig, "a", &mut m).await else {
        panic!("a checksum mismatch fails the step");
    };
    assert!(!err.transient, "downloading again fetches the same bytes");
    assert!(
        err.message.contains("SHA-256") && err.message.contains("removed"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn a_checksum_file_without_the_image_refuses_the_download() {
    let release = Release::start(&[
        ("debian-13-pve.qcow2", Serve::Found),
        (
            "debian-13-pve.qcow2.sha256",
            Serve::Body("not a checksum\n"),
        ),
    ])
    .await;
    let rig = rig_with("root", true, &release.base_url, None);
    rig.api.always(Method::GET, CONTENT, content(vec![]));
    let StepOutcome::Failed(err) = pass(&rig, "a", &mut Memory::default()).await else {
        panic!("a malformed checksum file refuses the download");
    };
    assert!(err.message.contains("image_sha256"), "{}", err.message);
    assert!(downloads(&rig.api).is_empty());
}
