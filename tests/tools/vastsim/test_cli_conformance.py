"""The official `vastai` CLI (PyPI vastai 1.9.1), run unchanged against the simulator via VAST_URL.

Each test asserts on the CLI's parsed output and on the simulator's own state.
"""
import json
import os
import sys

import pytest

from tests.helpers.vastsim import run_vastai, start_vastsim

from .util import api, list_all, search

VASTAI = os.path.join(os.path.dirname(sys.executable), "vastai")
pytestmark = pytest.mark.skipif(not os.path.exists(VASTAI), reason="official vastai CLI not installed (make setup)")


@pytest.fixture(scope="module")
def sim():
    with start_vastsim(seed=3) as s:
        yield s


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("cli-home")


def cli(sim, home, *args, ok=True):
    r = run_vastai(sim, home, *args)
    if ok:
        assert r.returncode == 0, f"vastai {' '.join(args)} → {r.returncode}\n{r.stdout}\n{r.stderr}"
        assert "Traceback" not in r.stderr, r.stderr
    return r


def cli_json(sim, home, *args):
    out = cli(sim, home, *args).stdout
    return json.loads(out)


@pytest.fixture(scope="module")
def running(sim):
    """An instance rented over plain HTTP (CLI calls cost ~1.5-4 s each, so tests share it)."""
    offer = search(sim, {"limit": 1, "order": [["id", "asc"]]})[0]
    iid = api(sim, "PUT", f"/api/v0/asks/{offer['id']}/", body={"image": "vllm/vllm-openai:latest", "disk": 20,
                                                                 "label": "shared"}).json()["new_contract"]
    sim.settle(iid, "running")
    return iid


def test_search_offers_query_order_and_units(sim, home):
    rows = cli_json(sim, home, "search", "offers", "gpu_name=RTX_4090 num_gpus>=2 reliability>0.95 gpu_ram>=20",
                    "--raw", "--limit", "8", "-o", "dph_total")
    assert rows, "no offers for a query the catalogue satisfies"
    assert all(r["gpu_name"] == "RTX 4090" and r["num_gpus"] >= 2 and r["reliability"] > 0.95 for r in rows)
    assert all(r["gpu_ram"] >= 20000 for r in rows)          # GB on the command line, MB on the wire
    assert [r["dph_total"] for r in rows] == sorted(r["dph_total"] for r in rows)
    # the CLI's default query (verified, rentable, not external) and numbers sent as strings
    direct = search(sim, {"gpu_name": {"eq": "RTX 4090"}, "num_gpus": {"gte": "2"}, "reliability": {"gt": "0.95"},
                          "gpu_ram": {"gte": "20000"}, "verified": {"eq": True}, "external": {"eq": False},
                          "rentable": {"eq": True}, "order": [["dph_total", "asc"]], "limit": 8, "allocated_storage": 5.0})
    assert [r["id"] for r in rows] == [r["id"] for r in direct]
    assert all(r["verified"] for r in rows)


def test_create_show_label_stop_start_reboot_destroy(sim, home):
    offer = search(sim, {"num_gpus": {"eq": 1}, "direct_port_count": {"gt": 0}, "limit": 1})[0]
    out = cli_json(sim, home, "create", "instance", str(offer["id"]), "--image", "vllm/vllm-openai:latest",
                   "--disk", "20", "--label", "cli-1", "--ssh", "--direct", "--env", "-p 8000:8000 -e HF_HOME=/data",
                   "--raw")
    iid = out["new_contract"]
    assert out["success"] is True and out["instance_api_key"]
    state = sim.instance(iid)
    assert state["label"] == "cli-1" and state["image_uuid"] == "vllm/vllm-openai:latest"
    assert state["image_runtype"] == "ssh_direc ssh_proxy"
    assert ["-p 8000:8000", "1"] in state["extra_env"] and ["HF_HOME", "/data"] in state["extra_env"]
    assert state["disk_space"] == 20.0 and state["offer_id"] == offer["id"]

    bulk = sim.bulk(30, label_prefix="page-")          # more than one page of 25
    sim.clear_requests()
    rows = cli_json(sim, home, "show", "instances", "--raw")
    mine = [r for r in rows if r["id"] == iid]
    assert len(mine) == 1 and mine[0]["extra_env"]["HF_HOME"] == "/data"   # SDK turned pairs into a dict
    assert set(bulk) <= {r["id"] for r in rows}
    pages = [e for e in sim.requests() if e["path"] == "/api/v1/instances"]
    assert len(pages) >= 2 and "after_token" in pages[-1]["query"]      # it followed next_token
    api(sim, "DELETE", "/api/v0/instances/", body={"instance_ids": bulk})

    sim.settle(iid, "running")
    row = cli_json(sim, home, "show", "instance", str(iid), "--raw")
    assert row["actual_status"] == "running" and row["intended_status"] == "running"
    assert row["ports"]["22/tcp"][0]["HostPort"] and "8000/tcp" in row["ports"]

    r = cli(sim, home, "label", "instance", str(iid), "renamed")
    assert f"label for {iid} set to renamed." in r.stdout
    assert sim.instance(iid)["label"] == "renamed"

    r = cli(sim, home, "stop", "instance", str(iid))
    assert f"stopping instance {iid}." in r.stdout
    assert sim.instance(iid)["intended_status"] == "stopped"
    sim.settle(iid, "stopped")

    r = cli(sim, home, "start", "instance", str(iid))
    assert f"starting instance {iid}." in r.stdout
    assert sim.instance(iid)["intended_status"] == "running"
    sim.settle(iid, "running")

    r = cli(sim, home, "reboot", "instance", str(iid))
    assert f"Rebooting instance {iid}." in r.stdout
    assert sim.instance(iid)["actual_status"] in ("rebooting", "running")

    r = cli(sim, home, "destroy", "instance", str(iid), "-y")
    assert sim.instance(iid)["destroyed_at"] is not None
    assert cli_json(sim, home, "show", "instance", str(iid), "--raw") == {"instances": None}


