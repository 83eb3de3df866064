"""Fault injection, rate limits, latency, the request log and --state persistence."""
import concurrent.futures
import json
import time

import pytest
import requests
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.helpers.vastsim import start_vastsim

from .util import api, create, list_all, search, show


def test_runtime_fault_statuses_times_and_after(vastsim):
    vastsim.add_faults([{"endpoint": "list", "fault": "503", "times": 2, "after": 1}])
    codes = [api(vastsim, "GET", "/api/v1/instances/").status_code for _ in range(5)]
    assert codes == [200, 503, 503, 200, 200]
    vastsim.add_faults([{"endpoint": "*", "method": "POST", "fault": "429"}])
    assert api(vastsim, "GET", "/api/v1/instances/").status_code == 200      # method does not match
    r = api(vastsim, "POST", "/api/v0/bundles/", body={})
    assert r.status_code == 429 and r.json() == {"detail": "API requests too frequent endpoint threshold=1.0"}
    listed = vastsim.ctl("GET", "faults")["rules"]
    assert [x["fired"] for x in listed] == [2, 1]
    vastsim.add_faults([{"endpoint": "show", "fault": "500", "times": -1}])
    assert all(api(vastsim, "GET", "/api/v0/instances/1/").status_code == 500 for _ in range(3))
    vastsim.clear_faults()
    assert api(vastsim, "GET", "/api/v0/instances/1/").status_code == 200
    log = vastsim.requests()
    assert [e["status"] for e in log if e["endpoint"] == "show"] == [500, 500, 500, 200]
    assert all(e.get("fault") == "500" for e in log if e["endpoint"] == "show" and e["status"] == 500)


def test_lost_response_creates_but_the_client_gets_no_answer(vastsim):
    offer = search(vastsim, {"limit": 1})[0]
    vastsim.add_faults([{"endpoint": "create", "fault": "lost_response"}])
    with pytest.raises(requests.ConnectionError):
        api(vastsim, "PUT", f"/api/v0/asks/{offer['id']}/", body={"image": "i", "disk": 10, "label": "lost"})
    rows, _, _ = list_all(vastsim, {"label": {"eq": "lost"}})
    assert len(rows) == 1                       # it exists: reconcile by label
    r = api(vastsim, "PUT", f"/api/v0/asks/{offer['id']}/", body={"image": "i", "disk": 10, "label": "lost"})
    assert r.status_code == 404 and "no_such_ask" in r.json()["msg"]   # a blind retry fails
    assert [e.get("fault") for e in vastsim.requests() if e["endpoint"] == "create"] == ["lost_response", None]


def test_reset_and_timeout(vastsim):
    vastsim.add_faults([{"endpoint": "user", "fault": "reset"},
                        {"endpoint": "list", "fault": "timeout", "seconds": 3}])
    with pytest.raises(requests.ConnectionError):
        api(vastsim, "GET", "/api/v0/users/current")
    assert api(vastsim, "GET", "/api/v0/users/current").status_code == 200
    t = time.monotonic()
    with pytest.raises(requests.Timeout):
        api(vastsim, "GET", "/api/v1/instances/", timeout=0.5)
    assert time.monotonic() - t < 2
    # the held connection does not block other requests
    assert api(vastsim, "GET", "/api/v0/users/current").status_code == 200


def test_faults_at_startup_short_form_and_json(vastsim_factory):
    sim = vastsim_factory(faults="search:502:times=2,create:lost_response")
    assert [api(sim, "POST", "/api/v0/bundles/", body={}).status_code for _ in range(3)] == [502, 502, 200]
    rules = sim.ctl("GET", "faults")["rules"]
    assert [(r["endpoint"], r["fault"]) for r in rules] == [("search", "502"), ("create", "lost_response")]
    sim2 = vastsim_factory(faults=json.dumps([{"endpoint": "user", "fault": "504"}]))
    assert api(sim2, "GET", "/api/v0/users/current").status_code == 504


def test_bad_fault_rules_are_rejected(vastsim):
    with pytest.raises(RuntimeError, match="400"):
        vastsim.add_faults([{"endpoint": "create", "fault": "explode"}])
    with pytest.raises(RuntimeError, match="400"):
        vastsim.add_faults([{"endpoint": "nowhere", "fault": "500"}])


def test_bad_faults_option_exits_with_a_message(tmp_path):
    with pytest.raises(RuntimeError, match="unknown fault"):
        with start_vastsim(faults="create:boom"):
            pass


