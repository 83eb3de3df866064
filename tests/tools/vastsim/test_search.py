"""POST /api/v0/bundles/: the query language, units and response format (vast-api.md §5)."""
import pytest

from .util import api, search


@pytest.fixture(scope="module")
def sim():
    from tests.helpers.vastsim import start_vastsim
    with start_vastsim(offers=600, seed=7) as s:
        yield s


def test_content_type_is_exactly_application_json(sim):
    r = api(sim, "POST", "/api/v0/bundles/", body={"limit": 1})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    assert list(r.json()) == ["offers"]


def test_full_offer_objects_with_ram_in_mb_and_price_identity(sim):
    offers = search(sim, {"limit": 20, "allocated_storage": 50})
    assert len(offers) == 20
    for o in offers:
        for field in ("id", "machine_id", "gpu_name", "num_gpus", "gpu_ram", "gpu_total_ram", "cpu_ram",
                      "disk_space", "dph_base", "dph_total", "storage_cost", "storage_total_cost",
                      "reliability", "geolocation", "verification", "vms_enabled", "direct_port_count",
                      "inet_up", "inet_down", "cuda_max_good", "compute_cap", "score", "rentable"):
            assert field in o, field
        assert o["gpu_ram"] > 8000                      # MB, not GB
        assert o["gpu_total_ram"] == o["gpu_ram"] * o["num_gpus"]
        assert o["storage_total_cost"] == pytest.approx(o["storage_cost"] * 50 / 720, rel=1e-4)
        assert o["dph_total"] == pytest.approx(o["dph_base"] + o["storage_total_cost"], rel=1e-4)


def test_catalogue_is_varied(sim):
    offers = search(sim, {"limit": 10000})
    assert len(offers) == 600
    names = {o["gpu_name"] for o in offers}
    assert {"RTX 3090", "RTX 4090", "RTX 5090", "A100 SXM4", "H100 SXM", "L40S"} <= names
    assert {o["num_gpus"] for o in offers} == {1, 2, 4, 8}
    assert any(o["vms_enabled"] for o in offers) and not all(o["vms_enabled"] for o in offers)
    assert any(o["direct_port_count"] > 0 for o in offers)
    assert len({o["geolocation"][-2:] for o in offers}) >= 8


def test_same_seed_same_catalogue(sim, vastsim_factory):
    other = vastsim_factory(offers=600, seed=7)
    a = [(o["id"], o["dph_base"]) for o in search(sim, {"limit": 10000, "order": [["id", "asc"]]})]
    b = [(o["id"], o["dph_base"]) for o in search(other, {"limit": 10000, "order": [["id", "asc"]]})]
    assert a == b


@pytest.mark.parametrize("op,value,check", [
    ("eq", 2, lambda v: v == 2),
    ("neq", 1, lambda v: v != 1),
    ("gt", 2, lambda v: v > 2),
    ("gte", 4, lambda v: v >= 4),
    ("lt", 4, lambda v: v < 4),
    ("lte", 2, lambda v: v <= 2),
    ("in", [1, 8], lambda v: v in (1, 8)),
    ("notin", [1, 8], lambda v: v not in (1, 8)),
])
def test_operators(sim, op, value, check):
    offers = search(sim, {"num_gpus": {op: value}, "limit": 10000})
    everything = search(sim, {"limit": 10000})
    expected = [o["id"] for o in everything if check(o["num_gpus"])]
    assert offers and sorted(o["id"] for o in offers) == sorted(expected)


def test_numeric_strings_are_coerced_like_the_cli_sends_them(sim):
    as_numbers = search(sim, {"num_gpus": {"eq": 1}, "reliability": {"gt": 0.95}, "limit": 10000})
    as_strings = search(sim, {"num_gpus": {"eq": "1"}, "reliability": {"gt": "0.95"}, "limit": 10000})
    assert as_numbers and [o["id"] for o in as_numbers] == [o["id"] for o in as_strings]
    assert all(o["reliability"] > 0.95 for o in as_strings)


def test_several_ops_on_one_field_and_gpu_ram_in_mb(sim):
    offers = search(sim, {"gpu_ram": {"gte": 40000.0, "lte": 50000}, "limit": 10000})
    assert offers and all(40000 <= o["gpu_ram"] <= 50000 for o in offers)


def test_gpu_name_underscore_equals_space(sim):
    a = search(sim, {"gpu_name": {"eq": "RTX 4090"}, "limit": 10000})
    b = search(sim, {"gpu_name": {"eq": "RTX_4090"}, "limit": 10000})
    c = search(sim, {"gpu_name": {"in": ["RTX_4090", "H100 SXM"]}, "limit": 10000})
    assert a and [o["id"] for o in a] == [o["id"] for o in b]
    assert {o["gpu_name"] for o in c} == {"RTX 4090", "H100 SXM"}


