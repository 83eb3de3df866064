#!/usr/bin/env python3
"""On-host idle watchdog (llmops.vastai.idle_watchdog): the fallback for when the controller
(AWX) is gone. Run by a systemd timer; stops this instance through the vast.ai API with the
per-instance CONTAINER_API_KEY, which can only start/stop/destroy this one instance.

Unlike the controller's idle_shutdown.yml it keeps state (the last activity it saw) in a file,
because it runs every minute and must notice activity between two log lines: an increase of
vLLM's request/token counters, a request running or waiting, or a new /v1 access-log line.

Usage: llmops-idle-watchdog CONFIG.json   (the key never appears on the command line or in logs)
"""
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import deque

from prometheus_client.parser import text_string_to_metric_families

COUNTERS = ("vllm:request_success_total", "vllm:prompt_tokens_total", "vllm:generation_tokens_total")
GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting")


def log(msg):
    print(msg, flush=True)  # journald keeps it (StandardOutput=journal)


def read_metrics(url, timeout=10):
    """(in_flight, counters_sum) summed over every label set, or (None, None) when unreadable."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            text = resp.read().decode("utf-8", "replace")
    except (OSError, urllib.error.URLError):
        return None, None
    in_flight, counters = 0, 0.0
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in GAUGES:
                    in_flight += int(sample.value)
                elif sample.name in COUNTERS:
                    counters += sample.value
    except ValueError:
        return None, None
    return in_flight, counters


def last_request(path, prefix="/v1", lines=2000, ignore=(401, 403)):
    """Newest activity time (end of the newest counted /v1 request) in the JSON access log."""
    tail = deque(maxlen=lines)
    for p in (path + ".1", path):
        try:
            with open(p, encoding="utf-8", errors="replace") as fh:
                tail.extend(fh)
        except OSError:
            pass
    newest = None
    for line in tail:
        try:
            entry = json.loads(line)
            if not str(entry.get("uri", "")).startswith(prefix) or int(entry.get("status", 0)) in ignore:
                continue
            end = float(entry["msec"])
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        newest = end if newest is None else max(newest, end)
    return newest


def unit_started_at(unit):
    out = subprocess.run(["systemctl", "show", "--timestamp=unix", "-p", "ActiveEnterTimestamp", unit],
                         capture_output=True, text=True, check=False).stdout.strip()
    value = out.partition("=")[2].lstrip("@").strip()
    try:
        return float(value) if value else None
    except ValueError:
        return None


def container_api_key(cfg):
    """The per-instance key: the file the role wrote, else CONTAINER_API_KEY as vast sets it."""
    key_file = cfg.get("api_key_file")
    if key_file and os.path.exists(key_file):
        with open(key_file, encoding="utf-8") as fh:
            key = fh.read().strip()
        if key:
            return key
    if os.environ.get("CONTAINER_API_KEY"):
        return os.environ["CONTAINER_API_KEY"]
    for env_file in ("/proc/1/environ",):
        try:
            with open(env_file, "rb") as fh:
                for item in fh.read().split(b"\0"):
                    if item.startswith(b"CONTAINER_API_KEY="):
                        return item.split(b"=", 1)[1].decode()
        except OSError:
            pass
    return None


def call_api(cfg, key):
    url = "%s/api/v0/instances/%s/" % (cfg["api_url"].rstrip("/"), int(cfg["instance_id"]))
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


def run(cfg, now=None):
    """One check. Returns the decision as a dict (also logged)."""
    now = time.time() if now is None else now
    state_file = cfg["state_file"]
    try:
        with open(state_file, encoding="utf-8") as fh:
            state = json.load(fh)
    except (OSError, ValueError):
        state = {}
    in_flight, counters = read_metrics(cfg["metrics_url"])
    marks = [state.get("last_active"), last_request(cfg["access_log"]), unit_started_at(cfg["unit"])]
    if in_flight:
        marks.append(now)
    if counters is not None and state.get("counters") is not None and counters != state["counters"]:
        marks.append(now)  # requests finished since the last check: activity in between
    last_active = max([m for m in marks if m is not None] or [now])
    state.update(last_active=last_active, counters=counters if counters is not None else state.get("counters"))
    state.setdefault("first_seen", now)
    started = unit_started_at(cfg["unit"]) or state["first_seen"]
    idle = now - last_active
    grace = float(cfg.get("boot_grace_minutes", 30)) * 60
    limit = float(cfg.get("idle_minutes", 60)) * 60
    if in_flight:
        decision = {"action": "keep", "reason": "busy", "in_flight": in_flight}
    elif now - started < grace:
        decision = {"action": "keep", "reason": "grace"}
    elif idle < limit:
        decision = {"action": "keep", "reason": "active"}
    elif state.get("stop_requested_at") and now - state["stop_requested_at"] < 300:
        decision = {"action": "keep", "reason": "stop already requested"}
    else:
        # re-check right before acting: a request may have arrived since the first read
        again, _ = read_metrics(cfg["metrics_url"])
        if again:
            decision = {"action": "keep", "reason": "busy", "in_flight": again}
        else:
            decision = {"action": cfg.get("action", "stop"), "reason": "idle"}
    decision.update(idle_seconds=round(idle, 1), instance_id=cfg["instance_id"])
    if decision["action"] in ("stop", "destroy"):
        if cfg.get("dry_run"):
            decision["result"] = "dry run"
        else:
            key = container_api_key(cfg)
            if not key:
                decision["result"] = "no CONTAINER_API_KEY available"
            else:
                status, ok = call_api(cfg, key)
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
    return 1 if str(decision.get("result", "")).startswith(("failed", "no CONTAINER")) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
