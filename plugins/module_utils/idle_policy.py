# -*- coding: utf-8 -*-
# Copyright: llmops.vastai contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The idle-shutdown policy of llmops.vastai, in one file.

Three users run this same file, so they cannot drift apart:

* the controller's filter ``llmops.vastai.idle_decision`` (plugins/filter/idle.py) imports it;
* ``playbooks/idle_shutdown.yml`` and ``playbooks/status.yml`` run it on the instance as their
  read-only probe (``python3 idle_policy.py probe ARGS``: standard library only, prints JSON);
* the on-host fallback ``roles/idle_watchdog`` copies it next to its script and imports it.

Layers: ``gather()`` reads the host (activity log by time, unit and engine container state,
``/metrics``, wall and monotonic clocks) -> ``observe()`` turns that raw material plus the API's
facts into an observation -> ``decide()`` returns the action, the reason and *when* it would stop.
``decide`` is a pure function: no I/O, no clock.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import bz2
import gzip
import json
import math
import os
import re
import subprocess
import sys
import time

try:
    import lzma
except ImportError:  # pragma: no cover - Python built without lzma
    lzma = None

# vLLM's metric names (vllm/v1/metrics/loggers.py in vllm 0.33.0): gauges per engine and model,
# counters exposed with `_total`; every series is summed over its label sets.
GAUGES = {
    "requests_running": "vllm:num_requests_running",
    "requests_waiting": "vllm:num_requests_waiting",
}
COUNTERS = {
    "request_success_total": "vllm:request_success_total",
    "prompt_tokens_total": "vllm:prompt_tokens_total",
    "generation_tokens_total": "vllm:generation_tokens_total",
}

DEFAULT_POLICY = {
    "idle_minutes": 30,
    "boot_grace_minutes": 20,
    "ttl_hours": None,
    "unreachable_limit": 0,
    "unreachable_min_age_minutes": 60,
    # the engine is not running at all (container exited, stack stopped): a dead engine bills too
    "stop_when_engine_down": True,
    # the stack runs but the engine has not answered yet (model download / load)
    "load_timeout_minutes": 120,
    "stop_when_never_healthy": True,
    # clocks: host vs API ("now" of both), host wall vs monotonic since the stack started, and
    # activity stamped later than the host's "now"; 0 turns the first two checks off
    "max_clock_skew_minutes": 10,
    "max_clock_step_minutes": 5,
    "clock_tolerance_seconds": 120,
    # no activity log on the host (stack without health_proxy): idle time is unknown -> keep
    "require_activity_log": True,
}

# HTTP statuses that are not activity: unauthenticated scanners must not keep an instance alive.
IGNORED_STATUSES = (401, 403)


class PolicyError(ValueError):
    """Bad input (not a number, missing required fact); the filter turns it into AnsibleFilterError."""


# --------------------------------------------------------------------------------------------
# parsing: /metrics and the access log
# --------------------------------------------------------------------------------------------

def metrics_activity(text):
    """Prometheus text from vLLM -> the numbers idle detection needs.

    Returns `requests_running`, `requests_waiting`, `in_flight` and the counter totals, each
    summed over all label sets; a metric that is absent (or NaN/inf/negative) is None, not 0.
    `problem` says why the in-flight count is unknown (empty body, not Prometheus text, no vLLM
    gauges, NaN), or is None when both gauges were read.
    """
    out = dict.fromkeys(list(GAUGES) + list(COUNTERS))
    out.update(in_flight=None, problem=None)
    if text is None or not str(text).strip():
        out["problem"] = "/metrics answered with an empty body"
        return out
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        raise PolicyError("parsing /metrics needs the prometheus-client Python package") from None
    wanted = dict(GAUGES)
    wanted.update(COUNTERS)
    by_sample = dict((name, key) for key, name in wanted.items())
    bad = []
    try:
        for family in text_string_to_metric_families(str(text)):
            for sample in family.samples:
                key = by_sample.get(sample.name)
                if key is None:
                    continue
                if math.isnan(sample.value) or math.isinf(sample.value) or sample.value < 0:
                    bad.append("%s=%s" % (sample.name, sample.value))
                    continue
                out[key] = (out[key] or 0.0) + sample.value
    except (ValueError, TypeError, IndexError) as exc:
        out = dict.fromkeys(out)
        out["problem"] = "/metrics is not Prometheus text (%s)" % str(exc)[:80]
        return out
    for key in GAUGES:
        if out[key] is not None:
            out[key] = int(round(out[key]))
    if bad:
        # one NaN series poisons the sum: the count of that gauge is unknown
        for key, name in GAUGES.items():
            if any(b.startswith(name + "=") for b in bad):
                out[key] = None
    missing = [name for key, name in GAUGES.items() if out[key] is None]
    if missing:
        out["problem"] = "/metrics answered without vLLM's %s%s" % (
            " and ".join(missing), " (%s)" % ", ".join(bad[:3]) if bad else "")
    else:
        out["in_flight"] = out["requests_running"] + out["requests_waiting"]
    return out


