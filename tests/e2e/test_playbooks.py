"""End to end: the playbooks through ansible-runner (the engine AWX uses) against the
simulator with real containers as instances (--hosts docker).

One scenario, in order (each step builds on the previous one):
  provision 2 instances with the stack (/health 200 through nginx)  -> e2e-idle, e2e-busy
  rent 1 bare instance                                               -> e2e-lost (made unreachable)
  advance the simulated clock 2 h (past the boot grace)
  rent 1 bare instance                                               -> e2e-fresh (inside the grace)
  chat completion on e2e-idle; a long stream held open on e2e-busy
  idle_shutdown --check: lists e2e-idle, changes nothing
  idle_shutdown: stops e2e-idle only, reports e2e-lost, audit events written
  cost_report (a stopped instance billing storage), teardown guard, teardown, cost report
  totals == the simulator's ledger to the cent
"""
import json
import os
import pathlib
import subprocess
import threading
import time
import urllib.request

import pytest

ansible_runner = pytest.importorskip("ansible_runner")
images = pytest.importorskip("tests.helpers.images")
vastsim_helper = pytest.importorskip("tests.helpers.vastsim")

REPO = pathlib.Path(__file__).resolve().parents[2]
PLAYBOOKS = REPO / "playbooks"
SECRETS_SEEN = []

pytestmark = [pytest.mark.timeout(3000)]

# The simulator's clock runs 20x and jumps (advance): the host-vs-API clock check is off here.
POLICY = {"idle_shutdown_boot_grace_minutes": 240, "idle_shutdown_probe_delay": 2, "idle_shutdown_probe_timeout": 10,
          "idle_shutdown_max_clock_skew_minutes": 0}

if not images.have_docker_cli():
    pytest.skip("docker CLI missing (make host-deps)", allow_module_level=True)


def _docker(*args, check=True, input_bytes=None):
    env = images.docker_env()
    return subprocess.run(["docker", *args], env=env, input=input_bytes, capture_output=True, check=check)


class Env:
    """Everything the scenario shares: simulator, controller HOME, runner settings."""

    def __init__(self, sim, tmp):
        self.sim = sim
        self.tmp = tmp
        self.home = tmp / "home"
        self.home.mkdir()
        self.audit = tmp / "audit.jsonl"
        self.inventory = tmp / "e2e.vast.yml"
        self.inventory.write_text("plugin: llmops.vastai.vast\nstatuses: [running]\n")
        self.key = self.home / ".ssh" / "llmops_vastai_ed25519"
        self.archive = tmp / "engine.tar.gz"
        self.runs = 0

    def envvars(self):
        env = {
            "VAST_URL": self.sim.url, "VAST_API_KEY": self.sim.api_key, "HOME": str(self.home),
            "VAST_AUDIT_LOG": str(self.audit), "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_PRIVATE_KEY_FILE": str(self.key), "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_COLLECTIONS_PATH": str(REPO / ".collections"),
            "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile=/dev/null",
            "DOCKER_HOST": os.environ.get("DOCKER_HOST", images.DEFAULT_DOCKER_HOST),
        }
        return env

    def play(self, name, extravars=None, inventory=None, check=False, expect_rc=0):
        self.runs += 1
        pdd = self.tmp / f"runner-{self.runs}-{name}"
        pdd.mkdir()
        kw = self.runner_options()
        if inventory:
            kw["inventory"] = str(inventory)
        r = ansible_runner.run(
            private_data_dir=str(pdd), playbook=str(PLAYBOOKS / f"{name}.yml"),
            extravars=extravars or {}, envvars=self.envvars(), cmdline="--check" if check else None,
            quiet=True, **kw)
        out = r.stdout.read()
        (self.tmp / f"{self.runs}-{name}.log").write_text(out)
        assert self.sim.api_key not in out, f"the vast API key appeared in the output of {name}"
        for secret in SECRETS_SEEN:
            assert secret not in out, f"a secret appeared in the output of {name}"
        if expect_rc is not None:
            assert r.rc == expect_rc, f"{name} rc={r.rc} ({r.status})\n{out[-6000:]}"
        return r, out

    def runner_options(self):
        """More ansible_runner.run() options for the next run (tests/e2e/test_awx_jobs.py: ssh_key)."""
        return {}

    def debug_msgs(self, runner, task):
        """{host: msg} of a debug task whose messages start with the host name."""
        msgs = {}
        for ev in runner.events:
            data = ev.get("event_data", {})
            if ev.get("event") == "runner_on_ok" and data.get("task") == task:
                msg = data.get("res", {}).get("msg") or ""
                msgs[msg.split(" ", 1)[0]] = msg
        return msgs

    def instances(self):
        return {i["label"]: i for i in self.sim.state()["instances"]}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    imgs = images.ensure_images()
    tmp = tmp_path_factory.mktemp("e2e")
    with vastsim_helper.start_vastsim(hosts="docker", speed=20, api_key="e2e-" + os.urandom(12).hex()) as sim:
        e = Env(sim, tmp)
        # no registry here: the engine image reaches the hosts as an archive (deploy_stack.yml)
        images.save_archive(imgs["vllm"], e.archive)
        yield e
        sim.destroy_all()  # the backend removes the containers


