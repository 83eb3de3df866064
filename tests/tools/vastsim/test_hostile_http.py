"""Issue 13 item 10: the simulator answers hostile HTTP like a server. Every request below is
written byte by byte on a raw socket; every answer must be a complete HTTP response with a
JSON error body (never the standard library's HTML page, never a dropped or reset
connection), and the server keeps serving afterwards.
"""
import json
import socket

import pytest

from tools.vastsimlib.server import MAX_BODY, MAX_JSON_DEPTH


@pytest.fixture(scope="module")
def sim():
    from tests.helpers.vastsim import launch
    s = launch()
    yield s
    s.stop()


def read_to_close(sock):
    """Everything the server sends until it closes the connection."""
    data = b""
    while True:
        got = sock.recv(65536)
        if not got:
            return data
        data += got


def exchange(sim, data, timeout=10, send_all=True, half_close=False):
    """Send ``data`` (bytes, or a list of byte chunks) and read until the server closes or a
    full response (by Content-Length) arrived. Returns (status, headers, body bytes)."""
    sock = socket.create_connection(("127.0.0.1", sim.port), timeout=timeout)
    try:
        for chunk in data if isinstance(data, list) else [data]:
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                if send_all:
                    raise
                break
        if half_close:
            sock.shutdown(socket.SHUT_WR)   # the client sends nothing more
        buf = b""
        while True:
            try:
                got = sock.recv(65536)
            except ConnectionResetError:
                raise AssertionError("connection reset; got so far: %r" % buf[:300])
            if not got:
                break
            buf += got
            head, sep, rest = buf.partition(b"\r\n\r\n")
            if sep:
                lines = head.decode("latin-1").split("\r\n")
                hdrs = dict((k.strip().lower(), v.strip()) for k, v in (ln.split(":", 1) for ln in lines[1:]))
                n = int(hdrs.get("content-length", "-1"))
                if n >= 0 and len(rest) >= n:
                    break
    finally:
        sock.close()
    assert buf, "connection closed without an answer"
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = dict((k.strip().lower(), v.strip()) for k, v in (ln.split(":", 1) for ln in lines[1:]))
    return status, headers, body


def json_error(sim, data, status, words=None, **kw):
    code, headers, body = exchange(sim, data, **kw)
    assert code == status, (code, body[:300])
    assert headers.get("content-type") == "application/json", headers
    doc = json.loads(body)
    assert doc["success"] is False and doc["error"] and doc["msg"], doc
    if words:
        assert words in doc["msg"], doc
    return doc


def req(method, path, body=b"", headers=None, key="sim-key"):
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: 127.0.0.1", "Authorization: Bearer %s" % key]
    lines += ["%s: %s" % kv for kv in (headers or {}).items()]
    if body and not any(k.lower() in ("content-length", "transfer-encoding") for k in (headers or {})):
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def still_serving(sim):
    code, _h, body = exchange(sim, req("GET", "/_sim/health", headers={"Connection": "close"}))
    assert code == 200 and json.loads(body)["ok"] is True


@pytest.mark.parametrize("line", [b"GARBAGE\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                                  b"GET / HTTP/1.1 extra\r\n\r\n", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\r\n\r\n",
                                  b"FROB /api/v0/bundles/ HTTP/1.1\r\nHost: x\r\n\r\n"])
def test_bad_request_line(sim, line):
    json_error(sim, line, 400 if not line.startswith((b"GET / HTTP/9", b"FROB")) else
               (505 if b"9.9" in line else 501))
    still_serving(sim)


def test_bad_request_target(sim):
    json_error(sim, b"GET http://[ HTTP/1.1\r\nHost: x\r\n\r\n", 400, "Bad request target")
    still_serving(sim)


def test_numbers_that_overflow_to_infinity_are_400(sim):
    json_error(sim, req("POST", "/api/v0/bundles/", body=b'{"dph_total": {"lte": 1e400}}'), 400, "out of range")
    json_error(sim, req("GET", "/api/v1/instances/?limit=1e400"), 400)   # was a 500 (int(inf))
    json_error(sim, req("POST", "/_sim/clock/advance", body=b'{"seconds": -1e999}'), 400, "out of range")


