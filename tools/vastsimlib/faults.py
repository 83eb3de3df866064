"""Fault injection rules and the optional per-endpoint rate limits."""
import json
import os
import random
import threading
import time

from .errors import ApiError

FAULTS = {"429", "500", "502", "503", "504", "reset", "timeout", "lost_response", "crash"}
ENDPOINTS = {"search", "create", "list", "show", "manage", "reboot", "recycle", "destroy", "user",
             "charges", "invoices", "ssh", "logs", "gpu_names", "execute", "results", "*"}


# Platform events a rule can fire instead of a fault (state.Sim.event names their sources).
# The event happens when the matching request arrives; that request is then answered normally.
EVENTS = {"gpu_taken", "gpu_released", "preempt", "offline", "online"}
EVENT_AT = {"before", "after"}   # applied before the request is handled, or after it (before the answer)
EVENT_KEYS = {"event", "endpoint", "method", "times", "probability", "after", "label", "instance_id", "at"}


def _validate_event(rule):
    bad = set(rule) - EVENT_KEYS - {"seen", "fired", "applied", "skipped"}
    if bad:
        raise ValueError(f"an event rule takes only {sorted(EVENT_KEYS)}, not {sorted(bad)}")
    rule["event"] = str(rule["event"])
    if rule["event"] not in EVENTS:
        raise ValueError(f"unknown event {rule['event']!r}; one of {sorted(EVENTS)}")
    if "label" in rule and "instance_id" in rule:
        raise ValueError("an event rule names its instances by label (a prefix) or instance_id, not both")
    if "label" in rule:
        if not isinstance(rule["label"], str) or not rule["label"]:
            raise ValueError("label must be a non-empty string (a label prefix)")
    if "instance_id" in rule:
        iid = rule["instance_id"]
        if isinstance(iid, bool) or not str(iid).isdigit():
            raise ValueError(f"instance_id must be a positive integer, not {iid!r}")
        rule["instance_id"] = int(iid)
    rule["at"] = str(rule.get("at", "before"))
    if rule["at"] not in EVENT_AT:
        raise ValueError(f"at must be one of {sorted(EVENT_AT)}, not {rule['at']!r}")


def validate_rule(rule):
    if not isinstance(rule, dict):
        raise ValueError("a fault rule must be an object")
    rule = dict(rule)
    if "event" in rule:
        if "fault" in rule:
            raise ValueError("a rule has either a fault or an event, not both")
        _validate_event(rule)
    else:
        rule["fault"] = str(rule.get("fault", ""))
        if rule["fault"] not in FAULTS:
            raise ValueError(f"unknown fault {rule['fault']!r}; one of {sorted(FAULTS)} "
                             f"(or an event rule: \"event\" one of {sorted(EVENTS)})")
    rule.setdefault("endpoint", "*")
    if rule["endpoint"] not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {rule['endpoint']!r}; one of {sorted(ENDPOINTS)}")
    if rule.get("method"):
        rule["method"] = str(rule["method"]).upper()
    rule["times"] = int(rule.get("times", 1))
    rule["probability"] = float(rule.get("probability", 1))
    rule["after"] = int(rule.get("after", 0))
    if "seconds" in rule:
        rule["seconds"] = float(rule["seconds"])
    if not 0 <= rule["probability"] <= 1:
        raise ValueError("probability must be between 0 and 1")
    rule["seen"] = 0    # matching requests so far
    rule["fired"] = 0
    if "event" in rule:
        rule["applied"] = []   # ids of the instances the event was applied to
        rule["skipped"] = []   # ids it could not apply to (e.g. preempt of an on-demand instance)
    return rule


