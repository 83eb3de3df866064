"""Simulator throughput: POST /bundles/ over 10,000 offers and a 1,000-instance v1 listing.

Prints figures only (no assertions): run `.venv/bin/python -m tests.bench.bench_vastsim`.
"""
import concurrent.futures
import json
import os
import statistics
import sys
import time

import requests

from tests.helpers.vastsim import start_vastsim

QUERIES = {
    "cli default + gpu/price": {"verified": {"eq": True}, "external": {"eq": False}, "rentable": {"eq": True},
                                "gpu_name": {"in": ["RTX 4090", "RTX 5090", "L40S"]}, "num_gpus": {"eq": "1"},
                                "dph_total": {"lte": "1.5"}, "order": [["dph_total", "asc"]], "limit": 64,
                                "type": "on-demand", "allocated_storage": 20},
    "narrow (H100x8, US)": {"gpu_name": {"eq": "H100_SXM"}, "num_gpus": {"eq": 8}, "geolocation": {"in": ["US"]},
                            "order": [["score", "desc"]], "limit": 10},
    "unfiltered, default order": {"limit": 64},
}


def _run(fn, n, clients):
    """Run fn(session) n times over `clients` threads; returns (req/s, p50 ms, p95 ms)."""
    lat = []

    def worker(count):
        s = requests.Session()
        out = []
        for _ in range(count):
            t = time.perf_counter()
            fn(s)
            out.append(time.perf_counter() - t)
        return out

    per = [n // clients + (1 if i < n % clients else 0) for i in range(clients)]
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for chunk in pool.map(worker, per):
            lat.extend(chunk)
    wall = time.perf_counter() - t0
    lat.sort()
    return n / wall, statistics.median(lat) * 1000, lat[int(len(lat) * 0.95) - 1] * 1000


def handler_cpu():
    """CPU ms per call of the simulator's own work, in-process (no HTTP, no client): the part
    that does not depend on how loaded the machine is."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
    from vastsimlib import api, control, offers
    from vastsimlib.state import Sim

    sim = Sim(n_offers=10000)
    out = []
    for name, q in QUERIES.items():
        offers.search(sim.available_offers(), q, sim.index)
        t = time.process_time()
        for _ in range(20):
            json.dumps({"offers": offers.search(sim.available_offers(), q, sim.index)})
        out.append((f"search 10k offers: {name}", (time.process_time() - t) / 20 * 1000))
    control._bulk(sim, {"count": 1000})

    class Req:
        def __init__(self, query):
            self.sim, self.query, self.base_url, self.instance_scope = sim, query, "", None

        def qjson(self, name, default=None):
            return json.loads(self.query[name]) if name in self.query else default

    for label, query, bump in (("v1 list page, 1000 inst, after a change", {"limit": "25"}, True),
                               ("v1 list next page, 1000 inst (cached)", {"limit": "25"}, False)):
        t = time.process_time()
        for _ in range(20):
            if bump:
                sim.invalidate_caches()
            sim.tick()
            json.dumps(api.list_v1(Req(query))[1])
        out.append((label, (time.process_time() - t) / 20 * 1000))
    return out


def main():
    rows = []
    with start_vastsim(offers=10000, speed=1) as sim:
        hdr = {"Authorization": f"Bearer {sim.api_key}"}
        for name, q in QUERIES.items():
            body = json.dumps(q)

            def search(s, body=body):
                r = s.post(sim.url + "/api/v0/bundles/", data=body, headers=hdr, timeout=60)
                r.raise_for_status()
            search(requests)   # warm-up
            for clients in (1, 4):
                n = 60 if clients == 1 else 120
                rows.append((f"POST /bundles/ 10k offers: {name}", clients, *_run(search, n, clients)))

        t = time.perf_counter()
        sim.bulk(1000, label_prefix="bench-")
        seed_s = time.perf_counter() - t

        def page(s):
            r = s.get(sim.url + "/api/v1/instances/", headers=hdr, params={"limit": "25"}, timeout=60)
            r.raise_for_status()

        def filtered(s):
            r = s.get(sim.url + "/api/v1/instances/", headers=hdr, timeout=60,
                      params={"select_filters": json.dumps({"label": {"eq": "bench-500"}})})
            r.raise_for_status()

        def full_listing(s):
            token, pages = None, 0
            while True:
                params = {"limit": "25"}
                if token:
                    params["after_token"] = token
                r = s.get(sim.url + "/api/v1/instances/", headers=hdr, params=params, timeout=60)
                r.raise_for_status()
                token = r.json()["next_token"]
                pages += 1
                if not token:
                    return pages

        for clients in (1, 4):
            rows.append(("GET /api/v1/instances/ page (1000 inst)", clients, *_run(page, 60 * clients, clients)))
        rows.append(("GET v1 list, label eq filter (1000 inst)", 4, *_run(filtered, 120, 4)))
        for clients in (1, 4):
            r = _run(full_listing, 2 * clients, clients)
            rows.append(("full 40-page listing (1000 inst)", clients, *r))

    with start_vastsim(offers=400, speed=1, latency=100) as sim:
        hdr = {"Authorization": f"Bearer {sim.api_key}"}

        def user(s):
            s.get(sim.url + "/api/v0/users/current", headers=hdr, timeout=60).raise_for_status()
        for clients in (1, 8):
            rows.append(("GET /users/current, --latency 100", clients, *_run(user, 8 * clients, clients)))

    print(f"{'workload':48} {'clients':>7} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8}")
    for name, clients, rps, p50, p95 in rows:
        print(f"{name:48} {clients:>7} {rps:>9.1f} {p50:>8.1f} {p95:>8.1f}")
    print(f"(a full listing row counts whole 40-page listings, not requests; seeding 1000 instances took {seed_s:.2f} s)")
    print()
    print(f"{'in-process handler work (no HTTP)':60} {'CPU ms':>8}")
    for name, ms in handler_cpu():
        print(f"{name:60} {ms:>8.2f}")
    try:
        print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    except OSError:
        pass


if __name__ == "__main__":
    main()
