"""Shared pieces of the campaigns (bad input, faults, secrets): argument specs read from the
modules themselves, batched playbooks, the simulator's request log by time window.

Playbooks are written as JSON (valid YAML) so generated values need no YAML quoting; values
never contain Jinja2 delimiters, so what the module receives is exactly what was generated.
"""
import importlib
import io
import json
import os
import re
import sys
import threading
import time
from collections import Counter

from tests.helpers.ansible import REPO

COLLECTIONS = os.path.join(REPO, ".collections")
MODULES = ("vast_offer_info", "vast_instance", "vast_instance_info", "vast_billing_info")
FQCN = "llmops.vastai.%s"

# Simulator endpoint names (docs/contracts.md) that change something on the account.
MUTATING_ENDPOINTS = {"create", "manage", "reboot", "recycle", "destroy", "execute"}


class _SpecCaptured(Exception):
    def __init__(self, kwargs):
        super().__init__("captured")
        self.kwargs = kwargs


class _CaptureModule:
    def __init__(self, **kwargs):
        raise _SpecCaptured(kwargs)


def module_spec(name):
    """The AnsibleModule(...) keyword arguments of module ``name`` (argument_spec,
    mutually_exclusive, required_one_of, ...), captured by running its main() up to the point
    where it builds the AnsibleModule. One fact, one place: nothing is copied from the docs."""
    if COLLECTIONS not in sys.path:
        sys.path.insert(0, COLLECTIONS)
    mod = importlib.import_module("ansible_collections.llmops.vastai.plugins.modules.%s" % name)
    saved = mod.AnsibleModule
    mod.AnsibleModule = _CaptureModule
    try:
        mod.main()
    except _SpecCaptured as e:
        return e.kwargs
    finally:
        mod.AnsibleModule = saved
    raise AssertionError("%s.main() did not build an AnsibleModule" % name)


def is_mutating(entry):
    if entry.get("endpoint") in MUTATING_ENDPOINTS:
        return True
    method = entry.get("method", "GET")
    # POST /api/v0/bundles is the offer search (a read); other writes count as mutations
    return method in ("PUT", "DELETE", "PATCH") or (method == "POST" and entry.get("endpoint") not in ("search",))


def playbook(tasks, name="campaign"):
    play = {"name": name, "hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": tasks}
    return json.dumps([play], indent=1)


def task_window(res):
    """{task name: (start, end)} in epoch seconds from the json callback's durations."""
    from datetime import datetime, timezone

    def ts(text):
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()

    out = {}
    for play in res.plays:
        for t in play.get("tasks", []):
            d = t.get("task", {}).get("duration") or {}
            if d.get("start") and d.get("end"):
                out[t["task"]["name"]] = (ts(d["start"]), ts(d["end"]))
    return out


def requests_between(log, start, end, slack=0.05):
    return [e for e in log if start - slack <= e["t"] <= end + slack]


def clear_msg(msg):
    """A failure message a person can act on: text, no traceback, not Ansible's generic ones."""
    if not isinstance(msg, str) or len(msg.strip()) < 15:
        return False
    bad = ("Traceback (most recent call last)", "MODULE FAILURE", "See stdout/stderr for the exact error",
           "Unexpected failure during module execution")
    return not any(b in msg for b in bad)


def mentions(msg, token):
    return re.search(r"(?<![A-Za-z0-9_])%s(?![A-Za-z0-9_])" % re.escape(str(token)), msg or "", re.I) is not None


def env_for(sim, extra=None):
    env = dict(sim.env)
    env.update(extra or {})
    return env


def tee(capsys):
    """(buffer, stream): what a campaign writes to ``stream`` is kept in ``buffer`` and shown live
    (pytest's capture disabled), so a long campaign prints as it goes."""
    buf = io.StringIO()

    class Tee(io.StringIO):
        def write(self, s):
            buf.write(s)
            with capsys.disabled():
                print(s, end="", flush=True)
            return len(s)
    return buf, Tee()


class StateWatcher(threading.Thread):
    """Samples /_sim/state every ``interval`` s while a run goes, through failing reads: the
    most live instances seen per label (a double rental may last only a moment). Subclasses add
    their own look at each sample in ``sample(rows, t)``; ``done()`` ends the watch early."""

    interval = 0.1

    def __init__(self, sim, live=lambda row: row.get("destroyed_at") is None):
        super().__init__(daemon=True)
        self.sim, self.live = sim, live
        self.stop_flag = threading.Event()
        self.max_live = Counter()

    def sample(self, rows, t):
        pass

    def done(self):
        return False

    def run(self):
        while not self.stop_flag.is_set() and not self.done():
            try:
                rows = self.sim.state()["instances"]
            except Exception:
                time.sleep(self.interval)
                continue
            t = time.time()
            for k, v in Counter(r.get("label") for r in rows if self.live(r)).items():
                self.max_live[k] = max(self.max_live[k], v)
            self.sample(rows, t)
            time.sleep(self.interval)

    def finish(self):
        self.stop_flag.set()
        self.join(5)
        return self.max_live
