"""End to end: an endpoint that comes back by itself (issue 16), on container hosts.

The simulator runs with --hosts docker: each container-mode instance is a real container of the
engine stand-in, /health and /v1 on a published 127.0.0.1 port. In order:
  keep_serving rents the missing replicas ks-1, ks-2 (interruptible), both healthy
  power_off stops ks-2 (a stop of ours, in the audit trail); ks-1 is preempted (outbid)
  keep_serving --check: plans the replacement, changes nothing
  keep_serving: ks-1 replaced (same label, same token, old destroyed), ks-2 left stopped
  ks-1 preempted again, two keep_serving runs overlap: one replacement rented, nothing orphaned
  ks-2's GPU is taken while stopped: power_on on_unavailable=replace ends healthy on a new instance
"""
import threading

import pytest

from tests.e2e.test_playbooks import Env, _endpoint, _http, images, vastsim_helper

pytestmark = [pytest.mark.timeout(1800)]

SERVICE = {"name": "ks", "profile": "budget", "replicas": 2, "interruptible": True}
COMMON = {"vast_mode": "container", "wait_timeout": 300, "health_timeout": 300, "max_instances": 6}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    images.ensure_images()
    tmp = tmp_path_factory.mktemp("keep")
    with vastsim_helper.start_vastsim(hosts="docker", speed=20, api_key="ks-" + "ab12" * 6) as sim:
        yield Env(sim, tmp)
        sim.destroy_all()


def live(env):
    return {r["id"]: r for r in env.sim.state()["instances"] if r["actual_status"] != "destroyed"}


def by_label(env):
    out = {}
    for r in live(env).values():
        out.setdefault(r["label"], []).append(r)
    return out


def token(env, label):
    return (env.home / ".config" / "llmops-vastai" / "tokens" / f"{label}.token").read_text().strip()


def serves(env, row, tok):
    base = _endpoint(row, 8000)
    return _http(base + "/health")[0] == 200 and _http(base + "/v1/models", token=tok)[0] == 200


def keep_serving(env, check=False, expect_rc=0, **extra):
    return env.play("keep_serving", dict(COMMON, keep_serving_services=[SERVICE], **extra), check=check,
                    expect_rc=expect_rc)


def audit_actions(env):
    import json
    return [json.loads(line) for line in env.audit.read_text().splitlines() if line.strip()]


def test_missing_replicas_are_rented_and_healthy(env):
    keep_serving(env)
    labels = by_label(env)
    assert sorted(labels) == ["ks-1", "ks-2"] and all(len(v) == 1 for v in labels.values())
    for label in ("ks-1", "ks-2"):
        row = labels[label][0]
        assert row["is_bid"] is True
        assert serves(env, row, token(env, label))
    # a second run has nothing to do
    r, out = keep_serving(env)
    assert "ks-1: ok" in out and "ks-2: ok" in out
    assert len(live(env)) == 2


def test_preempted_replica_is_replaced_and_a_stopped_one_left(env):
    labels = by_label(env)
    old1, old2 = labels["ks-1"][0], labels["ks-2"][0]
    env.play("power_off", {"instance_label": "ks-2"})
    env.sim.ctl("POST", f"instances/{old1['id']}/preempt")
    env.sim.settle(old1["id"], "stopped")

    before = env.sim.state()["instances"]
    r, out = keep_serving(env, check=True)
    assert "ks-1: replace" in out and "preempted" in out
    assert "ks-2: leave" in out and "power_off" in out
    assert env.sim.state()["instances"] == before or len(live(env)) == 2  # nothing rented or changed
    assert {i["id"] for i in live(env).values()} == {old1["id"], old2["id"]}

    keep_serving(env)
    labels = by_label(env)
    assert sorted(labels) == ["ks-1", "ks-2"]
    new1 = labels["ks-1"][0]
    assert new1["id"] != old1["id"] and new1["actual_status"] == "running"
    assert env.sim.instance(old1["id"])["actual_status"] == "destroyed"  # replace_old: destroy
    assert serves(env, new1, token(env, "ks-1"))  # the clients' token still works
    assert labels["ks-2"][0]["id"] == old2["id"] and labels["ks-2"][0]["actual_status"] == "stopped"
    replaced = [e for e in audit_actions(env) if e["action"] == "replace"]
    assert replaced and replaced[-1]["instance_id"] == new1["id"] and "preempted" in replaced[-1]["detail"]


