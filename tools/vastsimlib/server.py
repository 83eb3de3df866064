"""HTTP plumbing: threaded server, routing, auth, latency, faults, rate limits, request log."""
import argparse
import json
import re
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from . import api, control
from .errors import ApiError
from .faults import Faults, RateLimiter, parse_spec
from .hosts import load_backend
from .state import Sim

# (method, path regex, endpoint name, handler, auth) — auth: "user", "instance" (user key or
# that instance's instance_api_key), "optional" (search works anonymously), None.
ROUTES = [
    ("GET", r"/api/v0/gpu_names/unique", "gpu_names", api.gpu_names, None),
    ("GET", r"/api/v0/users/current", "user", api.user, "user"),
    ("POST", r"/api/v0/bundles", "search", api.search, "optional"),
    ("GET", r"/api/v0/bundles", "search", api.search_get, "optional"),
    ("PUT", r"/api/v0/search/asks", "search", api.search_new, "optional"),
    ("POST", r"/api/v0/asks/bulk", "create", api.create_bulk, "user"),
    ("PUT", r"/api/v0/asks/(?P<id>[^/]+)", "create", api.create, "user"),
    ("GET", r"/api/v1/instances", "list", api.list_v1, "user"),
    ("GET", r"/api/v0/instances/filters", "list", api.list_filters, "user"),
    ("GET", r"/api/v0/instances", "list", api.list_legacy, "user"),
    ("PUT", r"/api/v0/instances", "manage", api.manage_bulk, "user"),
    ("DELETE", r"/api/v0/instances", "destroy", api.destroy_bulk, "user"),
    ("PUT", r"/api/v0/instances/reboot/(?P<id>[^/]+)", "reboot", api.reboot, "user"),
    ("PUT", r"/api/v0/instances/recycle/(?P<id>[^/]+)", "recycle", api.recycle, "user"),
    ("PUT", r"/api/v0/instances/request_logs/(?P<id>[^/]+)", "logs", api.logs, "user"),
    ("PUT", r"/api/v0/instances/command/(?P<id>[^/]+)", "execute", api.execute, "user"),
    ("GET", r"/api/v0/instances/(?P<id>[^/]+)/ssh", "ssh", api.instance_keys, "user"),
    ("POST", r"/api/v0/instances/(?P<id>[^/]+)/ssh", "ssh", api.attach_key, "user"),
    ("DELETE", r"/api/v0/instances/(?P<id>[^/]+)/ssh/(?P<key>[^/]+)", "ssh", api.detach_key, "user"),
    ("GET", r"/api/v0/instances/(?P<id>[^/]+)", "show", api.show, "instance"),
    ("PUT", r"/api/v0/instances/(?P<id>[^/]+)", "manage", api.manage, "instance"),
    ("DELETE", r"/api/v0/instances/(?P<id>[^/]+)", "destroy", api.destroy, "instance"),
    ("GET", r"/api/v0/ssh", "ssh", api.list_keys, "user"),
    ("POST", r"/api/v0/ssh", "ssh", api.add_key, "user"),
    ("PUT", r"/api/v0/ssh/(?P<key>[^/]+)", "ssh", api.replace_key, "user"),
    ("DELETE", r"/api/v0/ssh/(?P<key>[^/]+)", "ssh", api.delete_key, "user"),
    ("GET", r"/api/v0/charges", "charges", api.charges, "user"),
    ("GET", r"/api/v1/invoices", "invoices", api.invoices_v1, "user"),
    ("GET", r"/api/v0/users/me/invoices", "invoices", api.invoices_legacy, "user"),
    ("GET", r"/instance_logs/(?P<token>[A-Za-z0-9]+)\.log", "results", api.result, None),
]
COMPILED = [(m, re.compile("^" + p + "$"), e, h, a) for m, p, e, h, a in ROUTES]
SECRET_PARAMS = {"api_key"}
READ_ONLY = {"search", "logs", "execute"}   # non-GET endpoints that change no cached state

# Limits of a real front end: nginx answers 413 above client_max_body_size (1 MB by default;
# bulk creates are bigger, so 4 MiB here) and 431/400 for oversized headers. The stdlib
# already refuses a header line above 64 KiB and more than 100 headers; the total is capped too.
MAX_BODY = 4 * 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024
MAX_JSON_DEPTH = 64
BODY_TIMEOUT = 30.0   # seconds a client may take to send the body it announced
ERROR_CODES = {400: "invalid_request", 408: "request_timeout", 411: "length_required", 413: "payload_too_large",
               414: "uri_too_long", 431: "headers_too_large", 501: "not_implemented", 505: "http_version"}


