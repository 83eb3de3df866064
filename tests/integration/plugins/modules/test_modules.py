"""The four modules through real ansible-playbook runs against the simulator (tools/vastsim).

Each test starts its own simulator (fast clock) so tests stay independent; the playbooks live
next to this file in playbooks/.
"""
import json
import os
import secrets
import threading
import time

import pytest

from tests.helpers.ansible import run_playbook

HERE = os.path.dirname(os.path.abspath(__file__))
PB = os.path.join(HERE, "playbooks")
IMAGE = "vllm/vllm-openai:latest"


def key():
    return "vk-" + secrets.token_hex(16)


@pytest.fixture
def sim(vastsim_factory):
    return vastsim_factory(api_key=key())


def call(sim, module, margs, check=False, diff=False, env=None, verbosity=0):
    """One module call through playbooks/one_task.yml; returns (PlaybookResult, task result)."""
    e = dict(sim.env)
    e.update(env or {})
    res = run_playbook(os.path.join(PB, "one_task.yml"), extra_vars={"module": module, "margs": margs},
                       env=e, check=check, diff=diff, verbosity=verbosity)
    return res, res.task(module)


def run_calls(sim, calls, env=None, check=False, diff=False, verbosity=0):
    """Several module calls in ONE playbook run (tasks c0, c1, ... with ignore_errors), to keep
    the number of ansible-playbook start-ups low. Returns (PlaybookResult, [task results])."""
    e = dict(sim.env)
    e.update(env or {})
    tasks = "".join('    - name: c%d\n      llmops.vastai.%s: "{{ calls[%d] }}"\n      ignore_errors: true\n'
                    % (i, module, i) for i, (module, _a) in enumerate(calls))
    pb = "- hosts: localhost\n  gather_facts: false\n  tasks:\n" + tasks
    res = run_playbook(pb, extra_vars={"calls": [a for _m, a in calls]}, env=e, check=check, diff=diff,
                       verbosity=verbosity)
    return res, [res.task("c%d" % i) for i in range(len(calls))]


def live(sim, label=None):
    rows = [r for r in sim.state()["instances"] if not r.get("destroyed_at")]
    return [r for r in rows if label is None or r.get("label") == label]


def api_requests(sim, endpoint=None, method=None):
    return [r for r in sim.requests() if (endpoint is None or r["endpoint"] == endpoint)
            and (method is None or r["method"] == method)]


def create_args(label, **kw):
    a = dict(label=label, state="running", image=IMAGE, poll_interval=0.2, wait_timeout=60,
             offer_filters={"gpu_names": ["RTX 3090"], "max_dph": 2.0})
    a.update(kw)
    return a


# ---------------------------------------------------------------------------------------------
def test_lifecycle_every_state_and_idempotence(sim, tmp_path):
    audit = tmp_path / "audit.jsonl"
    hf_token = "hf_" + secrets.token_hex(8)
    res = run_playbook(os.path.join(PB, "lifecycle.yml"), env=sim.env,
                       extra_vars={"label": "life", "audit_log": str(audit), "hf_token": hf_token})
    assert res.rc == 0, res.summary()
    changed = {t.name: t.result["changed"] for t in res.tasks}
    assert changed == {
        "create": True, "create again": False, "stop": True, "stop again": False,
        "present while stopped": False, "start": True, "start again": False, "restart": True,
        "relabel by id": True, "relabel by id again": False, "destroy": True, "destroy again": False,
    }
    inst = res.task("create")["instance"]
    assert inst["label"] == "life" and inst["actual_status"] == "running"
    assert inst["ssh"]["kind"] in ("direct", "proxy") and inst["ssh"]["user"] == "root"
    assert isinstance(inst["ssh"]["port"], int)
    assert "8000/tcp" in inst["ports"] and isinstance(inst["ports"]["8000/tcp"], int)
    assert res.task("create again")["instance"]["id"] == inst["id"]
    assert res.task("stop")["instance"]["actual_status"] == "stopped"
    assert res.task("present while stopped")["instance"]["actual_status"] == "stopped"
    assert res.task("start")["instance"]["actual_status"] == "running"
    assert res.task("restart")["instance"]["actual_status"] == "running"
    assert res.task("relabel by id")["instance"]["label"] == "life-renamed"
    assert res.task("destroy")["instance"] is None

    # what the simulator saw: one rental with our creation options, destroyed at the end
    rows = [r for r in sim.state()["instances"] if r["id"] == inst["id"]]
    assert len(rows) == 1 and rows[0]["destroyed_at"]
    assert len(sim.state()["instances"]) == 1
    creates = api_requests(sim, "create")
    assert len(creates) == 1
    assert len(api_requests(sim, "reboot")) == 1

    # secret_env values (the HF token) never in output; extra_env lists names only
    assert hf_token not in res.stdout + res.stderr and sim.api_key not in res.stdout + res.stderr
    assert "HF_TOKEN" in inst["extra_env"]

    # audit trail: one line per mutation, no secrets
    lines = [json.loads(x) for x in audit.read_text().splitlines()]
    assert [x["action"] for x in lines] == ["create", "stop", "start", "reboot", "label", "destroy"]
    assert all(x["instance_id"] == inst["id"] and x["result"] == "ok" for x in lines)
    assert lines[0]["price"] > 0 and lines[0]["label"] == "life"
    text = audit.read_text()
    assert sim.api_key not in text and hf_token not in text


