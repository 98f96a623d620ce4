"""The load generator: wrk with one thread and a Lua script that cycles through pre-built JSON bodies."""

from __future__ import annotations

import json
import resource
import subprocess
from dataclasses import dataclass
from pathlib import Path

MARKER = "WRK_JSON "

# Requests are formatted once per body in init(); request() only hands the next one out.
LUA_SCRIPT = """\
-- POST pre-built JSON bodies (one per line of the file named after "--") in turn; report JSON in done().
local bodies = {}
local index = 0

function init(args)
  local headers = {["Content-Type"] = "application/json"}
  for line in io.lines(args[1]) do
    if #line > 0 then
      bodies[#bodies + 1] = wrk.format("POST", nil, headers, line)
    end
  end
  if #bodies == 0 then
    error("no request bodies in " .. tostring(args[1]))
  end
end

function request()
  index = index % #bodies + 1
  return bodies[index]
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\\n',
    "MARKER", summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
""".replace("MARKER", MARKER)


@dataclass(frozen=True)
class LoadResult:
    """One wrk run. ``errors`` = non-2xx/3xx responses + socket errors (connect, read, write, timeout).

    ``ok_requests_per_s`` counts only answered, non-error requests (a fast 503 must not look like throughput).
    """

    connections: int
    requests: int
    duration_s: float
    requests_per_s: float
    ok_requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    error_detail: dict[str, int]
    client_cpu_s: float


def write_script(folder: Path) -> Path:
    path = folder / "bodies.lua"
    path.write_text(LUA_SCRIPT, encoding="utf-8")
    return path


def run_wrk(url: str, script: Path, bodies: Path, connections: int, duration_s: int, timeout_s: int = 10) -> LoadResult:
    """``wrk -t1 -cN -dXs --latency -s script URL -- bodies``, parsed from the script's JSON line."""
    command = [
        "wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", f"--timeout={timeout_s}s", "--latency",
        "-s", str(script), url, "--", str(bodies),
    ]  # fmt: skip
    limit = duration_s + timeout_s + 30
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    completed = subprocess.run(command, capture_output=True, text=True, timeout=limit, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((ln for ln in completed.stdout.splitlines() if ln.startswith(MARKER)), None)
    if completed.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr[-500:] or completed.stdout[-500:]}")
    raw = json.loads(line[len(MARKER) :])
    detail = {key: int(raw[key]) for key in ("status", "connect", "read", "write", "timeout")}
    duration = raw["duration_us"] / 1e6
    return LoadResult(
        connections=connections,
        requests=raw["requests"],
        duration_s=duration,
        requests_per_s=raw["requests"] / duration,
        ok_requests_per_s=(raw["requests"] - detail["status"]) / duration,
        p50_ms=raw["p50_us"] / 1000.0,
        p90_ms=raw["p90_us"] / 1000.0,
        p99_ms=raw["p99_us"] / 1000.0,
        max_ms=raw["max_us"] / 1000.0,
        errors=sum(detail.values()),
        error_detail=detail,
        client_cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
    )


# Binary bodies (Triton's binary tensor extension): each record of the file is "<header length> <body length>\n"
# and then the body's bytes, which may hold any byte (newlines included).
BINARY_LUA_SCRIPT = LUA_SCRIPT.replace(
    """  local headers = {["Content-Type"] = "application/json"}
  for line in io.lines(args[1]) do
    if #line > 0 then
      bodies[#bodies + 1] = wrk.format("POST", nil, headers, line)
    end
  end""",
    """  local file = assert(io.open(args[1], "rb"))
  while true do
    local line = file:read("*l")
    if line == nil or #line == 0 then break end
    local header_length, body_length = line:match("(%d+) (%d+)")
    local headers = {["Content-Type"] = "application/octet-stream",
                     ["Inference-Header-Content-Length"] = header_length}
    bodies[#bodies + 1] = wrk.format("POST", nil, headers, file:read(tonumber(body_length)))
  end
  file:close()""",
)


def write_binary_script(folder: Path) -> Path:
    path = folder / "bodies-binary.lua"
    path.write_text(BINARY_LUA_SCRIPT, encoding="utf-8")
    return path


def write_binary_bodies(bodies: list[tuple[int, bytes]], path: Path) -> Path:
    """(JSON header length, whole body) records for the binary script."""
    path.write_bytes(b"".join(f"{header} {len(body)}\n".encode() + body for header, body in bodies))
    return path
