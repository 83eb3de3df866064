"""keep_serving's plan rules (module_utils/serving.py): pure data, every rule pinned."""
import math
import time

import pytest

from ansible_collections.llmops.vastai.plugins.module_utils.serving import PlanError, plan

PROFILES = {"budget": {"max_dph": 0.40}, "big": {"max_dph": 2.0}}
NOW = 1_800_000_000.0


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def row(iid, label, actual="running", intended="running", **kw):
    r = {"id": iid, "label": label, "actual_status": actual, "intended_status": intended,
         "cur_state": "running" if actual == "running" else "stopped",
         "next_state": intended, "dph_total": 0.3, "uptime_mins": 500, "is_bid": False}
    r.update(kw)
    return r


def ev(action, iid, minutes_ago, actor="awx job 7"):
    return {"time": iso(NOW - minutes_ago * 60), "action": action, "instance_id": iid, "actor": actor}


def one(services, rows, events=(), health=None):
    p = plan(services, rows, list(events), NOW, health or {}, PROFILES)
    return p, {r["label"]: r for s in p["services"] for r in s["replicas"]}


SVC = {"name": "chat", "profile": "budget"}


def test_healthy_replica_is_left_alone():
    p, reps = one([SVC], [row(1, "chat")], health={1: True})
    assert reps["chat"]["action"] == "ok" and p["rent"] == [] and p["observe"] == []


def test_missing_replicas_are_created_with_their_own_labels():
    p, reps = one([dict(SVC, replicas=3)], [row(1, "chat-2")], health={1: True})
    assert [reps[lb]["action"] for lb in ("chat-1", "chat-2", "chat-3")] == ["create", "ok", "create"]
    assert [r["label"] for r in p["rent"]] == ["chat-1", "chat-3"] and all(r["old"] is None for r in p["rent"])


def test_preempted_interruptible_is_replaced_under_a_temporary_label():
    r = row(5, "chat", actual="stopped", intended="stopped", next_state="stopped", is_bid=True)
    p, reps = one([dict(SVC, interruptible=True)], [r], [ev("create", 5, 300)])
    assert reps["chat"]["action"] == "replace" and "preempted" in reps["chat"]["reason"]
    (rent,) = p["rent"]
    assert rent["label"] == "chat-replacement" and rent["token_label"] == "chat" and rent["old"]["id"] == 5
    assert rent["interruptible"] is True
    assert rent["old_summary"].startswith("chat is instance 5, stopped, billing $")


@pytest.mark.parametrize("action", ["auto_shutdown_complete", "power_off_complete", "auto_shutdown"])
def test_a_stop_of_ours_is_never_undone(action):
    r = row(5, "chat", actual="stopped", intended="stopped", next_state="stopped", is_bid=True)
    p, reps = one([SVC], [r], [ev("create", 5, 300), ev(action, 5, 30)])
    assert reps["chat"]["action"] == "leave" and action in reps["chat"]["reason"] and p["rent"] == []


def test_a_stop_older_than_a_start_is_history():
    r = row(5, "chat", actual="stopped", intended="stopped", next_state="stopped", is_bid=True)
    _, reps = one([SVC], [r], [ev("auto_shutdown", 5, 300), ev("power_on_complete", 5, 100)])
    assert reps["chat"]["action"] == "replace"


def test_on_demand_stopped_outside_the_collection_is_left():
    r = row(5, "chat", actual="stopped", intended="stopped", next_state="stopped", is_bid=False)
    p, reps = one([SVC], [r])
    assert reps["chat"]["action"] == "leave" and "outside" in reps["chat"]["reason"] and p["rent"] == []


def test_scheduling_is_watched_then_replaced_after_start_timeout():
    r = row(5, "chat", actual="stopped", intended="running", next_state="running")
    p, reps = one([SVC], [r])
    assert reps["chat"]["action"] == "watch" and p["observe"][0]["action"] == "observed_scheduling"
    _, reps = one([SVC], [r], [ev("observed_scheduling", 5, 4)])
    assert reps["chat"]["action"] == "watch"
    p, reps = one([SVC], [r], [ev("observed_scheduling", 5, 11), ev("observed_scheduling", 5, 4)])
    assert reps["chat"]["action"] == "replace" and p["observe"] == []


def test_a_condition_that_ended_starts_its_grace_again():
    r = row(5, "chat", actual="offline")
    events = [ev("observed_offline", 5, 60), ev("power_on_complete", 5, 30), ev("observed_offline", 5, 2)]
    _, reps = one([SVC], [r], events)
    assert reps["chat"]["action"] == "watch"


def test_unhealthy_past_grace_is_replaced_but_loading_is_not():
    r = row(5, "chat", uptime_mins=30)
    _, reps = one([SVC], [r], [ev("observed_unhealthy", 5, 60)], health={5: False})
    assert reps["chat"]["action"] == "wait"  # still within load_timeout_minutes
    r = row(5, "chat", uptime_mins=500)
    _, reps = one([SVC], [r], [ev("observed_unhealthy", 5, 16)], health={5: False})
    assert reps["chat"]["action"] == "replace"


def test_a_replacement_already_rented_is_resumed_never_rented_twice():
    old = row(5, "chat", actual="stopped", intended="stopped", next_state="stopped", is_bid=True)
    p, reps = one([SVC], [old, row(9, "chat-replacement")])
    assert reps["chat"]["action"] == "resume"
    assert [r["label"] for r in p["rent"]] == ["chat-replacement"] and p["rent"][0]["old"]["id"] == 5


def test_budget_caps_each_rental_and_blocks_beyond():
    svc = dict(SVC, replicas=3, max_dph_total=0.5)
    p, reps = one([svc], [row(1, "chat-1", dph_total=0.2)], health={1: True})
    assert [(r["label"], r["max_dph"]) for r in p["rent"]] == [("chat-2", 0.3)]
    assert reps["chat-3"]["action"] == "blocked" and "max_dph_total" in reps["chat-3"]["reason"]


def test_stopped_storage_counts_against_the_budget():
    old = row(5, "chat", actual="stopped", intended="stopped", next_state="stopped", is_bid=True,
              dph_total=0.3, storage_total_cost=None, storage_cost=0.15, disk_space=100)
    p, _ = one([dict(SVC, max_dph_total=0.35)], [old])
    assert p["rent"] and p["rent"][0]["max_dph"] < 0.35


@pytest.mark.parametrize("bad, words", [
    ({"name": "chat", "profile": "nope"}, "unknown profile"),
    ({"name": "chat", "profile": "budget", "max_dph_total": math.nan}, "finite"),
    ({"name": "chat", "profile": "budget", "max_dph_total": -1}, "finite"),
    ({"name": "chat", "profile": "budget", "replicas": 1e9}, "whole number"),
    ({"name": "chat", "profile": "budget", "replicas": 99}, "between 0 and 20"),
    ({"name": " chat/../x", "profile": "budget"}, "must be a label"),
    ({"name": "chat-replacement", "profile": "budget"}, "must be a label"),
    ({"name": "chat", "profile": "budget", "replace_old": "maybe"}, "replace_old"),
])
def test_bad_services_fail_before_anything(bad, words):
    with pytest.raises(PlanError) as err:
        plan([bad], [], [], NOW, {}, PROFILES)
    assert words in str(err.value)


def test_duplicate_service_names_are_refused():
    with pytest.raises(PlanError):
        plan([SVC, SVC], [], [], NOW, {}, PROFILES)