def _as_float(value):
    if value is None or value == "" or value == "-":
        return None
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def parse_log_line(line, prefix="/v1", ignore_statuses=IGNORED_STATUSES):
    """One JSON access-log line -> ('count', start, end) | ('ignored', None, end) | ('other', ...) | ('bad', ...).

    nginx logs a request when it ends: `msec` is the end, `msec - request_time` the start.
    """
    if isinstance(line, dict):
        entry = line
    else:
        line = line.strip() if isinstance(line, str) else line
        if not line:
            return "empty", None, None
        try:
            entry = json.loads(line)
        except (ValueError, TypeError):
            return "bad", None, None
    if not isinstance(entry, dict):
        return "bad", None, None
    uri = str(entry.get("uri") or entry.get("request_uri") or "")
    if not uri.startswith(prefix):
        return "other", None, None
    end = _as_float(entry.get("msec"))
    if end is None:
        return "bad", None, None
    try:
        status = int(entry.get("status"))
    except (TypeError, ValueError):
        status = None
    if status in set(int(s) for s in (ignore_statuses or ())):
        return "ignored", None, end
    start = end - max(_as_float(entry.get("request_time")) or 0.0, 0.0)
    return "count", start, end


def log_activity(lines, prefix="/v1", ignore_statuses=IGNORED_STATUSES):
    """Newest start and end of the requests that count, over every line given (any order)."""
    result = {"last_start": None, "last_end": None, "requests": 0, "ignored": 0, "bad_lines": 0}
    if lines is None:
        lines = ""
    for line in (lines.splitlines() if isinstance(lines, str) else lines):
        kind, start, end = parse_log_line(line, prefix, ignore_statuses)
        if kind == "bad":
            result["bad_lines"] += 1
        elif kind == "ignored":
            result["ignored"] += 1
        elif kind == "count":
            result["requests"] += 1
            if result["last_start"] is None or start > result["last_start"]:
                result["last_start"] = start
            if result["last_end"] is None or end > result["last_end"]:
                result["last_end"] = end
    return result


# --------------------------------------------------------------------------------------------
# the host: read by time, whatever the rotation is called
# --------------------------------------------------------------------------------------------

# What logrotate makes of BASE: BASE.1, BASE.1.gz (compress, also without delaycompress),
# BASE-20261201[.gz] (dateext, the RHEL default; -%Y%m%d%H hourly, -%Y-%m-%d and a -%s suffix
# with custom dateformat), compressed with gzip, bzip2 or xz.
_ROTATED = re.compile(r"^(?:\.(?P<num>\d+)|-(?P<date>\d{4}-?\d{2}-?\d{2}(?:-?\d{2})?(?:[-_.]\d+)?|\d{9,11}))"
                      r"(?P<ext>\.gz|\.bz2|\.xz)?$")


def rotations(path):
    """BASE and its rotated files, newest first by logrotate's naming (numbers ascending,
    dates descending; a file without date or number is the live one)."""
    directory, base = os.path.split(path)
    directory = directory or "."
    found = []
    try:
        names = os.listdir(directory)
    except OSError:
        names = []
    for name in names:
        if not name.startswith(base) or name == base:
            continue
        m = _ROTATED.match(name[len(base):])
        if not m:
            continue
        full = os.path.join(directory, name)
        try:
            mtime = os.stat(full).st_mtime
        except OSError:
            continue
        if m.group("num") is not None:
            key = (1, int(m.group("num")))
        else:  # dates: the newest (largest) first
            key = (2, -int(re.sub(r"\D", "", m.group("date"))[:14].ljust(14, "0")))
        found.append((key, -mtime, full))
    found.sort()
    return ([path] if os.path.exists(path) else []) + [f for _k, _m, f in found]


