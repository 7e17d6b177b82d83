//! A network partition between the services and Redis: connections stay open but no byte gets
//! through (unlike a crash, nothing is refused). Every Redis call is bounded by
//! `redis.timeout`, so nothing hangs: probes and API calls answer 503 promptly, the services
//! stay up, they recover without a restart when the partition heals, and they stop promptly
//! while it lasts.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anomaly_testkit::{RedisServer, eventually, unique_prefix};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::{Stack, T0_NANOS, count_panics, panics, status};

/// A TCP proxy in front of Redis that can hold every byte in both directions (a partition)
/// and later let them through again, as TCP does when a partition heals.
struct Partition {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
}

impl Partition {
    async fn start(upstream: SocketAddr) -> Partition {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, rx) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let rx = rx.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::spawn(pump(cr, sw, rx.clone()));
                    tokio::spawn(pump(sr, cw, rx));
                });
            }
        });
        Partition { addr, cut }
    }

    fn set(&self, cut: bool) {
        let _ = self.cut.send(cut);
    }
}

/// Copies `from` to `to`, holding each chunk while the partition is on.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut cut: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if cut.wait_for(|c| !*c).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Status and body of a POST, and how long it took.
async fn post(client: &reqwest::Client, url: &str, body: &Value) -> (u16, Value, Duration) {
    let started = Instant::now();
    match client
        .post(url)
        .json(body)
        .timeout(Duration::from_secs(30))
        .send()
        .await
    {
        Ok(r) => {
            let status = r.status().as_u16();
            (
                status,
                r.json().await.unwrap_or(Value::Null),
                started.elapsed(),
            )
        }
        Err(_) => (0, Value::Null, started.elapsed()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_from_redis_is_a_prompt_503_and_heals_without_a_restart() {
    count_panics();
    let redis = RedisServer::start_ephemeral();
    let partition = Partition::start(redis.addr()).await;
    let url = format!("redis://{}", partition.addr);
    let stack = Stack::start(&url, &unique_prefix("partition")).await;
    let client = reqwest::Client::new();
    let push_url = stack.ingester.url("/v1/traces/ingest");
    let check_url = stack.checker.url("/v1/anomaly/check");
    let trace = |id: &str| {
        json!({"traces": [{"traceID": id, "rootServiceName": "svc", "rootTraceName": "GET /p",
                           "startTimeUnixNano": T0_NANOS.to_string(), "durationMs": 5}]})
    };
    let check = json!({"rootServiceName": "svc", "rootTraceName": "GET /p",
                       "startTimeUnixNano": T0_NANOS.to_string(), "durationMs": 5});

    let ready = eventually(Duration::from_secs(20), || async {
        let mut all = true;
        for s in stack.services() {
            all &= status(&client, &s.url("/readyz")).await == 200;
        }
        all
    })
    .await;
    assert!(ready, "the stack did not become ready");
    assert_eq!(post(&client, &push_url, &trace("a1")).await.0, 200);

    partition.set(true);
    // redis.timeout is 500 ms in these tests; an answer within a few seconds proves the bound
    // without timing anything finely.
    let bound = Duration::from_secs(5);
    for s in stack.services() {
        let started = Instant::now();
        let code = status(&client, &s.url("/readyz")).await;
        assert_eq!(code, 503, "{} /readyz during the partition", s.name);
        assert!(started.elapsed() < bound, "{} /readyz hung", s.name);
        assert_eq!(status(&client, &s.url("/healthz")).await, 200, "{}", s.name);
    }
    let (code, body, took) = post(&client, &push_url, &trace("a2")).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["error"]["code"], "REDIS_UNAVAILABLE", "{body}");
    assert!(took < bound, "a push took {took:?}");
    let (code, body, took) = post(&client, &check_url, &check).await;
    // The checker's 500 ms cache may still hold the key's (absent) baseline.
    let refused = code == 503
        || eventually(Duration::from_secs(5), || async {
            post(&client, &check_url, &check).await.0 == 503
        })
        .await;
    assert!(refused, "{code} {body}");
    assert!(took < bound, "a check took {took:?}");
    assert!(stack.exited().is_empty(), "exited: {:?}", stack.exited());

    partition.set(false);
    let healed = eventually(Duration::from_secs(30), || async {
        let mut all = true;
        for s in stack.services() {
            all &= status(&client, &s.url("/readyz")).await == 200;
        }
        all && post(&client, &push_url, &trace("a3")).await.0 == 200
    })
    .await;
    assert!(
        healed,
        "the stack did not recover when the partition healed"
    );
    // The push refused during the partition may or may not have reached Redis late (its bytes
    // were held, not lost); retrying it is safe either way.
    let (code, body, _) = post(&client, &push_url, &trace("a2")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["accepted"].as_u64().unwrap() + body["duplicates"].as_u64().unwrap(),
        1,
        "{body}"
    );
    assert_eq!(
        post(&client, &push_url, &trace("a1")).await.1["duplicates"],
        1
    );
    assert!(stack.exited().is_empty(), "exited: {:?}", stack.exited());

    // Shutting down while partitioned does not hang either: every `run` returns Ok.
    partition.set(true);
    let started = Instant::now();
    stack.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "stopping took {:?}",
        started.elapsed()
    );
    assert_eq!(panics(), 0, "something panicked");
}
