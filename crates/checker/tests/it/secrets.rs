//! Secrets never reach the logs: the checker binary runs at trace level with a Redis password,
//! a password in the Redis URL and API tokens set to distinctive values, against a Redis that
//! requires the password; it serves good and wrong tokens, loses Redis, fails to authenticate,
//! recovers and shuts down, and none of the secrets (nor a wrong token a client sent) appears
//! in anything it printed, in either log format.

use std::process::Command;
use std::time::Duration;

use anomaly_testkit::{RedisServer, eventually, free_port, unique_prefix};
use serde_json::json;

const PASSWORD: &str = "redis-pw-Qz81vKx3";
const URL_PASSWORD: &str = "url-pw-Hh27cLm9";
const TOKENS: [&str; 2] = ["tok-alpha-3f9c2e51", "tok-beta-77d1aa04"];
const WRONG_TOKEN: &str = "tok-typo-5be0c9d2";

fn require_password(redis: &RedisServer) {
    redis.command(&["CONFIG", "SET", "requirepass", PASSWORD]);
}

async fn status(client: &reqwest::Client, url: &str, token: Option<&str>) -> u16 {
    let mut request = client
        .post(url)
        .timeout(Duration::from_secs(10))
        .json(&json!({"rootServiceName": "svc", "rootTraceName": "GET /a",
                      "startTimeUnixNano": "1795586400000000000", "durationMs": 12}));
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    request.send().await.map_or(0, |r| r.status().as_u16())
}

/// Whether a check with `token` is answered 200 within 30 s (a loaded machine can make a
/// single Redis round trip miss its deadline).
async fn answers_200(client: &reqwest::Client, url: &str, token: &str) -> bool {
    eventually(Duration::from_secs(30), || async {
        status(client, url, Some(token)).await == 200
    })
    .await
}

async fn readyz(client: &reqwest::Client, base: &str) -> u16 {
    client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

#[tokio::test]
async fn secrets_never_appear_in_json_logs() {
    secrets_never_appear_in_the_logs("json").await;
}

#[tokio::test]
async fn secrets_never_appear_in_text_logs() {
    secrets_never_appear_in_the_logs("text").await;
}

async fn secrets_never_appear_in_the_logs(format: &str) {
    let mut redis = RedisServer::start_ephemeral();
    require_password(&redis);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_checker"))
        .env(
            "ANOMALY_REDIS__URL",
            format!("redis://:{URL_PASSWORD}@127.0.0.1:{}", redis.port()),
        )
        .env("ANOMALY_REDIS__PASSWORD", PASSWORD)
        .env("ANOMALY_REDIS__KEY_PREFIX", unique_prefix("secrets"))
        .env("ANOMALY_CHECKER__AUTH__TOKENS", TOKENS.join(","))
        .env("ANOMALY_CHECKER__CACHE__TTL", "0s")
        .env("ANOMALY_CHECKER__LISTEN", format!("127.0.0.1:{port}"))
        .env("ANOMALY_TELEMETRY__LOG_FORMAT", format)
        // Everything, dependencies included, at the most verbose level.
        .env("RUST_LOG", "trace")
        .stdout(log.reopen().unwrap())
        .stderr(log.reopen().unwrap())
        .spawn()
        .expect("start the checker binary");
    let client = reqwest::Client::new();
    let check = format!("{base}/v1/anomaly/check");

    assert!(
        eventually(Duration::from_secs(30), || async {
            readyz(&client, &base).await == 200
        })
        .await,
        "the checker authenticates to Redis with the password"
    );
    for token in TOKENS {
        assert!(
            answers_200(&client, &check, token).await,
            "{token} is accepted"
        );
    }
    assert_eq!(status(&client, &check, Some(WRONG_TOKEN)).await, 401);
    assert_eq!(status(&client, &check, None).await, 401);

    // Redis goes away: errors are logged.
    redis.stop();
    assert_eq!(readyz(&client, &base).await, 503);
    assert_eq!(status(&client, &check, Some(TOKENS[0])).await, 503);
    // It comes back without a password first: AUTH fails and that is logged too.
    redis.restart();
    assert_eq!(status(&client, &check, Some(TOKENS[1])).await, 503);
    require_password(&redis);
    assert!(
        eventually(Duration::from_secs(30), || async {
            readyz(&client, &base).await == 200
        })
        .await,
        "ready again once Redis takes the password"
    );
    assert!(answers_200(&client, &check, TOKENS[0]).await);

    let stopped = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit}");

    let text = std::fs::read_to_string(log.path()).unwrap();
    // The run logged at debug level and logged the failures, so there was something to leak.
    assert!(text.contains("DEBUG"), "debug logging was not on:\n{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("WARN") && l.to_lowercase().contains("redis")),
        "no Redis failure was logged:\n{text}"
    );
    for secret in [PASSWORD, URL_PASSWORD, TOKENS[0], TOKENS[1], WRONG_TOKEN] {
        assert!(
            !text.contains(secret),
            "{secret} appears in the logs:\n{}",
            text.lines()
                .filter(|l| l.contains(secret))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
