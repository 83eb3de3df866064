"""Create, lifecycle, reading and mutating instances (vast-api.md §6–§10)."""
import time

import pytest
import requests

from .util import api, create, list_all, rent_any, search, show


def test_create_consumes_the_offer_and_second_rent_is_no_such_ask(vastsim):
    offer = search(vastsim, {"limit": 1})[0]
    out = create(vastsim, offer["id"], label="a")
    assert out["success"] is True and isinstance(out["new_contract"], int)
    assert out["instance_api_key"]
    assert offer["id"] not in [o["id"] for o in search(vastsim, {"limit": 10000})]
    r = api(vastsim, "PUT", f"/api/v0/asks/{offer['id']}/", body={"image": "x", "disk": 10})
    assert r.status_code == 404
    assert r.json()["error"] == "invalid_args" and "no_such_ask" in r.json()["msg"]
    assert r.json()["ask_id"] == offer["id"]


def test_create_accepts_the_cli_body_with_nulls(vastsim):
    offer = search(vastsim, {"limit": 1})[0]
    body = {"client_id": "me", "image": "vllm/vllm-openai:latest", "env": {"HF_TOKEN": "x", "-p 8000:8000": "1"},
            "price": None, "disk": 10.0, "label": None, "extra": None, "onstart": None, "image_login": None,
            "python_utf8": False, "lang_utf8": False, "use_jupyter_lab": False, "jupyter_dir": None,
            "force": False, "cancel_unavail": False, "template_hash_id": None, "user": None,
            "runtype": "ssh_direc ssh_proxy", "args": ["--model", "m"]}
    r = api(vastsim, "PUT", f"/api/v0/asks/{offer['id']}/", body=body)
    assert r.status_code == 200, r.text
    row = show(vastsim, r.json()["new_contract"])
    assert ["-p 8000:8000", "1"] in row["extra_env"] and ["HF_TOKEN", "x"] in row["extra_env"]
    assert row["image_runtype"] == "ssh_direc ssh_proxy" and row["image_args"] == ["--model", "m"]


@pytest.mark.parametrize("patch,status,error", [
    ({"env": "-e A=1"}, 400, "invalid_args"),
    ({"disk": 2}, 400, "invalid_args"),
    ({"label": "x" * 300}, 400, "invalid_args"),
    ({"price": 500}, 400, "invalid_price"),
    ({"runtype": "telnet"}, 400, "invalid_args"),
    ({"image": None}, 400, "invalid_args"),
    ({"onstart": "x" * 5000}, 400, "invalid_args"),
])
def test_create_validation(vastsim, patch, status, error):
    offer = search(vastsim, {"limit": 1})[0]
    body = dict({"image": "img", "disk": 10}, **patch)
    r = api(vastsim, "PUT", f"/api/v0/asks/{offer['id']}/", body=body)
    assert r.status_code == status and r.json()["error"] == error and r.json()["msg"]
    assert offer["id"] in [o["id"] for o in search(vastsim, {"limit": 10000})]  # not consumed


def test_vm_needs_vm_offer_and_ssh_key(vastsim):
    vm = search(vastsim, {"vms_enabled": {"eq": True}, "limit": 1})[0]
    novm = search(vastsim, {"vms_enabled": {"eq": False}, "limit": 1})[0]
    img = "docker.io/vastai/kvm:ubuntu_cli_22.04-2025-05-02"
    r = api(vastsim, "PUT", f"/api/v0/asks/{vm['id']}/", body={"image": img, "disk": 20})
    assert r.status_code == 400 and r.json()["error"] == "no_ssh_key_for_vm"
    assert api(vastsim, "POST", "/api/v0/ssh/", body={"ssh_key": "ssh-ed25519 AAAAkey me@x"}).status_code == 200
    r = api(vastsim, "PUT", f"/api/v0/asks/{novm['id']}/", body={"image": img, "disk": 20})
    assert r.status_code == 400 and r.json()["error"] == "invalid_args"
    out = create(vastsim, vm["id"], image=img)
    assert vastsim.instance(out["new_contract"])["ssh_keys"] == ["ssh-ed25519 AAAAkey me@x"]