def test_rate_limits(vastsim_factory):
    sim = vastsim_factory(rate_limits=True)
    first = api(sim, "GET", "/api/v1/instances/")
    second = api(sim, "GET", "/api/v1/instances/")
    assert first.status_code == 200 and second.status_code == 429
    assert second.json() == {"detail": "API requests too frequent endpoint threshold=1.0"}
    assert "Retry-After" not in second.headers
    assert api(sim, "GET", "/api/v0/users/current").status_code == 200   # other endpoints unaffected
    time.sleep(1.05)
    assert api(sim, "GET", "/api/v1/instances/").status_code == 200
    codes = [api(sim, "POST", "/api/v0/bundles/", body={"limit": 1}).status_code for _ in range(11)]
    assert codes == [200] * 10 + [429]


def test_no_rate_limits_by_default(vastsim):
    assert all(api(vastsim, "GET", "/api/v1/instances/").status_code == 200 for _ in range(5))


def test_latency_delays_each_request_without_serialising_them(vastsim_factory):
    sim = vastsim_factory(latency=300)
    t = time.monotonic()
    assert api(sim, "GET", "/api/v0/users/current").status_code == 200
    single = time.monotonic() - t
    assert single >= 0.3
    t = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: api(sim, "GET", "/api/v1/instances/").status_code, range(8)))
    together = time.monotonic() - t
    assert codes == [200] * 8
    assert together < 8 * 0.3 / 2        # overlapped, not 8 × 300 ms in a row


def test_request_log_never_keeps_secrets(vastsim):
    iid = create(vastsim, search(vastsim, {"limit": 1})[0]["id"])["new_contract"]
    requests.get(vastsim.url + "/api/v1/instances/", params={"api_key": vastsim.api_key}, timeout=5)
    api(vastsim, "GET", "/api/v1/instances/", key="wrong-secret-key")
    log = vastsim.requests()
    text = json.dumps(log)
    assert vastsim.api_key not in text and "wrong-secret-key" not in text and "Authorization" not in text
    assert {e["endpoint"] for e in log} >= {"search", "create", "list"}
    assert all(set(e) >= {"t", "method", "path", "query", "status", "endpoint"} for e in log)
    vastsim.clear_requests()
    assert vastsim.requests() == []
    assert show(vastsim, iid)["id"] == iid


def test_state_persists_across_restarts(tmp_path):
    path = tmp_path / "state.json"
    with start_vastsim(state=str(path), speed=0.001) as sim:
        offer = search(sim, {"limit": 1})[0]
        iid = create(sim, offer["id"], label="keep")["new_contract"]
        api(sim, "POST", "/api/v0/ssh/", body={"ssh_key": "ssh-ed25519 AAAAk me@x"})
        sim.advance(3600)
        before = sim.ledger()
        now = sim.now()
    with start_vastsim(state=str(path), speed=0.001) as sim:
        row = show(sim, iid)
        assert row["label"] == "keep" and row["actual_status"] == "running"
        assert offer["id"] not in [o["id"] for o in search(sim, {"limit": 10000})]
        assert sim.now() == pytest.approx(now, abs=5)
        assert sim.ledger()["instances"][str(iid)]["total"] == pytest.approx(before["instances"][str(iid)]["total"], rel=1e-3)
        assert len(api(sim, "GET", "/api/v0/ssh/").json()) == 1
        assert create(sim, search(sim, {"limit": 1})[0]["id"])["new_contract"] == iid + 1


JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
                       lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                       max_leaves=8)


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(body=st.dictionaries(st.sampled_from(["num_gpus", "gpu_name", "order", "limit", "type", "dph_total",
                                             "geolocation", "allocated_storage", "bogus"]), JSONISH, max_size=4))
def test_any_search_body_gets_json_200_or_400(shared_sim, body):
    r = api(shared_sim, "POST", "/api/v0/bundles/", body=body)
    assert r.status_code in (200, 400), r.text
    assert r.headers["Content-Type"] == "application/json"
    data = r.json()
    assert "offers" in data if r.status_code == 200 else (data["success"] is False and data["msg"])


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(body=st.dictionaries(st.sampled_from(["image", "disk", "env", "label", "price", "runtype", "args",
                                             "onstart", "target_state"]), JSONISH, max_size=5))
def test_any_create_body_gets_json_answer(shared_sim, body):
    r = api(shared_sim, "PUT", "/api/v0/asks/1/", body=body)
    assert r.status_code in (400, 404), r.text
    assert r.json()["success"] is False and r.json()["error"]


@pytest.fixture(scope="module")
def shared_sim():
    with start_vastsim() as sim:
        yield sim


def test_a_handler_crash_is_a_json_500_and_the_server_lives_on(vastsim):
    vastsim.add_faults([{"endpoint": "list", "fault": "crash"}])
    r = api(vastsim, "GET", "/api/v1/instances/")
    assert r.status_code == 500 and r.headers["Content-Type"] == "application/json"
    assert r.json()["error"] == "server_error" and "Traceback" not in r.text
    assert api(vastsim, "GET", "/api/v1/instances/").status_code == 200
    assert "injected handler crash" in vastsim.output()      # the detail goes to the operator's log
