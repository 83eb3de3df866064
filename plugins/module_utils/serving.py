# -*- coding: utf-8 -*-
# Copyright: llmops.vastai contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""keep_serving's decisions: for each service's replicas, what is fine, what to replace or add,
and why. Pure data in, data out (rows from the API, the audit trail, health probes, a clock), so
the playbook only carries the plan out and tests can pin every rule.

What only the audit trail can tell: vast.ai shows a stop the user asked for and a preemption of
an interruptible rental the same way (cur_state, intended_status and next_state all "stopped",
dstack's vastai backend, PR #4037), and it keeps no time of when a condition began. So a stop is
ours when the trail's newest lifecycle event for the instance is one of our stops (idle shutdown,
power_off), and a condition's age is measured from the first ``observed_<condition>`` event this
job wrote for it; both need a trail that lasts across AWX jobs (docs/playbooks.md)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import calendar
import math
import re
import time

from ansible_collections.llmops.vastai.plugins.module_utils.pricing import burn_rate, num

REPLACEMENT_SUFFIX = "-replacement"
# Our own stops: a replica stopped by one of these stays stopped (never restarted here).
OUR_STOPS = ("auto_shutdown", "auto_shutdown_complete", "power_off_requested", "power_off_complete", "stop")
# Events after which an instance ran (or was asked to): a stop older than these is history.
OUR_STARTS = ("create", "start", "power_on_requested", "power_on_complete", "replace", "reboot")
CONDITIONS = ("unhealthy", "scheduling", "offline")
DEFAULTS = {
    "replicas": 1,
    "interruptible": False,
    "bid_price": None,
    "max_dph_total": None,
    "start_timeout_minutes": 10,
    "offline_grace_minutes": 10,
    "unhealthy_grace_minutes": 15,
    "load_timeout_minutes": 120,
    "replace_old": "destroy",
}
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class PlanError(ValueError):
    pass


