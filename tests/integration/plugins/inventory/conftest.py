"""Run the real `ansible-inventory` against the simulator with a generated *.vast.yml."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[4]
BIN = Path(sys.executable).parent
# A distinctive key: every run checks it never shows up in what ansible printed.
SECRET = "vastsecret-4f1c2e9a7b3d44e8a1c0ffee1234abcd"

sys.path.insert(0, str(REPO))  # tests.helpers

# A private collections tree pointing at this checkout, so the tests neither depend on
# `make setup` having linked .collections nor pick up another checkout's copy.
_COLLECTIONS = Path(tempfile.mkdtemp(prefix="vast-inv-collections-"))
(_COLLECTIONS / "ansible_collections" / "llmops").mkdir(parents=True)
(_COLLECTIONS / "ansible_collections" / "llmops" / "vastai").symlink_to(REPO)
sys.path.insert(0, str(_COLLECTIONS))  # the tests seed the simulator with the collection's client


def plain(value):
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


class Run:
    def __init__(self, proc, args):
        self.rc = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr
        self.verbose = proc.verbose  # what ansible printed besides the --list JSON
        self.args = args
        self.data = None
        if self.rc == 0 and "--list" in args:
            # ansible 2.19 marks values that came from the API as untrusted (never templated)
            # and prints them as {"__ansible_unsafe": value}; compare plain values
            self.raw = json.loads(self.out)
            self.data = plain(self.raw)

    @property
    def hostvars(self):
        return self.data["_meta"]["hostvars"]

    @property
    def hosts(self):
        return set(self.hostvars)

    def group(self, name):
        """Hosts directly in a group (children groups not expanded)."""
        return set(self.data.get(name, {}).get("hosts", []))

    def groups(self):
        return set(k for k in self.data if k != "_meta")


@pytest.fixture(scope="session")
def collections_path():
    yield str(_COLLECTIONS)
    shutil.rmtree(_COLLECTIONS, ignore_errors=True)


def make_runner(tmp_path, collections_path):
    """run(sim, config, *extra_args, key=..., env=..., graph=False) -> Run; files go in tmp_path."""

    def run(sim, config, *extra, key=SECRET, env=None, name="test.vast.yml", graph=False):
        path = tmp_path / name
        # --hosts none instances listen nowhere, so the direct-SSH probe would always pick the
        # proxy: it is off unless a test sets it (the probe has its own tests)
        path.write_text(yaml.safe_dump(dict({"plugin": "llmops.vastai.vast", "ssh_probe_timeout": 0}, **config)))
        full_env = {
            "PATH": "%s:%s" % (BIN, os.environ.get("PATH", "")),
            "HOME": os.environ.get("HOME", str(tmp_path)),
            "LANG": "C.UTF-8",
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_COLLECTIONS_PATH": collections_path,
            "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "VAST_URL": sim.url,
            # a source that fails to parse must fail the run, not leave an empty inventory
            "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "1",
        }
        if key is not None:
            full_env["VAST_API_KEY"] = key
        full_env.update(env or {})
        args = ["-i", str(path), "--graph" if graph else "--list"] + list(extra)
        out_file = tmp_path / "inventory-out.json"
        if out_file.exists():
            out_file.unlink()
        if not graph:
            # keep the JSON apart from what -v prints
            args += ["--output", str(out_file)]
        proc = subprocess.run(
            [str(BIN / "ansible-inventory")] + args, capture_output=True, text=True, env=full_env, timeout=180
        )
        if out_file.exists():
            proc.stdout, proc.verbose = out_file.read_text(), proc.stdout
        else:
            proc.verbose = proc.stdout if graph else ""
        for secret in (SECRET, key):
            if secret:
                for text in (proc.stdout, proc.stderr, proc.verbose):
                    assert secret not in text, "API key leaked in %s" % args
        return Run(proc, args)

    return run


@pytest.fixture
def inventory(tmp_path, collections_path):
    return make_runner(tmp_path, collections_path)
