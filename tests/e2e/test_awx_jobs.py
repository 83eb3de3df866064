"""The AWX job sequence, run the way AWX runs it (issue 15): every job is ansible-runner with a
new private_data_dir and a new, empty HOME; the credentials are injected the way AWX injects
them: the vast.ai API type as VAST_API_KEY / VAST_URL, the endpoint token type as
LLMOPS_ENDPOINT_TOKEN, and the Machine credential's private key handed to ansible-runner
(`ssh_key`), which starts an ssh-agent for the job, loads the key and sets SSH_AUTH_SOCK.

Against the simulator with real systemd containers as VM instances (--hosts docker):
  provision (vm, stack, /health 200) -> deploy -> idle_shutdown (stops it) -> power_on -> provision
and after every job: exactly one SSH key on the account (the Machine credential's), the
endpoint answers /v1 with the same token (while it runs), nothing under the job's HOME/.ssh.
"""
import os
import subprocess

import pytest

test_playbooks = pytest.importorskip("tests.e2e.test_playbooks")
from tests.e2e.test_playbooks import POLICY, REPO, Env, _endpoint, _http  # noqa: E402

images = test_playbooks.images
vastsim_helper = test_playbooks.vastsim_helper

pytestmark = [pytest.mark.timeout(900)]

LABEL = "awx-1"
AWX_INVENTORY = REPO / "awx" / "inventory" / "running.vast.yml"  # the inventory source AWX syncs


class AwxJobs(Env):
    """Env (tests/e2e/test_playbooks.py) with AWX's job isolation: a new HOME per job, no
    controller key file, the credentials as AWX injects them."""

    def __init__(self, sim, tmp, machine_key, token):
        super().__init__(sim, tmp)
        self.machine_key = machine_key
        self.token = token
        self.homes = []

    def envvars(self):
        env = super().envvars()
        home = self.tmp / f"home-job-{self.runs}"
        home.mkdir()
        self.homes.append(home)
        env["HOME"] = str(home)
        env.pop("ANSIBLE_PRIVATE_KEY_FILE")  # AWX sets none: the key is in the job's agent
        env["LLMOPS_ENDPOINT_TOKEN"] = self.token  # the "llmops endpoint token" credential
        return env

    def runner_options(self):
        return {"ssh_key": self.machine_key}  # AWX's Machine credential: runner's ssh-agent

    def play(self, name, extravars=None, inventory=None, check=False, expect_rc=0):
        r, out = super().play(name, extravars, inventory, check, expect_rc)
        assert self.token not in out, f"the endpoint token appeared in the output of {name}"
        assert "PRIVATE KEY" not in out and self.machine_key.split("\n")[1] not in out
        return r, out


@pytest.fixture(scope="module")
def awx(tmp_path_factory):
    imgs = images.ensure_images()
    tmp = tmp_path_factory.mktemp("awx-jobs")
    # the Machine credential's key pair, made outside every job's HOME (it lives in AWX)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "awx-machine-credential",
                    "-f", str(tmp / "machine")], check=True, stdin=subprocess.DEVNULL)
    machine_key = (tmp / "machine").read_text()
    public = " ".join((tmp / "machine.pub").read_text().split()[:2])
    with vastsim_helper.start_vastsim(hosts="docker", speed=20, api_key="awx-" + os.urandom(12).hex()) as sim:
        jobs = AwxJobs(sim, tmp, machine_key, "tok-" + os.urandom(18).hex())
        jobs.public_key = public
        images.save_archive(imgs["vllm"], jobs.archive)
        yield jobs
        sim.destroy_all()


def _after_job(awx, running=True):
    """What must hold after every job."""
    keys = [" ".join(k["key"].split()[:2]) for k in awx.sim.state()["ssh_keys"]]
    assert keys == [awx.public_key], f"account SSH keys after job {awx.runs}: {len(keys)}"
    home = awx.homes[-1]
    assert not (home / ".ssh").exists(), f"job {awx.runs} wrote {sorted(os.listdir(home / '.ssh'))} under HOME/.ssh"
    row = awx.instances()[LABEL]
    if running:
        assert row["actual_status"] == "running"
        base = _endpoint(row)
        assert _http(base + "/v1/models")[0] == 401
        status, body = _http(base + "/v1/models", token=awx.token)
        assert status == 200 and b"qwen2.5-1.5b-instruct" in body, f"the token after job {awx.runs}: {status}"
    return row


def test_awx_job_sequence_keeps_one_ssh_key_and_the_endpoint_token(awx):
    provision = {"instance_label": LABEL, "llmops_engine_image_archive": str(awx.archive),
                 "vllm_stack_extra_env": {"STANDIN_TOKEN_DELAY": "0.05"}}
    r, out = awx.play("provision", provision)
    assert "is healthy" in out and "SSH key for the instances: agent (ssh-ed25519)" in out
    _after_job(awx)

    awx.play("deploy", {"deploy_hosts": LABEL, "llmops_engine_image_archive": str(awx.archive)},
             inventory=AWX_INVENTORY)
    _after_job(awx)

    # the scheduled idle shutdown: nothing asked /v1 since the deploy's own probe
    policy = dict(POLICY, idle_shutdown_boot_grace_minutes=0, idle_shutdown_idle_minutes=0.01,
                  vast_billing_end=str(awx.sim.now() + 86400))
    r, out = awx.play("idle_shutdown", policy, inventory=AWX_INVENTORY)
    assert f"stopped {LABEL}" in out
    assert _after_job(awx, running=False)["actual_status"] == "stopped"

    awx.play("power_on", {"instance_label": LABEL, "health_timeout": 300})
    _after_job(awx)

    # provision launched again (a new job, a new HOME): the same key, the same token, no new rental
    ids = {i["id"] for i in awx.sim.state()["instances"]}
    r, out = awx.play("provision", provision)
    _after_job(awx)
    assert {i["id"] for i in awx.sim.state()["instances"]} == ids
    assert len(awx.homes) == 5 and len(set(awx.homes)) == 5