def _epoch(text):
    try:
        return float(calendar.timegm(time.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ")))
    except (TypeError, ValueError):
        return None


def _finite(value, what, low=0.0):
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise PlanError("%s must be a number, not %r" % (what, value))
    if not math.isfinite(f) or f < low:
        raise PlanError("%s must be a finite number >= %s, not %r" % (what, low, value))
    return f


def service_spec(raw, profiles):
    """One service of keep_serving_services with defaults, validated before anything changes."""
    if not isinstance(raw, dict):
        raise PlanError("each service must be a mapping, not %r" % (raw,))
    svc = dict(DEFAULTS)
    svc.update(raw)
    name = str(svc.get("name") or "").strip()
    if not LABEL_RE.match(name) or name.endswith(REPLACEMENT_SUFFIX):
        raise PlanError("service name %r must be a label: letters, digits, '.', '_', '-', at most 63 characters "
                        "(and not end in %s)" % (svc.get("name"), REPLACEMENT_SUFFIX))
    svc["name"] = name
    if svc.get("profile") not in profiles:
        known = ", ".join(sorted(profiles))
        raise PlanError("service %s: unknown profile %r; profiles: %s" % (name, svc.get("profile"), known))
    replicas = svc["replicas"]
    if isinstance(replicas, bool) or not isinstance(replicas, int) and not str(replicas).isdigit():
        raise PlanError("service %s: replicas must be a whole number, not %r" % (name, replicas))
    svc["replicas"] = int(replicas)
    if not 0 <= svc["replicas"] <= 20:
        raise PlanError("service %s: replicas must be between 0 and 20, not %s" % (name, svc["replicas"]))
    for key in ("start_timeout_minutes", "offline_grace_minutes", "unhealthy_grace_minutes", "load_timeout_minutes"):
        svc[key] = _finite(svc[key], "service %s: %s" % (name, key))
    for key in ("max_dph_total", "bid_price"):
        if svc[key] is not None:
            svc[key] = _finite(svc[key], "service %s: %s" % (name, key))
            if svc[key] <= 0:
                raise PlanError("service %s: %s must be greater than 0" % (name, key))
    svc["interruptible"] = bool(svc["interruptible"])
    if svc["replace_old"] not in ("destroy", "keep"):
        raise PlanError("service %s: replace_old must be destroy or keep, not %r" % (name, svc["replace_old"]))
    return svc


def replica_labels(svc):
    if svc["replicas"] == 1:
        return [svc["name"]]
    return ["%s-%d" % (svc["name"], i) for i in range(1, svc["replicas"] + 1)]


def _events_for(events, iid):
    out = []
    for ev in events or []:
        if not isinstance(ev, dict):
            continue
        try:
            if int(ev.get("instance_id")) != int(iid):
                continue
        except (TypeError, ValueError):
            continue
        t = _epoch(ev.get("time"))
        if t is not None:
            out.append((t, ev))
    out.sort(key=lambda te: te[0])
    return out


def stop_cause(row, events):
    """The newest of our lifecycle events for this instance, when it is one of our stops: that
    stop was asked for (idle shutdown, power_off, a person through the collection)."""
    for t, ev in reversed(_events_for(events, row["id"])):
        if ev.get("action") in OUR_STOPS:
            return ev
        if ev.get("action") in OUR_STARTS:
            return None
    return None


def condition_since(row, events, condition, now):
    """When this condition began: the first ``observed_<condition>`` event of the newest unbroken
    run of them (any other event of the instance ends a run). None when not seen before."""
    since = None
    for t, ev in _events_for(events, row["id"]):
        action = ev.get("action")
        if action == "observed_" + condition:
            since = t if since is None else since
        elif action and (action.startswith("observed_") or action in OUR_STARTS or action in OUR_STOPS):
            since = None
    return since


def _classify(row, healthy, svc, events, now):
    """(action, reason, condition) for one replica's row."""
    actual, intended = row.get("actual_status"), row.get("intended_status")
    msg = str(row.get("status_msg") or "")
    if actual == "created" and "oci runtime create failed" in msg.lower():
        return "replace", "its container cannot be created (OCI runtime create failed)", None
    if intended == "stopped" or (actual in ("stopped", "exited") and intended != "running"):
        cause = stop_cause(row, events)
        if cause is not None:
            return "leave", "stopped on purpose (%s by %s at %s); not restarted" % (
                cause.get("action"), cause.get("actor") or "unknown", cause.get("time")), None
        if bool(row.get("is_bid")) and row.get("cur_state") == "stopped" and row.get("next_state") == "stopped":
            return "replace", "preempted: an interruptible rental stopped by the platform (outbid)", None
        return "leave", "stopped outside this collection (no stop of ours in the audit trail); not restarted", None
    if actual == "running":
        if healthy:
            return "ok", "running, healthy", None
        uptime = num(row.get("uptime_mins"), None)
        if uptime is not None and uptime < svc["load_timeout_minutes"]:
            return "wait", "running for %.0f min, not healthy yet (loading; load_timeout_minutes %s)" % (
                uptime, svc["load_timeout_minutes"]), None
        return _aged(row, events, now, "unhealthy", svc["unhealthy_grace_minutes"], "running but not healthy")
    if intended == "running" and actual == "stopped":
        return _aged(row, events, now, "scheduling", svc["start_timeout_minutes"],
                     "in scheduling: its GPU is not available")
    if actual in ("offline", "unknown", "exited"):
        return _aged(row, events, now, "offline", svc["offline_grace_minutes"], "its host is %s" % actual)
    return "wait", "provisioning (%s)" % (actual or "not started yet"), None


def _aged(row, events, now, condition, grace_minutes, what):
    since = condition_since(row, events, condition, now)
    if since is None:
        if grace_minutes <= 0:
            return "replace", "%s" % what, condition
        return "watch", "%s: first seen now, replaced after %s min" % (what, grace_minutes), condition
    age = (now - since) / 60.0
    if age >= grace_minutes:
        return "replace", "%s for %.0f min (grace %s min)" % (what, age, grace_minutes), None
    return "watch", "%s for %.0f of %s min" % (what, age, grace_minutes), None


def plan(services, rows, events, now, health, profiles):
    """The whole plan. ``rows``: the account's instances; ``events``: audit events (dicts);
    ``health``: {instance id: True/False} for running replicas; ``now``: epoch seconds on the
    clock the audit's times use. Returns {"services", "rent", "observe", "lines"}."""
    if not isinstance(services, list):
        raise PlanError("keep_serving_services must be a list of services, not %r" % (services,))
    specs = [service_spec(s, profiles) for s in services]
    names = [s["name"] for s in specs]
    if len(set(names)) != len(names):
        raise PlanError("service names must be unique: %s" % ", ".join(sorted(set(n for n in names if names.count(n) > 1))))
    live = [r for r in rows or [] if r.get("actual_status") != "destroyed"]
    health = dict((int(k), bool(v)) for k, v in (health or {}).items())
    out = {"services": [], "rent": [], "observe": [], "lines": []}
    for svc in specs:
        labels = replica_labels(svc)
        mine = [r for r in live if r.get("label") in labels
                or r.get("label") in [lb + REPLACEMENT_SUFFIX for lb in labels]]
        burn = sum(burn_rate(r) for r in mine)
        budget_left = None if svc["max_dph_total"] is None else svc["max_dph_total"] - burn
        replicas = []
        for label in labels:
            rows_here = sorted((r for r in live if r.get("label") == label), key=lambda r: r["id"])
            pending = sorted((r for r in live if r.get("label") == label + REPLACEMENT_SUFFIX), key=lambda r: r["id"])
            rep = {"label": label, "id": rows_here[0]["id"] if rows_here else None, "state": None}
            if len(rows_here) > 1:
                rep.update(action="conflict", reason="several instances carry the label (ids %s); the oldest is kept "
                           "by vast_instance's race rule - run provision.yml or fix by hand" % ", ".join(
                               str(r["id"]) for r in rows_here))
            elif pending:
                # a replacement already rented (this job or another one that did not finish):
                # adopt it, never rent a second one
                rep.update(action="resume", reason="replacement %s already rented; finishing it" % pending[0]["id"],
                           replacement_id=pending[0]["id"])
                out["rent"].append(_rental(svc, label + REPLACEMENT_SUFFIX, label, rows_here[0] if rows_here else None,
                                           "resume the replacement of %s" % label, None))
            elif not rows_here:
                rep.update(action="create", reason="missing")
            else:
                row = rows_here[0]
                rep["state"] = row.get("actual_status")
                action, reason, condition = _classify(row, health.get(int(row["id"])), svc, events, now)
                rep.update(action=action, reason=reason)
                if condition:
                    out["observe"].append({"action": "observed_" + condition, "instance_id": int(row["id"]),
                                           "label": label, "price": row.get("dph_total"), "result": "watching",
                                           "detail": reason})
            replicas.append(rep)
        # rentals within the service's budget, in label order
        for rep in replicas:
            if rep["action"] not in ("create", "replace"):
                continue
            cap = None
            if budget_left is not None:
                profile_cap = (profiles.get(svc["profile"]) or {}).get("max_dph")
                cap = round(min(budget_left, num(profile_cap, budget_left)), 4)
                if cap <= 0:
                    rep["action"], rep["reason"] = "blocked", "%s; but the service already bills $%.3f/h of its " \
                        "max_dph_total $%.3f/h" % (rep["reason"], burn, svc["max_dph_total"])
                    continue
            old = next((r for r in live if r["id"] == rep["id"]), None) if rep["action"] == "replace" else None
            label = rep["label"] + REPLACEMENT_SUFFIX if old is not None else rep["label"]
            out["rent"].append(_rental(svc, label, rep["label"], old, rep["reason"], cap))
            if budget_left is not None:
                # the worst case: the new one bills its whole cap
                budget_left -= cap
        out["services"].append({"name": svc["name"], "profile": svc["profile"], "burn_dph": round(burn, 4),
                                "max_dph_total": svc["max_dph_total"], "replicas": replicas})
        for rep in replicas:
            out["lines"].append("%s: %s%s - %s" % (rep["label"], rep["action"],
                                                   " (id %s)" % rep["id"] if rep["id"] else "", rep["reason"]))
    return out


def _rental(svc, label, service_label, old, reason, cap):
    summary = None
    if old is not None:
        summary = "%s is instance %s, %s, billing $%.3f/h" % (
            service_label, old["id"], old.get("actual_status"), burn_rate(old))
    return {"old_summary": summary, "label": label, "token_label": service_label, "service": svc["name"],
            "profile": svc["profile"],
            "interruptible": svc["interruptible"], "bid_price": svc["bid_price"], "max_dph": cap,
            "old": old, "reason": reason, "replace_old": svc["replace_old"]}