def _http(url, token=None, body=None, timeout=30):
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _endpoint(row, port=80):
    host_port = row["ports"][f"{port}/tcp"]
    host_port = host_port[0]["HostPort"] if isinstance(host_port, list) else host_port
    return f"http://127.0.0.1:{int(host_port)}"


@pytest.fixture(scope="module")
def fleet(env):
    """Provision and prepare the four instances of the scenario."""
    r, out = env.play("provision", {"instance_labels": ["e2e-idle", "e2e-busy"], "max_instances": 5,
                                    "llmops_engine_image_archive": str(env.archive),
                                    "vllm_stack_extra_env": {"STANDIN_TOKEN_DELAY": "0.05"}})
    assert "is healthy" in out
    env.play("provision", {"instance_label": "e2e-lost", "provision_deploy": False, "max_instances": 5})
    # the simulated clock runs 20x real time: 6 h, then a 240 min grace (12 real minutes) for e2e-fresh
    env.sim.advance(21600)
    env.play("provision", {"instance_label": "e2e-fresh", "provision_deploy": False, "max_instances": 5})
    tokens = {}
    for label in ("e2e-idle", "e2e-busy"):
        tok = (env.home / ".config" / "llmops-vastai" / "tokens" / f"{label}.token").read_text().strip()
        tokens[label] = tok
        SECRETS_SEEN.append(tok)
    return {"tokens": tokens}


def test_provision_reaches_health_through_nginx(env, fleet):
    rows = env.instances()
    for label in ("e2e-idle", "e2e-busy"):
        row = rows[label]
        assert row["actual_status"] == "running"
        base = _endpoint(row)
        assert _http(base + "/health")[0] == 200
        assert _http(base + "/v1/models")[0] == 401  # the token is required
        status, body = _http(base + "/v1/models", token=fleet["tokens"][label])
        assert status == 200 and b"qwen2.5-1.5b-instruct" in body
    # the token file is private to the controller's user
    tok_file = env.home / ".config" / "llmops-vastai" / "tokens" / "e2e-idle.token"
    assert oct(tok_file.stat().st_mode & 0o777) == "0o600"


