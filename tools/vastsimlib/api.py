"""Handlers for the vast.ai API routes. Each takes a server.Request and returns (status, body).

They run with `sim.lock` held and after `sim.tick()`; errors are raised as ApiError.
"""
import base64
import hashlib
import json
import secrets
import time

from . import billing, offers as offers_mod
from .errors import ApiError
from .state import COMPUTED_COLUMNS, STORED_COLUMNS

RUNTYPE_TOKENS = {"ssh", "ssh_proxy", "ssh_direc", "ssh_direct", "jupyter", "jupyter_proxy",
                  "jupyter_direc", "jupyter_direct", "args"}
RESULT_DELAY = 0.5      # real seconds before a logs/execute result_url answers 200
LIST_PAGE = 25


def _ok(**kw):
    out = {"success": True}
    out.update(kw)
    return 200, out


def _int_id(raw, error="invalid_id", status=400):
    try:
        return int(str(raw))
    except (TypeError, ValueError):
        raise ApiError(status, error, f"invalid id {raw!r}")


def _instance(req, missing_status=404, missing_error="no_such_instance"):
    iid = _int_id(req.params.get("id"))
    inst = req.sim.get_live(iid)
    if inst is None:
        raise ApiError(missing_status, missing_error, f"Instance {iid} not found.")
    return inst


def _body_dict(req):
    if not isinstance(req.body, dict):
        raise ApiError(400, "invalid_request", "request body must be a JSON object")
    return req.body


# --- catalogue ------------------------------------------------------------------------------
def gpu_names(req):
    return 200, {"gpu_names": offers_mod.GPU_NAMES}


def search(req):
    return 200, {"offers": offers_mod.search(req.sim.available_offers(), _body_dict(req), req.sim.index)}


def search_get(req):
    q = req.qjson("q", {})
    return 200, {"offers": offers_mod.search(req.sim.available_offers(), q if isinstance(q, dict) else {}, req.sim.index)}


def search_new(req):
    q = _body_dict(req).get("q") or {}
    return 200, {"offers": offers_mod.search(req.sim.available_offers(), q, req.sim.index)}


# --- create ---------------------------------------------------------------------------------
def _validate_create(body, offer_id):
    def bad(msg, error="invalid_args", status=400):
        raise ApiError(status, error, msg, ask_id=offer_id)

    image = body.get("image")
    if image is None and not body.get("template_hash_id") and not body.get("template_id"):
        bad("image is required unless template_hash_id is given")
    if image is not None and (not isinstance(image, str) or len(image) > 1024):
        bad("image must be a string of at most 1024 characters")
    label = body.get("label")
    if label is not None and (not isinstance(label, str) or len(label) > 256):
        bad("label must be a string of at most 256 characters")
    args = body.get("args")
    if args is not None and not (isinstance(args, list) and all(isinstance(a, str) for a in args)):
        bad("args must be a list of strings")
    text_len = sum(len(x) for x in (args or [])) + len(body.get("args_str") or "") + len(body.get("onstart") or "")
    if text_len > 4096:
        bad("args, args_str and onstart together must not exceed 4096 characters")
    env = body.get("env")
    if env is not None:
        if not isinstance(env, dict):
            bad("env must be a JSON object (dict) of variables and -p port requests")
        total = 0
        for k, v in env.items():
            entry = len(str(k)) + len("" if v is None else str(v))
            total += entry
            if entry > 256:
                bad(f"env entry {str(k)[:40]!r} exceeds 256 characters")
        if total > 32768:
            bad("env exceeds 32768 characters in total")
    price = body.get("price")
    if price is not None:
        price = offers_mod.coerce(price)
        if not isinstance(price, (int, float)) or not 0.001 <= price <= 128:
            bad("price must be between 0.001 and 128 $/h", error="invalid_price")
    disk = offers_mod.coerce(body.get("disk")) if body.get("disk") is not None else 8
    if not isinstance(disk, (int, float)) or disk < 8:
        bad("disk must be a number of GB, at least 8")
    runtype = body.get("runtype")
    if runtype is not None:
        tokens = str(runtype).split()
        if not tokens or any(t not in RUNTYPE_TOKENS for t in tokens):
            bad(f"invalid runtype {runtype!r}")
    target = body.get("target_state")
    if target is not None and target not in ("running", "stopped"):
        bad("target_state must be running or stopped")
    clean = dict(body)
    clean["disk"] = float(disk)
    clean["price"] = price
    return clean


