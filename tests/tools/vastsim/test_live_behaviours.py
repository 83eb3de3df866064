"""Live API behaviours that clients running against vast.ai every day recorded (docs/vast-api-notes.md).

Each test names its source; the simulator code beside the behaviour names it too.
"""
import pytest

from .util import api, create, search, show


@pytest.fixture(scope="module")
def sim():
    from tests.helpers.vastsim import launch
    s = launch(offers=1200)
    yield s
    s.stop()


HOPPER = ["H100 SXM", "H100 PCIE", "H100 NVL", "H200"]


def test_cuda_filter_without_compute_cap_hides_hopper_offers(sim):
    # gpuhunt#142: cuda_max_good alone returned [] for H100/H200 where the query without it
    # returned offers; with compute_cap beside it (what dstack sends) they come back.
    base = {"gpu_name": {"in": HOPPER}, "limit": 500}
    plain = search(sim, base)
    assert plain and all(o["cuda_max_good"] >= 12.2 for o in plain)
    assert search(sim, dict(base, cuda_max_good={"gte": 11.8})) == []
    both = search(sim, dict(base, cuda_max_good={"gte": 11.8}, compute_cap={"gte": 600}))
    assert sorted(o["id"] for o in both) == sorted(o["id"] for o in plain)
    # other GPUs are not affected
    assert search(sim, {"gpu_name": {"eq": "RTX 4090"}, "cuda_max_good": {"gte": 11.8}, "limit": 5})


def test_gpu_ram_is_reported_below_the_marketing_size(sim):
    # gpuhunt test_constraints: a 48 GB L40S reports 46068 MB, a 94 GB H100 NVL 95830
    seen = {o["gpu_name"]: o["gpu_ram"] for o in search(sim, {"limit": 1200})}
    assert seen["L40S"] == 46068 and seen["H100 NVL"] == 95830 and seen["H200"] == 143771
    assert search(sim, {"gpu_name": {"eq": "L40S"}, "gpu_ram": {"gte": 48000}, "limit": 5}) == []
    assert search(sim, {"gpu_name": {"eq": "L40S"}, "gpu_ram": {"gte": 48 * 1024 * 0.93}, "limit": 5})


def test_cuda13_hosts_exist_for_current_vllm_images(sim):
    # vLLM's docker/Dockerfile builds v0.33 images on CUDA 13.0: the catalogue has hosts for them
    assert search(sim, {"cuda_max_good": {"gte": 13.0}, "compute_cap": {"gte": 600}, "limit": 5})


def test_no_direct_ports_means_no_ports_mapping(sim):
    # dstack filters direct_port_count >= 1 because it reads ports["<port>/tcp"]; without a
    # direct range nothing is published (SkyPilot query_ports: only the gateway's ssh ports)
    env = {"-p 8000:8000": "1"}
    none = search(sim, {"direct_port_count": {"eq": 0}, "limit": 1, "order": [["dph_total", "asc"]]})[0]
    some = search(sim, {"direct_port_count": {"gte": 2}, "limit": 1, "order": [["dph_total", "asc"]]})[0]
    a = create(sim, none["id"], env=env, runtype="ssh_direc ssh_proxy")["new_contract"]
    b = create(sim, some["id"], env=env, runtype="ssh_direc ssh_proxy")["new_contract"]
    ra, rb = sim.settle(a, "running"), sim.settle(b, "running")
    assert "ports" not in ra and ra["ssh_host"] and ra["ssh_port"]     # proxy SSH only
    assert set(rb["ports"]) == {"22/tcp", "8000/tcp"}
    for iid in (a, b):
        api(sim, "DELETE", f"/api/v0/instances/{iid}/")


def test_create_without_price_after_a_bid_search_rents_on_demand(sim):
    # vast-cli PR #403: search type=bid, create without price -> on-demand at the on-demand
    # price, and the create answer does not say so
    offer = search(sim, {"type": "bid", "limit": 1, "order": [["dph_total", "asc"]]})[0]
    out = create(sim, offer["id"], disk=10)
    assert set(out) >= {"success", "new_contract"} and "is_bid" not in out and "price" not in out
    row = show(sim, out["new_contract"])
    assert row["is_bid"] is False
    assert row["dph_total"] > offer["dph_total"]                      # billed above the bid price shown
    assert row["dph_total"] == pytest.approx(offer["dph_base"] + row["storage_total_cost"], rel=1e-3)
    api(sim, "DELETE", f"/api/v0/instances/{out['new_contract']}/")


def _refused_bid_leaves_a_stopped_instance(sim, r, offer):
    body = r.json()
    assert r.status_code == 400 and body["success"] is False and body["error"] == "insufficient_bid"
    iid = body["new_contract"]
    row = show(sim, iid)
    assert row is not None and row["cur_state"] == row["intended_status"] == row["next_state"] == "stopped"
    assert row["is_bid"] is True
    assert offer["id"] not in [o["id"] for o in search(sim, {"limit": 2000})]   # the machine is taken
    assert api(sim, "DELETE", f"/api/v0/instances/{iid}/").json()["success"]


def test_insufficient_bid_creates_the_instance_stopped_and_names_it(sim):
    # dstack PR #4036: the error answer carries new_contract; dstack destroys that instance
    offer = search(sim, {"type": "bid", "limit": 1})[0]
    r = api(sim, "PUT", f"/api/v0/asks/{offer['id']}/",
            body={"image": "i", "disk": 10, "price": round(offer["min_bid"] / 2, 4)})
    _refused_bid_leaves_a_stopped_instance(sim, r, offer)


