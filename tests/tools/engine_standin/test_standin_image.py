"""The stand-in image as compose would run it: entrypoint like `vllm serve`, curl inside, fast stop."""
import json
import time
import uuid

import requests

from tests.helpers.images import LABEL, docker, ensure_images


def test_image_serves_vllm_surface_and_stops_fast():
    imgs = ensure_images()
    # The same image under the name the vllm_stack role deploys.
    ids = {docker("image", "inspect", "-f", "{{.Id}}", imgs[k]).stdout.strip() for k in ("standin", "vllm")}
    assert len(ids) == 1
    name = f"standin-test-{uuid.uuid4().hex[:8]}"
    docker("run", "-d", "--name", name, "--label", LABEL, "-p", "127.0.0.1::8000",
           "-e", "STANDIN_LOAD_SECONDS=1", "-e", "VLLM_API_KEY=ck",
           imgs["vllm"], "org/model-x", "--served-model-name", "x", "--max-model-len", "2048",
           "--gpu-memory-utilization", "0.9", "--tensor-parallel-size", "1", "--kv-cache-dtype", "fp8")
    try:
        port = int(docker("port", name, "8000/tcp").stdout.split()[0].rsplit(":", 1)[1])
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            # curl is in the image: compose healthchecks use it.
            if docker("exec", name, "curl", "-sf", "http://127.0.0.1:8000/health", check=False).returncode == 0:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(docker("logs", name, check=False).stderr)
        assert requests.get(url + "/health", timeout=5).status_code == 200
        assert requests.get(url + "/v1/models", timeout=5).status_code == 401
        r = requests.get(url + "/v1/models", headers={"Authorization": "Bearer ck"}, timeout=5)
        assert r.json()["data"][0]["id"] == "x" and r.json()["data"][0]["max_model_len"] == 2048
        with requests.post(url + "/v1/chat/completions", headers={"Authorization": "Bearer ck"}, stream=True,
                           json={"model": "x", "messages": [{"role": "user", "content": "hi"}],
                                 "max_tokens": 5, "stream": True}, timeout=10) as r:
            data = [ln[6:] for ln in r.iter_lines() if ln.startswith(b"data: ")]
        assert data[-1] == b"[DONE]" and len(data) == 1 + 5 + 1 + 1  # role, tokens, finish, DONE
        assert json.loads(data[-2])["choices"][0]["finish_reason"] == "length"
        assert "--kv-cache-dtype fp8" in docker("logs", name).stderr   # a real vLLM flag it ignores
        # A python PID 1 ignores SIGTERM unless it handles it: this must not take docker's 10 s.
        t0 = time.monotonic()
        docker("stop", name)
        assert time.monotonic() - t0 < 3
    finally:
        docker("rm", "-f", name, check=False)


def test_image_exits_2_on_a_flag_vllm_rejects():
    # real vLLM exits 2 on an unknown flag (argparse); so does the stand-in (vllm_flags.json)
    imgs = ensure_images()
    res = docker("run", "--rm", "--label", LABEL, imgs["vllm"], "org/model-x", "--max-modle-len", "2048", check=False)
    assert res.returncode == 2
    assert "unrecognized arguments: --max-modle-len 2048" in res.stderr