def _create_one(req, offer_id, body):
    sim = req.sim
    body = _validate_create(body, offer_id)
    offer = sim.by_offer.get(offer_id)
    if sim.credit() <= 0:
        raise ApiError(400, "insufficient_credit", "Insufficient credits/balance; add credit to rent.",
                       ask_id=offer_id)
    vm = bool(body.get("vm")) or "vastai/kvm" in (body.get("image") or "")
    if vm and offer is not None and offer_id not in sim.rented and offer_id not in sim.taken:
        if not offer.get("vms_enabled"):
            raise ApiError(400, "invalid_args", f"Offer {offer_id} does not support VM images.", ask_id=offer_id)
        if not sim.ssh_keys:
            raise ApiError(400, "no_ssh_key_for_vm", "VM instances need an SSH key on the account; "
                           "add one with POST /api/v0/ssh/ first.", ask_id=offer_id)
    key = "ik_" + secrets.token_hex(24)
    inst = sim.create(offer_id, body, key)
    return inst


def _refused_bid(inst, offer_id):
    # dstack PR #4036: an insufficient bid still creates the instance (stopped) and the error
    # answer carries its id in `new_contract`. The status and error code are not public; a 4xx
    # is the case a client must not read as "nothing was rented".
    return 400, {"success": False, "error": "insufficient_bid", "msg": inst.status_msg,
                 "new_contract": inst.id, "ask_id": offer_id}


def create(req):
    offer_id = _int_id(req.params["id"], error="invalid_args")
    inst = _create_one(req, offer_id, _body_dict(req))
    if getattr(inst, "create_error", None) == "insufficient_bid":
        return _refused_bid(inst, offer_id)   # returned, not raised: the new instance is kept
    return _ok(new_contract=inst.id, instance_api_key=inst.instance_api_key, ask_id=offer_id)


def create_bulk(req):
    body = dict(_body_dict(req))
    ids = body.pop("ids", None)
    if not isinstance(ids, list) or not ids:
        raise ApiError(400, "invalid_args", "ids must be a non-empty list of offer ids")
    results = []
    for raw in ids:
        offer_id = _int_id(raw, error="invalid_args")
        try:
            inst = _create_one(req, offer_id, dict(body))
            if getattr(inst, "create_error", None) == "insufficient_bid":
                results.append(_refused_bid(inst, offer_id)[1])
                continue
            results.append({"ask_id": offer_id, "success": True, "new_contract": inst.id,
                            "instance_api_key": inst.instance_api_key})
        except ApiError as e:
            results.append({"ask_id": offer_id, "success": False, "error": e.error, "msg": e.msg})
    return _ok(results=results, new_contracts=[r["new_contract"] for r in results if r["success"]])


# --- reading instances ------------------------------------------------------------------------
STRING_COLUMNS = {"label", "actual_status", "intended_status", "cur_state", "next_state", "gpu_name",
                  "verification", "image_uuid", "image_runtype", "status_msg", "geolocation",
                  "template_hash_id"}


def _filter_instances(sim, filters):
    if filters in (None, ""):
        filters = {}
    if not isinstance(filters, dict):
        raise ApiError(400, "invalid_request", "select_filters must be a JSON object")
    for col in filters:
        if col in COMPUTED_COLUMNS or col not in STORED_COLUMNS:
            raise ApiError(400, "invalid_request", f"{col} is not a valid search key")
    checks = offers_mod.compile_filters(filters, no_coerce=STRING_COLUMNS)
    views = [inst.filter_view() for inst in sim.live_instances()]
    return [v for v in views if offers_mod.matches(v, checks)]


def _sort_rows(rows, order_by):
    if order_by in (None, ""):
        order_by = [{"col": "id", "dir": "asc"}]
    if isinstance(order_by, dict):
        order_by = [order_by]
    if not isinstance(order_by, list):
        raise ApiError(400, "invalid_request", "order_by must be a list of {col, dir}")
    specs = []
    for spec in order_by:
        if isinstance(spec, dict):
            col, direction = spec.get("col"), spec.get("dir", "asc")
        elif isinstance(spec, (list, tuple)) and spec:
            col, direction = spec[0], spec[1] if len(spec) > 1 else "asc"
        else:
            raise ApiError(400, "invalid_request", "order_by entries look like {\"col\": \"id\", \"dir\": \"asc\"}")
        if col not in STORED_COLUMNS:
            raise ApiError(400, "invalid_request", f"{col} is not a valid order_by column")
        if str(direction).lower() not in ("asc", "desc"):
            raise ApiError(400, "invalid_request", f"order_by dir must be asc or desc, not {direction!r}")
        specs.append((col, str(direction).lower() == "desc"))
    if not any(c == "id" for c, _ in specs):
        specs.append(("id", False))   # id is always the tiebreak
    for col, desc in reversed(specs):
        rows.sort(key=lambda r, c=col: _sortable(r.get(c)), reverse=desc)
    return rows, specs


