"""The changelog is kept with antsibull-changelog: fragments lint clean, and CHANGELOG.rst is what
`antsibull-changelog generate` makes from changelogs/changelog.yaml (nobody edits it by hand)."""
import os
import shutil
import subprocess

import yaml

from tests.helpers.ansible import REPO, VENV_BIN


def antsibull_changelog():
    tool = shutil.which("antsibull-changelog", path=VENV_BIN + os.pathsep + os.environ.get("PATH", ""))
    assert tool, "antsibull-changelog is missing: it is pinned in requirements-dev.txt (make setup)"
    return tool


def run(*args, cwd):
    res = subprocess.run([antsibull_changelog(), *args], cwd=cwd, capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 0, f"antsibull-changelog {' '.join(args)}:\n{res.stdout}\n{res.stderr}"
    return res.stdout


def test_fragments_lint_clean():
    assert run("lint", cwd=REPO).strip() == ""


def test_changelog_rst_is_generated_from_changelog_yaml(tmp_path):
    for name in ("galaxy.yml", "CHANGELOG.rst"):
        shutil.copy(os.path.join(REPO, name), tmp_path / name)
    shutil.copytree(os.path.join(REPO, "changelogs"), tmp_path / "changelogs")
    run("generate", cwd=tmp_path)
    with open(os.path.join(REPO, "CHANGELOG.rst")) as f:
        assert (tmp_path / "CHANGELOG.rst").read_text() == f.read(), "CHANGELOG.rst is stale: run make changelog"


def test_current_version_is_in_the_changelog():
    with open(os.path.join(REPO, "galaxy.yml")) as f:
        version = yaml.safe_load(f)["version"]
    with open(os.path.join(REPO, "changelogs", "changelog.yaml")) as f:
        releases = yaml.safe_load(f)["releases"]
    assert version in releases, f"galaxy.yml version {version} has no changelog entry"
