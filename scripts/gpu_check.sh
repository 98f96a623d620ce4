#!/usr/bin/env bash
# Check the service on a GPU, in one call: the CUDA provider really serves, its answers match a CPU server's, then
# the benchmark. Meant for the lent GPU machine (../shared/gpu/README.md: Python 3.12, onnxruntime-gpu on
# PYTHONPATH, no network) and testable on any CPU:
#
#   bash scripts/gpu_check.sh                                             # CUDA required
#   GPU_CHECK_PROVIDER=CPUExecutionProvider bash scripts/gpu_check.sh     # the same flow on the CPU
#
# Steps: start the server under test (ATTENTION_SERVE_PROVIDERS=$GPU_CHECK_PROVIDER,CPUExecutionProvider) and a
# reference server on the CPU; fail unless every model's metadata says attention_serve.providers[0] is the provider
# asked for; compare probabilities and attention for a set of texts, alone and batched, within
# $GPU_CHECK_TOLERANCE; stop both with SIGTERM; then run the benchmark (run_benchmark) unless GPU_CHECK_BENCH=0.
#
# Results, under $OUT when set (else runs/gpu_check/): summary.json (every check and its verdict), environment.json,
# parity.json (per model and text, the largest differences), server-test.log, server-cpu.log, bench/.
# Exit status: 0 when every check passed, 1 otherwise. Only the Python standard library talks HTTP.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
PROVIDER=${GPU_CHECK_PROVIDER:-CUDAExecutionProvider}
REPOSITORY=${GPU_CHECK_REPOSITORY:-models}
TOLERANCE=${GPU_CHECK_TOLERANCE:-1e-3}
READY_WITHIN_S=${GPU_CHECK_READY_WITHIN_S:-180}
BENCH=${GPU_CHECK_BENCH:-1}
BENCH_TIMEOUT_S=${GPU_CHECK_BENCH_TIMEOUT_S:-300}
RESULTS=${OUT:-runs/gpu_check}
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)

test_providers="$PROVIDER"
[ "$PROVIDER" = CPUExecutionProvider ] || test_providers="$PROVIDER,CPUExecutionProvider"

log() { printf '[gpu_check %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_server NAME PROVIDERS PORT: the service in the background, as the image starts it ($! is its pid), with gRPC
# on a free port of its own (two servers must not share one).
start_server() {
    ATTENTION_SERVE_PROVIDERS="$2" ATTENTION_SERVE_POLL_INTERVAL_S=0 ATTENTION_SERVE_GRACEFUL_SHUTDOWN_S=10 \
        PYTHONUNBUFFERED=1 "$PYTHON" -m service --host 127.0.0.1 --port "$3" --grpc-port "$(free_port)" \
        --model-repository "$REPOSITORY" > "$RESULTS/server-$1.log" 2>&1 &
}

# stop_server PID: SIGTERM, a bounded wait for the exit, then SIGKILL if need be; sets exit_status (0 or 143: a
# graceful stop). Not in a subshell: only this shell can wait for its children.
stop_server() {
    local pid=$1
    exit_status=0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 300); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    wait "$pid" || exit_status=$?
}

servers=()
cleanup() {
    for pid in "${servers[@]}"; do
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    done
    return 0
}
trap cleanup EXIT

run_benchmark() {
    if [ "$BENCH" = 0 ]; then
        echo "skipped (GPU_CHECK_BENCH=0)"
    elif [ ! -f bench/run.py ]; then
        echo "skipped (no bench/run.py)"
    else
        local status=0
        ATTENTION_SERVE_PROVIDERS="$test_providers" timeout "$BENCH_TIMEOUT_S" \
            "$PYTHON" bench/run.py --quick --out "$RESULTS/bench" > "$RESULTS/bench.log" 2>&1 || status=$?
        if [ "$status" = 0 ]; then echo "passed"; else echo "failed (exit $status, see bench.log)"; fi
    fi
}

"$PYTHON" - "$RESULTS/environment.json" <<'PY'
import json, os, platform, sys
import onnxruntime as ort

