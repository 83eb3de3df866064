"""Platform events (issue #16 item 3): another tenant takes a machine's GPUs, an interruptible
instance is outbid, a host goes offline — as /_sim/ controls and as fault-rule events, over HTTP.

Each test names the public source of the live behaviour; state.Sim.event names it beside the code.
"""
import json
import os
import sys

import pytest

from tests.helpers.vastsim import launch, start_vastsim

from .util import api, create, search, show

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "tools"))
from vastsimlib.faults import parse_spec  # noqa: E402


@pytest.fixture(scope="module")
def sim():
    s = launch(offers=1200)
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def _no_rules_left(sim):
    yield
    sim.clear_faults()


STATES = ("actual_status", "intended_status", "cur_state", "next_state")


def states(row):
    return tuple(row[k] for k in STATES)


def rent(sim, bid=True, label=None, settle=True):
    offer = search(sim, {"type": "bid" if bid else "on-demand", "limit": 1, "order": [["dph_total", "asc"]]})[0]
    body = {"label": label} if label else {}
    if bid:
        body["price"] = round(offer["min_bid"] * 1.2 + 0.001, 4)
    iid = create(sim, offer["id"], **body)["new_contract"]
    if settle:
        sim.settle(iid, "running")
    return iid, offer


def manage(sim, iid, state):
    r = api(sim, "PUT", f"/api/v0/instances/{iid}/", body={"state": state})
    assert r.status_code == 200 and r.json()["success"], r.text
    return r


def gpu_seconds(sim, iid):
    return sim.ledger()["instances"][str(iid)]["running_seconds"]


def destroy(sim, *ids):
    for iid in ids:
        api(sim, "DELETE", f"/api/v0/instances/{iid}/")


# --- controls ---------------------------------------------------------------------------------

def test_gpu_taken_leaves_a_running_instance_alone_and_a_restart_waits_in_scheduling(sim):
    iid, _ = rent(sim, bid=False)
    row = sim.ctl("POST", f"instances/{iid}/gpu_taken")["instance"]
    # a running contract keeps its GPU: stopping is what gives it up (vast.ai/docs/renting/
    # instance-details: on stop "the GPU will become available, so you no longer have GPU priority")
    assert states(row) == ("running", "running", "running", "running")
    sim.advance(600)
    assert show(sim, iid)["actual_status"] == "running"
    manage(sim, iid, "stopped")
    sim.settle(iid, "stopped")
    manage(sim, iid, "running")
    before = gpu_seconds(sim, iid)
    sim.advance(3 * 86400)   # it waits for as long as the GPU is taken
    row = show(sim, iid)
    # Fields while scheduling: intended/next "running", actual/cur "stopped" (a start of a
    # stopped instance; docs.vast.ai/cli/reference/start-instance: "stuck in the scheduling
    # state ... the required resources on the machine ... are currently unavailable")
    assert states(row) == ("stopped", "running", "stopped", "running")
    assert "Scheduling" in row["status_msg"] and "unavailable" in row["status_msg"]
    assert gpu_seconds(sim, iid) == before          # no GPU billing while it waits
    row = sim.ctl("POST", f"instances/{iid}/gpu_released")["instance"]
    sim.settle(iid, "running")
    assert gpu_seconds(sim, iid) > before
    destroy(sim, iid)


def test_gpu_taken_while_a_start_is_still_scheduling_keeps_it_waiting(vastsim_factory):
    slow = vastsim_factory(speed=1)
    offer = search(slow, {"limit": 1})[0]
    iid = create(slow, offer["id"])["new_contract"]
    slow.settle(iid, "running")
    manage(slow, iid, "stopped")
    slow.settle(iid, "stopped")
    manage(slow, iid, "running")                     # 2 simulated seconds of scheduling follow
    slow.ctl("POST", f"instances/{iid}/gpu_taken")   # ... and another tenant wins the GPU
    slow.advance(3600)
    assert states(show(slow, iid)) == ("stopped", "running", "stopped", "running")
    slow.ctl("POST", f"instances/{iid}/gpu_released")
    slow.settle(iid, "running")