def test_show_user(sim, home):
    user = cli_json(sim, home, "show", "user", "--raw")
    assert user["username"] == "simuser" and "api_key" not in user
    assert user["credit"] == pytest.approx(sim.ledger()["credit"], abs=0.01)


def test_invoices_v1_invoices_and_charges(sim, home, running):
    iid = running
    sim.advance(7200)
    now = int(sim.now())
    inv = cli_json(sim, home, "show", "invoices-v1", "--invoices", "-s", str(now - 86400), "-e", str(now + 60), "--raw")
    assert inv["success"] and inv["results"][0]["amount"] == pytest.approx(-100.0)
    # the window ends at `now`, already past when the CLI asks, so its answer is fixed
    ch = cli_json(sim, home, "show", "invoices-v1", "--charges", "-s", str(now - 86400), "-e", str(now),
                  "-l", "100", "--raw")
    rows = {r["source"]: r for r in ch["results"]}
    assert f"instance-{iid}" in rows
    same = api(sim, "GET", "/api/v0/charges/", params={"select_filters": {"day": {"gte": now - 86400, "lte": now}},
                                                      "limit": 100}).json()
    assert {r["source"]: r["amount"] for r in same["results"]} == {k: r["amount"] for k, r in rows.items()}
    led = sim.ledger()["instances"][str(iid)]
    assert 0.9 * led["total"] < rows[f"instance-{iid}"]["amount"] <= led["total"]   # 2 h of a longer run
    assert {i["type"] for i in rows[f"instance-{iid}"]["items"]} == {"gpu", "disk"}


def test_attach_ssh_key(sim, home, running):
    iid = running
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIConformanceKey test@vastsim"
    r = cli(sim, home, "attach", "ssh", str(iid), key)
    assert "success" in r.stdout
    assert key in sim.instance(iid)["ssh_keys"]


def test_logs(sim, home, running):
    iid = running
    r = cli(sim, home, "logs", str(iid), "--tail", "2")
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2 and "container started: vllm/vllm-openai:latest" in lines[-1]
    assert any(e["path"].startswith("/instance_logs/") and e["status"] == 200 for e in sim.requests())


def test_errors_reach_the_cli_as_documented(sim, home, tmp_path):
    env_sim = type("S", (), {"env": {"VAST_URL": sim.url, "VAST_API_KEY": "not-the-key"}})()
    r = run_vastai(env_sim, tmp_path, "show", "instances", "--raw")
    # with --raw the CLI reports HTTP errors as JSON on stderr
    assert json.loads(r.stderr.strip().splitlines()[-1]) == {"error": True, "status_code": 401,
                                                             "msg": "Invalid user key"}
    assert "not-the-key" not in json.dumps(sim.requests())
    taken = search(sim, {"limit": 1})[0]["id"]
    sim.take_offer(taken)
    r = run_vastai(sim, tmp_path, "create", "instance", str(taken), "--image", "x", "--disk", "10", "--raw")
    err = json.loads(r.stderr.strip().splitlines()[-1])
    assert err["status_code"] == 404 and "no_such_ask" in err["msg"]
