"""What ships: tarball contents, Galaxy metadata, and the run-time dependencies the collection
declares for execution environments (ansible-builder introspect on the installed collection)."""
import ast
import json
import os
import re
import subprocess
import sys
import tarfile

import yaml
from packaging.requirements import Requirement

from tests.helpers.ansible import REPO, VENV_BIN

# Third-party imports of the shipped Python code -> the distribution that provides them.
# ansible itself (and its own dependencies Jinja2 / PyYAML) come with ansible-core.
DISTRIBUTIONS = {"requests": "requests", "urllib3": "urllib3", "prometheus_client": "prometheus-client"}
RUNTIME = {"requests", "urllib3", "prometheus-client"}


def _req_lines(path):
    with open(path) as f:
        return [l.split("#", 1)[0].strip() for l in f if l.split("#", 1)[0].strip()]


def test_tarball_ships_user_content_and_no_dev_tooling(tarball_names):
    names = set(tarball_names)
    for must in ("MANIFEST.json", "FILES.json", "README.md", "CHANGELOG.rst", "changelogs/changelog.yaml",
                 "meta/runtime.yml", "meta/execution-environment.yml", "meta/requirements.txt", "meta/bindep.txt",
                 "plugins/modules/vast_instance.py", "plugins/inventory/vast.py", "plugins/filter/idle.py",
                 "plugins/filter/idle_decision.yml", "plugins/module_utils/client.py",
                 "roles/vllm_stack/tasks/main.yml", "roles/health_proxy/meta/argument_specs.yml",
                 "playbooks/provision.yml", "playbooks/idle_shutdown.yml", "playbooks/tasks/idle_observe.yml",
                 "plugins/module_utils/idle_policy.py",
                 "awx/configure.yml", "inventory/example.vast.yml", "docs/playbooks.md"):
        assert must in names, must
    forbidden = re.compile(
        r"^(\.ci|\.git|\.venv|\.collections|\.cache|\.ansible|build|tests|tools)(/|$)"
        r"|^(Makefile|ansible\.cfg|pytest\.ini|requirements-dev\.txt|execution-environment\.yml|\.ansible-lint|\.gitignore)$"
        r"|(^|/)molecule(/|$)|(^|/)__pycache__(/|$)|\.pyc$|\.tar\.gz$|^changelogs/fragments(/|$)")
    leaked = sorted(n for n in names if forbidden.search(n))
    assert not leaked, leaked


