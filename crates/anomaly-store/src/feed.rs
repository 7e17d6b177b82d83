//! The anomaly feed: every trace judged anomalous on ingest, newest last, in one Redis stream
//! (`anomalies`), and the paged read behind the checker's `GET /v1/anomalies`.
//!
//! An entry carries the whole [`Verdict`] it was judged with (threshold, bound, both bounds,
//! excess, baseline, level, coverage, rank, rule parameters) and the override that tuned it, so
//! a reader rebuilds the same explanation the check API gives with [`Verdict::reason`] instead
//! of storing a sentence. Fields have short names and every entry writes the same fields in the
//! same order (an absent value is an empty string): Redis then keeps the field names once per
//! stream node, not once per entry, and an entry costs its values only.
//!
//! Redis assigns the IDs (`*`), so entries never collide and the stream is ordered by the time
//! Redis recorded them; that time (the ID's milliseconds) is what `since`/`until` select and
//! what pages are ordered by. The stream is bounded twice, in the same script as the appends:
//! `MAXLEN ~ max_len` on every `XADD`, and `XTRIM MINID ~` at Redis's own clock minus the
//! retention, so a clock-skewed ingester can neither keep old entries nor drop new ones. Both
//! trims are approximate (whole stream nodes, `stream-node-max-entries`, 100 by default), which
//! makes them O(1) amortised: the stream may hold up to a node more than `max_len`, and entries
//! up to a node's age past the retention.
//!
//! Redis Cluster: the feed is one key, hence one slot on one shard. Anomalies are a small share
//! of the traffic (a few per thousand traces at the default rule), so one shard takes their
//! writes easily, and the newest-first read needs one ordered stream anyway; it is not spread
//! over slots.
//!
//! A page reads backwards (`XREVRANGE`) from the cursor, or `until`, down to `since`. Filtering
//! by service or endpoint happens here, on decoded entries, so a page scans at most
//! [`FEED_SCAN_MAX`] entries: a rare service's page can be short, or empty, while `next` is set,
//! and the caller continues from `next`. An entry that does not decode (written by something
//! else, or by a future format) is skipped and counted in [`FeedPage::skipped`], never an error.

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use anomaly_core::rule::Judgement;
use anomaly_core::{Baseline, BaselineKey, Bound, Level, Status, TraceId, Verdict};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use deadpool_redis::redis::{self, Script, Value};

use crate::listing::decode_token;
use crate::{Hold, InvalidCursor, SHARED_REPLY_VALUES, Store, StoreError};

/// Most entries one call of [`Store::anomalies_page`] reads, matching or not.
pub const FEED_SCAN_MAX: usize = 5_000;

/// Entries read per round trip when a filter may leave most of them out.
const FILTERED_CHUNK: usize = 500;

/// The format of an entry's fields; an entry of another version is skipped.
const VERSION: &str = "1";

/// Fields an entry has (each a name and a value in a stream entry).
const FIELDS: usize = 17;

/// Appends entries and trims the stream by length and by age, in one round trip.
static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS[1] the feed. ARGV[1] MAXLEN (approximate), ARGV[2] retention in ms (0: none),
-- ARGV[3] arguments per entry, then each entry's field-value pairs in turn.
local per = tonumber(ARGV[3])
local added = 0
for i = 4, #ARGV, per do
  local cmd = {'XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*'}
  for j = i, i + per - 1 do
    cmd[#cmd + 1] = ARGV[j]
  end
  redis.call(unpack(cmd))
  added = added + 1
end
local retention = tonumber(ARGV[2])
if retention > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if now > retention then
    redis.call('XTRIM', KEYS[1], 'MINID', '~', string.format('%d', now - retention))
  end
end
return added
",
    )
});

/// How the feed is bounded (`ingester.detect.feed_max_len`, `ingester.detect.feed_retention`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedSettings {
    /// Entries kept, approximately (at least 1).
    pub max_len: u64,
    /// Entries older than this (by the Redis clock) are trimmed at the next append; zero keeps
    /// them until `max_len` pushes them out.
    pub retention: Duration,
}

/// What was judged: a trace's root span, or one of its spans (whose key is the span's service
/// and name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleKind {
    Root,
    Span,
}

impl SampleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SampleKind::Root => "root",
            SampleKind::Span => "span",
        }
    }
}

/// One judged sample, as the feed keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedEntry {
    pub trace_id: TraceId,
    /// The bucket judged: (service, endpoint, hour, dayType), or for a span (service, span
    /// name, hour, dayType).
    pub key: BaselineKey,
    pub kind: SampleKind,
    /// When the trace started, unix ms.
    pub start_ms: i64,
    /// When it was judged (the ingester's clock), unix ms: the explanation gives the baseline's
    /// age at this instant.
    pub at_ms: i64,
    /// The verdict with every number it was decided on.
    pub verdict: Verdict,
    /// The position in `overrides` of the entry that tuned the rule, if one did.
    pub override_index: Option<usize>,
}

