"""Race campaign (issue 13): N concurrent real `ansible-playbook` processes per scenario (as when
two AWX jobs overlap or a job is relaunched) against one `--hosts none` simulator that answers
every API request after a real round trip (`--latency`, default 100 ms). Seeded: the start
offsets of the racers and the start states come from CAMPAIGN_SEED.

Every racer is a wrapper playbook: a gate play (touch `ready-<n>`, wait for `go`, sleep the
racer's seeded offset of 0-150 ms) followed by the scenario's play, or `import_playbook` of the
real playbook unchanged. The campaign releases the gate once every racer is waiting, so the
racers' API calls overlap although ansible-playbook takes seconds to start.

Scenarios (`SCENARIOS`):

- ``label``: `vast_instance state=running`, one label, each racer with its own `order_by` and
  `gpu_names`, so their cheapest offers differ (the dangerous race: no offer is taken twice);
- ``exact_count``: `exact_count: 2` on one prefix from every racer;
- ``cap``: `vast_instance` with a label per racer and `max_instances` = instances already on the
  account + 1 (the module's own check before its create and again after it);
- ``provision``: `playbooks/provision.yml` (container mode, `provision_deploy=false`) with one
  `instance_label`, each racer with its own `gpu_names` (other cheapest offer) and HOME, one
  shared token directory (one controller);
- ``provision_cap``: the same with a label per racer and `max_instances` = instances already on
  the account + 1, so the cap is contested;
- ``power``: `power_on.yml` (no health wait) against `power_off.yml` on one instance (started
  running or stopped, seeded); the end state must be one of the two and every run that
  succeeds must report what was true when it ended;
- ``idle``: overlapping `idle_shutdown.yml` runs (dynamic inventory, its unreachable rule decides
  as in the fault campaign) on one idle instance: `auto_shutdown` audit events per real stop
  (running -> stopped, as seen by a watcher) must be 1.

Figures per scenario: runs, creates sent (from /_sim/requests), live instances per label at the
end, duplicates (live instances beyond one per label, at the end and in any sample while the
round ran), contradicting reports, failures with their messages.

    python -m tests.campaigns.races [--racers N] [--rounds R] [--seed S] [--latency MS] [--scenario NAME ...]
"""
import argparse
import json
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict

from tests.campaigns.common import StateWatcher, clear_msg, task_window
from tests.helpers.ansible import run_playbook
from tests.helpers.vastsim import launch

PLAYBOOKS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "playbooks")
SCENARIOS = ("label", "exact_count", "cap", "provision", "provision_cap", "power", "idle")
GPUS = ["RTX 4090", "RTX 3090", "RTX 5090", "RTX A6000"]  # >= 24 GB, several verified offers each (seeded catalogue)
ORDERS = ["price", "score", "reliability", "value"]
MAX_DPH = 2.0
# creates in a round beyond which the racers did race (exact_count: 2 replicas)
RACED_WHEN = {"label": 1, "exact_count": 2, "cap": 1, "provision": 1, "provision_cap": 1}
LATENCY_MS = 100
SPEED = 60
WAIT_TIMEOUT = 8
POLL = 0.25
MODULE_ENV = {"VAST_API_TIMEOUT": "5", "VAST_API_RETRIES": "3", "VAST_POLL_INTERVAL": str(POLL)}
IMAGE = "vllm/vllm-openai:v0.20.0"
# idle_shutdown.yml on --hosts none (as tests/campaigns/faults.py): SSH never answers, so the
# unreachable rule decides at once; the rest is the real playbook.
IDLE_VARS = {"idle_shutdown_unreachable_limit": 1, "idle_shutdown_unreachable_min_age_minutes": 0,
             "idle_shutdown_boot_grace_minutes": 0, "idle_shutdown_probe_timeout": 2,
             "idle_shutdown_probe_delay": 1, "idle_shutdown_confirm_timeout": 10}
# A report is held against the state the run could have seen: a change made this long before
# the module task ended came before its last read (one round trip, a poll interval), and one
# made this long before the summary task started was visible to a re-read there.
MODULE_SLACK = 0.5
SUMMARY_SLACK = 0.3
LIVE = lambda row: row.get("destroyed_at") is None  # noqa: E731
STOPPED = ("stopped", "exited")