def test_preempt_stops_an_interruptible_instance_with_the_live_fields(sim):
    iid, offer = rent(sim, bid=True)
    row = show(sim, iid)
    # a bid rental's row: is_bid, the machine's min_bid, dph_total = bid + storage
    assert row["is_bid"] is True and row["min_bid"] == offer["min_bid"]
    bid = round(offer["min_bid"] * 1.2 + 0.001, 4)
    assert row["dph_total"] == pytest.approx(bid + row["storage_total_cost"], rel=1e-6)
    assert row["instance"]["gpuCostPerHour"] == pytest.approx(bid)
    out = sim.ctl("POST", f"instances/{iid}/preempt")
    # dstack PR #4037 detects an interruption by cur_state, intended_status and next_state all
    # "stopped"; vast.ai/docs/renting/instance-details: a paused interruptible keeps its data;
    # docs.vast.ai show-instances: "stopped" = "Disk charges continue; no GPU charges"
    assert out["event"] == "preempt"
    assert out["instance"]["cur_state"] == out["instance"]["intended_status"] == out["instance"]["next_state"] == "stopped"
    sim.advance(30)
    row = show(sim, iid)
    assert states(row) == ("stopped", "stopped", "stopped", "stopped") and "outbid" in row["status_msg"]
    spent = sim.ledger()["instances"][str(iid)]
    sim.advance(7200)
    later = sim.ledger()["instances"][str(iid)]
    assert later["gpu"] == spent["gpu"] and later["storage"] > spent["storage"]
    assert show(sim, iid)["actual_status"] == "stopped"   # it does not come back by itself
    destroy(sim, iid)


def test_preempt_of_an_on_demand_instance_is_refused_and_outbid_still_works(sim):
    iid, _ = rent(sim, bid=False)
    with pytest.raises(RuntimeError, match="HTTP 400.*on-demand"):
        sim.ctl("POST", f"instances/{iid}/preempt")
    assert states(show(sim, iid)) == ("running", "running", "running", "running")
    bid_iid, _ = rent(sim, bid=True)
    row = sim.ctl("POST", f"instances/{bid_iid}/outbid")["instance"]
    assert row["cur_state"] == row["intended_status"] == row["next_state"] == "stopped"
    with pytest.raises(RuntimeError, match="HTTP 404"):
        sim.ctl("POST", "instances/1/preempt")
    destroy(sim, iid, bid_iid)


def test_offline_and_online_round_trip(sim):
    iid, _ = rent(sim, bid=False)
    row = sim.ctl("POST", f"instances/{iid}/offline")["instance"]
    # docs.vast.ai show-instances: "offline" = host machine disconnected from Vast servers;
    # the simulator keeps it so until /online (a simulator choice, docs/vastsim.md)
    assert row["actual_status"] == "offline" and row["intended_status"] == "running"
    assert "Host offline" in row["status_msg"] and "heartbeat" in row["status_msg"]
    assert "ports" not in row or row["ports"] is None
    seconds = gpu_seconds(sim, iid)
    sim.advance(86400)
    assert show(sim, iid)["actual_status"] == "offline"
    assert gpu_seconds(sim, iid) == seconds         # not GPU-billed while the host is gone
    manage(sim, iid, "running")                      # a start changes nothing while it is gone
    assert show(sim, iid)["actual_status"] == "offline"
    row = sim.ctl("POST", f"instances/{iid}/online")["instance"]
    assert row["actual_status"] == "loading"         # the container comes back up on the host
    sim.settle(iid, "running")
    assert sim.ctl("POST", f"instances/{iid}/online")["instance"]["actual_status"] == "running"   # no-op
    # a stop asked for while the host is gone is carried out when it returns
    sim.ctl("POST", f"instances/{iid}/offline")
    manage(sim, iid, "stopped")
    sim.advance(600)
    row = show(sim, iid)
    assert row["actual_status"] == "offline" and row["intended_status"] == "stopped"
    sim.ctl("POST", f"instances/{iid}/online")
    assert states(show(sim, iid)) == ("stopped", "stopped", "stopped", "stopped")
    destroy(sim, iid)


# --- fault-rule events ------------------------------------------------------------------------

def test_event_rule_fires_at_the_nth_request_on_instances_by_label_prefix(sim):
    a, _ = rent(sim, bid=True, label="evsvc-0")
    b, _ = rent(sim, bid=True, label="evsvc-1")
    od, _ = rent(sim, bid=False, label="evsvc-od")
    other, _ = rent(sim, bid=True, label="elsewhere")
    sim.clear_requests()
    sim.add_faults([{"event": "preempt", "endpoint": "list", "after": 2, "label": "evsvc-"}])
    params = {"select_filters": json.dumps({"label": {"eq": "evsvc-0"}})}
    for n in range(2):
        rows = api(sim, "GET", "/api/v1/instances/", params=params).json()["instances"]
        assert rows[0]["intended_status"] == "running"
    r = api(sim, "GET", "/api/v1/instances/", params=params)     # the 3rd: preempted, then answered
    assert r.status_code == 200 and r.json()["instances"][0]["intended_status"] == "stopped"
    rule = sim.ctl("GET", "faults")["rules"][0]
    assert (rule["seen"], rule["fired"]) == (3, 1)
    assert rule["applied"] == [a, b] and rule["skipped"] == [od]   # only bids are outbid
    assert show(sim, other)["intended_status"] == "running"
    assert show(sim, od)["intended_status"] == "running"
    api(sim, "GET", "/api/v1/instances/")
    assert sim.ctl("GET", "faults")["rules"][0]["fired"] == 1       # times: 1
    lists = [e for e in sim.requests() if e["endpoint"] == "list"]
    assert [bool(e.get("events")) for e in lists] == [False, False, True, False]
    assert lists[2]["events"] == [{"event": "preempt", "applied": [a, b], "skipped": [od]}]
    assert all("fault" not in e for e in lists)
    destroy(sim, a, b, od, other)


