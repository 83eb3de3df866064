"""`make test-live` (tools/test_live.sh + tests/live/scenario.yml) against the simulator."""
import os
import signal
import subprocess
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "tools", "test_live.sh")
BIN = os.path.join(REPO, ".venv", "bin")


def env_for(sim, **extra):
    env = {"PATH": "%s:%s" % (BIN, os.environ.get("PATH", "")), "HOME": os.environ.get("HOME", "/tmp"),
           "LANG": "C.UTF-8", "ANSIBLE_CONFIG": os.path.join(REPO, "ansible.cfg"),
           "ANSIBLE_COLLECTIONS_PATH": os.path.join(REPO, ".collections"), "ANSIBLE_NOCOLOR": "1",
           "LIVE_SSH": "0"}
    env.update(sim.env)
    env.update(extra)
    return env


def live(sim):
    return [r for r in sim.state()["instances"] if not r.get("destroyed_at")]


@pytest.fixture
def sim(vastsim_factory):
    return vastsim_factory(api_key="vk-live-0123456789abcdef", speed=50)


def test_scenario_passes_against_the_simulator_and_leaves_nothing(sim):
    proc = subprocess.run([SCRIPT], env=env_for(sim, LIVE_MAX_DPH="0.5", LIVE_MAX_SPEND="1.0"),
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "billed so far for llmops-live-" in out and "/h (cap $0.5/h)" in out
    assert live(sim) == []
    rows = sim.state()["instances"]
    assert len(rows) == 1 and rows[0]["dph_total"] <= 0.5          # one rental, under the cap
    states = [r for r in sim.requests() if r["endpoint"] == "manage"]
    assert len(states) >= 2                                        # stop and start were sent
    assert sim.api_key not in out


@pytest.mark.parametrize("missing", ["VAST_API_KEY", "LIVE_MAX_DPH", "LIVE_MAX_SPEND"])
def test_refuses_without_key_or_spend_cap(sim, missing):
    env = env_for(sim, LIVE_MAX_DPH="0.5", LIVE_MAX_SPEND="1.0")
    env.pop(missing)
    sim.clear_requests()
    proc = subprocess.run([SCRIPT], env=env, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 2 and missing in proc.stderr and "spend cap" in proc.stderr
    assert [r for r in sim.requests() if r.get("endpoint") not in (None, "sim")] == []


def test_cap_must_cover_the_scenario(sim):
    proc = subprocess.run([SCRIPT], env=env_for(sim, LIVE_MAX_DPH="0.5", LIVE_MAX_SPEND="0.1"),
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode != 0 and "LIVE_MAX_SPEND" in proc.stdout + proc.stderr
    assert sim.state()["instances"] == []


def test_interrupted_run_still_destroys_what_it_rented(vastsim_factory):
    sim = vastsim_factory(api_key="vk-live-int-0123456789", speed=0.2)   # slow clock: the wait is long
    proc = subprocess.Popen([SCRIPT], env=env_for(sim, LIVE_MAX_DPH="0.5", LIVE_MAX_SPEND="1.0"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not live(sim):
        time.sleep(0.3)
    assert live(sim), "the scenario never rented"
    os.killpg(proc.pid, signal.SIGINT)                  # Ctrl-C reaches the whole process group
    out, dummy = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert "cleaning up everything labelled" in out
    assert live(sim) == [], out[-3000:]