def _open_any(path):
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.endswith(".bz2"):
        return bz2.open(path, "rb")
    if path.endswith(".xz") and lzma is not None:
        return lzma.open(path, "rb")
    return open(path, "rb")


def _lines_backwards(path, budget):
    """Yield (line, bytes_used) from the end of the file to its start."""
    if path.endswith((".gz", ".bz2", ".xz")):
        with _open_any(path) as fh:
            data = fh.read(budget + 1)
        for line in reversed(data.splitlines()):
            yield line, len(line) + 1
        return
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        pos = fh.tell()
        rest = b""
        while pos > 0:
            step = min(65536, pos)
            pos -= step
            fh.seek(pos)
            chunk = fh.read(step) + rest
            lines = chunk.split(b"\n")
            rest = lines.pop(0)
            for line in reversed(lines):
                yield line, len(line) + 1
        if rest:
            yield rest, len(rest) + 1


def scan_activity_log(path, prefix="/v1", ignore_statuses=IGNORED_STATUSES, budget_bytes=64 << 20):
    """The newest request that counts, read from the end of the log and its rotations.

    Reads backwards and stops at the first line that counts, so any number of ignored requests
    (a 401 flood) after it only costs reading time, never hides it; `budget_bytes` bounds that
    time, and running out of it is reported (`state: truncated`), never taken for "idle".
    `state`: ok, missing (no such log), truncated, error.
    """
    out = {"state": "ok", "path": path, "files": [], "last_start": None, "last_end": None,
           "ignored": 0, "bad_lines": 0, "bytes": 0, "error": None}
    files = rotations(path)
    if not files:
        out["state"] = "missing"
        return out
    for name in files:
        out["files"].append(os.path.basename(name))
        try:
            for raw, used in _lines_backwards(name, budget_bytes - out["bytes"]):
                out["bytes"] += used
                if out["bytes"] > budget_bytes:
                    out["state"] = "truncated"
                    return out
                kind, start, end = parse_log_line(raw.decode("utf-8", "replace"), prefix, ignore_statuses)
                if kind == "count":
                    out["last_start"], out["last_end"] = start, end
                    return out
                if kind == "ignored":
                    out["ignored"] += 1
                elif kind == "bad":
                    out["bad_lines"] += 1
        except (OSError, EOFError, ValueError) as exc:  # unreadable rotation: say so, never "idle"
            out["state"] = "error"
            out["error"] = "%s: %s" % (os.path.basename(name), type(exc).__name__)
            return out
    return out


def _run(argv, timeout=10):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def unit_times(unit):
    """State and start of a systemd unit: wall clock (s) and monotonic clock (s) of its last start."""
    out = {"state": None, "wall": None, "mono": None}
    text = _run(["systemctl", "show", "--timestamp=unix", "-p", "ActiveState", "-p", "LoadState",
                 "-p", "ActiveEnterTimestamp", "-p", "ActiveEnterTimestampMonotonic", unit])
    if text is None:
        return out
    props = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    out["state"] = props.get("ActiveState") or None
    if props.get("LoadState") == "not-found":
        out["state"] = "not-found"
    wall = _as_float(props.get("ActiveEnterTimestamp", "").lstrip("@").strip())
    mono = _as_float(props.get("ActiveEnterTimestampMonotonic"))
    out["wall"] = wall if wall else None
    out["mono"] = mono / 1e6 if mono else None
    return out


def _rfc3339(value):
    m = re.match(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})$", value or "")
    if not m or m.group(1) == "0001":
        return None
    import calendar
    secs = calendar.timegm(tuple(int(m.group(i)) for i in range(1, 7)) + (0, 0, 0))
    if m.group(8) != "Z":
        sign = 1 if m.group(8)[0] == "+" else -1
        secs -= sign * (int(m.group(8)[1:3]) * 3600 + int(m.group(8)[4:6]) * 60)
    return secs + float(m.group(7) or 0)


