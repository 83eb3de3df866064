# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for idle detection: thin wrappers around plugins/module_utils/idle_policy.py, the one
idle policy that the controller, the on-host probe and the on-host watchdog all run.

Pure functions of their inputs (no I/O, no clock): the decision that stops paid instances is
unit-tested in isolation; the playbooks only gather observations.
"""

from __future__ import annotations

from decimal import Decimal, ROUND_HALF_UP

from ansible.errors import AnsibleFilterError

# The policy itself lives in module_utils so that the on-host probe and watchdog run this very
# file (idle_shutdown.yml ships it as its probe, roles/idle_watchdog copies it to the host).
from ansible_collections.llmops.vastai.plugins.module_utils import idle_policy

DEFAULT_POLICY = idle_policy.DEFAULT_POLICY


def _wrap(func, name):
    def call(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except idle_policy.PolicyError as exc:
            raise AnsibleFilterError("%s: %s" % (name, exc))
    call.__name__ = name
    call.__doc__ = func.__doc__
    return call


def vllm_activity(text):
    """Parse Prometheus exposition text from vLLM (idle_policy.metrics_activity)."""
    if text is not None and not isinstance(text, str):
        raise AnsibleFilterError("vllm_activity expects the /metrics body as a string, got %s" % type(text).__name__)
    return _wrap(idle_policy.metrics_activity, "vllm_activity")(text)


def nginx_last_request(log, prefix="/v1", ignore_statuses=idle_policy.IGNORED_STATUSES):
    """Newest start/end of the requests that count in JSON access-log lines (idle_policy.log_activity)."""
    return idle_policy.log_activity(log, prefix, ignore_statuses)


def idle_observation(raw, api_now=None, created_at=None, uptime_mins=None, reachable=True, failed_probes=0):
    """The probe's JSON (or None when the host was not read) + the API's facts -> an observation."""
    if raw is None or raw == "" or raw == {}:
        raw = None  # the host was not read
    elif not isinstance(raw, dict):
        raise AnsibleFilterError("idle_observation expects the probe's JSON object")
    observe = _wrap(idle_policy.observe, "idle_observation")
    return observe(raw, api_now=api_now, created_at=created_at, uptime_mins=uptime_mins, reachable=reachable,
                   failed_probes=failed_probes)


def idle_decision(observation, policy=None):
    """Decide what to do with one running instance, and when (idle_policy.decide)."""
    if not isinstance(observation, dict):
        raise AnsibleFilterError("idle_decision expects a dict of observations")
    return _wrap(idle_policy.decide, "idle_decision")(observation, policy)


def reclaim_decisions(rows, window_spend, api_now=None, after_hours=0, protected_labels=None,
                      protected_prefixes=None):
    """Stopped instances + the billing entries of the reclaim window -> one decision each."""
    by_id = None
    if window_spend is not None:
        by_id = dict((int(e["id"]), e) for e in window_spend)
    out = []
    for row in rows or []:
        spend = None if by_id is None else by_id.get(int(row["id"]))
        out.append(_wrap(idle_policy.reclaim_decision, "reclaim_decisions")(
            row, spend, api_now, after_hours, protected_labels or (), protected_prefixes or ()))
    return out


def idle_countdown_line(pair):
    """(host, hostvars) -> one line: what idle shutdown does with it and when."""
    host, hv = pair
    r = hv.get("idle_result") or {}
    return "%s (id %s): %s %s - %s [%s]" % (
        host, hv.get("vast_id", "?"), (r.get("action") or "?").upper(), r.get("when") or "", r.get("message") or "",
        r.get("reason"))


def _minutes(seconds):
    return None if seconds is None else round(float(seconds) / 60.0, 1)


def status_view(instances, decisions=None, endpoints=None, billing=None, reclaim=None, api_now=None):
    """One row per instance for status.yml: the API's row, idle shutdown's decision (running
    ones), the storage burn and the reclaim verdict (stopped ones)."""
    decisions = dict((int(k), v) for k, v in (decisions or {}).items())
    endpoints = dict((int(k), v) for k, v in (endpoints or {}).items())
    billing = dict((int(e["id"]), e) for e in (billing or []))
    reclaim = dict((int(r["id"]), r) for r in (reclaim or []))
    rows = []
    for inst in instances or []:
        iid = int(inst["id"])
        d = decisions.get(iid)
        up = inst.get("uptime_mins")
        session_s = float(up) * 60.0 if up not in (None, "") else (d or {}).get("session_seconds")
        dph = float(inst.get("dph_total") or 0)
        b = billing.get(iid) or {}
        storage = b.get("storage_per_hour")
        status = inst.get("actual_status") or "provisioning"
        row = {
            "id": iid, "label": inst.get("label"), "status": status,
            "gpu": "%sx %s" % (inst.get("num_gpus") or 1, inst.get("gpu_name") or "?"),
            "dph": round(dph, 4), "endpoint": endpoints.get(iid) if status == "running" else None,
            "session_minutes": _minutes(session_s) if status == "running" else None,
            "session_cost": session_cost(dph, session_s) if status == "running" and session_s is not None else None,
            "storage_per_hour": storage,
            "storage_per_month": round(float(storage) * idle_policy.HOURS_PER_MONTH, 2) if storage is not None else None,
            "last_activity_minutes_ago": None, "in_flight": None, "idle_action": None, "idle_reason": None,
            "idle_when": None, "stop_in_minutes": None, "idle_message": None, "unknown": None, "reclaim": None,
        }
        if d:
            last = d.get("last_activity")
            host_now = d.get("host_now")
            row.update(in_flight=d.get("in_flight"), idle_action=d.get("action"), idle_reason=d.get("reason"),
                       idle_when=d.get("when"), stop_in_minutes=_minutes(d.get("stop_in_seconds")),
                       idle_message=d.get("message"), unknown=d.get("unknown"),
                       last_activity_minutes_ago=_minutes(host_now - last) if last is not None and host_now is not None
                       else None)
        elif status == "running":
            row.update(idle_action="keep", idle_reason="unknown", idle_when="not while: the host was not read",
                       idle_message="not observed in this run", unknown=True)
        r = reclaim.get(iid)
        if r:
            row["reclaim"] = {"action": r["action"], "reason": r["reason"], "message": r["message"]}
        rows.append(row)
    return rows


def _cell(value, fmt="%s"):
    return "-" if value is None or value == "" else fmt % value


def status_table(rows):
    """status_view rows -> the lines of a plain-text table for people."""
    head = ("label", "id", "status", "gpu", "$/h", "session", "cost", "last act.", "in flight", "idle shutdown")
    body = []
    for r in rows:
        if r["status"] == "running":
            idle_col = "%s %s (%s)" % ((r["idle_action"] or "?").upper(), r["idle_when"] or "", r["idle_reason"])
        else:
            idle_col = "storage $%s/h = $%s/month; reclaim: %s" % (
                _cell(r["storage_per_hour"], "%.4f"), _cell(r["storage_per_month"], "%.2f"),
                (r["reclaim"] or {}).get("message") or "off")
        body.append((_cell(r["label"]), str(r["id"]), r["status"], r["gpu"], "%.3f" % r["dph"],
                     _cell(r["session_minutes"], "%.0f min"), _cell(r["session_cost"], "$%.2f"),
                     _cell(r["last_activity_minutes_ago"], "%.1f min ago"), _cell(r["in_flight"]), idle_col))
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    fmt = "  ".join("%%-%ds" % w for w in widths[:-1]) + "  %s"
    lines = [fmt % head, fmt % tuple("-" * w for w in widths)]
    lines += [fmt % b for b in body]
    for r in rows:
        if r["endpoint"]:
            lines.append("%s endpoint: %s" % (r["label"], r["endpoint"]))
    return lines


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
            "idle_observation": idle_observation,
            "idle_countdown_line": idle_countdown_line,
            "reclaim_decisions": reclaim_decisions,
            "status_view": status_view,
            "status_table": status_table,
            "session_cost": session_cost,
            "duration_human": duration_human,
        }