def _sortable(v):
    if v is None:
        return (1, 0, "")
    if isinstance(v, (int, float)):
        return (0, 0, float(v))
    return (0, 1, str(v))


def _token(data):
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode()


def _untoken(raw):
    try:
        data = json.loads(base64.urlsafe_b64decode(raw.encode() + b"=" * (-len(raw) % 4)))
        if not isinstance(data, dict) or "id" not in data or "o" not in data:
            raise ValueError
        return data
    except (ValueError, TypeError, UnicodeDecodeError):
        raise ApiError(400, "invalid_token", "after_token is not a valid pagination token")


def _fingerprint(*parts):
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def list_v1(req):
    sim = req.sim
    filters = req.qjson("select_filters", {})
    order_by = req.qjson("order_by")
    limit = req.qjson("limit", LIST_PAGE)
    try:
        limit = int(limit)
    except (TypeError, ValueError):
        raise ApiError(400, "invalid_request", "limit must be an integer")
    limit = 5 if limit <= 0 else min(limit, LIST_PAGE)
    fp = _fingerprint(filters, order_by)
    cached = sim.list_cache.get(fp)
    if cached is not None and cached[0] == sim.version:
        rows, counts = cached[1], cached[2]       # e.g. the next page of the same listing
    else:
        rows, _ = _sort_rows(_filter_instances(sim, filters), order_by)
        counts = {}
        for inst in sim.live_instances():
            counts[inst.label or ""] = counts.get(inst.label or "", 0) + 1
        if len(sim.list_cache) > 32:
            sim.list_cache.clear()
        sim.list_cache[fp] = (sim.version, rows, counts)
    start = 0
    raw_token = req.query.get("after_token")
    if raw_token:
        tok = _untoken(raw_token)
        if tok.get("f") != fp:
            raise ApiError(400, "invalid_token", "after_token does not belong to these filters and order")
        # keyset on the last row seen; if that row vanished, fall back to its position
        ids = [r["id"] for r in rows]
        start = ids.index(tok["id"]) + 1 if tok["id"] in ids else min(int(tok["o"]), len(rows))
    now = sim.clock.now()
    page = [sim.instances[v["id"]].row(now) for v in rows[start:start + limit]]   # full rows for this page only
    nxt = None
    if start + limit < len(rows) and page:
        nxt = _token({"id": page[-1]["id"], "o": start + len(page), "f": fp})
    cols = req.qjson("select_cols")
    if isinstance(cols, list) and cols and "*" not in cols:
        page = [{c: r.get(c) for c in cols} for r in page]
    return 200, {"success": True, "instances_found": len(page), "total_instances": len(rows),
                 "label_counts": dict(counts), "next_token": nxt, "instances": page}


def list_legacy(req):
    now = req.sim.clock.now()
    return 200, {"instances": [i.row(now) for i in sorted(req.sim.live_instances(), key=lambda i: i.id)]}


def list_filters(req):
    seen = []
    for inst in req.sim.live_instances():
        combo = {"actual_status": inst.actual_status, "verification": inst.offer.get("verification"),
                 "gpu_name": inst.offer.get("gpu_name")}
        if combo not in seen:
            seen.append(combo)
    return 200, {"filters": seen}


def show(req):
    iid = _int_id(req.params.get("id"))
    inst = req.sim.get_live(iid)
    # a missing or destroyed instance is 200 {"instances": null}, which the CLI expects
    return 200, {"instances": inst.row(req.sim.clock.now()) if inst else None}


