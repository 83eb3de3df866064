"""Molecule scenarios of the roles, run as `molecule test` subprocesses on systemd containers.

Each scenario (roles/<role>/molecule/default) creates its target from the locally built images
(tests.helpers.images.ensure_images), converges, checks idempotence, verifies through real
HTTP and destroys the target. A failing step fails the test with the tail of Molecule's output.
"""
import json
import os
import subprocess

import pytest

from tests.helpers.images import docker, docker_env, ensure_images

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
VENV_BIN = os.path.join(REPO, ".venv", "bin")

# role -> the platform (container) name its molecule.yml declares
SCENARIOS = {
    "docker_engine": "llmops-roles-docker-engine",
    "vllm_stack": "llmops-roles-vllm-stack",
    "health_proxy": "llmops-roles-health-proxy",
    "idle_watchdog": "llmops-roles-idle-watchdog",
}


@pytest.fixture(scope="module")
def images():
    return ensure_images()


def molecule_env():
    env = docker_env()
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")  # molecule shells out to ansible-config
    env["ANSIBLE_CONFIG"] = os.path.join(REPO, "ansible.cfg")
    env["ANSIBLE_COLLECTIONS_PATH"] = os.path.join(REPO, ".collections")
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["NO_COLOR"] = "1"
    env["PY_COLORS"] = "0"
    return env


def container_volumes(name):
    res = docker("inspect", name, check=False)
    if res.returncode != 0:
        return []
    return [m["Name"] for m in json.loads(res.stdout)[0].get("Mounts", []) if m.get("Type") == "volume"]


# About 2-4 min each on an idle 2-core host; a host shared with other test runs needs more.
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("role", sorted(SCENARIOS))
def test_molecule_scenario(role, images):
    assert os.path.exists(os.path.join(REPO, ".collections", "ansible_collections", "llmops", "vastai")), \
        "collection not linked: run `make setup`"
    cwd = os.path.join(REPO, "roles", role)
    env = molecule_env()
    env["LLMOPS_TESTHOST_IMAGE"] = images["testhost"]
    env["LLMOPS_VASTVM_IMAGE"] = images["vastvm"]
    volumes = []
    try:
        proc = subprocess.Popen([os.path.join(VENV_BIN, "molecule"), "test"], cwd=cwd, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if not volumes and "prepare" in line and "Executing" in line:  # target exists now
                volumes = container_volumes(SCENARIOS[role])
        rc = proc.wait()
        assert rc == 0, f"molecule test of {role} failed (rc {rc}):\n" + "".join(lines[-150:])
    finally:
        volumes = volumes or container_volumes(SCENARIOS[role])
        subprocess.run([os.path.join(VENV_BIN, "molecule"), "destroy"], cwd=cwd, env=env,
                       capture_output=True, timeout=300)
        # `molecule destroy` leaves the anonymous volumes (/var/lib/docker) behind.
        for vol in volumes:
            docker("volume", "rm", vol, check=False)
