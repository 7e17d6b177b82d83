//! The three services together, in-process through their `run(config, listener, shutdown)`
//! functions, on one real `redis-server`: Redis killed under load (`chaos`), arbitrary input
//! through every router (`bad_input`), names that must not collide in Redis (`keys`), the one
//! name length limit of ingest and check (`names`), and a network partition from Redis
//! (`partition`).

mod bad_input;
mod chaos;
mod fallback;
mod keys;
mod names;
mod partition;
mod spans;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anomaly_runtime::CommonConfig;
use anomaly_store::RedisConfig;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// 2026-11-25T06:00:00Z, a Wednesday: 14:00 in Asia/Taipei (the default zone).
pub(crate) const T0_NANOS: u64 = 1_795_586_400_000_000_000;

/// Panics anywhere in this test process since [`count_panics`] was first called. A request
/// handler that panics is caught by the HTTP stack and answered 500; counting panics proves
/// that did not happen even where no response shows it (background loops).
/// Percent-encodes every byte of `s` but the unreserved ones, so any string survives as a
/// query parameter.
pub(crate) fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(crate) fn panics() -> u64 {
    PANICS.load(Ordering::SeqCst)
}

static PANICS: AtomicU64 = AtomicU64::new(0);

pub(crate) fn count_panics() {
    static HOOK: OnceLock<()> = OnceLock::new();
    HOOK.get_or_init(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            default(info);
        }));
    });
}

/// The settings every service of a test shares: one Redis, one prefix, short timeouts, and a
/// window large enough that no acknowledged sample is trimmed away during a test.
fn common(c: &mut CommonConfig, redis_url: &str, prefix: &str) {
    c.redis = RedisConfig {
        url: redis_url.to_owned(),
        key_prefix: prefix.to_owned(),
        timeout: Duration::from_millis(500),
        ..RedisConfig::default()
    };
    c.stats.window_size = 100_000;
}

pub(crate) fn checker_config(redis_url: &str, prefix: &str) -> checker::Config {
    let mut c: checker::Config =
        anomaly_runtime::load::<checker::Section>(None).expect("defaults load");
    common(&mut c.common, redis_url, prefix);
    c.service.cache.ttl = Duration::from_millis(500);
    c
}

pub(crate) fn ingester_config(redis_url: &str, prefix: &str) -> ingester::Config {
    let mut c: ingester::Config =
        anomaly_runtime::load::<ingester::Section>(None).expect("defaults load");
    common(&mut c.common, redis_url, prefix);
    // Tests run side by side: OTLP/gRPC's default port would be taken by the first.
    c.service.otlp.grpc_listen = None;
    c
}

pub(crate) fn recomputer_config(redis_url: &str, prefix: &str) -> recomputer::Config {
    let mut c: recomputer::Config =
        anomaly_runtime::load::<recomputer::Section>(None).expect("defaults load");
    common(&mut c.common, redis_url, prefix);
    c.service.interval = Duration::from_millis(200);
    c.service.claim_ttl = Duration::from_secs(1);
    c
}

/// One running service: its address, its shutdown trigger and its task.
pub(crate) struct Running {
    pub(crate) name: &'static str,
    pub(crate) addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), String>>,
}

impl Running {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Whether `run` has returned (it must not, until asked to stop).
    pub(crate) fn exited(&self) -> bool {
        self.task.is_finished()
    }

    /// Signals shutdown and returns what `run` returned.
    pub(crate) async fn stop(mut self) -> Result<(), String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(Duration::from_secs(30), &mut self.task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(format!("{} task failed: {join}", self.name)),
            Err(_) => Err(format!("{} did not stop within 30 s", self.name)),
        }
    }
}

async fn spawn<F, Fut>(name: &'static str, run: F) -> Running
where
    F: FnOnce(TcpListener, oneshot::Receiver<()>) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(run(listener, stopped));
    Running {
        name,
        addr,
        stop: Some(stop),
        task,
    }
}

/// The three services on one Redis and prefix.
pub(crate) struct Stack {
    pub(crate) checker: Running,
    pub(crate) ingester: Running,
    pub(crate) recomputer: Running,
}

impl Stack {
    pub(crate) async fn start(redis_url: &str, prefix: &str) -> Stack {
        let c = checker_config(redis_url, prefix);
        let i = ingester_config(redis_url, prefix);
        let r = recomputer_config(redis_url, prefix);
        let shutdown = |rx: oneshot::Receiver<()>| async move {
            let _ = rx.await;
        };
        Stack {
            checker: spawn("checker", |l, rx| async move {
                checker::run(c, l, shutdown(rx))
                    .await
                    .map_err(|e| format!("{e:#}"))
            })
            .await,
            ingester: spawn("ingester", |l, rx| async move {
                ingester::run(i, l, shutdown(rx))
                    .await
                    .map_err(|e| format!("{e:#}"))
            })
            .await,
            recomputer: spawn("recomputer", |l, rx| async move {
                recomputer::run(r, l, shutdown(rx))
                    .await
                    .map_err(|e| format!("{e:#}"))
            })
            .await,
        }
    }

    pub(crate) fn services(&self) -> [&Running; 3] {
        [&self.checker, &self.ingester, &self.recomputer]
    }

    /// Names of services whose `run` has returned.
    pub(crate) fn exited(&self) -> Vec<&'static str> {
        self.services()
            .iter()
            .filter(|s| s.exited())
            .map(|s| s.name)
            .collect()
    }

    /// Stops all three; every `run` must return `Ok`.
    pub(crate) async fn stop(self) {
        for service in [self.checker, self.ingester, self.recomputer] {
            let name = service.name;
            if let Err(e) = service.stop().await {
                panic!("{name} stopped with an error: {e}");
            }
        }
    }
}

/// The status of `GET url`, 0 when no answer came.
pub(crate) async fn status(client: &reqwest::Client, url: &str) -> u16 {
    client
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}