# --- mutations ----------------------------------------------------------------------------------
def _apply_manage(req, inst, body):
    sim = req.sim
    msgs = []
    if "label" in body:
        if req.instance_scope is not None:
            raise ApiError(403, "not_authorized", "An instance API key can only start, stop, show or destroy.")
        label = body["label"]
        if label is not None and not isinstance(label, str):
            raise ApiError(400, "invalid_args", "label must be a string")
        if label is not None and len(label) > 1024:
            raise ApiError(400, "label_too_long", "label must be at most 1024 characters")
        inst.label = label if label != "" else None
        msgs.append(f"label for {inst.id} set to {label}.")
    if "state" in body:
        state = body["state"]
        if state == "running":
            if sim.credit() <= 0:
                raise ApiError(400, "missing_billing", "Your account has no credit; add credit to start instances.")
            sim.start(inst)
            msgs.append(f"starting instance {inst.id}.")
        elif state == "stopped":
            sim.stop(inst)
            msgs.append(f"stopping instance {inst.id}.")
        else:
            raise ApiError(400, "invalid_args", f"state must be running or stopped, not {state!r}")
    if "label" not in body and "state" not in body:
        raise ApiError(400, "invalid_args", "nothing to change: send state or label")
    return " ".join(msgs)


def manage(req):
    inst = _instance(req)
    msg = _apply_manage(req, inst, _body_dict(req))
    return _ok(msg=msg)


def manage_bulk(req):
    body = dict(_body_dict(req))
    ids = body.pop("ids", None)
    if not isinstance(ids, list) or not ids:
        raise ApiError(400, "invalid_args", "ids must be a non-empty list of instance ids")
    return _ok(results=_per_instance(req, ids, "no_such_instance", lambda inst: _apply_manage(req, inst, body)))


def reboot(req):
    inst = _instance(req, 400, "invalid_args")
    req.sim.reboot(inst)
    return _ok(msg=f"Rebooting instance {inst.id}.")


def recycle(req):
    inst = _instance(req, 400, "invalid_id")
    req.sim.recycle(inst)
    return _ok(msg=f"Recycling instance {inst.id}.")


def destroy(req):
    # A gone (or never existing) instance answers error no_such_instance, also when a second
    # destroy races the first; dstack treats it as done (dstack PR #4030, api_client.py).
    inst = _instance(req, 404, "no_such_instance")
    req.sim.destroy(inst)
    return _ok(msg=f"Instance {inst.id} destroyed.")


def destroy_bulk(req):
    ids = _body_dict(req).get("instance_ids", _body_dict(req).get("ids"))
    if not isinstance(ids, list) or not ids:
        raise ApiError(400, "invalid_args", "instance_ids must be a non-empty list")
    return _ok(results=_per_instance(req, ids, "not_found", req.sim.destroy))


def _per_instance(req, ids, missing_error, action):
    """Bulk forms: apply `action` to each live instance; one result row per id, failures included."""
    results = []
    for raw in ids:
        iid = _int_id(raw)
        inst = req.sim.get_live(iid)
        if inst is None:
            results.append({"id": iid, "success": False, "error": missing_error})
            continue
        try:
            action(inst)
            results.append({"id": iid, "success": True})
        except ApiError as e:
            results.append({"id": iid, "success": False, "error": e.error, "msg": e.msg})
    return results


# --- logs and execute ---------------------------------------------------------------------------
def _publish(req, text):
    token = secrets.token_hex(16)
    req.sim.results[token] = (time.monotonic() + RESULT_DELAY, text)
    if len(req.sim.results) > 1000:
        for k in list(req.sim.results)[:500]:
            del req.sim.results[k]
    return f"{req.base_url}/instance_logs/{token}.log"


def logs(req):
    inst = _instance(req, 404, "invalid_id")
    body = _body_dict(req)
    tail = offers_mod.coerce(body.get("tail", "1000"))
    if not isinstance(tail, int) or tail < 0:
        raise ApiError(400, "invalid_args", "tail must be a number of lines")
    text = req.sim.hosts.logs(inst, tail) if req.sim.hosts is not None else None
    if text is None:
        lines = [f"[{inst.created_at:.0f}] instance {inst.id} created on machine {inst.offer['machine_id']}"]
        lines += inst.log_lines
        if body.get("daemon_logs") in (True, "true"):
            lines = [f"[daemon] {ln}" for ln in lines]
        flt = body.get("filter")
        if flt:
            lines = [ln for ln in lines if str(flt) in ln]
        lines = lines[-tail:] if tail else []
        text = "\n".join(lines) + ("\n" if lines else "")
    return _ok(result_url=_publish(req, text), msg="Logs requested.")


