"""Start the vast.ai simulator (tools/vastsim) for tests, benchmarks and the demo.

    with start_vastsim(speed=50, offers=1000) as sim:
        requests.get(sim.url + "/api/v1/instances/", headers={"Authorization": f"Bearer {sim.api_key}"})
        sim.advance(60); sim.ledger(); sim.add_faults([{"endpoint": "create", "fault": "lost_response"}])

Keyword arguments are the launcher's options (`latency=50` → `--latency 50`, `rate_limits=True` →
`--rate-limits`). Unless given, `speed` defaults to TEST_SPEED so a new instance reaches
"running" in about 2 real seconds.
"""
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from tests.helpers.net import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCHER = os.path.join(ROOT, "tools", "vastsim")
TEST_SPEED = 20.0   # provision 4 s + image pull 40 s of simulated time → ~2.2 s real


class VastSim:
    def __init__(self, proc, port, api_key, log_path):
        self.proc = proc
        self.port = port
        self.api_key = api_key
        self.url = f"http://127.0.0.1:{port}"
        self.env = {"VAST_URL": self.url, "VAST_API_KEY": api_key}
        self.log_path = log_path

    # --- control API --------------------------------------------------------------------
    def ctl(self, method, path, json_body=None, **kw):
        """Call /_sim/<path>; returns the decoded JSON. Raises RuntimeError on an HTTP error."""
        if "json" in kw:
            json_body = kw.pop("json")
        path = path.lstrip("/")
        if path.startswith("_sim/"):
            path = path[len("_sim/"):]
        data = None if json_body is None else json.dumps(json_body).encode()
        req = urllib.request.Request(f"{self.url}/_sim/{path}", data=data, method=method.upper(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"/_sim/{path}: HTTP {e.code}: {e.read().decode(errors='replace')}") from None

    def advance(self, seconds):
        return self.ctl("POST", "clock/advance", {"seconds": seconds})["now"]

    def now(self):
        return self.ctl("GET", "clock")["now"]

    def add_faults(self, rules):
        return self.ctl("POST", "faults", {"rules": list(rules)})

    def clear_faults(self):
        return self.ctl("DELETE", "faults")

    def ledger(self):
        return self.ctl("GET", "ledger")

    def requests(self):
        return self.ctl("GET", "requests")

    def clear_requests(self):
        return self.ctl("DELETE", "requests")

    def state(self):
        return self.ctl("GET", "state")

    def bulk(self, count, **kw):
        return self.ctl("POST", "instances/bulk", dict(kw, count=count))["ids"]

    def force(self, instance_id, actual_status, hold=True):
        return self.ctl("POST", f"instances/{instance_id}/force", {"actual_status": actual_status, "hold": hold})

    def take_offer(self, offer_id):
        return self.ctl("POST", f"offers/{offer_id}/take")

    def set_credit(self, credit):
        return self.ctl("POST", "credit", {"credit": credit})["credit"]

    def instance(self, instance_id):
        """The instance's row from /_sim/state (destroyed ones included), or None."""
        for row in self.state()["instances"]:
            if row["id"] == int(instance_id):
                return row
        return None

    def wait_status(self, instance_id, status, timeout=20.0):
        """Poll until actual_status == status (real seconds); returns the row or raises."""
        deadline = time.monotonic() + timeout
        row = None
        while time.monotonic() < deadline:
            row = self.instance(instance_id)
            if row and row["actual_status"] == status:
                return row
            time.sleep(0.1)
        raise AssertionError(f"instance {instance_id} not {status} after {timeout}s: "
                             f"{row and row['actual_status']}")

    def settle(self, instance_id, status, seconds=60.0):
        """Jump the clock `seconds` (enough for any pending transition) and check the status —
        faster than wait_status for tests that only need the end state."""
        self.advance(seconds)
        return self.wait_status(instance_id, status, timeout=5.0)

    def destroy_all(self):
        """Destroy every instance left through the API, so a docker backend removes its containers."""
        for inst in self.state()["instances"]:
            if inst.get("actual_status") != "destroyed":
                req = urllib.request.Request(f"{self.url}/api/v0/instances/{inst['id']}/", method="DELETE",
                                             headers={"Authorization": f"Bearer {self.api_key}"})
                try:
                    urllib.request.urlopen(req, timeout=30).read()
                except OSError:
                    pass

    # --- process ------------------------------------------------------------------------
    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def output(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()


def launch(api_key="sim-key", port=None, **options):
    """Start a simulator and return a VastSim once /_sim/health answers (caller stops it)."""
    port = port or free_port()
    options.setdefault("speed", TEST_SPEED)
    argv = [sys.executable, LAUNCHER, "--port", str(port), "--api-key", api_key]
    for k, v in options.items():
        if v is None or v is False:
            continue
        flag = "--" + k.replace("_", "-")
        argv += [flag] if v is True else [flag, str(v)]
    log = tempfile.NamedTemporaryFile(prefix="vastsim-", suffix=".log", delete=False)
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    log.close()
    sim = VastSim(proc, port, api_key, log.name)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vastsim exited with {proc.returncode}: {sim.output()}")
        try:
            if sim.ctl("GET", "health").get("ok"):
                return sim
        except (OSError, RuntimeError):
            time.sleep(0.05)
    sim.stop()
    raise RuntimeError(f"vastsim did not answer on port {port}: {sim.output()}")


@contextlib.contextmanager
def start_vastsim(**cli_options):
    sim = launch(**cli_options)
    try:
        yield sim
    finally:
        sim.stop()


def cli_env(sim, home):
    """Environment for running the official `vastai` CLI against `sim` with a private HOME,
    so it caches nothing (gpu names, role, api key) outside `home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAST_", "XDG_"))}
    env.update(sim.env)
    env.update({"HOME": str(home), "XDG_CONFIG_HOME": os.path.join(str(home), ".config"),
                "XDG_CACHE_HOME": os.path.join(str(home), ".cache"), "NO_COLOR": "1",
                "COLUMNS": "250", "PYTHONDONTWRITEBYTECODE": "1"})
    return env


def run_vastai(sim, home, *args, timeout=60):
    """Run the official CLI (.venv/bin/vastai) unchanged; returns CompletedProcess (text)."""
    exe = os.path.join(os.path.dirname(sys.executable), "vastai")
    return subprocess.run([exe, *args], env=cli_env(sim, home), capture_output=True, text=True,
                          timeout=timeout, cwd=str(home))
