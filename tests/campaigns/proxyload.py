"""Proxy load campaign (issue 6 part 5): the host's nginx with the REAL rendered health_proxy
config in front of the engine stand-in, under a bounded loopback load (health pollers,
streamed chat completions, deliberately slow stream readers), while the engine is SIGKILLed
and restarted with a load delay (nothing listens meanwhile, like vLLM loading a model).

Everything runs on 127.0.0.1; rendering, nginx and the stand-in come from
tests/unit/roles/render.py (no copies here). `run()` returns the raw records and a summary;
the assertions live in tests/campaigns/test_proxy_load.py.
"""
import collections
import contextlib
import http.client
import json
import os
import signal
import threading
import time

from tests.unit.roles import render
from tests.helpers.net import free_port

TOKEN = "proxy-load-token-0123456789abcdef"
MODEL = "qwen-test"
CLIENT_TIMEOUT = 20  # s; bounds every client thread even if something hangs


class Recorder:
    """Thread-safe list of outcome dicts, with times relative to the campaign start."""

    def __init__(self):
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.health = []    # {"t", "status", "json_ok"} or {"t", "error"}
        self.requests = []  # every request: {"route", "kind", "t", "t_end", "status", ...}
        self.events = []    # {"t", "what"}

    def now(self):
        return time.monotonic() - self.t0

    def add(self, lst, item):
        with self.lock:
            lst.append(item)

    def event(self, what):
        self.add(self.events, {"t": self.now(), "what": what})


def _json_503_ok(body, route):
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    if route == "/health":
        return doc.get("status") == "unavailable"
    return (doc.get("error") or {}).get("code") == 503


def health_poller(port, rec, stop, interval):
    while not stop.is_set():
        t = rec.now()
        item = {"route": "/health", "kind": "poll", "t": t}
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT)
            c.request("GET", "/health")
            r = c.getresponse()
            body = r.read()
            c.close()
            item.update(status=r.status, json_ok=(r.status != 503 or _json_503_ok(body, "/health")))
        except Exception as e:  # noqa: BLE001 - any client-side failure is an outcome to report
            item.update(status=None, error=f"{type(e).__name__}: {e}")
        item["t_end"] = rec.now()
        rec.add(rec.health, item)
        rec.add(rec.requests, item)
        stop.wait(interval)


def streamer(port, rec, stop, max_tokens, slow=False, slow_read=128, slow_pause=0.03):
    """Streamed chat completions in a loop; slow=True reads the stream a little at a time."""
    body = json.dumps({"model": MODEL, "stream": True, "max_tokens": max_tokens,
                       "messages": [{"role": "user", "content": "load test"}]})
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    kind = "slow" if slow else "stream"
    while not stop.is_set():
        item = {"route": "/v1/chat/completions", "kind": kind, "t": rec.now(), "events": 0,
                "reads": 0, "done": False}
        buf = b""
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT)
            c.request("POST", "/v1/chat/completions", body=body, headers=headers)
            r = c.getresponse()
            item["status"] = r.status
            if r.status == 200:
                while True:
                    data = r.read1(slow_read if slow else 65536)
                    if not data:
                        break
                    item["reads"] += 1
                    buf += data
                    if slow:
                        time.sleep(slow_pause)
            else:
                buf = r.read()
                if r.status == 503:
                    item["json_ok"] = _json_503_ok(buf, "/v1")
            c.close()
        except Exception as e:  # noqa: BLE001 - a cut stream shows up here (IncompleteRead, reset)
            item.setdefault("status", None)
            item["error"] = f"{type(e).__name__}: {e}"
        item["t_end"] = rec.now()
        if item.get("status") == 200:
            item["events"] = buf.count(b"data: ")
            item["done"] = buf.rstrip().endswith(b"data: [DONE]")
        rec.add(rec.requests, item)
        if item.get("status") != 200:
            stop.wait(0.2)  # engine down: do not spin


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as stopped
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_health(rec, after, want, deadline):
    """Wait (polling the records) for a /health result with status `want` started after `after`."""
    while time.monotonic() < deadline:
        with rec.lock:
            hits = [h["t_end"] for h in rec.health if h["t"] >= after and h.get("status") == want]
        if hits:
            return min(hits)
        time.sleep(0.05)
    return None


