"""The on-host watchdog script (roles/idle_watchdog/files/llmops-idle-watchdog.py), run for real:
against the simulator's API with the instance's own key (instance_api_key = CONTAINER_API_KEY)
and against the vLLM engine stand-in's /metrics, with a real JSON access log."""
import json
import os
import pathlib
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from tests.helpers.net import free_port

vastsim_helper = pytest.importorskip("tests.helpers.vastsim")

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO / "roles" / "idle_watchdog" / "files" / "llmops-idle-watchdog.py"
STANDIN = REPO / "tools" / "engine_standin" / "vllm_standin.py"

pytestmark = pytest.mark.skipif(not STANDIN.exists(), reason="engine stand-in not present")


def api(sim, method, path, body=None, key=None):
    req = urllib.request.Request(sim.url + path, method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": "Bearer " + (key or sim.api_key),
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"{}")


@pytest.fixture
def engine(tmp_path):
    port = free_port()
    env = dict(os.environ, STANDIN_LOAD_SECONDS="0", STANDIN_TOKEN_DELAY="0.02")
    proc = subprocess.Popen([sys.executable, str(STANDIN), "m", "--served-model-name", "m", "--port", str(port),
                             "--host", "127.0.0.1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/health", timeout=1).read()
            break
        except OSError:
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def instance(vastsim):
    offer = api(vastsim, "POST", "/api/v0/bundles/", {"limit": 1})["offers"][0]
    created = api(vastsim, "PUT", f"/api/v0/asks/{offer['id']}/",
                  {"client_id": "me", "image": "vastai/base-image", "disk": 10, "label": "wd-test", "runtype": "ssh"})
    iid = created["new_contract"]
    vastsim.wait_status(iid, "running", timeout=60)
    return vastsim, iid, created["instance_api_key"]


def run(cfg_path):
    out = subprocess.run([sys.executable, str(SCRIPT), str(cfg_path)], capture_output=True, text=True, timeout=60)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("llmops-idle-watchdog: ")][-1]
    return out.returncode, json.loads(line.split(": ", 1)[1]), out.stdout + out.stderr


def config(tmp_path, sim, iid, key, metrics_url, **kw):
    key_file = tmp_path / "key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    log = tmp_path / "access.log"
    if not log.exists():
        # one old request: 2 h ago
        log.write_text(json.dumps({"msec": "%.3f" % (time.time() - 7200), "request_time": "0.5", "status": "200",
                                   "uri": "/v1/chat/completions", "method": "POST"}) + "\n")
    cfg = {"instance_id": str(iid), "api_url": sim.url, "api_key_file": str(key_file), "idle_minutes": 0.05,
           "boot_grace_minutes": 0, "action": "stop", "dry_run": False, "access_log": str(log),
           "metrics_url": metrics_url + "/metrics", "unit": "llmops-no-such-unit.service",
           "state_file": str(tmp_path / "state" / "state.json"),
           "policy_file": str(REPO / "plugins" / "module_utils" / "idle_policy.py")}
    cfg.update(kw)
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    return path


def test_never_stops_with_a_stream_in_flight_then_stops_when_idle(tmp_path, instance, engine):
    sim, iid, key = instance
    cfg = config(tmp_path, sim, iid, key, engine)
    done = {}

    def stream():
        req = urllib.request.Request(engine + "/v1/chat/completions", headers={"Content-Type": "application/json"},
                                     data=json.dumps({"model": "m", "stream": True, "max_tokens": 250,
                                                      "messages": [{"role": "user", "content": "x"}]}).encode())
        with urllib.request.urlopen(req, timeout=60) as resp:
            done["body"] = resp.read()

    t = threading.Thread(target=stream)
    t.start()
    time.sleep(0.5)
    rc, d, _ = run(cfg)
    assert (rc, d["action"], d["reason"]) == (0, "keep", "busy")
    t.join(30)
    assert b"[DONE]" in done["body"]
    # the request finished between two checks: the summed counters moved -> activity
    rc, d, _ = run(cfg)
    assert (d["action"], d["reason"]) == ("keep", "active")
    assert sim.instance(iid)["actual_status"] == "running"
    time.sleep(4)  # idle_minutes 0.05 = 3 s
    rc, d, out = run(cfg)
    assert rc == 0 and d["action"] == "stop" and d["result"].startswith("requested")
    assert key not in out and sim.api_key not in out
    sim.wait_status(iid, "stopped", timeout=30)
    # a second run right after does not call the API again
    rc, d, _ = run(cfg)
    assert d["reason"] in ("stop already requested", "active", "grace") or d["action"] == "keep"