def container_state(name):
    """The engine container (docker inspect): running, started_at (epoch), restarts; None when unknown."""
    if not name:
        return None
    text = _run(["docker", "inspect", "-f", "{{json .State}} {{.RestartCount}}", name])
    if not text or not text.strip():
        return None
    state, _sep, restarts = text.strip().rpartition(" ")
    try:
        st = json.loads(state)
    except ValueError:
        return None
    return {"running": bool(st.get("Running")), "status": st.get("Status"),
            "started_at": _rfc3339(st.get("StartedAt")), "restarts": int(_as_float(restarts) or 0)}


def read_metrics(url, timeout=10):
    """(body, error_kind, error) for GET url; error_kind: refused, timeout, http, other.

    Plain http.client: the engine's /metrics on the loopback needs no TLS, proxy or redirect
    handling, and a refused connection must be told apart from every other failure."""
    import http.client
    import socket
    from urllib.parse import urlsplit
    parts = urlsplit(url)
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.request("GET", (parts.path or "/") + ("?" + parts.query if parts.query else ""))
        resp = conn.getresponse()
        body = resp.read(4 << 20)
        if resp.status != 200:
            return None, "http", "HTTP %s" % resp.status
        return body.decode("utf-8", "replace"), None, None
    except (ConnectionRefusedError, ConnectionResetError) as exc:
        return None, "refused", type(exc).__name__
    except socket.timeout:
        return None, "timeout", "timed out"
    except (OSError, http.client.HTTPException) as exc:
        return None, "other", type(exc).__name__
    finally:
        conn.close()


def gather(access_log, metrics_url, unit, container=None, prefix="/v1", budget_bytes=64 << 20):
    """Everything the decision needs from the host, read-only. JSON-serialisable."""
    raw = {"now": time.time(), "monotonic": time.monotonic()}
    raw["log"] = scan_activity_log(access_log, prefix=prefix, budget_bytes=budget_bytes)
    raw["unit"] = unit_times(unit)
    raw["container"] = container_state(container)
    raw["metrics"], raw["metrics_error_kind"], raw["metrics_error"] = read_metrics(metrics_url)
    return raw


# --------------------------------------------------------------------------------------------
# raw host material + API facts -> observation
# --------------------------------------------------------------------------------------------

def observe(raw, api_now=None, created_at=None, uptime_mins=None, reachable=True, failed_probes=0,
            extra_activity=None):
    """An observation for decide() from gather()'s output (None when the host was not read)."""
    obs = {"reachable": _bool(reachable) and raw is not None, "failed_probes": failed_probes,
           "api_now": api_now, "created_at": created_at, "session_started_at": None}
    up = _as_float(uptime_mins)
    if up is not None and up >= 0 and _as_float(api_now) is not None:
        # uptime_mins is documented nowhere (docs/vast-api-notes.md): never trusted alone. A
        # session cannot begin before the rental, so the start it implies is clamped to start_date
        # (the instance then looks younger: the safe side). Missing stays unknown, never "forever".
        started = _as_float(api_now) - up * 60.0
        created = _as_float(created_at)
        obs["session_started_at"] = max(started, created) if created is not None else started
    if raw is None:
        return obs
    log = raw.get("log") or {}
    unit = raw.get("unit") or {}
    ctr = raw.get("container")
    obs.update(host_now=raw.get("now"), host_monotonic=raw.get("monotonic"),
               last_request_start=log.get("last_start"), last_request_end=log.get("last_end"),
               log_state=log.get("state"), log_path=log.get("path"),
               stack_state=unit.get("state"), stack_started_at=unit.get("wall"),
               stack_started_mono=unit.get("mono"), extra_activity=list(extra_activity or []))
    kind = raw.get("metrics_error_kind")
    if kind is None and raw.get("metrics") is not None:
        act = metrics_activity(raw.get("metrics"))
        obs.update(requests_running=act["requests_running"], requests_waiting=act["requests_waiting"])
        obs["engine"] = "ok" if act["problem"] is None else "no_gauges"
        obs["engine_detail"] = act["problem"]
    elif kind == "refused":
        up_stack = unit.get("state") in ("active", "activating", "reloading")
        running = ctr.get("running") if ctr else None
        if running or (running is None and up_stack):
            obs["engine"] = "loading"
            since = None
            if ctr and ctr.get("running") and not ctr.get("restarts"):
                since = ctr.get("started_at")
            obs["loading_since"] = since or unit.get("wall")
            obs["engine_detail"] = "the engine's port refuses connections while %s" % (
                "its container runs" if running else "%s is %s" % ("the stack", unit.get("state")))
        else:
            obs["engine"] = "down"
            obs["engine_detail"] = "engine not running (%s)" % (
                "container %s" % ctr.get("status") if ctr else "stack %s" % (unit.get("state") or "unknown"))
    else:
        obs["engine"] = "error"
        obs["engine_detail"] = "/metrics failed: %s" % (raw.get("metrics_error") or kind or "no answer")
    return obs