def test_creation_options_reach_the_api(sim):
    keytext = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINCxqGlgDSEHaj+otfUlRuVZIFiM5z37flbKncCL3K8+ opt@example"
    res, r = call(sim, "vast_instance", create_args(
        "opts", ports=["8000", "9000/udp"], env={"A": "1"}, disk_gb=20, runtype="args",
        args=["--model", "x"], ssh_keys=[keytext], bid_price=0.9,
        offer_filters={"gpu_names": ["rtx-3090"], "offer_type": "interruptible", "max_dph": 3}))
    assert res.rc == 0, res.summary()
    row = live(sim, "opts")[0]
    assert row["disk_space"] == 20
    assert row["image_runtype"] == "args"
    assert row["image_args"] == ["--model", "x"]
    assert row["is_bid"] is True
    env = dict(row["extra_env"])
    assert env["A"] == "1" and "-p 8000:8000" in env and "-p 9000:9000/udp" in env
    assert any(r["endpoint"] == "ssh" and r["method"] == "POST" for r in sim.requests())

    # VM rental from an explicit offer id, proxy ssh only; VM-capable offer required
    res, offers = call(sim, "vast_offer_info", {"vm_capable": True, "limit": 1})
    offer = offers["offers"][0]
    vmkey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHqBLjbnrO/GzXteQKU1kgb9rvAIAknPWu+h9J8Vwv/2 vm@example"
    res, r = call(sim, "vast_instance", dict(label="vm1", offer_id=offer["id"], vm=True, runtype="ssh_proxy",
                                             image="docker.io/vastai/kvm:ubuntu", poll_interval=0.2,
                                             ssh_keys=[vmkey]))
    assert res.rc == 0, res.summary()
    row = live(sim, "vm1")[0]
    assert row["machine_id"] == offer["machine_id"]
    assert r["instance"]["ssh"]["kind"] == "proxy"
    assert "ssh_proxy" in row["image_runtype"]
    assert "add ssh key to the account (needed by VMs)" in r["actions"]

    # from a template: its hash is sent and no runtype (the template has its own)
    res, r = call(sim, "vast_instance", create_args("tpl", template_hash="abc123", image=None, wait=False))
    assert res.rc == 0, res.summary()
    row = live(sim, "tpl")[0]
    assert row["template_hash_id"] == "abc123"


def test_check_mode_changes_nothing_and_diff(sim):
    res, r = call(sim, "vast_instance", create_args("chk"), check=True, diff=True)
    assert res.rc == 0, res.summary()
    assert r["changed"] is True
    assert r["instance"] is None
    assert r["diff"]["before"] == {"state": "absent"} and r["diff"]["after"]["state"] == "running"
    assert r["actions"][0].startswith("rent offer")
    assert live(sim) == []
    assert not [x for x in sim.requests() if x["method"] in ("PUT", "DELETE")]

    res, r = call(sim, "vast_instance", create_args("chk"))
    assert res.rc == 0 and r["changed"], res.summary()
    iid = r["instance"]["id"]
    sim.clear_requests()
    plan = (("stopped", "stopped"), ("absent", "absent"), ("restarted", "running"))
    res, results = run_calls(sim, [("vast_instance", {"label": "chk", "state": st}) for st, _e in plan],
                             check=True, diff=True)
    for (state, expected), r in zip(plan, results):
        assert r["changed"] is True and not r.get("failed"), (state, r.get("msg"))
        assert r["diff"]["after"]["state"] == expected
    assert not [x for x in sim.requests() if x["method"] in ("PUT", "DELETE")]
    assert sim.instance(iid)["actual_status"] == "running" and not sim.instance(iid)["destroyed_at"]