def test_idle_shutdown(env, fleet):
    rows = env.instances()
    idle_base, busy_base = _endpoint(rows["e2e-idle"]), _endpoint(rows["e2e-busy"])
    # a finished request on e2e-idle: activity that then ages past idle_minutes
    status, _ = _http(idle_base + "/v1/chat/completions", token=fleet["tokens"]["e2e-idle"],
                      body={"model": "qwen2.5-1.5b-instruct", "messages": [{"role": "user", "content": "hi"}],
                            "max_tokens": 4})
    assert status == 200
    # e2e-lost: paused container -> SSH times out
    lost_id = rows["e2e-lost"]["id"]
    cid = _docker("ps", "-q", "--filter", f"label=llmops-vastai.vastsim.instance={lost_id}").stdout.decode().strip()
    assert cid, "container of e2e-lost not found"
    _docker("pause", cid)
    # a long stream on e2e-busy, started well before the idle window and open during the runs
    stream_done = {}

    def stream():
        req = urllib.request.Request(busy_base + "/v1/chat/completions", headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {fleet['tokens']['e2e-busy']}"},
            data=json.dumps({"model": "qwen2.5-1.5b-instruct", "stream": True, "max_tokens": 12000,
                             "messages": [{"role": "user", "content": "long"}]}).encode())
        chunks = 0
        try:
            with urllib.request.urlopen(req, timeout=1200) as resp:
                for line in resp:
                    if line.startswith(b"data:"):
                        chunks += 1
                    if stream_done.get("stop"):
                        break
        finally:
            stream_done["chunks"] = chunks

    t = threading.Thread(target=stream, daemon=True)
    t.start()
    time.sleep(40)  # idle_minutes 0.5 must pass since the request on e2e-idle
    policy = dict(POLICY, idle_shutdown_idle_minutes=0.5, idle_shutdown_unreachable_limit=2,
                  idle_shutdown_unreachable_min_age_minutes=100000, vast_billing_end=str(env.sim.now() + 86400))
    try:
        # dry run: lists what would stop, changes nothing, writes no audit event
        r, out = env.play("idle_shutdown", policy, inventory=env.inventory, check=True)
        assert 'would stop: e2e-idle"' in out
        # the same countdown as status.yml: e2e-idle now, the fresh one when its grace ends
        ids = {label: row["id"] for label, row in env.instances().items()}
        assert "e2e-idle (id %s): STOP now - idle for" % ids["e2e-idle"] in out
        assert "e2e-fresh (id %s): KEEP in " % ids["e2e-fresh"] in out and "boot grace" in out
        assert "e2e-busy (id %s): KEEP not while: " % ids["e2e-busy"] in out
        status_json = env.tmp / "status.json"
        r, out = env.play("status", dict(policy, status_json=str(status_json)), inventory=env.inventory)
        rows = {row["label"]: row for row in json.loads(status_json.read_text())["instances"]}
        assert rows["e2e-idle"]["idle_action"] == "stop" and rows["e2e-idle"]["idle_when"] == "now"
        assert rows["e2e-busy"]["idle_reason"] == "busy" and rows["e2e-busy"]["in_flight"] >= 1
        assert rows["e2e-busy"]["endpoint"].endswith("/v1") and rows["e2e-busy"]["session_cost"] > 0
        assert rows["e2e-fresh"]["idle_reason"] == "grace" and rows["e2e-fresh"]["stop_in_minutes"] > 0
        assert rows["e2e-lost"]["idle_reason"] == "unreachable"
        assert 0 <= rows["e2e-idle"]["last_activity_minutes_ago"] < 5
        assert all(i["actual_status"] == "running" for l, i in env.instances().items())
        assert not env.audit.exists() or "auto_shutdown" not in env.audit.read_text()

        r, out = env.play("idle_shutdown", policy, inventory=env.inventory)
        report = env.debug_msgs(r, "Report")
        assert "STOP - idle" in report["e2e-idle"]
        assert "KEEP" in report["e2e-busy"] and "in flight" in report["e2e-busy"]
        assert "KEEP" in report["e2e-fresh"] and "grace" in report["e2e-fresh"]
        assert "KEEP" in report["e2e-lost"] and "unreachable" in report["e2e-lost"]
        assert "2/2 failed probes" not in report["e2e-lost"] and "younger" in report["e2e-lost"]
        assert "unreachable: e2e-lost" in out
        assert "stopped e2e-idle" in out and "spent $" in out
        assert t.is_alive(), "the stream should still be running during the idle-shutdown run"
    finally:
        stream_done["stop"] = True
        _docker("unpause", cid, check=False)
    status = {l: i["actual_status"] for l, i in env.instances().items()}
    assert status == {"e2e-idle": "stopped", "e2e-busy": "running", "e2e-fresh": "running", "e2e-lost": "running"}
    events = [json.loads(line) for line in env.audit.read_text().splitlines()]
    auto = [(e["action"], e["label"]) for e in events if e["action"].startswith("auto_shutdown")]
    assert auto == [("auto_shutdown", "e2e-idle"), ("auto_shutdown_complete", "e2e-idle")]
    for secret in SECRETS_SEEN + [env.sim.api_key]:
        assert secret not in env.audit.read_text()


def test_keep_serving_never_restarts_what_idle_shutdown_stopped(env, fleet):
    # e2e-idle was stopped by idle shutdown (auto_shutdown_complete in the audit trail): the
    # reconcile job leaves it stopped and rents nothing (issue 16), also when it is interruptible-
    # looking (all three state fields stopped) and its GPU was taken meanwhile.
    idle = env.instances()["e2e-idle"]
    env.sim.ctl("POST", f"instances/{idle['id']}/gpu_taken")
    before = {i["id"] for i in env.sim.state()["instances"]}
    r, out = env.play("keep_serving", {"keep_serving_services": [{"name": "e2e-idle", "profile": "budget"},
                                                                   {"name": "e2e-busy", "profile": "budget"}]})
    assert "e2e-idle: leave" in out and "auto_shutdown" in out
    assert "e2e-busy: ok" in out
    assert {i["id"] for i in env.sim.state()["instances"]} == before
    assert env.instances()["e2e-idle"]["actual_status"] == "stopped"
    env.sim.ctl("POST", f"instances/{idle['id']}/gpu_released")


