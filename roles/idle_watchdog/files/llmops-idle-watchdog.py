"""On-host idle watchdog (llmops.vastai.idle_watchdog): the fallback for when the controller
(AWX) is gone. Run by a systemd timer; stops this instance through the vast.ai API with the
per-instance CONTAINER_API_KEY, which can only start/stop/destroy this one instance.

It decides with the collection's one idle policy (plugins/module_utils/idle_policy.py, copied
next to this script by the role, path in the config's `policy_file`): the same code as the
controller's idle_shutdown.yml, fed the same observations. What only the watchdog adds is
memory between runs (a state file): it runs every minute, so it notices activity between two
log lines — an increase of vLLM's request/token counters — and remembers it as activity.

Usage: llmops-idle-watchdog CONFIG.json   (the key never appears on the command line or in logs)
"""
import importlib.util
import json
import os
import sys
import urllib.error
import urllib.request

DEFAULT_POLICY_FILE = "/usr/local/lib/llmops-idle-watchdog/idle_policy.py"
REQUESTED_HOLD_S = 300


def log(msg):
    print(msg, flush=True)  # journald keeps it (StandardOutput=journal)


def load_policy(cfg):
    path = cfg.get("policy_file") or DEFAULT_POLICY_FILE
    spec = importlib.util.spec_from_file_location("llmops_idle_policy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _environ_value(name):
    """NAME from our environment, else from PID 1's (vast.ai sets it for the container)."""
    if os.environ.get(name):
        return os.environ[name]
    try:
        with open("/proc/1/environ", "rb") as fh:
            for item in fh.read().split(b"\0"):
                if item.startswith(name.encode() + b"="):
                    return item.split(b"=", 1)[1].decode()
    except OSError:
        pass
    return None


def container_api_key(cfg):
    """The per-instance key: the file the role wrote, else CONTAINER_API_KEY as vast sets it."""
    key_file = cfg.get("api_key_file")
    if key_file and os.path.exists(key_file):
        with open(key_file, encoding="utf-8") as fh:
            key = fh.read().strip()
        if key:
            return key
    return _environ_value("CONTAINER_API_KEY")


def instance_id(cfg):
    """The configured id, else CONTAINER_ID as vast.ai sets it inside every instance."""
    value = str(cfg.get("instance_id") or "").strip() or (_environ_value("CONTAINER_ID") or "").strip()
    return value if value.isdigit() else None


def call_api(cfg, iid, key):
    url = "%s/api/v0/instances/%s/" % (cfg["api_url"].rstrip("/"), int(iid))
    if cfg.get("action", "stop") == "destroy":
        req = urllib.request.Request(url, data=b"{}", method="DELETE")
    else:
        req = urllib.request.Request(url, data=json.dumps({"state": "stopped"}).encode(), method="PUT")
    req.add_header("Authorization", "Bearer " + key)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = json.loads(resp.read() or b"{}")
            return resp.status, body.get("success", True)
    except urllib.error.HTTPError as exc:
        return exc.code, False
    except OSError as exc:
        log("API unreachable: %s" % type(exc).__name__)
        return None, False


def boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return None


def policy_of(cfg):
    """The watchdog's policy: the config's figures; no API clock on the host, so no skew check."""
    keys = ("idle_minutes", "boot_grace_minutes", "load_timeout_minutes", "stop_when_never_healthy",
            "stop_when_engine_down", "max_clock_step_minutes", "clock_tolerance_seconds", "require_activity_log")
    pol = dict((k, cfg[k]) for k in keys if k in cfg)
    pol["max_clock_skew_minutes"] = 0
    return pol


def decision_for(policy, cfg, raw, state):
    """The decision for one check from the host's raw material and the watchdog's memory.

    The host clock is the only clock here: "now" stands in for the API's, and the session is the
    stack's age (or, without the stack unit, the time since the watchdog first ran in this boot:
    shorter than the real session, so the grace is never cut short).
    """
    now = raw["now"]
    marks = []
    if state.get("last_active") is not None:
        marks.append(state["last_active"])
    counters = None
    if raw.get("metrics") is not None and raw.get("metrics_error_kind") is None:
        act = policy.metrics_activity(raw["metrics"])
        parts = [act[k] for k in ("request_success_total", "prompt_tokens_total", "generation_tokens_total")]
        if any(v is not None for v in parts):
            counters = sum(v or 0.0 for v in parts)
    if counters is not None and state.get("counters") is not None and counters != state["counters"]:
        marks.append(now)  # requests finished since the last check: activity in between
    uptime = None
    if state.get("boot_id") == boot_id() and state.get("first_seen") is not None:
        uptime = max(now - state["first_seen"], 0.0) / 60.0
    obs = policy.observe(raw, api_now=now, uptime_mins=uptime if not (raw.get("unit") or {}).get("wall") else None,
                         extra_activity=marks)
    decision = policy.decide(obs, policy_of(cfg))
    if decision["reason"] == "busy":
        marks.append(now)  # a request in flight is activity now
    new_state = dict(state, counters=counters if counters is not None else state.get("counters"))
    seen = [m for m in marks + [obs.get("last_request_end"), obs.get("last_request_start")] if m is not None]
    if seen:
        new_state["last_active"] = max(seen)
    return decision, new_state


def run(cfg):
    """One check. Returns the decision as a dict (also logged)."""
    policy = load_policy(cfg)
    state_file = cfg["state_file"]
    try:
        with open(state_file, encoding="utf-8") as fh:
            state = json.load(fh)
    except (OSError, ValueError):
        state = {}
    raw = policy.gather(cfg["access_log"], cfg["metrics_url"], cfg["unit"], container=cfg.get("container") or None)
    now = raw["now"]
    if state.get("boot_id") != boot_id():
        state.update(boot_id=boot_id(), first_seen=now, stop_requested_at=None)
    decision, state = decision_for(policy, cfg, raw, state)
    if decision["action"] == "stop" and state.get("stop_requested_at") and now - state["stop_requested_at"] < REQUESTED_HOLD_S:
        decision.update(action="keep", reason="requested", message="stop already requested")
    if decision["action"] == "stop":
        # re-check right before acting: a request may have arrived since the first read
        body, kind, dummy = policy.read_metrics(cfg["metrics_url"])
        again = policy.metrics_activity(body)["in_flight"] if kind is None else None
        if again:
            decision.update(action="keep", reason="busy", message="%d request(s) in flight" % again, in_flight=again)
    decision["action"] = cfg.get("action", "stop") if decision["action"] == "stop" else "keep"
    iid = instance_id(cfg)
    decision["instance_id"] = iid
    if decision["action"] in ("stop", "destroy"):
        if cfg.get("dry_run"):
            decision["result"] = "dry run"
        elif not iid:
            decision["result"] = "no instance id (set idle_watchdog_instance_id, or CONTAINER_ID in the environment)"
        else:
            key = container_api_key(cfg)
            if not key:
                decision["result"] = "no CONTAINER_API_KEY available"
            else:
                status, ok = call_api(cfg, iid, key)
                decision["result"] = "requested (HTTP %s)" % status if ok else "failed (HTTP %s)" % status
                if ok:
                    state["stop_requested_at"] = now
    os.makedirs(os.path.dirname(state_file) or ".", exist_ok=True)
    tmp = state_file + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(state, fh)
    os.replace(tmp, state_file)
    log("llmops-idle-watchdog: " + json.dumps(decision, sort_keys=True))
    return decision


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: llmops-idle-watchdog CONFIG.json\n")
        return 2
    with open(argv[1], encoding="utf-8") as fh:
        cfg = json.load(fh)
    decision = run(cfg)
    return 1 if str(decision.get("result", "")).startswith(("failed", "no ")) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
