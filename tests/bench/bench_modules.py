"""Benchmark of the modules against the simulator: API calls per operation and time per call.

    .venv/bin/python -m tests.bench.bench_modules

Prints figures only (no assertions). For each operation:
- API calls counted from the simulator's request log (a no-op run should be 1 read),
- the module's own wall time, run directly (``python vast_instance.py args.json``, the way
  AnsiballZ runs it, without ansible-playbook's per-task overhead), median of N runs,
- the same operation as an ansible-playbook task (one run, includes Ansible's overhead).
Also the client's list_instances for 1,000 instances at 150 ms latency, sequential vs parallel.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from tests.bench import summary
from tests.helpers.ansible import REPO, ansible_env, run_playbook
from tests.helpers.vastsim import start_vastsim

COLL = os.path.join(REPO, ".collections")
MODULES = os.path.join(REPO, "plugins", "modules")
IMAGE = "vllm/vllm-openai:latest"
RUNS = int(os.environ.get("BENCH_RUNS", "5"))


def run_module(sim, module, margs):
    """Run a module file directly; returns (seconds, result dict)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"ANSIBLE_MODULE_ARGS": dict(margs, api_key=sim.api_key, api_url=sim.url)}, f)
        path = f.name
    env = dict(os.environ, PYTHONPATH=COLL)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, os.path.join(MODULES, module + ".py"), path], env=env,
                       capture_output=True, text=True, timeout=300)
    took = time.perf_counter() - t0
    os.unlink(path)
    try:
        out = json.loads(p.stdout)
    except ValueError:
        out = {"failed": True, "msg": p.stdout[-300:] + p.stderr[-300:]}
    return took, out


def calls_during(sim, fn):
    sim.clear_requests()
    result = fn()
    reqs = sim.requests()
    kinds = {}
    for r in reqs:
        kinds[r["endpoint"]] = kinds.get(r["endpoint"], 0) + 1
    return result, len(reqs), kinds


def playbook_seconds(sim, module, margs):
    pb = ("- hosts: localhost\n  gather_facts: false\n  tasks:\n    - name: t\n      llmops.vastai.%s: %s\n"
          % (module, json.dumps(margs)))
    res = run_playbook(pb, env=sim.env)
    return res.duration, res.rc


# The fewest API calls each operation can take, the baseline of the calls column: an idempotent
# no-op or a read is one list; destroy = find + DELETE; stop/start = find + PUT + one confirming
# read; a rental = find by label + offer search + PUT /asks/ + one read that sees it running;
# billing = credit + charges + invoices + the instances the charges belong to.
MINIMUM_CALLS = {"offer search": 1, "create + wait running": 4, "no-op (present, by label)": 1, "stop + wait": 3,
                 "no-op (stopped)": 1, "start + wait": 3, "instance_info (all)": 1, "billing_info (7 days)": 4,
                 "destroy": 2, "no-op (absent)": 1}


def bench_operations():
    if os.environ.get("BENCH_SKIP_OPS"):
        return
    rows = []
    with start_vastsim(speed=50) as sim:
        create = {"label": "bench", "state": "running", "image": IMAGE, "poll_interval": 0.2,
                  "offer_filters": {"gpu_names": ["RTX 3090"]}}
        ops = [
            ("offer search", "vast_offer_info", {"gpu_names": ["RTX 4090"], "limit": 10}, True),
            ("create + wait running", "vast_instance", create, False),
            ("no-op (present, by label)", "vast_instance", {"label": "bench", "state": "running"}, True),
            ("stop + wait", "vast_instance", {"label": "bench", "state": "stopped", "poll_interval": 0.2}, False),
            ("no-op (stopped)", "vast_instance", {"label": "bench", "state": "stopped"}, True),
            ("start + wait", "vast_instance", {"label": "bench", "state": "running", "poll_interval": 0.2}, False),
            ("instance_info (all)", "vast_instance_info", {}, True),
            ("billing_info (7 days)", "vast_billing_info", {}, True),
            ("destroy", "vast_instance", {"label": "bench", "state": "absent"}, False),
            ("no-op (absent)", "vast_instance", {"label": "bench", "state": "absent"}, True),
        ]
        for name, module, margs, repeatable in ops:
            (took, out), n, kinds = calls_during(sim, lambda: run_module(sim, module, margs))
            times = [took]
            if repeatable:
                for _ in range(RUNS - 1):
                    times.append(run_module(sim, module, margs)[0])
            pb_s, rc = playbook_seconds(sim, module, margs) if repeatable else (float("nan"), 0)
            rows.append((name, n, ",".join("%s:%d" % kv for kv in sorted(kinds.items())),
                         statistics.median(times), pb_s, "FAILED: " + out.get("msg", "") if out.get("failed") else ""))
    print("\nModules against the simulator (speed 50, no added latency); module time = direct run, "
          "median of %d where repeatable" % RUNS)
    print("%-28s %9s  %-34s %12s %14s" % ("operation", "API calls", "by endpoint", "module s", "playbook s"))
    for name, n, kinds, med, pb_s, err in rows:
        print("%-28s %9d  %-34s %12.3f %14.2f %s" % (name, n, kinds, med, pb_s, err))
        summary.record("modules", "API calls: %s" % name, n, MINIMUM_CALLS[name],
                       note=("baseline: the fewest calls each operation can take" if name == "offer search" else
                             "its wait polls every 0.2 s (speed 50)" if name == "create + wait running" else ""))


def bench_listing():
    sys.path.insert(0, COLL)
    from ansible_collections.llmops.vastai.plugins.module_utils.client import VastClient
    with start_vastsim(latency=150, offers=1500) as sim:
        sim.bulk(1000, label_prefix="bench-", status="running")
        client = VastClient(sim.api_key, sim.url)
        out = []
        for parallel in (1, 4, 8):
            client.calls = 0
            t0 = time.perf_counter()
            rows = client.list_instances(parallel=parallel)
            out.append((parallel, time.perf_counter() - t0, client.calls, len(rows)))
    base = out[0][1]
    print("\nlist_instances, 1,000 instances, 150 ms latency per request")
    print("%-10s %10s %10s %8s %12s" % ("parallel", "seconds", "requests", "rows", "vs parallel=1"))
    for parallel, s, calls, n in out:
        print("%-10d %10.2f %10d %8d %11.2fx" % (parallel, s, calls, n, s / base))
    summary.record("modules", "list_instances 1,000 rows: parallel 8 vs 1 (s)", out[-1][1], base, "s",
                   note="150 ms latency per request")


def main():
    ansible_env()  # fail early if the repo layout is not there
    print("load average at start: %.2f %.2f %.2f on %d CPUs (module times include Python start-up)"
          % (os.getloadavg() + (os.cpu_count(),)))
    bench_operations()
    bench_listing()


if __name__ == "__main__":
    main()