def test_lifecycle_null_loading_running_with_ports_only_while_running(vastsim_factory):
    sim = vastsim_factory(speed=0.001)      # the clock moves only when the test says so
    offer = search(sim, {"direct_port_count": {"gte": 16}, "limit": 1})[0]
    iid = create(sim, offer["id"], runtype="ssh_direc ssh_proxy", env={"-p 8000:8000": "1"})["new_contract"]
    row = show(sim, iid)
    assert row["actual_status"] is None and row["intended_status"] == "running"
    assert isinstance(row["start_date"], float) and row["extra_env"] == [["-p 8000:8000", "1"]]
    assert row["ports"] is None and row["ssh_host"].endswith(".vast.ai") and isinstance(row["ssh_port"], int)
    sim.advance(4.5)
    row = show(sim, iid)
    assert row["actual_status"] == "loading" and row["ports"] is None
    sim.advance(39)
    assert show(sim, iid)["actual_status"] == "loading"
    sim.advance(1)
    row = show(sim, iid)
    assert row["actual_status"] == "running"
    sim.advance(120)
    row = show(sim, iid)
    assert row["uptime_mins"] == pytest.approx(2 + 0.5 / 60, abs=0.01)   # the current running session
    assert row["duration"] == pytest.approx(4.5 + 40 + 120, abs=1)
    assert row["cur_state"] == "running" and row["status_msg"].startswith("success")
    assert set(row["ports"]) == {"22/tcp", "8000/tcp"}
    host_port = row["ports"]["22/tcp"][0]["HostPort"]
    assert isinstance(host_port, str) and row["direct_port_start"] <= int(host_port) <= row["direct_port_end"]
    assert row["public_ipaddr"].startswith(("127.0.113.", "127.51.100."))  # loopback: never leaves the machine


def test_lifecycle_runs_on_its_own_with_a_fast_clock(vastsim):
    iid, _, _ = rent_any(vastsim)
    seen = set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status = show(vastsim, iid)["actual_status"]
        seen.add(status)
        if status == "running":
            break
        time.sleep(0.05)
    assert "running" in seen and seen <= {None, "loading", "running"}


def test_stop_start_reboot_recycle_destroy(vastsim_factory):
    vastsim = vastsim_factory(speed=0.001)
    iid, offer, _ = rent_any(vastsim)
    vastsim.settle(iid, "running")
    r = api(vastsim, "PUT", f"/api/v0/instances/{iid}/", body={"state": "stopped"})
    assert r.status_code == 200 and r.json()["success"] is True
    assert show(vastsim, iid)["intended_status"] == "stopped"
    row = vastsim.settle(iid, "stopped")
    assert row.get("ports") is None and row["cur_state"] == "stopped"
    assert api(vastsim, "PUT", f"/api/v0/instances/{iid}/", body={"state": "stopped"}).json()["success"]
    api(vastsim, "PUT", f"/api/v0/instances/{iid}/", body={"state": "running"})
    vastsim.settle(iid, "running")
    assert api(vastsim, "PUT", f"/api/v0/instances/reboot/{iid}/").json()["success"]
    assert show(vastsim, iid)["actual_status"] == "rebooting"
    vastsim.settle(iid, "running")
    assert api(vastsim, "PUT", f"/api/v0/instances/recycle/{iid}/").json()["success"]
    assert show(vastsim, iid)["actual_status"] == "loading"
    r = api(vastsim, "DELETE", f"/api/v0/instances/{iid}/")
    assert r.status_code == 200 and r.json()["success"] is True
    assert show(vastsim, iid) is None                       # 200 {"instances": null}
    r = api(vastsim, "DELETE", f"/api/v0/instances/{iid}/")
    assert r.status_code == 404 and r.json()["error"] == "no_such_instance"   # dstack PR #4030
    # destroy frees the machine: the offer is listed again
    assert offer["id"] in [o["id"] for o in search(vastsim, {"limit": 10000})]
    assert vastsim.instance(iid)["destroyed_at"] is not None


def test_missing_instance_errors(vastsim):
    assert show(vastsim, 999) is None
    assert api(vastsim, "PUT", "/api/v0/instances/999/", body={"state": "running"}).json()["error"] == "no_such_instance"
    assert api(vastsim, "PUT", "/api/v0/instances/reboot/999/").status_code == 400
    r = api(vastsim, "GET", "/api/v0/instances/abc/")
    assert r.status_code == 400 and r.json()["error"] == "invalid_id"


