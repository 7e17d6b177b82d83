//! The endpoint listing: `keyEndpoints`, every (service, endpoint) that has windows, and the
//! paged reads behind the checker's `GET /v1/keys` and `GET /v1/services`.
//!
//! `keyEndpoints` is a sorted set whose members all score 0, so Redis orders them by their bytes
//! and ZRANGEBYLEX reads any range of them in O(log N + page). A member is `service|endpoint`,
//! both percent-encoded exactly as in key bodies (it is a body without its hour and day type).
//! `|` never occurs inside an encoded name, so one service's endpoints are the contiguous range
//! of members that start with `service|`, all of which sort below `service|\xFF` (no UTF-8 text
//! holds the byte 0xFF).
//!
//! A page starts after the last member the previous page read (its cursor). Paging therefore
//! never loads the whole set, lists every member that stays in the set exactly once, and is not
//! thrown off by members added or removed between pages (a SCAN cursor over a set that grows
//! can repeat members). Each page is a bounded number of round trips whatever the size of the
//! set: one ZRANGEBYLEX and one pipeline of LLENs for [`Store::list_endpoints`], one script
//! call for [`Store::list_services`].
//!
//! The recomputer maintains the set: [`Store::index_endpoints`] adds the endpoints of the keys
//! it recomputes (and of every key in `keyIndex` during a rebuild), and
//! [`Store::prune_endpoints`] removes an endpoint once none of its 48 windows exists.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::LazyLock;

use anomaly_core::{BaselineKey, DayType, NameRules};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use deadpool_redis::redis::{self, Script};

use crate::{Hold, SHARED_REPLY_VALUES, Store, StoreError};

/// Buckets per day type: one per local hour.
pub const HOURS: usize = 24;

const DAY_TYPES: [DayType; 2] = [DayType::Weekday, DayType::Weekend];

/// The distinct services of a range of `keyEndpoints`: one ZRANGEBYLEX per service, each
/// finding the first member past the previous service's endpoints, so a page costs one round
/// trip and O(services x log N) in Redis however many endpoints each service has.
static SERVICES: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS[1] keyEndpoints. ARGV[1] where to start (a ZRANGEBYLEX bound), ARGV[2] most services.
local services = {}
local from = ARGV[1]
for _ = 1, tonumber(ARGV[2]) do
  local first = redis.call('ZRANGEBYLEX', KEYS[1], from, '+', 'LIMIT', 0, 1)[1]
  if not first then break end
  local bar = string.find(first, '|', 1, true)
  local service = bar and string.sub(first, 1, bar - 1) or first
  services[#services + 1] = service
  from = '(' .. service .. '|\255'
end
return services
",
    )
});

/// Removes the endpoints none of whose windows exists. The check and the removal are one
/// script, so an endpoint whose window appears meanwhile is never removed by a stale check.
static PRUNE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS[1] keyEndpoints, then the windows of each member of ARGV in turn.
-- ARGV: a member and how many of the KEYS are its windows, repeated.
local removed = 0
local k = 2
for i = 1, #ARGV, 2 do
  local n = tonumber(ARGV[i + 1])
  local alive = false
  for j = k, k + n - 1 do
    if redis.call('EXISTS', KEYS[j]) == 1 then
      alive = true
      break
    end
  end
  k = k + n
  if not alive then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return removed
",
    )
});

/// A cursor that this listing did not hand out (not base64url, or not a position in the
/// listing it was given to).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the cursor is not one this listing returned; start again without a cursor")]
pub struct InvalidCursor;

/// Where a page of [`Store::list_endpoints`] starts: after this member. Clients see it as an
/// opaque token, the member in unpadded base64url.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointCursor(String);

impl EndpointCursor {
    /// Reads a token written by [`fmt::Display`]: it must name an endpoint (a cursor of
    /// [`Store::list_services`] does not).
    pub fn parse(token: &str) -> Result<Self, InvalidCursor> {
        let member = decode_token(token)?;
        names(&member).ok_or(InvalidCursor)?;
        Ok(EndpointCursor(member))
    }
}

impl fmt::Display for EndpointCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(&self.0))
    }
}

/// Where a page of [`Store::list_services`] starts: after this (encoded) service. Clients see
/// it as an opaque token, unpadded base64url.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCursor(String);

impl ServiceCursor {
    /// Reads a token written by [`fmt::Display`]: it must name a service (a cursor of
    /// [`Store::list_endpoints`] does not).
    pub fn parse(token: &str) -> Result<Self, InvalidCursor> {
        let service = decode_token(token)?;
        service_name(&service).ok_or(InvalidCursor)?;
        Ok(ServiceCursor(service))
    }
}

