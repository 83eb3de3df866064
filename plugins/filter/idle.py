# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure helpers for idle detection: read vLLM /metrics, the nginx /v1 access log, and
decide whether an instance should be stopped.

Everything here is a pure function of its inputs (no I/O, no clock), so the decision that
stops paid instances is unit-tested in isolation; the playbook only gathers observations.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal, ROUND_HALF_UP

from ansible.errors import AnsibleFilterError

try:
    from prometheus_client.parser import text_string_to_metric_families
    HAS_PROMETHEUS_CLIENT = True
except ImportError:  # pragma: no cover - reported when the filter is used
    HAS_PROMETHEUS_CLIENT = False


# vLLM's names; counters are exposed with `_total` and one series per label set
# (finished_reason, engine, model_name), so every series is summed.
_GAUGES = {
    "requests_running": "vllm:num_requests_running",
    "requests_waiting": "vllm:num_requests_waiting",
}
_COUNTERS = {
    "request_success_total": "vllm:request_success_total",
    "prompt_tokens_total": "vllm:prompt_tokens_total",
    "generation_tokens_total": "vllm:generation_tokens_total",
}


def vllm_activity(text):
    """Parse Prometheus exposition text from vLLM into the numbers idle detection needs.

    Returns a dict with `requests_running`, `requests_waiting` and the counter totals,
    each summed over all label sets; a metric that is absent is None (not 0), so a
    caller can tell "no requests" from "this engine does not export it".
    """
    if not HAS_PROMETHEUS_CLIENT:
        raise AnsibleFilterError("vllm_activity needs the prometheus-client Python package on the controller")
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise AnsibleFilterError("vllm_activity expects the /metrics body as a string, got %s" % type(text).__name__)
    wanted = dict(_GAUGES)
    wanted.update(_COUNTERS)
    by_sample = {name: key for key, name in wanted.items()}
    sums = dict.fromkeys(wanted)
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = by_sample.get(sample.name)
                if key is None or math.isnan(sample.value):
                    continue
                sums[key] = (sums[key] or 0.0) + sample.value
    except ValueError as exc:
        raise AnsibleFilterError("vllm_activity: /metrics is not Prometheus text: %s" % exc)
    for key in _GAUGES:
        if sums[key] is not None:
            sums[key] = int(round(sums[key]))
    sums["in_flight"] = None
    if sums["requests_running"] is not None or sums["requests_waiting"] is not None:
        sums["in_flight"] = (sums["requests_running"] or 0) + (sums["requests_waiting"] or 0)
    return sums


def _as_float(value):
    if value is None or value == "" or value == "-":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def nginx_last_request(log, prefix="/v1", ignore_statuses=(401, 403)):
    """Find the start time of the newest request under `prefix` in a JSON-lines access log.

    nginx logs a request when it ends; its start is `msec - request_time`, which matters for
    long streams (a 20-minute stream that just ended started 20 minutes ago, but the engine was
    busy until now: that is why the end time is returned too). Requests answered with an
    ignored status (unauthenticated scanners) are not activity. Lines that are not JSON
    (e.g. a truncated last line) are counted and skipped.
    """
    if log is None:
        log = ""
    lines = log.splitlines() if isinstance(log, str) else list(log)
    ignored = set(int(s) for s in (ignore_statuses or ()))
    result = {"last_start": None, "last_end": None, "requests": 0, "ignored": 0, "bad_lines": 0}
    for line in lines:
        line = line.strip() if isinstance(line, str) else line
        if not line:
            continue
        try:
            entry = json.loads(line) if isinstance(line, str) else dict(line)
        except (ValueError, TypeError):
            result["bad_lines"] += 1
            continue
        if not isinstance(entry, dict):
            result["bad_lines"] += 1
            continue
        uri = str(entry.get("uri") or entry.get("request_uri") or "")
        if not uri.startswith(prefix):
            continue
        end = _as_float(entry.get("msec"))
        if end is None:
            result["bad_lines"] += 1
            continue
        try:
            status = int(entry.get("status"))
        except (TypeError, ValueError):
            status = None
        if status in ignored:
            result["ignored"] += 1
            continue
        start = end - max(_as_float(entry.get("request_time")) or 0.0, 0.0)
        result["requests"] += 1
        if result["last_start"] is None or start > result["last_start"]:
            result["last_start"] = start
        if result["last_end"] is None or end > result["last_end"]:
            result["last_end"] = end
    return result


DEFAULT_POLICY = {
    "idle_minutes": 30,
    "boot_grace_minutes": 20,
    "ttl_hours": None,
    "unreachable_limit": 0,
    "unreachable_min_age_minutes": 60,
    "stop_when_engine_down": True,
}


def _num(value, name, allow_none=True):
    if value is None or value == "":
        if allow_none:
            return None
        raise AnsibleFilterError("idle_decision: %s is required" % name)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise AnsibleFilterError("idle_decision: %s must be a number, got %r" % (name, value))