def test_offer_taken_tries_next_offer(vastsim_factory, tmp_path):
    # Latency gives the test time to take the offers between the module's search and create.
    sim = vastsim_factory(api_key=key(), latency=400)
    res, found = call(sim, "vast_offer_info", {"gpu_names": ["RTX 4090"], "limit": 3, "allocated_storage": 10})
    top = found["offers"]
    assert len(top) == 3 and len({o["machine_id"] for o in top}) == 3
    sim.clear_requests()

    def taker():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if api_requests(sim, "search"):
                sim.take_offer(top[0]["id"])
                sim.take_offer(top[1]["id"])
                return
            time.sleep(0.02)
    t = threading.Thread(target=taker)
    t.start()
    audit = tmp_path / "a.jsonl"
    res, r = call(sim, "vast_instance", create_args(
        "race", offer_filters={"gpu_names": ["RTX 4090"]}, max_offer_tries=3, audit_log=str(audit)))
    t.join()
    assert res.rc == 0, res.summary()
    assert [x["result"] for x in r["offers_tried"]] == ["taken", "taken", "created"]
    assert [x["offer_id"] for x in r["offers_tried"][:2]] == [top[0]["id"], top[1]["id"]]
    assert r["instance"]["machine_id"] not in (top[0]["machine_id"], top[1]["machine_id"])
    assert len(live(sim, "race")) == 1
    results = [json.loads(x)["result"] for x in audit.read_text().splitlines()]
    assert results == ["offer_taken", "offer_taken", "ok"]


def test_all_offers_taken_fails_with_what_was_tried(sim):
    res, found = call(sim, "vast_offer_info", {"gpu_names": ["H100 SXM"], "limit": 1})
    offer_id = found["offers"][0]["id"]
    sim.take_offer(offer_id)
    res, r = call(sim, "vast_instance", dict(label="gone", offer_id=offer_id, image=IMAGE))
    assert res.rc != 0
    assert r["failed"] and "tried 1 offer" in r["msg"] and str(offer_id) in r["msg"]
    assert live(sim) == []


def test_lost_create_response_rents_exactly_once(sim):
    sim.add_faults([{"endpoint": "create", "fault": "lost_response"}])
    res, r = call(sim, "vast_instance", create_args("lost"))
    assert res.rc == 0, res.summary()
    assert r["changed"] is True
    assert any("answer lost" in a for a in r["actions"])
    rows = live(sim, "lost")
    assert len(rows) == 1 and rows[0]["id"] == r["instance"]["id"]
    assert len(api_requests(sim, "create")) == 1  # never sent twice
    # and a second run adopts it without renting again
    res, r2 = call(sim, "vast_instance", create_args("lost"))
    assert res.rc == 0 and r2["changed"] is False and r2["instance"]["id"] == r["instance"]["id"]
    assert len(sim.state()["instances"]) == 1


def test_lost_create_then_lookup_storm_still_adopts(sim):
    # the reconciling label lookups hit a 429 storm longer than one read's retries
    sim.add_faults([{"endpoint": "create", "fault": "lost_response"},
                    {"endpoint": "list", "fault": "429", "times": 7, "after": 1}])
    res, r = call(sim, "vast_instance", create_args("lost2", api_retries=3))
    assert res.rc == 0, res.summary()
    rows = live(sim, "lost2")
    assert len(rows) == 1 and rows[0]["id"] == r["instance"]["id"]
    assert len(api_requests(sim, "create")) == 1


def test_429_storm_then_success(sim):
    sim.add_faults([{"endpoint": "*", "fault": "429", "times": 4},
                    {"endpoint": "create", "fault": "429", "times": 2},
                    {"endpoint": "show", "fault": "503", "times": 2}])
    res, r = call(sim, "vast_instance", create_args("storm", api_retries=6))
    assert res.rc == 0, res.summary()
    assert r["instance"]["actual_status"] == "running"
    statuses = [x["status"] for x in sim.requests()]
    assert statuses.count(429) >= 6
    assert len(live(sim, "storm")) == 1
    assert len([x for x in api_requests(sim, "create") if x["status"] == 200]) == 1


def test_wrong_key_is_a_clear_auth_error(sim):
    wrong = "wrong-" + secrets.token_hex(8)
    res, results = run_calls(sim, [("vast_instance", {"label": "x", "state": "absent"}), ("vast_offer_info", {}),
                                   ("vast_instance_info", {}), ("vast_billing_info", {})],
                             env={"VAST_API_KEY": wrong}, verbosity=3)
    for r in results:
        assert r["failed"] and r["msg"].startswith("authentication failed"), r["msg"]
        assert r["failure"]["code"] == "auth_error" and r["failure"]["status"] in (401, 403, 404)
    assert wrong not in res.stdout + res.stderr
    # and no key at all
    res, r = call(sim, "vast_instance_info", {}, env={"VAST_API_KEY": None})
    assert res.rc != 0 and "VAST_API_KEY" in r["msg"]


