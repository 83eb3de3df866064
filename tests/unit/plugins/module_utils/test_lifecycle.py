"""The instance lifecycle as plain Python against the simulator (real HTTP, no ansible-playbook).

Params are validated by Ansible's own ArgumentSpecValidator against vast_instance's argument spec,
so every default and suboption is what the module would pass.
"""
import json

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.llmops.vastai.plugins.module_utils.client import VastClient
from ansible_collections.llmops.vastai.plugins.module_utils.lifecycle import Failure, InstanceLifecycle
from ansible_collections.llmops.vastai.plugins.modules.vast_instance import STATES, argument_spec

FILTERS = {"gpu_names": ["RTX 4090", "RTX 3090"], "max_dph": 2.0}


def params(sim, **kw):
    base = {"api_key": sim.api_key, "api_url": sim.url, "poll_interval": 0.1, "wait_timeout": 30}
    base.update(kw)
    result = ArgumentSpecValidator(argument_spec()).validate(base)
    assert not result.error_messages, result.error_messages
    return result.validated_parameters


def lifecycle(sim, check_mode=False, **kw):
    p = params(sim, **kw)
    client = VastClient(sim.api_key, api_url=sim.url, timeout=5, retries=p["api_retries"], backoff=0.01)
    return InstanceLifecycle(client, p, check_mode=check_mode)


def run(sim, check_mode=False, **kw):
    life = lifecycle(sim, check_mode=check_mode, **kw)
    if kw.get("exact_count") is not None:
        return life, life.run_exact_count(STATES)
    return life, life.run(STATES)


def live(sim, label=None):
    rows = [r for r in sim.state()["instances"] if r["actual_status"] != "destroyed"]
    return [r for r in rows if label is None or r["label"] == label]


def creates(sim):
    return [r for r in sim.requests() if r["endpoint"] == "create"]


def test_create_running_then_no_op(vastsim):
    life, res = run(vastsim, label="lc-a", state="running", offer_filters=FILTERS, image="img:1", disk_gb=20)
    assert res["changed"] is True
    assert res["instance"]["actual_status"] == "running"
    assert res["diff"] == {"before": {"state": "absent"},
                           "after": {"id": res["instance"]["id"], "label": "lc-a", "state": "running"}}
    assert life.created_ids == [res["instance"]["id"]]
    vastsim.clear_requests()
    life, again = run(vastsim, label="lc-a", state="running", offer_filters=FILTERS, image="img:1")
    assert again["changed"] is False and again["actions"] == []
    assert again["instance"]["id"] == res["instance"]["id"]
    assert life.client.calls == 1  # the label look-up alone


def test_check_mode_rents_nothing_and_plans_the_offer(vastsim):
    life, res = run(vastsim, check_mode=True, label="lc-check", state="running", offer_filters=FILTERS, image="i")
    assert res["changed"] is True and res["instance"] is None
    assert res["diff"]["after"]["state"] == "running" and res["diff"]["after"]["offer_id"]
    assert creates(vastsim) == [] and live(vastsim) == []


def test_offer_taken_between_search_and_create_rents_the_next(vastsim):
    # Another tenant takes the machine right before our create: the first create answers
    # no_such_ask, the next offer on another machine is rented; exactly one instance exists.
    life = lifecycle(vastsim, label="lc-race", state="running", offer_filters=FILTERS, image="i", wait=False)
    search, seen = life.client.search_offers, []

    def search_then_lose_the_race(query):
        offers = search(query)
        if not seen:
            seen.append(offers[0])
            vastsim.take_offer(offers[0]["id"])
        return offers
    life.client.search_offers = search_then_lose_the_race
    life.run(STATES)
    first = seen[0]
    tried = life.result["offers_tried"]
    assert [t["result"] for t in tried] == ["taken", "created"]
    assert tried[1]["machine_id"] != first["machine_id"]
    assert len(live(vastsim, "lc-race")) == 1


def test_lost_create_answer_is_adopted_by_label(vastsim):
    vastsim.add_faults([{"endpoint": "create", "fault": "lost_response"}])
    life, res = run(vastsim, label="lc-lost", state="running", offer_filters=FILTERS, image="i")
    assert len(creates(vastsim)) == 1  # never re-sent
    assert [r["id"] for r in live(vastsim, "lc-lost")] == [res["instance"]["id"]]
    assert any("create answer lost" in a for a in res["actions"])