def warned_meanwhile(res):
    """The run told its reader that another job changed the instance after its own change: a
    module warning, or the playbook's re-read before its summary ("[WARNING] ... changed by
    another job meanwhile" / "started again by another job"), which is a debug message, not
    an Ansible warning."""
    for t in res.tasks:
        texts = [str(w) for w in (t.result.get("warnings") or [])]
        msg = t.result.get("msg")
        if not t.result.get("skipped"):
            texts += [str(m) for m in (msg if isinstance(msg, list) else [msg]) if m]
        if any("another job" in x.lower() or "meanwhile" in x.lower() for x in texts):
            return True
    return False


def failure_message(res):
    """The message a person reads when a run failed (last failed task, loop items included)."""
    failed = [t for t in res.tasks if t.result.get("failed")]
    if not failed:
        if res.rc == 0:
            return None
        m = re.search(r"plugin: (.+)", res.stderr)
        return (m.group(1).strip() if m else res.stderr.strip()[-300:]) or "rc=%d without a failed task" % res.rc
    r = failed[-1].result
    items = [i.get("msg") for i in r.get("results") or [] if isinstance(i, dict) and i.get("failed")]
    msg = "; ".join(str(m) for m in items if m) or r.get("msg")
    return msg if isinstance(msg, str) else json.dumps(msg, default=str)


def owner(contradiction):
    """Who a contradiction is held against: the ``[...]`` prefix, else the collection's module."""
    m = re.match(r"\[([^\]]+)\]", contradiction)
    return m.group(1) if m else "vast_instance"


class Watcher(StateWatcher):
    """Samples /_sim/state while a round runs: most live instances per label, and every change
    of (actual_status, intended_status) per instance with its wall-clock time."""

    interval = 0.05

    def __init__(self, sim):
        super().__init__(sim, LIVE)
        self.timeline = defaultdict(list)  # id -> [(t, actual, intended)]
        self.first_seen, self.gone = {}, {}  # id -> wall-clock time first seen live / destroyed

    def sample(self, rows, t):
        for r in rows:
            if LIVE(r):
                self.first_seen.setdefault(r["id"], t)
            elif r["id"] in self.first_seen:
                self.gone.setdefault(r["id"], t)
            now = (r.get("actual_status"), r.get("intended_status"))
            tl = self.timeline[r["id"]]
            if not tl or tl[-1][1:] != now:
                tl.append((t,) + now)

    def real_stops(self, iid):
        """running -> stopped/exited transitions of instance ``iid``."""
        tl, n = self.timeline.get(iid, []), 0
        for a, b in zip(tl, tl[1:]):
            if a[1] == "running" and b[1] in STOPPED:
                n += 1
        return n

    def last_intent_change(self, iid):
        tl = self.timeline.get(iid, [])
        for a, b in zip(reversed(tl[:-1]), reversed(tl)):
            if a[2] != b[2]:
                return b[0]
        return None