class BadRequest(Exception):
    """A request the server refuses before routing it (status, message); the connection is
    closed after the answer because the rest of the stream cannot be trusted."""

    def __init__(self, status, msg):
        super().__init__(msg)
        self.status = status
        self.msg = msg


def _no_constant(name):
    raise ValueError("%s is not valid JSON" % name)


def _depth(value):
    """Nesting depth of decoded JSON, iteratively (no recursion on hostile input)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            if deepest > MAX_JSON_DEPTH:
                return deepest
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def _finite_float(text):
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("number %s is out of range (not valid JSON)" % text[:30])  # 1e400 overflows to inf
    return value


def strict_json(raw, what="request body"):
    """Decode JSON as the API does: no NaN/Infinity (not JSON) nor numbers that overflow to
    them, bounded nesting; ApiError 400."""
    try:
        value = json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise ApiError(400, "invalid_request", f"JSON in {what} is nested too deeply") from None
    except ValueError as e:
        detail = str(e) if "not valid JSON" in str(e) else "Malformed JSON"
        raise ApiError(400, "invalid_request", f"{detail} in {what}") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise ApiError(400, "invalid_request", f"JSON in {what} is nested deeper than {MAX_JSON_DEPTH} levels")
    return value


class Request:
    """What a handler sees: parsed path, query (raw strings), JSON body, route params."""

    def __init__(self, method, path, query, body, params, sim, base_url):
        self.method = method
        self.path = path
        self.query = query
        self.body = body
        self.params = params
        self.sim = sim
        self.base_url = base_url
        self.key = None            # the credential that authenticated the call
        self.instance_scope = None  # instance id when authenticated by an instance_api_key

    def qjson(self, name, default=None):
        """A query value decoded as JSON (the client JSON-encodes non-strings)."""
        raw = self.query.get(name)
        if raw is None:
            return default
        try:
            return strict_json(raw, "query parameter %s" % name)
        except ApiError as e:
            if "Malformed JSON" in e.msg or "not valid JSON" in e.msg:
                return raw   # a plain string value (also "NaN": a string, never a float)
            raise


class App:
    def __init__(self, sim, faults, limiter, latency_ms=0.0):
        self.sim = sim
        self.faults = faults
        self.limiter = limiter
        self.latency = latency_ms / 1000.0
        self.log = []
        self.log_lock = threading.Lock()
        self.base_url = None

    def record(self, entry):
        with self.log_lock:
            self.log.append(entry)
            if len(self.log) > 100000:
                del self.log[:50000]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "vastsim/1.0"
    sys_version = ""
    # Buffered writes (flushed once per request) and TCP_NODELAY: headers and body leave in one
    # segment, avoiding the ~40 ms Nagle/delayed-ACK stall on keep-alive connections.
    wbufsize = -1

    def setup(self):
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def log_message(self, fmt, *args):  # the request log lives under /_sim/requests
        pass

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_PATCH(self):
        self.dispatch("PATCH")

    # --- responses -------------------------------------------------------------------------
    def send_error(self, code, message=None, explain=None):
        """The stdlib's own refusals (bad request line, URI or header too long, unknown
        method, bad version) as the API's JSON error, never its HTML page."""
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.1"   # answer with a status line and headers
        self.close_connection = True
        short = self.responses.get(code, ("Error",))[0]
        text = message or short
        if explain and explain not in text:
            text = "%s (%s)" % (text, explain)
        data = json.dumps({"success": False, "error": ERROR_CODES.get(code, "invalid_request"), "msg": text}).encode()
        self.send_response(code, short)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(data)
        self._linger()

    def _linger(self, seconds=2.0, limit=16 * 1024 * 1024):
        """Lingering close (as nginx does): send the answer, then read and discard what the
        client is still sending for a moment, so closing with unread data does not reset the
        connection before the client has read the error."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + seconds
            got = 0
            while got < limit:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.connection.settimeout(left)
                chunk = self.connection.recv(65536)
                if not chunk:
                    break
                got += len(chunk)
        except OSError:
            pass

    def send_json(self, status, obj, headers=None):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")  # exactly this: the CLI checks it
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def send_text(self, status, text):
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def reset(self):
        """Abort the connection with a TCP RST (SO_LINGER 0), like a dropped connection."""
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close_connection = True
        try:
            self.connection.close()
        except OSError:
            pass

    # --- the request path --------------------------------------------------------------------
    def dispatch(self, method):
        app = self.server.app
        started = time.time()
        try:
            parts = urlsplit(self.path)
            query = dict(parse_qsl(parts.query, keep_blank_values=True))
        except ValueError as e:   # e.g. "http://[" (an invalid IPv6 host in an absolute URL)
            self.send_error(400, "Bad request target: %s" % e)
            return
        path = re.sub(r"/+", "/", parts.path)
        if len(path) > 1:
            path = path.rstrip("/")
        safe_query = {k: v for k, v in query.items() if k not in SECRET_PARAMS}
        entry = {"t": started, "sim_t": app.sim.clock.now(), "method": method, "path": path, "query": safe_query,
                 "status": None, "endpoint": None}
        if path.startswith("/_sim/"):
            entry["endpoint"] = "sim"
        try:
            try:
                raw = self._read_body()
                if raw:
                    strict_json(raw)   # NaN, deep nesting: 400 for /api/ and /_sim/ alike
            except BadRequest as e:
                entry["status"] = e.status
                entry["refused"] = e.msg
                self.close_connection = True
                self.send_json(e.status, {"success": False, "error": ERROR_CODES.get(e.status, "invalid_request"),
                                          "msg": e.msg}, {"Connection": "close"})
                self._linger()
                return
            except ApiError as e:
                entry["status"] = e.status
                entry["refused"] = e.msg
                self.send_json(e.status, e.body())
                return
            if path.startswith("/_sim/"):
                entry["endpoint"] = "sim"
                status, obj = control.handle(app, method, path, query, raw)
                entry["status"] = status
                self.send_json(status, obj)
                return  # control calls are not logged: tests read the log through them
            if app.latency:
                time.sleep(app.latency)  # outside any lock: concurrent requests overlap
            self._api(app, method, path, query, raw, entry)
        except (BrokenPipeError, ConnectionResetError):
            entry["status"] = entry["status"] or "client_gone"
            self.close_connection = True
        finally:
            if entry["endpoint"] != "sim":
                app.record(entry)

    def _read_body(self):
        """The request body (Content-Length or chunked), within the limits; BadRequest otherwise.

        Refused: more than MAX_HEADER_BYTES of headers (431), a Content-Length that is not one
        non-negative integer (400), both Content-Length and Transfer-Encoding (400: the classic
        request-smuggling ambiguity), a transfer coding other than chunked (501), a body above
        MAX_BODY (413, announced or chunked), a malformed chunk (400), a body that does not
        arrive within BODY_TIMEOUT (408)."""
        size = sum(len(k) + len(v) + 4 for k, v in self.headers.items())
        if size > MAX_HEADER_BYTES:
            raise BadRequest(431, f"request headers are {size} bytes; at most {MAX_HEADER_BYTES} are accepted")
        lengths = self.headers.get_all("Content-Length") or []
        coding = ",".join(self.headers.get_all("Transfer-Encoding") or []).strip().lower()
        if lengths and coding:
            raise BadRequest(400, "a request must not carry both Content-Length and Transfer-Encoding")
        if coding and coding != "chunked":
            raise BadRequest(501, f"Transfer-Encoding {coding!r} is not supported (only chunked)")
        if not coding and not lengths:
            return b""
        if not coding:
            values = {v.strip() for v in lengths}
            if len(values) != 1 or not all(v.isdigit() for v in values):
                raise BadRequest(400, "Content-Length must be one non-negative integer, not %s"
                                 % ", ".join(repr(v[:20]) for v in lengths))
            length = int(values.pop())
            if length > MAX_BODY:
                raise BadRequest(413, f"request body of {length} bytes is above the limit of {MAX_BODY} bytes")
        try:
            self.connection.settimeout(BODY_TIMEOUT)
            if not coding:
                raw = self.rfile.read(length) if length else b""
                if len(raw) < length:
                    raise BadRequest(400, f"request body ended after {len(raw)} of {length} bytes")
                return raw
            return self._read_chunked()
        except (TimeoutError, socket.timeout):
            raise BadRequest(408, f"request body not received within {BODY_TIMEOUT:.0f} s") from None
        finally:
            try:
                self.connection.settimeout(None)
            except OSError:
                pass

    def _read_chunked(self):
        parts, total = [], 0
        while True:
            line = self.rfile.readline(1026)
            if not line.endswith(b"\n"):
                raise BadRequest(400, "malformed chunked body: chunk size line missing or too long")
            text = line.split(b";", 1)[0].strip()
            if not text or any(c not in b"0123456789abcdefABCDEF" for c in text):
                raise BadRequest(400, "malformed chunked body: chunk size is not hexadecimal")
            n = int(text, 16)
            if n == 0:
                break
            total += n
            if total > MAX_BODY:
                raise BadRequest(413, f"chunked request body is above the limit of {MAX_BODY} bytes")
            data = self.rfile.read(n)
            if len(data) < n or self.rfile.read(2) != b"\r\n":
                raise BadRequest(400, "malformed chunked body: chunk shorter than announced")
            parts.append(data)
        for _ in range(100):   # trailers, up to the blank line
            line = self.rfile.readline(65537)
            if line in (b"\r\n", b"\n", b""):
                return b"".join(parts)
        raise BadRequest(400, "malformed chunked body: too many trailer lines")

    def _api(self, app, method, path, query, raw, entry):
        route = None
        params = {}
        path_known = False
        for m, rx, endpoint, handler, auth in COMPILED:
            mt = rx.match(path)
            if mt:
                path_known = True
                if m == method:
                    route = (endpoint, handler, auth)
                    params = mt.groupdict()
                    break
        if route is None:
            status = 405 if path_known else 404
            err = ApiError(status, "not_found" if status == 404 else "method_not_allowed",
                           f"{method} {path} is not an API endpoint")
            entry["status"] = status
            self.send_json(status, err.body())
            return
        endpoint, handler, auth = route
        entry["endpoint"] = endpoint
        events = app.faults.pick_events(endpoint, method)
        later = [r for r in events if r["at"] == "after"]
        self._events(app, [r for r in events if r["at"] == "before"], params, raw, None, entry)
        fault = app.faults.pick(endpoint, method)
        if fault and fault["fault"] not in ("lost_response", "crash"):
            entry["fault"] = fault["fault"]
            self._events(app, later, params, raw, None, entry)
            self._inject(fault, entry)
            return
        try:
            body = strict_json(raw) if raw else None
            req = Request(method, path, query, body if body is not None else {}, params, app.sim,
                          app.base_url)
            with app.sim.lock:
                self._authenticate(req, auth)
                app.limiter.check(req.key or self.client_address[0], endpoint, method)
                app.sim.tick()
                if fault and fault["fault"] == "crash":
                    fault = None
                    raise RuntimeError("injected handler crash")   # exercises the JSON 500 path
                status, obj = handler(req)
                if method != "GET" and endpoint not in READ_ONLY:
                    app.sim.invalidate_caches()
                    if app.sim.state_file:
                        app.sim.save()
        except ApiError as e:
            status, obj = e.status, e.body()
        except Exception:
            traceback.print_exc(file=sys.stderr)  # detail for the operator, never for the client
            status, obj = 500, {"success": False, "error": "server_error",
                                "msg": "Internal server error (see the simulator's stderr)"}
        entry["status"] = status
        self._events(app, later, params, raw, obj, entry)
        if fault:  # lost_response: the operation happened, the answer never arrives
            entry["fault"] = "lost_response"
            self.reset()
            return
        if isinstance(obj, str):
            self.send_text(status, obj)
        else:
            self.send_json(status, obj)

    def _events(self, app, rules, params, raw, answer, entry):
        """Apply fired event rules (faults.EVENTS) to their instances, under the state lock:
        those named by the rule (instance_id, or every live instance whose label starts with
        `label`), else those the request addresses (its {id}, a bulk body's ids/instance_ids,
        and for at=after a create's new_contract/new_contracts)."""
        if not rules:
            return
        sim = app.sim
        with sim.lock:
            sim.tick()
            for rule in rules:
                applied, skipped = [], []
                for inst in _event_targets(sim, rule, entry["endpoint"], params, raw, answer):
                    try:
                        sim.event(inst, rule["event"])
                        applied.append(inst.id)
                    except (ApiError, ValueError):
                        skipped.append(inst.id)
                app.faults.note_applied(rule, applied, skipped)
                entry.setdefault("events", []).append({"event": rule["event"], "applied": applied,
                                                       "skipped": skipped})
            sim.invalidate_caches()
            if sim.state_file:
                sim.save()

    def _authenticate(self, req, auth):
        key = None
        header = self.headers.get("Authorization") or ""
        if header.lower().startswith("bearer "):
            key = header[7:].strip()
        elif req.query.get("api_key"):
            key = req.query["api_key"]   # legacy clients; the header wins when both are sent
        if auth is None:
            return
        sim = req.sim
        if key and key == sim.api_key:
            req.key = key
            return
        ep_billing = req.path.startswith(("/api/v0/charges", "/api/v1/invoices", "/api/v0/users/me/invoices"))
        if not key:
            if auth == "optional":
                return
            if ep_billing:
                raise ApiError(403, "auth_error", "This action requires login.")
            raise ApiError(401, "auth_error", "This action requires login.")
        if auth == "instance":
            for inst in sim.instances.values():
                if inst.instance_api_key == key:
                    if str(inst.id) == req.params.get("id") and inst.destroyed_at is None:
                        req.key = key
                        req.instance_scope = inst.id
                        return
                    raise ApiError(403, "not_authorized", "This API key is not allowed to do that.")
        elif any(i.instance_api_key == key for i in sim.instances.values()):
            raise ApiError(403, "not_authorized", "This API key is not allowed to do that.")
        if ep_billing or req.path.startswith("/api/v0/bundles"):
            raise ApiError(404, "auth_error", "Invalid user key")
        raise ApiError(401, "auth_error", "Invalid user key")

    def _inject(self, fault, entry):
        kind = fault["fault"]
        if kind == "reset":
            entry["status"] = "reset"
            self.reset()
        elif kind == "timeout":
            entry["status"] = "timeout"
            time.sleep(fault.get("seconds", 30.0))  # hold the connection, then drop it
            self.reset()
        elif kind == "429":
            entry["status"] = 429
            self.send_json(429, {"detail": "API requests too frequent endpoint threshold=1.0"})
        else:
            status = int(kind)
            entry["status"] = status
            msgs = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
                    504: "Gateway Timeout"}
            self.send_json(status, {"success": False, "error": "server_error", "msg": msgs[status]})