def execute(req):
    inst = _instance(req, 404, "invalid_id")
    command = _body_dict(req).get("command")
    if not isinstance(command, str) or not command.strip():
        raise ApiError(400, "invalid_args", "command is required")
    if len(command) > 512 or command.split()[0] not in ("ls", "rm", "du"):
        raise ApiError(400, "invalid_args", "only ls, rm and du are allowed, at most 512 characters")
    if inst.actual_status != "running":
        raise ApiError(400, "invalid_args", f"Instance {inst.id} is not running.")
    path = f"/tmp/vast_exec_{secrets.token_hex(4)}"
    out = req.sim.hosts.execute(inst, command) if req.sim.hosts is not None else None
    if out is None:
        out = f"{path}\nsimulated output of: {command}\n"
    return _ok(writeable_path=path, result_url=_publish(req, out), msg="Command queued.")


def result(req):
    item = req.sim.results.get(req.params["token"])
    if item is None or time.monotonic() < item[0]:
        return 404, "not ready"
    return 200, item[1]


# --- ssh keys -------------------------------------------------------------------------------------
def _key_text(req):
    text = _body_dict(req).get("ssh_key")
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, "no_ssh_key", "No ssh key provided")
    text = text.strip()
    if not text.split()[0].startswith(("ssh-", "ecdsa-", "sk-")) or len(text.split()) < 2:
        raise ApiError(400, "invalid_args", "That does not look like an OpenSSH public key")
    return text


def _team_guard(req):
    # A team-scoped API key cannot manage account keys (SkyPilot PR #10730 quotes this body;
    # Terraform provider bdb4bfa: once a team exists every SSH key call answers it).
    if req.sim.team_scoped:
        raise ApiError(400, "team_ssh_keys_not_supported",
                       "Team SSH keys are not supported. SSH keys can only be created in personal context.")


def list_keys(req):
    _team_guard(req)
    # A bare array whose rows carry the key in `ssh_key` (Terraform provider 7929bf6, validated
    # against the live API); not `public_key`, not `key`.
    return 200, [{"id": k["id"], "user_id": k.get("user_id"), "ssh_key": k["key"], "created_at": k.get("created_at"),
                  "deleted_at": k.get("deleted_at")} for k in req.sim.ssh_keys]


def add_key(req):
    _team_guard(req)
    key = req.sim.add_account_key(_key_text(req))
    # {"success": true, "key": {...}} whose row names the key `public_key` (Terraform bdb4bfa)
    return _ok(key={"id": key["id"], "user_id": key.get("user_id"), "public_key": key["key"],
                    "created_at": key.get("created_at"), "deleted_at": None})


def _find_key(req):
    kid = _int_id(req.params.get("key"))
    for k in req.sim.ssh_keys:
        if k["id"] == kid:
            return k
    return None


def replace_key(req):
    _team_guard(req)
    key = _find_key(req)
    if key is None:
        raise ApiError(404, "no_such_ssh_key", "No such ssh key")
    text = _key_text(req)
    key["key"] = key["public_key"] = text
    return _ok(key=dict(key))


def delete_key(req):
    _team_guard(req)
    key = _find_key(req)
    if key is None:
        raise ApiError(400, "invalid_request", "No such ssh key")
    req.sim.ssh_keys.remove(key)
    return _ok()


def instance_keys(req):
    inst = _instance(req)
    keys = [{"id": req.sim.key_id_for(t), "key": t, "public_key": t} for t in inst.ssh_keys]
    return _ok(ssh_keys=json.dumps(keys))


def attach_key(req):
    inst = _instance(req)
    text = _key_text(req)
    if text not in inst.ssh_keys:
        inst.ssh_keys.append(text)
        if req.sim.hosts is not None:
            req.sim.hosts.on_ssh_keys(inst)
    return _ok(msg="SSH key added to instance.", key_id=req.sim.key_id_for(text))


def detach_key(req):
    inst = _instance(req)
    kid = _int_id(req.params.get("key"))
    for text in list(inst.ssh_keys):
        if req.sim.key_id_for(text) == kid:
            inst.ssh_keys.remove(text)
            if req.sim.hosts is not None:
                req.sim.hosts.on_ssh_keys(inst)
            return _ok(msg="SSH key removed from instance.")
    raise ApiError(404, "no_such_ssh_key", f"SSH key {kid} is not on instance {inst.id}.")


# --- account and billing -----------------------------------------------------------------------
def user(req):
    u = dict(req.sim.user)
    credit = round(req.sim.credit(), 6)
    u["credit"] = credit
    u["balance"] = round(min(0.0, credit), 6)   # what is owed once credit runs out
    u["billed_expected"] = round(req.sim.credit_base - credit, 6)
    u["ssh_key"] = req.sim.ssh_keys[-1]["key"] if req.sim.ssh_keys else None
    return 200, u


