//! `tracegen push` and `tracegen otlp` against the real ingester (its routers on a real
//! redis-server): every trace is accepted once, sending again gives duplicates only, and each
//! sample lands in the window of the bucket the demo calendar puts it in, with its duration
//! (zero where `durationMs` was omitted, or the root span lasted under a millisecond).

use std::collections::BTreeMap;
use std::time::SystemTime;

use anomaly_core::{BaselineKey, Bucketer, TimeConfig};
use anomaly_testkit::{redis_config, shared_redis_url};
use tracegen::feed::unix_nanos;
use tracegen::otlp::{OtlpSender, SendOptions};
use tracegen::push::Pusher;
use tracegen::traffic::{GenTrace, Generator, Profile};

/// A real ingester on its own key prefix, and its HTTP and gRPC routers on loopback sockets
/// (`http://ADDR` each).
async fn ingester(test: &str) -> (ingester::Ingester, String, String) {
    let mut config: ingester::Config =
        anomaly_runtime::load::<ingester::Section>(None).expect("the defaults load");
    config.common.redis = redis_config(&shared_redis_url(), test);
    // The demo profile follows the services' default calendar (Asia/Taipei, Sat and Sun).
    assert_eq!(
        config.common.time().timezone,
        TimeConfig::default().timezone
    );
    let ingester = ingester::Ingester::new(config).expect("the ingester builds");
    let mut urls = Vec::new();
    for router in [ingester.router(), ingester.grpc_router()] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        urls.push(format!("http://{}", listener.local_addr().unwrap()));
        tokio::spawn(async move { axum::serve(listener, router).await });
    }
    let grpc = urls.pop().unwrap();
    (ingester, urls.pop().unwrap(), grpc)
}

/// The last 90 minutes of demo traffic: two hour buckets, recent enough for any retention.
fn recent_traffic(seed: u64) -> Vec<GenTrace> {
    let now = unix_nanos(SystemTime::now());
    let traces = Generator::new(Profile::demo(), seed, &TimeConfig::default())
        .traces_between(now - 90 * 60 * 1_000_000_000, now);
    assert!(traces.len() > 300, "{}", traces.len());
    traces
}

/// Every window holds exactly the durations of the traces of its bucket; some are zero.
async fn assert_stored(ingester: &ingester::Ingester, traces: &[GenTrace]) {
    let bucketer = Bucketer::new(&TimeConfig::default());
    let mut expected: BTreeMap<(String, String, u8, String), Vec<f64>> = BTreeMap::new();
    for t in traces {
        let b = bucketer.bucket(chrono::DateTime::from_timestamp_nanos(
            t.start_unix_nano as i64,
        ));
        expected
            .entry((
                t.service.clone(),
                t.endpoint.clone(),
                b.hour,
                b.day_type.to_string(),
            ))
            .or_default()
            .push(f64::from(t.duration_ms));
    }
    assert!(expected.len() >= 7, "{} keys", expected.len());
    let mut zeros = 0;
    for ((service, endpoint, hour, day_type), mut want) in expected {
        let key = BaselineKey::new(&service, &endpoint, hour, day_type.parse().unwrap()).unwrap();
        let mut got = ingester
            .store()
            .read_window(&key)
            .await
            .expect("read a window");
        got.sort_by(f64::total_cmp);
        want.sort_by(f64::total_cmp);
        assert_eq!(got, want, "{service} {endpoint} {hour} {day_type}");
        zeros += got.iter().filter(|d| **d == 0.0).count();
    }
    assert!(zeros > 0, "sub-millisecond traces are stored as 0 ms");
}

#[tokio::test]
async fn pushed_traffic_is_stored_by_the_real_ingester() {
    let (ingester, base, _) = ingester("tracegen_push").await;
    let traces = recent_traffic(41);
    let pusher = Pusher::new(format!("{base}/v1/traces/ingest"), None, 200);

    let first = pusher.push(&traces).await.expect("the first push");
    assert_eq!(
        (first.accepted, first.duplicates, first.rejected),
        (traces.len() as u64, 0, 0)
    );
    let again = pusher.push(&traces).await.expect("the second push");
    assert_eq!(
        (again.accepted, again.duplicates, again.rejected),
        (0, traces.len() as u64, 0)
    );
    assert_stored(&ingester, &traces).await;
}

#[tokio::test]
async fn otlp_traffic_is_stored_by_the_real_ingester_once_over_either_transport() {
    let (ingester, base, grpc) = ingester("tracegen_otlp").await;
    let traces = recent_traffic(43);
    let options = SendOptions {
        batch_size: 200,
        gzip: true,
        ..SendOptions::default()
    };
    let http = OtlpSender::http(&base, options.clone());
    let first = http.send(&traces).await.expect("the first export");
    assert_eq!(first.spans, 10 * traces.len() as u64);
    assert_eq!(first.rejected_spans, 0, "{:?}", first.first_error);
    // The same traces again, over gRPC: every root is a duplicate, nothing is rejected, and
    // the windows hold each trace once.
    let grpc = OtlpSender::grpc(&grpc, options).await.expect("connect");
    let again = grpc.send(&traces).await.expect("the second export");
    assert_eq!(again.rejected_spans, 0, "{:?}", again.first_error);
    assert_stored(&ingester, &traces).await;
}