def _host_sh(label, script):
    cid = _docker("ps", "-q", "--filter",
                  f"label=llmops-vastai.vastsim.instance={_instances_by_label()[label]['id']}").stdout.decode().strip()
    res = _docker("exec", cid, "sh", "-c", script, check=False)
    assert res.returncode == 0, res.stderr.decode()[-2000:]
    return res.stdout.decode()


_INSTANCES = {}


def _instances_by_label():
    return _INSTANCES["env"].instances()


def test_host_side_rotation_clock_and_loading(env, fleet):
    """On a real container host (e2e-busy, the stack deployed by the roles): a request found
    after a real logrotate with dateext + compress (no delaycompress), a clock stepped back
    (activity stamped in the future), and an engine that loads (port refused, container up)."""
    _INSTANCES["env"] = env
    label = "e2e-busy"
    row = env.instances()[label]
    base = _endpoint(row)
    policy = dict(POLICY, idle_shutdown_hosts=label, idle_shutdown_idle_minutes=60)
    status_json = env.tmp / "status-host.json"

    def status():
        env.play("status", dict(policy, status_json=str(status_json)), inventory=env.inventory)
        return {r["label"]: r for r in json.loads(status_json.read_text())["instances"]}[label]

    # the stream of the previous test was cut by its client: wait until the engine is idle
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        code, body = _http(base + "/metrics", token=fleet["tokens"][label])
        if code == 200 and b"vllm:num_requests_running{" in body and not [
                ln for ln in body.decode().splitlines()
                if ln.startswith("vllm:num_requests_running{") and not ln.endswith(" 0.0")]:
            break
        time.sleep(2)
    # 1. real logrotate, RHEL-style names: vllm-activity.log-YYYYMMDD.gz, the live log empty
    status_code, _ = _http(base + "/v1/chat/completions", token=fleet["tokens"][label],
                           body={"model": "qwen2.5-1.5b-instruct", "max_tokens": 2,
                                 "messages": [{"role": "user", "content": "x"}]})
    assert status_code == 200
    _host_sh(label, "command -v logrotate >/dev/null || (apt-get update -qq && "
                    "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq logrotate >/dev/null)")
    _host_sh(label, "printf '%s\n' '/var/log/nginx/vllm-activity.log {' dateext compress nodelaycompress "
                    "'rotate 5' 'create 0640 www-data adm' postrotate 'nginx -s reopen' endscript '}' "
                    "> /tmp/llm-test.logrotate && logrotate -f -s /tmp/llm-test.state /tmp/llm-test.logrotate")
    listing = _host_sh(label, "ls /var/log/nginx/; wc -c < /var/log/nginx/vllm-activity.log")
    assert "vllm-activity.log-" in listing and ".gz" in listing
    got = status()
    assert got["idle_reason"] == "active", got
    assert got["last_activity_minutes_ago"] < 2, got  # the request inside the .gz, not the stack's start

    # 2. the clock stepped back: activity stamped an hour after the host's "now"
    _host_sh(label, "python3 -c \"import json,time; print(json.dumps({'msec': time.time() + 3600, 'request_time': 0.1, "
                    "'status': 200, 'uri': '/v1/chat/completions', 'method': 'POST'}))\" "
                    ">> /var/log/nginx/vllm-activity.log")
    got = status()
    assert (got["idle_action"], got["idle_reason"], got["unknown"]) == ("keep", "clock", True), got
    assert "after the host's clock" in got["idle_message"]
    _host_sh(label, ": > /var/log/nginx/vllm-activity.log")

    # 3. the engine loads a model: its port refuses while the container runs
    _host_sh(label, "echo STANDIN_LOAD_SECONDS=900 >> /opt/llm-stack/vllm.env && systemctl restart llm-stack")
    time.sleep(3)
    got = status()
    assert (got["idle_action"], got["idle_reason"]) == ("keep", "loading"), got
    assert "load_timeout 120 min" in got["idle_message"] and got["stop_in_minutes"] > 110
    r, out = env.play("idle_shutdown", dict(policy, idle_shutdown_load_timeout_minutes=0.02),
                      inventory=env.inventory, check=True)
    assert "never became healthy in" in out and f'would stop: {label}"' in out
    _host_sh(label, "sed -i '/^STANDIN_LOAD_SECONDS=/d' /opt/llm-stack/vllm.env && systemctl restart llm-stack")


