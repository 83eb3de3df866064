"""`make demo` is what the README tells a new user to run: it must work (it broke once when the
idle shutdown gained its host-vs-API clock check and nothing ran it)."""
import os
import pathlib
import subprocess

import pytest

images = pytest.importorskip("tests.helpers.images")
REPO = pathlib.Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.timeout(900)]

if not images.have_docker_cli():
    pytest.skip("docker CLI missing (make host-deps)", allow_module_level=True)


def test_demo_runs_the_main_job_end_to_end():
    images.ensure_images()
    env = dict(os.environ, DOCKER_HOST=os.environ.get("DOCKER_HOST", images.DEFAULT_DOCKER_HOST),
               PATH="%s:%s" % (REPO / ".venv" / "bin", os.environ.get("PATH", "")))
    res = subprocess.run(["bash", str(REPO / "tools" / "demo.sh")], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=840)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "demo FAILED" not in out
    assert "auto_shutdown_complete" in out  # the idle shutdown stopped it and audited the stop
