"""The systemd test images boot, accept SSH with a generated key, and (vastvm) run Docker in Docker."""
import os
import subprocess
import tempfile
import time

import pytest
import requests

from tests.helpers.images import ensure_images, load_image_into, run_systemd_container, wait_port


@pytest.fixture(scope="module")
def images():
    return ensure_images()


@pytest.fixture(scope="module")
def ssh_key():
    with tempfile.TemporaryDirectory() as d:
        key = os.path.join(d, "id_ed25519")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
        yield key


def ssh(key, port, *cmd, check=True):
    res = subprocess.run(
        ["ssh", "-i", key, "-p", str(port), "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
         "-o", "LogLevel=ERROR", "root@127.0.0.1", *cmd],
        capture_output=True, text=True, timeout=60)
    if check:
        assert res.returncode == 0, res.stderr
    return res


def check_boot_and_ssh(c, ssh_key):
    assert c.wait_running() == "running", c.exec("systemctl", "--failed", check=False).stdout
    assert c.exec("systemctl", "--failed", "--no-legend", "--plain").stdout.strip() == ""
    port = c.port(22)
    wait_port(port, banner=b"SSH-", timeout=30)
    # No key installed yet: refused (root login is key-only).
    assert ssh(ssh_key, port, "true", check=False).returncode == 255
    c.exec("sh", "-c", "cat >> /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys",
           input=open(ssh_key + ".pub").read())
    out = ssh(ssh_key, port, "python3 -c 'import apt, sys; print(sys.version_info[0])'; ps -p 1 -o comm=")
    assert out.stdout.split() == ["3", "systemd"]
    return port


def test_testhost_boots_and_serves_ssh(images, ssh_key):
    t0 = time.monotonic()
    with run_systemd_container(images["testhost"], "testhost-t-") as c:
        port = check_boot_and_ssh(c, ssh_key)
        print(f"testhost: systemd running + SSH login in {time.monotonic() - t0:.1f} s")
        # The docker_engine role's target: Docker is not preinstalled, sudo/gnupg/curl are.
        assert ssh(ssh_key, port, "command -v docker", check=False).returncode != 0
        ssh(ssh_key, port, "command -v sudo gpg curl ip")
        # Host keys are made per container at first boot, not baked into the image.
        out = ssh(ssh_key, port, "systemctl show -p Result --value ssh-hostkeys; ls /etc/ssh/ssh_host_ed25519_key")
        assert out.stdout.split() == ["success", "/etc/ssh/ssh_host_ed25519_key"]


def test_vastvm_docker_in_docker_runs_the_standin(images, ssh_key):
    with run_systemd_container(images["vastvm"], "vastvm-t-", ports=[22, 8000]) as c:
        port = check_boot_and_ssh(c, ssh_key)
        assert ssh(ssh_key, port, "systemctl is-enabled docker; systemctl is-active docker").stdout.split() == \
            ["enabled", "active"]
        v = ssh(ssh_key, port, "docker compose version --short").stdout.strip()
        assert v.startswith("2."), v
        assert ssh(ssh_key, port, "command -v nginx", check=False).returncode != 0
        out = load_image_into(c.name, images["vllm"])
        assert "vllm/vllm-openai:v0.33.0" in out
        ssh(ssh_key, port, "docker run -d --name engine -p 8000:8000 -e STANDIN_LOAD_SECONDS=0.5 "
                           "vllm/vllm-openai:v0.33.0 org/m --served-model-name m --api-key k")
        url = f"http://127.0.0.1:{c.port(8000)}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(url + "/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, ssh(ssh_key, port, "docker logs engine", check=False).stderr
            time.sleep(0.2)
        r = requests.get(url + "/v1/models", headers={"Authorization": "Bearer k"}, timeout=5)
        assert r.json()["data"][0]["id"] == "m"
        # compose v2 inside drives the inner engine too.
        ssh(ssh_key, port, "mkdir -p /tmp/st && printf 'services:\\n  e:\\n    image: vllm/vllm-openai:v0.33.0\\n"
                           "    pull_policy: never\\n    command: [m2]\\n    environment: {STANDIN_LOAD_SECONDS: \"0\"}\\n"
                           "' > /tmp/st/docker-compose.yml && cd /tmp/st && docker compose up -d --wait")
        ps = ssh(ssh_key, port, "cd /tmp/st && docker compose ps --format '{{.Service}} {{.State}}'").stdout
        assert ps.split() == ["e", "running"]
