"""Run ``ansible-playbook`` / ``ansible-inventory`` as real subprocesses and read their results.

    from tests.helpers.ansible import run_playbook, run_inventory

    res = run_playbook('''
    - hosts: localhost
      gather_facts: false
      tasks:
        - name: rent
          llmops.vastai.vast_instance: {label: demo, state: absent}
    ''', env=sim.env)
    assert res.rc == 0, res.summary()
    assert res.task("rent")["changed"] is False

Results come from the ``ansible.posix.json`` stdout callback (one JSON document at the end of
stdout, verbose lines before it); ``json_output=False`` keeps the default human callback and
leaves ``plays``/``tasks`` empty (use it to look at what a person would see).
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# The venv whose ansible-* commands the tests run; tools/test-matrix.sh points it at the venv of
# another ansible-core (oldest / newest supported).
VENV_BIN = os.environ.get("LLMOPS_VENV_BIN") or os.path.join(REPO, ".venv", "bin")


def ansible_env(env=None, json_output=True):
    """Environment for an ansible subprocess: the repo's config and collection path, no colour."""
    out = dict(os.environ)
    out.update(
        {
            "ANSIBLE_CONFIG": os.path.join(REPO, "ansible.cfg"),
            "ANSIBLE_COLLECTIONS_PATH": os.path.join(REPO, ".collections"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_DEPRECATION_WARNINGS": "False",
            "ANSIBLE_LOCALHOST_WARNING": "False",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", ""),
        }
    )
    if json_output:
        out["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
        out["ANSIBLE_JSON_INDENT"] = "2"
    for k, v in (env or {}).items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = str(v)
    return out


@dataclass
class TaskResult:
    play: str
    name: str
    action: str
    host: str
    result: dict

    def __getitem__(self, key):
        return self.result[key]

    def get(self, key, default=None):
        return self.result.get(key, default)


@dataclass
class PlaybookResult:
    rc: int
    stdout: str
    stderr: str
    cmd: list
    duration: float
    plays: list = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    tasks: list = field(default_factory=list)  # TaskResult, in run order, one per host

    def task(self, name, host=None):
        """The last result of the task called ``name`` (on ``host`` if given); KeyError if none."""
        found = [t for t in self.tasks if t.name == name and (host is None or t.host == host)]
        if not found:
            raise KeyError("no task %r in results; tasks: %s" % (name, [t.name for t in self.tasks]))
        return found[-1].result

    def results(self, name=None):
        return [t.result for t in self.tasks if name is None or t.name == name]

    @property
    def changed(self):
        return any(t.result.get("changed") for t in self.tasks)

    @property
    def failed_tasks(self):
        return [t for t in self.tasks if t.result.get("failed")]

    def summary(self):
        """Short text for assertion messages: rc, failures and the tail of the output."""
        lines = ["rc=%s in %.1fs" % (self.rc, self.duration)]
        for t in self.failed_tasks:
            lines.append("FAILED %s [%s]: %s" % (t.name, t.host, t.result.get("msg")))
        lines.append("--- stderr tail:\n" + self.stderr[-2000:])
        if not self.plays:
            lines.append("--- stdout tail:\n" + self.stdout[-3000:])
        return "\n".join(lines)


def _parse_json_callback(stdout):
    """The ansible.posix.json document: the last top-level JSON object in stdout."""
    marker = '{\n  "custom_stats"'
    idx = stdout.rfind(marker)
    if idx < 0:
        idx = stdout.rfind("\n{\n")
        idx = idx + 1 if idx >= 0 else (0 if stdout.startswith("{") else -1)
    if idx < 0:
        return None
    try:
        doc, _end = json.JSONDecoder().raw_decode(stdout[idx:])
    except ValueError:
        return None
    return doc


def _collect_tasks(doc):
    tasks = []
    for play in doc.get("plays", []):
        pname = play.get("play", {}).get("name", "")
        for t in play.get("tasks", []):
            info = t.get("task", {})
            for host, res in (t.get("hosts") or {}).items():
                tasks.append(TaskResult(pname, info.get("name", ""), res.get("action", ""), host, res))
    return tasks


def _materialise(path_or_yaml_text, workdir, name):
    if "\n" not in path_or_yaml_text and os.path.exists(path_or_yaml_text):
        return os.path.abspath(path_or_yaml_text)
    path = os.path.join(workdir, name)
    with open(path, "w") as f:
        f.write(path_or_yaml_text)
    return path


def run_playbook(path_or_yaml_text, extra_vars=None, env=None, check=False, diff=False, verbosity=0,
                 inventory=None, limit=None, tags=None, args=(), json_output=True, timeout=600, cwd=None):
    """Run one playbook (a file path, or YAML text written to a temp file) and parse its results.

    ``extra_vars`` go through a temp JSON file (``-e @file``) so secrets never sit in argv.
    ``inventory`` is a path or inline list (``"localhost,"``); default: implicit localhost.
    """
    with tempfile.TemporaryDirectory(prefix="run-playbook-") as tmp:
        playbook = _materialise(path_or_yaml_text, tmp, "playbook.yml")
        cmd = [os.path.join(VENV_BIN, "ansible-playbook"), playbook]
        if inventory:
            cmd += ["-i", _materialise(inventory, tmp, "inventory.yml") if "\n" in inventory else inventory]
        if extra_vars:
            ev = os.path.join(tmp, "extra_vars.json")
            with open(ev, "w") as f:
                json.dump(extra_vars, f)
            cmd += ["-e", "@" + ev]
        if check:
            cmd.append("--check")
        if diff:
            cmd.append("--diff")
        if limit:
            cmd += ["--limit", limit]
        if tags:
            cmd += ["--tags", tags if isinstance(tags, str) else ",".join(tags)]
        if verbosity:
            cmd.append("-" + "v" * int(verbosity))
        cmd += list(args)
        started = time.monotonic()
        proc = subprocess.run(cmd, env=ansible_env(env, json_output), cwd=cwd or os.path.dirname(playbook),
                              capture_output=True, text=True, timeout=timeout)
        took = time.monotonic() - started
    res = PlaybookResult(proc.returncode, proc.stdout, proc.stderr, cmd, took)
    if json_output:
        doc = _parse_json_callback(proc.stdout)
        if doc:
            res.plays = doc.get("plays", [])
            res.stats = doc.get("stats", {})
            res.tasks = _collect_tasks(doc)
    return res


@dataclass
class InventoryResult:
    rc: int
    stdout: str
    stderr: str
    data: dict  # parsed ``--list`` / ``--host`` JSON (empty on failure)
    duration: float

    @property
    def hostvars(self):
        return self.data.get("_meta", {}).get("hostvars", {})

    def group(self, name):
        """Hosts in group ``name`` (direct members only)."""
        return list(self.data.get(name, {}).get("hosts", []))


def run_inventory(source, env=None, args=("--list",), verbosity=0, timeout=300, name="test.vast.yml"):
    """``ansible-inventory -i SOURCE --list`` (SOURCE a path, or YAML text saved as ``name``)."""
    with tempfile.TemporaryDirectory(prefix="run-inventory-") as tmp:
        path = _materialise(source, tmp, name)
        cmd = [os.path.join(VENV_BIN, "ansible-inventory"), "-i", path] + list(args)
        if verbosity:
            cmd.append("-" + "v" * int(verbosity))
        started = time.monotonic()
        proc = subprocess.run(cmd, env=ansible_env(env, json_output=False), cwd=tmp,
                              capture_output=True, text=True, timeout=timeout)
        took = time.monotonic() - started
    data = {}
    if proc.returncode == 0:
        try:
            data = json.loads(proc.stdout)
        except ValueError:
            data = {}
    return InventoryResult(proc.returncode, proc.stdout, proc.stderr, data, took)


if __name__ == "__main__":  # quick manual use: python -m tests.helpers.ansible PLAYBOOK
    r = run_playbook(sys.argv[1])
    print(r.summary())
    sys.exit(r.rc)
