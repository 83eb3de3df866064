"""What a forgotten instance costs over a weekend with idle shutdown on vs off.

Prints figures only (no assertions): `.venv/bin/python -m tests.bench.bench_cost`
(or `make bench BENCH=cost`).

Scenario per profile (playbooks/vars/profiles.yml: offer search with the profile's filters
through the collection's own query builder and client): an instance is rented Friday 16:00,
serves requests until 18:00 and is then forgotten until Monday 08:00 (62 h).

- idle shutdown ON: the AWX schedule runs playbooks/idle_shutdown.yml every 5 minutes with
  idle_minutes=30. The stop time is the first schedule tick at which the playbook's own decision
  filter (llmops.vastai.idle_decision, fed the observation the playbook gathers on the host:
  reachable, nothing in flight, last request at 18:00) says `stop`; at that simulated time the
  instance is stopped through the API (as the playbook's vast_instance task does) and storage
  keeps billing. Medians over 5 schedule phases. A `destroy` action variant is shown too.
- idle shutdown OFF: the instance runs all weekend.

Dollars are read from the simulator's ledger (/_sim/ledger) after driving its clock
(/_sim/clock/advance). The idle_shutdown playbook itself is NOT run here: its first play
reads nginx's log and vLLM's metrics over SSH, which needs the docker-backed simulator; the
output says so.
"""
import os
import statistics
import sys

from tests.bench import summary
from tests.helpers.ansible import REPO
from tests.helpers.vastsim import start_vastsim

sys.path.insert(0, os.path.join(REPO, ".collections"))

from ansible_collections.llmops.vastai.plugins.filter.idle import idle_decision  # noqa: E402
from ansible_collections.llmops.vastai.plugins.module_utils.client import VastClient  # noqa: E402
from ansible_collections.llmops.vastai.plugins.module_utils.query import build_query, sort_offers  # noqa: E402

IDLE_MINUTES = 30
SCHEDULE_S = 300
USE_S = 2 * 3600            # Friday 16:00 -> 18:00 in use
FORGOTTEN_S = 62 * 3600     # Friday 18:00 -> Monday 08:00
PHASES = [0, 60, 150, 210, 290]  # where the 5-minute AWX ticks fall relative to the rental
PROFILES = ("budget", "high_performance")


def profiles():
    import yaml
    with open(os.path.join(REPO, "playbooks", "vars", "profiles.yml")) as f:
        return yaml.safe_load(f)["vast_profiles"]


def first_stop_tick(t0, t_last, phase):
    """Simulated time of the first schedule tick at which idle_decision says stop."""
    policy = {"idle_minutes": IDLE_MINUTES, "boot_grace_minutes": 20, "ttl_hours": 0, "unreachable_limit": 0,
              "unreachable_min_age_minutes": 60, "stop_when_engine_down": True}
    tick = t0 + phase
    while tick < t_last + FORGOTTEN_S:
        if tick > t_last:  # while in use the playbook sees requests; only the idle part matters
            obs = {"reachable": True, "failed_probes": 0, "host_now": tick, "last_request_start": t_last - 30,
                   "last_request_end": t_last, "stack_started_at": t0 + 60, "requests_running": 0,
                   "requests_waiting": 0, "api_now": tick, "created_at": t0, "session_started_at": t0}
            d = idle_decision(obs, policy)
            if d["action"] == "stop":
                return tick, d
        tick += SCHEDULE_S
    return None, None