impl fmt::Display for ServiceCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(&self.0))
    }
}

pub(crate) fn decode_token(token: &str) -> Result<String, InvalidCursor> {
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| InvalidCursor)?;
    String::from_utf8(bytes).map_err(|_| InvalidCursor)
}

/// One page of a listing, and where the next one starts (`None`: this was the last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T, C> {
    pub items: Vec<T>,
    pub next: Option<C>,
}

impl<T, C> Page<T, C> {
    fn empty() -> Self {
        Page {
            items: Vec::new(),
            next: None,
        }
    }
}

/// Which endpoints [`Store::list_endpoints`] lists, and which of their buckets it counts.
#[derive(Debug, Clone, Copy, Default)]
pub struct EndpointFilter<'a> {
    /// Only this service's endpoints (the exact name).
    pub service: Option<&'a str>,
    /// Only endpoints of this exact name: of `service` when it is set, else of every service
    /// (then a page holds the matches among the `limit` endpoints it read, possibly none).
    pub endpoint: Option<&'a str>,
    /// Count only this day type's 24 buckets; both when `None`.
    pub day_type: Option<DayType>,
}

/// An endpoint and how many samples each of its buckets' windows holds (LLEN of `dur:{B}`;
/// 0 for a bucket without a window).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSamples {
    pub service: String,
    pub endpoint: String,
    /// By local hour, when weekday buckets were counted.
    pub weekday: Option<[u64; HOURS]>,
    /// By local hour, when weekend buckets were counted.
    pub weekend: Option<[u64; HOURS]>,
}

impl EndpointSamples {
    /// Every sample counted.
    pub fn total(&self) -> u64 {
        self.counts().sum()
    }

    /// The samples of the busiest bucket counted (0 when none was).
    pub fn busiest(&self) -> u64 {
        self.counts().max().unwrap_or(0)
    }

    fn counts(&self) -> impl Iterator<Item = u64> + '_ {
        self.weekday.iter().chain(&self.weekend).flatten().copied()
    }
}

/// What one step of [`Store::prune_endpoints`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneStep {
    /// Endpoints removed because none of their windows exists.
    pub removed: u64,
    /// Where the next step starts; `None` when the sweep is done.
    pub next: Option<EndpointCursor>,
}

/// A ZRANGEBYLEX bound.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Bound {
    Min,
    Max,
    Inclusive(Vec<u8>),
    Exclusive(Vec<u8>),
}

impl Bound {
    fn arg(&self) -> Vec<u8> {
        let (mark, value): (u8, &[u8]) = match self {
            Bound::Min => return b"-".to_vec(),
            Bound::Max => return b"+".to_vec(),
            Bound::Inclusive(v) => (b'[', v),
            Bound::Exclusive(v) => (b'(', v),
        };
        let mut arg = Vec::with_capacity(value.len() + 1);
        arg.push(mark);
        arg.extend_from_slice(value);
        arg
    }

    /// The tighter of this lower bound and "after `member`".
    fn after(self, member: &str) -> Bound {
        match self {
            Bound::Min => Bound::Exclusive(member.as_bytes().to_vec()),
            Bound::Inclusive(v) | Bound::Exclusive(v) if member.as_bytes() >= v.as_slice() => {
                Bound::Exclusive(member.as_bytes().to_vec())
            }
            other => other,
        }
    }
}

/// The members of `keyEndpoints` that `filter` can match, as ZRANGEBYLEX bounds; `None` when
/// no member can (a name that no key can hold).
fn range(filter: &EndpointFilter<'_>) -> Option<(Bound, Bound)> {
    match (filter.service, filter.endpoint) {
        (Some(service), Some(endpoint)) => {
            let m = member(service, endpoint)?.into_bytes();
            Some((Bound::Inclusive(m.clone()), Bound::Inclusive(m)))
        }
        (Some(service), None) => {
            let mut prefix = service_prefix(service)?.into_bytes();
            let lo = Bound::Inclusive(prefix.clone());
            prefix.push(0xFF);
            Some((lo, Bound::Exclusive(prefix)))
        }
        (None, _) => Some((Bound::Min, Bound::Max)),
    }
}

/// The member of (service, endpoint); `None` for a name no key can hold.
fn member(service: &str, endpoint: &str) -> Option<String> {
    let any = NameRules::new(NameRules::MAX_BYTES_LIMIT).ok()?;
    let key = BaselineKey::with_rules(service, endpoint, 0, DayType::Weekday, any).ok()?;
    Some(key.endpoint_body())
}