impl FeedEntry {
    /// The threshold exceeded (`None` only for a verdict that was not judged).
    pub fn threshold_ms(&self) -> Option<f64> {
        self.verdict.threshold()
    }

    /// Which bound set the threshold.
    pub fn bound(&self) -> Option<Bound> {
        self.verdict.judgement.map(|j| j.bound)
    }

    /// `duration - threshold`.
    pub fn excess_ms(&self) -> Option<f64> {
        self.verdict.judgement.map(|j| j.excess_ms)
    }

    /// Which baseline was judged against: the exact bucket or a fallback level.
    pub fn baseline_source(&self) -> Option<Level> {
        self.verdict.source
    }

    /// The stream fields, always all of them, in this order.
    fn fields(&self) -> [(&'static str, String); FIELDS] {
        let v = &self.verdict;
        let opt = |x: Option<String>| x.unwrap_or_default();
        [
            ("v", VERSION.to_owned()),
            ("t", self.trace_id.to_string()),
            ("k", self.key.encode()),
            ("kd", kind_code(self.kind).to_owned()),
            ("st", self.start_ms.to_string()),
            ("at", self.at_ms.to_string()),
            ("s", status_code(v.status).to_owned()),
            ("d", v.duration_ms.to_string()),
            (
                "j",
                opt(v.judgement.map(|j| {
                    format!(
                        "{},{},{},{},{}",
                        j.threshold,
                        bound_code(j.bound),
                        j.p95_bound,
                        j.mad_bound,
                        j.excess_ms
                    )
                })),
            ),
            (
                "b",
                opt(v.baseline.map(|b| {
                    format!(
                        "{},{},{},{},{}",
                        b.p50, b.p95, b.mad, b.sample_count, b.updated_at
                    )
                })),
            ),
            ("src", opt(v.source.map(|l| l.as_str().to_owned()))),
            ("cv", opt(v.coverage.map(|(f, l)| format!("{f},{l}")))),
            ("bn", v.bucket_samples.to_string()),
            ("r", opt(v.rank.map(|r| r.to_string()))),
            (
                "rp",
                format!(
                    "{},{},{},{}",
                    v.factor, v.k, v.min_samples, v.min_threshold_ms
                ),
            ),
            ("ft", if v.fallback_tried { "1" } else { "0" }.to_owned()),
            ("o", opt(self.override_index.map(|i| i.to_string()))),
        ]
    }

    /// Reads [`FeedEntry::fields`]; the error says which field was missing or bad. Fields of
    /// other names are ignored, so that entries of a later writer that adds a field still read.
    fn decode(fields: &[(&[u8], &[u8])]) -> Result<FeedEntry, String> {
        let get = |name: &str| -> Result<&str, String> {
            let (_, value) = fields
                .iter()
                .find(|(n, _)| *n == name.as_bytes())
                .ok_or_else(|| format!("no field {name}"))?;
            std::str::from_utf8(value).map_err(|_| format!("field {name} is not UTF-8"))
        };
        let bad = |name: &str| format!("field {name} does not parse");
        let parse = |name: &str| -> Result<f64, String> {
            get(name)?.parse::<f64>().map_err(|_| bad(name))
        };
        let int = |name: &str| -> Result<i64, String> {
            get(name)?.parse::<i64>().map_err(|_| bad(name))
        };
        let optional = |name: &str| -> Result<Option<&str>, String> {
            get(name).map(|v| Some(v).filter(|v| !v.is_empty()))
        };
        if get("v")? != VERSION {
            return Err(format!("version {:?}, not {VERSION}", get("v")?));
        }
        let trace_id = TraceId::parse(get("t")?).map_err(|_| bad("t"))?;
        let key = BaselineKey::decode(get("k")?).map_err(|_| bad("k"))?;
        let kind = match get("kd")? {
            "r" => SampleKind::Root,
            "s" => SampleKind::Span,
            _ => return Err(bad("kd")),
        };
        let status = match get("s")? {
            "n" => Status::Normal,
            "a" => Status::Anomaly,
            "i" => Status::InsufficientData,
            _ => return Err(bad("s")),
        };
        let judgement = match optional("j")? {
            None => None,
            Some(text) => Some(judgement(text).ok_or_else(|| bad("j"))?),
        };
        let baseline = match optional("b")? {
            None => None,
            Some(text) => Some(baseline(text).ok_or_else(|| bad("b"))?),
        };
        let source = match optional("src")? {
            None => None,
            Some(text) => Some(level(text).ok_or_else(|| bad("src"))?),
        };
        let coverage = match optional("cv")? {
            None => None,
            Some(text) => {
                let hour = |h: &str| h.parse::<u8>().ok().filter(|h| *h < 24);
                let (first, last) = text.split_once(',').ok_or_else(|| bad("cv"))?;
                Some((
                    hour(first).ok_or_else(|| bad("cv"))?,
                    hour(last).ok_or_else(|| bad("cv"))?,
                ))
            }
        };
        let rank = match optional("r")? {
            None => None,
            Some(text) => Some(text.parse::<f64>().map_err(|_| bad("r"))?),
        };
        let (factor, k, min_samples, min_threshold_ms) =
            rule_params(get("rp")?).ok_or_else(|| bad("rp"))?;
        let fallback_tried = match get("ft")? {
            "0" => false,
            "1" => true,
            _ => return Err(bad("ft")),
        };
        let override_index = match optional("o")? {
            None => None,
            Some(text) => Some(text.parse::<usize>().map_err(|_| bad("o"))?),
        };
        Ok(FeedEntry {
            trace_id,
            key,
            kind,
            start_ms: int("st")?,
            at_ms: int("at")?,
            verdict: Verdict {
                status,
                duration_ms: parse("d")?,
                baseline,
                judgement,
                factor,
                k,
                min_samples,
                min_threshold_ms,
                source,
                coverage,
                bucket_samples: u64::try_from(int("bn")?).map_err(|_| bad("bn"))?,
                rank,
                fallback_tried,
            },
            override_index,
        })
    }
}

fn kind_code(kind: SampleKind) -> &'static str {
    match kind {
        SampleKind::Root => "r",
        SampleKind::Span => "s",
    }
}

