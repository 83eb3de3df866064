import json

import pytest

from ansible_collections.llmops.vastai.plugins.module_utils import client as C
from ansible_collections.llmops.vastai.plugins.module_utils.endpoints import port_map, ssh_endpoint

from .fakeapi import FakeApi

KEY = "secret-key-0123456789"


@pytest.fixture
def api():
    fake = FakeApi()
    yield fake
    fake.stop()


def mk(api, **kw):
    kw.setdefault("backoff", 0.01)
    return C.VastClient(KEY, api_url=api.url, **kw)


def test_bearer_header_only_and_trailing_slash_paths(api):
    api.script("GET", "/api/v0/instances/7/", (200, {"instances": {"id": 7, "label": "a"}}))
    row = mk(api).get_instance(7)
    assert row == {"id": 7, "label": "a"}
    req = api.requests[0]
    assert req["headers"]["Authorization"] == "Bearer " + KEY
    assert KEY not in req["raw_url"]
    assert req["query"] == {"owner": "me"}


def test_api_url_from_env(api, monkeypatch):
    monkeypatch.setenv("VAST_URL", api.url + "/")
    c = C.VastClient(KEY)
    assert c.api_url == api.url
    monkeypatch.delenv("VAST_URL")
    assert C.VastClient(KEY).api_url == C.DEFAULT_API_URL


def test_get_retried_on_429_and_503(api):
    api.script("GET", "/api/v0/users/current",
               (429, "API requests too frequent"), (503, {"msg": "busy"}), (200, {"id": 1, "api_key": KEY}))
    user = mk(api).current_user()
    assert user == {"id": 1}  # the key never comes back to the caller
    assert len(api.requests) == 3


def test_get_retried_on_500(api):
    api.script("GET", "/api/v0/users/current", (500, "<html>oops</html>"), (200, {"id": 3}))
    assert mk(api).current_user()["id"] == 3
    assert len(api.requests) == 2


def test_get_retried_on_reset(api):
    api.script("GET", "/api/v0/users/current", ("reset", None), (200, {"id": 2}))
    assert mk(api).current_user()["id"] == 2


def test_search_post_is_retried(api):
    api.script("POST", "/api/v0/bundles/", (502, "bad gateway"), (200, {"offers": [{"id": 5}]}))
    assert mk(api).search_offers({"limit": 1}) == [{"id": 5}]
    assert api.requests[-1]["body"] == {"limit": 1}


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_mutation_not_retried_on_5xx(api, status):
    api.script("PUT", "/api/v0/asks/3/", (status, {"success": False, "error": "boom", "msg": "x"}),
               (200, {"success": True, "new_contract": 9}))
    with pytest.raises(C.VastError) as e:
        mk(api).create_instance(3, {"image": "img"})
    assert e.value.status == status
    assert len(api.requests) == 1


def test_mutation_not_retried_on_reset(api):
    api.script("PUT", "/api/v0/asks/3/", ("reset", None), (200, {"success": True, "new_contract": 9}))
    with pytest.raises(C.VastConnectionError) as e:
        mk(api).create_instance(3, {"image": "img"})
    assert KEY not in str(e.value)
    assert len(api.requests) == 1


def test_mutation_retried_after_429_refusal(api):
    api.script("PUT", "/api/v0/asks/3/", (429, {"detail": "API requests too frequent endpoint threshold=4.5"}),
               (200, {"success": True, "new_contract": 9}))
    assert mk(api).create_instance(3, {"image": "img"})["new_contract"] == 9
    assert api.requests[-1]["body"]["client_id"] == "me"


@pytest.mark.parametrize("status,body,cls,code", [
    (401, {"success": False, "error": "auth_error", "msg": "Invalid user key"}, C.VastAuthError, "auth_error"),
    (404, {"success": False, "error": "auth_error", "msg": "Invalid user key"}, C.VastAuthError, "auth_error"),
    (403, {"success": False, "error": "auth_error", "msg": "This action requires login."}, C.VastAuthError, "auth_error"),
    (404, {"success": False, "error": "invalid_args", "msg": "error 404/3603: no_such_ask Instance type by id 5 is not available."},
     C.VastOfferUnavailableError, "invalid_args"),
    (410, {"success": False, "error": "no_such_ask", "msg": "no longer available"}, C.VastOfferUnavailableError, "no_such_ask"),
    (404, {"success": False, "error": "not_found", "msg": "gone"}, C.VastNotFoundError, "not_found"),
    (400, {"success": False, "error": "invalid_args", "msg": "bad disk"}, C.VastApiError, "invalid_args"),
    (500, "<html>oops</html>", C.VastApiError, None),
    (200, {"success": False, "error": "Invalid date range"}, C.VastApiError, "Invalid date range"),
])
def test_typed_errors(api, status, body, cls, code):
    api.script("PUT", "/api/v0/instances/4/", (status, body))
    with pytest.raises(cls) as e:
        mk(api).set_state(4, "running")
    assert e.value.code == code
    assert e.value.status == status
    assert e.value.msg
    assert KEY not in str(e.value)