def test_two_overlapping_runs_rent_one_replacement(env):
    old1 = by_label(env)["ks-1"][0]
    env.sim.ctl("POST", f"instances/{old1['id']}/preempt")
    env.sim.settle(old1["id"], "stopped")
    env.sim.clear_requests()
    results = []

    def run():
        results.append(keep_serving(env, expect_rc=None))
    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    labels = by_label(env)
    assert sorted(labels) == ["ks-1", "ks-2"], labels.keys()  # no ks-1-replacement left behind
    assert len(labels["ks-1"]) == 1
    new1 = labels["ks-1"][0]
    assert serves(env, new1, token(env, "ks-1"))
    creates = [q for q in env.sim.requests() if q["endpoint"] == "create"]
    # each run may rent before seeing the other's; the race rule leaves one and the loser's is gone
    survivors = [i for i in env.sim.state()["instances"] if i["actual_status"] != "destroyed"]
    assert len(survivors) == 2 and len(creates) <= 2
    assert any(r[0].rc == 0 for r in results), [r[1][-3000:] for r in results]


def test_offline_host_is_replaced_after_its_grace(env):
    old1 = by_label(env)["ks-1"][0]
    env.sim.ctl("POST", f"instances/{old1['id']}/offline")
    r, out = keep_serving(env)
    assert "ks-1: watch" in out  # first seen now: the grace starts
    assert by_label(env)["ks-1"][0]["id"] == old1["id"]
    observed = [e for e in audit_actions(env) if e["action"] == "observed_offline"]
    assert observed and observed[-1]["instance_id"] == old1["id"]
    env.play("keep_serving", dict(COMMON, keep_serving_services=[dict(SERVICE, offline_grace_minutes=0.01)]))
    new1 = by_label(env)["ks-1"][0]
    assert new1["id"] != old1["id"] and serves(env, new1, token(env, "ks-1"))
    assert env.sim.instance(old1["id"])["actual_status"] == "destroyed"


def test_power_on_whose_gpu_was_taken_is_replaced(env):
    old2 = by_label(env)["ks-2"][0]
    env.sim.ctl("POST", f"instances/{old2['id']}/gpu_taken")
    r, out = env.play("power_on", dict(COMMON, instance_label="ks-2", on_unavailable="replace", start_timeout=5,
                                       vast_profile="budget", health_port=8000))
    labels = by_label(env)
    assert sorted(labels) == ["ks-1", "ks-2"]
    new2 = labels["ks-2"][0]
    assert new2["id"] != old2["id"] and new2["actual_status"] == "running"
    assert new2["offer_id"] != old2["offer_id"]
    assert env.sim.instance(old2["id"])["actual_status"] == "destroyed"
    assert serves(env, new2, token(env, "ks-2"))
    assert "ks-2 now is instance %d" % new2["id"] in out


def test_power_on_fail_cancels_the_start(env):
    # on_unavailable=fail: the start is cancelled, nothing rented, the failure names the instance
    row = by_label(env)["ks-2"][0]
    env.play("power_off", {"instance_label": "ks-2"})
    env.sim.settle(row["id"], "stopped")
    env.sim.ctl("POST", f"instances/{row['id']}/gpu_taken")
    r, out = env.play("power_on", dict(COMMON, instance_label="ks-2", on_unavailable="fail", start_timeout=3,
                                       health_port=8000), expect_rc=2)
    assert "start_timeout" in out and str(row["id"]) in out
    assert env.sim.instance(row["id"])["intended_status"] == "stopped"
    assert len(live(env)) == 2