/// The encoded service and its `|`: every member of the service starts with it.
fn service_prefix(service: &str) -> Option<String> {
    let mut m = member(service, "-")?;
    m.truncate(m.len() - 1);
    Some(m)
}

/// A key of a member's endpoint (its other buckets are [`BaselineKey::at`]); `None` when the
/// member is not an encoded `service|endpoint` (not written by this crate). A member is read
/// back as a key body, so that it is held to exactly the bodies' encoding.
fn endpoint_key(member: &str) -> Option<BaselineKey> {
    BaselineKey::decode(&format!("{member}|0|{}", DayType::Weekday)).ok()
}

/// The keys of an endpoint's buckets of `day_types`, hour by hour.
fn buckets(key: &BaselineKey, day_types: &[DayType]) -> impl Iterator<Item = BaselineKey> {
    day_types
        .iter()
        .flat_map(move |&d| (0..24).map(move |hour| key.at(hour, d)))
}

/// The service and endpoint of a member, decoded.
fn names(member: &str) -> Option<(String, String)> {
    let key = endpoint_key(member)?;
    Some((key.service().to_owned(), key.endpoint().to_owned()))
}

/// The name of an encoded service.
fn service_name(encoded: &str) -> Option<String> {
    if encoded.contains('|') {
        return None;
    }
    names(&format!("{encoded}|-")).map(|(service, _)| service)
}

