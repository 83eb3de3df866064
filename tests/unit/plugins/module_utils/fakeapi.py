"""A tiny scripted HTTP server for client unit tests (real sockets, no simulator needed).

Each test queues answers per (method, path) or installs a handler; every request is
recorded with its headers so tests can check what travelled on the wire.
"""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class FakeApi:
    def __init__(self):
        self.requests = []
        self.scripts = {}  # (method, path) -> list of (status, body, headers) answers
        self.handler = None  # optional callable(method, path, query, body) -> (status, body)
        fake = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _do(self):
                u = urlsplit(self.path)
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                body = json.loads(raw) if raw else None
                q = {k: v[0] for k, v in parse_qs(u.query).items()}
                fake.requests.append(
                    {"method": self.command, "path": u.path, "query": q, "body": body,
                     "headers": dict(self.headers), "raw_url": self.path}
                )
                key = (self.command, u.path)
                if fake.scripts.get(key):
                    ans = fake.scripts[key].pop(0)
                elif fake.handler:
                    ans = fake.handler(self.command, u.path, q, body)
                else:
                    ans = (404, {"success": False, "error": "not_found", "msg": "no route"})
                status, out = ans[0], ans[1]
                if status == "reset":
                    self.close_connection = True
                    self.connection.close()
                    return
                data = out.encode() if isinstance(out, str) else json.dumps(out).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _do

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def script(self, method, path, *answers):
        self.scripts.setdefault((method, path), []).extend(answers)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
