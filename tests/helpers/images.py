"""Locally built test images (tools/testhost/build.sh) and systemd containers made from them.

    from tests.helpers.images import ensure_images, run_systemd_container

    imgs = ensure_images()            # builds what is missing (first time ~2 min), else ~0.3 s
    imgs["vastvm"]                    # "local/llmops-vastvm:latest"
    with run_systemd_container(imgs["testhost"], "mytest-", ports=[22]) as c:
        c.port(22)                    # host port published on 127.0.0.1
        c.exec("systemctl", "is-active", "ssh")

docs/testhost.md describes the images and their recipe.
"""
import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.join(REPO, "tools", "testhost", "build.sh")
DOCKERD = os.path.join(REPO, "tools", "testhost", "dockerd.sh")
RUN_FLAGS_FILE = os.path.join(REPO, "tools", "testhost", "run-flags.txt")
DEFAULT_DOCKER_HOST = "unix:///run/llmops-vastai/docker.sock"
# Label on every container these helpers start, so a crashed run can be cleaned up by label.
LABEL = "llmops-vastai.test=1"

IMAGES = {
    "testhost": "local/llmops-testhost:latest",
    "vastvm": "local/llmops-vastvm:latest",
    "standin": "local/llmops-engine-standin:latest",
    "vllm": "vllm/vllm-openai:v0.33.0",
}


_engine_checked = None  # the DOCKER_HOST already seen answering (checked once per process)


def systemd_run_flags():
    """`docker run` flags for a systemd container here (capability "fix A" of test-infra.md)."""
    with open(RUN_FLAGS_FILE) as f:
        return [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]


def docker_env():
    """Environment with DOCKER_HOST set to a running engine; starts the project's engine if none.

    The engine is shared and left running (dockerd.sh's data root keeps the image cache)."""
    global _engine_checked
    env = dict(os.environ)
    env.setdefault("DOCKER_HOST", DEFAULT_DOCKER_HOST)
    if _engine_checked == env["DOCKER_HOST"]:
        return env
    if subprocess.run(["docker", "version"], env=env, capture_output=True).returncode != 0:
        if env["DOCKER_HOST"] != DEFAULT_DOCKER_HOST:
            raise RuntimeError(f"no Docker engine answers at DOCKER_HOST={env['DOCKER_HOST']}")
        out = subprocess.run([DOCKERD, "start"], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"could not start the Docker engine: {out.stderr}")
    os.environ.setdefault("DOCKER_HOST", env["DOCKER_HOST"])
    _engine_checked = env["DOCKER_HOST"]
    return env


def docker(*args, check=True, input=None, timeout=300, capture=True):
    """Run the docker CLI against the project's engine; returns CompletedProcess (text)."""
    res = subprocess.run(["docker", *args], env=docker_env(), input=input, text=True,
                         capture_output=capture, timeout=timeout)
    if check and res.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


def ensure_images():
    """Build the test images when missing (cached by recipe hash) and return their names.

    Keys: testhost, vastvm, standin, vllm (the stand-in under the name vllm_stack deploys), plus
    *_tag (the recipe-hash tags)."""
    env = docker_env()
    res = subprocess.run([BUILD, "all"], env=env, capture_output=True, text=True, timeout=1800)
    if res.returncode != 0:
        raise RuntimeError(f"tools/testhost/build.sh failed:\n{res.stderr[-4000:]}")
    tags = subprocess.run([BUILD, "--print-tags"], env=env, capture_output=True, text=True, check=True)
    out = dict(IMAGES)
    for line in tags.stdout.split():
        k, _, v = line.partition("=")
        out[k if k == "vllm" else k + "_tag"] = v
    return out


def wait_port(port, host="127.0.0.1", timeout=60, banner=None):
    """Wait until a TCP port accepts (and, with banner, sends bytes starting with it)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=2) as s:
                if banner is None:
                    return True
                s.settimeout(3)
                if s.recv(64).startswith(banner):
                    return True
        except OSError as e:
            last = e
        time.sleep(0.2)
    raise TimeoutError(f"{host}:{port} not ready after {timeout}s ({last})")


class Container:
    def __init__(self, name):
        self.name = name

    def exec(self, *cmd, check=True, input=None, timeout=300):
        opts = ["-i"] if input is not None else []
        return docker("exec", *opts, self.name, *cmd, check=check, input=input, timeout=timeout)

    def port(self, container_port):
        out = docker("port", self.name, f"{container_port}/tcp").stdout.split()[0]
        return int(out.rsplit(":", 1)[1])

    def wait_running(self, timeout=60):
        """Wait for `systemctl is-system-running` to settle; returns its state."""
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            # Right after start the bus may not exist yet; --wait then fails at once: retry.
            res = self.exec("timeout", "20", "systemctl", "is-system-running", "--wait", check=False)
            state = res.stdout.strip()
            if state in ("running", "degraded"):
                return state
            time.sleep(0.2)
        raise TimeoutError(f"{self.name}: systemd not up after {timeout}s (state {state!r})")

    def logs(self):
        return docker("logs", "--tail", "50", self.name, check=False).stdout


@contextlib.contextmanager
def run_systemd_container(image, prefix="llmops-test-", ports=(22,), extra=(), wait=True):
    """Start a systemd container of `image` with `ports` published on 127.0.0.1 (random host
    ports); removed with its anonymous volumes on exit."""
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    args = ["run", "-d", "--name", name, "--hostname", name[:63], "--label", LABEL,
            *systemd_run_flags(), *extra]
    for p in ports:
        args += ["-p", f"127.0.0.1::{p}"]
    docker(*args, image)
    c = Container(name)
    try:
        if wait:
            c.wait_running()
        yield c
    finally:
        docker("rm", "-f", "-v", name, check=False)


def load_image_into(container, image):
    """`docker save IMAGE | docker exec -i CONTAINER docker load` (the inner engine of a vastvm)."""
    env = docker_env()
    save = subprocess.Popen(["docker", "save", image], env=env, stdout=subprocess.PIPE)
    load = subprocess.run(["docker", "exec", "-i", container, "docker", "load"], env=env,
                          stdin=save.stdout, capture_output=True, text=True, timeout=600)
    save.stdout.close()
    if save.wait() != 0 or load.returncode != 0:
        raise RuntimeError(f"loading {image} into {container} failed: {load.stderr}")
    return load.stdout


def save_archive(image, path):
    """`docker save IMAGE | gzip -1 > PATH`: the engine image as a file for the playbooks'
    llmops_engine_image_archive (no registry here)."""
    with open(path, "wb") as f:
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE, env=docker_env())
        subprocess.run(["gzip", "-1"], stdin=save.stdout, stdout=f, check=True)
        save.stdout.close()
        if save.wait() != 0:
            raise RuntimeError(f"docker save {image} failed")
    return path


def cleanup_labelled():
    """Remove every container the helpers started (after a crashed run)."""
    ids = docker("ps", "-aq", "--filter", f"label={LABEL}").stdout.split()
    if ids:
        docker("rm", "-f", "-v", *ids, check=False)
    return ids


def have_docker_cli():
    return shutil.which("docker") is not None