def test_dry_run_and_wrong_key(tmp_path, instance, engine):
    sim, iid, key = instance
    rc, d, _ = run(config(tmp_path, sim, iid, key, engine, dry_run=True))
    assert d["action"] == "stop" and d["result"] == "dry run"
    assert sim.instance(iid)["actual_status"] == "running"
    # another instance's key (or a made-up one) is refused by the API: reported, exit 1
    rc, d, out = run(config(tmp_path, sim, iid, "not-the-instance-key", engine))
    assert rc == 1 and d["result"].startswith("failed")
    assert "not-the-instance-key" not in out
    assert sim.instance(iid)["actual_status"] == "running"


def test_grace_keeps_a_fresh_stack(tmp_path, instance, engine):
    sim, iid, key = instance
    rc, d, _ = run(config(tmp_path, sim, iid, key, engine, boot_grace_minutes=30))
    assert (d["action"], d["reason"]) == ("keep", "grace")


def test_role_applies_on_a_plain_host_outside_the_vast_inventory(tmp_path):
    """The role the way a user applies it, on a host that is not in the llmops.vastai.vast
    inventory (no vast_id): it converges with its documented defaults, installs the shared
    policy, and its timer's service decides (dry run) with the instance id from CONTAINER_ID."""
    images = pytest.importorskip("tests.helpers.images")
    from tests.helpers.ansible import run_playbook
    if not images.have_docker_cli():
        pytest.skip("docker CLI missing")
    imgs = images.ensure_images()
    with images.run_systemd_container(imgs["testhost"], "llmops-wd-", ports=[], extra=["-e", "CONTAINER_ID=4242"]) as c:
        inv = tmp_path / "hosts.yml"
        inv.write_text("all:\n  hosts:\n    plain:\n      ansible_connection: community.docker.docker\n"
                       "      ansible_host: %s\n" % c.name)
        res = run_playbook("""
- hosts: plain
  gather_facts: false
  roles:
    - role: llmops.vastai.idle_watchdog
      vars:
        idle_watchdog_dry_run: true
        idle_watchdog_idle_minutes: 1
        idle_watchdog_boot_grace_minutes: 0
""", inventory=str(inv), env={"DOCKER_HOST": images.docker_env()["DOCKER_HOST"]}, timeout=900)
        assert res.rc == 0, res.summary()
        assert c.exec("cat", "/usr/local/lib/llmops-idle-watchdog/idle_policy.py").stdout == POLICY.read_text()
        c.exec("sh", "-c", "mkdir -p /var/log/nginx && python3 -c \"import json,time; print(json.dumps({'msec': "
                           "time.time() - 7200, 'request_time': 1, 'status': 200, 'uri': '/v1/chat/completions'}))\" "
                           "> /var/log/nginx/vllm-activity.log")
        c.exec("systemctl", "start", "llmops-idle-watchdog.service")
        out = c.exec("journalctl", "-u", "llmops-idle-watchdog", "-o", "cat", "--no-pager").stdout
        line = [ln for ln in out.splitlines() if ln.startswith("llmops-idle-watchdog: ")][-1]
        d = json.loads(line.split(": ", 1)[1])
        assert (d["action"], d["reason"], d["result"], d["instance_id"]) == ("stop", "idle", "dry run", "4242"), d
        assert "idle for 120 min" in d["message"]


POLICY = REPO / "plugins" / "module_utils" / "idle_policy.py"