def test_lost_create_with_lists_failing_names_the_risk(vastsim):
    vastsim.add_faults([{"endpoint": "create", "fault": "lost_response"},
                        {"endpoint": "list", "fault": "500", "times": -1, "after": 1}])
    life = lifecycle(vastsim, label="lc-blind", state="running", offer_filters=FILTERS, image="i", api_retries=0)
    with pytest.raises(Failure) as err:
        life.run(STATES)
    assert "may have been rented and cost money" in err.value.msg
    assert len(creates(vastsim)) == 1


def test_lost_stop_answer_is_reconciled_by_reread(vastsim):
    life, res = run(vastsim, label="lc-stop", state="running", offer_filters=FILTERS, image="i")
    iid = res["instance"]["id"]
    vastsim.add_faults([{"endpoint": "manage", "fault": "lost_response"}])
    life, res = run(vastsim, label="lc-stop", state="stopped")
    assert res["changed"] is True and res["instance"]["actual_status"] in ("stopped", "exited")
    assert "stop answer lost; instance %d is now intended stopped" % iid in res["actions"]


def test_lost_stop_not_done_is_sent_once_more(vastsim):
    life, res = run(vastsim, label="lc-twice", state="running", offer_filters=FILTERS, image="i")
    vastsim.add_faults([{"endpoint": "manage", "fault": "reset"}])
    life, res = run(vastsim, label="lc-twice", state="stopped")
    assert "stop answer lost and not done; sent it once more" in res["actions"]
    assert res["instance"]["actual_status"] in ("stopped", "exited")


def test_duplicate_label_fails_listing_ids(vastsim):
    ids = vastsim.bulk(2, label_prefix="dup", status="running")
    for iid in ids:
        lifecycle(vastsim, id=iid, label="lc-dup").client.set_label(iid, "lc-dup")
    with pytest.raises(Failure) as err:
        run(vastsim, label="lc-dup", state="running")
    assert sorted(err.value.extra["instance_ids"]) == sorted(ids)


def test_wait_timeout_destroys_what_this_task_created(vastsim, tmp_path):
    audit = tmp_path / "audit.jsonl"
    life = lifecycle(vastsim, label="lc-slow", state="running", offer_filters=FILTERS, image="i",
                     wait_timeout=1, destroy_on_failure=True, audit_log=str(audit), cancel_unavail=False)
    first = life.search(set())[0]
    vastsim.ctl("POST", "offers/%s/unavail" % first["id"])  # created, then never schedules
    with pytest.raises(Failure) as err:
        life.run(STATES)
    assert "destroyed it (destroy_on_failure)" in err.value.msg
    assert live(vastsim, "lc-slow") == []
    actions = [json.loads(line)["action"] for line in audit.read_text().splitlines()]
    assert actions == ["create", "destroy"]


def test_exact_count_grows_and_shrinks(vastsim):
    life, res = run(vastsim, label="lc-rep", exact_count=2, offer_filters=FILTERS, image="i")
    assert [r["label"] for r in res["instances"]] == ["lc-rep-1", "lc-rep-2"]
    life, res = run(vastsim, label="lc-rep", exact_count=1, offer_filters=FILTERS, image="i")
    assert res["diff"] == {"before": {"count": 2, "labels": ["lc-rep-1", "lc-rep-2"]},
                           "after": {"count": 1, "labels": ["lc-rep-1"]}}
    assert [r["label"] for r in live(vastsim) if r["label"].startswith("lc-rep")] == ["lc-rep-1"]


def test_perform_records_action_change_diff_and_audit(vastsim, tmp_path):
    audit = tmp_path / "a.jsonl"
    life, res = run(vastsim, label="lc-perf", state="running", offer_filters=FILTERS, image="i")
    life = lifecycle(vastsim, label="lc-perf", state="stopped", audit_log=str(audit))
    row = life.find("lc-perf")
    lost = life.change_power(row, "stopped", "stop")
    assert lost is False
    assert life.result["changed"] is True and life.result["actions"] == ["stop instance %s" % row["id"]]
    assert life.planned == {"id": row["id"], "label": "lc-perf", "state": "stopped"}
    rec = json.loads(audit.read_text())
    assert (rec["action"], rec["instance_id"], rec["result"], rec["module"]) == ("stop", row["id"], "ok", "vast_instance")


def test_absent_by_id_does_not_relabel_first(vastsim):
    life, res = run(vastsim, label="lc-gone", state="running", offer_filters=FILTERS, image="i")
    iid = res["instance"]["id"]
    life, res = run(vastsim, id=iid, label="other", state="absent")
    assert res["actions"] == ["destroy instance %s" % iid]
    assert live(vastsim, "lc-gone") == [] and live(vastsim, "other") == []