def idle_decision(observation, policy=None):
    """Decide what to do with one running instance. Returns a dict:

    `action`: `stop` or `keep`; `reason`: one of `ttl`, `unreachable`, `busy`, `grace`,
    `idle`, `active`; `unreachable` (bool, to report); `idle_seconds`; `age_seconds`;
    `session_seconds`; `message`: one line for humans.

    Two clocks are used on purpose and never mixed: activity (request times, the stack's
    start, "now") comes from the host's clock; instance age and session (boot grace, TTL)
    come from the API's clock. So a skewed host clock cannot make a busy instance look idle.

    observation keys:
      reachable (bool), failed_probes (int, consecutive failed SSH probes in this run),
      host_now, last_request_start, last_request_end, stack_started_at (host clock),
      requests_running, requests_waiting (None when /metrics could not be read),
      api_now, created_at, session_started_at (API clock).
    policy keys: see DEFAULT_POLICY (minutes/hours; `unreachable_limit` 0 = only report).
    """
    if not isinstance(observation, dict):
        raise AnsibleFilterError("idle_decision expects a dict of observations")
    pol = dict(DEFAULT_POLICY)
    pol.update({k: v for k, v in (policy or {}).items() if v is not None or k == "ttl_hours"})
    idle_limit = _num(pol["idle_minutes"], "idle_minutes", False) * 60.0
    grace = _num(pol["boot_grace_minutes"], "boot_grace_minutes", False) * 60.0
    ttl = _num(pol.get("ttl_hours"), "ttl_hours")
    ttl = ttl * 3600.0 if ttl and ttl > 0 else None
    unreachable_limit = int(_num(pol["unreachable_limit"], "unreachable_limit", False))
    unreachable_min_age = _num(pol["unreachable_min_age_minutes"], "unreachable_min_age_minutes", False) * 60.0

    api_now = _num(observation.get("api_now"), "api_now", False)
    created = _num(observation.get("created_at"), "created_at")
    session_start = _num(observation.get("session_started_at"), "session_started_at")
    if session_start is None:
        session_start = created
    age = max(api_now - created, 0.0) if created is not None else None
    session = max(api_now - session_start, 0.0) if session_start is not None else None

    out = {"action": "keep", "reason": None, "unreachable": False, "idle_seconds": None,
           "age_seconds": age, "session_seconds": session, "in_flight": None}

    def done(action, reason, message):
        out.update(action=action, reason=reason, message=message)
        return out

    reachable = bool(observation.get("reachable"))
    ttl_over = ttl is not None and age is not None and age >= ttl

    if not reachable:
        out["unreachable"] = True
        failed = int(_num(observation.get("failed_probes"), "failed_probes") or 0)
        if ttl_over:
            # TTL is the user's hard cap on spend; an unreachable host cannot show activity.
            return done("stop", "ttl", "unreachable and past its TTL of %.1f h" % (ttl / 3600))
        old_enough = session is not None and session >= grace + unreachable_min_age
        if unreachable_limit > 0 and failed >= unreachable_limit and old_enough:
            return done("stop", "unreachable", "unreachable for %d consecutive probes (limit %d), session %.0f min"
                        % (failed, unreachable_limit, session / 60))
        why = "stopping is off (unreachable_limit 0)" if unreachable_limit <= 0 else (
            "%d/%d failed probes" % (failed, unreachable_limit) if failed < unreachable_limit
            else "session younger than grace + %.0f min" % (unreachable_min_age / 60))
        return done("keep", "unreachable", "unreachable, not stopped: %s" % why)

    running = observation.get("requests_running")
    waiting = observation.get("requests_waiting")
    if running is None and waiting is None:
        # The engine does not answer /metrics. Past the boot grace it is dead or hung while
        # billing; nothing can be in flight through a dead engine.
        in_flight = None if not pol["stop_when_engine_down"] else 0
    else:
        in_flight = int(_num(running, "requests_running") or 0) + int(_num(waiting, "requests_waiting") or 0)
    out["in_flight"] = in_flight

    if in_flight is None or in_flight > 0:
        what = "metrics unavailable" if in_flight is None else "%d request(s) in flight" % in_flight
        reason = "busy"
        if ttl_over:
            what += "; past TTL, stops once the requests finish"
        return done("keep", reason, what)

    if ttl_over:
        return done("stop", "ttl", "past its TTL of %.1f h (age %.1f h)" % (ttl / 3600, age / 3600))

    if session is not None and session < grace:
        return done("keep", "grace", "inside boot grace (%.0f of %.0f min)" % (session / 60, grace / 60))

    host_now = _num(observation.get("host_now"), "host_now")
    marks = [_num(observation.get(k), k) for k in ("last_request_start", "last_request_end", "stack_started_at")]
    # A finished request counts from its end too: a long stream kept the engine busy until then.
    marks = [m for m in marks if m is not None]
    if host_now is not None and marks:
        idle = max(host_now - max(marks), 0.0)
    elif session is not None:
        idle = session  # no activity recorded at all since this session started
    else:
        idle = None
    out["idle_seconds"] = idle
    if idle is not None and idle >= idle_limit:
        return done("stop", "idle", "idle for %.1f min (limit %.1f min)" % (idle / 60, idle_limit / 60))
    return done("keep", "active", "active %.1f min ago (limit %.1f min)"
                % ((idle or 0) / 60, idle_limit / 60))


def session_cost(dph, seconds):
    """Cost in dollars of `seconds` at `dph` $/h, rounded to the cent."""
    # Decimal: binary floats round 0.525 down, money rounds half up.
    cost = Decimal(str(dph or 0)) * Decimal(str(seconds or 0)) / Decimal(3600)
    return float(cost.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def duration_human(seconds):
    """`3725` -> `1h 02m 05s` (for the messages the playbooks print)."""
    if seconds is None:
        return "unknown"
    seconds = int(round(float(seconds)))
    h, rest = divmod(max(seconds, 0), 3600)
    m, s = divmod(rest, 60)
    return "%dh %02dm %02ds" % (h, m, s)


class FilterModule(object):
    def filters(self):
        return {
            "vllm_activity": vllm_activity,
            "nginx_last_request": nginx_last_request,
            "idle_decision": idle_decision,
            "session_cost": session_cost,
            "duration_human": duration_human,
        }
