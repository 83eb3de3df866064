"""The collection as users get it: the tarball `ansible-galaxy collection build` makes from the
repository (galaxy.yml's build_ignore decides what ships), installed with `ansible-galaxy
collection install` into a fresh collections path."""
import os
import subprocess
import tarfile

import pytest

from tests.helpers.ansible import REPO, VENV_BIN


def galaxy(*args, cwd=REPO, env=None):
    res = subprocess.run([os.path.join(VENV_BIN, "ansible-galaxy"), *args], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, f"ansible-galaxy {' '.join(args)}:\n{res.stdout}\n{res.stderr}"
    return res


@pytest.fixture(scope="session")
def tarball(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    galaxy("collection", "build", "--force", "--output-path", str(out), REPO)
    (path,) = [p for p in out.iterdir() if p.name.endswith(".tar.gz")]
    return path


@pytest.fixture(scope="session")
def tarball_names(tarball):
    with tarfile.open(tarball) as tar:
        return sorted(m.name for m in tar.getmembers())


@pytest.fixture(scope="session")
def installed(tarball, tmp_path_factory):
    """A collections path holding only the installed tarball (no .collections link to the repo)."""
    root = tmp_path_factory.mktemp("collections")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(root), HOME=str(root))
    galaxy("collection", "install", "--offline", "--force", "-p", str(root), str(tarball), env=env)
    assert (root / "ansible_collections" / "llmops" / "vastai" / "MANIFEST.json").is_file()
    return root
