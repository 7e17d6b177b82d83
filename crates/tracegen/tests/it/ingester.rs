//! `tracegen push` against the real ingester (its router on a real redis-server): every trace
//! is accepted once, pushing again gives duplicates only, and each sample lands in the window of
//! the bucket the demo calendar puts it in, with its duration (zero where `durationMs` was
//! omitted).

use std::collections::BTreeMap;
use std::time::SystemTime;

use anomaly_core::{BaselineKey, Bucketer, TimeConfig};
use anomaly_testkit::{redis_config, shared_redis_url};
use tracegen::feed::unix_nanos;
use tracegen::push::Pusher;
use tracegen::traffic::{Generator, Profile};

#[tokio::test]
async fn pushed_traffic_is_stored_by_the_real_ingester() {
    let mut config: ingester::Config =
        anomaly_runtime::load::<ingester::Section>(None).expect("the defaults load");
    config.common.redis = redis_config(&shared_redis_url(), "tracegen_push");
    // The demo profile follows the services' default calendar (Asia/Taipei, Sat and Sun).
    let time = TimeConfig::default();
    assert_eq!(config.common.time().timezone, time.timezone);
    let ingester = ingester::Ingester::new(config).expect("the ingester builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/traces/ingest", listener.local_addr().unwrap());
    let router = ingester.router();
    tokio::spawn(async move { axum::serve(listener, router).await });

    // The last 90 minutes: two hour buckets, recent enough for any retention.
    let now = unix_nanos(SystemTime::now());
    let traces = Generator::new(Profile::demo(), 41, &time)
        .traces_between(now - 90 * 60 * 1_000_000_000, now);
    assert!(traces.len() > 300, "{}", traces.len());
    let pusher = Pusher::new(&url, None, 200);

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

    let bucketer = Bucketer::new(&time);
    let mut expected: BTreeMap<(String, String, u8, String), Vec<f64>> = BTreeMap::new();
    for t in &traces {
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