def test_key_never_in_output_at_vvv(sim):
    res, r = call(sim, "vast_instance", create_args("secret"), verbosity=3)
    assert res.rc == 0, res.summary()
    assert sim.api_key not in res.stdout + res.stderr
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in res.stdout or "api_key" not in res.stdout
    res, r = call(sim, "vast_instance", {"label": "secret", "state": "absent", "api_key": sim.api_key},
                  env={"VAST_API_KEY": None}, verbosity=3)
    assert res.rc == 0, res.summary()
    assert sim.api_key not in res.stdout + res.stderr


INVALID = [
    ("vast_instance", {"label": "x", "disk_gb": 4, "image": IMAGE, "offer_id": 1}, "disk_gb must be at least 8"),
    ("vast_instance", {"label": "x", "offer_filters": {"min_reliability": 2}, "image": IMAGE}, "min_reliability"),
    ("vast_instance", {"label": "x", "bid_price": 500, "offer_id": 1, "image": IMAGE}, "bid_price"),
    ("vast_instance", {"id": 5, "exact_count": 2}, "exact_count"),
    ("vast_instance", {"label": "x", "state": "exploded"}, "state"),
    ("vast_instance", {"label": "x", "offer_id": 1}, "needs image or template_hash"),
    ("vast_instance", {"label": "x", "ports": ["http"], "offer_id": 1, "image": IMAGE}, "ports entry"),
    ("vast_instance", {"label": "x", "offer_id": 1, "offer_filters": {}, "image": IMAGE}, "mutually exclusive"),
    ("vast_offer_info", {"countries": ["USA"]}, "two-letter"),
    ("vast_offer_info", {"min_num_gpus": 4, "max_num_gpus": 2}, "greater than max_num_gpus"),
    ("vast_offer_info", {"order_by": "cheapness"}, "order_by"),
    ("vast_billing_info", {"start": "last tuesday"}, "not a date"),
    ("vast_billing_info", {"start": "2026-02-01", "end": "2026-01-01"}, "must be before"),
    ("vast_instance_info", {"parallel": 0}, "parallel"),
]


def test_invalid_arguments_fail_before_any_api_call(sim):
    sim.clear_requests()
    res, results = run_calls(sim, [(m, a) for m, a, _w in INVALID])
    for (module, margs, words), r in zip(INVALID, results):
        assert r.get("failed"), (module, margs)
        assert words in r["msg"], (module, margs, r["msg"])
    assert sim.requests() == []


def test_wait_that_runs_out_fails_with_id_status_and_log(sim):
    res, r = call(sim, "vast_instance", create_args("stuck", wait=False))
    assert res.rc == 0, res.summary()
    iid = r["instance"]["id"]
    sim.force(iid, "loading", hold=True)
    t0 = time.monotonic()
    res, r = call(sim, "vast_instance", {"label": "stuck", "state": "running", "wait_timeout": 3,
                                         "poll_interval": 0.5, "destroy_on_failure": True})
    assert res.rc != 0
    assert time.monotonic() - t0 < 30
    assert str(iid) in r["msg"] and "did not reach running within 3s" in r["msg"]
    assert "actual_status=loading" in r["msg"]
    assert r["instance_id"] == iid and "status_msg" in r and isinstance(r["log_tail"], str)
    # destroy_on_failure only destroys what this task created; nor is the message about it
    assert sim.instance(iid)["destroyed_at"] is None
    assert "destroy" not in r["msg"] and "created" not in r["msg"]


def test_destroy_on_failure_destroys_what_it_created(vastsim_factory):
    sim = vastsim_factory(api_key=key(), speed=1)  # loading takes ~45 real seconds
    res, r = call(sim, "vast_instance", create_args("slow", wait_timeout=3, poll_interval=0.5,
                                                    destroy_on_failure=True))
    assert res.rc != 0
    assert "destroyed it (destroy_on_failure)" in r["msg"]
    assert r["changed"] is True and r["instance"] is None
    assert live(sim) == [] and len(sim.state()["instances"]) == 1
    # without destroy_on_failure the message says the instance this task created still bills
    res, r = call(sim, "vast_instance", create_args("slow2", wait_timeout=3, poll_interval=0.5))
    assert res.rc != 0 and r["changed"] is True
    assert "was created by this task and still exists, billing $" in r["msg"], r["msg"]
    assert "(destroy_on_failure is off)" in r["msg"], r["msg"]
    assert str(r["instance_id"]) in r["msg"] and len(live(sim)) == 1


def test_wait_ssh_fails_when_nothing_answers(sim):
    # The default host backend fakes addresses nobody listens on: waiting for SSH must time out.
    res, r = call(sim, "vast_instance", create_args("nossh", wait_ssh=True, wait_timeout=8,
                                                    connect_with="direct"))
    assert res.rc != 0
    assert "SSH" in r["msg"] and str(r["instance_id"]) in r["msg"]


