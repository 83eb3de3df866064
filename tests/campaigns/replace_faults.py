"""Replacement fault campaign (issue 16): platform events and API faults at every step of the
two replacement flows, on a `--hosts docker` simulator in container mode (each instance is a
real container of the engine stand-in, /health on a published port):

- keep_serving: the single replica `ks` (interruptible) was preempted; one keep_serving.yml run
  rents `ks-replacement`, deploys it, waits for /health 200, moves the label, destroys the old;
- power_on: `po` was stopped by us (power_off.yml, audited) and its GPU taken; power_on.yml
  -e on_unavailable=replace cancels the start and replaces it the same way.

Each flow is recorded once without faults (the simulator's request log: endpoint, method, and
its n-th occurrence). Then, one injection per run, for every step k of that recording:
  - a `preempt`, `gpu_taken`, `offline` event at request k on the old instance;
  - the same events on the new replacement: `at: after` on the create (the instance it makes),
    and by label `<label>-replacement` at every later request;
  - a `lost_response` and a `500` at request k.
After each run, whatever its rc: the events are undone (online, gpu_released), a follow-up
keep_serving.yml (no faults) settles the service (up to FOLLOW_UPS runs, until its plan says
`ok`), and then

- orphans: no live `<label>-replacement` left; every instance created since the run started is
  destroyed, or running healthy (/health 200) under the service label, or was named by id with
  its $/h in the faulted run's failure output;
- double rentals: at most one live instance per label, sampled while the runs go and at the end;
- unnamed failures: a failed run's failure messages name the old instance (if it is still live)
  and every instance the run created that is still live when it ends.

    python -m tests.campaigns.replace_faults [--flows keep_serving,power_on] [--kinds ...]
                                             [--stride N] [--at create,destroy] [--limit N] [-v]
"""
import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter

from tests.campaigns.common import StateWatcher
from tests.helpers import images
from tests.helpers.ansible import REPO, run_playbook
from tests.helpers.vastsim import launch

PLAYBOOKS = os.path.join(REPO, "playbooks")
SPEED = 20
EVENTS = ("preempt", "gpu_taken", "offline")
FAULTS = ("lost_response", "500")
KINDS = tuple("old:" + e for e in EVENTS) + tuple("new:" + e for e in EVENTS) + FAULTS
FOLLOW_UPS = 3
COMMON = {"vast_mode": "container", "wait_timeout": 120, "health_timeout": 120, "max_instances": 6}
SERVICES = {
    "keep_serving": {"name": "ks", "profile": "budget", "replicas": 1, "interruptible": True},
    "power_on": {"name": "po", "profile": "budget", "replicas": 1, "interruptible": True},
}
LIVE = lambda row: row.get("actual_status") != "destroyed" and row.get("destroyed_at") is None  # noqa: E731


def http_status(url, timeout=3):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None


def health_url(row, port=8000):
    ports = (row.get("ports") or {}).get("%d/tcp" % port)
    if not ports:
        return None
    hp = ports[0]["HostPort"] if isinstance(ports, list) else ports
    return "http://127.0.0.1:%d/health" % int(hp)


def healthy(row):
    url = health_url(row)
    return bool(url) and row.get("actual_status") == "running" and http_status(url) == 200


def failure_text(res):
    """What a person reads when the run failed: every failed task's message (loop items too),
    or, with no failed task, the tail of stderr."""
    parts = []
    for t in res.tasks:
        r = t.result
        if not r.get("failed"):
            continue
        for i in r.get("results") or []:
            if isinstance(i, dict) and i.get("failed") and i.get("msg"):
                parts.append(str(i["msg"]))
        if r.get("msg"):
            parts.append(r["msg"] if isinstance(r["msg"], str) else json.dumps(r["msg"]))
    if res.rc != 0 and not parts:
        parts.append(res.stderr[-2000:])
    return "\n".join(parts)


def named(text, iid, with_price=False):
    """Is instance ``iid`` named in ``text`` (and, with_price, with a $/h figure near it)?"""
    for m in re.finditer(r"(?<!\d)%d(?!\d)" % iid, text or ""):
        if not with_price or re.search(r"\$\s?\d+(\.\d+)?\s*/\s?h", text[max(0, m.start() - 300):m.end() + 300]):
            return True
    return False


class Watcher(StateWatcher):
    """Most live instances per label seen while a run goes (a double rental is one moment)."""

    def __init__(self, sim):
        super().__init__(sim, LIVE)


def steps_of(log):
    """[(endpoint, method, n)]: each request of a recording, with its occurrence index among
    requests of the same endpoint and method (what a rule's `after` counts)."""
    seen, out = Counter(), []
    for e in log:
        key = (e["endpoint"], e["method"])
        out.append((e["endpoint"], e["method"], seen[key]))
        seen[key] += 1
    return out