# --------------------------------------------------------------------------------------------
# the decision
# --------------------------------------------------------------------------------------------

def _num(value, name, allow_none=True):
    if value is None or value == "" or (isinstance(value, str) and value.lower() in ("none", "null")):
        if allow_none:
            return None
        raise PolicyError("%s is required" % name)
    if isinstance(value, bool):
        raise PolicyError("%s must be a number, got %r" % (name, value))
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise PolicyError("%s must be a number, got %r" % (name, value)) from None
    if not math.isfinite(result):
        raise PolicyError("%s must be a finite number, got %r" % (name, value))
    return result


def _bool(value):
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _mins(seconds):
    return "%.0f min" % (seconds / 60.0) if seconds >= 600 or seconds == 0 else "%.1f min" % (seconds / 60.0)


def policy_from(policy):
    pol = dict(DEFAULT_POLICY)
    pol.update(dict((k, v) for k, v in (policy or {}).items() if v is not None or k == "ttl_hours"))
    p = {
        "idle": _num(pol["idle_minutes"], "idle_minutes", False) * 60.0,
        "grace": _num(pol["boot_grace_minutes"], "boot_grace_minutes", False) * 60.0,
        "ttl": _num(pol.get("ttl_hours"), "ttl_hours"),
        "unreachable_limit": int(_num(pol["unreachable_limit"], "unreachable_limit", False)),
        "unreachable_min_age": _num(pol["unreachable_min_age_minutes"], "unreachable_min_age_minutes", False) * 60.0,
        "stop_when_engine_down": _bool(pol["stop_when_engine_down"]),
        "load_timeout": _num(pol["load_timeout_minutes"], "load_timeout_minutes", False) * 60.0,
        "stop_when_never_healthy": _bool(pol["stop_when_never_healthy"]),
        "max_skew": _num(pol["max_clock_skew_minutes"], "max_clock_skew_minutes", False) * 60.0,
        "max_step": _num(pol["max_clock_step_minutes"], "max_clock_step_minutes", False) * 60.0,
        "tolerance": _num(pol["clock_tolerance_seconds"], "clock_tolerance_seconds", False),
        "require_log": _bool(pol["require_activity_log"]),
    }
    p["ttl"] = p["ttl"] * 3600.0 if p["ttl"] and p["ttl"] > 0 else None
    return p