def test_429_exhausted_is_rate_limit_error(api):
    api.handler = lambda m, p, q, b: (429, "API requests too frequent")
    with pytest.raises(C.VastRateLimitError) as e:
        mk(api, retries=2).current_user()
    assert "too frequent" in e.value.msg
    assert len(api.requests) == 3


def test_non_json_success_body(api):
    api.script("GET", "/api/v0/users/current", (200, "not json"))
    with pytest.raises(C.VastApiError):
        mk(api).current_user()


def test_unreachable_is_connection_error():
    c = C.VastClient(KEY, api_url="http://127.0.0.1:9", retries=1, backoff=0.01, timeout=2)
    with pytest.raises(C.VastConnectionError) as e:
        c.current_user()
    assert KEY not in str(e.value)


def test_get_instance_gone(api):
    api.script("GET", "/api/v0/instances/8/", (200, {"instances": None}))
    api.script("GET", "/api/v0/instances/9/", (404, {"success": False, "error": "no_such_instance", "msg": "x"}))
    c = mk(api)
    assert c.get_instance(8) is None
    assert c.get_instance(9) is None


def _paging_handler(ids, page_log=None):
    """v1 list semantics: select_filters on id/label, order by id, 25 rows, opaque token."""
    import base64

    def handler(method, path, q, body):
        if path != "/api/v1/instances/":
            return 404, {"success": False, "error": "not_found", "msg": path}
        sf = json.loads(q.get("select_filters", "{}"))
        order = json.loads(q.get("order_by", '[{"col":"id","dir":"asc"}]'))[0]["dir"]
        rows = sorted(ids, reverse=(order == "desc"))
        idf = sf.get("id", {})
        ops = {"gte": lambda a, b: a >= b, "lt": lambda a, b: a < b, "gt": lambda a, b: a > b,
               "lte": lambda a, b: a <= b}
        rows = [r for r in rows if all(ops[o](r, v) for o, v in idf.items())]
        total = len(rows)
        start = 0
        if q.get("after_token"):
            start = int(base64.b64decode(q["after_token"]).decode())
        limit = min(int(q.get("limit", 25)), 25)
        page = rows[start:start + limit]
        nxt = base64.b64encode(str(start + limit).encode()).decode() if start + limit < total else None
        if page_log is not None:
            page_log.append(sf)
        return 200, {"success": True, "instances": [{"id": i, "label": "x%d" % i} for i in page],
                     "instances_found": len(page), "total_instances": total, "next_token": nxt}
    return handler


@pytest.mark.parametrize("n", [0, 1, 25, 26, 49, 50, 51, 333])
@pytest.mark.parametrize("parallel", [1, 4])
def test_list_instances_complete(api, n, parallel):
    ids = [1000 + 3 * i for i in range(n)]
    api.handler = _paging_handler(ids)
    rows = mk(api).list_instances(parallel=parallel)
    assert sorted(r["id"] for r in rows) == ids
    assert len({r["id"] for r in rows}) == n


def test_list_parallel_merges_caller_id_filter(api):
    ids = list(range(1, 301))
    log = []
    api.handler = _paging_handler(ids, log)
    rows = mk(api).list_instances({"id": {"gte": 100}}, parallel=3)
    assert sorted(r["id"] for r in rows) == list(range(100, 301))
    assert all(f["id"].get("gte", 0) >= 100 for f in log)


def test_list_parallel_falls_back_when_count_does_not_match(api):
    ids = list(range(1, 200))
    h = _paging_handler(ids)

    def lying(method, path, q, body):
        status, out = h(method, path, q, body)
        if "id" not in json.loads(q.get("select_filters", "{}")) and not q.get("after_token"):
            out["total_instances"] = out["total_instances"] + 1  # rows appeared meanwhile
        return status, out
    api.handler = lying
    rows = mk(api).list_instances(parallel=4)
    assert sorted(r["id"] for r in rows) == ids


def test_list_parallel_fewer_requests_in_flight_sequence(api):
    ids = list(range(1, 1001))
    api.handler = _paging_handler(ids)
    c = mk(api)
    c.list_instances(parallel=1)
    seq = c.calls
    c.calls = 0
    c.list_instances(parallel=8)
    # parallel pays a few extra partial pages, never more than one per range plus the two probes
    assert c.calls <= seq + 8 + 2


def test_charges_and_invoices_paged(api):
    api.script("GET", "/api/v0/charges/", (200, {"success": True, "results": [{"amount": 1}], "next_token": "t"}),
               (200, {"success": True, "results": [{"amount": 2}], "next_token": None}))
    api.script("GET", "/api/v1/invoices/", (200, {"success": True, "results": [], "next_token": None}))
    c = mk(api)
    assert [r["amount"] for r in c.charges(1, 2)] == [1, 2]
    assert json.loads(api.requests[0]["query"]["select_filters"]) == {"day": {"gte": 1, "lte": 2}}
    assert api.requests[1]["query"]["after_token"] == "t"
    assert c.invoices(1, 2) == []