fn status_code(status: Status) -> &'static str {
    match status {
        Status::Normal => "n",
        Status::Anomaly => "a",
        Status::InsufficientData => "i",
    }
}

fn bound_code(bound: Bound) -> &'static str {
    match bound {
        Bound::P95Factor => "p",
        Bound::P50KMad => "m",
        Bound::Floor => "f",
    }
}

fn level(text: &str) -> Option<Level> {
    [Level::Exact, Level::Nearby, Level::DayType, Level::All]
        .into_iter()
        .find(|l| l.as_str() == text)
}

/// Exactly `N` comma-separated parts.
fn parts<const N: usize>(text: &str) -> Option<[&str; N]> {
    let mut out = [""; N];
    let mut split = text.split(',');
    for slot in &mut out {
        *slot = split.next()?;
    }
    split.next().is_none().then_some(out)
}

fn judgement(text: &str) -> Option<Judgement> {
    let [threshold, bound, p95_bound, mad_bound, excess] = parts(text)?;
    let bound = match bound {
        "p" => Bound::P95Factor,
        "m" => Bound::P50KMad,
        "f" => Bound::Floor,
        _ => return None,
    };
    Some(Judgement {
        threshold: threshold.parse().ok()?,
        bound,
        p95_bound: p95_bound.parse().ok()?,
        mad_bound: mad_bound.parse().ok()?,
        excess_ms: excess.parse().ok()?,
    })
}

fn baseline(text: &str) -> Option<Baseline> {
    let [p50, p95, mad, n, updated_at] = parts(text)?;
    Some(Baseline {
        p50: p50.parse().ok()?,
        p95: p95.parse().ok()?,
        mad: mad.parse().ok()?,
        sample_count: n.parse().ok()?,
        updated_at: updated_at.parse().ok()?,
    })
}

fn rule_params(text: &str) -> Option<(f64, f64, u64, f64)> {
    let [factor, k, min_samples, floor] = parts(text)?;
    Some((
        factor.parse().ok()?,
        k.parse().ok()?,
        min_samples.parse().ok()?,
        floor.parse().ok()?,
    ))
}

/// Where a page of [`Store::anomalies_page`] continues: below this stream ID. Clients see it as
/// an opaque token, the ID (`ms-seq`) in unpadded base64url, as the key listing's cursors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FeedCursor {
    ms: u64,
    seq: u64,
}

impl FeedCursor {
    /// Reads a token written by [`fmt::Display`].
    pub fn parse(token: &str) -> Result<Self, InvalidCursor> {
        stream_id(&decode_token(token)?).ok_or(InvalidCursor)
    }

    /// When Redis recorded the entry, unix ms.
    pub fn recorded_ms(self) -> i64 {
        i64::try_from(self.ms).unwrap_or(i64::MAX)
    }
}

impl fmt::Display for FeedCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(format!("{}-{}", self.ms, self.seq)))
    }
}