def run(kills=(6.0,), down_seconds=1.5, load_seconds=2.0, tail_seconds=6.0, max_seconds=60.0,
        pollers=2, poll_interval=0.1, streamers=4, slow_clients=2, max_tokens=30, token_delay=0.02,
        workdir=None):
    """Run the campaign. `kills` are the times (s after the load started) at which the engine is
    SIGKILLed; each kill waits for /health 503, keeps the engine down `down_seconds`, restarts it
    with STANDIN_LOAD_SECONDS=load_seconds and waits (generously, bounded by max_seconds) for
    /health 200 again. The load then continues `tail_seconds` after the last recovery.
    Returns a result dict (records, cycles, pids, summary)."""
    wd = workdir or render.workdir("llmops-proxyload-")
    engine_port, listen = free_port(), free_port()
    conf = render.render_proxy(wd, TOKEN, engine_port, listen)
    extra = {"STANDIN_MAX_CONCURRENCY": "64"}
    result = {"cycles": [], "engine_pids": [], "nginx_pid": None, "workdir": wd, "listen": listen}
    stop = threading.Event()
    threads = []
    rec = None
    hard_deadline = time.monotonic() + max_seconds
    with contextlib.ExitStack() as stack:
        stack.enter_context(render.nginx(conf))
        with open(os.path.join(wd, "nginx.pid")) as f:
            result["nginx_pid"] = int(f.read())
        proc = stack.enter_context(render.standin(engine_port, token_delay=token_delay, extra_env=extra))
        result["engine_pids"].append(proc.pid)
        render.wait_http(listen, timeout=30)  # through nginx
        rec = Recorder()
        result["rec"] = rec

        def stop_clients():
            stop.set()
            for th in threads:
                th.join(CLIENT_TIMEOUT + 5)
        stack.callback(stop_clients)  # runs before the engine and nginx are stopped

        for _ in range(pollers):
            threads.append(threading.Thread(target=health_poller, args=(listen, rec, stop, poll_interval)))
        for i in range(streamers + slow_clients):
            threads.append(threading.Thread(target=streamer, args=(listen, rec, stop, max_tokens),
                                            kwargs={"slow": i >= streamers}))
        for th in threads:
            th.daemon = True
            th.start()
        rec.event("load started")

        for kill_at in kills:
            while rec.now() < kill_at and time.monotonic() < hard_deadline:
                time.sleep(0.05)
            cyc = {"kill": rec.now()}
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            rec.event(f"engine {proc.pid} SIGKILLed")
            cyc["first_503"] = _wait_health(rec, cyc["kill"], 503, hard_deadline)
            time.sleep(down_seconds)
            cyc["restart"] = rec.now()
            proc = stack.enter_context(render.standin(engine_port, load_seconds=load_seconds,
                                                      token_delay=token_delay, extra_env=extra, wait=False))
            result["engine_pids"].append(proc.pid)
            rec.event(f"engine {proc.pid} restarted (load {load_seconds}s)")
            cyc["first_200"] = _wait_health(rec, cyc["restart"], 200, hard_deadline)
            rec.event("health back to 200" if cyc["first_200"] else "health NOT back to 200")
            result["cycles"].append(cyc)
            if cyc["first_200"] is None:
                break
        end = min(rec.now() + tail_seconds, max_seconds)
        while rec.now() < end and time.monotonic() < hard_deadline:
            time.sleep(0.05)
        rec.event("load stopping")
        stop_clients()
        result["stuck_threads"] = sum(th.is_alive() for th in threads)
        rec.event("load stopped")
    # ExitStack closed: engine(s) terminated, nginx QUIT and waited for.
    result["alive_after"] = [p for p in result["engine_pids"] + [result["nginx_pid"]] if p and _alive(p)]
    result["summary"] = summarize(result)
    return result


def per_second(rec):
    """{second: Counter(status)} of the /health polls, by start time."""
    out = collections.defaultdict(collections.Counter)
    for h in rec.health:
        out[int(h["t"])][h.get("status") or "error"] += 1
    return dict(sorted(out.items()))


def summarize(result):
    rec = result["rec"]
    by_route = collections.Counter((r["route"], r.get("kind"), r.get("status") or "error") for r in rec.requests)
    streams = [r for r in rec.requests if r["kind"] in ("stream", "slow") and r.get("status") == 200]
    cycles = [{"kill_s": round(c["kill"], 2),
               "to_503_s": round(c["first_503"] - c["kill"], 2) if c["first_503"] is not None else None,
               "down_s": round(c["restart"] - c["kill"], 2),
               "restart_to_200_s": round(c["first_200"] - c["restart"], 2) if c["first_200"] else None,
               "kill_to_200_s": round(c["first_200"] - c["kill"], 2) if c["first_200"] else None}
              for c in result["cycles"]]
    return {
        "duration_s": round(max((r["t_end"] for r in rec.requests), default=0), 1),
        "requests": len(rec.requests),
        "by_route_status": {f"{route} [{kind}] {status}": n for (route, kind, status), n in sorted(by_route.items(), key=str)},
        "streams_completed": sum(1 for r in streams if r["done"]),
        "streams_cut": sum(1 for r in streams if not r["done"]),
        "slow_completed": sum(1 for r in streams if r["done"] and r["kind"] == "slow"),
        "client_errors": sum(1 for r in rec.requests if r.get("status") is None),
        "cycles": cycles,
        "health_per_second": {s: dict(c) for s, c in per_second(rec).items()},
    }


def format_summary(s):
    lines = [f"proxy load: {s['requests']} requests in {s['duration_s']} s, "
             f"streams completed {s['streams_completed']} (slow {s['slow_completed']}), cut {s['streams_cut']}, "
             f"client errors {s['client_errors']}"]
    for k, n in s["by_route_status"].items():
        lines.append(f"  {k}: {n}")
    for i, c in enumerate(s["cycles"], 1):
        lines.append(f"  restart {i}: killed at {c['kill_s']} s, /health 503 after {c['to_503_s']} s, "
                     f"engine down {c['down_s']} s, 200 again {c['restart_to_200_s']} s after restart "
                     f"({c['kill_to_200_s']} s after kill)")
    lines.append("  /health per second: " + " ".join(
        f"{sec}:" + ",".join(f"{st}x{n}" for st, n in sorted(c.items(), key=str))
        for sec, c in s["health_per_second"].items()))
    return "\n".join(lines)
