"""The test-only control API under /_sim/ (no auth; never under /api/). See docs/vastsim.md."""
import json
import math
import re

from . import billing
from .errors import ApiError


MAX_ADVANCE = 10 * 365 * 86400


def handle(app, method, path, query, raw):
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        return 400, {"success": False, "error": "invalid_request", "msg": "Malformed JSON in request body"}
    if not isinstance(body, dict):
        return 400, {"success": False, "error": "invalid_request", "msg": "body must be a JSON object"}
    sim = app.sim
    try:
        with sim.lock:
            sim.tick()
            out = _route(app, sim, method, path, body)
            if method != "GET":
                sim.invalidate_caches()
                if sim.state_file:
                    sim.save()
            return out
    except ApiError as e:
        return e.status, e.body()
    except (ValueError, TypeError, KeyError) as e:
        return 400, {"success": False, "error": "invalid_args", "msg": str(e)}


def _route(app, sim, method, path, body):
    """Dispatch through CONTROLS, the same kind of route table the API side has (server.ROUTES)."""
    for verb, pattern, handler in CONTROLS:
        m = pattern.match(path)
        if m and (verb is None or verb == method):
            return handler(app, sim, body, m)
    raise ApiError(404, "not_found", f"{method} {path} is not a /_sim/ control")


def _live(sim, m):
    inst = sim.get_live(int(m.group(1)))
    if inst is None:
        raise ApiError(404, "not_found", f"no live instance {m.group(1)}")
    return inst


def _offer_id(sim, m):
    oid = int(m.group(1))
    if oid not in sim.by_offer:
        raise ApiError(404, "not_found", f"no offer {oid}")
    return oid


def _clock(app, sim, body, m):
    return 200, {"now": sim.clock.now(), "speed": sim.clock.speed}


def _advance(app, sim, body, m):
    seconds = body.get("seconds", 0)
    # A number of seconds that the clock can take: not a string or a bool, finite (NaN would
    # stop every comparison with the clock), not negative (it never goes back) and at most
    # MAX_ADVANCE (beyond, billing sums overflow into nonsense and no test needs it).
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise ValueError("seconds must be a number, not %s" % json.dumps(seconds)[:40])
    if not math.isfinite(seconds):
        raise ValueError("seconds must be a finite number")
    if seconds < 0:
        raise ValueError("seconds must be >= 0 (the clock never goes back)")
    if seconds > MAX_ADVANCE:
        raise ValueError("seconds must be at most %d (10 years), not %s" % (MAX_ADVANCE, seconds))
    sim.clock.advance(seconds)
    sim.tick()
    return 200, {"now": sim.clock.now()}


def _state(app, sim, body, m):
    now = sim.clock.now()
    rows = []
    for inst in sorted(sim.instances.values(), key=lambda i: i.id):
        row = inst.row(now)
        row["destroyed_at"] = inst.destroyed_at
        row["ssh_keys"] = list(inst.ssh_keys)
        row["hold"] = inst.hold
        row["offer_id"] = inst.offer["id"]
        rows.append(row)
    user = dict(sim.user)
    user["credit"] = sim.credit()
    return 200, {"instances": rows, "offers_available": len(sim.available_offers()), "user": user,
                 "ssh_keys": [dict(k) for k in sim.ssh_keys], "now": now}


def _requests(app, sim, body, m):
    with app.log_lock:
        return 200, list(app.log)


def _clear_requests(app, sim, body, m):
    with app.log_lock:
        app.log.clear()
    return 200, {"ok": True}


def _add_faults(app, sim, body, m):
    rules = body.get("rules")
    if not isinstance(rules, list):
        raise ValueError('body must be {"rules": [rule, ...]}')
    return 200, {"rules": app.faults.add(rules)}


def _clear_faults(app, sim, body, m):
    app.faults.clear()
    return 200, {"ok": True}


def _credit(app, sim, body, m):
    credit = float(body["credit"])
    current = sim.credit()
    if credit > current:
        sim.payments.append({"id": len(sim.payments) + 1, "when": sim.clock.now(),
                             "amount": credit - current, "service": "transfer",
                             "description": "Credit added (simulator)"})
    sim.credit_base += credit - current
    return 200, {"credit": sim.credit()}


def _add_create_failures(app, sim, body, m):
    # The next creates fail as live ones do: insufficient_bid (dstack #4036), oci (dstack
    # compute.py, OCI runtime create failed), outbid (dstack #4037).
    kind = body.get("kind")
    if kind not in ("insufficient_bid", "oci", "outbid"):
        raise ValueError("kind must be insufficient_bid, oci or outbid")
    times = int(body.get("times", 1))
    if not 1 <= times <= 1000:
        raise ValueError("times must be between 1 and 1000")
    sim.create_failures.extend([kind] * times)
    return 200, {"pending": list(sim.create_failures)}


def _clear_create_failures(app, sim, body, m):
    sim.create_failures = []
    return 200, {"ok": True}


def _account(app, sim, body, m):
    if "team_scoped" in body:
        sim.team_scoped = bool(body["team_scoped"])
    if "ignore_target_state" in body:
        sim.ignore_target_state = bool(body["ignore_target_state"])
    return 200, {"team_scoped": sim.team_scoped, "ignore_target_state": sim.ignore_target_state}


