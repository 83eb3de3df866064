"""vllm_stack: the rendered compose file, env file and systemd unit, checked statically.

`docker compose config` runs inside the role itself (template validate:) and in Molecule; the
host has no compose v2, so the compose file is checked as data here."""
import os
import shutil
import subprocess

import pytest
import yaml

from tests.unit.roles import render

TEMPLATES = [("docker-compose.yml.j2", "docker-compose.yml"), ("vllm.env.j2", "vllm.env"),
             ("llm-stack.service.j2", "llm-stack.service"), ("wait-healthy.sh.j2", "wait-healthy.sh")]


VARIANTS = {
    "default": {"vllm_stack_extra_args": ["--enable-prefix-caching"],
                "vllm_stack_extra_env": {"STANDIN_LOAD_SECONDS": 5}},
    "gpu_all": {"_vllm_stack_gpu_on": True},
    "gpu_ids": {"_vllm_stack_gpu_on": True, "vllm_stack_gpu_device_ids": [0, 1]},
    "hf_token": {"vllm_stack_hf_token": "hf_abc"},
    "no_secrets": {"vllm_stack_api_key": ""},
    # a user-chosen key with shell syntax in it: the entrypoint sources the file with /bin/sh
    "odd_key": {"vllm_stack_api_key": "a$b 'c\" `d` ;e", "vllm_stack_hf_token": "hf_$(id)"},
}


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    """Every variant rendered in one ansible-playbook run."""
    jobs = []
    for name, over in VARIANTS.items():
        base = {"_vllm_stack_gpu_on": False, "vllm_stack_api_key": "k-123", "vllm_stack_hf_token": ""}
        base.update(over)
        jobs.append((TEMPLATES, base, str(tmp_path_factory.mktemp(name))))
    return dict(zip(VARIANTS, render.render_many("vllm_stack", jobs)))


def compose(files):
    with open(files["docker-compose.yml"]) as f:
        return yaml.safe_load(f)["services"]["vllm"]


def test_compose_service(variants):
    svc = compose(variants["default"])
    assert svc["image"] == "vllm/vllm-openai:v0.33.0"
    assert svc["command"] == ["Qwen/Qwen2.5-1.5B-Instruct", "--served-model-name", "qwen2.5-1.5b-instruct",
                              "--max-model-len", "8192", "--gpu-memory-utilization", "0.9",
                              "--tensor-parallel-size", "1", "--enable-prefix-caching"]
    assert svc["ipc"] == "host" and svc["init"] is True and svc["restart"] == "unless-stopped"
    assert svc["ports"] == ["127.0.0.1:8000:8000"]
    assert svc["pull_policy"] == "missing"
    assert svc["environment"] == {"STANDIN_LOAD_SECONDS": "5"}
    # secrets: no env_file (docker would copy them into the container's config); the file is
    # mounted and exported by the shell entrypoint, which then execs `vllm serve`
    assert "env_file" not in svc
    assert svc["entrypoint"] == ["/bin/sh", "-c", 'set -a && . /run/llm-stack/vllm.env && set +a && exec "$$0" "$$@"',
                                 "vllm", "serve"]
    assert svc["volumes"] == ["/opt/llm-stack/hf-cache:/root/.cache/huggingface",
                              "/opt/llm-stack/vllm.env:/run/llm-stack/vllm.env:ro"]
    assert svc["healthcheck"]["test"][:2] == ["CMD", "curl"] and svc["healthcheck"]["start_period"] == "1800s"
    assert "deploy" not in svc


def test_gpu_reservation_switch(variants):
    svc = compose(variants["gpu_all"])
    assert svc["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    svc = compose(variants["gpu_ids"])
    assert svc["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] == ["0", "1"]


def test_env_file_has_only_the_secrets(variants):
    files = variants["hf_token"]
    with open(files["vllm.env"]) as f:
        lines = [ln for ln in f.read().splitlines() if ln and not ln.startswith("#")]
    assert lines == ["VLLM_API_KEY=k-123", "HF_TOKEN=hf_abc", "HUGGING_FACE_HUB_TOKEN=hf_abc"]
    with open(files["docker-compose.yml"]) as f:
        text = f.read()
    assert "k-123" not in text and "hf_abc" not in text


def test_env_file_exports_exact_values_through_the_entrypoint(variants):
    """What the engine sees is what was configured, whatever the characters (sourced by sh)."""
    svc = compose(variants["default"])
    script = svc["entrypoint"][2].replace("$$", "$").replace("/run/llm-stack/vllm.env", variants["odd_key"]["vllm.env"])
    out = subprocess.run(["/bin/sh", "-c", script, "env"], capture_output=True, text=True, check=True,
                         env={"PATH": os.environ["PATH"]}).stdout.splitlines()
    assert "VLLM_API_KEY=a$b 'c\" `d` ;e" in out
    assert "HF_TOKEN=hf_$(id)" in out and "HUGGING_FACE_HUB_TOKEN=hf_$(id)" in out


def test_env_file_empty_without_secrets(variants):
    files = variants["no_secrets"]
    with open(files["vllm.env"]) as f:
        assert [ln for ln in f.read().splitlines() if ln and not ln.startswith("#")] == []


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_unit_passes_systemd_analyze_verify(variants):
    files = variants["default"]
    # `verify` only warns on many mistakes (rc 0): any output on stderr is a failure.
    res = subprocess.run(["systemd-analyze", "verify", files["llm-stack.service"]],
                         capture_output=True, text=True)
    assert res.returncode == 0 and res.stderr.strip() == "", res.stderr
    with open(files["llm-stack.service"]) as f:
        unit = f.read()
    assert "Type=oneshot" in unit and "RemainAfterExit=yes" in unit and "Requires=docker.service" in unit
    assert "up -d" in unit and " down" in unit and "WantedBy=multi-user.target" in unit


def test_systemd_analyze_catches_a_typo(variants, tmp_path):
    # Guards the check above: a broken unit must produce stderr.
    files = variants["default"]
    with open(files["llm-stack.service"]) as f:
        unit = f.read().replace("Type=oneshot", "Type=oneshott")
    path = os.path.join(str(tmp_path), "llm-stack.service")
    with open(path, "w") as f:
        f.write(unit)
    res = subprocess.run(["systemd-analyze", "verify", path], capture_output=True, text=True)
    assert res.stderr.strip() != ""


def test_wait_helper_is_valid_bash(variants):
    files = variants["default"]
    res = subprocess.run(["bash", "-n", files["wait-healthy.sh"]], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