def test_label_and_label_too_long(vastsim):
    iid, _, _ = rent_any(vastsim)
    r = api(vastsim, "PUT", f"/api/v0/instances/{iid}/", body={"label": "llm-1"})
    assert r.json()["success"] and show(vastsim, iid)["label"] == "llm-1"
    r = api(vastsim, "PUT", f"/api/v0/instances/{iid}/", body={"label": "x" * 1025})
    assert r.status_code == 400 and r.json()["error"] == "label_too_long"
    r = api(vastsim, "PUT", f"/api/v0/instances/{iid}/", body={"state": "paused"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_args"


def test_v1_list_pagination_filters_and_label_counts(vastsim):
    ids = vastsim.bulk(60, label_prefix="b-")
    for iid in ids[:5]:
        api(vastsim, "PUT", f"/api/v0/instances/{iid}/", body={"label": "same"})
    rows, pages, last = list_all(vastsim)
    assert pages == 3 and [r["id"] for r in rows] == sorted(ids)
    assert last["total_instances"] == 60 and last["next_token"] is None
    r = api(vastsim, "GET", "/api/v1/instances/", params={"limit": 25})
    first = r.json()
    assert first["instances_found"] == 25 and first["next_token"]
    assert first["label_counts"]["same"] == 5 and sum(first["label_counts"].values()) == 60
    for row in first["instances"]:
        assert isinstance(row["start_date"], float) and isinstance(row["extra_env"], list)
    # limit is capped at 25, and <= 0 means 5
    assert api(vastsim, "GET", "/api/v1/instances/", params={"limit": 100}).json()["instances_found"] == 25
    assert api(vastsim, "GET", "/api/v1/instances/", params={"limit": 0}).json()["instances_found"] == 5
    # id ranges
    lo, hi = sorted(ids)[10], sorted(ids)[40]
    got, _, _ = list_all(vastsim, {"id": {"gte": lo, "lt": hi}})
    assert [r["id"] for r in got] == [i for i in sorted(ids) if lo <= i < hi]
    got, _, _ = list_all(vastsim, {"id": {"lte": lo}})
    assert [r["id"] for r in got] == [i for i in sorted(ids) if i <= lo]
    # label eq / in, with the CLI's {"in": [null]} for unlabelled
    got, _, _ = list_all(vastsim, {"label": {"eq": "same"}})
    assert sorted(r["id"] for r in got) == sorted(ids[:5])
    got, _, _ = list_all(vastsim, {"label": {"in": ["b-7", "b-9"]}})
    assert sorted(r["label"] for r in got) == ["b-7", "b-9"]
    iid, _, _ = rent_any(vastsim)
    got, _, _ = list_all(vastsim, {"label": {"in": [None]}})
    assert [r["id"] for r in got] == [iid]
    got, _, _ = list_all(vastsim, {"actual_status": {"in": ["running"]}})
    assert len(got) == 60
    # order_by desc, tiebreak by id
    got, _, _ = list_all(vastsim, order_by=[{"col": "id", "dir": "desc"}])
    assert [r["id"] for r in got] == sorted(ids + [iid], reverse=True)


def test_v1_list_gpu_name_filter_accepts_either_spelling(vastsim):
    iid, offer, _ = rent_any(vastsim, label="gpu")
    name = offer["gpu_name"]
    for spelling in (name, name.replace(" ", "_")):
        for cond in ({"eq": spelling}, {"in": [spelling]}):
            got, _, _ = list_all(vastsim, {"gpu_name": cond})
            assert [r["id"] for r in got] == [iid], (spelling, cond)
    got, _, _ = list_all(vastsim, {"gpu_name": {"notin": [name]}})
    assert got == []


def test_v1_list_errors(vastsim):
    for params in ({"select_filters": {"dph_total": {"lt": 1}}}, {"select_filters": {"num_gpus": {"eq": 1}}},
                   {"order_by": [{"col": "dph_total", "dir": "asc"}]}):
        r = api(vastsim, "GET", "/api/v1/instances/", params=params)
        assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = api(vastsim, "GET", "/api/v1/instances/", params={"after_token": "garbage!!"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_token"


def test_select_cols(vastsim):
    rent_any(vastsim, label="c")
    r = api(vastsim, "GET", "/api/v1/instances/", params={"select_cols": ["id", "label", "nonsense"]})
    row = r.json()["instances"][0]
    assert set(row) == {"id", "label", "nonsense"} and row["label"] == "c" and row["nonsense"] is None


def test_legacy_list(vastsim):
    iid, _, _ = rent_any(vastsim)
    r = api(vastsim, "GET", "/api/v0/instances", params={"owner": "me"})
    assert r.status_code == 200 and [x["id"] for x in r.json()["instances"]] == [iid]


def test_bulk_forms(vastsim):
    offers = search(vastsim, {"limit": 3, "order": [["id", "asc"]]})
    r = api(vastsim, "POST", "/api/v0/asks/bulk/", body={"ids": [o["id"] for o in offers] + [1], "image": "i", "disk": 10})
    assert r.status_code == 200
    res = r.json()["results"]
    assert [x["success"] for x in res] == [True, True, True, False]
    ids = r.json()["new_contracts"]
    for iid in ids:
        vastsim.settle(iid, "running")
    r = api(vastsim, "PUT", "/api/v0/instances/", body={"ids": ids[:2], "state": "stopped"})
    assert r.json()["success"]
    assert [show(vastsim, i)["intended_status"] for i in ids] == ["stopped", "stopped", "running"]
    r = api(vastsim, "DELETE", "/api/v0/instances/", body={"instance_ids": ids})
    assert r.json()["success"] and all(show(vastsim, i) is None for i in ids)


def test_instance_api_key_scope(vastsim):
    iid, _, out = rent_any(vastsim)
    other, _, _ = rent_any(vastsim)
    ik = out["instance_api_key"]
    assert show(vastsim, iid, key=ik)["id"] == iid
    assert api(vastsim, "PUT", f"/api/v0/instances/{iid}/", key=ik, body={"state": "stopped"}).json()["success"]
    assert api(vastsim, "GET", f"/api/v0/instances/{other}/", key=ik).status_code == 403
    assert api(vastsim, "PUT", f"/api/v0/instances/{iid}/", key=ik, body={"label": "x"}).status_code == 403
    assert api(vastsim, "GET", "/api/v1/instances/", key=ik).status_code == 403
    assert api(vastsim, "DELETE", f"/api/v0/instances/{iid}/", key=ik).json()["success"]
    assert show(vastsim, iid) is None


def test_auth_errors(vastsim):
    r = api(vastsim, "GET", "/api/v1/instances/", key="nope")
    assert r.status_code == 401 and r.json() == {"success": False, "error": "auth_error", "msg": "Invalid user key"}
    r = api(vastsim, "GET", "/api/v1/instances/", key=False)
    assert r.status_code == 401 and r.json()["error"] == "auth_error"
    r = api(vastsim, "GET", "/api/v0/charges/", key=False, params={"select_filters": {"day": {"gte": 0, "lte": 1}}})
    assert r.status_code == 403 and r.json()["msg"] == "This action requires login."
    r = api(vastsim, "GET", "/api/v0/charges/", key="nope", params={"select_filters": {"day": {"gte": 0, "lte": 1}}})
    assert r.status_code == 404 and r.json()["msg"] == "Invalid user key"
    # legacy ?api_key= works; the request log never keeps it
    r = requests.get(vastsim.url + "/api/v0/users/current", params={"api_key": vastsim.api_key}, timeout=5)
    assert r.status_code == 200 and "api_key" not in r.json()
    log = vastsim.requests()
    assert log and vastsim.api_key not in str(log)


def test_unknown_route_and_method(vastsim):
    r = api(vastsim, "GET", "/api/v0/nothing/")
    assert r.status_code == 404 and r.json()["success"] is False
    r = api(vastsim, "PATCH", "/api/v0/ssh/")
    assert r.status_code == 405


def test_trailing_slash_optional(vastsim):
    for path in ("/api/v0/users/current", "/api/v0/users/current/", "/api/v1/instances", "/api/v1/instances/"):
        assert api(vastsim, "GET", path).status_code == 200, path


def test_ssh_keys_account_and_instance(vastsim):
    r = api(vastsim, "POST", "/api/v0/ssh/", body={"ssh_key": "ssh-ed25519 AAAAone a@b"})
    assert r.status_code == 200 and r.json()["success"]
    key = r.json()["key"]
    assert key["public_key"] == "ssh-ed25519 AAAAone a@b" and isinstance(key["id"], int)
    listed = api(vastsim, "GET", "/api/v0/ssh/").json()
    # list rows carry the key in ssh_key only (Terraform provider 7929bf6)
    assert isinstance(listed, list) and listed[0]["ssh_key"] == key["public_key"] and "public_key" not in listed[0]
    assert api(vastsim, "POST", "/api/v0/ssh/", body={}).json()["error"] == "no_ssh_key"
    r = api(vastsim, "PUT", f"/api/v0/ssh/{key['id']}/", body={"id": key["id"], "ssh_key": "ssh-rsa AAAAtwo c@d"})
    assert r.json()["key"]["public_key"] == "ssh-rsa AAAAtwo c@d"
    iid, _, _ = rent_any(vastsim)   # account keys reach instances created afterwards
    assert vastsim.instance(iid)["ssh_keys"] == ["ssh-rsa AAAAtwo c@d"]
    r = api(vastsim, "POST", f"/api/v0/instances/{iid}/ssh/", body={"ssh_key": "ssh-ed25519 AAAAthree e@f"})
    assert r.json()["success"]
    assert vastsim.instance(iid)["ssh_keys"] == ["ssh-rsa AAAAtwo c@d", "ssh-ed25519 AAAAthree e@f"]
    r = api(vastsim, "DELETE", f"/api/v0/instances/{iid}/ssh/{key['id']}/")
    assert r.json()["msg"] == "SSH key removed from instance."
    assert api(vastsim, "DELETE", f"/api/v0/instances/{iid}/ssh/{key['id']}/").status_code == 404
    assert api(vastsim, "POST", "/api/v0/instances/999/ssh/", body={"ssh_key": "ssh-rsa AAAA x"}).status_code == 404
    assert api(vastsim, "DELETE", f"/api/v0/ssh/{key['id']}/").json()["success"]
    assert api(vastsim, "GET", "/api/v0/ssh/").json() == []


def test_logs_result_url_is_fetchable_without_auth(vastsim):
    iid, _, _ = rent_any(vastsim, image="my/image:1")
    vastsim.settle(iid, "running")
    r = api(vastsim, "PUT", f"/api/v0/instances/request_logs/{iid}/", body={"tail": "2"})
    assert r.status_code == 200 and r.json()["success"]
    url = r.json()["result_url"]
    assert url.startswith(vastsim.url)
    text = None
    for _ in range(30):
        got = requests.get(url, timeout=5)
        if got.status_code == 200:
            text = got.text
            break
        time.sleep(0.3)
    assert text is not None and len(text.strip().splitlines()) == 2 and "my/image:1" in text
    assert api(vastsim, "PUT", "/api/v0/instances/request_logs/999/").status_code == 404


def test_execute(vastsim):
    iid, _, _ = rent_any(vastsim)
    vastsim.settle(iid, "running")
    r = api(vastsim, "PUT", f"/api/v0/instances/command/{iid}/", body={"command": "ls -l /"})
    assert r.status_code == 200 and r.json()["writeable_path"] and r.json()["result_url"]
    r = api(vastsim, "PUT", f"/api/v0/instances/command/{iid}/", body={"command": "cat /etc/passwd"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_args"


def test_cancel_unavail_and_scheduling(vastsim):
    a, b = search(vastsim, {"limit": 2, "order": [["id", "asc"]]})
    vastsim.ctl("POST", f"offers/{a['id']}/unavail")
    r = api(vastsim, "PUT", f"/api/v0/asks/{a['id']}/", body={"image": "i", "disk": 10, "cancel_unavail": True})
    assert r.status_code == 410 and r.json()["error"] == "no_such_ask"
    out = create(vastsim, a["id"], cancel_unavail=False)     # created, but stopped
    row = show(vastsim, out["new_contract"])
    assert row["intended_status"] == "stopped" and row["actual_status"] == "stopped"
    # a stopped instance whose GPU another tenant took sits in scheduling
    iid = create(vastsim, b["id"])["new_contract"]
    vastsim.settle(iid, "running")
    api(vastsim, "PUT", f"/api/v0/instances/{iid}/", body={"state": "stopped"})
    vastsim.settle(iid, "stopped")
    vastsim.take_offer(b["id"])
    api(vastsim, "PUT", f"/api/v0/instances/{iid}/", body={"state": "running"})
    vastsim.advance(3600)
    row = show(vastsim, iid)
    assert row["intended_status"] == "running" and row["actual_status"] == "stopped"
    assert "Scheduling" in row["status_msg"]
    vastsim.ctl("POST", f"offers/{b['id']}/release")
    vastsim.settle(iid, "running")


def test_force_and_hold(vastsim):
    iid, _, _ = rent_any(vastsim)
    vastsim.force(iid, "loading", hold=True)
    vastsim.advance(3600)
    assert show(vastsim, iid)["actual_status"] == "loading"
    vastsim.force(iid, "loading", hold=False)
    vastsim.settle(iid, "running")
    vastsim.force(iid, "exited", hold=True)
    vastsim.advance(600)
    assert show(vastsim, iid)["actual_status"] == "exited"
    vastsim.force(iid, "scheduling")
    row = show(vastsim, iid)
    assert row["intended_status"] == "running" and row["actual_status"] == "stopped"


def test_user(vastsim):
    r = api(vastsim, "GET", "/api/v0/users/current")
    u = r.json()
    assert r.status_code == 200 and u["credit"] == pytest.approx(100.0, abs=1e-6)
    assert u["host_agreement_accepted"] is False and "api_key" not in u
