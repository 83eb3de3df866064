"""The execution environment, built and used: tools/ee/build.sh builds execution-environment.yml
with ansible-builder on the locally made Debian base; then, as AWX runs a job, ansible-runner
runs the collection's playbooks inside that image (process isolation, Docker as the engine)
against the simulator: provision.yml in container mode, then idle_shutdown.yml --check with the
AWX inventory source (the llmops.vastai.vast plugin)."""
import json
import os
import shutil
import subprocess

import pytest

from tests.helpers import images
from tests.helpers.ansible import REPO
from tests.helpers.vastsim import launch

ansible_runner = pytest.importorskip("ansible_runner")
TAG = "llmops/vastai-ee:local"
DEV_ONLY = ("pytest", "molecule", "ansible-lint", "hypothesis", "vastai", "ansible-builder", "antsibull-changelog")


@pytest.fixture(scope="module")
def ee_image():
    env = images.docker_env()
    res = subprocess.run([os.path.join(REPO, "tools", "ee", "build.sh"), TAG], env=env, capture_output=True,
                         text=True, timeout=1200, check=False)
    assert res.returncode == 0, res.stderr[-6000:]
    return TAG


@pytest.fixture
def sim():
    s = launch()
    yield s
    s.stop()


def project(pdd):
    """The AWX project: the repository's playbooks, AWX inventory source and ansible.cfg."""
    dest = pdd / "project"
    files = subprocess.run(["git", "ls-files", "playbooks", "awx", "ansible.cfg"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(os.path.join(REPO, f), dest / f)
    return dest


def run_job(tmp_path, name, image, sim, playbook, extravars, check=False):
    """One AWX job: a fresh private data dir; every job template uses the vast.ai inventory
    (awx/configure.yml), sourced from awx/inventory/running.vast.yml."""
    pdd = tmp_path / name
    pdd.mkdir()
    project(pdd)
    (pdd / "inventory").mkdir()
    shutil.copy(os.path.join(REPO, "awx", "inventory", "running.vast.yml"), pdd / "inventory" / "running.vast.yml")
    r = ansible_runner.run(
        private_data_dir=str(pdd), playbook=playbook, extravars=extravars,
        # as AWX injects them: the vast.ai credential's env, the EE's own collections
        envvars={"VAST_URL": sim.url, "VAST_API_KEY": sim.api_key,
                 "ANSIBLE_COLLECTIONS_PATH": "/usr/share/ansible/collections", "ANSIBLE_NOCOLOR": "1"},
        cmdline="--check" if check else None, quiet=True,
        process_isolation=True, process_isolation_executable="docker", container_image=image,
        # the simulator listens on the host's 127.0.0.1
        container_options=["--network=host"])
    out = r.stdout.read()
    assert r.rc == 0, f"{playbook} in the EE: rc={r.rc} ({r.status})\n{out[-6000:]}"
    assert sim.api_key not in out
    return r, out


def test_ee_holds_the_collection_and_only_runtime_packages(ee_image):
    env = images.docker_env()
    res = subprocess.run(["docker", "run", "--rm", ee_image, "python3", "-m", "pip", "list", "--format", "json"],
                         env=env, capture_output=True, text=True, timeout=120, check=True)
    installed = {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(res.stdout)}
    assert {"ansible-core", "ansible-runner", "requests", "urllib3", "prometheus-client"} <= set(installed)
    assert not [p for p in DEV_ONLY if p in installed], installed
    res = subprocess.run(["docker", "run", "--rm", ee_image, "ansible-doc", "-t", "filter", "-l", "llmops.vastai"],
                         env=env, capture_output=True, text=True, timeout=120, check=True)
    assert "llmops.vastai.idle_decision" in res.stdout
    # the filter that needs prometheus-client runs in the EE
    res = subprocess.run(["docker", "run", "--rm", ee_image, "ansible", "localhost", "-m", "ansible.builtin.debug",
                          "-a", "msg={{ 'vllm:num_requests_running 2\\nvllm:num_requests_waiting 1\\n' "
                                "| llmops.vastai.vllm_activity | to_json }}"],
                         env=env, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert '\\"in_flight\\": 3' in res.stdout, res.stdout


def test_provision_and_idle_shutdown_check_run_inside_the_ee(ee_image, sim, tmp_path):
    label = "ee-job"
    r, out = run_job(tmp_path, "provision", ee_image, sim, "playbooks/provision.yml",
                     {"vast_mode": "container", "provision_deploy": False, "instance_label": label,
                      "wait_timeout": 120})
    rows = [i for i in sim.state()["instances"] if i.get("label") == label]
    assert len(rows) == 1 and rows[0]["actual_status"] == "running", rows
    # the rent ran in the container: its module ran with the EE's python
    assert any(ev.get("event") == "runner_on_ok" and ev["event_data"].get("task") == "Rent and wait until SSH answers"
               for ev in r.events)

    r, out = run_job(tmp_path, "idle", ee_image, sim, "playbooks/idle_shutdown.yml",
                     {"idle_shutdown_probe_timeout": 3}, check=True)
    # the inventory plugin found the instance; it is not reachable (a --hosts none simulator), so
    # the decision keeps it, and check mode changes nothing
    assert f"{label} (id {rows[0]['id']}): KEEP - unreachable" in out, out[-3000:]
    assert "DRY RUN (check mode): nothing is changed" in out and "checked: 1; would stop: none" in out
    assert r.stats["failures"] == {}
    rows = [i for i in sim.state()["instances"] if i.get("label") == label]
    assert rows[0]["actual_status"] == "running", "--check stopped the instance"
    sim.destroy_all()