def _event_targets(sim, rule, endpoint, params, raw, answer):
    if "instance_id" in rule:
        inst = sim.get_live(rule["instance_id"])
        return [inst] if inst else []
    if "label" in rule:
        return sorted((i for i in sim.live_instances() if str(i.label or "").startswith(rule["label"])),
                      key=lambda i: i.id)
    ids = []
    if str(params.get("id") or "").isdigit():
        ids.append(int(params["id"]))
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = {}
    # a create's body names offers (bulk "ids"), not instances
    sources = ([body] if endpoint != "create" else []) + ([answer] if isinstance(answer, dict) else [])
    for src in sources:
        if not isinstance(src, dict):
            continue
        for key in ("ids", "instance_ids", "new_contracts"):
            if isinstance(src.get(key), list):
                ids.extend(v for v in src[key] if isinstance(v, int) and not isinstance(v, bool))
        if src is answer and isinstance(src.get("new_contract"), int):
            ids.append(src["new_contract"])
    out = []
    for iid in dict.fromkeys(ids):
        inst = sim.get_live(iid)
        if inst is not None:
            out.append(inst)
    return out


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


def build(argv=None):
    p = argparse.ArgumentParser(prog="vastsim", description="Local, stateful vast.ai API simulator.")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--api-key", default="sim-key")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--offers", type=int, default=400)
    p.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
    p.add_argument("--latency", type=float, default=0.0, help="added delay per API request, ms")
    p.add_argument("--hosts", default="none", help="host backend: none | docker")
    p.add_argument("--state", default=None, help="persist state to this JSON file")
    p.add_argument("--faults", default=None, help="fault rules at start-up (see docs/vastsim.md)")
    p.add_argument("--rate-limits", action="store_true", help="enforce documented per-endpoint limits")
    p.add_argument("--credit", type=float, default=100.0, help="starting account credit, $")
    args = p.parse_args(argv)
    if args.speed <= 0:
        p.error("--speed must be > 0")
    sim = Sim(api_key=args.api_key, seed=args.seed, n_offers=args.offers, speed=args.speed,
              state_file=args.state, credit=args.credit)
    sim.hosts = load_backend(args.hosts, sim)
    for inst in sim.live_instances():   # restored instances get their network fields again
        if not inst.net.get("ssh_host"):
            sim.hosts.on_create(inst)
    faults = Faults(seed=args.seed)
    if args.faults:
        try:
            faults.add(parse_spec(args.faults))
        except (ValueError, OSError) as e:
            p.error(f"--faults: {e}")
    app = App(sim, faults, RateLimiter(args.rate_limits), args.latency)
    server = Server((args.host, args.port), Handler)
    server.app = app
    app.base_url = f"http://{args.host}:{server.server_address[1]}"
    return server, args


def main(argv=None):
    server, args = build(argv)
    app = server.app

    def shutdown(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    print(f"vastsim listening on {app.base_url} (offers={len(app.sim.catalogue)} speed={args.speed} "
          f"hosts={args.hosts})", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        with app.sim.lock:
            app.sim.save()
            app.sim.hosts.close()
        server.server_close()
    return 0
