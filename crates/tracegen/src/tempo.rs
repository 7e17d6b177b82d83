//! A fake Grafana Tempo (`GET /api/search`, trace by ID `GET /api/traces/{id}` and, as v3,
//! `/api/v2/traces/{id}`, `/ready`, `/api/echo`) over an in-memory, mutable set of traces, for
//! tests of the ingester's poller and of trace fetching (trace by ID is in `tempo/by_id.rs`).
//!
//! It behaves like the real servers recorded in `testdata/tempo/` (v2.0.1 and v3.0.3):
//! - `start`/`end` are unix seconds, both or neither; RFC3339, one without the other,
//!   `end <= start` and ranges over 168 h are 400s with Tempo's plain-text messages.
//! - `limit` defaults to 20; 0 or non-numeric is 400 (v3 also rejects more than its maximum).
//!   [`FakeTempo::set_max_limit`] imitates an operator's `query_frontend.search.max_result_limit`
//!   either way Tempo enforces it: v2.0 to v2.5 silently lower a larger `limit` to it
//!   ([`LimitCap::Clamp`]); v2.6 and later answer 400 `limit 500 exceeds max limit 20`
//!   ([`LimitCap::Reject`]).
//! - `q` (TraceQL) and `tags` are accepted but not both; `q` must look like a braced query and
//!   otherwise filters nothing.
//! - A trace matches when it **overlaps** the window. When more match than `limit`, an arbitrary
//!   subset is kept (ordered by a hash of the trace ID, never the newest), then sorted newest
//!   first, as Tempo does; [`FakeTempo::set_overshoot`] returns a few more than `limit`, as
//!   v2.0.1 does when several shards answer.
//! - Bodies are protobuf-JSON: 64-bit numbers as strings, zero values omitted (`durationMs` is
//!   absent under 1 ms, `traces` absent when empty in v2, `[]` in v3), trace IDs without their
//!   leading zeros, a `metrics` object.
//! - [`Mode::V3`] hides the newest 30 s: `end` is cut to `now - 30 s` (after the `end <= start`
//!   check, before the 168 h check, as the recordings show).
//! - With a tenant configured, a search without `X-Scope-OrgID` is 401 `no org id`; optional
//!   basic or bearer authentication stands in for a proxy in front of Tempo.
//!
//! Tests control the clock ([`FakeTempo::set_now`]) and inject faults: a status for the next N
//! requests, until cleared, or after N more successes; delays; malformed or truncated JSON.
//! Every search request is logged ([`FakeTempo::requests`]).

mod by_id;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

pub use by_id::{SpanFn, SpanSource, TraceRequest};

/// The service name Tempo reports while a trace's root span has not arrived.
pub const PARTIAL_ROOT: &str = "<root span not yet received>";

/// The widest search range Tempo accepts.
pub const MAX_RANGE_SECS: u64 = 168 * 3600;

/// How much of the newest data Tempo v3 hides from search.
pub const V3_FRESHNESS_CUT: Duration = Duration::from_secs(30);

const V3_MAX_LIMIT: u64 = 262_144;

/// A trace as Tempo's search reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// Hex; served without leading zeros, as Tempo does.
    pub trace_id: String,
    pub root_service: String,
    /// `None` for a partial trace (no root span yet).
    pub root_name: Option<String>,
    pub start_unix_nano: u64,
    /// Whole milliseconds, as Tempo reports them; 0 is omitted from responses.
    pub duration_ms: u32,
}

impl Trace {
    pub fn new(
        trace_id: impl Into<String>,
        service: impl Into<String>,
        name: impl Into<String>,
        start_unix_nano: u64,
        duration_ms: u32,
    ) -> Self {
        Trace {
            trace_id: trace_id.into(),
            root_service: service.into(),
            root_name: Some(name.into()),
            start_unix_nano,
            duration_ms,
        }
    }

    /// A trace whose root span has not arrived yet.
    pub fn partial(trace_id: impl Into<String>, start_unix_nano: u64, duration_ms: u32) -> Self {
        Trace {
            trace_id: trace_id.into(),
            root_service: PARTIAL_ROOT.to_owned(),
            root_name: None,
            start_unix_nano,
            duration_ms,
        }
    }

