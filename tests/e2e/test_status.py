"""status.yml, the reclaim rule and the power on/off audit events: real ansible-playbook runs
against the simulator (--hosts none: instances without a host, so SSH never answers and running
ones are reported unreachable; the docker-host scenario in test_playbooks.py covers the
countdowns of reachable hosts)."""
import json
import urllib.request

import pytest

from tests.helpers.ansible import REPO, run_playbook

PLAYBOOKS = REPO + "/playbooks"
FAST = {"idle_shutdown_probe_timeout": 2, "idle_shutdown_probe_delay": 1}


def api(sim, method, path, body=None):
    req = urllib.request.Request(sim.url + path, method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": "Bearer " + sim.api_key, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"{}")


def rent(sim, label, ports=()):
    offer = api(sim, "POST", "/api/v0/bundles/", {"limit": 1, "direct_port_count": {"gte": 8}})["offers"][0]
    body = {"client_id": "me", "image": "vastai/base-image", "disk": 10, "label": label, "runtype": "ssh_direct"}
    if ports:
        body["env"] = dict(("-p %d:%d" % (p, p), "1") for p in ports)
    iid = api(sim, "PUT", f"/api/v0/asks/{offer['id']}/", body)["new_contract"]
    sim.settle(iid, "running", seconds=600)
    return iid


def stop(sim, iid):
    api(sim, "PUT", f"/api/v0/instances/{iid}/", {"state": "stopped"})
    sim.settle(iid, "stopped", seconds=120)


def play(sim, name, tmp_path, extra=None, check=False, inventory=True):
    inv = tmp_path / "status.vast.yml"
    inv.write_text("plugin: llmops.vastai.vast\nstatuses: [running]\n")
    # USER names the actor; remote_tmp would otherwise expand "~" for that (absent) user and land
    # in a literal ./~alice in the playbook directory
    env = dict(sim.env, VAST_AUDIT_LOG=str(tmp_path / "audit.jsonl"), USER="alice",
               ANSIBLE_REMOTE_TMP=str(tmp_path / "remote_tmp"))
    res = run_playbook(f"{PLAYBOOKS}/{name}.yml", extra_vars=dict(FAST, **(extra or {})), env=env, check=check,
                       inventory=str(inv) if inventory else None, json_output=False, timeout=600)
    assert sim.api_key not in res.stdout
    return res


@pytest.fixture
def sim(vastsim_factory):
    return vastsim_factory(speed=1)


def events(tmp_path):
    """The playbooks' own events (the modules write theirs to the same trail)."""
    path = tmp_path / "audit.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [e for e in rows if e.get("module") in ("power_on", "power_off", "idle_shutdown")]


def test_power_off_and_on_write_audit_events_with_actor_and_figures(sim, tmp_path):
    rent(sim, "st-power")
    res = play(sim, "power_off", tmp_path, {"instance_label": "st-power"}, inventory=False)
    assert res.rc == 0, res.stdout[-3000:]
    res = play(sim, "power_on", tmp_path, {"instance_label": "st-power", "wait_for_health": False}, inventory=False)
    assert res.rc == 0, res.stdout[-3000:]
    got = [(e["action"], e["label"], e["actor"]) for e in events(tmp_path)]
    assert got == [("power_off_requested", "st-power", "user alice"), ("power_off_complete", "st-power", "user alice"),
                   ("power_on_requested", "st-power", "user alice"), ("power_on_complete", "st-power", "user alice")]
    off = events(tmp_path)[1]
    assert off["module"] == "power_off" and off["figures"]["session_minutes"] is not None
    assert off["figures"]["session_cost"] is not None and off["price"] > 0
    # under AWX the actor is the job (AWX passes awx_job_id / awx_user_name as extra vars)
    res = play(sim, "power_off", tmp_path, {"instance_label": "st-power", "awx_job_id": 4242, "awx_user_name": "bob"},
               inventory=False)
    assert res.rc == 0
    assert events(tmp_path)[-1]["actor"] == "awx job 4242 (bob)"


def test_power_on_health_timeout_event(sim, tmp_path):
    iid = rent(sim, "st-health", ports=[80])
    stop(sim, iid)
    res = play(sim, "power_on", tmp_path, {"instance_label": "st-health", "health_timeout": 4, "health_delay": 2},
               inventory=False)
    assert res.rc != 0 and "did not answer 200" in res.stdout
    assert [e["action"] for e in events(tmp_path)][-2:] == ["power_on_requested", "power_on_health_timeout"]


def test_status_lists_running_and_stopped_with_storage_burn_and_events(sim, tmp_path):
    rent(sim, "st-run")
    old = rent(sim, "st-old")
    kept = rent(sim, "keep-me")
    for iid in (old, kept):
        stop(sim, iid)
    sim.advance(30 * 3600)  # stopped for 30 h of API time
    out = tmp_path / "status.json"
    res = play(sim, "status", tmp_path, {"status_json": str(out), "idle_shutdown_reclaim_after_hours": 24,
                                         "idle_shutdown_protected_prefixes": ["keep-"]})
    assert res.rc == 0, res.stdout[-4000:]
    data = json.loads(out.read_text())
    rows = {r["label"]: r for r in data["instances"]}
    assert rows["st-run"]["status"] == "running" and rows["st-run"]["idle_reason"] == "unreachable"
    assert rows["st-run"]["dph"] > 0 and rows["st-run"]["session_cost"] > 0
    assert rows["st-run"]["idle_when"].startswith("not while")
    assert rows["st-old"]["storage_per_hour"] > 0
    assert rows["st-old"]["storage_per_month"] == pytest.approx(rows["st-old"]["storage_per_hour"] * 720, abs=0.01)
    assert rows["st-old"]["reclaim"]["action"] == "destroy"
    assert rows["keep-me"]["reclaim"]["reason"] == "protected"
    assert "st-old" in res.stdout and "reclaim: stopped for more than 24 h" in res.stdout
    # nothing changed: status is read-only
    assert {i["label"]: i["actual_status"] for i in sim.state()["instances"]} == {
        "st-run": "running", "st-old": "stopped", "keep-me": "stopped"}


def test_reclaim_destroys_only_unprotected_instances_stopped_long_enough(sim, tmp_path):
    rent(sim, "rc-run")
    old, recent, kept = rent(sim, "rc-old"), rent(sim, "rc-recent"), rent(sim, "keep-rc")
    for iid in (old, kept):
        stop(sim, iid)
    sim.advance(30 * 3600)
    stop(sim, recent)  # stopped just now
    rule = {"idle_shutdown_reclaim_after_hours": 24, "idle_shutdown_protected_labels": ["keep-rc"]}
    res = play(sim, "idle_shutdown", tmp_path, rule, check=True)
    assert res.rc == 0, res.stdout[-4000:]
    assert "rc-old (id %d): DESTROY" % old in res.stdout
    assert "rc-recent (id %d): KEEP - GPU ran" % recent in res.stdout
    assert "keep-rc (id %d): KEEP - label is protected" % kept in res.stdout
    assert all(i["actual_status"] != "destroyed" for i in sim.state()["instances"])
    res = play(sim, "idle_shutdown", tmp_path, rule)
    assert res.rc == 0, res.stdout[-4000:]
    status = {i["label"]: i["actual_status"] for i in sim.state()["instances"]}
    assert status == {"rc-run": "running", "rc-old": "destroyed", "rc-recent": "stopped", "keep-rc": "stopped"}
    rec = [e for e in events(tmp_path) if e["action"].startswith("reclaim")]
    assert [(e["action"], e["label"]) for e in rec] == [("reclaim", "rc-old"), ("reclaim_complete", "rc-old")]
    assert rec[0]["figures"]["storage_per_month"] > 0