def decide(observation, policy=None):
    """What to do with one running instance, and when.

    Returns `action` (stop|keep), `reason` (see docs/playbooks.md: unreachable, busy, unknown,
    ttl, grace, clock, loading, unhealthy, engine_down, idle, active), `unknown` (True when a
    fact needed to decide is missing or cannot be trusted: kept, never stopped), `message`,
    `stop_in_seconds` (0 = now, None = not while this lasts) with `when` for people, and the
    figures it used (idle_seconds, session_seconds, age_seconds, in_flight, last_activity).

    Activity (request times, stack start, loading) is measured on the host's clock, ages (boot
    grace, TTL) on the API's clock; the clocks are compared only to detect that one of them
    jumped, never mixed in one duration.
    """
    if not isinstance(observation, dict):
        raise PolicyError("expects a dict of observations")
    p = policy_from(policy)
    o = observation
    api_now = _num(o.get("api_now"), "api_now", False)
    created = _num(o.get("created_at"), "created_at")
    session_start = _num(o.get("session_started_at"), "session_started_at")
    host_now = _num(o.get("host_now"), "host_now")
    age = max(api_now - created, 0.0) if created is not None else None
    session = max(api_now - session_start, 0.0) if session_start is not None else None
    session_source = "api" if session is not None else None

    out = {"action": "keep", "reason": None, "unknown": False, "unreachable": False, "message": "",
           "idle_seconds": None, "age_seconds": age, "session_seconds": session, "session_source": None,
           "in_flight": None, "last_activity": None, "stop_in_seconds": None, "when": ""}

    ttl_left = (p["ttl"] - age) if (p["ttl"] is not None and age is not None) else None
    ttl_over = ttl_left is not None and ttl_left <= 0

    def done(action, reason, message, stop_in=None, unknown=False, never=None):
        if action == "stop":
            stop_in = 0.0
        elif ttl_left is not None and reason not in ("busy", "unknown", "unreachable"):
            stop_in = ttl_left if stop_in is None else min(stop_in, ttl_left)
        out.update(action=action, reason=reason, message=message, unknown=unknown,
                   stop_in_seconds=None if stop_in is None else max(round(stop_in, 1), 0.0))
        if action == "stop":
            out["when"] = "now"
        elif stop_in is not None:
            out["when"] = "in %s" % _mins(max(stop_in, 0.0))
        else:
            out["when"] = "not while: %s" % (never or message)
        out["session_source"] = session_source
        return out

    # -- unreachable: nothing on the host can be read -----------------------------------------
    if not _bool(o.get("reachable")):
        out["unreachable"] = True
        failed = int(_num(o.get("failed_probes"), "failed_probes") or 0)
        if ttl_over:
            return done("stop", "ttl", "unreachable and past its TTL of %.1f h" % (p["ttl"] / 3600))
        old_enough = session is not None and session >= p["grace"] + p["unreachable_min_age"]
        if p["unreachable_limit"] > 0 and failed >= p["unreachable_limit"] and old_enough:
            return done("stop", "unreachable", "unreachable for %d consecutive probes (limit %d), session %s"
                        % (failed, p["unreachable_limit"], _mins(session)))
        if p["unreachable_limit"] <= 0:
            why = "stopping is off (unreachable_limit 0)"
        elif failed < p["unreachable_limit"]:
            why = "%d/%d failed probes" % (failed, p["unreachable_limit"])
        elif session is None:
            why = "session start unknown (no uptime_mins from the API)"
        else:
            why = "session younger than grace + %s" % _mins(p["unreachable_min_age"])
        return done("keep", "unreachable", "unreachable, not stopped: %s" % why, stop_in=ttl_left,
                    never="unreachable (%s)" % why)

    # -- the engine: in flight, unknown, loading, down -----------------------------------------
    engine = o.get("engine")
    running, waiting = o.get("requests_running"), o.get("requests_waiting")
    if engine is None:  # older callers: only the two gauges, None when /metrics was unreadable
        engine = "down" if running is None and waiting is None else "ok"
    detail = o.get("engine_detail") or ""
    if engine == "ok":
        if running is None or waiting is None:
            engine, detail = "no_gauges", detail or "/metrics answered without vLLM's request gauges"
        else:
            out["in_flight"] = int(_num(running, "requests_running")) + int(_num(waiting, "requests_waiting"))
    if out["in_flight"]:
        msg = "%d request(s) in flight" % out["in_flight"]
        if ttl_over:
            msg += "; past TTL, stops once they finish"
        return done("keep", "busy", msg, never="%d request(s) in flight" % out["in_flight"])
    if engine in ("no_gauges", "error"):
        return done("keep", "unknown", "in-flight requests unknown: %s" % (detail or engine), unknown=True)
    if engine not in ("ok", "loading", "down"):
        raise PolicyError("engine must be ok, no_gauges, error, loading or down, got %r" % engine)
    if engine == "down":
        out["in_flight"] = 0  # nothing can be in flight through an engine that does not run

    # -- TTL: the user's hard cap on spend (API clock) -----------------------------------------
    if ttl_over:
        return done("stop", "ttl", "past its TTL of %.1f h (age %.1f h)" % (p["ttl"] / 3600, age / 3600))

    # -- activity on the host's clock -----------------------------------------------------------
    marks = [("the newest /v1 request", _num(o.get("last_request_end"), "last_request_end")),
             ("the newest /v1 request", _num(o.get("last_request_start"), "last_request_start")),
             ("the stack's start", _num(o.get("stack_started_at"), "stack_started_at"))]
    marks += [("the watchdog's last activity", _num(m, "extra_activity")) for m in (o.get("extra_activity") or [])]
    marks = [(what, t) for what, t in marks if t is not None]
    last = max(marks, key=lambda m: m[1]) if marks else None
    if last is not None:
        out["last_activity"] = last[1]
    if session is None and host_now is not None and o.get("stack_started_at") is not None:
        # no session facts from the API: the stack's own age (host clock) is the next best
        session = max(host_now - _num(o.get("stack_started_at"), "stack_started_at"), 0.0)
        session_source = "stack"
        out["session_seconds"] = session
    if host_now is not None and last is not None:
        out["idle_seconds"] = host_now - last[1]
    elif session is not None and host_now is not None and not marks:
        out["idle_seconds"] = session  # nothing at all happened since this session began
    idle = out["idle_seconds"]

    if session is None:
        return done("keep", "unknown", "session start unknown (the API gives no uptime_mins and the host "
                    "no stack start time): not stopped", unknown=True)

    # clocks: checked before anything measured on the host's clock can stop the instance
    clock = None
    if host_now is not None and last is not None and last[1] > host_now + p["tolerance"]:
        clock = "%s is stamped %s after the host's clock (clock stepped back?)" % (last[0], _mins(last[1] - host_now))
    step_base = (_num(o.get("stack_started_at"), "stack_started_at"), _num(o.get("stack_started_mono"), "stack_started_mono"),
                 _num(o.get("host_monotonic"), "host_monotonic"))
    if clock is None and p["max_step"] > 0 and host_now is not None and None not in step_base:
        step = (host_now - step_base[0]) - (step_base[2] - step_base[1])
        if abs(step) > p["max_step"]:
            clock = "the host's clock stepped %s by %s since the stack started (wall vs monotonic clock)" % (
                "forward" if step > 0 else "back", _mins(abs(step)))
    if clock is None and p["max_skew"] > 0 and host_now is not None and abs(host_now - api_now) > p["max_skew"]:
        clock = "the host's clock is %s %s the API's (limit %s)" % (
            _mins(abs(host_now - api_now)), "ahead of" if host_now > api_now else "behind", _mins(p["max_skew"]))
    if clock is None and host_now is None:
        clock = "the host's clock was not read"

    grace_left = p["grace"] - session
    if grace_left > 0:
        what = "loading, " if engine == "loading" else ""
        stop_in = None
        if clock is None and idle is not None and (engine == "ok" or (engine == "down" and p["stop_when_engine_down"])):
            stop_in = max(grace_left, p["idle"] - idle)
        elif clock is None and engine == "loading" and p["stop_when_never_healthy"] and o.get("loading_since") is not None:
            stop_in = max(grace_left, p["load_timeout"] - (host_now - _num(o.get("loading_since"), "loading_since")))
        return done("keep", "grace", "%sinside boot grace (%s of %s)" % (what, _mins(session), _mins(p["grace"])),
                    stop_in=stop_in)

    if clock is not None:
        return done("keep", "clock", "%s: not stopped" % clock, unknown=True)

    if engine == "loading":
        since = _num(o.get("loading_since"), "loading_since")
        if since is None:
            return done("keep", "unknown", "engine not answering and its start time is unknown: %s" % detail,
                        unknown=True)
        loading_for = max(host_now - since, 0.0)
        if loading_for < p["load_timeout"]:
            return done("keep", "loading", "engine loading for %s (load_timeout %s): %s"
                        % (_mins(loading_for), _mins(p["load_timeout"]), detail),
                        stop_in=(p["load_timeout"] - loading_for) if p["stop_when_never_healthy"] else None,
                        never="loading" if not p["stop_when_never_healthy"] else None)
        msg = "never became healthy in %s" % _mins(loading_for)
        if p["stop_when_never_healthy"]:
            return done("stop", "unhealthy", msg)
        return done("keep", "unhealthy", msg + " (stop_when_never_healthy is off)", never=msg)

    if engine == "down" and not p["stop_when_engine_down"]:
        return done("keep", "engine_down", "%s; not stopped (stop_when_engine_down is off)" % detail,
                    never="engine down, stop_when_engine_down off")

    log_state = o.get("log_state")
    if engine == "ok" and p["require_log"] and log_state not in (None, "ok"):
        why = {"missing": "no activity log at %s" % (o.get("log_path") or "?"),
               "truncated": "no counted request found within the read budget of %s" % (o.get("log_path") or "the log"),
               }.get(log_state, "activity log unreadable (%s)" % log_state)
        return done("keep", "unknown", "last activity unknown: %s" % why, unknown=True)

    if idle is None:
        return done("keep", "unknown", "last activity unknown", unknown=True)
    down = " (%s)" % detail if engine == "down" and detail else (" (engine down)" if engine == "down" else "")
    if idle >= p["idle"]:
        return done("stop", "idle", "idle for %s (limit %s)%s" % (_mins(idle), _mins(p["idle"]), down))
    return done("keep", "active", "active %s ago (limit %s)%s" % (_mins(idle), _mins(p["idle"]), down),
                stop_in=p["idle"] - idle)


