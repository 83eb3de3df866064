"""playbooks/tasks/controller_ssh_key.yml: overlapping first runs end with one valid key pair."""
import os
import subprocess
import textwrap

from tests.helpers.ansible import REPO, ansible_env, VENV_BIN


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
    env = ansible_env(json_output=False)
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
    argv = [a.replace("{{ llmops_ssh_key_file }}", str(tmp_path / "id"))
            for a in tasks[1]["ansible.builtin.command"]["argv"]]
    procs = [subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for dummy in range(8)]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sorted(o.strip() for o in outs).count("made") == 1, outs
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(tmp_path / "id")], capture_output=True, text=True,
                             check=True).stdout
    assert derived.split()[:2] == (tmp_path / "id.pub").read_text().split()[:2]
    assert sorted(os.listdir(tmp_path)) == ["id", "id.pub"]