def test_outbid_between_search_and_create(sim):
    # the listed min_bid went up after the search (another tenant bid more): same answer
    offer = search(sim, {"type": "bid", "limit": 1})[0]
    floor = sim.ctl("POST", f"offers/{offer['id']}/outbid", {})["min_bid"]
    assert floor > offer["min_bid"]
    r = api(sim, "PUT", f"/api/v0/asks/{offer['id']}/", body={"image": "i", "disk": 10, "price": offer["min_bid"]})
    _refused_bid_leaves_a_stopped_instance(sim, r, offer)
    # and a queued failure does the same on any offer, for lifecycle tests
    sim.ctl("POST", "create_failures", {"kind": "insufficient_bid"})
    offer = search(sim, {"type": "bid", "limit": 1})[0]
    r = api(sim, "PUT", f"/api/v0/asks/{offer['id']}/", body={"image": "i", "disk": 10, "price": offer["min_bid"]})
    _refused_bid_leaves_a_stopped_instance(sim, r, offer)
    assert sim.ctl("GET", "create_failures")["pending"] == []


def test_oci_runtime_failure_stays_created(sim):
    # dstack compute.py: actual_status "created" + "OCI runtime create failed" in status_msg never runs
    sim.ctl("POST", "create_failures", {"kind": "oci"})
    iid = create(sim, search(sim, {"limit": 1})[0]["id"])["new_contract"]
    sim.advance(120)
    row = show(sim, iid)
    assert row["actual_status"] == "created" and ": OCI runtime create failed:" in row["status_msg"]
    sim.advance(600)
    assert show(sim, iid)["actual_status"] == "created"
    api(sim, "DELETE", f"/api/v0/instances/{iid}/")


def test_outbid_instance_reports_stopped_in_all_three_states(sim):
    # dstack PR #4037: cur_state == intended_status == next_state == "stopped" when outbid
    offer = search(sim, {"type": "bid", "limit": 1})[0]
    iid = create(sim, offer["id"], price=offer["dph_base"])["new_contract"]   # well above any floor
    row = sim.ctl("POST", f"instances/{iid}/outbid", {})["instance"]
    assert row["cur_state"] == row["intended_status"] == row["next_state"] == "stopped"
    sim.advance(30)
    assert show(sim, iid)["actual_status"] == "stopped"
    sim.ctl("POST", "create_failures", {"kind": "outbid"})          # or while it is still loading
    iid2 = create(sim, search(sim, {"type": "bid", "limit": 1})[0]["id"], price=5.0)["new_contract"]
    sim.advance(10)
    row = show(sim, iid2)
    assert row["cur_state"] == row["intended_status"] == row["next_state"] == "stopped"
    assert row["actual_status"] != "running"
    for i in (iid, iid2):
        api(sim, "DELETE", f"/api/v0/instances/{i}/")


def test_destroying_a_gone_instance_answers_no_such_instance(sim):
    # dstack PR #4030: error no_such_instance, which dstack treats as done
    iid = create(sim, search(sim, {"limit": 1})[0]["id"])["new_contract"]
    assert api(sim, "DELETE", f"/api/v0/instances/{iid}/").json()["success"]
    for dummy in range(2):                        # a racing second destroy, and a third
        r = api(sim, "DELETE", f"/api/v0/instances/{iid}/")
        assert r.status_code == 404 and r.json()["error"] == "no_such_instance"
    r = api(sim, "DELETE", "/api/v0/instances/1/")
    assert r.json()["error"] == "no_such_instance"


def test_account_keys_rows_and_team_scoped_keys(sim):
    text = "ssh-ed25519 AAAAlive me@x"
    r = api(sim, "POST", "/api/v0/ssh/", body={"ssh_key": text})
    assert r.json()["key"]["public_key"] == text                       # Terraform bdb4bfa
    rows = api(sim, "GET", "/api/v0/ssh/").json()
    assert isinstance(rows, list) and [k["ssh_key"] for k in rows] == [text]   # Terraform 7929bf6
    sim.ctl("POST", "account", {"team_scoped": True})
    try:
        for method, path, body in (("GET", "/api/v0/ssh/", None), ("POST", "/api/v0/ssh/", {"ssh_key": text}),
                                   ("DELETE", f"/api/v0/ssh/{rows[0]['id']}/", None)):
            r = api(sim, method, path, body=body)
            # SkyPilot PR #10730 quotes this answer
            assert r.status_code == 400 and r.json() == {
                "success": False, "error": "team_ssh_keys_not_supported",
                "msg": "Team SSH keys are not supported. SSH keys can only be created in personal context."}
    finally:
        sim.ctl("POST", "account", {"team_scoped": False})
    assert api(sim, "DELETE", f"/api/v0/ssh/{rows[0]['id']}/").json()["success"]


def test_target_state_can_be_ignored_at_create(sim):
    # no live-tested client sends target_state: with ignore_target_state the instance starts,
    # so only create-then-stop is safe
    sim.ctl("POST", "account", {"ignore_target_state": True})
    try:
        iid = create(sim, search(sim, {"limit": 1})[0]["id"], target_state="stopped")["new_contract"]
        sim.advance(60)
        assert show(sim, iid)["actual_status"] == "running"
    finally:
        sim.ctl("POST", "account", {"ignore_target_state": False})
    iid2 = create(sim, search(sim, {"limit": 1})[0]["id"], target_state="stopped")["new_contract"]
    sim.advance(60)
    assert show(sim, iid2)["intended_status"] == "stopped" and show(sim, iid2)["actual_status"] != "running"
    for i in (iid, iid2):
        api(sim, "DELETE", f"/api/v0/instances/{i}/")
