//! Optional bearer authentication: off by default; when on, the API needs a token and the
//! probes, metrics and API document stay open.

use anomaly_core::DayType;
use anomaly_testkit::shared_redis_url;
use axum::body::Body;
use axum::http::{Request, header};

use crate::{App, body, config, key};

fn check(token: Option<&str>) -> Request<Body> {
    let mut request =
        Request::post("/v1/anomaly/check").header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        request = request.header(header::AUTHORIZATION, t);
    }
    let k = key("svc", "GET /a", 1, DayType::Weekday);
    request.body(Body::from(body(&k, 1.0).to_string())).unwrap()
}

#[tokio::test]
async fn off_by_default() {
    let app = App::new(&config(&shared_redis_url(), "auth-off"));
    assert_eq!(app.send(check(None)).await.status, 200);
}

#[tokio::test]
async fn tokens_from_config_and_file_guard_the_api_only() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut file, b"# mounted secret\nfrom-file\n").unwrap();
    let mut config = config(&shared_redis_url(), "auth-on");
    config.service.auth.tokens = vec!["s3cret".to_owned().into()];
    config.service.auth.tokens_file = Some(file.path().to_owned());
    let app = App::new(&config);

    for (token, status) in [
        (None, 401),
        (Some("Bearer wrong"), 401),
        (Some("Basic s3cret"), 401),
        (Some("Bearer s3cre"), 401),
        (Some("Bearer s3cret"), 200),
        (Some("Bearer from-file"), 200),
    ] {
        let r = app.send(check(token)).await;
        assert_eq!(r.status, status, "{token:?}: {}", r.text);
        if status == 401 {
            assert_eq!(r.error_code(), "UNAUTHORIZED");
            assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");
        }
    }
    let r = app
        .get("/v1/baseline?service=a&endpoint=b&hour=1&dayType=weekday")
        .await;
    assert_eq!(r.status, 401);
    let r = app
        .post("/v1/anomaly/check/batch", &serde_json::json!({"items": []}))
        .await;
    assert_eq!(r.status, 401);
    for open in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        assert_eq!(app.get(open).await.status, 200, "{open}");
    }
}
