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


# ---------------------------------------------------------------- races (no server-side lock)
def rival_creates_between_search_and_create(vastsim, life, label):
    """Wrap the search so that, right after it answers, another run rents the same label."""
    search, rival = life.client.search_offers, []

    def search_then_rival(query):
        offers = search(query)
        if not rival and len(offers) > 1:
            other = VastClient(vastsim.api_key, api_url=vastsim.url)
            rival.append(other.create_instance(offers[-1]["id"], {"image": "i", "disk": 20.0, "label": label,
                                                                  "runtype": "ssh_direc ssh_proxy"})["new_contract"])
        return offers
    life.client.search_offers = search_then_rival
    return rival


def test_race_lost_destroys_ours_and_adopts_the_oldest(vastsim, tmp_path):
    audit = tmp_path / "a.jsonl"
    life = lifecycle(vastsim, label="lc-racer", state="running", offer_filters=FILTERS, image="i",
                     audit_log=str(audit))
    rival = rival_creates_between_search_and_create(vastsim, life, "lc-racer")
    res = life.run(STATES)
    assert res["instance"]["id"] == rival[0]
    assert [r["id"] for r in live(vastsim, "lc-racer")] == rival
    assert any("oldest) wins, destroyed" in a for a in res["actions"])
    assert life.created_ids == []  # what it created is gone; the winner is not ours
    details = [json.loads(line).get("detail") for line in audit.read_text().splitlines()]
    assert "lost create race to %s" % rival[0] in details


