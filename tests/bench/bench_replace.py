"""Preemption -> healthy replacement through one keep_serving.yml run (issue 16), on a
`--hosts docker` simulator in container mode (the replacement is a real container of the engine
stand-in; /health on its published port).

Each round: the replica `ks` (interruptible) is preempted; one keep_serving.yml run rents
`ks-replacement`, waits for running and /health 200, moves the label, destroys the old one.
A watcher samples the simulator's state and the replacement's /health every 50 ms, so the run
splits into
  total     = the playbook's wall time (start of ansible-playbook to its exit);
  boot+load = create request -> first /health 200 seen by the watcher (the simulator's
              provisioning + image pull, then the stand-in's model load): the platform's time,
              excluded;
  overhead  = total - boot+load: what the playbook itself costs (its API calls, its poll
              granularity, Ansible's own start-up and task overhead).
The API calls come from /_sim/requests, by endpoint, against the fewest this flow can make:

  list     1  find the preempted replica (one listing answers for every service)
  search   1  offers for the profile
  create   1  rent the replacement
  show     1  at least one status read until running (1 + floor(boot / poll_interval) with
              the module's fixed-interval polling; the minimum counts the single read)
  destroy  1  the old instance (replace_old=destroy)
  manage   1  the label change (PUT label on the replacement)
  ------   6  (/health is HTTP to the instance, not an API call; the token needs no call)

    .venv/bin/python -m tests.bench.bench_replace [--rounds N]
No timed assertions: figures only.
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter

from tests.bench import summary
from tests.campaigns.common import StateWatcher
from tests.campaigns.replace_faults import COMMON, LIVE, health_url, http_status
from tests.helpers import images
from tests.helpers.ansible import REPO, run_playbook
from tests.helpers.vastsim import launch

PLAYBOOKS = os.path.join(REPO, "playbooks")
SERVICE = {"name": "ks", "profile": "budget", "replicas": 1, "interruptible": True}
MINIMUM = Counter({"list": 1, "search": 1, "create": 1, "show": 1, "destroy": 1, "manage": 1})
SPEED = 20


class Watch(StateWatcher):
    """When the replacement (an id not in ``known``) appeared, ran, and first answered /health 200."""

    interval = 0.05

    def __init__(self, sim, known):
        super().__init__(sim, LIVE)
        self.known = set(known)
        self.new_id = self.t_seen = self.t_running = self.t_health = None

    def done(self):
        return self.t_health is not None

    def sample(self, rows, now):
        for r in rows:
            if r["id"] in self.known or not LIVE(r):
                continue
            if self.new_id is None:
                self.new_id, self.t_seen = r["id"], now
            if r["id"] == self.new_id:
                if r.get("actual_status") == "running" and self.t_running is None:
                    self.t_running = now
                url = health_url(r)
                if self.t_running and url and http_status(url, timeout=1) == 200:
                    self.t_health = time.time()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv if argv is not None else [])
    images.ensure_images()
    sim = launch(hosts="docker", speed=SPEED, api_key="bench-" + "ef56" * 6)
    tmp = tempfile.mkdtemp(prefix="bench-replace-")
    env = dict(sim.env, HOME=os.path.join(tmp, "home"), VAST_AUDIT_LOG=os.path.join(tmp, "audit.jsonl"),
               DOCKER_HOST=os.environ.get("DOCKER_HOST", images.DEFAULT_DOCKER_HOST))
    os.makedirs(env["HOME"])

    def keep_serving():
        return run_playbook(os.path.join(PLAYBOOKS, "keep_serving.yml"), env=env, timeout=900, json_output=False,
                            extra_vars=dict(COMMON, keep_serving_services=[SERVICE]))

    rounds = []
    try:
        res = keep_serving()
        if res.rc != 0:
            raise RuntimeError("keep_serving.yml (first rent) failed:\n" + res.stdout[-3000:])
        for n in range(a.rounds):
            rows = sim.state()["instances"]
            old = [r for r in rows if LIVE(r) and r["label"] == "ks"][0]["id"]
            sim.ctl("POST", "instances/%d/preempt" % old)
            sim.wait_status(old, "stopped", timeout=10)
            sim.clear_requests()
            w = Watch(sim, [r["id"] for r in rows])
            w.start()
            t0 = time.time()
            res = keep_serving()
            t1 = time.time()
            w.finish()
            log = sim.requests()
            if res.rc != 0:
                raise RuntimeError("keep_serving.yml (replacement) failed:\n" + res.stdout[-3000:])
            now = [r for r in sim.state()["instances"] if LIVE(r) and r["label"] == "ks"]
            assert len(now) == 1 and now[0]["id"] == w.new_id, (now, w.new_id)
            t_create = next(e["t"] for e in log if e["endpoint"] == "create")
            calls = Counter(e["endpoint"] for e in log)
            r = dict(total=t1 - t0, boot=w.t_running - t_create, load=w.t_health - w.t_running,
                     boot_load=w.t_health - t_create, before_create=t_create - t0,
                     after_health=t1 - w.t_health, calls=calls, n_calls=sum(calls.values()))
            r["overhead"] = r["total"] - r["boot_load"]
            rounds.append(r)
            print("round %d: total %.1f s = boot+load %.1f s (boot %.1f, load %.1f) + overhead %.1f s "
                  "(before the create %.1f s, after health %.1f s); %d API calls" % (
                      n + 1, r["total"], r["boot_load"], r["boot"], r["load"], r["overhead"], r["before_create"],
                      r["after_health"], r["n_calls"]), flush=True)
    finally:
        sim.destroy_all()
        sim.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    med = lambda k: statistics.median(r[k] for r in rounds)  # noqa: E731
    print("\npreemption -> healthy replacement, one keep_serving.yml run (median of %d; simulator speed %dx)" % (
        len(rounds), SPEED))
    for k, text in (("total", "total (playbook wall time)"), ("boot_load", "boot + model load (excluded)"),
                    ("boot", "  create -> running (sim provisioning + pull)"),
                    ("load", "  running -> /health 200 (stand-in load)"),
                    ("overhead", "overhead = total - boot+load"), ("before_create", "  start -> create request"),
                    ("after_health", "  /health 200 -> playbook exit (incl. poll wait)")):
        print("  %-48s %6.1f s" % (text, med(k)))
    eps = sorted(set().union(*(r["calls"] for r in rounds)) | set(MINIMUM))
    print("\n  %-10s %8s %8s" % ("endpoint", "ours", "minimum"))
    for ep in eps:
        print("  %-10s %8s %8d" % (ep, "/".join(str(r["calls"][ep]) for r in rounds), MINIMUM[ep]))
    print("  %-10s %8s %8d" % ("total", "/".join(str(r["n_calls"]) for r in rounds), sum(MINIMUM.values())))
    summary.record("replace", "preempted -> healthy replacement: overhead (s)", med("overhead"), None, "s",
                   note="total %.1f s, boot+load %.1f s excluded" % (med("total"), med("boot_load")))
    summary.record("replace", "API calls for one replacement vs the fewest", med("n_calls"),
                   sum(MINIMUM.values()), "")
    return rounds


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