/// A stream ID, `ms-seq`, both decimal without sign or leading `+`.
fn stream_id(text: &str) -> Option<FeedCursor> {
    let (ms, seq) = text.split_once('-')?;
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    Some(FeedCursor {
        ms: number(ms)?,
        seq: number(seq)?,
    })
}

/// Which entries [`Store::anomalies_page`] returns. Times select by when Redis recorded the
/// entry (its stream ID), both ends inclusive, unix ms.
#[derive(Debug, Clone, Copy, Default)]
pub struct FeedFilter<'a> {
    /// Only this service's entries (the exact name).
    pub service: Option<&'a str>,
    /// Only entries of this endpoint (or span name), the exact name.
    pub endpoint: Option<&'a str>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

impl FeedFilter<'_> {
    fn by_name(&self) -> bool {
        self.service.is_some() || self.endpoint.is_some()
    }

    fn matches(&self, key: &BaselineKey) -> bool {
        self.service.is_none_or(|s| s == key.service())
            && self.endpoint.is_none_or(|e| e == key.endpoint())
    }
}

/// An entry and when Redis recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedItem {
    /// Unix ms of the Redis clock when the entry was appended (its stream ID).
    pub recorded_ms: i64,
    pub entry: FeedEntry,
}

/// One page of the feed, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedPage {
    pub entries: Vec<FeedItem>,
    /// Where the next page continues; `None` when the range is exhausted. Set also when the
    /// page is short because [`FEED_SCAN_MAX`] entries were scanned.
    pub next: Option<FeedCursor>,
    /// Entries in the range scanned that did not decode and were left out.
    pub skipped: u64,
}

impl Store {
    /// Appends `entries` to the feed, then trims it to about `settings.max_len` entries and to
    /// `settings.retention` by the Redis clock: one script call, whatever the number of entries.
    pub async fn append_anomalies(
        &self,
        entries: &[FeedEntry],
        settings: &FeedSettings,
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut inv = APPEND.prepare_invoke();
        inv.key(self.keys.anomalies())
            .arg(settings.max_len.max(1))
            .arg(u64::try_from(settings.retention.as_millis()).unwrap_or(u64::MAX))
            .arg(2 * FIELDS);
        for entry in entries {
            for (name, value) in entry.fields() {
                inv.arg(name).arg(value);
            }
        }
        self.run("append_anomalies", async |conn| {
            let _: u64 = inv.invoke_async(conn).await?;
            Ok(())
        })
        .await
    }

    /// Up to `limit` entries (at least 1) that `filter` matches, newest first, below `after`
    /// when given. Reads at most [`FEED_SCAN_MAX`] entries: one `XREVRANGE` without a name
    /// filter, a few of [`FILTERED_CHUNK`] entries with one.
    pub async fn anomalies_page(
        &self,
        filter: &FeedFilter<'_>,
        limit: usize,
        after: Option<&FeedCursor>,
    ) -> Result<FeedPage, StoreError> {
        let limit = limit.clamp(1, FEED_SCAN_MAX);
        let mut page = FeedPage {
            entries: Vec::new(),
            next: None,
            skipped: 0,
        };
        let low = match filter.since_ms {
            Some(ms) => ms.max(0).to_string(),
            None => "-".to_owned(),
        };
        let until = filter.until_ms.map(|ms| u64::try_from(ms).unwrap_or(0));
        let mut high = match (after, until) {
            (Some(c), Some(u)) if c.ms > u => u.to_string(),
            (Some(c), _) => format!("({}-{}", c.ms, c.seq),
            (None, Some(u)) => u.to_string(),
            (None, None) => "+".to_owned(),
        };
        if filter
            .since_ms
            .zip(filter.until_ms)
            .is_some_and(|(s, u)| s > u)
        {
            return Ok(page);
        }
        let feed = self.keys.anomalies();
        let mut scanned = 0;
        loop {
            let wanted = limit - page.entries.len() + 1;
            let count = if filter.by_name() {
                wanted.max(FILTERED_CHUNK)
            } else {
                wanted
            }
            .min(FEED_SCAN_MAX - scanned)
            .max(1);
            let hold = if count * (2 * FIELDS + 2) > SHARED_REPLY_VALUES {
                Hold::Exclusive
            } else {
                Hold::Shared
            };
            let reply: Value = self
                .run_holding("anomalies_page", hold, async |conn| {
                    Ok(redis::cmd("XREVRANGE")
                        .arg(&feed)
                        .arg(&high)
                        .arg(&low)
                        .arg("COUNT")
                        .arg(count)
                        .query_async(conn)
                        .await?)
                })
                .await?;
            let rows = rows(&reply).ok_or_else(|| {
                StoreError::bad_data(&feed, "XREVRANGE answered something other than entries")
            })?;
            // Fewer than asked: nothing older is left in the range.
            let exhausted = rows.len() < count;
            let mut last = None;
            for (i, (id, fields)) in rows.iter().enumerate() {
                scanned += 1;
                let id = stream_id(id)
                    .ok_or_else(|| StoreError::bad_data(&feed, format!("stream ID {id:?}")))?;
                last = Some(id);
                let entry = match FeedEntry::decode(fields) {
                    Ok(entry) => entry,
                    Err(detail) => {
                        page.skipped += 1;
                        tracing::debug!(detail, "skipped a feed entry that does not decode");
                        continue;
                    }
                };
                if !filter.matches(&entry.key) {
                    continue;
                }
                page.entries.push(FeedItem {
                    recorded_ms: id.recorded_ms(),
                    entry,
                });
                if page.entries.len() == limit {
                    let more = i + 1 < rows.len() || !exhausted;
                    page.next = more.then_some(id);
                    return Ok(page);
                }
            }
            let Some(last) = last else {
                return Ok(page);
            };
            if exhausted {
                return Ok(page);
            }
            if scanned >= FEED_SCAN_MAX {
                page.next = Some(last);
                return Ok(page);
            }
            high = format!("({}-{}", last.ms, last.seq);
        }
    }
}