def _range(req, col, bad_status=400):
    filters = req.qjson("select_filters", {})
    if not isinstance(filters, dict):
        raise ApiError(400, "invalid_request", "select_filters must be a JSON object")
    rng = filters.get(col)
    if not isinstance(rng, dict) or "gte" not in rng or "lte" not in rng:
        raise ApiError(bad_status, "invalid_request",
                       f"Must provide both '{col}' gte and lte filters in select_filters.")
    lo, hi = offers_mod.coerce(rng["gte"]), offers_mod.coerce(rng["lte"])
    if not isinstance(lo, (int, float)) or not isinstance(hi, (int, float)):
        raise ApiError(400, "invalid_request", f"'{col}' bounds must be epoch seconds")
    return float(lo), float(hi), filters


def _page(req, rows, default_limit, max_limit, key_fields):
    latest_first = req.qjson("latest_first", False) in (True, "true", "True", 1)
    rows.sort(key=lambda r: (r["start"], r.get("source", ""), r.get("description", "")), reverse=latest_first)
    limit = req.qjson("limit", default_limit)
    try:
        limit = max(1, min(int(limit), max_limit))
    except (TypeError, ValueError):
        raise ApiError(400, "invalid_request", "limit must be an integer")
    start = 0
    raw = req.query.get("after_token")
    fp = _fingerprint(key_fields, latest_first)
    if raw:
        tok = _untoken(raw)
        if tok.get("f") != fp:
            raise ApiError(400, "invalid_token", "after_token does not belong to these filters")
        start = int(tok["o"])
    page = rows[start:start + limit]
    nxt = _token({"id": 0, "o": start + limit, "f": fp}) if start + limit < len(rows) else None
    total = round(sum(r["amount"] for r in rows), 6)
    return {"success": True, "count": len(page), "total": total, "next_token": nxt, "results": page}


def charges(req):
    lo, hi, filters = _range(req, "day")
    types = (filters.get("type") or {}).get("in")
    rows = billing.charge_rows(req.sim, lo, hi, types)
    return 200, _page(req, rows, 100, 500, [lo, hi, types])


def _payments(sim, lo, hi, services=None):
    out = []
    for p in sim.payments:
        if lo <= p["when"] <= hi and (not services or p["service"] in services):
            out.append({"start": p["when"], "end": p["when"], "type": "credit",
                        "source": p["service"].split("_")[0], "description": p["description"],
                        "amount": -round(p["amount"], 6),
                        "metadata": {"invoice_id": p["id"], "service": p["service"]}, "items": []})
    return out


def invoices_v1(req):
    lo, hi, filters = _range(req, "when")
    if lo > hi:
        return 200, {"success": False, "error": "Invalid date range", "msg": "Invalid date range"}
    services = (filters.get("service") or {}).get("in")
    rows = _payments(req.sim, lo, hi, services)
    return 200, _page(req, rows, 60, 100, [lo, hi, services])


def invoices_legacy(req):
    sim = req.sim
    now = sim.clock.now()
    lo = offers_mod.coerce(req.query.get("sdate", now - 86400))
    hi = offers_mod.coerce(req.query.get("edate", now))
    try:
        lo, hi = float(lo), float(hi)
    except (TypeError, ValueError):
        raise ApiError(400, "invalid_args", "sdate and edate must be epoch seconds")
    inc_charges = str(req.query.get("inc_charges", "true")).lower() != "false"
    rows = []
    for p in sim.payments:
        if lo <= p["when"] <= hi:
            rows.append({"id": p["id"], "type": "payment", "timestamp": p["when"], "amount": round(p["amount"], 6),
                         "description": p["description"], "quantity": 1, "rate": round(p["amount"], 6),
                         "instance_id": None, "is_credit": True, "last4": sim.user.get("last4")})
    charged = 0.0
    if inc_charges:
        for row in billing.charge_rows(sim, lo, hi):
            iid = int(row["source"].split("-")[1])
            charged += row["amount"]
            for item in row["items"]:
                rows.append({"id": f"{iid}-{item['type']}", "type": "charge", "timestamp": row["end"],
                             "amount": item["amount"], "description": f"{row['description']}: {item['description']}",
                             "quantity": item["quantity"], "rate": item["rate"], "instance_id": iid,
                             "is_credit": False, "last4": None})
    rows.sort(key=lambda r: r["timestamp"])
    current = {"total": round(charged, 6), "charges": round(charged, 6), "credit": round(sim.credit(), 6)}
    return 200, {"invoices": rows, "current": current}
