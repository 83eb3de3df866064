"""The stand-in rejects the `vllm serve` flags real vLLM rejects (exit 2), from vLLM's own parser's
flag list (tools/engine_standin/vllm_flags.json), so a typo in vllm_stack_extra_args fails here
and in Molecule, not on a GPU host."""
import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml

from tests.helpers.net import free_port
from tests.unit.roles import render

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
LIB = os.path.join(REPO, "tools", "engine_standin")
WRAPPER = os.path.join(REPO, "tools", "testhost", "images", "standin", "vllm")
sys.path.insert(0, LIB)
import vllm_flags  # noqa: E402


def test_data_names_its_vllm_version_and_has_what_the_role_renders():
    spec = vllm_flags.load()
    assert spec["vllm_version"] == "0.33.0" and spec["positionals"] == ["model_tag"]
    assert len(spec["flags"]) > 300
    for flag, takes_value in (("--served-model-name", True), ("--max-model-len", True), ("--api-key", True),
                              ("--gpu-memory-utilization", True), ("--tensor-parallel-size", True), ("-tp", True),
                              ("--enable-prefix-caching", False), ("--enforce-eager", False), ("--port", True)):
        assert spec["flags"][flag] is takes_value, flag


@pytest.mark.parametrize("argv,error", [
    (["serve", "m", "--max-model-len", "8192", "--enable-prefix-caching"], None),
    (["serve", "m", "--max_model_len", "8192"], None),                     # _ and - are the same
    (["serve", "m", "--max-model-len=8192", "-tp", "2", "-O3"], None),
    (["serve", "m", "--enable-prefix-cachin"], None),                      # argparse prefix
    (["serve", "m", "--no-enforce-eager"], None),
    (["serve", "m", "--port", "-1"], None),                                # a negative number is a value
    (["serve", "m", "--max-modle-len", "8192"], "unrecognized arguments: --max-modle-len 8192"),
    (["serve", "m", "--enforce-eager", "extra"], "unrecognized arguments: extra"),
    (["serve", "m", "--max-model"], "argument --max-model-len: expected one argument"),
    (["serve", "m", "--compilaton-config.level", "3"], "unrecognized arguments: --compilaton-config.level 3"),
])
def test_check_agrees_with_vllm(argv, error):
    # expectations checked once against vLLM 0.33.0's own parser (FlexibleArgumentParser)
    assert vllm_flags.check(argv) == error


def _run_wrapper(args, port=None, **env):
    e = dict(os.environ, STANDIN_LIB=LIB, STANDIN_LOAD_SECONDS="0")
    e.update(env)
    return subprocess.Popen(["sh", WRAPPER] + args, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_typo_exits_2_like_vllm_and_good_flags_serve():
    proc = _run_wrapper(["serve", "org/m", "--served-model-name", "m", "--max-modle-len", "8192"])
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "vllm serve: error: unrecognized arguments: --max-modle-len 8192" in err
    port = free_port()
    proc = _run_wrapper(["serve", "org/m", "--served-model-name", "m", "--max-model-len", "8192", "--host", "127.0.0.1",
                         "--port", str(port), "--enable-prefix-caching"])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/health" % port, timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_typo_in_vllm_stack_extra_args_fails(tmp_path):
    # the command the vllm_stack role renders, run through the image's entrypoint check
    jobs = []
    for name, extra in (("good", ["--enable-prefix-caching", "--enforce-eager"]), ("typo", ["--enable-prefix-cahing"])):
        jobs.append(([("docker-compose.yml.j2", "docker-compose.yml")],
                     {"_vllm_stack_gpu_on": False, "vllm_stack_api_key": "k", "vllm_stack_hf_token": "",
                      "vllm_stack_extra_args": extra}, str(tmp_path / name)))
    good, typo = render.render_many("vllm_stack", jobs)
    codes = {}
    for name, files in (("good", good), ("typo", typo)):
        with open(files["docker-compose.yml"]) as f:
            svc = yaml.safe_load(f)["services"]["vllm"]
        entry = svc["entrypoint"][3:]            # after the /bin/sh -c wrapper: ["vllm", "serve"]
        assert entry == ["vllm", "serve"]
        res = subprocess.run([sys.executable, os.path.join(LIB, "vllm_flags.py"), "serve"] + svc["command"],
                             capture_output=True, text=True)
        codes[name] = (res.returncode, res.stderr)
    assert codes["good"][0] == 0, codes["good"][1]
    assert codes["typo"][0] == 2 and "--enable-prefix-cahing" in codes["typo"][1]


def test_generator_is_kept_with_the_data():
    # the data is regenerated with gen_vllm_flags.py, never edited by hand
    spec = json.load(open(os.path.join(LIB, "vllm_flags.json")))
    assert spec["generated_by"] == "tools/engine_standin/gen_vllm_flags.py"
    assert os.path.exists(os.path.join(LIB, "gen_vllm_flags.py"))