/// A stream entry: its ID and its field-value pairs.
type Row<'a> = (String, Vec<(&'a [u8], &'a [u8])>);

/// The entries of an `XREVRANGE` reply: each its ID and its field-value pairs. `None` when the
/// reply is not an array of entries; an entry whose fields are not name-value strings comes
/// with no fields (it then fails to decode and is counted as skipped).
fn rows(reply: &Value) -> Option<Vec<Row<'_>>> {
    let Value::Array(items) = reply else {
        return None;
    };
    items
        .iter()
        .map(|item| {
            let Value::Array(pair) = item else {
                return None;
            };
            let [id, fields] = pair.as_slice() else {
                return None;
            };
            let id = String::from_utf8(bytes(id)?.to_vec()).ok()?;
            let fields = match fields {
                Value::Array(flat) => flat
                    .chunks_exact(2)
                    .map(|nv| Some((bytes(&nv[0])?, bytes(&nv[1])?)))
                    .collect::<Option<Vec<_>>>()
                    .unwrap_or_default(),
                Value::Map(map) => map
                    .iter()
                    .map(|(n, v)| Some((bytes(n)?, bytes(v)?)))
                    .collect::<Option<Vec<_>>>()
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            Some((id, fields))
        })
        .collect()
}

fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use anomaly_core::{
        Baselines, DayType, DurationMs, Fallback, Quantiles, RuleParams, StatsConfig, Summary,
    };
    use anomaly_testkit::RedisServer;

    use super::*;
    use crate::RedisConfig;

    fn verdict(duration: f64, fallback: bool) -> Verdict {
        let baseline = Baseline {
            p50: 120.0,
            p95: 310.5,
            mad: 18.25,
            sample_count: 1000,
            updated_at: 1_764_050_000_000,
        };
        let quantiles = Quantiles::of_sorted(&(0..=100).map(f64::from).collect::<Vec<_>>());
        let stored = if fallback {
            let mut stored = Baselines::exact(Some(Baseline {
                sample_count: 7,
                ..baseline
            }));
            stored.fallback[0] = Some(Fallback {
                summary: Summary {
                    baseline,
                    quantiles,
                },
                first_hour: 22,
                last_hour: 2,
            });
            stored
        } else {
            Baselines::exact(Some(baseline))
        };
        Verdict::judge(
            DurationMs::new(duration).unwrap(),
            &stored,
            &RuleParams::default(),
            &StatsConfig::default().fallback,
        )
    }

    fn entry(n: u128, service: &str, endpoint: &str, duration: f64) -> FeedEntry {
        FeedEntry {
            trace_id: TraceId::parse(&format!("{n:x}")).unwrap(),
            key: BaselineKey::new(service, endpoint, 23, DayType::Weekend).unwrap(),
            kind: SampleKind::Root,
            start_ms: 1_764_050_001_000 + i64::try_from(n % 1000).unwrap(),
            at_ms: 1_764_050_002_000,
            verdict: verdict(duration, false),
            override_index: None,
        }
    }

    fn decoded(fields: &[(&str, String)]) -> Result<FeedEntry, String> {
        let pairs: Vec<(&[u8], &[u8])> = fields
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        FeedEntry::decode(&pairs)
    }

    #[test]
    fn entries_round_trip_through_their_fields() {
        let exact = entry(1, "a|b", "GET /{x}", 1840.123);
        let mut fallback = FeedEntry {
            kind: SampleKind::Span,
            verdict: verdict(1840.0, true),
            override_index: Some(3),
            ..entry(u128::MAX, "日本", "db SELECT", 0.0)
        };
        assert_eq!(fallback.verdict.source, Some(Level::Nearby));
        assert!(fallback.verdict.rank.is_some() && fallback.verdict.coverage.is_some());
        let not_judged = FeedEntry {
            verdict: Verdict::evaluate(
                DurationMs::new(5.0).unwrap(),
                None,
                &StatsConfig::default(),
            ),
            ..entry(2, "s", "e", 5.0)
        };
        fallback.verdict.fallback_tried = true;
        for e in [exact, fallback, not_judged] {
            assert_eq!(decoded(&e.fields()), Ok(e.clone()));
        }
    }

    #[test]
    fn entries_that_do_not_decode_say_why() {
        let good = entry(1, "s", "e", 1840.0).fields();
        let with = |name: &str, value: &str| {
            let mut f = good.clone();
            f.iter_mut().find(|(n, _)| *n == name).unwrap().1 = value.to_owned();
            f
        };
        let without = |name: &str| {
            let f: Vec<_> = good.iter().filter(|(n, _)| *n != name).cloned().collect();
            f
        };
        let cases = [
            (with("v", "2"), "version"),
            (with("t", "xyz"), "field t"),
            (with("k", "a|b"), "field k"),
            (with("kd", "x"), "field kd"),
            (with("s", "ANOMALY"), "field s"),
            (with("j", "1,p,2,3"), "field j"),
            (with("j", "1,q,2,3,4"), "field j"),
            (with("b", "1,2,3,-4,5"), "field b"),
            (with("src", "global"), "field src"),
            (with("cv", "3,24"), "field cv"),
            (with("r", "high"), "field r"),
            (with("rp", "2,10,50"), "field rp"),
            (with("ft", "yes"), "field ft"),
            (with("o", "-1"), "field o"),
            (with("st", "1.5"), "field st"),
        ];
        for (fields, why) in cases {
            let err = decoded(&fields).unwrap_err();
            assert!(err.contains(why), "{err} for {why}");
        }
        for name in ["v", "t", "d", "rp", "o"] {
            assert_eq!(decoded(&without(name)), Err(format!("no field {name}")));
        }
        // A field the reader does not know (a later writer's) is ignored.
        let mut more = good.to_vec();
        more.push(("zz", "new".to_owned()));
        assert!(decoded(&more).is_ok());
    }

    #[test]
    fn cursors_round_trip_and_refuse_what_they_did_not_write() {
        let c = FeedCursor {
            ms: 1_764_050_000_123,
            seq: 7,
        };
        assert_eq!(FeedCursor::parse(&c.to_string()), Ok(c));
        assert_eq!(c.recorded_ms(), 1_764_050_000_123);
        let token = |s: &str| URL_SAFE_NO_PAD.encode(s);
        for bad in [
            "",
            "!!",
            &token("12"),
            &token("12-"),
            &token("-3"),
            &token("+1-2"),
            &token("1-2-3"),
            &token("99999999999999999999-0"),
            &token("a%7Cb|GET /x"),
        ] {
            assert_eq!(FeedCursor::parse(bad), Err(InvalidCursor), "{bad:?}");
        }
    }

    fn store_on(url: &str) -> Store {
        // The shared Redis in the mode the test run asks for (anomaly-testkit's `redis_config`
        // builds another crate instance's config type, so it is spelled out here).
        let shared = url == anomaly_testkit::shared_redis_url();
        let mut config = RedisConfig {
            url: url.to_owned(),
            key_prefix: anomaly_testkit::unique_prefix("feed"),
            timeout: Duration::from_secs(5),
            ..RedisConfig::default()
        };
        match std::env::var(anomaly_testkit::MODE_VAR).as_deref() {
            Ok("cluster") if shared => {
                config.mode = crate::RedisMode::Cluster;
                config.cluster.urls = anomaly_testkit::shared_cluster().seed_urls();
            }
            Ok("sentinel") if shared => {
                let sentinels = anomaly_testkit::shared_sentinels();
                config.mode = crate::RedisMode::Sentinel;
                config.sentinel.master_name = sentinels.master_name().to_owned();
                config.sentinel.urls = sentinels.sentinel_urls();
            }
            _ => {}
        }
        Store::connect(&config).unwrap()
    }

    fn settings() -> FeedSettings {
        FeedSettings {
            max_len: 100_000,
            retention: Duration::from_secs(7 * 86_400),
        }
    }

    /// Appends with an explicit stream ID (`ms-seq`), as if Redis had recorded it then.
    async fn add_at(store: &Store, id: &str, fields: &[(&str, String)]) {
        let feed = store.keys.anomalies();
        store
            .run("test_xadd", async |conn| {
                let mut cmd = redis::cmd("XADD");
                cmd.arg(&feed).arg(id);
                for (n, v) in fields {
                    cmd.arg(*n).arg(v);
                }
                let _: String = cmd.query_async(conn).await?;
                Ok(())
            })
            .await
            .unwrap();
    }

    async fn len(store: &Store) -> u64 {
        let feed = store.keys.anomalies();
        store
            .run("test_xlen", async |conn| {
                Ok(redis::cmd("XLEN").arg(&feed).query_async(conn).await?)
            })
            .await
            .unwrap()
    }

    /// Every page of `filter`, `limit` at a time: the trace numbers of each page.
    async fn pages(store: &Store, filter: &FeedFilter<'_>, limit: usize) -> Vec<Vec<u128>> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .anomalies_page(filter, limit, after.as_ref())
                .await
                .unwrap();
            assert_eq!(page.skipped, 0);
            out.push(
                page.entries
                    .iter()
                    .map(|i| u128::from_str_radix(i.entry.trace_id.as_str(), 16).unwrap())
                    .collect(),
            );
            match page.next {
                Some(next) => after = Some(next),
                None => return out,
            }
        }
    }

    #[tokio::test]
    async fn pages_run_newest_first_and_filter() {
        let store = store_on(&anomaly_testkit::shared_redis_url());
        let all = FeedFilter::default();
        assert_eq!(pages(&store, &all, 10).await, vec![Vec::<u128>::new()]);
        // Traces 1..=25, in three appends; every third is of service b.
        let entries: Vec<FeedEntry> = (1..=25)
            .map(|n| {
                let service = if n % 3 == 0 { "b" } else { "a" };
                let endpoint = if n % 2 == 0 { "GET /even" } else { "GET /odd" };
                entry(n, service, endpoint, 1000.0 + n as f64)
            })
            .collect();
        for chunk in entries.chunks(10) {
            store.append_anomalies(chunk, &settings()).await.unwrap();
        }
        let newest_first: Vec<u128> = (1..=25).rev().collect();
        let page = store.anomalies_page(&all, 3, None).await.unwrap();
        assert_eq!(page.entries[0].entry, entries[24], "decoded as written");
        assert!(page.entries[0].recorded_ms >= page.entries[2].recorded_ms);
        let got = pages(&store, &all, 10).await;
        assert_eq!(got.len(), 3, "10 + 10 + 5, and no empty last page: {got:?}");
        assert_eq!(got.concat(), newest_first);
        // A page as large as what is left ends the listing.
        assert_eq!(pages(&store, &all, 25).await, vec![newest_first.clone()]);

        let b = FeedFilter {
            service: Some("b"),
            ..FeedFilter::default()
        };
        let want: Vec<u128> = (1..=25).rev().filter(|n| n % 3 == 0).collect();
        assert_eq!(pages(&store, &b, 3).await.concat(), want);
        let b_even = FeedFilter {
            endpoint: Some("GET /even"),
            ..b
        };
        assert_eq!(pages(&store, &b_even, 100).await, vec![vec![24, 18, 12, 6]]);
        let none = FeedFilter {
            service: Some("c"),
            ..FeedFilter::default()
        };
        assert_eq!(pages(&store, &none, 100).await, vec![Vec::<u128>::new()]);
    }

    #[tokio::test]
    async fn since_and_until_select_by_recorded_time_inclusive() {
        let store = store_on(&anomaly_testkit::shared_redis_url());
        for n in 1..=9u128 {
            let id = format!("{}-{}", 1000 * (n as u64 + 1) / 2, n % 2);
            add_at(&store, &id, &entry(n, "s", "e", 900.0).fields()).await;
        }
        // Recorded at 1000-1 (1), 1500-0 (2), 2000-1 (3), ... 5000-1 (9).
        let range = |since, until| FeedFilter {
            since_ms: since,
            until_ms: until,
            ..FeedFilter::default()
        };
        let cases = [
            (Some(2000), Some(3000), vec![5, 4, 3]),
            (Some(2001), Some(2999), vec![4]),
            (None, Some(1500), vec![2, 1]),
            (Some(4500), None, vec![9, 8]),
            (Some(3000), Some(2000), vec![]),
            (Some(-5), Some(0), vec![]),
        ];
        for (since, until, want) in cases {
            let got = pages(&store, &range(since, until), 2).await.concat();
            assert_eq!(got, want, "{since:?}..{until:?}");
        }
        // A cursor past `until` (from another query) is held to `until`.
        let far = FeedCursor { ms: 9999, seq: 0 };
        let page = store
            .anomalies_page(&range(None, Some(2000)), 10, Some(&far))
            .await
            .unwrap();
        let got: Vec<i64> = page.entries.iter().map(|i| i.recorded_ms).collect();
        assert_eq!(got, vec![2000, 1500, 1000]);
    }

    #[tokio::test]
    async fn entries_that_do_not_decode_are_skipped_and_counted() {
        let store = store_on(&anomaly_testkit::shared_redis_url());
        store
            .append_anomalies(&[entry(1, "s", "e", 900.0)], &settings())
            .await
            .unwrap();
        let mut bad_trace = entry(2, "s", "e", 900.0).fields().to_vec();
        bad_trace[1].1 = "not hex".to_owned();
        add_at(&store, "*", &bad_trace).await;
        add_at(&store, "*", &[("foo", "bar".to_owned())]).await;
        store
            .append_anomalies(&[entry(3, "s", "e", 900.0)], &settings())
            .await
            .unwrap();
        let page = store
            .anomalies_page(&FeedFilter::default(), 10, None)
            .await
            .unwrap();
        let traces: Vec<&str> = page
            .entries
            .iter()
            .map(|i| i.entry.trace_id.as_str())
            .collect();
        assert_eq!(traces.len(), 2, "{traces:?}");
        assert!(traces[0].ends_with("03") && traces[1].ends_with("01"));
        assert_eq!(page.skipped, 2);
        assert_eq!(page.next, None);
    }

    #[tokio::test]
    async fn a_filtered_page_scans_a_bounded_number_of_entries() {
        let store = store_on(&anomaly_testkit::shared_redis_url());
        store
            .append_anomalies(&[entry(1, "rare", "e", 900.0)], &settings())
            .await
            .unwrap();
        let common: Vec<FeedEntry> = (2..=FEED_SCAN_MAX as u128 + 1)
            .map(|n| entry(n, "common", "e", 900.0))
            .collect();
        for chunk in common.chunks(1000) {
            store.append_anomalies(chunk, &settings()).await.unwrap();
        }
        let rare = FeedFilter {
            service: Some("rare"),
            ..FeedFilter::default()
        };
        let first = store.anomalies_page(&rare, 10, None).await.unwrap();
        assert!(first.entries.is_empty());
        let next = first.next.expect("the scan stopped, not the range");
        let second = store.anomalies_page(&rare, 10, Some(&next)).await.unwrap();
        assert_eq!(second.entries.len(), 1);
        assert_eq!(second.entries[0].entry.key.service(), "rare");
        assert_eq!(second.next, None);
    }

    #[tokio::test]
    async fn the_feed_is_bounded_by_length_and_by_age() {
        // Small stream nodes, so that the approximate trims (whole nodes) show at test sizes.
        let server = RedisServer::start_with_args(&["--stream-node-max-entries", "4"]);
        let store = store_on(&server.url());
        let bounded = FeedSettings {
            max_len: 10,
            retention: Duration::ZERO,
        };
        for round in 0..10u128 {
            let batch: Vec<FeedEntry> = (0..7)
                .map(|i| entry(round * 10 + i + 1, "s", "e", 900.0))
                .collect();
            store.append_anomalies(&batch, &bounded).await.unwrap();
            let n = len(&store).await;
            assert!(n <= 10 + 4, "{n} entries after round {round}");
        }
        assert!(len(&store).await >= 10);
        let page = store
            .anomalies_page(&FeedFilter::default(), 1, None)
            .await
            .unwrap();
        assert!(
            page.entries[0].entry.trace_id.as_str().ends_with("61"),
            "newest kept"
        );

        // Eight entries recorded in 1970 fill two nodes; an append trims them by age only.
        let store = store_on(&server.url());
        for i in 1..=8u128 {
            add_at(
                &store,
                &format!("1000-{i}"),
                &entry(i, "s", "e", 900.0).fields(),
            )
            .await;
        }
        let keep_all = FeedSettings {
            max_len: 1000,
            retention: Duration::ZERO,
        };
        store
            .append_anomalies(&[entry(9, "s", "e", 900.0)], &keep_all)
            .await
            .unwrap();
        assert_eq!(len(&store).await, 9, "no retention, nothing trimmed");
        let week = FeedSettings {
            max_len: 1000,
            retention: Duration::from_secs(7 * 86_400),
        };
        store
            .append_anomalies(&[entry(10, "s", "e", 900.0)], &week)
            .await
            .unwrap();
        let page = store
            .anomalies_page(&FeedFilter::default(), 100, None)
            .await
            .unwrap();
        let traces: Vec<&str> = page
            .entries
            .iter()
            .map(|i| i.entry.trace_id.as_str())
            .collect();
        assert_eq!(traces.len(), 2, "{traces:?}");
        assert!(traces[0].ends_with("0a") && traces[1].ends_with("09"));
    }
}