def test_event_rule_without_a_target_hits_the_instance_the_request_addresses(sim):
    iid, _ = rent(sim, bid=False)
    bystander, _ = rent(sim, bid=False)
    sim.add_faults([{"event": "offline", "endpoint": "show"}])
    assert show(sim, iid)["actual_status"] == "offline"              # applied before the answer
    assert show(sim, bystander)["actual_status"] == "running"
    assert sim.ctl("GET", "faults")["rules"][0]["applied"] == [iid]
    sim.add_faults([{"event": "online", "endpoint": "manage", "method": "PUT"}])
    manage(sim, iid, "running")
    sim.settle(iid, "running")
    destroy(sim, iid, bystander)


def test_event_rule_after_a_create_hits_the_new_instance(sim):
    sim.add_faults([{"event": "preempt", "endpoint": "create", "at": "after"}])
    offer = search(sim, {"type": "bid", "limit": 1})[0]
    out = create(sim, offer["id"], price=round(offer["min_bid"] * 2, 4))   # answered normally
    assert out["success"] is True
    row = show(sim, out["new_contract"])
    assert row["cur_state"] == row["intended_status"] == row["next_state"] == "stopped"
    assert sim.ctl("GET", "faults")["rules"][0]["applied"] == [out["new_contract"]]
    destroy(sim, out["new_contract"])


def test_gpu_taken_rule_by_instance_id_at_a_stop_then_the_restart_waits(sim):
    iid, _ = rent(sim, bid=False)
    sim.add_faults([{"event": "gpu_taken", "endpoint": "manage", "instance_id": iid}])
    manage(sim, iid, "stopped")                 # another tenant rents the GPU as it is released
    sim.settle(iid, "stopped")
    manage(sim, iid, "running")
    sim.advance(86400)
    assert states(show(sim, iid)) == ("stopped", "running", "stopped", "running")
    sim.add_faults([{"event": "gpu_released", "endpoint": "show", "instance_id": iid}])
    show(sim, iid)
    sim.settle(iid, "running")
    destroy(sim, iid)


def test_event_rules_in_the_faults_option(vastsim_factory):
    s = vastsim_factory(faults="list:event=preempt:label=svc-:after=3,show:offline:times=2,create:503")
    rules = s.ctl("GET", "faults")["rules"]
    assert [(r.get("event"), r.get("fault"), r["endpoint"]) for r in rules] == [
        ("preempt", None, "list"), ("offline", None, "show"), (None, "503", "create")]
    assert rules[0]["label"] == "svc-" and rules[0]["after"] == 3 and rules[0]["times"] == 1
    assert rules[1]["times"] == 2 and rules[0]["seen"] == rules[0]["fired"] == 0


@pytest.mark.parametrize("rule, message", [
    ({"event": "explode", "endpoint": "list"}, "unknown event"),
    ({"event": "preempt", "fault": "500"}, "either a fault or an event"),
    ({"event": "preempt", "label": "a", "instance_id": 5}, "not both"),
    ({"event": "preempt", "label": ""}, "label must be"),
    ({"event": "preempt", "instance_id": "x"}, "instance_id must be"),
    ({"event": "preempt", "at": "during"}, "at must be"),
    ({"event": "preempt", "endpoint": "nowhere"}, "unknown endpoint"),
    ({"event": "preempt", "lable": "svc-"}, "an event rule takes only"),
    ({"event": "preempt", "probability": 2}, "probability"),
])
def test_bad_event_rules_are_refused(sim, rule, message):
    with pytest.raises(RuntimeError, match="HTTP 400") as e:
        sim.add_faults([rule])
    assert message in str(e.value)
    assert sim.ctl("GET", "faults")["rules"] == []


def test_bad_event_rules_in_the_short_form():
    with pytest.raises(ValueError, match="unknown event 'explode'"):
        parse_spec("list:event=explode")
    with pytest.raises(ValueError, match="is not key=value"):
        parse_spec("list:event=preempt:label")
    assert parse_spec("list:preempt")[0]["event"] == "preempt"
    with pytest.raises(RuntimeError, match="unknown event"):
        with start_vastsim(faults="list:event=explode"):
            pass
