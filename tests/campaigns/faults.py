"""Fault campaign: randomized fault schedules from the simulator over the real playbooks, one
ansible-playbook per run, on a `--hosts none` simulator: provision.yml (container mode, no
deploy: nothing to SSH into), power_off.yml, power_on.yml (no health wait), teardown.yml and
idle_shutdown.yml with the dynamic inventory (deciding by its unreachable rule, since SSH never
answers). Waits are shortened through the modules' environment fallbacks (VAST_POLL_INTERVAL,
VAST_API_TIMEOUT, VAST_API_RETRIES) and the playbooks' own wait_timeout. After every run the
simulator's state is checked:

- orphans: an instance created during the run that is still live must be the one the run
  reported (in a result or in the failure message); otherwise it silently costs money;
- double rentals: at most one live instance per label, at the end and while the run goes;
- failures: a clear message (no traceback), naming the instance id when the module knew it
  (operations by id) or created it;
- successes: the instance really is in the state the operation promised.

    python -m tests.campaigns.faults [--runs N] [--seed S]     # prints the summary
"""
import argparse
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
import urllib.request
from collections import Counter

from tests.campaigns.common import StateWatcher, clear_msg
from tests.helpers.ansible import run_playbook
from tests.helpers.vastsim import launch

LABELS = ("fc-a", "fc-b", "fc-c")
GPUS = ["RTX 4090", "RTX 3090", "RTX A5000", "L4"]
MAX_DPH = 1.0
WAIT_TIMEOUT = 6          # real seconds; a stuck instance fails after this
POLL = 0.25
# the modules' environment fallbacks: what an AWX credential would set
MODULE_ENV = {"VAST_API_TIMEOUT": "2", "VAST_API_RETRIES": "3", "VAST_POLL_INTERVAL": str(POLL)}
TIMEOUT_HOLD = 3.0        # the simulator holds a "timeout" request this long (> api_timeout)
SPEED = 60                # simulated seconds per real second: a rent takes ~0.8 s

OPS_ENDPOINTS = {
    "rent": ["list", "user", "search", "create", "show", "destroy", "logs", "ssh"],
    "power_off": ["list", "show", "manage", "charges"],
    "power_on": ["list", "show", "manage"],
    "teardown": ["list", "show", "destroy", "charges"],
    "idle_shutdown": ["list", "show", "manage", "charges"],
}
PLAYBOOKS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "playbooks")
# idle_shutdown.yml on a --hosts none simulator: SSH never answers, so the playbook's
# unreachable rule decides (limit 1 probe, no minimum age); the rest is the real playbook.
IDLE_VARS = {"idle_shutdown_unreachable_limit": 1, "idle_shutdown_unreachable_min_age_minutes": 0,
             "idle_shutdown_boot_grace_minutes": 0, "idle_shutdown_probe_timeout": 2,
             "idle_shutdown_probe_delay": 1, "idle_shutdown_confirm_timeout": 10}
LIVE = lambda row: row.get("destroyed_at") is None  # noqa: E731


def op_run(op, label, tmp):
    """(playbook, extra vars) of one operation: the real playbooks, with short waits."""
    if op == "rent":
        return "provision.yml", {
            "vast_mode": "container", "provision_deploy": False, "instance_label": label, "wait_timeout": WAIT_TIMEOUT,
            "vast_profile_overrides": {"gpu_names": GPUS, "max_dph": MAX_DPH}, "max_instances": 10, "min_credit": 0,
            "llmops_token_dir": os.path.join(tmp, "tokens"),
            "llmops_ssh_key_file": os.path.join(tmp, "ssh", "llmops_vastai_ed25519")}
    if op == "teardown":
        return "teardown.yml", {"instance_label": label, "confirm": label}
    if op == "idle_shutdown":
        return "idle_shutdown.yml", dict(IDLE_VARS, idle_shutdown_hosts=label)
    extra = {"instance_label": label, "wait_timeout": WAIT_TIMEOUT}
    if op == "power_on":
        extra["wait_for_health"] = False
    return op + ".yml", extra


