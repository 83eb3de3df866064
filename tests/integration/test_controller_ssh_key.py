"""playbooks/tasks/controller_ssh_key.yml: which source the instances' public key comes from
(variable, ssh-agent, key file, generated), and overlapping first runs end with one valid pair."""
import contextlib
import os
import subprocess
import textwrap

import pytest

from tests.helpers.ansible import REPO, ansible_env, run_playbook, VENV_BIN

KEY_TASKS = """
- hosts: localhost
  connection: local
  gather_facts: false
  vars:  # as provision.yml sets it
    llmops_ssh_key_file: "{{ lookup('ansible.builtin.env', 'HOME') }}/.ssh/llmops_vastai_ed25519"
  tasks:
    - ansible.builtin.include_tasks: %s/playbooks/tasks/controller_ssh_key.yml
    - name: facts
      ansible.builtin.debug:
        msg:
          text: "{{ llmops_ssh_public_key_text }}"
          source: "{{ llmops_ssh_key_source }}"
          private: "{{ llmops_ssh_private_key_file | default('') }}"
""" % REPO


def _keygen(path, comment):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True,
                   stdin=subprocess.DEVNULL)
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


@contextlib.contextmanager
def _agent(tmp_path, *keys):
    """An ssh-agent of this test (the way AWX holds a job's Machine credential) with `keys` loaded."""
    sock = tmp_path / "agent.sock"
    out = subprocess.run(["ssh-agent", "-s", "-a", str(sock)], capture_output=True, text=True, check=True).stdout
    pid = int(out.split("SSH_AGENT_PID=", 1)[1].split(";", 1)[0])
    try:
        for key in keys:
            subprocess.run(["ssh-add", "-q", str(key)], env=dict(os.environ, SSH_AUTH_SOCK=str(sock)), check=True,
                           capture_output=True)
        yield str(sock)
    finally:
        os.kill(pid, 15)


def _facts(home, sock=None, extra_vars=None):
    res = run_playbook(KEY_TASKS, env={"HOME": str(home), "SSH_AUTH_SOCK": sock}, extra_vars=extra_vars)
    assert res.rc == 0, res.summary()
    return res.task("facts")["msg"]


def test_the_agent_key_wins_over_the_key_file_and_nothing_is_made(tmp_path):
    """An AWX job: a new HOME, the Machine credential in the agent -> that key, no file made."""
    one, two = _keygen(tmp_path / "one", "first-key"), _keygen(tmp_path / "two", "awx-machine")
    home = tmp_path / "home"
    home.mkdir()
    with _agent(tmp_path, tmp_path / "one", tmp_path / "two") as sock:
        got = _facts(home, sock)
        assert (got["source"], " ".join(got["text"].split()[:2]), got["private"]) == ("agent", one, "")
        assert not (home / ".ssh").exists()
        got = _facts(home, sock, {"llmops_ssh_agent_key_comment": "awx-machine"})
        assert (got["source"], " ".join(got["text"].split()[:2])) == ("agent", two)
        res = run_playbook(KEY_TASKS, env={"HOME": str(home), "SSH_AUTH_SOCK": sock},
                           extra_vars={"llmops_ssh_agent_key_comment": "no-such-comment"})
        assert res.rc != 0 and "none with the comment 'no-such-comment'" in res.stdout
        # the variable beats the agent
        got = _facts(home, sock, {"llmops_ssh_public_key": "ssh-ed25519 AAAAexplicit me@example\n"})
        assert (got["source"], got["text"]) == ("variable", "ssh-ed25519 AAAAexplicit me@example")
        # llmops_ssh_use_agent: false -> the key file (made here)
        got = _facts(home, sock, {"llmops_ssh_use_agent": False})
        assert got["source"] == "generated" and got["private"] == str(home / ".ssh" / "llmops_vastai_ed25519")
        (home / ".ssh" / "llmops_vastai_ed25519").unlink()
        (home / ".ssh" / "llmops_vastai_ed25519.pub").unlink()
        (home / ".ssh").rmdir()
        got = _facts(home, sock)
        assert got["source"] == "agent"
    assert not (home / ".ssh").exists(), "an agent key must leave the job's HOME/.ssh alone"


@pytest.mark.parametrize("agent", ["none", "empty"])
def test_without_an_agent_key_the_key_file_then_a_new_pair(tmp_path, agent):
    home = tmp_path / "home"
    home.mkdir()
    with contextlib.ExitStack() as stack:
        sock = stack.enter_context(_agent(tmp_path)) if agent == "empty" else None
        got = _facts(home, sock)
        assert got["source"] == "generated"
        pub = (home / ".ssh" / "llmops_vastai_ed25519.pub").read_text().strip()
        assert got["text"] == pub
        got = _facts(home, sock)
        assert (got["source"], got["text"]) == ("file", pub)


def test_overlapping_first_runs_make_one_matching_key_pair(tmp_path):
    key = tmp_path / "ssh" / "id"
    play = tmp_path / "key.yml"
    play.write_text(textwrap.dedent("""\
        - hosts: localhost
          connection: local
          gather_facts: false
          tasks:
            - ansible.builtin.include_tasks: %s/playbooks/tasks/controller_ssh_key.yml
        """ % REPO))
    env = ansible_env({"SSH_AUTH_SOCK": None}, json_output=False)
    cmd = [os.path.join(VENV_BIN, "ansible-playbook"), str(play), "-e", "llmops_ssh_key_file=%s" % key]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for dummy in range(4)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True, text=True, check=True).stdout
    assert derived.split()[:2] == (tmp_path / "ssh" / "id.pub").read_text().split()[:2]  # the pair matches
    assert sorted(os.listdir(tmp_path / "ssh")) == ["id", "id.pub"]  # no temporary or claim file left
    again = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "changed=0" in again.stdout, again.stdout


def test_the_key_command_run_at_the_same_instant_keeps_one_pair(tmp_path):
    """The task's own command, 8 copies started together (tighter than whole playbooks can)."""
    import yaml
    tasks = yaml.safe_load(open(os.path.join(REPO, "playbooks", "tasks", "controller_ssh_key.yml")))
    (task,) = [t for t in tasks if t["name"] == "Make sure the controller has an SSH key for the instances"]
    argv = [a.replace("{{ llmops_ssh_key_file }}", str(tmp_path / "id")) for a in task["ansible.builtin.command"]["argv"]]
    procs = [subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for dummy in range(8)]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sorted(o.strip() for o in outs).count("made") == 1, outs
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(tmp_path / "id")], capture_output=True, text=True,
                             check=True).stdout
    assert derived.split()[:2] == (tmp_path / "id.pub").read_text().split()[:2]
    assert sorted(os.listdir(tmp_path)) == ["id", "id.pub"]
