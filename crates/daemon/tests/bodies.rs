//! The seed endpoints' bodies and the error body, byte for byte as the
//! reference answered them, and readable as the API's types.

use crate::support::*;
use homestak_api::v1::{ErrorBody, Health, HealthResponse, SpecsResponse};

#[tokio::test]
async fn seed_and_error_bodies_keep_their_bytes_and_read_as_the_api_types() {
    let site = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    site_config(site.path());
    let (engine, _calls) = FakeEngine::new();
    let d = start(config(site.path(), state.path()), engine).await;

    let (status, text) = d.get("/health", None).await;
    assert_eq!((status, text.as_str()), (200, "{\"status\":\"ok\"}\n"));
    let health: HealthResponse = serde_json::from_str(&text).unwrap();
    assert_eq!(health.status, Health::Ok);

    let (status, text) = d.get("/specs", None).await;
    assert_eq!(
        (status, text.as_str()),
        (200, "{\"specs\":[\"base\",\"prodnode\",\"staged\"]}\n")
    );
    let specs: SpecsResponse = serde_json::from_str(&text).unwrap();
    assert_eq!(specs.specs, ["base", "prodnode", "staged"]);

    // A token posture without a token: the seed's error shape.
    let (status, text) = d.get("/spec/staged", None).await;
    assert_eq!(
        (status, text.as_str()),
        (
            401,
            "{\"error\":{\"code\":\"E300\",\"message\":\"Authorization required\"}}\n"
        )
    );
    let error: ErrorBody = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (error.error.code.as_str(), error.error.message.as_str()),
        ("E300", "Authorization required")
    );
    // The reconciler API answers errors in the same shape.
    let (status, text) = d.get("/v1/status", Some("wrong")).await;
    assert_eq!(status, 403);
    let error: ErrorBody = serde_json::from_str(&text).unwrap();
    assert_eq!(error.error.code, "E301");

    d.stop().await.unwrap();
}
