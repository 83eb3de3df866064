"""health_proxy: the rendered nginx config passes `nginx -t` and behaves as specified when the
host's nginx runs it in front of the engine stand-in (a python process, no Docker)."""
import http.client
import json
import os
import shutil
import subprocess

import pytest

from tests.unit.roles import render
from tests.helpers.net import free_port

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx not installed (tools/setup-host.sh)")

TOKEN = "unit-test-token-0123456789abcdef"
ENGINE_KEY = "engine-only-key-0123456789"


@pytest.fixture(scope="module")
def confs(tmp_path_factory):
    """Two rendered configs (one ansible-playbook run): pass-through auth, and an engine key."""
    jobs = {}
    for name, key in (("plain", ""), ("engine_key", ENGINE_KEY)):
        jobs[name] = dict(workdir=str(tmp_path_factory.mktemp(name)), token=TOKEN,
                          upstream_port=free_port(), listen=free_port(), engine_key=key)
    paths = render.render_proxies(list(jobs.values()))
    for job, path in zip(jobs.values(), paths):
        job["conf"] = path
    return jobs


def request(port, path, token=None, method="GET", body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    h = {}
    if token:
        h["Authorization"] = f"Bearer {token}"
    if body is not None:
        h["Content-Type"] = "application/json"
        body = json.dumps(body)
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    return r.status, dict(r.getheaders()), r.read()


def test_nginx_t_accepts_the_rendered_config(confs):
    res = subprocess.run(["nginx", "-t", "-q", "-c", confs["plain"]["conf"]], capture_output=True, text=True)
    assert res.returncode == 0 and res.stderr == "", res.stderr


def test_token_file_holds_the_token_and_the_site_does_not(confs):
    wd = confs["plain"]["workdir"]
    with open(os.path.join(wd, "llm-proxy.conf")) as f:
        assert TOKEN not in f.read()
    with open(os.path.join(wd, "auth.conf")) as f:
        assert TOKEN in f.read()


def test_validate_helper_rejects_a_broken_snippet(confs, tmp_path):
    wd = confs["plain"]["workdir"]
    check = os.path.join(wd, "nginx-check.sh")
    good = subprocess.run([check, os.path.join(wd, "auth.conf")], capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    bad = str(tmp_path / "bad.conf")
    with open(bad, "w") as f:
        f.write("server { listen 80; location / { proxy_pass http://nowhere } }\n")
    res = subprocess.run([check, bad], capture_output=True, text=True)
    assert res.returncode != 0 and "emerg" in res.stderr


def test_proxy_behaviour_against_the_standin(confs):
    job = confs["plain"]
    engine, listen = job["upstream_port"], job["listen"]
    with render.nginx(job["conf"]):
        # Engine not started yet: connection refused upstream -> JSON 503, not a bare 502.
        status, headers, body = request(listen, "/health")
        assert status == 503 and json.loads(body)["status"] == "unavailable"
        assert headers["Content-Type"].startswith("application/json")
        with render.standin(engine, api_key=TOKEN):
            assert request(listen, "/health")[0] == 200
            status, headers, body = request(listen, "/v1/models")
            assert status == 401 and json.loads(body)["error"]["code"] == 401
            assert headers["WWW-Authenticate"].startswith("Bearer")
            # nginx's plain map strings match case-insensitively; the role must not.
            assert request(listen, "/v1/models", token=TOKEN.upper())[0] == 401
            assert request(listen, "/v1/models", token=TOKEN + "x")[0] == 401
            status, _, body = request(listen, "/v1/models", token=TOKEN)
            assert status == 200 and json.loads(body)["data"][0]["id"] == "qwen-test"
            # This client is loopback, so /metrics is open to it (Molecule checks the outside).
            assert request(listen, "/metrics")[0] == 200
            assert request(listen, "/tokenize", token=TOKEN, method="POST", body={"prompt": "x"})[0] == 404
            status, _, body = request(listen, "/v1/chat/completions", token=TOKEN, method="POST",
                                      body={"model": "qwen-test", "max_tokens": 5,
                                            "messages": [{"role": "user", "content": "hi"}]})
            assert status == 200 and json.loads(body)["usage"]["completion_tokens"] == 5
        # Engine gone again: /v1 answers a JSON 503 too.
        status, _, body = request(listen, "/v1/models", token=TOKEN)
        assert status == 503 and json.loads(body)["error"]["code"] == 503
    with open(os.path.join(job["workdir"], "vllm-access.log")) as f:
        text = f.read()
    rows = [json.loads(line) for line in text.splitlines()]
    assert TOKEN not in text and TOKEN.upper() not in text
    assert {r["uri"] for r in rows} == {"/v1/models", "/v1/chat/completions"}
    for r in rows:
        assert isinstance(r["msec"], float) and isinstance(r["request_time"], float)
        assert isinstance(r["status"], int) and r["method"] in ("GET", "POST")
    assert sorted(r["status"] for r in rows) == [200, 200, 401, 401, 401, 503]
    # the activity log holds the authorized requests only (the 503 was one: a real client waiting)
    with open(os.path.join(job["workdir"], "vllm-activity.log")) as f:
        activity = [json.loads(line) for line in f.read().splitlines()]
    assert sorted(r["status"] for r in activity) == [200, 200, 503]


def test_a_401_flood_cannot_hide_a_real_request(confs):
    """One real request, then 6,000 unauthorized ones (more than the 5,000 lines the old probe
    read): the activity log still ends with the real one, and the policy's reader finds it."""
    idle_policy = render.load_idle_policy()
    job = confs["plain"]
    activity = os.path.join(job["workdir"], "vllm-activity.log")
    with render.nginx(job["conf"]), render.standin(job["upstream_port"], api_key=TOKEN):
        assert request(job["listen"], "/v1/models", token=TOKEN)[0] == 200
        c = http.client.HTTPConnection("127.0.0.1", job["listen"], timeout=10)
        for _ in range(6000):
            c.request("GET", "/v1/models", headers={"Authorization": "Bearer scanner-guess-0000000000"})
            r = c.getresponse()
            r.read()
            assert r.status == 401
    with open(activity) as f:
        last = json.loads(f.read().splitlines()[-1])
    assert last["status"] == 200 and last["uri"] == "/v1/models"
    for path in (activity, os.path.join(job["workdir"], "vllm-access.log")):  # both: read by time
        got = idle_policy.scan_activity_log(path)
        assert got["state"] == "ok" and got["last_end"] == pytest.approx(last["msec"], abs=1e-3), path


def test_engine_key_replaces_the_client_token(confs):
    job = confs["engine_key"]
    with render.nginx(job["conf"]), render.standin(job["upstream_port"], api_key=ENGINE_KEY):
        assert request(job["listen"], "/v1/models", token=TOKEN)[0] == 200
        assert request(job["listen"], "/v1/models", token=ENGINE_KEY)[0] == 401


def test_stream_is_not_buffered(confs):
    job = confs["plain"]
    script = os.path.join(render.ROLES, "health_proxy", "molecule", "default", "files", "stream_check.py")
    with render.nginx(job["conf"]), render.standin(job["upstream_port"], token_delay=0.05):
        res = subprocess.run(["python3", script, f"http://127.0.0.1:{job['listen']}/v1/chat/completions",
                              TOKEN, "qwen-test", "30"], capture_output=True, text=True, timeout=60)
    s = json.loads(res.stdout)
    assert s["status"] == 200 and s["reads"] >= 10, s
    assert s["first_event_s"] < s["total_s"] / 2, s
