"""Inventory benchmark: 1,000 instances behind a simulator with 150 ms of latency per request.

Side by side in one run (wall time of the whole command, median of a few runs):
  - the official CLI, `vastai show instances --raw` (25-row pages, one after another);
  - `ansible-inventory --list` with llmops.vastai.vast, cold (cache empty) and warm (cache hit);
  - the same plugin with parallel_requests: 1 (what the parallel id-range listing buys);
  - `ansible-inventory --list` on a static YAML file holding the same hosts, groups and vars.
API calls are counted from the simulator's request log. Figures only, no timed assertions.

    .venv/bin/python -m tests.bench.bench_inventory [--count N] [--latency MS] [--runs N]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import yaml

from tests.bench import summary
from tests.helpers.vastsim import start_vastsim

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(REPO, ".venv", "bin")


def _plain(value):
    # ansible 2.19 prints API strings as {"__ansible_unsafe": ...}; the static file gets plain values
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class Bench:
    def __init__(self, sim, work):
        self.sim = sim
        self.work = work
        coll = os.path.join(work, "collections", "ansible_collections", "llmops")
        os.makedirs(coll)
        os.symlink(REPO, os.path.join(coll, "vastai"))
        self.home = os.path.join(work, "home")  # the CLI keeps its role/gpu-name caches here
        os.makedirs(self.home)
        self.env = dict(
            os.environ,
            PATH=BIN + os.pathsep + os.environ.get("PATH", ""),
            HOME=self.home,
            ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
            ANSIBLE_COLLECTIONS_PATH=os.path.join(work, "collections"),
            ANSIBLE_LOCAL_TEMP=os.path.join(work, "ansible-tmp"),
            ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="1",
            VAST_URL=sim.url,
            VAST_API_KEY=sim.api_key,
        )
        self.cache_dir = os.path.join(work, "cache")

    def run(self, argv):
        """(seconds, api calls, stdout) of one command."""
        self.sim.clear_requests()
        started = time.monotonic()
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, cwd=self.work, timeout=600)
        took = time.monotonic() - started
        if proc.returncode != 0:
            raise RuntimeError("%s failed (%d): %s" % (argv[0], proc.returncode, proc.stderr[-2000:]))
        calls = len(self.sim.requests())
        return took, calls, proc.stdout

    def config(self, name, **options):
        path = os.path.join(self.work, name)
        conf = {"plugin": "llmops.vastai.vast", "cache": True, "cache_plugin": "ansible.builtin.jsonfile",
                "cache_connection": self.cache_dir, "cache_timeout": 3600}
        conf.update(options)
        with open(path, "w") as f:
            yaml.safe_dump(conf, f)
        return path

    def inventory(self, source):
        return [os.path.join(BIN, "ansible-inventory"), "-i", source, "--list"]

    def clear_cache(self):
        shutil.rmtree(self.cache_dir, ignore_errors=True)


def summarize(label, samples):
    times = [t for t, _ in samples]
    return {"label": label, "median": statistics.median(times), "min": min(times), "max": max(times),
            "calls": statistics.median([n for _, n in samples]), "runs": len(samples)}


def interleaved(variants, runs):
    """Run every variant once per round, round after round, after one uncounted warm-up round
    (page cache, .pyc, the CLI's role cache). Interleaving spreads the machine's load changes
    over all variants instead of penalising whichever ran during a busy minute."""
    samples = {label: [] for label, _, _ in variants}
    for round_no in range(runs + 1):
        for label, fn, check in variants:
            took, calls, out = fn()
            if check:
                check(out)
            if round_no:
                samples[label].append((took, calls))
    return [summarize(label, samples[label]) for label, _, _ in variants]


def static_inventory(listing, path, lean=False):
    """A YAML inventory with the same hosts and groups as a --list output, and either the same
    host variables or (lean) only the connection ones."""
    data = _plain(json.loads(listing))
    hostvars = data.pop("_meta")["hostvars"]
    if lean:
        hostvars = {h: {k: v for k, v in hv.items() if k.startswith("ansible_")} for h, hv in hostvars.items()}
    children = {}
    for group, body in data.items():
        if group in ("all", "ungrouped"):
            continue
        children[group] = {"hosts": {h: None for h in body.get("hosts", [])}}
    doc = {"all": {"hosts": hostvars, "children": children}}
    with open(path, "w") as f:
        yaml.safe_dump(doc, f, default_flow_style=False, sort_keys=False)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--latency", type=int, default=150)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--static-full-runs", type=int, default=1,
                        help="runs of the static file with every host variable (slow in ansible 2.19)")
    args = parser.parse_args(argv if argv is not None else [])

    work = tempfile.mkdtemp(prefix="bench-inventory-")
    load_before = "%.1f" % os.getloadavg()[0]  # figures are wall times: say how busy the machine was
    try:
        # real-time clock and plenty of credit: 1,000 rentals must not run the account dry mid-run
        with start_vastsim(latency=args.latency, speed=1, offers=max(2000, 2 * args.count)) as sim:
            sim.set_credit(10 ** 9)
            sim.bulk(args.count, label_prefix="bench-", status="running")
            b = Bench(sim, work)

            def count_cli(out):
                assert len(json.loads(out)) == args.count, "CLI listed a different number of instances"

            def count_inv(out):
                n = len(json.loads(out)["_meta"]["hostvars"])
                assert n == args.count, "inventory listed %d hosts, not %d" % (n, args.count)

            parallel_conf = b.config("par.vast.yml")
            seq_conf = b.config("seq.vast.yml", parallel_requests=1)

            def cold(conf):
                b.clear_cache()
                return b.run(b.inventory(conf))

            b.clear_cache()
            _, _, listing = b.run(b.inventory(parallel_conf))  # fills the cache, gives the hosts
            count_inv(listing)
            full_path = static_inventory(listing, os.path.join(work, "static-full.yml"))
            lean_path = static_inventory(listing, os.path.join(work, "static-lean.yml"), lean=True)
            nvars = statistics.median(len(hv) for hv in json.loads(listing)["_meta"]["hostvars"].values())

            def warm_run():
                if not os.path.isdir(b.cache_dir):
                    b.run(b.inventory(parallel_conf))  # refill after a cold run emptied it
                return b.run(b.inventory(parallel_conf))

            cli_argv = [os.path.join(BIN, "vastai"), "show", "instances", "--raw"]
            cli, warm, lean, cold_par = interleaved([
                ("vastai show instances --raw", lambda: b.run(cli_argv), count_cli),
                ("ansible-inventory warm (cache hit)", warm_run, count_inv),
                ("static YAML, same hosts/groups, ansible_* only", lambda: b.run(b.inventory(lean_path)), count_inv),
                ("ansible-inventory cold (parallel_requests 8)", lambda: cold(parallel_conf), count_inv),
            ], args.runs)
            (cold_seq,) = interleaved([("ansible-inventory cold (parallel_requests 1)", lambda: cold(seq_conf),
                                        count_inv)], 1)
            (static,) = [summarize("static YAML, same hosts/groups/vars",
                                   [b.run(b.inventory(full_path))[:2] for _ in range(args.static_full_runs)])]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print("%d instances (%d host variables each), simulator latency %d ms per request; wall time in s, "
          "median of %d interleaved runs (%d for the full static file); load average before: %s"
          % (args.count, nvars, args.latency, args.runs, args.static_full_runs, load_before))
    print("%-48s %8s %8s %8s %9s" % ("", "median", "min", "max", "API calls"))
    for row in (cli, cold_par, cold_seq, warm, static, lean):
        print("%-48s %8.2f %8.2f %8.2f %9d" % (row["label"], row["median"], row["min"], row["max"], row["calls"]))
    ratio_cold = cold_par["median"] / cli["median"]
    ratio_warm = warm["median"] / static["median"]
    print("cold / CLI                  = %.2f  (target <= 0.50: %s)" % (ratio_cold, "met" if ratio_cold <= 0.5 else "NOT met"))
    print("warm / static (same vars)   = %.2f  (target <= 1.20: %s)" % (ratio_warm, "met" if ratio_warm <= 1.2 else "NOT met"))
    print("warm / static (ansible_* only) = %.2f  (stricter, information)" % (warm["median"] / lean["median"]))
    print("warm API calls              = %d     (target 0: %s)" % (warm["calls"], "met" if warm["calls"] == 0 else "NOT met"))
    print("cold parallel / cold sequential = %.2f" % (cold_par["median"] / cold_seq["median"]))
    print("same ratios from the fastest run of each (least disturbed by other load): cold / CLI = %.2f, "
          "warm / static same vars = %.2f, warm / static ansible_* only = %.2f"
          % (cold_par["min"] / cli["min"], warm["min"] / static["min"], warm["min"] / lean["min"]))
    n = "%d hosts, %d ms/request, median of %d" % (args.count, args.latency, args.runs)
    summary.record("inventory", "cold --list vs `vastai show instances --raw` (s)", cold_par["median"], cli["median"],
                   "s", ("<= 0.50", lambda r: r <= 0.5), note=n)
    summary.record("inventory", "warm (cache) vs static YAML, same vars (s)", warm["median"], static["median"], "s",
                   ("<= 1.20", lambda r: r <= 1.2))
    summary.record("inventory", "warm (cache) vs static YAML, ansible_* only (s)", warm["median"], lean["median"], "s")
    summary.record("inventory", "API calls of a warm run", warm["calls"], None, "", ("== 0", lambda v: v == 0))
    summary.record("inventory", "cold parallel (8) vs sequential listing (s)", cold_par["median"], cold_seq["median"], "s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