def injections(flow, steps, label, kinds=KINDS, stride=1, at=None):
    """[(flow, k, kind, rule-maker)]: the rule needs the old instance's id, known at run time."""
    out = []
    create_at = next((i for i, s in enumerate(steps) if s[0] == "create"), None)
    for k, (ep, method, n) in enumerate(steps):
        if k % stride or (at and ep not in at):
            continue
        base = {"endpoint": ep, "method": method, "after": n, "times": 1}
        for kind in kinds:
            if kind.startswith("old:"):
                out.append((flow, k, kind, lambda old, b=base, e=kind[4:]: dict(b, event=e, instance_id=old)))
            elif kind.startswith("new:"):
                if create_at is None or k < create_at:
                    continue  # no replacement yet: nothing to hit
                if k == create_at:
                    out.append((flow, k, kind, lambda old, b=base, e=kind[4:]: dict(b, event=e, at="after")))
                else:
                    out.append((flow, k, kind, lambda old, b=base, e=kind[4:]: dict(
                        b, event=e, label=label + "-replacement")))
            else:
                out.append((flow, k, kind, lambda old, b=base, f=kind: dict(b, fault=f)))
    return out


class Campaign:
    def __init__(self, flows=("keep_serving", "power_on"), kinds=KINDS, stride=1, limit=None, plan=None,
                 out=sys.stdout, verbose=False, at=None):
        """``plan``: optional fixed list of (flow, step endpoint, step n, kind) instead of every step."""
        self.flows, self.kinds, self.stride, self.limit, self.plan = flows, kinds, stride, limit, plan
        self.out, self.verbose, self.at = out, verbose, at
        self.records, self.recordings = [], {}

    # -- plumbing
    def w(self, text):
        self.out.write(text)
        self.out.flush()

    def rows(self):
        return self.sim.state()["instances"]

    def live(self, label=None):
        return [r for r in self.rows() if LIVE(r) and (label is None or r["label"] == label)]

    def play(self, name, extra, json_output=True):
        env = dict(self.sim.env, HOME=self.home, VAST_AUDIT_LOG=self.audit,
                   DOCKER_HOST=os.environ.get("DOCKER_HOST", images.DEFAULT_DOCKER_HOST))
        return run_playbook(os.path.join(PLAYBOOKS, name + ".yml"), extra_vars=extra, env=env, timeout=900,
                            json_output=json_output)

    def keep_serving(self, flow):
        return self.play("keep_serving", dict(COMMON, keep_serving_services=[SERVICES[flow]]))

    def flow_run(self, flow):
        if flow == "keep_serving":
            return self.keep_serving(flow)
        return self.play("power_on", dict(COMMON, instance_label="po", on_unavailable="replace", start_timeout=5,
                                          vast_profile="budget", health_port=8000))

    def undo_events(self):
        for r in self.rows():
            # the other tenant also leaves the machines of destroyed instances: a gpu_taken on an
            # instance that was then replaced kept its offer off the market, and after ~90
            # injections no offer under the budget profile's max_dph was left to rent
            calls = ["offers/%d/release" % r["offer_id"]] if r.get("offer_id") else []
            if LIVE(r):
                calls += ["instances/%d/%s" % (r["id"], ev) for ev in ("online", "gpu_released")]
            for call in calls:
                try:
                    self.sim.ctl("POST", call)
                except RuntimeError:
                    pass

    def settled(self, flow):
        label = SERVICES[flow]["name"]
        live = self.live()
        return (not [r for r in live if r["label"].endswith("-replacement")]
                and len([r for r in live if r["label"] == label]) == 1
                and all(healthy(r) for r in live if r["label"] == label))

    def settle(self, flow):
        """Follow-up keep_serving runs (no faults) until the service is one healthy instance."""
        runs = []
        for _ in range(FOLLOW_UPS):
            if self.settled(flow):
                break
            # a po that stays stopped was stopped by us (power_off): keep_serving rightly leaves
            # it, so the power_on flow is settled by power_on itself
            label = SERVICES[flow]["name"]
            stopped = [r for r in self.live(label) if r.get("intended_status") == "stopped"]
            res = self.flow_run(flow) if flow == "power_on" and stopped else self.keep_serving(flow)
            runs.append(res.rc)
        return runs

    def prepare(self, flow):
        """The flow's starting point; returns the old instance's id."""
        label = SERVICES[flow]["name"]
        if not self.settled(flow):
            self.undo_events()
            self.settle(flow)
        if not self.settled(flow):
            raise RuntimeError("%s: could not get one healthy %s to start from: %s" % (
                flow, label, [(r["id"], r["label"], r["actual_status"]) for r in self.live()]))
        old = self.live(label)[0]["id"]
        if flow == "keep_serving":
            self.sim.ctl("POST", "instances/%d/preempt" % old)
            self.sim.wait_status(old, "stopped", timeout=10)
        else:
            res = self.play("power_off", {"instance_label": label})
            if res.rc != 0:
                raise RuntimeError("power_off.yml failed: " + res.summary())
            self.sim.ctl("POST", "instances/%d/gpu_taken" % old)
        return old

    # -- recording and runs
    def record(self, flow):
        old = self.prepare(flow)
        self.sim.clear_requests()
        res = self.flow_run(flow)
        log = self.sim.requests()
        if res.rc != 0:
            raise RuntimeError("%s clean run failed (old %d): %s" % (flow, old, res.summary()))
        self.recordings[flow] = steps_of(log)
        self.w("%s: clean run %.1f s, %d requests: %s\n" % (flow, res.duration, len(log), " ".join(
            "%s%s" % (s[0], "" if s[1] == "GET" else "(%s)" % s[1]) for s in self.recordings[flow])))
        return self.recordings[flow]

    def one(self, flow, k, kind, make_rule):
        label = SERVICES[flow]["name"]
        old = self.prepare(flow)
        before = {r["id"] for r in self.rows()}
        rule = make_rule(old)
        self.sim.clear_requests()
        self.sim.add_faults([rule])
        watcher = Watcher(self.sim)
        watcher.start()
        try:
            res = self.flow_run(flow)
            faults = self.sim.ctl("GET", "faults")
            log = self.sim.requests()
            self.sim.clear_faults()
            fired = sum(1 for e in log if e.get("fault") or [x for x in e.get("events") or [] if x.get("applied")])
            text = failure_text(res) if res.rc != 0 else ""
            after_run = {r["id"]: r for r in self.rows()}
            problems = []
            if res.rc != 0:
                new_live = [i for i, r in after_run.items() if LIVE(r) and i not in before]
                missing = [i for i in new_live if not named(text, i)]
                if missing:
                    problems.append("failure does not name the live instance(s) it created %s: %r" % (
                        missing, text[-400:]))
                if LIVE(after_run.get(old, {"destroyed_at": 0})) and not named(text, old):
                    problems.append("failure does not name the old instance %d (%s, still live): %r" % (
                        old, after_run[old]["actual_status"], text[-400:]))
            self.undo_events()
            follow = self.settle(flow)
        finally:
            max_live = watcher.finish()
        rows = self.rows()
        by_id = {r["id"]: r for r in rows}
        orphans = []
        left = [r["id"] for r in rows if LIVE(r) and r["label"].endswith("-replacement")]
        if left:
            orphans += left
            problems.append("live -replacement instance(s) after settling: %s" % left)
        for iid, r in by_id.items():
            if iid in before or not LIVE(r) or iid in left:
                continue
            if r["label"] == label and healthy(r):
                continue
            if named(text, iid, with_price=True):
                continue
            orphans.append(iid)
            problems.append("instance %d (%s, %s) created since the run: not destroyed, not healthy under %s, "
                            "not named with $/h" % (iid, r["label"], r["actual_status"], label))
        live_now = Counter(r["label"] for r in rows if LIVE(r))
        doubles = {lb: n for lb, n in (max_live | live_now).items() if n > 1}
        if doubles:
            problems.append("double rental: %s" % doubles)
        if not self.settled(flow):
            problems.append("not settled after %d follow-up runs: %s" % (len(follow), [
                (r["id"], r["label"], r["actual_status"]) for r in self.live()]))
        rec = dict(flow=flow, k=k, step="%s %s #%d" % (rule["endpoint"], rule["method"], rule["after"]), kind=kind,
                   rule=rule, rc=res.rc, fired=fired, seconds=round(res.duration, 1), follow=follow,
                   created=sorted(set(by_id) - before), orphans=orphans, doubles=sum(n - 1 for n in doubles.values()),
                   unnamed=int(any(p.startswith("failure does not name the live") for p in problems)),
                   unnamed_old=int(any(p.startswith("failure does not name the old") for p in problems)),
                   problems=problems,
                   msg=text[-300:], faults=faults)
        self.records.append(rec)
        if self.verbose or problems:
            self.w("%-12s k=%2d %-22s %-15s rc=%d %s %5.1fs follow=%s%s%s\n" % (
                flow, k, rec["step"], kind, res.rc, "fired" if fired else "NOT FIRED", res.duration, follow or "-",
                "\n    msg: %s" % text.strip().replace("\n", " | ")[-300:] if res.rc else "",
                "".join("\n    ! " + p for p in problems)))
        return rec

    def go(self):
        images.ensure_images()
        self.sim = launch(hosts="docker", speed=SPEED, api_key="rc-" + "cd34" * 6)
        self.tmp = tempfile.mkdtemp(prefix="replace-campaign-")
        self.home = os.path.join(self.tmp, "home")
        os.makedirs(self.home)
        self.audit = os.path.join(self.tmp, "audit.jsonl")
        started = time.monotonic()
        try:
            todo = []
            for flow in self.flows:
                steps = self.record(flow)
                inj = injections(flow, steps, SERVICES[flow]["name"], self.kinds, self.stride, self.at)
                if self.plan:
                    want = [(ep, n, kind) for f, ep, n, kind in self.plan if f == flow]
                    inj = [i for i in inj if (steps[i[1]][0], steps[i[1]][2], i[2]) in want]
                todo += inj
            if self.limit:
                todo = todo[: self.limit]
            self.w("%d injections planned\n" % len(todo))
            for n, (flow, k, kind, make) in enumerate(todo, 1):
                self.one(flow, k, kind, make)
                if n % 10 == 0 and not self.verbose:
                    self.w("progress: %d/%d, %d s, %d with defects, %d offers on the market\n" % (
                        n, len(todo), time.monotonic() - started, sum(bool(r["problems"]) for r in self.records),
                        self.sim.state()["offers_available"]))
        finally:
            try:
                self.sim.destroy_all()
            finally:
                self.sim.stop()
                shutil.rmtree(self.tmp, ignore_errors=True)
        s = self.summary(time.monotonic() - started)
        self.print_summary(s)
        return s

    def summary(self, seconds):
        recs = self.records
        per = {}
        for flow in self.flows:
            rs = [r for r in recs if r["flow"] == flow]
            per[flow] = dict(
                steps=len(self.recordings.get(flow, [])), injections=len(rs), fired=sum(bool(r["fired"]) for r in rs),
                runs=len(rs) + sum(len(r["follow"]) for r in rs), failed=sum(r["rc"] != 0 for r in rs),
                orphans=sum(len(r["orphans"]) for r in rs), doubles=sum(r["doubles"] for r in rs),
                unnamed=sum(r["unnamed"] for r in rs), unnamed_old=sum(r["unnamed_old"] for r in rs), defects=sum(bool(r["problems"]) for r in rs))
        tot = {k: sum(p[k] for p in per.values()) for k in next(iter(per.values()), {})}
        return dict(per_flow=per, total=tot, seconds=round(seconds),
                    bad_runs=sum(bool(r["problems"]) for r in recs),
                    problems=Counter(re.sub(r"\d+", "N", p.split(":")[0]) for r in recs for p in r["problems"]))

    def print_summary(self, s):
        cols = ("steps", "injections", "fired", "runs", "failed", "orphans", "doubles", "unnamed", "unnamed_old",
                "defects")
        hdr = "%-13s" % "flow" + "".join("%12s" % c for c in cols)
        lines = ["", "=== replacement fault campaign (%d s) ===" % s["seconds"], hdr, "-" * len(hdr)]
        for flow, p in list(s["per_flow"].items()) + [("total", s["total"])]:
            lines.append("%-13s" % flow + "".join("%12s" % p.get(c, "") for c in cols))
        lines.append("(injections: one rule per run; fired: the rule hit a request; runs: faulted runs + "
                     "follow-up keep_serving runs; doubles: double rentals; unnamed: failed runs not naming "
                     "a live instance they created; unnamed_old: not naming the old instance, still live)")
        for p, c in s["problems"].most_common():
            lines.append("  defect x%d: %s" % (c, p))
        self.w("\n".join(lines) + "\n")


# `make test` sample: three injections on keep_serving (the lost answer of the create, the new
# replacement preempted as it is created, a 500 on the old one's destroy).
SAMPLE_PLAN = [("keep_serving", "create", 0, "lost_response"), ("keep_serving", "create", 0, "new:preempt"),
               ("keep_serving", "destroy", 0, "500")]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", default="keep_serving,power_on")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--stride", type=int, default=1, help="inject at every N-th step only")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--at", default="", help="only the steps at these endpoints (comma-separated)")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    s = Campaign(tuple(a.flows.split(",")), tuple(a.kinds.split(",")), a.stride, a.limit, verbose=a.verbose,
                 at=tuple(x for x in a.at.split(",") if x) or None).go()
    return 1 if s["bad_runs"] else 0


if __name__ == "__main__":
    sys.exit(main())
