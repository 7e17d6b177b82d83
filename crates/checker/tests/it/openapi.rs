//! The OpenAPI document: generated from the code, served, and kept in the repository.

use std::path::Path;

use anomaly_testkit::shared_redis_url;

use crate::{App, config};

/// Fails when `openapi/checker.json` differs from what the code generates. Regenerate with
/// `UPDATE_OPENAPI=1 cargo nextest run -p checker openapi` and commit the file.
#[test]
fn the_committed_document_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi/checker.json");
    let generated = checker::openapi_json();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).expect("write openapi/checker.json");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/checker.json is stale; regenerate it with \
         `UPDATE_OPENAPI=1 cargo nextest run -p checker openapi` and commit it"
    );
}

#[tokio::test]
async fn is_served_and_describes_every_route() {
    let app = App::new(&config(&shared_redis_url(), "openapi"));
    let r = app.get("/openapi.json").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.text, checker::openapi_json());
    assert!(r.body["openapi"].as_str().unwrap().starts_with("3."));
    for (path, method) in [
        ("/v1/anomaly/check", "post"),
        ("/v1/anomaly/check/batch", "post"),
        ("/v1/baseline", "get"),
        ("/v1/keys", "get"),
        ("/v1/services", "get"),
    ] {
        let op = &r.body["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not documented");
        for status in ["200", "400", "503"] {
            assert!(op["responses"][status].is_object(), "{path} {status}");
        }
    }
    let schemas = &r.body["components"]["schemas"];
    for field in [
        "isAnomaly",
        "status",
        "bucket",
        "baseline",
        "threshold",
        "reason",
    ] {
        assert!(
            schemas["CheckResponse"]["properties"][field].is_object(),
            "CheckResponse.{field}"
        );
    }
    assert_eq!(
        r.body["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

/// The name fields state the limit the ingester applies too: the shared key and its default.
#[test]
fn names_document_the_shared_limit() {
    let doc: serde_json::Value = serde_json::from_str(&checker::openapi_json()).unwrap();
    let limit = format!(
        "`{}` (default {})",
        anomaly_core::NameRules::CONFIG_KEY,
        anomaly_core::NameRules::DEFAULT_MAX_BYTES
    );
    let request = &doc["components"]["schemas"]["CheckRequest"]["properties"];
    let params = doc["paths"]["/v1/baseline"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let descriptions = [
        &request["rootServiceName"]["description"],
        &request["rootTraceName"]["description"],
    ]
    .into_iter()
    .chain(
        params
            .iter()
            .filter(|p| p["name"] == "service" || p["name"] == "endpoint")
            .map(|p| &p["description"]),
    );
    let mut n = 0;
    for d in descriptions {
        n += 1;
        assert!(d.as_str().unwrap().contains(&limit), "{d}");
    }
    assert_eq!(n, 4);
}