facts = {
    "python": sys.version.split()[0],
    "platform": platform.platform(),
    "onnxruntime": ort.__version__,
    "onnxruntime_file": ort.__file__,
    "available_providers": ort.get_available_providers(),
    "cpus": len(os.sched_getaffinity(0)),
}
with open(sys.argv[1], "w") as handle:
    json.dump(facts, handle, indent=2)
print(f"onnxruntime {facts['onnxruntime']}, providers {facts['available_providers']}", file=sys.stderr)
PY

test_port=$(free_port)
cpu_port=$(free_port)
while [ "$cpu_port" = "$test_port" ]; do cpu_port=$(free_port); done
log "server under test on :$test_port with $test_providers; reference on :$cpu_port with CPUExecutionProvider"
start_server test "$test_providers" "$test_port"
test_pid=$!
servers+=("$test_pid")
start_server cpu CPUExecutionProvider "$cpu_port"
cpu_pid=$!
servers+=("$cpu_pid")

check_status=0
"$PYTHON" - "$RESULTS" "$REPOSITORY" "$PROVIDER" "$TOLERANCE" "$READY_WITHIN_S" \
    "test=http://127.0.0.1:$test_port=$test_pid" "cpu=http://127.0.0.1:$cpu_port=$cpu_pid" <<'PY' || check_status=$?
"""Readiness, providers in use, and CPU parity of the server under test; standard library only."""
import json, os, sys, time, urllib.error, urllib.request
from pathlib import Path

results, repository, provider, tolerance, ready_within = Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:6]
tolerance, ready_within = float(tolerance), float(ready_within)
servers = {name: (url, int(pid)) for name, url, pid in (arg.rsplit("=", 2) for arg in sys.argv[6:])}
TEXTS = [
    "I love how this self-driving car handles the highway!",
    "The update broke everything and support never answered.",
    "Meeting moved to 3pm.",
    "ok",
    "Not bad at all, though the battery could last longer… 🙂",
    "Ünïcödé, punctuation!!! and numbers 12345 in one tweet #test @someone",
    " ".join(["The robot vacuum kept bumping into the same chair leg again and again."] * 12),
]
summary = {"provider": provider, "tolerance": tolerance, "checks": {}, "ok": False}


def call(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{request.get_method()} {url}: {exc.code} {exc.read()[:300]!r}") from exc


def predict(url, name, texts):
    # truncate: the longest text runs past the model's maximum length, the largest shape the check exercises
    body = {"instances": texts, "parameters": {"truncate": True}}
    return call(f"{url}/v1/models/{name}:predict", body)["predictions"]


def load_failure(url):
    """The error of a model none of whose versions serves or is still loading, if any."""
    for name in models():
        try:
            versions = call(f"{url}/v1/models/{name}")["model_version_status"]
        except (RuntimeError, OSError):
            continue
        states = {v["state"] for v in versions}
        errors = [v["status"]["error_message"] for v in versions if v["status"].get("error_message")]
        if errors and not states & {"AVAILABLE", "LOADING"}:
            return f"model {name} failed to load: {errors[0]}"
    return None


def wait_ready(name):
    """None once the server is ready; else why not: it exited, a model failed to load, or time ran out."""
    url, pid = servers[name]
    deadline = time.monotonic() + ready_within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return f"exited before it was ready (see server-{name}.log)"
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2):
                return None
        except urllib.error.HTTPError:  # listening, not ready yet: fail fast if a model cannot load
            failure = load_failure(url)
            if failure:
                return failure
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    return f"not ready within {ready_within:.0f}s"


