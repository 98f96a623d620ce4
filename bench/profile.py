"""Where the service spends its time per request: py-spy under HTTP load, plus in-process stage costs.

    python bench/profile.py [--duration 10] [--concurrency 32] [--per-request 1] [--rate 250] [--out DIR]
                            [--skip-pyspy] [--skip-stages]

1. Under wrk load, per-thread CPU from /proc (the event loop, the batcher's inference threads, FastAPI's thread
   pool, native threads such as ONNX Runtime's intra-op pool) and py-spy samples of the Python threads, each
   stack put in one category by its innermost recognised frame. Costs per request = category share x thread CPU
   / requests answered.
2. bench/stages.py in subprocesses: the service as is, and the naive app.

Needs ``pip install py-spy`` (and permission to ptrace: root, or CAP_SYS_PTRACE).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the bench package from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench import machine, servers
from bench.corpus import build_bodies, load_samples, write_bodies
from bench.harness import progress
from bench.load import run_wrk, write_script
from bench.report import markdown_table

MODEL_DIR = servers.ROOT / "models" / "sentiment" / "1"
THREAD = re.compile(r"^thread \((?P<tid>\d+)\)(?::\s*(?P<name>.*))?$")
# Leaf frames that mean "waiting": py-spy --nonblocking cannot always tell an idle thread from a busy one.
IDLE = ("Condition.wait (threading.py", "Queue.get (queue.py", "_worker (concurrent/futures/thread.py", "Event.wait (")
# (category, substrings of a frame "function (file:line)"); frames are tried from the innermost outwards and,
# within a frame, categories in this order.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ONNX Runtime run", ("onnxruntime/",)),
    ("tokenization", ("model_format/text.py",)),
    ("JSON decode", ("parse_json (service/protocols/codec.py",)),
    ("response encoding (orjson, Response)", ("json_response (service/protocols/codec.py",)),
    ("response shaping (encode_prediction)", ("encode_prediction (", "encode_columns (")),
    ("request decoding + validation", ("service/protocols/native.py", "_prepare (service/", "_fit (service/")),
    ("result shaping (dataplane._predict, rollout)", ("_predict (service/dataplane.py", "service/explain.py")),
    ("body reading (codec.read_body)", ("read_body (service/", "read_json (service/")),
    ("batching (queue, pad, futures, split)", ("service/batching.py",)),
    ("metrics + telemetry", ("service/telemetry.py", "service/metrics.py", "prometheus_client/")),
    ("request-id middleware (uuid4)", ("RequestIdMiddleware", "uuid4 (uuid.py")),
    ("sync dependencies via thread pool", ("anyio/", "starlette/concurrency.py", "service/protocols/deps.py")),
    ("executor hand-off (run_in_executor)", ("concurrent/futures/",)),
    ("FastAPI/Starlette routing, deps, middleware", ("fastapi/", "starlette/", "pydantic")),
    ("uvicorn + httptools protocol", ("uvicorn/", "httptools")),
    ("error logging (tracebacks)", ("traceback.py", "logging/")),
    ("other service code", ("service/",)),
    ("event loop (uvloop C: I/O, callbacks)", ("asyncio/",)),
)


@dataclass(frozen=True)
class Stack:
    tid: int
    thread: str
    frames: tuple[str, ...]
    count: int


def parse_raw(path: Path) -> list[Stack]:
    """py-spy ``--format raw --threads``: ``thread (TID): name;outer;...;inner COUNT`` per line."""
    stacks = []
    for line in path.read_text().splitlines():
        body, _, count = line.rpartition(" ")
        parts = body.split(";")
        match = THREAD.match(parts[0])
        if match is None or not count.isdigit():
            continue
        name = (match["name"] or "").strip() or "unnamed"
        stacks.append(Stack(int(match["tid"]), name, tuple(parts[1:]), int(count)))
    return stacks


def classify(frames: Sequence[str]) -> str:
    if not frames or frames[-1].startswith(IDLE):
        return "idle"
    for frame in reversed(frames):
        for category, needles in CATEGORIES:
            if any(needle in frame for needle in needles):
                return category
    return "other"


def thread_group(name: str) -> str:
    if name.startswith("inference"):
        return "batcher inference threads"
    if name.startswith("AnyIO worker"):
        return "FastAPI thread pool (AnyIO workers)"
    return name


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """TID -> (comm, user + system CPU seconds) for every thread of the process."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[int(task.name)] = (comm, (int(fields[11]) + int(fields[12])) / servers.CLOCK_TICKS)
    return found