def test_geolocation_matches_country_suffix(sim):
    us = search(sim, {"geolocation": {"eq": "US"}, "limit": 10000})
    assert us and all(o["geolocation"].endswith(", US") or o["geolocation"] == ", US" for o in us)
    eu = search(sim, {"geolocation": {"in": ["DE", "FR", "NL"]}, "limit": 10000})
    assert eu and {o["geolocation"][-2:] for o in eu} <= {"DE", "FR", "NL"}
    not_us = search(sim, {"geolocation": {"notin": ["US"]}, "limit": 10000})
    assert len(us) + len(not_us) == 600


def test_booleans_and_cli_default_query(sim):
    q = {"verified": {"eq": True}, "external": {"eq": False}, "rentable": {"eq": True},
         "vms_enabled": {"eq": True}, "limit": 10000}
    offers = search(sim, q)
    assert offers and all(o["verified"] and o["vms_enabled"] and not o["external"] for o in offers)


def test_order_and_limit(sim):
    cheap = search(sim, {"order": [["dph_total", "asc"]], "limit": 15})
    assert len(cheap) == 15
    prices = [o["dph_total"] for o in cheap]
    assert prices == sorted(prices)
    everything = search(sim, {"limit": 10000})
    assert prices[0] == min(o["dph_total"] for o in everything)
    two_keys = search(sim, {"order": [["num_gpus", "desc"], ["dph_base", "asc"]], "limit": 10000})
    keys = [(-o["num_gpus"], o["dph_base"]) for o in two_keys]
    assert keys == sorted(keys)
    default = search(sim, {"limit": 30})   # default order is score desc
    assert [o["score"] for o in default] == sorted((o["score"] for o in default), reverse=True)


def test_price_filters_use_allocated_storage(sim):
    small = search(sim, {"dph_total": {"lte": 0.3}, "allocated_storage": 5, "limit": 10000})
    big = search(sim, {"dph_total": {"lte": 0.3}, "allocated_storage": 2000, "limit": 10000})
    assert small and all(o["dph_total"] <= 0.3 for o in small + big)
    assert len(big) < len(small)


def test_type_bid_reserved_and_ondemand_spellings(sim):
    od = search(sim, {"type": "on-demand", "order": [["id", "asc"]], "limit": 50})
    od2 = search(sim, {"type": "ondemand", "order": [["id", "asc"]], "limit": 50})
    bid = search(sim, {"type": "bid", "order": [["id", "asc"]], "limit": 50})
    assert [o["id"] for o in od] == [o["id"] for o in od2]
    assert all(b["is_bid"] and b["dph_total"] < o["dph_total"] for b, o in zip(bid, od))
    reserved = search(sim, {"type": "reserved", "limit": 50})
    assert reserved and all(o["discounted_dph_total"] <= o["dph_base"] + o["storage_total_cost"] for o in reserved)


@pytest.mark.parametrize("query,error", [
    ({"num_gpus": {"between": 1}}, "invalid_args"),
    ({"num_gpus": {"in": 1}}, "invalid_args"),
    ({"type": "spot"}, "invalid_args"),
    ({"limit": "many"}, "invalid_args"),
])
def test_bad_queries_are_400_with_error_and_msg(sim, query, error):
    r = api(sim, "POST", "/api/v0/bundles/", body=query)
    assert r.status_code == 400
    body = r.json()
    assert body["success"] is False and body["error"] == error and body["msg"]


def test_bad_json_is_400_not_a_traceback(sim):
    r = api(sim, "POST", "/api/v0/bundles/", raw=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_request"
    assert "Traceback" not in r.text


def test_search_auth(sim):
    assert api(sim, "POST", "/api/v0/bundles/", key=False, body={"limit": 1}).status_code == 200
    r = api(sim, "POST", "/api/v0/bundles/", key="wrong", body={"limit": 1})
    assert r.status_code == 404
    assert r.json() == {"success": False, "error": "auth_error", "msg": "Invalid user key"}


def test_legacy_get_bundles_and_new_search(sim):
    r = api(sim, "GET", "/api/v0/bundles", params={"q": {"num_gpus": {"eq": 8}, "limit": 5}})
    assert r.status_code == 200 and r.json()["offers"] and all(o["num_gpus"] == 8 for o in r.json()["offers"])
    r = api(sim, "PUT", "/api/v0/search/asks/", body={"select_cols": ["*"], "q": {"num_gpus": {"eq": 8}}})
    assert r.status_code == 200 and all(o["num_gpus"] == 8 for o in r.json()["offers"])


def test_gpu_names_is_unauthenticated(sim):
    r = api(sim, "GET", "/api/v0/gpu_names/unique/", key=False)
    assert r.status_code == 200 and "RTX 4090" in r.json()["gpu_names"]