def test_power_on_waits_for_health_and_power_off_prints_cost(env, fleet):
    # a health path that never answers 200 (401 without the token): a clear failure, not a hang
    r, out = env.play("power_on", {"instance_label": "e2e-idle", "health_path": "/v1/models", "health_timeout": 10,
                                   "health_delay": 2}, expect_rc=2)
    assert "did not answer 200 within 10 s" in out
    # the instance runs again; the stack comes back by itself (llm-stack.service enabled at boot)
    r, out = env.play("power_on", {"instance_label": "e2e-idle", "health_timeout": 300})
    assert env.instances()["e2e-idle"]["actual_status"] == "running"
    assert _http(_endpoint(env.instances()["e2e-idle"]) + "/health")[0] == 200
    r, out = env.play("power_off", {"instance_label": "e2e-idle", "vast_billing_end": str(env.sim.now() + 86400)})
    assert "stopped: e2e-idle" in out and "this session: " in out and "storage keeps billing" in out
    assert env.instances()["e2e-idle"]["actual_status"] == "stopped"


def _ledger_cents(env):
    led = env.sim.ledger()
    return round(led["total"] + 1e-9, 2), led


def test_redeploy_in_a_fresh_home_keeps_the_endpoint_token(env, fleet):
    """An AWX job starts with a new HOME: deploy.yml must read back the token the host serves,
    not make a new one and rotate the endpoint's token under its clients (issue 15)."""
    label = "e2e-busy"
    inst = env.instances()[label]
    assert inst["actual_status"] == "running", inst["actual_status"]
    tok_file = env.home / ".config" / "llmops-vastai" / "tokens" / f"{label}.token"
    old = fleet["tokens"][label]
    tok_file.unlink()  # what a fresh AWX job's HOME looks like
    env.play("deploy", {"deploy_hosts": label, "llmops_engine_image_archive": str(env.archive)},
             inventory=env.inventory)
    assert tok_file.read_text().strip() == old  # kept, and remembered on this controller again
    assert oct(tok_file.stat().st_mode & 0o777) == "0o600"
    base = _endpoint(env.instances()[label])
    assert _http(base + "/v1/models", token=old)[0] == 200


def test_cost_report_matches_ledger(env, fleet):
    outdir = env.tmp / "reports"
    end = str(env.sim.now() + 86400)
    # with a stopped instance still billing storage (the ledger moves with the simulated clock,
    # so the report must fall between two ledger reads)
    before, _ = _ledger_cents(env)
    env.play("cost_report", {"cost_report_dir": str(outdir), "vast_billing_end": end})
    after, _ = _ledger_cents(env)
    data = json.loads((outdir / "cost-report.json").read_text())
    assert before <= data["totals"]["total"] <= after
    assert data["stopped_storage"]["count"] == 1
    md = (outdir / "cost-report.md").read_text()
    assert "e2e-idle" in md and "Stopped instances still billing storage" in md

    # teardown refuses without the confirmation, then destroys
    r, out = env.play("teardown", {"instance_label": "e2e-fresh"}, expect_rc=2)
    assert "Refusing to destroy" in out
    env.play("teardown", {"instance_label": "e2e-fresh", "confirm": "e2e-fresh", "vast_billing_end": end})
    assert env.instances()["e2e-fresh"]["actual_status"] == "destroyed"
    # everything else destroyed too: the ledger stops moving, totals must match to the cent
    for label, inst in env.instances().items():
        if inst["actual_status"] != "destroyed":
            env.play("teardown", {"instance_id": inst["id"], "confirm": str(inst["id"]), "vast_billing_end": end})
    env.play("cost_report", {"cost_report_dir": str(outdir), "vast_billing_end": end})
    data = json.loads((outdir / "cost-report.json").read_text())
    total, led = _ledger_cents(env)
    assert data["totals"]["total"] == total
    for inst in data["instances"]:
        assert inst["total"] == round(led["instances"][str(inst["id"])]["total"] + 1e-9, 2), inst
    assert data["burn_rate"]["per_hour"] == 0