class Watcher(StateWatcher):
    """Samples /_sim/state while a run goes: most live instances per label seen, and (for the
    'stuck' fault on a rent) holds the newly created instance in loading/scheduling."""

    def __init__(self, sim, label, known_ids, stick=None):
        super().__init__(sim, LIVE)
        self.label, self.known, self.stick = label, set(known_ids), stick
        self.stuck_ids = []

    def sample(self, rows, t):
        if self.stick and not self.stuck_ids:
            for r in rows:
                if LIVE(r) and r["label"] == self.label and r["id"] not in self.known:
                    try:
                        self.sim.force(r["id"], self.stick, hold=True)
                        self.stuck_ids.append(r["id"])
                    except RuntimeError:
                        pass


class Campaign:
    def __init__(self, runs, seed, out=sys.stdout, verbose=False, plan=None):
        """``plan``: optional fixed list of (label, op, rules, extras) runs instead of random ones."""
        self.plan = list(plan or [])
        self.runs = len(self.plan) if plan else runs
        self.seed, self.out, self.verbose = seed, out, verbose
        self.rng = random.Random(seed)
        self.records = []
        self.injected = Counter()

    # -- simulator helpers
    def api(self, method, path):
        req = urllib.request.Request(self.sim.url + path, method=method,
                                     headers={"Authorization": "Bearer " + self.sim.api_key})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"null")

    def rows(self):
        return self.sim.state()["instances"]

    def matching_offers(self):
        offers = self.sim.ctl("GET", "offers")["offers"]
        # what the rent's search would return first (verified by default; dph_base ~ dph_total)
        ok = [o for o in offers if o.get("gpu_name") in GPUS and o.get("verified")
              and float(o.get("dph_base") or 99) <= MAX_DPH]
        return sorted(ok, key=lambda o: (float(o["dph_base"]), o["id"]))

    # -- one run
    def schedule(self, op, row):
        """Random fault rules for this run plus the 'offers taken' / 'stuck' extras."""
        rng = self.rng
        rules, extras = [], {}
        endpoints = OPS_ENDPOINTS[op]
        for _ in range(rng.choice([0, 1, 1, 2, 2, 3])):
            kind = rng.choice(["429", "5xx", "5xx", "reset", "timeout", "lost_response", "taken", "stuck"])
            ep = rng.choice(endpoints + ["*"])
            if kind == "429":
                rules.append({"endpoint": ep, "fault": "429", "times": rng.randint(1, 6), "after": rng.randint(0, 2)})
            elif kind == "5xx":
                rules.append({"endpoint": ep, "fault": rng.choice(["500", "502", "503", "504"]),
                              "times": rng.randint(1, 3), "after": rng.randint(0, 3)})
            elif kind == "reset":
                rules.append({"endpoint": ep, "fault": "reset", "times": rng.randint(1, 2), "after": rng.randint(0, 2)})
            elif kind == "timeout":
                rules.append({"endpoint": ep, "fault": "timeout", "seconds": TIMEOUT_HOLD, "times": 1,
                              "after": rng.randint(0, 2)})
            elif kind == "lost_response":
                mut = {"rent": "create", "power_off": "manage", "power_on": "manage", "teardown": "destroy",
                       "idle_shutdown": "manage"}[op]
                rules.append({"endpoint": mut, "fault": "lost_response", "times": 1})
            elif kind == "taken" and op == "rent" and row is None:
                extras["taken"] = rng.randint(1, 4)
            elif kind == "stuck":
                if op == "rent" and row is None:
                    extras["stick_new"] = rng.choice(["loading", "scheduling"])
                elif op == "power_on" and row and row.get("actual_status") in ("stopped", "exited"):
                    extras["stick"] = "scheduling"
                elif op in ("power_off", "idle_shutdown") and row and row.get("actual_status") == "running":
                    extras["stick"] = "running"
                elif op == "power_on" and row and row.get("actual_status") == "running":
                    extras["stick"] = "loading"
        return rules, extras

    def pick(self):
        label = self.rng.choice(LABELS)
        live = [r for r in self.rows() if LIVE(r) and r["label"] == label]
        row = live[0] if len(live) == 1 else None
        status = row and row.get("actual_status")
        if not live:
            op = "rent"
        elif status == "running":
            op = self.rng.choice(["power_off", "power_off", "teardown", "rent", "idle_shutdown"])
        elif status in ("stopped", "exited"):
            op = self.rng.choice(["power_on", "power_on", "teardown", "power_off"])
        else:
            op = self.rng.choice(["teardown", "power_off", "power_on"])
        return label, op, row

    def one(self, n):
        if self.plan:
            label, op, rules, extras = self.plan[n - 1]
            live = [r for r in self.rows() if LIVE(r) and r["label"] == label]
            row = live[0] if len(live) == 1 else None
        else:
            label, op, row = self.pick()
            rules, extras = self.schedule(op, row)
        before = {r["id"] for r in self.rows()}
        taken = []
        if extras.get("taken"):
            taken = [o["id"] for o in self.matching_offers()[: extras["taken"]]]
            for oid in taken:
                self.sim.take_offer(oid)
            self.injected["offer_taken"] += len(taken)
        if extras.get("stick") and row:
            self.sim.force(row["id"], extras["stick"], hold=True)
            self.injected["stuck_" + extras["stick"]] += 1
        self.sim.clear_requests()
        if rules:
            self.sim.add_faults(rules)
        watcher = Watcher(self.sim, label, before, extras.get("stick_new"))
        watcher.start()
        try:
            name, extra = op_run(op, label, self.tmp)
            res = run_playbook(os.path.join(PLAYBOOKS, name), extra_vars=extra, timeout=300,
                               inventory=self.inventory if op == "idle_shutdown" else None,
                               env=dict(self.sim.env, HOME=os.path.join(self.tmp, "home"), **MODULE_ENV))
        finally:
            watcher.finish()
        log = self.sim.requests()
        self.sim.clear_faults()
        for e in log:
            if e.get("fault"):
                self.injected[e["fault"] if e["fault"] not in ("500", "502", "503", "504") else "5xx"] += 1
        if watcher.stuck_ids:
            self.injected["stuck_" + extras["stick_new"]] += 1
        for oid in taken:
            self.sim.ctl("POST", "offers/%d/release" % oid)
        rec = self.check(n, label, op, row, rules, extras, before, res, log, watcher)
        # release holds so the next run starts from a state that moves
        for r in self.rows():
            if LIVE(r) and r.get("hold"):
                self.sim.force(r["id"], r.get("actual_status") or "null", hold=False)
        self.records.append(rec)
        return rec

    def check(self, n, label, op, row, rules, extras, before, res, log, watcher):
        rows = self.rows()
        by_id = {r["id"]: r for r in rows}
        new = [r for r in rows if r["id"] not in before]
        new_live = [r for r in new if LIVE(r)]
        results = [t.result for t in res.tasks]
        text = json.dumps(results, default=str)
        failed = [t for t in res.tasks if t.result.get("failed")]
        fmsg = None
        if failed:
            r = failed[-1].result
            items = [i.get("msg") for i in r.get("results") or [] if isinstance(i, dict) and i.get("failed")]
            fmsg = "; ".join(str(m) for m in items if m) or r.get("msg")
            fmsg = fmsg if isinstance(fmsg, str) else (json.dumps(fmsg) if fmsg is not None else None)
        reported = set(int(i) for i in re.findall(r'"(?:id|instance_id|new_contract)": (\d+)', text))
        reported |= set(int(i) for i in re.findall(r"\b(\d{5,})\b", fmsg or ""))
        problems = []
        orphans = [r["id"] for r in new_live if r["id"] not in reported]
        if orphans:
            problems.append("orphan instance(s) %s (created, live, never reported)" % orphans)
        live_per_label = Counter(r["label"] for r in rows if LIVE(r))
        doubles = max(live_per_label[label], watcher.max_live[label])
        if doubles > 1:
            problems.append("double rental: %d live instances labelled %s" % (doubles, label))
        target_id = row["id"] if row else None
        if res.rc != 0 and not failed:
            # the dynamic inventory failed (idle_shutdown): its own message is what the user reads
            m = re.search(r"Failed to parse inventory with '[\w.]*llmops\.vastai\.plugins\.inventory\.vast' "
                          r"plugin: (.+)", res.stderr)
            fmsg = m.group(1).strip() if m else None
        if res.rc != 0:
            if not failed and not fmsg:
                problems.append("rc=%d without a failed task (%s)" % (res.rc, res.stderr[-300:]))
            elif not clear_msg(fmsg):
                problems.append("unclear failure message: %r" % (fmsg or "")[:300])
            else:
                need = None
                if failed and failed[-1].action.endswith("vast_instance") and op != "rent":
                    need = target_id  # the task was given the id
                elif op == "rent" and new:
                    need = new[0]["id"]
                if need is not None and not re.search(r"\b%d\b" % need, fmsg):
                    problems.append("failure message lacks the instance id %s: %r" % (need, fmsg[:300]))
        live = [r for r in rows if LIVE(r) and r["label"] == label]
        want = {"rent": "running", "power_on": "running", "power_off": "stopped", "teardown": None,
                "idle_shutdown": "stopped"}[op]
        if want is None:
            done = not (target_id and LIVE(by_id.get(target_id, {})))
        else:
            done = len(live) == 1 and (live[0].get("actual_status") or "") in (
                (want,) if want == "running" else ("stopped", "exited"))
        if res.rc == 0 and not done:
            problems.append("%s reported success, but the instance is %s" % (
                op, [(r["id"], r.get("actual_status")) for r in live] or "gone"))
        # keep the next runs meaningful: destroy extra same-label instances (a defect already counted)
        if live_per_label[label] > 1:
            for r in sorted((r for r in rows if LIVE(r) and r["label"] == label), key=lambda r: r["id"])[1:]:
                self.api("DELETE", "/api/v0/instances/%d/" % r["id"])
        outcome = "success" if res.rc == 0 else ("clean failure" if not problems else "bad failure")
        rec = dict(run=n, op=op, label=label, rules=rules, extras=extras, rc=res.rc, outcome=outcome,
                   msg=fmsg, failed_task=failed[-1].name if failed else None,
                   failed_action=failed[-1].action.rsplit(".", 1)[-1] if failed else None, problems=problems,
                   orphans=orphans, doubles=max(doubles - 1, 0), done=done, created=[r["id"] for r in new],
                   faults_fired=[e["fault"] for e in log if e.get("fault")], seconds=round(res.duration, 1))
        if self.verbose or problems:
            self.out.write("run %3d %-9s %-4s %-13s %5.1fs faults=%s%s%s%s\n" % (
                n, op, label, outcome, res.duration, ",".join(rec["faults_fired"]) or "-",
                " extras=%s" % extras if extras else "",
                "\n    msg: %s%s" % ((fmsg or "")[:240], " (took effect anyway)" if done else "") if res.rc else "",
                "".join("\n    ! " + p for p in problems)))
            self.out.flush()
        return rec

    def go(self):
        self.out.write("fault campaign: %d %s runs, seed %d (reproduce: CAMPAIGN_SEED=%d)\n" % (
            self.runs, "planned" if self.plan else "random", self.seed, self.seed))
        self.sim = launch(hosts="none", seed=self.seed, speed=SPEED)
        self.tmp = tempfile.mkdtemp(prefix="fault-campaign-")
        os.makedirs(os.path.join(self.tmp, "home"))
        self.inventory = os.path.join(self.tmp, "campaign.vast.yml")
        with open(self.inventory, "w") as f:
            f.write("plugin: llmops.vastai.vast\nstatuses: [running]\nlabel_prefix: [fc-]\n")
        started = time.monotonic()
        try:
            for n in range(1, self.runs + 1):
                self.one(n)
                if n % 20 == 0 and not self.verbose:
                    recs = self.records
                    self.out.write("progress: %d/%d runs, %d s, %d successes, %d clean failures, %d with defects\n" % (
                        n, self.runs, time.monotonic() - started, sum(r["outcome"] == "success" for r in recs),
                        sum(r["outcome"] == "clean failure" for r in recs), sum(bool(r["problems"]) for r in recs)))
                    self.out.flush()
            final = self.rows()
        finally:
            self.sim.stop()
            shutil.rmtree(self.tmp, ignore_errors=True)
        summary = self.summary(final, time.monotonic() - started)
        self.print_summary(summary)
        return summary

    def summary(self, final, seconds):
        recs = self.records
        return dict(
            seed=self.seed, runs=len(recs), seconds=round(seconds), ops=dict(Counter(r["op"] for r in recs)),
            faults_injected=dict(self.injected), faults_total=sum(self.injected.values()),
            runs_with_faults=sum(1 for r in recs if r["faults_fired"] or r["extras"]),
            successes=sum(1 for r in recs if r["outcome"] == "success"),
            clean_failures=sum(1 for r in recs if r["outcome"] == "clean failure"),
            bad_runs=sum(1 for r in recs if r["problems"]),
            # failed runs whose operation took effect anyway: a lost answer the module could not
            # confirm by re-reading, or a wait that ran out just before the instance got there
            failed_but_done=Counter(
                "lost answer not confirmed" if "answer was lost" in (r["msg"] or "") else
                "wait ran out, got there later" if "did not reach" in (r["msg"] or "") else
                "wait ended on API errors, got there" if "waiting for" in (r["msg"] or "") else "other"
                for r in recs if r["rc"] != 0 and r["done"] and r["failed_action"] == "vast_instance"),
            orphans=sum(len(r["orphans"]) for r in recs), double_rentals=sum(r["doubles"] for r in recs),
            instances_created=sum(len(r["created"]) for r in recs),
            live_at_end=sum(1 for r in final if LIVE(r)),
            problems=Counter(re.sub(r"\d+", "N", p.split(":")[0]) for r in recs for p in r["problems"]),
        )

    def print_summary(self, s):
        w = self.out.write
        w("\n=== fault campaign (seed %d, %d s) ===\n" % (s["seed"], s["seconds"]))
        w("runs: %d (%s)\n" % (s["runs"], ", ".join("%s %d" % kv for kv in sorted(s["ops"].items()))))
        w("faults injected: %d in %d runs: %s\n" % (s["faults_total"], s["runs_with_faults"], ", ".join(
            "%s %d" % kv for kv in sorted(s["faults_injected"].items()))))
        w("successes: %d, clean failures: %d, runs with defects: %d\n" % (
            s["successes"], s["clean_failures"], s["bad_runs"]))
        w("failed runs whose operation took effect anyway: %d (%s)\n" % (
            sum(s["failed_but_done"].values()), ", ".join("%s %d" % kv for kv in sorted(s["failed_but_done"].items()))
            or "-"))
        w("instances created: %d, live at end: %d\n" % (s["instances_created"], s["live_at_end"]))
        w("orphans: %d, double rentals: %d\n" % (s["orphans"], s["double_rentals"]))
        for p, c in s["problems"].most_common():
            w("  defect x%d: %s\n" % (c, p))
        msgs = Counter()
        for r in self.records:
            if r["outcome"] == "clean failure" and r["msg"]:
                msgs[re.sub(r"\d+", "N", r["msg"])[:150]] += 1
        if msgs:
            w("clean failure messages (most common):\n")
            for m, c in msgs.most_common(8):
                w("  %3d x %s\n" % (c, m))
        self.out.flush()


# A short fixed schedule covering each fault kind once (the `make test` sample).
SAMPLE_PLAN = [
    ("fc-a", "rent", [{"endpoint": "create", "fault": "lost_response"},
                      {"endpoint": "list", "fault": "503", "times": 2}], {}),
    ("fc-b", "rent", [{"endpoint": "search", "fault": "429", "times": 2}], {"taken": 2, "stick_new": "loading"}),
    ("fc-a", "power_off", [{"endpoint": "manage", "fault": "429", "times": 2},
                           {"endpoint": "show", "fault": "reset", "times": 1}], {}),
    ("fc-a", "power_on", [{"endpoint": "show", "fault": "timeout", "seconds": TIMEOUT_HOLD, "times": 1}],
     {"stick": "scheduling"}),
    ("fc-a", "teardown", [{"endpoint": "destroy", "fault": "lost_response"}], {}),
]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=int(os.environ.get("CAMPAIGN_SEED", "6")))
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    s = Campaign(a.runs, a.seed, verbose=a.verbose).go()
    return 1 if s["bad_runs"] else 0


if __name__ == "__main__":
    sys.exit(main())