def test_concurrent_runs_end_with_one_instance_and_agree(vastsim_factory):
    import threading
    sim = vastsim_factory(latency=150)
    results, errors = [], []

    def one(pick):
        try:
            _, res = run(sim, label="lc-many", state="running", offer_filters=dict(FILTERS, order_by=pick),
                         image="i", wait=False)
            results.append(res["instance"]["id"])
        except Failure as e:  # pragma: no cover - reported below
            errors.append(e.msg)
    threads = [threading.Thread(target=one, args=(pick,)) for pick in ("price", "score", "reliability", "value")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rows = live(sim, "lc-many")
    assert len(rows) == 1, rows
    assert set(results) == {rows[0]["id"]}
    assert len(creates(sim)) >= 2  # they did race: several rentals were sent


# ---------------------------------------------------------------- what is billed
def test_interruptible_always_bids_min_bid_and_guards_the_billed_price(vastsim, tmp_path):
    audit = tmp_path / "a.jsonl"
    f = dict(FILTERS, offer_type="interruptible")
    life = lifecycle(vastsim, label="lc-bid", state="running", offer_filters=f, image="i", disk_gb=20,
                     audit_log=str(audit), wait=False)
    best = life.search(set())[0]
    res = life.run(STATES)
    row = res["instance"]
    assert res["offers_tried"][-1]["offer_id"] == best["id"]
    assert row["is_bid"] is True  # a bid was sent: without one vast.ai rents on-demand (vast-cli #403)
    billed = best["min_bid"] + best["storage_total_cost"]
    assert row["dph_total"] == pytest.approx(billed, abs=1e-4)
    rec = [json.loads(line) for line in audit.read_text().splitlines()][0]
    assert rec["price"] == pytest.approx(billed, abs=1e-4)  # the audit records what will be billed


def test_bid_above_max_dph_is_refused_before_anything_is_sent(vastsim):
    with pytest.raises(Failure) as err:
        run(vastsim, label="lc-bid-cap", state="running", offer_filters=dict(FILTERS, offer_type="interruptible"),
            image="i", bid_price=5.0, max_dph=1.0)
    assert "would bill $5." in err.value.msg and "above max_dph $1.0000/h" in err.value.msg
    assert creates(vastsim) == [] and live(vastsim) == []


def test_bid_below_min_bid_is_refused_before_anything_is_sent(vastsim):
    with pytest.raises(Failure) as err:
        run(vastsim, label="lc-lowbid", state="running", offer_filters=FILTERS, image="i", bid_price=0.001)
    assert "below its min_bid" in err.value.msg
    assert creates(vastsim) == []


def test_refused_create_reports_no_change(vastsim):
    vastsim.set_credit(0)
    life = lifecycle(vastsim, label="lc-broke", state="running", offer_filters=FILTERS, image="i")
    with pytest.raises(Failure) as err:
        life.run(STATES)
    assert "was refused" in err.value.msg
    assert life.result["changed"] is False and live(vastsim) == []


def test_budget_guard_counts_the_whole_account(vastsim):
    vastsim.bulk(3, label_prefix="other-", status="running")
    burn = sum(r["dph_total"] for r in live(vastsim))
    with pytest.raises(Failure) as err:
        run(vastsim, label="lc-budget", state="running", offer_filters=FILTERS, image="i",
            max_total_dph=burn + 0.01)
    assert "above max_total_dph" in err.value.msg and "$%.4f/h now" % burn in err.value.msg
    vastsim.set_credit(1.0)
    with pytest.raises(Failure) as err:
        run(vastsim, label="lc-budget", state="running", offer_filters=FILTERS, image="i", min_credit_hours=24)
    assert "covers" in err.value.msg and "min_credit_hours is 24" in err.value.msg
    assert creates(vastsim) == []


def test_start_is_checked_against_the_budget(vastsim):
    _, res = run(vastsim, label="lc-start", state="stopped", offer_filters=FILTERS, image="i")
    vastsim.bulk(2, label_prefix="busy-", status="running")
    with pytest.raises(Failure) as err:
        run(vastsim, label="lc-start", state="running", max_total_dph=0.05)
    assert "above max_total_dph" in err.value.msg
    assert vastsim.instance(res["instance"]["id"])["intended_status"] == "stopped"


def test_disk_and_direct_ports_are_search_floors(vastsim):
    life = lifecycle(vastsim, label="lc-floor", state="running", offer_filters=FILTERS, image="i", disk_gb=200,
                     ports=["8000", "9000/udp"])
    f = life.offer_filters(set())
    assert f["min_disk_gb"] == 200 and f["min_direct_ports"] == 3  # two ports + direct SSH
    for o in life.search(set()):
        assert o["disk_space"] >= 200 and o["direct_port_count"] >= 3
    with pytest.raises(Failure) as err:
        run(vastsim, label="lc-huge", state="running", offer_filters=FILTERS, image="i", disk_gb=10 ** 7)
    assert "no offer matches" in err.value.msg and creates(vastsim) == []


def test_stopped_create_sends_no_target_state_then_stops(vastsim):
    _, res = run(vastsim, label="lc-cold", state="stopped", offer_filters=FILTERS, image="i")
    assert res["instance"]["actual_status"] in ("stopped", "exited")
    assert res["actions"][-2:] == ["stop instance %s" % res["instance"]["id"], "wait for stopped"]


def test_destroying_what_is_already_gone_is_success(vastsim):
    _, res = run(vastsim, label="lc-twice-gone", state="running", offer_filters=FILTERS, image="i")
    iid = res["instance"]["id"]
    client = VastClient(vastsim.api_key, api_url=vastsim.url)
    assert not client.destroy(iid).get("already_gone")
    assert client.destroy(iid)["already_gone"] is True  # no_such_instance: done, not an error


def test_wait_failure_without_destroy_names_the_instance_and_its_rate(vastsim):
    life = lifecycle(vastsim, label="lc-bill", state="running", offer_filters=FILTERS, image="i",
                     wait_timeout=1, cancel_unavail=False)
    first = life.search(set())[0]
    vastsim.ctl("POST", "offers/%s/unavail" % first["id"])
    with pytest.raises(Failure) as err:
        life.run(STATES)
    iid = live(vastsim, "lc-bill")[0]["id"]
    assert "instance %s was created by this task and still exists, billing $" % iid in err.value.msg
    assert life.result["changed"] is True


def test_creation_only_changes_warn_and_show_in_diff(vastsim):
    run(vastsim, label="lc-img", state="running", offer_filters=FILTERS, image="img:1", disk_gb=20)
    life, res = run(vastsim, label="lc-img", state="running", offer_filters=FILTERS, image="img:2", disk_gb=20)
    assert res["changed"] is False
    assert life.warnings and "image is 'img:1', asked 'img:2'" in life.warnings[0]
    assert res["diff"]["before"]["creation_only"] == {"image": "img:1"}
    assert res["diff"]["after"]["creation_only"] == {"image": "img:2"}


@pytest.mark.parametrize("row,why", [
    ({"actual_status": "created", "status_msg": "Error: OCI runtime create failed: runc"}, "OCI"),
    ({"actual_status": "stopped", "cur_state": "stopped", "intended_status": "stopped", "next_state": "stopped"},
     "outbid"),
    ({"actual_status": "offline", "intended_status": "running"}, "offline"),
    ({"actual_status": "exited", "intended_status": "running"}, "exited"),
    ({"actual_status": "frozen", "intended_status": "running"}, "frozen"),
    ({"actual_status": "unknown", "intended_status": "running"}, "unknown"),
    # controls: still on the way, or a GPU that is busy (scheduling) - keep waiting
    ({"actual_status": None, "intended_status": "running"}, None),
    ({"actual_status": "loading", "intended_status": "running"}, None),
    ({"actual_status": "created", "status_msg": "pulling image"}, None),
    ({"actual_status": "stopped", "intended_status": "running", "cur_state": "stopped", "next_state": "running"},
     None),
])
def test_never_running_table(row, why):
    from ansible_collections.llmops.vastai.plugins.module_utils.lifecycle import never_running
    reason = never_running(row)
    assert (reason is None) if why is None else (why in reason), reason


def test_max_instances_holds_when_runs_race_past_the_check(vastsim_factory):
    import threading
    sim = vastsim_factory(latency=150)
    sim.bulk(1, label_prefix="base-", status="running")
    out = []

    def one(n):
        try:
            _, res = run(sim, label="lc-cap-%d" % n, state="running", offer_filters=FILTERS, image="i", wait=False,
                         max_instances=2)
            out.append(("ok", res["instance"]["id"]))
        except Failure as e:
            out.append(("failed", e.msg))
    threads = [threading.Thread(target=one, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(live(sim)) == 2, live(sim)  # the base instance and exactly one new one
    assert [kind for kind, _ in out].count("ok") == 1, out
    assert all("max_instances" in msg for kind, msg in out if kind == "failed"), out


@pytest.mark.parametrize("direct_answers", [True, False])
def test_wait_ssh_returns_the_endpoint_that_answered(vastsim, direct_answers):
    """auto: direct when its port sends an SSH banner, else the proxy that does (SkyPilot found
    direct SSH blocked on some hosts); the result's ssh is the endpoint that answered."""
    from tests.helpers.net import ssh_listener
    _, res = run(vastsim, label="lc-ssh", state="running", offer_filters=FILTERS, image="i")
    iid = res["instance"]["id"]
    direct, proxy = ssh_listener(banner=direct_answers, hold=1), ssh_listener(banner=True, hold=1)
    ports = {"direct": direct.getsockname()[1], "proxy": proxy.getsockname()[1]}
    try:
        vastsim.ctl("POST", "instances/%s/net" % iid, {
            "public_ipaddr": "127.0.0.1", "ssh_host": "127.0.0.1", "ssh_port": proxy.getsockname()[1],
            "ports": {"22/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(direct.getsockname()[1])}]}})
        life = lifecycle(vastsim, label="lc-ssh", state="running", wait_ssh=True, wait_timeout=8)
        row = life.wait_running(life.find("lc-ssh"))
        ssh = life.view(row)["ssh"]
    finally:
        direct.close()
        proxy.close()
    assert ssh["kind"] == ("direct" if direct_answers else "proxy"), ssh
    assert ssh["port"] == ports[ssh["kind"]]
    assert ("direct SSH did not answer; using the proxy" in life.result["actions"]) is not direct_answers


def test_refused_bid_that_left_an_instance_destroys_it(vastsim):
    # dstack PR #4036: an insufficient bid creates the instance stopped and answers an error
    # carrying new_contract; "nothing was rented" would be false while it bills storage
    vastsim.ctl("POST", "create_failures", {"kind": "insufficient_bid"})
    life = lifecycle(vastsim, label="lc-lowball", state="running", offer_filters=dict(FILTERS, offer_type="interruptible"),
                     image="i")
    with pytest.raises(Failure) as err:
        life.run(STATES)
    iid = err.value.extra["instance_id"]
    assert "created instance %s" % iid in err.value.msg and "destroyed it" in err.value.msg
    assert live(vastsim, "lc-lowball") == [] and vastsim.instance(iid)["actual_status"] == "destroyed"
    assert life.result["changed"] is True


@pytest.mark.parametrize("kind,words", [("oci", "OCI runtime create failed"), ("outbid", "outbid")])
def test_wait_ends_at_once_on_states_that_never_run(vastsim, kind, words):
    vastsim.ctl("POST", "create_failures", {"kind": kind})
    life = lifecycle(vastsim, label="lc-" + kind, state="running", offer_filters=FILTERS, image="i",
                     wait_timeout=120, destroy_on_failure=True)
    started = __import__("time").monotonic()
    with pytest.raises(Failure) as err:
        life.run(STATES)
    assert __import__("time").monotonic() - started < 30  # seconds, not the 120 s wait_timeout
    assert words in err.value.msg and "destroyed it (destroy_on_failure)" in err.value.msg, err.value.msg
    assert live(vastsim, "lc-" + kind) == []


def test_start_whose_gpu_was_taken_ends_at_start_timeout_and_is_cancelled(vastsim):
    # While it was stopped another tenant rented its GPU: the start stays in scheduling. The
    # task must end at start_timeout with unavailable=True, and the start must be cancelled so
    # the instance cannot begin billing GPU time when the tenant lets go, unattended.
    _, res = run(vastsim, label="lc-taken", state="stopped", offer_filters=FILTERS, image="i")
    iid = res["instance"]["id"]
    vastsim.take_offer(vastsim.instance(iid)["offer_id"])
    with pytest.raises(Failure) as err:
        run(vastsim, label="lc-taken", state="running", start_timeout=1, wait_timeout=30)
    assert err.value.extra["unavailable"] is True
    assert "start_timeout" in err.value.msg and "cancelled" in err.value.msg
    row = vastsim.instance(iid)
    assert row["intended_status"] == "stopped" and row["actual_status"] == "stopped"
    vastsim.ctl("POST", "offers/%d/release" % row["offer_id"])
    vastsim.advance(600)
    assert vastsim.instance(iid)["actual_status"] == "stopped"  # it did not start by itself


def test_start_that_is_only_slow_is_not_unavailable(vastsim):
    # A normal start passes through scheduling briefly: a start_timeout above that is not hit.
    _, res = run(vastsim, label="lc-slow", state="stopped", offer_filters=FILTERS, image="i")
    _, started = run(vastsim, label="lc-slow", state="running", start_timeout=20, wait_timeout=30)
    assert started["instance"]["actual_status"] == "running"