def test_logs_fetches_result_url_without_key(api):
    api.script("PUT", "/api/v0/instances/request_logs/4/", (200, {"success": True, "result_url": api.url + "/logs/x"}))
    api.script("GET", "/logs/x", (404, "not yet"), (200, "a\nb\nc"))
    text = mk(api).logs(4, tail=2, poll_interval=0.01)
    assert text == "b\nc"
    fetch = [r for r in api.requests if r["path"] == "/logs/x"]
    assert all("Authorization" not in r["headers"] for r in fetch)


def test_no_key_refused():
    with pytest.raises(C.VastAuthError):
        C.VastClient("", api_url="http://127.0.0.1:9")


def test_ssh_endpoint_direct_proxy():
    row = {"public_ipaddr": "1.2.3.4", "ssh_host": "ssh5.vast.ai", "ssh_port": 20000,
           "ports": {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": "40022"}], "8000/tcp": [{"HostPort": "40100"}]}}
    assert ssh_endpoint(row) == {"host": "1.2.3.4", "port": 40022, "user": "root", "kind": "direct"}
    assert ssh_endpoint(row, "proxy") == {"host": "ssh5.vast.ai", "port": 20000, "user": "root", "kind": "proxy"}
    assert port_map(row) == {"22/tcp": 40022, "8000/tcp": 40100}
    loading = dict(row, ports=None)
    assert ssh_endpoint(loading)["kind"] == "proxy"
    assert ssh_endpoint(loading, "direct") is None
    assert ssh_endpoint({"ssh_host": "h", "ssh_port": "7", "image_runtype": "jupyter_proxy ssh_proxy"})["port"] == 8
    assert ssh_endpoint({}) is None
    assert ssh_endpoint({"actual_status": None}) is None


def test_negative_retries_still_make_one_attempt(api):
    # attempts = 1 + retries used to be <= 0: "cannot access local variable 'resp'"
    api.script("PUT", "/api/v0/instances/4/", (200, {"success": True}))
    api.script("POST", "/api/v0/bundles/", (200, {"offers": [{"id": 1}]}))
    api.script("PUT", "/api/v0/asks/5/", (429, {"detail": "too frequent"}))
    c = mk(api, retries=-3)
    assert c.retries == 0
    assert c.set_state(4, "stopped") == {"success": True}
    assert c.search_offers({}) == [{"id": 1}]
    with pytest.raises(C.VastRateLimitError):
        c.create_instance(5, {})
    assert [r["method"] for r in api.requests] == ["PUT", "POST", "PUT"]  # one attempt each


@pytest.mark.parametrize("timeout", [0, -5, -0.5])
def test_non_positive_timeout_is_refused_up_front(timeout):
    with pytest.raises(C.VastError) as e:
        C.VastClient(KEY, api_url="http://127.0.0.1:9", timeout=timeout)
    assert "timeout must be a positive number" in str(e.value)


def test_api_now_from_rows():
    rows = [{"start_date": 1000.0, "duration": 50.0}, {"start_date": 1200.5, "duration": 10}, {"start_date": None},
            {"id": 3}]
    assert C.api_now(rows) == 1210.5
    assert C.api_now([{"id": 1}]) is None and C.api_now([]) is None


def test_parse_charge_and_account_credit():
    row = {"source": "instance-42", "amount": "1.5", "start": 1, "end": 2, "metadata": {"label": "x"},
           "items": [{"type": "gpu", "amount": 1.0, "description": "2.5 hours of GPU"},
                     {"type": "disk", "amount": 0.5}]}
    assert C.parse_charge(row) == dict(instance_id=42, label="x", amount=1.5, gpu=1.0, storage=0.5, gpu_hours=2.5,
                                       start=1, end=2)
    assert C.parse_charge({"metadata": {"instance_id": "7"}, "items": []})["instance_id"] == 7
    assert C.account_credit({"credit": 3, "balance": 9}) == 3.0
    assert C.account_credit({"balance": "9.5"}) == 9.5
    assert C.account_credit({}) is None


def test_create_body_wire_encoding():
    body = C.create_body(image="img", disk_gb=20, label="l", env={"A": 1}, ports=["8000", "53/udp"],
                         runtype="ssh_direct")
    assert body["env"] == {"A": "1", "-p 8000:8000": "1", "-p 53:53/udp": "1"}
    assert body["runtype"] == "ssh_direc ssh_proxy" and body["disk"] == 20.0
    # never sent unless set: no live-tested client sends target_state; bids go without cancel_unavail
    assert "target_state" not in body and "price" not in body and "cancel_unavail" not in body
    assert C.create_body(image="i", bid_price=0.2, template_hash="abc")["price"] == 0.2
    assert "runtype" not in C.create_body(image="i", template_hash="abc")