def one(sim, client, profile, name, phase, mode):
    """Rent, use, forget; returns (dph, $ spent while forgotten, stop delay after the threshold)."""
    q = build_query({"gpu_names": profile["gpu_names"], "min_num_gpus": profile["num_gpus"],
                     "min_gpu_ram_gb": profile["min_gpu_ram_gb"], "max_dph": profile["max_dph"],
                     "verified": True, "order_by": "price", "limit": 5}, allocated_storage=profile["disk_gb"])
    offers = sort_offers(client.search_offers(q), "price")
    if not offers:
        q.pop("dph_total", None)  # profile price cap too tight for this catalogue: cheapest of the GPUs
        offers = sort_offers(client.search_offers(q), "price")
    offer = offers[0]
    label = "cost-%s-%s-%d" % (name, mode, phase)
    new = client.create_instance(offer["id"], {"image": "vllm/vllm-openai:v0.33.0", "disk": float(profile["disk_gb"]),
                                               "label": label, "runtype": "ssh_direc ssh_proxy",
                                               "target_state": "running", "cancel_unavail": True})
    iid = new["new_contract"]
    t0 = sim.now()
    sim.advance(USE_S)
    t_last = sim.now()
    before = sim.ledger()["instances"][str(iid)]["total"]
    delay = None
    if mode == "off":
        sim.advance(FORGOTTEN_S)
    else:
        tick, _ = first_stop_tick(t0, t_last, phase)
        sim.advance(tick - sim.now())
        if mode == "on-stop":
            client.set_state(iid, "stopped")
        else:
            client.destroy(iid)
        delay = tick - (t_last + IDLE_MINUTES * 60)
        sim.advance(t_last + FORGOTTEN_S - sim.now())
    row = sim.ledger()["instances"][str(iid)]
    if not row["destroyed"]:
        client.destroy(iid)
    return float(offer.get("dph_total") or 0), row["total"] - before, delay, row


def main():
    profs = profiles()
    rows = []
    # speed 1: the clock only moves when driven (a run takes seconds, the weekend is jumped)
    with start_vastsim(hosts="none", speed=1, offers=800, seed=3) as sim:
        client = VastClient(sim.api_key, api_url=sim.url)
        sim.set_credit(10 ** 7)  # a forgotten weekend must not be cut short by an empty account
        for name in PROFILES:
            p = profs[name]
            res = {}
            for mode in ("off", "on-stop", "on-destroy"):
                runs = [one(sim, client, p, name, ph, mode) for ph in (PHASES if mode != "off" else [0])]
                res[mode] = dict(dph=runs[0][0], cost=statistics.median(r[1] for r in runs),
                                 delay=statistics.median(r[2] for r in runs) if mode != "off" else None,
                                 delay_max=max(r[2] for r in runs) if mode != "off" else None,
                                 storage_dph=runs[0][3]["storage_dph"])
            rows.append((name, res))
    print("forgotten instance: in use Fri 16:00-18:00, forgotten until Mon 08:00 (%d h); idle_minutes=%d, "
          "AWX schedule every %d min" % (FORGOTTEN_S // 3600, IDLE_MINUTES, SCHEDULE_S // 60))
    print("method: stop time = first 5-min tick where llmops.vastai.idle_decision (the idle_shutdown.yml "
          "filter) says stop, over %d schedule phases (median); dollars from the simulator's ledger with its "
          "clock driven. The idle_shutdown playbook itself was not run (it needs SSH to the host: "
          "docker-backed simulator)." % len(PHASES))
    print("%-17s %8s %10s %12s %12s %12s %8s %14s" % ("profile", "$/h", "storage$/h", "off $", "on(stop) $",
                                                      "on(destroy) $", "saved", "stop after thr"))
    for name, r in rows:
        off, on, de = r["off"]["cost"], r["on-stop"]["cost"], r["on-destroy"]["cost"]
        print("%-17s %8.4f %10.4f %12.2f %12.2f %12.2f %7.1f%% %9.0f s (max %.0f)" % (
            name, r["off"]["dph"], r["off"]["storage_dph"], off, on, de, 100 * (off - on) / off if off else 0,
            r["on-stop"]["delay"], r["on-stop"]["delay_max"]))
        summary.record("cost", "%s: forgotten 62 h, idle shutdown on (stop) vs off" % name, on, off, "$",
                       note="on (destroy): $%.2f; GPU $%.4f/h, storage $%.4f/h" % (de, r["off"]["dph"],
                                                                                r["off"]["storage_dph"]))
        summary.record("cost", "%s: idle threshold -> stop, 5-min schedule (s)" % name, r["on-stop"]["delay"],
                       None, "s", note="median of %d schedule phases, max %.0f s (decision filter + ledger)"
                       % (len(PHASES), r["on-stop"]["delay_max"]))
    print("off: GPU + storage for %d h; on(stop): GPU until the stop, storage all weekend; on(destroy): "
          "all charges end at the stop" % (FORGOTTEN_S // 3600))


if __name__ == "__main__":
    main()
