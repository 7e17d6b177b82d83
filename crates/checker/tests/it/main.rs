//! Integration tests of the checker against a real redis-server, through its router (tower's
//! `oneshot`) or a real socket.

mod analysis;
mod anomalies;
mod auth;
mod baseline;
mod batch;
mod cache;
mod check;
mod config;
mod keys;
mod openapi;
mod overrides;
mod secrets;
mod service;
mod threshold;
mod trace;
mod validation;

use std::net::SocketAddr;
use std::time::Duration;

use anomaly_core::{Baseline, BaselineKey, DayType};
use anomaly_store::{RedisConfig, Store};
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use checker::{Config, Section};
use chrono::TimeZone;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

/// A config for tests: defaults, the given Redis, a unique key prefix.
pub(crate) fn config(url: &str, test: &str) -> Config {
    let mut loaded: Config = anomaly_runtime::load::<Section>(None).expect("defaults load");
    loaded.common.redis = RedisConfig {
        timeout: Duration::from_millis(1000),
        ..anomaly_testkit::redis_config(url, test)
    };
    loaded
}

/// A store on the same Redis and prefix as `config`, for seeding and observing.
pub(crate) fn store(config: &Config) -> Store {
    Store::connect(&config.common.redis).expect("store")
}

/// Writes baselines as the recomputer does, through anomaly-store's write API.
pub(crate) async fn seed(config: &Config, items: &[(BaselineKey, Baseline)]) {
    store(config)
        .write_baselines(items, Duration::ZERO)
        .await
        .expect("seed baselines");
}

pub(crate) fn key(service: &str, endpoint: &str, hour: u8, day_type: DayType) -> BaselineKey {
    BaselineKey::new(service, endpoint, hour, day_type).unwrap()
}

pub(crate) fn baseline(p50: f64, p95: f64, mad: f64, sample_count: u64) -> Baseline {
    Baseline {
        p50,
        p95,
        mad,
        sample_count,
        updated_at: chrono::Utc::now().timestamp_millis() - 12_000,
    }
}

/// `startTimeUnixNano` of 30 minutes into `hour` (Asia/Taipei, the default zone) on Tuesday
/// 2025-11-25 (a weekday) or Saturday 2025-11-29 (a weekend day).
pub(crate) fn start(hour: u8, day_type: DayType) -> String {
    let day = match day_type {
        DayType::Weekday => 25,
        DayType::Weekend => 29,
    };
    chrono_tz::Asia::Taipei
        .with_ymd_and_hms(2025, 11, day, u32::from(hour), 30, 0)
        .unwrap()
        .timestamp_nanos_opt()
        .unwrap()
        .to_string()
}

/// A check request body for `key` at `duration_ms`.
pub(crate) fn body(key: &BaselineKey, duration_ms: f64) -> Value {
    json!({
        "rootServiceName": key.service(),
        "rootTraceName": key.endpoint(),
        "startTimeUnixNano": start(key.hour(), key.day_type()),
        "durationMs": duration_ms,
    })
}

/// The service's router, called in-process.
#[derive(Clone)]
pub(crate) struct App(Router);

/// A response: status, headers and the body parsed as JSON (`Value::Null` when it is not).
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
    pub(crate) text: String,
}

impl Reply {
    /// Asserts the contract's error shape and returns the code.
    pub(crate) fn error_code(&self) -> &str {
        let error = &self.body["error"];
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "no error message in {}",
            self.text
        );
        assert_eq!(
            self.body.as_object().map(|o| o.len()),
            Some(1),
            "{}",
            self.text
        );
        error["code"].as_str().expect("an error code")
    }
}

impl App {
    pub(crate) fn new(config: &Config) -> App {
        App(checker::app(config).expect("app builds"))
    }

    pub(crate) async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.0.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(
            Request::post(path)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
    }

    pub(crate) async fn check(&self, body: &Value) -> Reply {
        self.post("/v1/anomaly/check", body).await
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        self.send(Request::get(path).body(Body::empty()).unwrap())
            .await
    }
}

/// The service on a real socket, stopped when `stop` is called or the value is dropped.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    pub(crate) async fn start(config: &Config) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(checker::run(config.clone(), listener, async {
            let _ = stopped.await;
        }));
        Server {
            addr,
            stop: Some(stop),
            task,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Signals shutdown and waits for `run` to return.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), &mut self.task)
            .await
            .expect("the service stops")
            .unwrap()
    }
}

/// A TCP proxy in front of Redis that holds every burst of bytes from the client for `delay`
/// before passing it on. A round trip through it costs at least `delay`, so the time a request
/// takes counts its Redis round trips, and a slow Redis can be simulated.
pub(crate) async fn delaying_proxy(upstream: SocketAddr, delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                });
                let mut buf = vec![0u8; 1 << 20];
                while let Ok(n) = client_read.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    tokio::time::sleep(delay).await;
                    if server_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// The number of calls of `command` (lowercase) a Redis server has executed.
pub(crate) fn calls(server: &anomaly_testkit::RedisServer, command: &str) -> u64 {
    let stats = server.command(&["INFO", "commandstats"]);
    let prefix = format!("cmdstat_{command}:calls=");
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |rest| {
            rest.split(',').next().unwrap().parse().expect("a count")
        })
}
