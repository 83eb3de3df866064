"""Small HTTP helpers for the simulator tests (real HTTP, `requests`)."""
import json

import requests


def api(sim, method, path, key=None, body=None, params=None, headers=None, raw=None, timeout=10):
    """Call the simulator's API as a client would: Bearer auth (key=False → no auth header),
    JSON body, query values JSON-encoded unless they are strings (like the official client)."""
    hdrs = {} if key is False else {"Authorization": f"Bearer {key or sim.api_key}"}
    hdrs.update(headers or {})
    q = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (params or {}).items()}
    if raw is not None:
        return requests.request(method, sim.url + path, headers=hdrs, params=q, data=raw, timeout=timeout)
    if body is None and method in ("PUT", "POST", "DELETE"):
        body = {}
    return requests.request(method, sim.url + path, headers=hdrs, params=q, json=body, timeout=timeout)


def search(sim, query, **kw):
    r = api(sim, "POST", "/api/v0/bundles/", body=query, **kw)
    assert r.status_code == 200, r.text
    return r.json()["offers"]


def create(sim, offer_id, **body):
    body.setdefault("image", "vllm/vllm-openai:latest")
    body.setdefault("disk", 20)
    body.setdefault("client_id", "me")
    r = api(sim, "PUT", f"/api/v0/asks/{offer_id}/", body=body)
    assert r.status_code == 200, r.text
    return r.json()


def rent_any(sim, query=None, **body):
    offers = search(sim, dict(query or {}, limit=1, order=[["dph_total", "asc"]]))
    assert offers, "catalogue has no matching offer"
    out = create(sim, offers[0]["id"], **body)
    return out["new_contract"], offers[0], out


def show(sim, iid, **kw):
    r = api(sim, "GET", f"/api/v0/instances/{iid}/", params={"owner": "me"}, **kw)
    assert r.status_code == 200, r.text
    return r.json()["instances"]


def list_all(sim, filters=None, order_by=None):
    rows, token, pages = [], None, 0
    while True:
        params = {"select_filters": filters or {}, "limit": 25}
        if order_by is not None:
            params["order_by"] = order_by
        if token:
            params["after_token"] = token
        r = api(sim, "GET", "/api/v1/instances/", params=params)
        assert r.status_code == 200, r.text
        data = r.json()
        pages += 1
        rows += data["instances"]
        token = data["next_token"]
        if not token:
            return rows, pages, data