@dataclass(frozen=True)
class Profile:
    requests: int
    duration_s: float
    cpu_by_group: dict[str, float]
    categories: dict[str, Counter[str]]  # thread group -> category -> samples
    leaves: Counter[str]  # event-loop thread: innermost frame -> samples


def record(args: argparse.Namespace, work: Path) -> Profile:
    samples = load_samples(MODEL_DIR / "tokenizer.json", 2048)
    bodies = write_bodies(build_bodies(samples, args.per_request), work / f"bodies-{args.per_request}.jsonl")
    script, raw = write_script(work), work / "py-spy.raw.txt"
    # One worker: py-spy and the per-thread figures follow one process (one event loop).
    with servers.running([servers.service_spec("service", settings={"workers": "1"})], work) as (server,):
        run_wrk(server.url, script, bodies, 8, 2)  # warm-up
        pid = server.process.pid
        before = thread_cpu(pid)
        spy = subprocess.Popen(
            ["py-spy", "record", "--pid", str(pid), "--rate", str(args.rate), "--duration", str(args.duration),
             "--format", "raw", "--threads", "--nonblocking", "--output", str(raw)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        time.sleep(0.3)  # let py-spy attach
        result = run_wrk(server.url, script, bodies, args.concurrency, args.duration)
        after = thread_cpu(pid)
        _, errors = spy.communicate(timeout=60)
        if spy.returncode != 0:
            raise RuntimeError(f"py-spy failed: {errors.decode()[-500:]}")
    stacks = parse_raw(raw)
    names = {s.tid: s.thread for s in stacks}
    cpu_by_group: Counter[str] = Counter()
    for tid, (comm, cpu) in after.items():
        group = thread_group(names[tid]) if tid in names else f"native threads ({comm}: ORT pool, tokenizers, …)"
        cpu_by_group[group] += cpu - before.get(tid, (comm, 0.0))[1]
    categories: dict[str, Counter[str]] = {}
    leaves: Counter[str] = Counter()
    for stack in stacks:
        group = thread_group(stack.thread)
        category = classify(stack.frames)
        categories.setdefault(group, Counter())[category] += stack.count
        if group == "MainThread" and category != "idle":
            leaves[stack.frames[-1] if stack.frames else "?"] += stack.count
    requests = int(result.ok_requests_per_s * result.duration_s)
    return Profile(requests, result.duration_s, dict(cpu_by_group), categories, leaves)


def profile_markdown(profile: Profile, args: argparse.Namespace) -> str:
    per_request = 1e6 / profile.requests  # µs of one CPU-second per request
    cpu = profile.cpu_by_group
    total = sum(cpu.values())
    rows = [
        [group, seconds / profile.duration_s, f"{seconds / total:.0%}", seconds * per_request]
        for group, seconds in sorted(cpu.items(), key=lambda kv: -kv[1])
        if seconds > 0
    ]
    parts = [
        f"### py-spy under load: {args.per_request} seq/request, {args.concurrency} connections, {args.duration} s",
        f"{profile.requests:,} requests answered ({profile.requests / profile.duration_s:,.0f}/s). "
        f"Server CPU {total / profile.duration_s:.2f} cores, {total * per_request:,.0f} µs per request.",
        markdown_table(["thread group", "cores", "share of server CPU", "CPU µs/request"], rows),
    ]
    for group in ("MainThread", "batcher inference threads", "FastAPI thread pool (AnyIO workers)"):
        counts = profile.categories.get(group)
        if not counts:
            continue
        busy = sum(n for c, n in counts.items() if c != "idle")
        group_us = cpu.get(group, 0.0) * per_request
        table = [
            [category, f"{n / busy:.1%}", n / busy * group_us]
            for category, n in counts.most_common()
            if category != "idle"
        ]
        title = "the event loop" if group == "MainThread" else group
        parts += [
            f"Samples of {title} ({busy} busy samples; µs/request = share x that thread's CPU per request):",
            markdown_table(["category", "share", "µs/request"], table),
        ]
    busy_main = sum(profile.leaves.values())
    leaves = [[frame, f"{n / busy_main:.1%}"] for frame, n in profile.leaves.most_common(15)]
    parts += ["Innermost frames on the event loop (top 15):", markdown_table(["frame", "share"], leaves)]
    return "\n\n".join(parts)


STAGE_RUNS = (
    ("as is", ()),
    ("naive app", ("--naive",)),
)


def run_stages(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    reports = {}
    for label, flags in STAGE_RUNS:
        progress(f"stages: {label}")
        command = [sys.executable, str(servers.ROOT / "bench" / "stages.py"), *flags, "--seconds", str(args.seconds)]
        out = subprocess.run(command, cwd=servers.ROOT, capture_output=True, text=True, check=True, timeout=900)
        reports[label] = json.loads(out.stdout)
    return reports


def stages_markdown(reports: dict[str, dict[str, object]]) -> str:
    base: dict[str, list[dict[str, object]]] = reports["as is"]["stages"]  # type: ignore[assignment]
    parts = ["### In-process stage costs (service as is; wall = fastest batch, CPU = whole process, median)"]
    for size, stages in base.items():
        rows = [[s["stage"], s["wall_us"], s["cpu_us"]] for s in stages]
        parts += [f"{size} seq/request:", markdown_table(["stage", "wall µs", "CPU µs"], rows)]
    rows = []
    for label, report in reports.items():
        for size, rates in report["in_process"].items():  # type: ignore[attr-defined]
            for rate in rates:
                rows.append([label, size, rate["callers"], rate["requests_per_s"], rate["cpu_us_per_request"]])
    parts += [
        "### In-process ASGI calls (no socket, no uvicorn): the service and the naive app",
        markdown_table(["app", "seq/req", "callers", "req/s", "CPU µs/request"], rows),
    ]
    return "\n\n".join(parts)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Profile the service under load; per-stage in-process costs.")
    parser.add_argument("--duration", type=int, default=10, help="seconds of load (and of py-spy sampling)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--per-request", type=int, default=1)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds per in-process stage measurement")
    parser.add_argument("--skip-pyspy", action="store_true")
    parser.add_argument("--skip-stages", action="store_true")
    parser.add_argument("--out", type=Path, help="folder for profile.md, the raw py-spy stacks and server logs")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.out or Path(tempfile.mkdtemp(prefix="attention-serve-profile-"))
    work.mkdir(parents=True, exist_ok=True)
    parts = ["## attention-serve profile", machine.facts_markdown(machine.facts())]
    if not args.skip_pyspy:
        parts.append(profile_markdown(record(args, work), args))
    if not args.skip_stages:
        reports = run_stages(args)
        parts.append(stages_markdown(reports))
        (work / "stages.json").write_text(json.dumps(reports, indent=2), encoding="utf-8")
    parts.append(f"load average at end: {machine.load_average()} ({os.cpu_count()} cores)")
    markdown = "\n\n".join(parts)
    print(markdown)
    (work / "profile.md").write_text(markdown + "\n", encoding="utf-8")
    progress(f"wrote {work / 'profile.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