def test_label_matching_several_instances_fails_listing_ids(sim):
    ids = sim.bulk(2, label_prefix="dup", status="running")
    for iid in ids:
        sim.ctl("POST", "instances/%s/force" % iid, {"actual_status": "running", "hold": False})
    res, r = call(sim, "vast_instance_info", {"label_prefix": "dup"})
    labels = [i["label"] for i in r["instances"]]
    # bulk labels are prefix+n; relabel both to the same label through the module by id
    for iid in ids:
        res, _ = call(sim, "vast_instance", {"id": iid, "label": "twin"})
        assert res.rc == 0, res.summary()
    res, r = call(sim, "vast_instance", {"label": "twin", "state": "stopped"})
    assert res.rc != 0
    assert "matches 2 instances" in r["msg"] and all(str(i) in r["msg"] for i in ids)
    assert sorted(r["instance_ids"]) == sorted(ids)
    assert labels


def test_exact_count_replicas(sim):
    base = create_args("rep")
    base.pop("state")
    res, r = call(sim, "vast_instance", dict(base, exact_count=3))
    assert res.rc == 0, res.summary()
    assert r["changed"] and [i["label"] for i in r["instances"]] == ["rep-1", "rep-2", "rep-3"]
    assert all(i["actual_status"] == "running" for i in r["instances"])
    res, r = call(sim, "vast_instance", dict(base, exact_count=3))
    assert res.rc == 0 and r["changed"] is False
    res, r = call(sim, "vast_instance", dict(base, exact_count=1), diff=True)
    assert res.rc == 0 and r["changed"] is True
    assert [i["label"] for i in r["instances"]] == ["rep-1"]
    assert r["diff"]["before"]["count"] == 3 and r["diff"]["after"]["count"] == 1
    assert sorted(x["label"] for x in live(sim)) == ["rep-1"]
    res, r = call(sim, "vast_instance", dict(base, exact_count=0))
    assert res.rc == 0 and r["changed"] and live(sim) == []


def test_preflight_min_credit_and_max_dph(sim):
    sim.set_credit(1.0)
    res, r = call(sim, "vast_instance", create_args("poor", min_credit=5))
    assert res.rc != 0 and "below min_credit" in r["msg"]
    res, found = call(sim, "vast_offer_info", {"gpu_names": ["H100 SXM"], "limit": 1})
    offer = found["offers"][0]
    res, r = call(sim, "vast_instance", dict(label="dear", offer_id=offer["id"], image=IMAGE,
                                             max_dph=offer["dph_total"] / 2))
    assert res.rc != 0 and "above max_dph" in r["msg"]
    assert live(sim) == [] and not api_requests(sim, "create")


def test_default_label_from_account_and_offer_pick_second(sim):
    # the module searches with its floors: direct SSH needs a direct port, the disk must fit
    res, found = call(sim, "vast_offer_info", {"gpu_names": ["RTX 3060"], "limit": 2, "min_direct_ports": 1,
                                               "min_disk_gb": 10})
    second = found["offers"][1]
    res, r = call(sim, "vast_instance", {"name": "budget", "image": IMAGE, "offer_pick": "second",
                                         "offer_filters": {"gpu_names": ["RTX 3060"]}, "poll_interval": 0.2})
    assert res.rc == 0, res.summary()
    assert r["instance"]["label"] == "simuser-budget"
    assert r["offers_tried"][0]["offer_id"] == second["id"]
    res, r = call(sim, "vast_instance", {"name": "budget", "state": "absent"})
    assert res.rc == 0 and r["changed"] and live(sim) == []


def test_offer_info_filters_order_and_units(sim):
    orders = (("value", "dlperf_per_dphtotal"), ("reliability", "reliability"), ("score", "score"))
    res, results = run_calls(sim, [
        ("vast_offer_info", {"gpu_names": ["rtx_4090", "RTX-3090"], "min_gpu_ram_gb": 24, "max_dph": 1.5,
                             "countries": ["us", "DE"], "min_reliability": 0.9, "limit": 20}),
        ("vast_offer_info", {"vm_capable": True, "datacenter": True, "min_num_gpus": 2, "offer_type": "reserved",
                             "regions": ["europe"], "query": {"compute_cap": {"gte": 800}}}),
        ("vast_offer_info", {"gpu_names": ["No Such GPU"]}),
    ] + [("vast_offer_info", {"order_by": o, "limit": 15}) for o, _f in orders])
    assert res.rc == 0 and not res.failed_tasks, res.summary()
    r, special, none = results[:3]
    offers = r["offers"]
    assert offers and r["summary"]["count"] == len(offers) <= 20
    assert all(o["gpu_name"] in ("RTX 4090", "RTX 3090") for o in offers)
    assert all(o["gpu_ram"] >= 24000 and o["gpu_ram_gb"] >= 24 for o in offers)
    assert all(o["dph_total"] <= 1.5 and o["country"] in ("US", "DE") for o in offers)
    assert all(o["reliability"] >= 0.9 for o in offers)
    prices = [o["dph_total"] for o in offers]
    assert prices == sorted(prices) and r["summary"]["cheapest"]["dph_total"] == prices[0]
    assert r["summary"]["query"]["gpu_ram"] == {"gte": 22855.7}   # 24 GB x 1024 x 0.93 (gpuhunt tolerance)
    assert all(o["vms_enabled"] and o["num_gpus"] >= 2 and o["compute_cap"] >= 800 for o in special["offers"])
    assert none["offers"] == [] and none["summary"]["cheapest"] is None
    for (order, field), rr in zip(orders, results[3:]):
        vals = [o[field] for o in rr["offers"]]
        assert len(vals) == 15 and vals == sorted(vals, reverse=True), order