# --------------------------------------------------------------------------------------------
# stopped is not free: reclaim what stayed stopped too long
# --------------------------------------------------------------------------------------------

HOURS_PER_MONTH = 720.0  # vast.ai's storage prices are per GB-month of 30 days


def _protected(label, labels, prefixes):
    label = label or ""
    return label in set(labels or ()) or any(label.startswith(p) for p in (prefixes or ()) if p)


def reclaim_decision(row, window_spend, api_now, after_hours, protected_labels=(), protected_prefixes=()):
    """Destroy a stopped instance that has billed no GPU time for `after_hours`?

    `window_spend` is this instance's billing entry over the last `after_hours` (uptime_hours,
    storage_per_hour), or None when billing could not be read. Stateless: the API's own ledger
    says whether the GPU ran in that window; no GPU time in the whole window (and created before
    it) means stopped for at least that long.
    """
    after = _num(after_hours, "after_hours", False) * 3600.0
    now = _num(api_now, "api_now", False)
    created = _num(row.get("start_date"), "start_date")
    label = row.get("label") or ""
    storage = _num((window_spend or {}).get("storage_per_hour"), "storage_per_hour")
    out = {"id": int(row["id"]), "label": label, "status": row.get("actual_status"), "action": "keep",
           "reason": None, "storage_per_hour": storage,
           "storage_per_month": round(storage * HOURS_PER_MONTH, 2) if storage is not None else None}

    def done(action, reason, message):
        burn = ("storage $%.4f/h = $%.2f a month" % (storage, storage * HOURS_PER_MONTH)) if storage is not None \
            else "storage cost unknown"
        out.update(action=action, reason=reason, message=message,
                   line="%s (id %s): %s - %s; %s" % (label or "?", out["id"], action.upper(), message, burn))
        return out

    if after <= 0:
        return done("keep", "off", "reclaim is off (reclaim_after_hours 0)")
    if _protected(label, protected_labels, protected_prefixes):
        return done("keep", "protected", "label is protected, never reclaimed")
    if window_spend is None:
        return done("keep", "unknown", "billing unreadable: how long it has been stopped is unknown")
    if created is None:
        return done("keep", "unknown", "creation time unknown")
    if now - created < after:
        return done("keep", "young", "created %.1f h ago, less than reclaim_after_hours %.0f h"
                    % ((now - created) / 3600.0, after / 3600.0))
    ran = _num(window_spend.get("uptime_hours"), "uptime_hours") or 0.0
    if ran > 0:
        return done("keep", "recent", "GPU ran %.2f h within the last %.0f h: not stopped long enough"
                    % (ran, after / 3600.0))
    return done("destroy", "reclaim", "stopped for more than %.0f h (no GPU time in that window)" % (after / 3600.0))


# --------------------------------------------------------------------------------------------
# run on the host as the probe of idle_shutdown.yml / status.yml
# --------------------------------------------------------------------------------------------

def _main(argv):
    """probe ACCESS_LOG METRICS_URL UNIT [CONTAINER]: print gather()'s JSON (read-only)."""
    if len(argv) < 4 or argv[0] != "probe":
        sys.stderr.write("usage: idle_policy.py probe ACCESS_LOG METRICS_URL UNIT [CONTAINER]\n")
        return 2
    container = argv[4] if len(argv) > 4 and argv[4] else None
    json.dump(gather(argv[1], argv[2], argv[3], container=container), sys.stdout)
    return 0


if __name__ == "__main__":
    # run as a plain script on the host (ansible.builtin.script), never as a module
    raise SystemExit(_main(sys.argv[1:]))