def models():
    names = [p.name for p in sorted(repository.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    return [n for n in names if any(v.name.isdigit() for v in (repository / n).iterdir())]


def largest_difference(a, b):
    """Largest absolute difference of two predictions' probabilities and attention, or None if they disagree in kind."""
    if a["tokens"] != b["tokens"] or set(a["probabilities"]) != set(b["probabilities"]):
        return None
    probabilities = max(abs(a["probabilities"][k] - b["probabilities"][k]) for k in a["probabilities"])
    attention = max(abs(x - y) for x, y in zip(a["attention"], b["attention"], strict=True))
    return {"probabilities": probabilities, "attention": attention, "labels_agree": a["label"] == b["label"]}


def parity(name, test_url, cpu_url):
    """Each text alone and all texts in one batch on the server under test, against each text alone on the CPU."""
    reference = [predict(cpu_url, name, [text])[0] for text in TEXTS]
    alone = [predict(test_url, name, [text])[0] for text in TEXTS]
    batched = predict(test_url, name, TEXTS)
    rows = []
    for i, text in enumerate(TEXTS):
        for mode, got in (("alone", alone[i]), ("batched", batched[i])):
            rows.append({"text": text[:60], "mode": mode, "difference": largest_difference(got, reference[i])})
    return rows


def run():
    checks = summary["checks"]
    for name in servers:
        problem = wait_ready(name)
        checks[f"{name}_ready"] = {"ok": problem is None, "detail": problem or "ready"}
        if problem:
            return
    names = models()
    checks["models_found"] = {"ok": bool(names), "detail": names}
    parity_report = {}
    for name in names:
        for server, wanted in (("test", provider), ("cpu", "CPUExecutionProvider")):
            in_use = call(f"{servers[server][0]}/v1/models/{name}/metadata")["attention_serve"]["providers"]
            ok = bool(in_use) and in_use[0] == wanted
            checks[f"{server}_provider_{name}"] = {"ok": ok, "detail": {"wanted": wanted, "in_use": in_use}}
        rows = parity(name, servers["test"][0], servers["cpu"][0])
        parity_report[name] = rows
        worst = {
            key: max((r["difference"] or {}).get(key, float("inf")) for r in rows)
            for key in ("probabilities", "attention")
        }
        ok = all(r["difference"] is not None for r in rows) and max(worst.values()) <= tolerance
        checks[f"parity_{name}"] = {"ok": ok, "detail": {"largest_difference": worst, "texts": len(TEXTS)}}
    (results / "parity.json").write_text(json.dumps(parity_report, indent=2, ensure_ascii=False))


try:
    run()
except Exception as exc:  # any failure is a verdict in summary.json, not a traceback alone
    summary["checks"]["unexpected_error"] = {"ok": False, "detail": f"{type(exc).__name__}: {exc}"}
summary["ok"] = bool(summary["checks"]) and all(c["ok"] for c in summary["checks"].values())
(results / "summary.json").write_text(json.dumps(summary, indent=2))
for name, check in summary["checks"].items():
    print(f"  {'PASS' if check['ok'] else 'FAIL'}  {name}: {json.dumps(check['detail'], ensure_ascii=False)}")
sys.exit(0 if summary["ok"] else 1)
PY

log "stopping both servers with SIGTERM"
stop_server "$test_pid"
test_exit=$exit_status
stop_server "$cpu_pid"
cpu_exit=$exit_status
log "exit statuses: under test $test_exit, reference $cpu_exit"

bench="not run (a check failed)"
if [ "$check_status" = 0 ]; then
    log "running the benchmark"
    bench=$(run_benchmark)
fi
log "benchmark: $bench"

"$PYTHON" - "$RESULTS/summary.json" "$test_exit" "$cpu_exit" "$bench" <<'PY'
import json, sys

path, test_exit, cpu_exit, bench = sys.argv[1:]
summary = json.load(open(path))
for name, status in (("test", int(test_exit)), ("cpu", int(cpu_exit))):
    # 143: uvicorn re-raises SIGTERM after its graceful shutdown; 0 is just as clean.
    summary["checks"][f"{name}_stopped_gracefully"] = {"ok": status in (0, 143), "detail": {"exit_status": status}}
summary["benchmark"] = bench
summary["ok"] = all(check["ok"] for check in summary["checks"].values())
json.dump(summary, open(path, "w"), indent=2)
print(f"gpu_check: {'PASSED' if summary['ok'] else 'FAILED'} (provider {summary['provider']}); results in {path}")
sys.exit(0 if summary["ok"] else 1)
PY