def test_instance_info_filters_and_statistics(sim):
    sim.bulk(30, label_prefix="fleet-", status="running")
    sim.bulk(5, label_prefix="idle-", status="stopped")
    one = [r for r in sim.state()["instances"] if r["label"].startswith("fleet-")][0]
    res, (r, r2, stopped, fleet, by_label, by_id, by_gpu, nothing) = run_calls(sim, [
        ("vast_instance_info", {}),
        ("vast_instance_info", {"parallel": 4}),
        ("vast_instance_info", {"statuses": ["stopped"]}),
        ("vast_instance_info", {"label_prefix": "fleet-"}),
        ("vast_instance_info", {"label": one["label"]}),
        ("vast_instance_info", {"id": one["id"]}),
        ("vast_instance_info", {"gpu_names": [one["gpu_name"].replace(" ", "_").lower()]}),
        ("vast_instance_info", {"id": 1}),
    ])
    assert res.rc == 0 and not res.failed_tasks, res.summary()
    st = r["statistics"]
    assert st["count"] == 35 == len(r["instances"])
    assert st["by_status"] == {"running": 30, "stopped": 5}
    assert sum(g["instances"] for g in st["gpus"].values()) == 35
    assert st["total_gpus"] == sum(i["num_gpus"] for i in r["instances"])
    total = sum(i["dph_total"] for i in r["instances"])
    assert abs(st["total_dph"] - total) < 1e-4 and abs(st["average_dph"] - total / 35) < 1e-4
    running = sum(i["dph_total"] for i in r["instances"] if i["actual_status"] == "running")
    assert abs(st["running_dph"] - running) < 1e-4
    assert [i["id"] for i in r2["instances"]] == [i["id"] for i in r["instances"]]
    assert stopped["statistics"]["count"] == 5 and all(i["label"].startswith("idle-") for i in stopped["instances"])
    assert fleet["statistics"]["count"] == 30
    assert [i["id"] for i in by_label["instances"]] == [one["id"]]
    assert [i["id"] for i in by_id["instances"]] == [one["id"]]
    same_gpu = [i["id"] for i in r["instances"] if i["gpu_name"] == one["gpu_name"]]
    assert [i["id"] for i in by_gpu["instances"]] == same_gpu
    assert nothing["instances"] == [] and nothing["statistics"]["count"] == 0


