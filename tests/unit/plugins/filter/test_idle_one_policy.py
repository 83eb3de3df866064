"""One idle policy: the controller's filter and the on-host watchdog decide with the same file
(plugins/module_utils/idle_policy.py) and, fed the same observations, decide the same."""
import importlib.util
import pathlib

import pytest
import yaml

from ansible_collections.llmops.vastai.plugins.filter import idle
from tests.unit.plugins.filter.test_idle import CASES, HOST, H, M, MONO, REFUSED, raw

REPO = pathlib.Path(__file__).resolve().parents[4]
POLICY_FILE = REPO / "plugins" / "module_utils" / "idle_policy.py"
WATCHDOG = REPO / "roles" / "idle_watchdog" / "files" / "llmops-idle-watchdog.py"


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, str(path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


watchdog = _load(WATCHDOG, "llmops_watchdog_under_test")
host_policy = watchdog.load_policy({"policy_file": str(POLICY_FILE)})  # as the host loads it

CFG = {"idle_minutes": 30, "boot_grace_minutes": 20, "load_timeout_minutes": 120, "stop_when_never_healthy": True}

RAWS = {
    "idle": raw(),
    "recent": raw(log={"state": "ok", "last_start": HOST - 61, "last_end": HOST - 60}),
    "in-flight": raw(metrics="vllm:num_requests_running 2\nvllm:num_requests_waiting 1\n"),
    "no-gauges": raw(metrics="# nothing here\n"),
    "nan": raw(metrics="vllm:num_requests_running NaN\nvllm:num_requests_waiting 0\n"),
    "loading": raw(unit={"state": "active", "wall": HOST - 40 * M, "mono": MONO - 40 * M}, **REFUSED),
    "never-healthy": raw(unit={"state": "active", "wall": HOST - 3 * H, "mono": MONO - 3 * H},
                         container={"running": True, "status": "running", "started_at": HOST - 3 * H,
                                    "restarts": 0}, **REFUSED),
    "down": raw(container={"running": False, "status": "exited", "started_at": None, "restarts": 0}, **REFUSED),
    "future-request": raw(log={"state": "ok", "last_start": HOST + 3000, "last_end": HOST + 3001}),
    "clock-step": raw(unit={"state": "active", "wall": HOST - 3 * H, "mono": MONO - 2 * H}),
    "fresh-stack": raw(unit={"state": "active", "wall": HOST - 120, "mono": MONO - 120}),
    "no-log": raw(log={"state": "missing", "path": "/var/log/nginx/vllm-activity.log"}),
    "no-unit": raw(unit={"state": "not-found", "wall": None, "mono": None}),
}


def test_watchdog_and_filter_run_the_same_file():
    assert host_policy.decide.__code__.co_filename == str(POLICY_FILE)
    assert idle.idle_policy.decide.__code__.co_code == host_policy.decide.__code__.co_code
    # the role installs exactly that file, and idle_shutdown.yml / status.yml run it as their probe
    tasks = yaml.safe_load((REPO / "roles" / "idle_watchdog" / "tasks" / "main.yml").read_text())
    srcs = [t["ansible.builtin.copy"].get("src") for t in tasks if "ansible.builtin.copy" in t]
    assert "{{ role_path }}/../../plugins/module_utils/idle_policy.py" in srcs
    assert "{{ playbook_dir }}/../plugins/module_utils/idle_policy.py probe" in (
        REPO / "playbooks" / "tasks" / "idle_observe.yml").read_text()
    for playbook in ("idle_shutdown.yml", "status.yml"):
        assert "ansible.builtin.include_tasks: tasks/idle_observe.yml" in (REPO / "playbooks" / playbook).read_text()


@pytest.mark.parametrize("name", sorted(RAWS))
def test_same_observation_same_decision(name):
    r = RAWS[name]
    on_host, _state = watchdog.decision_for(host_policy, CFG, r, {})
    pol = dict(CFG, max_clock_skew_minutes=0)  # the watchdog has no API clock
    on_controller = idle.idle_decision(idle.idle_observation(r, api_now=r["now"]), pol)
    keys = ("action", "reason", "message", "unknown", "stop_in_seconds")
    assert {k: on_host[k] for k in keys} == {k: on_controller[k] for k in keys}


def test_table_observations_decide_the_same_on_both():
    for case_id, observation, policy, *_rest in CASES:
        pol = dict(CFG, **(policy or {}))
        a = idle.idle_decision(observation, pol)
        b = host_policy.decide(observation, pol)
        assert (a["action"], a["reason"], a["message"]) == (b["action"], b["reason"], b["message"]), case_id


def test_the_watchdog_remembers_counter_moves_as_activity():
    r1 = raw(metrics="vllm:num_requests_running 0\nvllm:num_requests_waiting 0\nvllm:request_success_total 5\n")
    d, state = watchdog.decision_for(host_policy, CFG, r1, {})
    assert d["action"] == "stop" and state["counters"] == 5.0
    r2 = raw(metrics="vllm:num_requests_running 0\nvllm:num_requests_waiting 0\nvllm:request_success_total 6\n")
    d, state = watchdog.decision_for(host_policy, CFG, r2, state)
    assert (d["action"], d["reason"]) == ("keep", "active") and state["last_active"] == pytest.approx(HOST)