impl Store {
    /// Adds the endpoints of `keys` to `keyEndpoints` (one ZADD; endpoints already listed are
    /// left as they are). Takes a slice (`&keys`) or any iterator of keys.
    pub async fn index_endpoints<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a BaselineKey>,
    ) -> Result<(), StoreError> {
        let members: BTreeSet<String> = keys.into_iter().map(|k| k.endpoint_body()).collect();
        if members.is_empty() {
            return Ok(());
        }
        let index = self.keys.key_endpoints();
        self.run("index_endpoints", async |conn| {
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(&index);
            for m in &members {
                cmd.arg(0).arg(m);
            }
            let _: i64 = cmd.query_async(conn).await?;
            Ok(())
        })
        .await
    }

    /// Up to `limit` endpoints (at least 1) that `filter` matches, in byte order of their
    /// encoded names, after `after`, with the samples of their buckets: one ZRANGEBYLEX and
    /// one pipeline of LLENs.
    ///
    /// `next` is set exactly when more endpoints follow the `limit` read. With an endpoint
    /// filter and no service, the page holds the matches among them and can be short or empty
    /// while `next` is set.
    pub async fn list_endpoints(
        &self,
        filter: &EndpointFilter<'_>,
        after: Option<&EndpointCursor>,
        limit: usize,
    ) -> Result<Page<EndpointSamples, EndpointCursor>, StoreError> {
        let limit = limit.max(1);
        let Some((lo, hi)) = range(filter) else {
            return Ok(Page::empty());
        };
        let lo = match after {
            Some(EndpointCursor(m)) => lo.after(m),
            None => lo,
        };
        let index = self.keys.key_endpoints();
        let mut members: Vec<String> = self
            .run("list_endpoints", async |conn| {
                Ok(redis::cmd("ZRANGEBYLEX")
                    .arg(&index)
                    .arg(lo.arg())
                    .arg(hi.arg())
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit + 1)
                    .query_async(conn)
                    .await?)
            })
            .await?;
        // One more than the page was asked for: whether it came says whether a next page exists.
        let next = (members.len() > limit).then(|| EndpointCursor(members[limit - 1].clone()));
        members.truncate(limit);

        let day_types: &[DayType] = match filter.day_type {
            Some(DayType::Weekday) => &DAY_TYPES[..1],
            Some(DayType::Weekend) => &DAY_TYPES[1..],
            None => &DAY_TYPES,
        };
        let mut listed = Vec::new();
        let mut windows = Vec::new();
        for m in &members {
            let Some(key) = endpoint_key(m) else {
                tracing::debug!(
                    member = m,
                    "skipped a keyEndpoints member that does not decode"
                );
                continue;
            };
            if filter.endpoint.is_some_and(|e| e != key.endpoint()) {
                continue;
            }
            windows.extend(buckets(&key, day_types).map(|b| self.keys.dur(&b.encode())));
            listed.push((key.service().to_owned(), key.endpoint().to_owned()));
        }
        if listed.is_empty() {
            return Ok(Page {
                items: Vec::new(),
                next,
            });
        }
        let hold = if windows.len() > SHARED_REPLY_VALUES {
            Hold::Exclusive
        } else {
            Hold::Shared
        };
        let lengths: Vec<u64> = self
            .run_holding("endpoint_samples", hold, async |conn| {
                let mut pipe = redis::pipe();
                for name in &windows {
                    pipe.cmd("LLEN").arg(name);
                }
                Ok(pipe.query_async(conn).await?)
            })
            .await?;
        let mut counts = lengths.chunks_exact(HOURS).map(|c| {
            let mut hours = [0; HOURS];
            hours.copy_from_slice(c);
            hours
        });
        let items = listed
            .into_iter()
            .map(|(service, endpoint)| {
                let mut e = EndpointSamples {
                    service,
                    endpoint,
                    weekday: None,
                    weekend: None,
                };
                for &day_type in day_types {
                    let hours = counts.next();
                    match day_type {
                        DayType::Weekday => e.weekday = hours,
                        DayType::Weekend => e.weekend = hours,
                    }
                }
                e
            })
            .collect();
        Ok(Page { items, next })
    }

    /// Up to `limit` distinct services (at least 1) that have endpoints in `keyEndpoints`, in
    /// byte order of their encoded names, after `after`: one script call.
    pub async fn list_services(
        &self,
        after: Option<&ServiceCursor>,
        limit: usize,
    ) -> Result<Page<String, ServiceCursor>, StoreError> {
        let limit = limit.max(1);
        let from = match after {
            Some(ServiceCursor(service)) => {
                let mut past = service.clone().into_bytes();
                past.extend_from_slice(b"|\xFF");
                Bound::Exclusive(past)
            }
            None => Bound::Min,
        };
        let mut inv = SERVICES.prepare_invoke();
        inv.key(self.keys.key_endpoints())
            .arg(from.arg())
            .arg(limit + 1);
        let mut encoded: Vec<String> = self
            .run("list_services", async |conn| {
                Ok(inv.invoke_async(conn).await?)
            })
            .await?;
        let next = (encoded.len() > limit).then(|| ServiceCursor(encoded[limit - 1].clone()));
        encoded.truncate(limit);
        let items = encoded.iter().filter_map(|s| service_name(s)).collect();
        Ok(Page { items, next })
    }

    /// One step of the sweep of `keyEndpoints`: of up to `count` endpoints after `after`,
    /// removes those none of whose 48 windows exists (and members that do not decode). Two
    /// round trips; the sweep is done when `next` is `None`.
    pub async fn prune_endpoints(
        &self,
        after: Option<&EndpointCursor>,
        count: usize,
    ) -> Result<PruneStep, StoreError> {
        let count = count.max(1);
        let index = self.keys.key_endpoints();
        let from = match after {
            Some(EndpointCursor(m)) => Bound::Min.after(m),
            None => Bound::Min,
        };
        let members: Vec<String> = self
            .run("prune_endpoints_range", async |conn| {
                Ok(redis::cmd("ZRANGEBYLEX")
                    .arg(&index)
                    .arg(from.arg())
                    .arg("+")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(count)
                    .query_async(conn)
                    .await?)
            })
            .await?;
        let Some(last) = members.last() else {
            return Ok(PruneStep {
                removed: 0,
                next: None,
            });
        };
        let next = (members.len() == count).then(|| EndpointCursor(last.clone()));
        // A member that does not decode has no windows: it is removed.
        let windows: Vec<Vec<String>> = members
            .iter()
            .map(|m| {
                endpoint_key(m)
                    .iter()
                    .flat_map(|key| buckets(key, &DAY_TYPES))
                    .map(|b| self.keys.dur(&b.encode()))
                    .collect()
            })
            .collect();
        let removed: u64 = if self.keys.is_cluster() {
            // The windows are in other slots than the listing: check, then remove. An endpoint
            // whose first window appears in between leaves the listing until its next
            // recompute lists it again (see `index_endpoints`).
            let names: Vec<&String> = windows.iter().flatten().collect();
            let exists: Vec<bool> = self
                .run_holding("prune_endpoints_check", Hold::Exclusive, async |conn| {
                    let mut pipe = redis::pipe();
                    for name in &names {
                        pipe.cmd("EXISTS").arg(*name);
                    }
                    Ok(pipe.query_async(conn).await?)
                })
                .await?;
            let mut alive = exists.into_iter();
            let gone: Vec<&String> = members
                .iter()
                .zip(&windows)
                .filter(|(_, w)| !alive.by_ref().take(w.len()).fold(false, |a, e| a | e))
                .map(|(m, _)| m)
                .collect();
            if gone.is_empty() {
                0
            } else {
                self.run("prune_endpoints", async |conn| {
                    Ok(redis::cmd("ZREM")
                        .arg(&index)
                        .arg(&gone)
                        .query_async(conn)
                        .await?)
                })
                .await?
            }
        } else {
            let mut inv = PRUNE.prepare_invoke();
            inv.key(&index);
            for (m, names) in members.iter().zip(&windows) {
                inv.arg(m).arg(names.len());
                for name in names {
                    inv.key(name);
                }
            }
            self.run("prune_endpoints", async |conn| {
                Ok(inv.invoke_async(conn).await?)
            })
            .await?
        };
        Ok(PruneStep { removed, next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(service: &str, endpoint: &str) -> BaselineKey {
        BaselineKey::new(service, endpoint, 23, DayType::Weekend).unwrap()
    }

    #[test]
    fn members_are_key_bodies_without_hour_and_day_type() {
        let cases = [
            ("checkout", "POST /pay", "checkout|POST /pay"),
            ("a|b", "c|d", "a%7Cb|c%7Cd"),
            ("{x}", "%\n", "%7Bx%7D|%25%0A"),
            ("日本", "ünï 🎉", "日本|ünï 🎉"),
        ];
        for (service, endpoint, want) in cases {
            assert_eq!(key(service, endpoint).endpoint_body(), want);
            assert_eq!(member(service, endpoint).as_deref(), Some(want));
            assert_eq!(names(want), Some((service.to_owned(), endpoint.to_owned())));
            let prefix = service_prefix(service).unwrap();
            assert!(
                want.starts_with(&prefix) && prefix.ends_with('|'),
                "{prefix}"
            );
            assert_eq!(
                service_name(&prefix[..prefix.len() - 1]).as_deref(),
                Some(service)
            );
        }
        assert_eq!(member("", "x"), None);
        assert_eq!(names("no-bar"), None);
        assert_eq!(names("a|b|c"), None);
        assert_eq!(names("a%41|b"), None, "not canonical");
        assert_eq!(service_name("a|b"), None);
    }

    #[test]
    fn cursors_round_trip_and_refuse_what_they_did_not_write() {
        let e = EndpointCursor("a%7Cb|GET /x".to_owned());
        assert_eq!(EndpointCursor::parse(&e.to_string()), Ok(e.clone()));
        let s = ServiceCursor("a%7Cb".to_owned());
        assert_eq!(ServiceCursor::parse(&s.to_string()), Ok(s.clone()));
        // Not base64url, padded, not UTF-8, not a position, or the other listing's cursor.
        let not_utf8 = URL_SAFE_NO_PAD.encode([0xFF, 0xFE]);
        let garbage = URL_SAFE_NO_PAD.encode("a|b|c");
        for bad in ["", "!!", "YQ==", &not_utf8, &garbage, &s.to_string()] {
            assert_eq!(EndpointCursor::parse(bad), Err(InvalidCursor), "{bad:?}");
        }
        for bad in ["", "!!", &not_utf8, &e.to_string()] {
            assert_eq!(ServiceCursor::parse(bad), Err(InvalidCursor), "{bad:?}");
        }
    }

    #[test]
    fn filters_become_lex_ranges_and_cursors_only_tighten_them() {
        let all = EndpointFilter::default();
        assert_eq!(range(&all), Some((Bound::Min, Bound::Max)));
        let service = EndpointFilter {
            service: Some("a|b"),
            ..EndpointFilter::default()
        };
        let (lo, hi) = range(&service).unwrap();
        assert_eq!(lo.arg(), b"[a%7Cb|");
        assert_eq!(hi.arg(), b"(a%7Cb|\xFF");
        // A cursor below the range leaves it; one inside moves its start past the cursor.
        assert_eq!(lo.clone().after("a"), lo);
        assert_eq!(lo.after("a%7Cb|x").arg(), b"(a%7Cb|x");
        let one = EndpointFilter {
            service: Some("s"),
            endpoint: Some("e"),
            ..EndpointFilter::default()
        };
        let (lo, hi) = range(&one).unwrap();
        assert_eq!((lo.arg(), hi.arg()), (b"[s|e".to_vec(), b"[s|e".to_vec()));
        assert_eq!(
            range(&EndpointFilter {
                service: Some(""),
                ..EndpointFilter::default()
            }),
            None
        );
    }
}