def test_billing_matches_the_ledger(sim):
    t0 = sim.now()
    res, a = call(sim, "vast_instance", create_args("bill-a"))
    res, b = call(sim, "vast_instance", create_args("bill-b"))
    assert res.rc == 0, res.summary()
    sim.advance(3600)
    res, _ = call(sim, "vast_instance", {"label": "bill-b", "state": "stopped", "poll_interval": 0.2})
    sim.advance(7200)
    res, gone = call(sim, "vast_instance", create_args("bill-c"))
    sim.advance(600)
    call(sim, "vast_instance", {"label": "bill-c", "state": "absent"})
    ledger = sim.ledger()  # read at the end of the window: the sim clock keeps running
    end = ledger["now"]
    res, r = call(sim, "vast_billing_info", {"start": str(t0 - 1), "end": str(end)})
    assert res.rc == 0, res.summary()
    by_id = {i["id"]: i for i in r["instances"]}
    assert set(by_id) == {int(k) for k in ledger["instances"]}
    for k, v in ledger["instances"].items():
        e = by_id[int(k)]
        assert abs(e["total"] - v["total"]) < 0.01, (k, e, v)
        assert abs(e["gpu_cost"] - v["gpu"]) < 0.01
        assert abs(e["uptime_hours"] - v["running_seconds"] / 3600) < 0.02
    ea, eb, ec = by_id[a["instance"]["id"]], by_id[b["instance"]["id"]], by_id[gone["instance"]["id"]]
    assert ea["status"] == "running" and ea["projected_daily"] == pytest.approx(ea["rate_per_hour"] * 24, rel=1e-3)
    assert eb["status"] == "stopped" and eb["storage_while_stopped"] is True
    assert eb["current_per_hour"] == pytest.approx(eb["storage_per_hour"]) and eb["storage_per_hour"] > 0
    assert ec["status"] == "destroyed" and ec["current_per_hour"] == 0 and ec["total"] > 0
    t = r["totals"]
    assert t["instances"] == 3 and t["running"] == 1
    assert t["charges"] == pytest.approx(ledger["total"], abs=0.01)
    assert t["current_dph"] == pytest.approx(ea["current_per_hour"] + eb["current_per_hour"], abs=1e-4)
    assert t["projected_monthly"] == pytest.approx(t["current_dph"] * 720, abs=0.01)
    assert r["credit"] == pytest.approx(ledger["credit"], abs=0.05)  # read a moment apart
    assert len(r["sessions"]) == 3 and all(s["amount"] > 0 for s in r["sessions"])
    assert isinstance(r["invoices"], list) and r["charges"]
    # a narrower window costs less; a label prefix narrows instances
    res, r2 = call(sim, "vast_billing_info", {"start": str(end - 1800), "end": str(end), "label_prefix": "bill-a"})
    assert res.rc == 0 and [i["id"] for i in r2["instances"]] == [ea["id"]]
    assert r2["instances"][0]["total"] < ea["total"]


# Values of the right type that must still be refused before any API call (bad-input campaign).
INVALID_VALUES = [
    ("vast_instance", dict(create_args("v"), api_timeout=0), "api_timeout"),  # was silently 30, then rented
    ("vast_instance", dict(create_args("v"), api_timeout=-5), "api_timeout"),  # was "connect timeout to -5"
    ("vast_instance", dict(create_args("v"), api_retries=-1), "api_retries"),  # was "local variable 'resp'"
    ("vast_offer_info", {"api_retries": -3}, "api_retries"),
    ("vast_offer_info", {"api_timeout": 0}, "api_timeout"),
    ("vast_instance_info", {"api_timeout": -1}, "api_timeout"),
    ("vast_billing_info", {"api_retries": -1}, "api_retries"),
    ("vast_instance", {"label": "v", "offer_id": -5, "image": IMAGE, "state": "running"}, "offer_id"),
    ("vast_instance", {"label": "v", "offer_id": 0, "image": IMAGE}, "offer_id"),
    ("vast_instance", {"id": -1, "state": "absent"}, "id must be a positive"),
    ("vast_instance", {"id": 0, "state": "running"}, "id must be a positive"),
    ("vast_instance_info", {"id": 0}, "id must be a positive"),
    ("vast_instance_info", {"id": -7}, "id must be a positive"),
    ("vast_instance_info", {"gpu_names": [""]}, "gpu_names"),
    ("vast_instance_info", {"gpu_names": ["RTX 4090", "  "]}, "gpu_names"),
]


def test_bad_values_fail_before_any_api_call(sim):
    sim.clear_requests()
    res, results = run_calls(sim, [(m, a) for m, a, _w in INVALID_VALUES])
    for (module, margs, words), r in zip(INVALID_VALUES, results):
        assert r.get("failed"), (module, margs, r)
        assert r["msg"].startswith("invalid arguments") and words in r["msg"], (module, margs, r["msg"])
        assert r["changed"] is False, (module, margs)
    assert sim.requests() == []
    assert sim.state()["instances"] == []


def test_lost_answer_on_stop_start_destroy_is_reconciled(sim, tmp_path):
    """PUT state / DELETE performed by the server but the answer dropped: re-read, carry on."""
    audit = str(tmp_path / "audit.jsonl")
    res, r = call(sim, "vast_instance", create_args("lostmut", audit_log=audit))
    assert res.rc == 0, res.summary()
    iid = r["instance"]["id"]
    sim.add_faults([{"endpoint": "manage", "method": "PUT", "fault": "lost_response", "times": 2},
                    {"endpoint": "destroy", "fault": "lost_response"}])
    base = {"label": "lostmut", "poll_interval": 0.2, "wait_timeout": 60, "audit_log": audit}
    res, (stop, start, gone, again) = run_calls(sim, [
        ("vast_instance", dict(base, state="stopped")),
        ("vast_instance", dict(base, state="running")),
        ("vast_instance", dict(base, state="absent")),
        ("vast_instance", dict(base, state="absent")),
    ])
    for t in (stop, start, gone):
        assert not t.get("failed"), t.get("msg")
        assert t["changed"] is True
        assert any("answer lost" in a for a in t["actions"]), t["actions"]
    assert stop["instance"]["actual_status"] == "stopped"
    assert start["instance"]["actual_status"] == "running"
    assert gone["instance"] is None
    assert not again.get("failed") and again["changed"] is False
    # each mutation was sent exactly once (never re-sent), and the faults really fired
    manage = api_requests(sim, "manage", "PUT")
    assert len(manage) == 2 and all(x.get("fault") == "lost_response" for x in manage), manage
    destroys = api_requests(sim, "destroy")
    assert len(destroys) == 1 and destroys[0].get("fault") == "lost_response"
    assert live(sim, "lostmut") == []
    lines = [json.loads(x) for x in open(audit).read().splitlines()]
    assert [(x["action"], x["result"]) for x in lines] == [
        ("create", "ok"), ("stop", "reconciled"), ("start", "reconciled"), ("destroy", "reconciled")]
    assert all(x["instance_id"] == iid for x in lines)