    fn end_unix_nano(&self) -> u64 {
        self.start_unix_nano + u64::from(self.duration_ms) * 1_000_000
    }

    fn served_id(&self) -> &str {
        let trimmed = self.trace_id.trim_start_matches('0');
        if trimmed.is_empty() { "0" } else { trimmed }
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("traceID".into(), json!(self.served_id()));
        m.insert("rootServiceName".into(), json!(self.root_service));
        if let Some(name) = &self.root_name {
            m.insert("rootTraceName".into(), json!(name));
        }
        m.insert(
            "startTimeUnixNano".into(),
            json!(self.start_unix_nano.to_string()),
        );
        if self.duration_ms > 0 {
            m.insert("durationMs".into(), json!(self.duration_ms));
        }
        Value::Object(m)
    }
}

/// Which Tempo to imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// v2.0.1: traces visible at once; `traces` omitted when empty.
    #[default]
    V2,
    /// v3.0.3: the newest 30 s hidden; `traces: []` when empty; a maximum limit.
    V3,
}

/// How Tempo enforces `query_frontend.search.max_result_limit` (`adjustLimit` in Tempo's
/// `modules/frontend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitCap {
    /// v2.0 to v2.5: a larger `limit` is lowered to the cap, with no error and no flag.
    Clamp(u64),
    /// v2.6 and later: a larger `limit` is a 400 `limit N exceeds max limit CAP`.
    Reject(u64),
}

/// Authentication a proxy in front of Tempo would demand.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Auth {
    #[default]
    None,
    Basic {
        username: String,
        password: String,
    },
    Bearer(String),
}

/// A way for a search to go wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and a plain-text body.
    Status(u16, String),
    /// A 200 whose body is not JSON at all.
    Malformed,
    /// A 200 whose JSON body is cut off half-way.
    Truncated,
    /// A 200 whose valid JSON body (no traces, a long padding field) is this many bytes long,
    /// for response-size caps.
    Huge(usize),
}

impl Fault {
    pub fn unavailable() -> Fault {
        Fault::Status(503, "ingester unavailable".to_owned())
    }
}

/// One search request as the fake saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchRequest {
    pub query: Vec<(String, String)>,
    pub start: Option<u64>,
    pub end: Option<u64>,
    pub org_id: Option<String>,
    pub user_agent: Option<String>,
    pub status: u16,
    /// Traces in the response.
    pub returned: usize,
}