def parse_spec(spec):
    """`--faults SPEC`: JSON (a list of rules or {"rules": [...]}), @FILE / a path to such JSON,
    or the short form `endpoint:fault[:key=value...]` with rules separated by commas, e.g.
    `create:lost_response,list:503:times=2:after=1,*:500:probability=0.1:times=-1`."""
    spec = spec.strip()
    if spec.startswith("@") or (os.path.exists(spec) and not spec.startswith(("[", "{"))):
        with open(spec.lstrip("@")) as f:
            spec = f.read().strip()
    if spec.startswith(("[", "{")):
        data = json.loads(spec)
        rules = data.get("rules", []) if isinstance(data, dict) else data
        return [validate_rule(r) for r in rules]
    rules = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        bits = part.split(":")
        if len(bits) < 2:
            raise ValueError(f"bad fault rule {part!r}; expected endpoint:fault[:key=value...] "
                             "or endpoint:event=EVENT[:key=value...]")
        rule = {"endpoint": bits[0]}
        rest = bits[1:]
        if "=" not in rest[0]:
            name = rest.pop(0)
            rule["event" if name in EVENTS else "fault"] = name
        for kv in rest:
            k, eq, v = kv.partition("=")
            if not eq:
                raise ValueError(f"bad fault rule {part!r}: {kv!r} is not key=value")
            rule[k] = v
        rules.append(validate_rule(rule))
    return rules


class Faults:
    def __init__(self, seed=0):
        self.rules = []
        self.lock = threading.Lock()
        self.rng = random.Random(seed)

    def add(self, rules):
        rules = [validate_rule(r) for r in rules]
        with self.lock:
            self.rules.extend(rules)
        return rules

    def clear(self):
        with self.lock:
            self.rules = []

    def listing(self):
        with self.lock:
            return [dict(r) for r in self.rules]

    def _fires(self, rule, endpoint, method):
        """Count this request against ``rule`` and say whether it fires now (under the lock)."""
        if rule["endpoint"] not in ("*", endpoint):
            return False
        if rule.get("method") and rule["method"] != method:
            return False
        if rule["times"] >= 0 and rule["fired"] >= rule["times"]:
            return False
        rule["seen"] += 1
        if rule["seen"] <= rule["after"]:
            return False
        if rule["probability"] < 1 and self.rng.random() >= rule["probability"]:
            return False
        rule["fired"] += 1
        return True

    def pick(self, endpoint, method):
        """The fault rule that fires for this request, or None. times=-1 means forever."""
        with self.lock:
            for rule in self.rules:
                if "event" not in rule and self._fires(rule, endpoint, method):
                    return dict(rule)
        return None

    def pick_events(self, endpoint, method):
        """Every event rule that fires for this request (all of them: events do not answer the
        request, so several can happen at one step). Returns the live rule dicts: the caller
        records the instances it applied each to under the lock (`note_applied`)."""
        with self.lock:
            return [rule for rule in self.rules if "event" in rule and self._fires(rule, endpoint, method)]

    def note_applied(self, rule, applied, skipped):
        with self.lock:
            rule["applied"].extend(applied)
            rule["skipped"].extend(skipped)


# Documented x-rate-limit thresholds: minimum seconds between calls per identity and endpoint.
THRESHOLDS = {
    ("create", None): 4.5, ("destroy", None): 3.0, ("show", None): 2.0, ("list", None): 1.0,
    ("manage", None): 1.0, ("reboot", None): 1.0, ("recycle", None): 1.0, ("execute", None): 1.5,
    ("invoices", None): 3.0, ("charges", None): 1.0, ("ssh", "POST"): 1.0, ("ssh", "DELETE"): 2.0,
}
SEARCH_PER_MINUTE = 10


class RateLimiter:
    """Off unless --rate-limits. Real (not simulated) time: it paces clients, not the clock."""

    def __init__(self, enabled=False):
        self.enabled = enabled
        self.last = {}
        self.search_calls = {}
        self.lock = threading.Lock()

    def check(self, identity, endpoint, method):
        if not self.enabled:
            return
        now = time.monotonic()
        with self.lock:
            if endpoint == "search":
                calls = [t for t in self.search_calls.get(identity, []) if now - t < 60.0]
                if len(calls) >= SEARCH_PER_MINUTE:
                    self.search_calls[identity] = calls
                    raise ApiError(429, None, "", detail="API requests too frequent endpoint threshold=10/min")
                calls.append(now)
                self.search_calls[identity] = calls
                return
            threshold = THRESHOLDS.get((endpoint, method), THRESHOLDS.get((endpoint, None)))
            if threshold is None:
                return
            key = (identity, endpoint, method)
            prev = self.last.get(key)
            if prev is not None and now - prev < threshold:
                raise ApiError(429, None, "", detail=f"API requests too frequent endpoint threshold={threshold}")
            self.last[key] = now