def test_uri_too_long(sim):
    json_error(sim, b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", 414)
    still_serving(sim)


@pytest.mark.parametrize("value", [b"abc", b"-5", b"1e3", b"10, 20", b"0x10"])
def test_bad_content_length(sim, value):
    data = req("POST", "/api/v0/bundles/", headers={"Content-Length": value.decode()}) + b"{}"
    json_error(sim, data, 400, "Content-Length")
    still_serving(sim)


def test_two_different_content_lengths(sim):
    data = b"POST /api/v0/bundles/ HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{} "
    json_error(sim, data, 400, "Content-Length")


def test_body_shorter_than_announced_times_out_with_json(sim, monkeypatch):
    # announced 100 bytes, sent 2, then the client stops sending (half-close): 400, not a hang
    sock = socket.create_connection(("127.0.0.1", sim.port), timeout=10)
    try:
        sock.sendall(req("POST", "/api/v0/bundles/", headers={"Content-Length": "100"}) + b"{}")
        sock.shutdown(socket.SHUT_WR)
        data = read_to_close(sock)
    finally:
        sock.close()
    assert data.startswith(b"HTTP/1.1 400"), data[:200]
    assert b'"Content-Length' not in data and b"ended after 2 of 100 bytes" in data


def test_oversized_headers(sim):
    many = {"X-H%d" % i: "v" for i in range(150)}
    json_error(sim, req("GET", "/api/v0/users/current/", headers=many), 431)
    long_line = {"X-Long": "v" * 70000}
    json_error(sim, req("GET", "/api/v0/users/current/", headers=long_line), 431)
    total = {"X-Big%d" % i: "v" * 8000 for i in range(20)}   # each line fine, 160 KB in total
    json_error(sim, req("GET", "/api/v0/users/current/", headers=total), 431, "request headers")
    still_serving(sim)


def test_oversized_body_announced_and_sent(sim):
    body = b"{" + b" " * (MAX_BODY + 10) + b"}"
    # the server answers 413 without reading the body, and keeps reading it while it closes
    # (lingering close), so the client gets the answer rather than a reset
    doc = json_error(sim, [req("POST", "/api/v0/bundles/", body=body)], 413, "above the limit", send_all=False)
    assert doc["error"] == "payload_too_large"
    still_serving(sim)


def chunked(*parts, trailer=b""):
    out = b""
    for p in parts:
        out += b"%x\r\n%s\r\n" % (len(p), p)
    return out + b"0\r\n" + trailer + b"\r\n"


def test_chunked_body_is_read_like_a_server(sim):
    query = json.dumps({"limit": 2, "order": [["dph_total", "asc"]], "rentable": {"eq": True}}).encode()
    data = req("POST", "/api/v0/bundles/", headers={"Transfer-Encoding": "chunked", "Connection": "close"}) + \
        chunked(query[:10], query[10:])
    code, headers, body = exchange(sim, data)
    assert code == 200 and len(json.loads(body)["offers"]) == 2, body[:300]


@pytest.mark.parametrize("body,status", [
    (b"zz\r\n{}\r\n0\r\n\r\n", 400),                   # size not hex
    (b"10\r\n{}\r\n0\r\n\r\n", 400),                   # shorter than announced, then the client stops
    (b"%x\r\n" % (MAX_BODY + 1), 413),                 # above the limit
    (b"2\r\n{}", 400),                               # no final chunk
])
def test_bad_chunked_bodies(sim, body, status):
    data = req("POST", "/api/v0/bundles/", headers={"Transfer-Encoding": "chunked"}) + body
    json_error(sim, data, status, send_all=False, half_close=True)
    still_serving(sim)


def test_transfer_encoding_other_than_chunked_or_with_content_length(sim):
    json_error(sim, req("POST", "/api/v0/bundles/", headers={"Transfer-Encoding": "gzip"}) + b"xx", 501)
    json_error(sim, req("POST", "/api/v0/bundles/", headers={"Transfer-Encoding": "chunked", "Content-Length": "5"})
               + chunked(b"{}"), 400, "both")


def test_deeply_nested_json_is_400_not_500(sim):
    for depth in (MAX_JSON_DEPTH + 1, 100000):
        body = b"[" * depth + b"]" * depth
        json_error(sim, req("POST", "/api/v0/bundles/", body=body), 400, "nested")
        json_error(sim, req("POST", "/_sim/clock/advance", body=body), 400, "nested")
    deep = "[" * 5000 + "]" * 5000
    json_error(sim, req("GET", "/api/v1/instances/?select_filters=" + deep), 400, "nested")
    still_serving(sim)


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_in_json_is_400(sim, token):
    body = b'{"dph_total": {"lte": %s}, "limit": 1}' % token
    json_error(sim, req("POST", "/api/v0/bundles/", body=body), 400, "not valid JSON")
    json_error(sim, req("POST", "/_sim/clock/advance", body=b'{"seconds": %s}' % token), 400, "not valid JSON")


@pytest.mark.parametrize("seconds,words", [("1e308", "at most"), ("315360001", "at most"), ("-1", ">= 0"),
                                           ('"60"', "must be a number"), ("true", "must be a number"),
                                           ("null", "must be a number"), ("[60]", "must be a number")])
def test_clock_advance_refuses_absurd_values(sim, seconds, words):
    before = sim.now()
    json_error(sim, req("POST", "/_sim/clock/advance", body=b'{"seconds": %s}' % seconds.encode()), 400, words)
    assert before <= sim.now() < before + 60   # the clock did not jump
    assert sim.advance(1.5) > before


def test_malformed_json_still_400_and_keep_alive_works(sim):
    # one connection, two requests: the refused body does not poison the next request
    sock = socket.create_connection(("127.0.0.1", sim.port), timeout=10)
    try:
        sock.sendall(req("POST", "/api/v0/bundles/", body=b"{not json") +
                     req("GET", "/_sim/health", headers={"Connection": "close"}))
        data = read_to_close(sock)
    finally:
        sock.close()
    assert data.startswith(b"HTTP/1.1 400") and b"Malformed JSON in request body" in data
    assert data.count(b"HTTP/1.1 200") == 1, data


def test_body_that_never_arrives_is_408(monkeypatch):
    """A client that announces a body and then sends nothing, keeping the connection open:
    408 after BODY_TIMEOUT (lowered here on an in-process server), not a thread held forever."""
    import threading

    from tests.helpers.net import free_port
    from tools.vastsimlib import server

    monkeypatch.setattr(server, "BODY_TIMEOUT", 0.5)
    srv, _args = server.build(["--port", str(free_port()), "--offers", "20"])
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        sock = socket.create_connection(("127.0.0.1", srv.server_address[1]), timeout=10)
        try:
            sock.sendall(req("POST", "/api/v0/bundles/", headers={"Content-Length": "50"}) + b"{")
            data = read_to_close(sock)
        finally:
            sock.close()
        assert data.startswith(b"HTTP/1.1 408"), data[:200]
        assert json.loads(data.partition(b"\r\n\r\n")[2])["error"] == "request_timeout"
    finally:
        srv.shutdown()
        srv.server_close()