impl SearchRequest {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct Shared {
    traces: Vec<Trace>,
    /// Position of each trace in `traces` by ID, so loading a week of history stays linear.
    index: HashMap<String, usize>,
    /// Unix nanoseconds; `None` follows the system clock.
    now: Option<u64>,
    mode: Mode,
    tenant: Option<String>,
    auth: Auth,
    overshoot: usize,
    max_limit: Option<LimitCap>,
    status_config: bool,
    next_faults: VecDeque<Fault>,
    sticky_fault: Option<Fault>,
    fail_after: Option<(usize, Fault)>,
    delay: Duration,
    requests: Vec<SearchRequest>,
    /// Trace by ID: spans loaded per trace (32 lower-case hex digits), and how spans are made
    /// for a listed trace that has none.
    spans: HashMap<String, Vec<ResourceSpans>>,
    span_source: Option<SpanSource>,
    spans_per_trace: Option<usize>,
    max_bytes_per_trace: Option<usize>,
    trace_faults: VecDeque<Fault>,
    sticky_trace_fault: Option<Fault>,
    trace_delay: Duration,
    trace_requests: Vec<TraceRequest>,
}

/// The fake Tempo; cheap to clone, all clones share one state.
#[derive(Debug, Clone, Default)]
pub struct FakeTempo {
    state: Arc<Mutex<Shared>>,
}

/// A fake Tempo serving on a loopback port until dropped.
#[derive(Debug)]
pub struct RunningTempo {
    pub tempo: FakeTempo,
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl RunningTempo {
    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl std::ops::Deref for RunningTempo {
    type Target = FakeTempo;
    fn deref(&self) -> &FakeTempo {
        &self.tempo
    }
}

impl Drop for RunningTempo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeTempo {
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves on a free loopback port in the background.
    pub async fn start() -> RunningTempo {
        Self::new().spawn().await
    }

    /// Serves this fake on a free loopback port in the background.
    pub async fn spawn(self) -> RunningTempo {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the fake tempo");
        let addr = listener.local_addr().expect("local address");
        let router = self.router();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        RunningTempo {
            tempo: self,
            addr,
            task,
        }
    }

    /// Serves on `listener` until the process ends.
    pub async fn serve(&self, listener: TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/api/search", get(search))
            .route("/ready", get(ready))
            .route("/api/echo", get(|| async { text(StatusCode::OK, "echo") }))
            .route("/status/config", get(status_config))
            .route("/api/traces/{id}", get(by_id::trace_v1))
            .route("/api/v2/traces/{id}", get(by_id::trace_v2))
            .fallback(|| async { by_id::page_not_found() })
            .with_state(self.clone())
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A test that panicked while holding the lock has failed already; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    // --- data ---

    /// Adds a trace, or replaces the one with the same ID (a root span arriving, say).
    pub fn upsert(&self, trace: Trace) {
        let mut s = self.lock();
        match s.index.get(&trace.trace_id) {
            Some(&i) => s.traces[i] = trace,
            None => {
                let i = s.traces.len();
                s.index.insert(trace.trace_id.clone(), i);
                s.traces.push(trace);
            }
        }
    }

    pub fn upsert_all(&self, traces: impl IntoIterator<Item = Trace>) {
        for t in traces {
            self.upsert(t);
        }
    }

    pub fn remove(&self, trace_id: &str) {
        let mut s = self.lock();
        if let Ok(id) = by_id::parse_trace_id(trace_id) {
            s.spans.remove(&id);
        }
        if s.index.remove(trace_id).is_some() {
            s.traces.retain(|t| t.trace_id != trace_id);
            let positions = s
                .traces
                .iter()
                .enumerate()
                .map(|(i, t)| (t.trace_id.clone(), i))
                .collect();
            s.index = positions;
        }
    }

    pub fn clear(&self) {
        let mut s = self.lock();
        s.traces.clear();
        s.index.clear();
        s.spans.clear();
    }

    /// Loads spans for trace by ID (OTLP, any number of traces, grouped by resource as sent):
    /// each trace's spans are added to those it has, and search lists the trace as its root
    /// span says (or as partial while there is none), as Tempo does when spans arrive.
    pub fn load_spans(&self, resource_spans: Vec<ResourceSpans>) {
        for (id, mut groups) in by_id::spans_by_trace(resource_spans) {
            let listed = {
                let mut s = self.lock();
                let all = s.spans.entry(id.clone()).or_default();
                all.append(&mut groups);
                by_id::listing(&id, all)
            };
            if let Some(trace) = listed {
                self.upsert(trace);
            }
        }
    }

    /// The spans trace by ID answers with for `trace_id` (any case, leading zeros or not):
    /// those loaded, else the span source's for a listed trace, else `None` (not found).
    pub fn spans_of(&self, trace_id: &str) -> Option<Vec<ResourceSpans>> {
        let id = by_id::parse_trace_id(trace_id).ok()?;
        let (listed, source, per_trace) = {
            let s = self.lock();
            if let Some(spans) = s.spans.get(&id) {
                return Some(spans.clone());
            }
            // The index first (IDs are usually stored as 32 digits), then any spelling.
            let listed = s
                .index
                .get(&id)
                .map(|&i| &s.traces[i])
                .or_else(|| {
                    s.traces
                        .iter()
                        .find(|t| by_id::parse_trace_id(&t.trace_id).is_ok_and(|t| t == id))
                })
                .cloned()?;
            (listed, s.span_source.clone(), s.spans_per_trace)
        };
        let spans = match source {
            Some(source) => (source.0)(&listed),
            None => by_id::generated_spans(
                &listed,
                per_trace.unwrap_or(crate::otlp::DEFAULT_SPANS_PER_TRACE),
            ),
        };
        Some(spans).filter(|s| {
            s.iter()
                .any(|r| r.scope_spans.iter().any(|s| !s.spans.is_empty()))
        })
    }

    /// How spans are made for listed traces that were given none (default: tracegen's OTLP
    /// shape, [`FakeTempo::set_spans_per_trace`] spans).
    pub fn set_span_source(&self, source: Option<SpanSource>) {
        self.lock().span_source = source;
    }

    /// Spans per generated trace for trace by ID (default 10: the root and nine children).
    pub fn set_spans_per_trace(&self, spans: usize) {
        self.lock().spans_per_trace = Some(spans.max(1));
    }

    /// Tempo v3's `max_bytes_per_trace` (on the protobuf size): over it `/api/traces` is 422 and
    /// `/api/v2/traces` returns the trace marked `PARTIAL`. `None`: no limit.
    pub fn set_max_bytes_per_trace(&self, max: Option<usize>) {
        self.lock().max_bytes_per_trace = max;
    }

    pub fn len(&self) -> usize {
        self.lock().traces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // --- clock and behaviour ---

    /// Fixes "now" (what v3's freshness cut and trace visibility use).
    pub fn set_now(&self, now: SystemTime) {
        self.lock().now = Some(nanos(now));
    }

    pub fn advance(&self, by: Duration) {
        let mut s = self.lock();
        let now = s.now.unwrap_or_else(|| nanos(SystemTime::now()));
        s.now = Some(now + by.as_nanos() as u64);
    }

    /// Follows the system clock again.
    pub fn use_system_clock(&self) {
        self.lock().now = None;
    }

    pub fn now(&self) -> SystemTime {
        let s = self.lock();
        s.now
            .map_or_else(SystemTime::now, |n| UNIX_EPOCH + Duration::from_nanos(n))
    }

    pub fn set_mode(&self, mode: Mode) {
        self.lock().mode = mode;
    }

    /// Requires `X-Scope-OrgID` (multi-tenant Tempo); other tenants see no traces.
    pub fn set_tenant(&self, tenant: Option<&str>) {
        self.lock().tenant = tenant.map(str::to_owned);
    }

    pub fn set_auth(&self, auth: Auth) {
        self.lock().auth = auth;
    }

    /// Returns this many traces beyond `limit` when truncating (v2.0.1 with several shards).
    pub fn set_overshoot(&self, extra: usize) {
        self.lock().overshoot = extra;
    }

    /// Enforces a maximum `limit` as an operator's `max_result_limit` would (`None`: no cap
    /// beyond v3's built-in 262144). Takes effect from the next search, as a Tempo restarted
    /// with a new configuration would.
    pub fn set_max_limit(&self, cap: Option<LimitCap>) {
        self.lock().max_limit = cap;
    }

    /// Serves `GET /status/config` (Tempo's running configuration as YAML, with the cap as
    /// `query_frontend.search.max_result_limit`, 0 for none), as every Tempo does; off by
    /// default, as behind a gateway that routes only the query APIs (then it is a 404).
    pub fn set_status_config(&self, served: bool) {
        self.lock().status_config = served;
    }

    // --- faults ---

    /// The next `n` searches fail with `fault`.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        let mut s = self.lock();
        s.next_faults.extend(std::iter::repeat_n(fault, n));
    }

    /// Every search fails with `fault` until [`FakeTempo::clear_faults`].
    pub fn fail_until_cleared(&self, fault: Fault) {
        self.lock().sticky_fault = Some(fault);
    }

    /// After `ok` more searches succeed, every search fails with `fault` until cleared.
    pub fn fail_after(&self, ok: usize, fault: Fault) {
        self.lock().fail_after = Some((ok, fault));
    }

    pub fn clear_faults(&self) {
        let mut s = self.lock();
        s.next_faults.clear();
        s.sticky_fault = None;
        s.fail_after = None;
        s.trace_faults.clear();
        s.sticky_trace_fault = None;
    }

    /// The next `n` trace-by-ID requests fail with `fault` (searches are not affected).
    pub fn fail_next_lookups(&self, n: usize, fault: Fault) {
        let mut s = self.lock();
        s.trace_faults.extend(std::iter::repeat_n(fault, n));
    }

    /// Every trace-by-ID request fails with `fault` until [`FakeTempo::clear_faults`].
    pub fn fail_lookups_until_cleared(&self, fault: Fault) {
        self.lock().sticky_trace_fault = Some(fault);
    }

    /// Every trace-by-ID answer waits this long first.
    pub fn set_lookup_delay(&self, delay: Duration) {
        self.lock().trace_delay = delay;
    }

    fn take_trace_fault(&self) -> Option<Fault> {
        let mut s = self.lock();
        s.trace_faults
            .pop_front()
            .or_else(|| s.sticky_trace_fault.clone())
    }

    /// Every response waits this long first.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    // --- introspection ---

    pub fn requests(&self) -> Vec<SearchRequest> {
        self.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        let mut s = self.lock();
        s.requests.clear();
        s.trace_requests.clear();
    }

    /// Every trace-by-ID request so far.
    pub fn trace_requests(&self) -> Vec<TraceRequest> {
        self.lock().trace_requests.clone()
    }

    fn take_fault(&self) -> Option<Fault> {
        let mut s = self.lock();
        if let Some(f) = s.next_faults.pop_front() {
            return Some(f);
        }
        if let Some(f) = &s.sticky_fault {
            return Some(f.clone());
        }
        match &mut s.fail_after {
            Some((0, f)) => Some(f.clone()),
            Some((n, _)) => {
                *n -= 1;
                None
            }
            None => None,
        }
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

fn bad(msg: impl Into<String>) -> Result<Value, (StatusCode, String)> {
    Err((StatusCode::BAD_REQUEST, msg.into()))
}

async fn status_config(State(tempo): State<FakeTempo>) -> Response {
    let s = tempo.lock();
    if !s.status_config {
        return text(StatusCode::NOT_FOUND, "404 page not found");
    }
    let cap = match s.max_limit {
        Some(LimitCap::Clamp(n) | LimitCap::Reject(n)) => n,
        None if s.mode == Mode::V3 => V3_MAX_LIMIT,
        None => 0,
    };
    // The shape of Tempo's YAML (Go's yaml.v2, four-space indents), cut to a few keys.
    text(
        StatusCode::OK,
        format!(
            "target: all\nhttp_api_prefix: \"\"\nserver:\n    http_listen_port: 3200\nquery_frontend:\n    max_retries: 2\n    search:\n        concurrent_jobs: 1000\n        target_bytes_per_job: 104857600\n        default_result_limit: 20\n        max_result_limit: {cap}\n        max_duration: 168h0m0s\n    trace_by_id:\n        query_shards: 50\n"
        ),
    )
}

async fn ready(State(tempo): State<FakeTempo>) -> Response {
    let down = matches!(tempo.lock().sticky_fault, Some(Fault::Status(code, _)) if code >= 500);
    if down {
        text(StatusCode::SERVICE_UNAVAILABLE, "Ingester not ready")
    } else {
        text(StatusCode::OK, "ready")
    }
}

async fn search(
    State(tempo): State<FakeTempo>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return text(StatusCode::BAD_REQUEST, "invalid query string");
    };
    let delay = tempo.lock().delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let org_id = headers
        .get("X-Scope-OrgID")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut log = SearchRequest {
        query: query.clone(),
        start: param(&query, "start").and_then(|v| v.parse().ok()),
        end: param(&query, "end").and_then(|v| v.parse().ok()),
        org_id: org_id.clone(),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        status: 200,
        returned: 0,
    };
    let response = answer(&tempo, &headers, &query, org_id.as_deref(), &mut log);
    log.status = response.status().as_u16();
    tempo.lock().requests.push(log);
    response
}

fn answer(
    tempo: &FakeTempo,
    headers: &HeaderMap,
    query: &[(String, String)],
    org_id: Option<&str>,
    log: &mut SearchRequest,
) -> Response {
    if let Some(denied) = check_auth(&tempo.lock().auth, headers) {
        return denied;
    }
    let tenant = tempo.lock().tenant.clone();
    if tenant.is_some() && org_id.is_none() {
        return text(StatusCode::UNAUTHORIZED, "no org id");
    }
    if let Some(fault) = tempo.take_fault() {
        return match fault {
            Fault::Status(code, body) => text(
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                body,
            ),
            Fault::Malformed => json_response("<html>502 Bad Gateway</html>".to_owned()),
            Fault::Truncated => json_response(
                r#"{"traces":[{"traceID":"1","rootServiceName":"svc","startTimeUn"#.to_owned(),
            ),
            Fault::Huge(bytes) => huge_response(bytes),
        };
    }
    let other_tenant = tenant.is_some() && tenant.as_deref() != org_id;
    match search_body(tempo, query, other_tenant) {
        Ok(body) => {
            log.returned = body
                .get("traces")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            json_response(body.to_string())
        }
        Err((status, msg)) => text(status, msg),
    }
}

fn json_response(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

fn huge_response(bytes: usize) -> Response {
    let (head, tail) = (r#"{"traces":[],"padding":""#, r#""}"#);
    let padding = bytes.saturating_sub(head.len() + tail.len());
    let mut body = String::with_capacity(bytes);
    body.push_str(head);
    body.extend(std::iter::repeat_n('x', padding));
    body.push_str(tail);
    json_response(body)
}

fn check_auth(auth: &Auth, headers: &HeaderMap) -> Option<Response> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let expected = match auth {
        Auth::None => return None,
        Auth::Basic { username, password } => {
            format!(
                "Basic {}",
                base64(format!("{username}:{password}").as_bytes())
            )
        }
        Auth::Bearer(token) => format!("Bearer {token}"),
    };
    if presented == Some(expected.as_str()) {
        None
    } else {
        Some(text(StatusCode::UNAUTHORIZED, "Unauthorized"))
    }
}

fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn search_body(
    tempo: &FakeTempo,
    query: &[(String, String)],
    other_tenant: bool,
) -> Result<Value, (StatusCode, String)> {
    let s = tempo.lock();
    let v3 = s.mode == Mode::V3;
    let now = s.now.unwrap_or_else(|| nanos(SystemTime::now()));
    let now_secs = now / 1_000_000_000;
    let cut_secs = if v3 {
        now_secs.saturating_sub(V3_FRESHNESS_CUT.as_secs())
    } else {
        now_secs
    };

    let q = param(query, "q");
    if q.is_some() && param(query, "tags").is_some() {
        return bad("invalid request: can't specify tags and q in the same query");
    }
    if let Some(q) = q
        && !looks_like_traceql(q)
    {
        return bad(format!(
            "invalid TraceQL query: parse error at line 1, col 1: syntax error in {q:?}"
        ));
    }
    let limit = match param(query, "limit") {
        None => 20,
        Some(raw) => match raw.parse::<u64>() {
            Ok(0) => return bad("invalid limit: must be a positive number"),
            Ok(n) if v3 && n > V3_MAX_LIMIT => {
                return bad(format!("limit {n} exceeds max limit {V3_MAX_LIMIT}"));
            }
            Ok(n) => match s.max_limit {
                Some(LimitCap::Reject(cap)) if n > cap => {
                    return bad(format!("limit {n} exceeds max limit {cap}"));
                }
                Some(LimitCap::Clamp(cap)) => n.min(cap),
                _ => n,
            },
            Err(_) if v3 => {
                return bad(format!(
                    "invalid limit: strconv.ParseUint: parsing {raw:?}: invalid syntax"
                ));
            }
            Err(_) => {
                return bad(format!(
                    "invalid limit: strconv.Atoi: parsing {raw:?}: invalid syntax"
                ));
            }
        },
    };
    let parse_secs = |name: &str| -> Result<Option<u64>, (StatusCode, String)> {
        match param(query, name) {
            None => Ok(None),
            Some(raw) => raw.parse::<u64>().map(Some).map_err(|_| {
                let func = if v3 { "ParseUint" } else { "ParseInt" };
                (
                    StatusCode::BAD_REQUEST,
                    format!("invalid {name}: strconv.{func}: parsing {raw:?}: invalid syntax"),
                )
            }),
        }
    };
    let (start, end) = (parse_secs("start")?, parse_secs("end")?);
    let (start_ns, end_ns) = match (start, end) {
        (None, None) => (0, cut_secs * 1_000_000_000 + 999_999_999),
        (start, end) => {
            // The order matters and is Tempo v3's (see the recordings): the request is checked
            // as sent, then the end is cut to hide the newest data, then the range is checked
            // with the cut end; a window the cut empties is an empty answer, not an error.
            let start = start.unwrap_or(0);
            let mut end = end.unwrap_or(0);
            if end <= start {
                return bad(format!(
                    "http parameter start must be before end. received start={start} end={end}"
                ));
            }
            if v3 && end > cut_secs {
                end = cut_secs;
            }
            if end.saturating_sub(start) > MAX_RANGE_SECS {
                return bad(format!(
                    "range specified by start and end exceeds 168h0m0s. received start={start} end={end}"
                ));
            }
            if end <= start {
                (1, 0)
            } else {
                (start * 1_000_000_000, end * 1_000_000_000)
            }
        }
    };

    let mut matched: Vec<&Trace> = if other_tenant {
        Vec::new()
    } else {
        s.traces
            .iter()
            .filter(|t| t.end_unix_nano() <= now)
            .filter(|t| t.start_unix_nano <= end_ns && t.end_unix_nano() >= start_ns)
            .collect()
    };
    let inspected = matched.len();
    let keep = usize::try_from(limit).unwrap_or(usize::MAX);
    if matched.len() > keep {
        // Tempo keeps the first `limit` traces it happens to find, not the newest.
        matched.sort_by_key(|t| fnv1a(t.trace_id.as_bytes()));
        matched.truncate(keep.saturating_add(s.overshoot));
    }
    matched.sort_by_key(|t| std::cmp::Reverse(t.start_unix_nano));

    let mut body = Map::new();
    if !matched.is_empty() || v3 {
        body.insert(
            "traces".into(),
            Value::Array(matched.iter().map(|t| t.to_json()).collect()),
        );
    }
    let mut metrics = Map::new();
    if inspected > 0 {
        metrics.insert("inspectedTraces".into(), json!(inspected));
        metrics.insert(
            "inspectedBytes".into(),
            json!((inspected * 412).to_string()),
        );
    }
    if v3 {
        metrics.insert("completedJobs".into(), json!(1));
        metrics.insert("totalJobs".into(), json!(1));
    }
    body.insert("metrics".into(), Value::Object(metrics));
    Ok(Value::Object(body))
}

/// Just enough TraceQL to refuse what is obviously not a query.
fn looks_like_traceql(q: &str) -> bool {
    let q = q.trim();
    let mut depth = 0i32;
    for c in q.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if depth < 0 {
            return false;
        }
    }
    q.starts_with('{') && depth == 0
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upserts_replace_by_id_and_removal_keeps_the_index_right() {
        let tempo = FakeTempo::new();
        tempo.upsert_all((0..1000).map(|i| Trace::partial(format!("{i:x}"), 1, 5)));
        tempo.upsert(Trace::new("a", "svc", "GET /", 1, 7));
        assert_eq!(tempo.len(), 1000);
        tempo.remove("3");
        tempo.remove("missing");
        assert_eq!(tempo.len(), 999);
        // After a removal, later traces moved: replacing one must still hit the right entry.
        tempo.upsert(Trace::new("3e7", "svc", "GET /x", 1, 9));
        tempo.upsert(Trace::new("3", "svc", "GET /y", 1, 9));
        assert_eq!(tempo.len(), 1000);
        let s = tempo.lock();
        let found: Vec<_> = s.traces.iter().filter(|t| t.trace_id == "3e7").collect();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].root_name.as_deref(), Some("GET /x"));
        assert!(s.index.iter().all(|(id, &i)| s.traces[i].trace_id == *id));
        drop(s);
        tempo.clear();
        assert!(tempo.is_empty());
    }

    #[test]
    fn base64_matches_rfc4648() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("user:pass", "dXNlcjpwYXNz"),
        ] {
            assert_eq!(base64(input.as_bytes()), want);
        }
    }

    #[test]
    fn traceql_shape() {
        for (q, ok) in [
            ("{}", true),
            ("{ .a = 1 } with (most_recent=true)", true),
            ("{foo", false),
            ("foo", false),
        ] {
            assert_eq!(looks_like_traceql(q), ok, "{q}");
        }
    }
}
