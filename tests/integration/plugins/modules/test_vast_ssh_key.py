"""vast_ssh_key through real ansible-playbook runs against the simulator."""
import pytest

from .test_modules import run_calls

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIntegrationKeyMaterial0000000000000000 ops@controller"
SAME_OTHER_COMMENT = KEY.rsplit(" ", 1)[0] + " another-comment"


@pytest.fixture
def sim(vastsim_factory):
    return vastsim_factory(api_key="vk-sshkey-test-0123456789")


def call(sim, module, margs, check=False, diff=False):
    res, rs = run_calls(sim, [(module, margs)], check=check, diff=diff)
    return res, rs[0]


def keys(sim):
    return [k["key"] for k in sim.state()["ssh_keys"]]


def test_present_is_idempotent_check_mode_and_diff(sim):
    res, r = call(sim, "vast_ssh_key", {"key": KEY}, check=True, diff=True)
    assert res.rc == 0, res.summary()
    assert r["changed"] is True and keys(sim) == []                         # check mode sends nothing
    assert r["diff"]["before"] == {"account_keys": []}
    assert r["diff"]["after"] == {"account_keys": [" ".join(KEY.split()[:2])]}
    res, rs = run_calls(sim, [("vast_ssh_key", {"key": KEY}), ("vast_ssh_key", {"key": KEY}),
                              ("vast_ssh_key", {"key": SAME_OTHER_COMMENT})])
    assert res.rc == 0, res.summary()
    assert [x["changed"] for x in rs] == [True, False, False]              # the comment does not count
    assert keys(sim) == [KEY] and rs[1]["key"]["public_key"] == KEY and rs[1]["count"] == 1
    assert isinstance(rs[0]["key"]["id"], int) and rs[0]["key_ids"] == [rs[0]["key"]["id"]]


def test_absent_removes_and_is_idempotent(sim):
    res, rs = run_calls(sim, [("vast_ssh_key", {"key": KEY})])
    assert keys(sim) == [KEY]
    res, r = call(sim, "vast_ssh_key", {"key": KEY, "state": "absent"}, check=True)
    assert r["changed"] is True and keys(sim) == [KEY]
    res, rs = run_calls(sim, [("vast_ssh_key", {"key": KEY, "state": "absent"}),
                              ("vast_ssh_key", {"key": KEY, "state": "absent"})])
    assert res.rc == 0, res.summary()
    assert [x["changed"] for x in rs] == [True, False] and keys(sim) == [] and rs[1]["count"] == 0


def test_team_scoped_key_fails_clearly(sim):
    # SkyPilot PR #10730: 400 team_ssh_keys_not_supported on account keys
    sim.ctl("POST", "account", {"team_scoped": True})
    res, r = call(sim, "vast_ssh_key", {"key": KEY})
    assert r["failed"] is True
    assert "team-scoped" in r["msg"] and "personal API key" in r["msg"] and "VM" in r["msg"]
    assert r["failure"]["code"] == "team_ssh_keys_not_supported"
    assert sim.api_key not in r["msg"]


@pytest.mark.parametrize("bad", ["not a key", "-----BEGIN OPENSSH PRIVATE KEY-----\nabc"])
def test_bad_key_refused_before_any_call(sim, bad):
    sim.clear_requests()
    res, r = call(sim, "vast_ssh_key", {"key": bad})
    assert r["failed"] is True and "invalid arguments" in r["msg"] and "abc" not in r["msg"]
    assert [x for x in sim.requests() if x.get("endpoint") == "ssh"] == []


def test_provision_task_file_puts_the_key_once(sim, tmp_path):
    # playbooks/tasks/account_ssh_key.yml (included by provision.yml in vm mode): live list rows
    # carry the key in ssh_key only, so a reader of public_key/key would add it on every run
    import os

    from tests.helpers.ansible import run_playbook

    tasks = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "playbooks", "tasks", "account_ssh_key.yml")
    pb = ("- hosts: localhost\n  gather_facts: false\n  tasks:\n"
          "    - ansible.builtin.include_tasks: %s\n    - ansible.builtin.include_tasks: %s\n"
          % (os.path.abspath(tasks), os.path.abspath(tasks)))
    # the fact tasks/controller_ssh_key.yml sets (from a variable, the ssh-agent or the key file)
    res = run_playbook(pb, extra_vars={"llmops_ssh_public_key_text": KEY}, env=dict(sim.env))
    assert res.rc == 0, res.summary()
    assert keys(sim) == [KEY]
    assert [r["changed"] for r in res.results("Put the controller's key on the account")] == [True, False]