class Campaign:
    def __init__(self, racers=3, rounds=1, seed=6, scenarios=SCENARIOS, latency=LATENCY_MS, out=sys.stdout,
                 verbose=False, until_raced=0):
        """``until_raced``: extra rounds (at most that many) of a create scenario whose rounds all
        ended with one create, i.e. the racers did not overlap (2 busy cores: a process may start
        too late); a sample must race to test anything."""
        unknown = set(scenarios) - set(SCENARIOS)
        if unknown:
            raise ValueError("unknown scenario(s) %s; known: %s" % (sorted(unknown), ", ".join(SCENARIOS)))
        self.racers, self.rounds, self.seed = racers, rounds, seed
        self.scenarios = list(scenarios)
        self.latency, self.out, self.verbose = latency, out, verbose
        self.until_raced = until_raced
        self.rng = random.Random(seed)
        self.results = {}

    # -- simulator helpers
    def api(self, method, path, body=None):
        req = urllib.request.Request(self.sim.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": "Bearer " + self.sim.api_key,
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"null")

    def rows(self):
        return self.sim.state()["instances"]

    def live(self, prefix=None):
        return [r for r in self.rows() if LIVE(r) and (prefix is None or (r.get("label") or "").startswith(prefix))]

    def clean(self):
        for r in self.live():
            self.api("DELETE", "/api/v0/instances/%d/" % r["id"])

    def running_instance(self, label, status="running"):
        """One instance with ``label`` rented through the module and brought to ``status``."""
        tasks = [{"name": "rent", "llmops.vastai.vast_instance": self.rent_args(label, 0)}]
        if status == "stopped":
            tasks.append({"name": "stop", "llmops.vastai.vast_instance": {"label": label, "state": "stopped"}})
        res = run_playbook(self.gated(None, tasks), env=self.env(0), timeout=300)
        assert res.rc == 0, res.summary()
        return res.task("rent")["instance"]["id"]

    # -- racers
    def env(self, n, extra=None):
        home = os.path.join(self.tmp, "home-%d" % n)
        os.makedirs(home, exist_ok=True)
        env = dict(self.sim.env, HOME=home, **MODULE_ENV)
        env.update(extra or {})
        return env

    def rent_args(self, label, n, **kw):
        args = {"label": label, "state": "running", "image": IMAGE, "wait": True, "wait_timeout": WAIT_TIMEOUT,
                "offer_filters": {"gpu_names": [GPUS[n % len(GPUS)], GPUS[(n + 1) % len(GPUS)]],
                                  "order_by": ORDERS[n % len(ORDERS)], "max_dph": MAX_DPH}}
        args.update(kw)
        return args

    def gated(self, n, tasks=None, import_playbook=None):
        """A racer's playbook text: the gate play, then ``tasks`` or the imported real playbook."""
        plays = []
        if n is not None:
            offset = self.rng.uniform(0, 0.15)
            gate = os.path.join(self.gate_dir, "go")
            cmd = "touch %s && while [ ! -e %s ]; do sleep 0.02; done && sleep %.3f" % (
                os.path.join(self.gate_dir, "ready-%d" % n), gate, offset)
            plays.append({"name": "race gate", "hosts": "localhost", "connection": "local", "gather_facts": False,
                          "tasks": [{"name": "race gate", "ansible.builtin.shell": cmd, "changed_when": False}]})
        if tasks is not None:
            plays.append({"name": "race", "hosts": "localhost", "connection": "local", "gather_facts": False,
                          "tasks": tasks})
        if import_playbook is not None:
            plays.append({"import_playbook": os.path.join(PLAYBOOKS, import_playbook)})
        return json.dumps(plays, indent=1)

    def race(self, specs):
        """Run every (playbook text, extra_vars, env, inventory) at once; [(result, end time, rows at end)]."""
        self.gate_dir = tempfile.mkdtemp(prefix="gate-", dir=self.tmp)
        texts = []
        for n, (text_fn, extra, env, inv) in enumerate(specs):
            texts.append(text_fn(n))
        out = [None] * len(specs)

        def one(n):
            text_fn, extra, env, inv = specs[n]
            res = run_playbook(texts[n], extra_vars=extra, env=env, inventory=inv, timeout=600)
            out[n] = (res, time.time(), self.rows())

        threads = [threading.Thread(target=one, args=(n,), daemon=True) for n in range(len(specs))]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and any(t.is_alive() for t in threads):
            if all(os.path.exists(os.path.join(self.gate_dir, "ready-%d" % n)) for n in range(len(specs))):
                break
            time.sleep(0.02)
        self.sim.clear_requests()
        with open(os.path.join(self.gate_dir, "go"), "w"):
            pass
        for t in threads:
            t.join()
        return out

    # -- one round of a scenario
    def round(self, scenario, k):
        tag = "race-%s-%d" % (scenario.replace("_", ""), k)
        setup = getattr(self, "setup_" + scenario)(tag)
        self.watcher = Watcher(self.sim)
        self.watcher.start()
        try:
            outs = self.race(setup["specs"])
        finally:
            self.watcher.finish()
        log = self.sim.requests()
        # settle pending transitions (the simulator's clock, not the wall clock)
        self.sim.advance(120)
        rows = self.rows()
        rec = dict(scenario=scenario, round=k, runs=len(outs), failures=[], contradictions=[],
                   creates=sum(1 for e in log if e.get("endpoint") == "create" and e.get("status") == 200),
                   offers=len(set(e["path"] for e in log if e.get("endpoint") == "create")),
                   destroys=sum(1 for e in log if e.get("endpoint") == "destroy"), notes=[])
        for n, (res, _end, _rows) in enumerate(outs):
            if res.rc != 0:
                msg = failure_message(res)
                rec["failures"].append((n, msg))
                if not clear_msg(msg):
                    rec["contradictions"].append("run %d: unclear failure %r" % (n, (msg or "")[:200]))
        live = [r for r in rows if LIVE(r) and (r.get("label") or "").startswith(tag)]
        rec["live"] = dict(Counter(r["label"] for r in live))
        # at the end (must be 0); while racing, a loser lives until its run has listed the label again
        rec["duplicates"] = sum(v - 1 for v in rec["live"].values())
        rec["transient"] = sum(max(v - 1, 0) for lab, v in self.watcher.max_live.items()
                               if lab and lab.startswith(tag))
        # how long an instance rented and destroyed by the racers lived (a loser billing meanwhile)
        rec["loser_seconds"] = [round(self.watcher.gone[i] - t, 2) for i, t in self.watcher.first_seen.items()
                                if i in self.watcher.gone]
        getattr(self, "check_" + scenario)(rec, setup, outs, rows, live)
        self.clean()
        self.print_round(rec)
        return rec

    # -- 1. one label, different cheapest offers
    def setup_label(self, tag):
        specs = [(lambda n, tag=tag: self.gated(n, [{"name": "race", "llmops.vastai.vast_instance":
                                                     self.rent_args(tag, n)}]), None, self.env(n), None)
                 for n in range(self.racers)]
        return {"specs": specs, "label": tag}

    def check_label(self, rec, setup, outs, rows, live):
        self.check_one_label(rec, [(n, res.task("race").get("instance") or {}) for n, (res, _e, _r) in enumerate(outs)
                                   if res.rc == 0], setup["label"], live)

    def check_one_label(self, rec, reports, label, live):
        mine = [r for r in live if r["label"] == label]
        if len(mine) != 1:
            rec["contradictions"].append("%d live instances labelled %s at the end" % (len(mine), label))
        ids = set(r.get("id") for _n, r in reports)
        if len(ids) > 1:
            rec["contradictions"].append("runs report different instances for %s: %s" % (
                label, ", ".join("run %d -> %s" % (n, r.get("id")) for n, r in reports)))
        for n, r in reports:
            if mine and r.get("id") != mine[0]["id"]:
                rec["contradictions"].append("run %d reports instance %s for %s, the live one is %s" % (
                    n, r.get("id"), label, mine[0]["id"]))
            elif mine and r.get("actual_status") != "running":
                rec["contradictions"].append("run %d reports %s as %s (state=running asked)" % (
                    n, r.get("id"), r.get("actual_status")))
        if not reports:
            rec["notes"].append("no run succeeded")

    # -- 2. exact_count on one prefix
    def setup_exact_count(self, tag):
        specs = [(lambda n, tag=tag: self.gated(n, [{"name": "race", "llmops.vastai.vast_instance":
                                                     self.rent_args(tag, n, exact_count=2)}]), None, self.env(n), None)
                 for n in range(self.racers)]
        return {"specs": specs, "prefix": tag}

    def check_exact_count(self, rec, setup, outs, rows, live):
        prefix = setup["prefix"]
        want = ["%s-1" % prefix, "%s-2" % prefix]
        if sorted(rec["live"]) != want or any(v != 1 for v in rec["live"].values()):
            rec["contradictions"].append("replicas at the end: %s, want one each of %s" % (rec["live"], want))
        by_label = dict((r["label"], r["id"]) for r in live)
        seen = defaultdict(set)
        for n, (res, _e, _r) in enumerate(outs):
            if res.rc != 0:
                continue
            got = res.task("race").get("instances") or []
            if sorted(i.get("label") for i in got) != want:
                rec["contradictions"].append("run %d reports replicas %s" % (n, [i.get("label") for i in got]))
            for i in got:
                seen[i.get("label")].add(i.get("id"))
                if by_label.get(i.get("label")) != i.get("id"):
                    rec["contradictions"].append("run %d reports %s as %s, the live one is %s" % (
                        n, i.get("label"), i.get("id"), by_label.get(i.get("label"))))
        for lab, ids in seen.items():
            if len(ids) > 1:
                rec["contradictions"].append("runs report different instances for %s: %s" % (lab, sorted(ids)))

    # -- 3. provision.yml with one label; and a contested max_instances
    def provision_vars(self, label, n, **kw):
        extra = {"vast_mode": "container", "provision_deploy": False, "instance_label": label,
                 "wait_timeout": WAIT_TIMEOUT, "vast_container_image": IMAGE,
                 # each racer its own cheapest offer: other GPUs, same price order
                 "vast_profile_overrides": {"gpu_names": [GPUS[n % len(GPUS)]], "max_dph": MAX_DPH},
                 "max_instances": 10, "min_credit": 0,
                 "llmops_token_dir": os.path.join(self.tmp, "tokens"),
                 "llmops_ssh_key_file": os.path.join(self.tmp, "home-%d" % n, "ssh", "llmops_vastai_ed25519")}
        extra.update(kw)
        return extra

    def setup_provision(self, tag):
        specs = [(lambda n: self.gated(n, import_playbook="provision.yml"), self.provision_vars(tag, n),
                  self.env(n), None) for n in range(self.racers)]
        return {"specs": specs, "label": tag}

    @staticmethod
    def rented(res):
        try:
            return [i.get("instance") or {} for i in res.task("Rent and wait until SSH answers").get("results", [])]
        except KeyError:
            return []

    def check_provision(self, rec, setup, outs, rows, live):
        label = setup["label"]
        reports = [(n, (self.rented(res) or [{}])[0]) for n, (res, _e, _r) in enumerate(outs) if res.rc == 0]
        self.check_one_label(rec, reports, label, live)
        mine = [r for r in live if r["label"] == label]
        token = os.path.join(self.tmp, "tokens", label + ".token")
        if mine and reports and os.path.exists(token):
            with open(token) as f:
                want = f.read().strip()
            env = dict((k, v) for k, v in mine[0].get("extra_env") or [])
            # compared, never printed
            if env.get("VLLM_API_KEY") != want:
                rec["contradictions"].append("the token file of %s does not open instance %s (another racer's "
                                             "token was rented)" % (label, mine[0]["id"]))

    def setup_provision_cap(self, tag):
        base = self.sim.bulk(1, label_prefix=tag + "-base-", status="running")
        cap = len(self.live()) + 1
        specs = [(lambda n: self.gated(n, import_playbook="provision.yml"),
                  self.provision_vars("%s-%d" % (tag, n), n, max_instances=cap), self.env(n), None)
                 for n in range(self.racers)]
        return {"specs": specs, "cap": cap, "base": base, "prefix": tag}

    def setup_cap(self, tag):
        base = self.sim.bulk(1, label_prefix=tag + "-base-", status="running")
        cap = len(self.live()) + 1
        def racer(n):
            args = self.rent_args("%s-%d" % (tag, n), n, max_instances=cap)
            return self.gated(n, [{"name": "race", "llmops.vastai.vast_instance": args}])
        specs = [(racer, None, self.env(n), None) for n in range(self.racers)]
        return {"specs": specs, "cap": cap, "base": base, "prefix": tag, "task": "race"}

    def check_cap(self, rec, setup, outs, rows, live):
        self.check_provision_cap(rec, setup, outs, rows, live)

    def check_provision_cap(self, rec, setup, outs, rows, live):
        active = [r for r in rows if LIVE(r) and not (r.get("actual_status") in STOPPED
                                                     and r.get("intended_status") != "running")]
        rec["notes"].append("max_instances %d, active at the end %d" % (setup["cap"], len(active)))
        if len(active) > setup["cap"]:
            rec["contradictions"].append("%d active instances, max_instances %d" % (len(active), setup["cap"]))
        by_label = dict((r["label"], r["id"]) for r in live)
        ok = 0
        for n, (res, _e, _r) in enumerate(outs):
            label = "%s-%d" % (setup["prefix"], n)
            if res.rc == 0:
                ok += 1
                got = (res.task("race").get("instance") or {}) if setup.get("task") else (self.rented(res) or [{}])[0]
                if by_label.get(label) != got.get("id"):
                    rec["contradictions"].append("run %d reports %s as %s, live: %s" % (
                        n, label, got.get("id"), by_label.get(label)))
            elif label in by_label:
                rec["contradictions"].append("run %d failed (%s) but its instance %s lives" % (
                    n, (failure_message(res) or "")[:120], by_label[label]))
        if ok != 1:
            rec["contradictions"].append("%d runs succeeded; the cap leaves room for exactly one" % ok)

    # -- 4. power on against power off
    def setup_power(self, tag):
        start = self.rng.choice(["running", "stopped"])
        iid = self.running_instance(tag, start)
        ops = [("power_off.yml", {"instance_label": tag, "wait_timeout": WAIT_TIMEOUT}),
               ("power_on.yml", {"instance_label": tag, "wait_timeout": WAIT_TIMEOUT, "wait_for_health": False})]
        self.rng.shuffle(ops)
        specs = []
        self.power_ops = []
        for n in range(self.racers):
            pb, extra = ops[n % 2]
            self.power_ops.append(pb)
            specs.append((lambda n, pb=pb: self.gated(n, import_playbook=pb), extra, self.env(n), None))
        rec_start = start
        return {"specs": specs, "id": iid, "start": rec_start, "ops": list(self.power_ops)}

    def check_power(self, rec, setup, outs, rows, live):
        iid = setup["id"]
        end = next(r for r in rows if r["id"] == iid)
        end_state = "running" if end.get("actual_status") == "running" else (
            "stopped" if end.get("actual_status") in STOPPED else end.get("actual_status"))
        rec["notes"].append("start %s, end %s, ops %s" % (setup["start"], end_state, ",".join(
            o.split("_")[1].split(".")[0] for o in setup["ops"])))
        if end_state not in ("running", "stopped") or end.get("intended_status") != end_state:
            rec["contradictions"].append("end state of %s is %s (intended %s), neither running nor stopped" % (
                iid, end.get("actual_status"), end.get("intended_status")))
        changed_at = self.watcher.last_intent_change(iid)
        for n, (res, ended, rows_at_end) in enumerate(outs):
            if res.rc != 0:
                continue
            pb = setup["ops"][n]
            said = "stopped" if pb == "power_off.yml" else "running"
            task = "Stop it" if pb == "power_off.yml" else "Start it"
            summary = "Runtime and cost" if pb == "power_off.yml" else "Endpoint"
            windows = task_window(res)
            inst = res.task(task).get("instance") or {}
            module_said = "stopped" if inst.get("actual_status") in STOPPED else inst.get("actual_status")
            if module_said != said or inst.get("intended_status") not in (said, None):
                # the module's own row: reported 'running' while the API already meant to stop it
                rec["contradictions"].append("[vast_instance] run %d (%s) succeeded, its task returned "
                                             "actual_status %s, intended_status %s" % (
                                                 n, pb, inst.get("actual_status"), inst.get("intended_status")))
                continue
            warned = warned_meanwhile(res)
            if said == end_state or warned:
                continue
            module_end = windows.get(task, (0, ended))[1]
            # the re-read before the summary: a change made before it started must be told
            summary_start = windows.get("Read the instance again before the summary",
                                        windows.get(summary, (0, ended)))[0]
            if changed_at is not None and changed_at < module_end - MODULE_SLACK:
                # the module's last read came after the change: it reported a state the API had left
                rec["contradictions"].append(
                    "[vast_instance] run %d (%s) reports %s, the instance ends %s, set %.1f s before its task ended" % (
                        n, pb, said, end_state, module_end - changed_at))
            elif changed_at is not None and changed_at < summary_start - SUMMARY_SLACK:
                rec["contradictions"].append(
                    "[%s summary] run %d reports %s, the instance ends %s, set %.1f s before the summary was "
                    "printed (no re-read, no warning)" % (pb, n, said, end_state, summary_start - changed_at))
            else:
                rec["notes"].append("run %d (%s) reports %s; another run changed it after that" % (n, pb, said))

    # -- 5. overlapping idle_shutdown
    def setup_idle(self, tag):
        iid = self.running_instance(tag)
        inv = os.path.join(self.tmp, "%s.vast.yml" % tag)
        with open(inv, "w") as f:
            f.write("plugin: llmops.vastai.vast\nstatuses: [running]\nlabel_prefix: [%s]\n" % tag)
        audit = os.path.join(self.tmp, "%s-audit.jsonl" % tag)
        specs = [(lambda n: self.gated(n, import_playbook="idle_shutdown.yml"),
                  dict(IDLE_VARS, idle_shutdown_hosts=tag), self.env(n, {"VAST_AUDIT_LOG": audit}), inv)
                 for n in range(self.racers)]
        return {"specs": specs, "id": iid, "audit": audit}

    def check_idle(self, rec, setup, outs, rows, live):
        iid = setup["id"]
        events = []
        if os.path.exists(setup["audit"]):
            with open(setup["audit"]) as f:
                events = [json.loads(line) for line in f if line.strip()]
        mine = [e for e in events if str(e.get("instance_id")) == str(iid)]
        rec["auto_shutdown"] = sum(1 for e in mine if e.get("action") == "auto_shutdown")
        rec["auto_shutdown_complete"] = sum(1 for e in mine if e.get("action") == "auto_shutdown_complete")
        rec["module_stops"] = sum(1 for e in mine if e.get("action") == "stop")
        rec["real_stops"] = self.watcher.real_stops(iid)
        rec["notes"].append("real stops %d, audit: auto_shutdown %d, auto_shutdown_complete %d, "
                            "vast_instance stop %d" % (rec["real_stops"], rec["auto_shutdown"],
                                                       rec["auto_shutdown_complete"], rec["module_stops"]))
        end = next(r for r in rows if r["id"] == iid)
        if end.get("actual_status") not in STOPPED:
            rec["contradictions"].append("[idle_shutdown.yml] idle instance %s ends %s" % (
                iid, end.get("actual_status")))
        if rec["auto_shutdown"] != rec["real_stops"]:
            rec["contradictions"].append("[idle_shutdown.yml audit] %d auto_shutdown events for %d real stop(s) "
                                         "of %s" % (rec["auto_shutdown"], rec["real_stops"], iid))

    # -- a rival at a fixed point of a real playbook (deterministic regression of a race)
    def rival_on_billing_read(self, iid):
        """A thread that asks for ``iid`` to run again (another job's power_on, made instantly
        through /_sim/) as soon as the run's billing read is answered 429 - the billing read comes
        after power_off's wait and before its summary; the 429s (rate limits happen in
        production; the client retries them) only make that point visible in the request log.
        join() it after; ``acted`` is when it acted."""
        def act():
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                time.sleep(0.02)
                try:
                    if any(e.get("endpoint") == "charges" and e.get("fault") == "429" for e in self.sim.requests()):
                        self.sim.force(iid, "scheduling", hold=False)  # intended running: a start under way
                        rival.acted = time.time()
                        return
                except (OSError, RuntimeError):
                    continue  # a control call that failed: look again
        rival = threading.Thread(target=act, daemon=True)
        rival.acted = None
        self.sim.clear_requests()
        self.sim.add_faults([{"endpoint": "charges", "fault": "429", "times": 2}])
        rival.start()
        return rival

    def power_off_while_another_job_starts(self, label):
        """power_off.yml on a running instance; another job starts it again after power_off's
        wait has seen it stopped, before its summary. -> (result, rival time, row at the end)."""
        iid = self.running_instance(label)
        rival = self.rival_on_billing_read(iid)
        res = run_playbook(os.path.join(PLAYBOOKS, "power_off.yml"), env=self.env(0), timeout=300,
                           extra_vars={"instance_label": label, "wait_timeout": WAIT_TIMEOUT})
        rival.join(5)
        self.sim.clear_faults()
        self.sim.advance(120)
        return res, rival.acted, self.sim.instance(iid)

    # -- output
    def print_round(self, rec):
        w = self.out.write
        if self.verbose or rec["contradictions"] or rec["duplicates"]:
            w("%-13s round %d: runs %d, creates %d (%d offers), destroys %d, live %s, duplicates %d "
              "(%d while racing, losers lived %s s), contradictions %d, failures %d\n" % (
                  rec["scenario"], rec["round"], rec["runs"], rec["creates"], rec["offers"], rec["destroys"],
                  rec["live"] or "{}", rec["duplicates"], rec["transient"],
                  ", ".join("%.1f" % x for x in rec["loser_seconds"]) or "-", len(rec["contradictions"]),
                  len(rec["failures"])))
            for note in rec["notes"]:
                w("    . %s\n" % note)
            for c in rec["contradictions"]:
                w("    ! %s\n" % c)
            for n, msg in rec["failures"]:
                w("    x run %d: %s\n" % (n, (msg or "")[:300]))
            self.out.flush()

    def __enter__(self):
        self.sim = launch(hosts="none", seed=self.seed, speed=SPEED, latency=self.latency, offers=400)
        self.tmp = tempfile.mkdtemp(prefix="race-campaign-")
        return self

    def __exit__(self, *exc):
        self.sim.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def go(self):
        self.out.write("race campaign: %d racers x %d round(s) x %s, latency %d ms, seed %d "
                       "(reproduce: CAMPAIGN_SEED=%d)\n" % (self.racers, self.rounds, ",".join(self.scenarios),
                                                             self.latency, self.seed, self.seed))
        started = time.monotonic()
        recs = []
        with self:
            for scenario in self.scenarios:
                for k in range(1, self.rounds + 1):
                    recs.append(self.round(scenario, k))
                k = self.rounds
                while scenario in RACED_WHEN and k < self.rounds + self.until_raced and not any(
                        r["creates"] > RACED_WHEN[scenario] for r in recs if r["scenario"] == scenario):
                    k += 1
                    recs.append(self.round(scenario, k))
        summary = self.summary(recs, time.monotonic() - started)
        self.print_summary(summary)
        return summary

    def summary(self, recs, seconds):
        out = {"seed": self.seed, "racers": self.racers, "rounds": self.rounds, "latency_ms": self.latency,
               "seconds": round(seconds), "scenarios": {}}
        for sc in self.scenarios:
            rs = [r for r in recs if r["scenario"] == sc]
            live = Counter()
            for r in rs:
                live.update(Counter(v for v in r["live"].values()))
            s = dict(runs=sum(r["runs"] for r in rs), creates=sum(r["creates"] for r in rs),
                     raced_rounds=sum(1 for r in rs if r["creates"] > RACED_WHEN.get(sc, 1)),
                     destroys=sum(r["destroys"] for r in rs),
                     live_per_label=dict(("%d live" % k, v) for k, v in sorted(live.items())),
                     duplicates=sum(r["duplicates"] for r in rs), transient=sum(r["transient"] for r in rs),
                     losers=sum(len(r["loser_seconds"]) for r in rs),
                     loser_seconds_max=max([x for r in rs for x in r["loser_seconds"]] or [0.0]),
                     contradictions=[c for r in rs for c in r["contradictions"]],
                     failures=[m for r in rs for _n, m in r["failures"]])
            if sc == "idle":
                s.update(real_stops=sum(r["real_stops"] for r in rs), auto_shutdown=sum(r["auto_shutdown"] for r in rs),
                         auto_shutdown_complete=sum(r["auto_shutdown_complete"] for r in rs),
                         module_stops=sum(r["module_stops"] for r in rs),
                         rounds_with_extra_auto_shutdown=sum(1 for r in rs if r["auto_shutdown"] != r["real_stops"]))
            if sc in ("cap", "provision_cap"):
                kinds = Counter("playbook preflight" if "Budget guard" in (m or "") else
                                "module, before its create" if "refusing to create" in (m or "") else
                                "module, after its create (destroyed it)" if "concurrent run" in (m or "") else "other"
                                for m in s["failures"])
                s["cap_refusals"] = dict(kinds)
            if sc == "power":
                s["end_states"] = dict(Counter(n.split(", end ")[1].split(",")[0] for r in rs for n in r["notes"]
                                               if n.startswith("start ")))
                s["superseded_reports"] = sum(1 for r in rs for n in r["notes"] if "changed it after" in n)
            s["contradictions_by_owner"] = dict(Counter(owner(c) for c in s["contradictions"]))
            out["scenarios"][sc] = s
        return out

    def print_summary(self, s):
        w = self.out.write
        w("\n=== race campaign (seed %d, %d racers x %d rounds, latency %d ms, %d s) ===\n" % (
            s["seed"], s["racers"], s["rounds"], s["latency_ms"], s["seconds"]))
        w("%-14s %5s %8s %7s %9s %-22s %5s %9s %7s %6s\n" % (
            "scenario", "runs", "creates", "raced", "destroys", "live per label", "dupl", "transient", "contra",
            "fails"))
        for sc, x in s["scenarios"].items():
            w("%-14s %5d %8d %7d %9d %-22s %5d %9d %7d %6d\n" % (
                sc, x["runs"], x["creates"], x["raced_rounds"], x["destroys"],
                ", ".join("%s: %d" % kv for kv in x["live_per_label"].items()) or "-", x["duplicates"], x["transient"],
                len(x["contradictions"]), len(x["failures"])))
        for sc, x in s["scenarios"].items():
            if x["losers"]:
                w("%s: %d instance(s) rented and destroyed again by the racers, the longest lived %.1f s\n" % (
                    sc, x["losers"], x["loser_seconds_max"]))
            if sc == "idle":
                w("idle: real stops %d, auto_shutdown events %d, auto_shutdown_complete %d, "
                  "vast_instance stops %d\n" % (x["real_stops"], x["auto_shutdown"], x["auto_shutdown_complete"],
                                                 x["module_stops"]))
            if sc in ("cap", "provision_cap"):
                w("%s: refused by %s\n" % (sc, ", ".join("%s %d" % kv for kv in sorted(
                    x["cap_refusals"].items())) or "-"))
            if sc == "power":
                w("power: end states %s, reports superseded by a later run %d\n" % (
                    x["end_states"], x["superseded_reports"]))
            if x["contradictions"]:
                w("%s: contradictions by owner: %s\n" % (sc, ", ".join(
                    "%s %d" % kv for kv in sorted(x["contradictions_by_owner"].items()))))
            for c in x["contradictions"]:
                w("  ! %s: %s\n" % (sc, c))
            msgs = Counter(re.sub(r"\d+", "N", m or "")[:200] for m in x["failures"])
            for m, c in msgs.most_common(6):
                w("  x %s: %d x %s\n" % (sc, c, m))
        self.out.flush()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--racers", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=int(os.environ.get("CAMPAIGN_SEED", "6")))
    ap.add_argument("--latency", type=float, default=LATENCY_MS)
    ap.add_argument("--scenario", action="append", choices=SCENARIOS)
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    s = Campaign(a.racers, a.rounds, a.seed, a.scenario or SCENARIOS, a.latency, verbose=a.verbose).go()
    bad = sum(x["duplicates"] + len(x["contradictions"]) for x in s["scenarios"].values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