def test_tarball_holds_every_tracked_file_of_the_shipped_directories(tarball_names):
    tracked = subprocess.run(["git", "ls-files", "plugins", "roles", "playbooks", "meta", "awx", "inventory", "docs"],
                             cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    tracked = {t for t in tracked if "/molecule/" not in t}
    missing = sorted(tracked - set(tarball_names))
    assert not missing, missing


def test_galaxy_metadata_has_no_placeholders(tarball):
    with tarfile.open(tarball) as tar:
        info = json.load(tar.extractfile("MANIFEST.json"))["collection_info"]
    assert (info["namespace"], info["name"]) == ("llmops", "vastai")
    for key in ("repository", "documentation", "issues", "homepage"):
        url = info[key]
        assert url and url.startswith("https://github.com/llmops/vastai"), (key, url)
    text = json.dumps(info)
    assert not re.search(r"example\.(invalid|com|org)|TODO|CHANGEME|your[_ ]", text, re.I), text
    with open(os.path.join(REPO, "meta", "runtime.yml")) as f:
        assert yaml.safe_load(f)["requires_ansible"] == ">=2.17.0"


def test_introspect_on_installed_collection_lists_only_runtime_dependencies(installed):
    res = subprocess.run([os.path.join(VENV_BIN, "ansible-builder"), "introspect", str(installed)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    data = yaml.safe_load(res.stdout)
    python = [Requirement(line.split("#", 1)[0].strip()) for line in data["python"]]
    assert {r.name for r in python} == RUNTIME, res.stdout
    for r in python:
        # a range a user's EE can satisfy together with other collections: a floor, no pin
        assert r.specifier and not any(s.operator in ("==", "===") for s in r.specifier), str(r)
        assert any(s.operator == ">=" for s in r.specifier), str(r)
    system = [line.split("#", 1)[0].strip() for line in data["system"]]
    assert system == ["openssh-clients [platform:rpm]", "openssh-client [platform:dpkg]"], system


def test_declared_runtime_dependencies_cover_every_third_party_import():
    stdlib = set(sys.stdlib_module_names)
    found = {}
    for base in ("plugins",):
        for dirpath, _dirs, files in os.walk(os.path.join(REPO, base)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(dirpath, name)
                with open(path) as f:
                    tree = ast.parse(f.read(), path)
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        mods = [a.name for a in node.names]
                    elif isinstance(node, ast.ImportFrom) and node.level == 0:
                        mods = [node.module]
                    else:
                        continue
                    for mod in mods:
                        top = mod.split(".")[0]
                        if top in stdlib or top in ("ansible", "ansible_collections", "__future__"):
                            continue
                        found.setdefault(top, set()).add(os.path.relpath(path, REPO))
    unknown = {m: sorted(p) for m, p in found.items() if m not in DISTRIBUTIONS}
    assert not unknown, f"third-party imports not declared in meta/requirements.txt: {unknown}"
    declared = {Requirement(l).name for l in _req_lines(os.path.join(REPO, "meta", "requirements.txt"))}
    assert {DISTRIBUTIONS[m] for m in found} <= declared
    assert declared == RUNTIME


def test_dev_pins_satisfy_the_declared_runtime_ranges():
    pins = {}
    for line in _req_lines(os.path.join(REPO, "requirements-dev.txt")):
        r = Requirement(line)
        (spec,) = r.specifier
        assert spec.operator == "==", f"requirements-dev.txt pins exact versions: {line}"
        pins[r.name.lower()] = spec.version
    assert not os.path.exists(os.path.join(REPO, "requirements.txt")), \
        "no root requirements.txt: ansible-builder would read it as the collection's dependencies"
    for line in _req_lines(os.path.join(REPO, "meta", "requirements.txt")):
        r = Requirement(line)
        assert r.name.lower() in pins, f"{r.name} is not pinned in requirements-dev.txt"
        assert r.specifier.contains(pins[r.name.lower()]), f"dev pin {r.name}=={pins[r.name.lower()]} outside {r}"


def test_lint_excludes_only_what_does_not_ship():
    with open(os.path.join(REPO, ".ansible-lint")) as f:
        cfg = yaml.safe_load(f)
    with open(os.path.join(REPO, "galaxy.yml")) as f:
        ignored = set(yaml.safe_load(f)["build_ignore"])
    assert cfg["profile"] == "production"
    assert set(cfg.get("exclude_paths", [])) <= ignored, set(cfg["exclude_paths"]) - ignored
    assert not {"skip_list", "warn_list", "enable_list"} & set(cfg)
    for name in (".ansible-lint-ignore", "tests/sanity/ignore-2.17.txt", "tests/sanity/ignore-2.18.txt",
                 "tests/sanity/ignore-2.19.txt"):
        assert not os.path.exists(os.path.join(REPO, name)), name


def test_installed_collection_playbook_runs_by_name(installed, vastsim, tmp_path):
    """A user with only the installed collection: `ansible-playbook llmops.vastai.provision`."""
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(installed), HOME=str(tmp_path), ANSIBLE_NOCOLOR="1",
               PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""), **vastsim.env)
    env.pop("ANSIBLE_CONFIG", None)
    res = subprocess.run([os.path.join(VENV_BIN, "ansible-playbook"), "llmops.vastai.provision",
                          "-e", "vast_mode=container", "-e", "provision_deploy=false", "-e", "instance_label=by-name"],
                         cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    rows = [i for i in vastsim.state()["instances"] if i.get("label") == "by-name"]
    assert len(rows) == 1 and rows[0]["actual_status"] == "running", rows