def _offer_outbid(app, sim, body, m):
    # another tenant bid more than the listed min_bid: a create with the old bid is refused
    # (dstack #4036) while searches still show the old min_bid
    oid = _offer_id(sim, m)
    floor = float(body.get("min_bid", round(sim.by_offer[oid]["min_bid"] * 1.5 + 0.001, 4)))
    sim.bid_floor[oid] = floor
    return 200, {"ok": True, "offer_id": oid, "min_bid": floor}


def _instance_net(app, sim, body, m):
    # point an instance's network fields somewhere (e.g. a local SSH listener for endpoint tests)
    inst = _live(sim, m)
    allowed = {"public_ipaddr", "ssh_host", "ssh_port", "ports"}
    bad = set(body) - allowed
    if bad:
        raise ValueError(f"only {sorted(allowed)} can be set, not {sorted(bad)}")
    inst.net.update(body)
    return 200, {"ok": True, "instance": inst.row(sim.clock.now())}


def _instance_fail(app, sim, body, m):
    inst = _live(sim, m)
    sim.fail(inst, "oci")
    return 200, {"ok": True, "instance": inst.row(sim.clock.now())}


def _instance_event(app, sim, body, m):
    # A platform event on one live instance (state.Sim.event, where each names its source):
    # gpu_taken / gpu_released (another tenant rents / frees this machine's GPUs), preempt (an
    # interruptible instance is outbid; 400 for on-demand) and its older name outbid (no
    # on-demand check), offline / online (the host is lost / comes back).
    inst = _live(sim, m)
    sim.event(inst, m.group(2))
    return 200, {"ok": True, "event": m.group(2), "instance": inst.row(sim.clock.now())}


def _offer_action(app, sim, body, m):
    oid = _offer_id(sim, m)
    action = m.group(2)
    if action == "take":        # another tenant rents it (also the GPU of a stopped instance)
        sim.taken.add(oid)
    elif action == "release":
        sim.taken.discard(oid)
    elif action == "unavail":   # listed, but creating on it hits "no capacity"
        sim.unavailable.add(oid)
    else:
        sim.unavailable.discard(oid)
    sim.tick()
    return 200, {"ok": True, "offer_id": oid}


def _force(app, sim, body, m):
    inst = _live(sim, m)
    status = body.get("actual_status", inst.actual_status)
    sim.force(inst, "null" if status is None else status, body.get("hold", True))
    return 200, {"ok": True, "instance": inst.row(sim.clock.now())}


# (method or None for any, path pattern, handler(app, sim, body, match)); first match wins.
CONTROLS = [(verb, re.compile("^/_sim/" + pattern + "$"), handler) for verb, pattern, handler in (
    (None, r"health", lambda app, sim, body, m: (200, {"ok": True})),
    ("GET", r"clock", _clock),
    ("POST", r"clock/advance", _advance),
    ("GET", r"state", _state),
    ("GET", r"ledger", lambda app, sim, body, m: (200, billing.ledger(sim))),
    ("GET", r"requests", _requests),
    ("DELETE", r"requests", _clear_requests),
    ("GET", r"faults", lambda app, sim, body, m: (200, {"rules": app.faults.listing()})),
    ("POST", r"faults", _add_faults),
    ("DELETE", r"faults", _clear_faults),
    ("POST", r"credit", _credit),
    ("GET", r"create_failures", lambda app, sim, body, m: (200, {"pending": list(sim.create_failures)})),
    ("POST", r"create_failures", _add_create_failures),
    ("DELETE", r"create_failures", _clear_create_failures),
    ("POST", r"account", _account),
    ("POST", r"offers/(\d+)/outbid", _offer_outbid),
    ("POST", r"offers/(\d+)/(take|release|unavail|avail)", _offer_action),
    ("POST", r"instances/(\d+)/net", _instance_net),
    ("POST", r"instances/(\d+)/(oci_fail)", _instance_fail),
    ("POST", r"instances/(\d+)/(gpu_taken|gpu_released|preempt|outbid|offline|online)", _instance_event),
    ("POST", r"instances/(\d+)/force", _force),
    ("POST", r"instances/bulk", lambda app, sim, body, m: (200, {"ids": _bulk(sim, body)})),
    ("GET", r"offers", lambda app, sim, body, m: (200, {"offers": sim.available_offers()})),
)]


def _bulk(sim, body):
    """Seed many instances quickly: rents the first free offers and puts them in `status`."""
    count = int(body.get("count", 1))
    prefix = body.get("label_prefix", "bulk-")
    status = body.get("status", "running")
    image = body.get("image", "vllm/vllm-openai:latest")
    free = sim.available_offers()
    if count > len(free):
        raise ApiError(400, "invalid_args", f"only {len(free)} offers are free; start with --offers larger")
    ids = []
    for n, offer in enumerate(free[:count]):
        inst = sim.create(offer["id"], {"image": image, "label": f"{prefix}{n}", "disk": 16,
                                        "runtype": "ssh_direc ssh_proxy"}, "ik_bulk_" + sim.new_token())
        if status in ("running", "stopped", "loading", "exited", "offline", "scheduling"):
            sim.force(inst, status, hold=False)
            inst.pending = None
            if status == "stopped":
                inst.intended_status = "stopped"
                inst.cur_state = "stopped"
                inst.next_state = "stopped"
        ids.append(inst.id)
    return ids