def test_lost_answer_not_done_is_sent_once_more(sim, tmp_path):
    """A reset before the server acted: the re-read shows no change, so the (idempotent) request
    is sent once more and the task succeeds."""
    audit = str(tmp_path / "audit.jsonl")
    res, r = call(sim, "vast_instance", create_args("lostonce", audit_log=audit))
    assert res.rc == 0, res.summary()
    iid = r["instance"]["id"]
    sim.add_faults([{"endpoint": "manage", "method": "PUT", "fault": "reset"},
                    {"endpoint": "destroy", "fault": "reset"}])
    base = {"label": "lostonce", "poll_interval": 0.2, "audit_log": audit}
    res, (stop, destroy) = run_calls(sim, [("vast_instance", dict(base, state="stopped")),
                                           ("vast_instance", dict(base, state="absent"))])
    for t in (stop, destroy):
        assert not t.get("failed"), t.get("msg")
        assert t["changed"] is True and any("sent it once more" in a for a in t["actions"]), t["actions"]
    assert stop["instance"]["actual_status"] == "stopped"
    manage, destroys = api_requests(sim, "manage", "PUT"), api_requests(sim, "destroy")
    assert [x.get("fault") for x in manage] == ["reset", None], manage
    assert [x.get("fault") for x in destroys] == ["reset", None], destroys
    assert live(sim, "lostonce") == []
    lines = [json.loads(x) for x in open(audit).read().splitlines()]
    assert [(x["action"], x["result"]) for x in lines] == [
        ("create", "ok"), ("stop", "reconciled"), ("destroy", "reconciled")]


def test_lost_answer_twice_fails_naming_the_instance(sim):
    """Both sends lost before the server acted: a clear failure with the id, no third send."""
    res, r = call(sim, "vast_instance", create_args("lostfail"))
    assert res.rc == 0, res.summary()
    iid = r["instance"]["id"]
    sim.add_faults([{"endpoint": "manage", "method": "PUT", "fault": "reset", "times": 2},
                    {"endpoint": "destroy", "fault": "reset", "times": 2}])
    res, (stop, destroy) = run_calls(sim, [
        ("vast_instance", {"label": "lostfail", "state": "stopped", "poll_interval": 0.2}),
        ("vast_instance", {"label": "lostfail", "state": "absent", "poll_interval": 0.2}),
    ])
    for t, what in ((stop, "stop"), (destroy, "destroy")):
        assert t.get("failed"), t
        assert t["msg"].startswith("%s of instance %s" % (what, iid)), t["msg"]
        assert "sent twice" in t["msg"] and t["instance_id"] == iid
        assert "cannot talk to the vast.ai API" not in t["msg"]
    assert len(api_requests(sim, "manage", "PUT")) == 2
    assert len(api_requests(sim, "destroy")) == 2
    rows = live(sim, "lostfail")
    assert len(rows) == 1 and rows[0]["intended_status"] == "running"


def test_wait_rides_out_failed_polls(sim):
    """5xx answers to the status polls while waiting do not fail a stop that is happening."""
    res, r = call(sim, "vast_instance", create_args("waitpoll"))
    assert res.rc == 0, res.summary()
    sim.clear_requests()
    sim.add_faults([{"endpoint": "show", "fault": "500", "times": 3}])
    # api_retries 0: the client does not retry the 500s itself, the wait loop sees each one
    res, (stop,) = run_calls(sim, [("vast_instance", {"label": "waitpoll", "state": "stopped", "api_retries": 0,
                                                      "poll_interval": 0.2, "wait_timeout": 60})])
    assert not stop.get("failed"), stop.get("msg")
    assert stop["instance"]["actual_status"] == "stopped"
    shows = api_requests(sim, "show")
    assert [x.get("fault") for x in shows[:3]] == ["500"] * 3, shows
