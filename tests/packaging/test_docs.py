"""Documentation a user reads with ansible-doc, on the installed collection: every filter that a
plugins/filter/*.py FilterModule registers renders, with a description and examples."""
import ast
import glob
import json
import os
import subprocess

import yaml

from tests.helpers.ansible import REPO, VENV_BIN


def registered_filters():
    """Filter names from each FilterModule.filters() return dict, read from the source."""
    names = []
    for path in sorted(glob.glob(os.path.join(REPO, "plugins", "filter", "*.py"))):
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        for cls in (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "FilterModule"):
            for fn in (n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "filters"):
                for ret in (n for n in ast.walk(fn) if isinstance(n, ast.Return)):
                    assert isinstance(ret.value, ast.Dict), f"{path}: filters() must return a dict literal"
                    names += [k.value for k in ret.value.keys]
    return names


def ansible_doc(installed, *args):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(installed), ANSIBLE_NOCOLOR="1", HOME=str(installed))
    env.pop("ANSIBLE_CONFIG", None)
    res = subprocess.run([os.path.join(VENV_BIN, "ansible-doc"), *args], env=env, cwd=str(installed),
                         capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr
    assert "[WARNING]" not in res.stderr, res.stderr
    return res.stdout


def test_every_filter_renders_with_examples(installed):
    names = registered_filters()
    assert len(names) == 19, names
    fqcns = ["llmops.vastai." + n for n in names]
    docs = json.loads(ansible_doc(installed, "-t", "filter", "--json", *fqcns))
    assert sorted(docs) == sorted(fqcns)
    for fqcn, entry in docs.items():
        doc = entry["doc"]
        assert doc and doc.get("name") == fqcn.rsplit(".", 1)[1], fqcn
        assert doc.get("short_description") and doc.get("description"), fqcn
        assert "_input" in doc.get("options", {}), fqcn
        examples = yaml.safe_load(entry["examples"])
        assert isinstance(examples, list) and examples, fqcn
        assert any(fqcn in json.dumps(task) for task in examples), f"{fqcn}: examples do not use the filter"
        assert entry.get("return", {}).get("_value", {}).get("description"), fqcn
    listing = ansible_doc(installed, "-t", "filter", "-l", "llmops.vastai")
    assert sorted(line.split()[0] for line in listing.splitlines() if line.strip()) == sorted(fqcns)
    text = ansible_doc(installed, "-t", "filter", *fqcns)
    assert "UNDOCUMENTED" not in text
    assert text.count("EXAMPLES") == len(fqcns)


def test_modules_and_inventory_render(installed):
    docs = json.loads(ansible_doc(installed, "--json", "llmops.vastai.vast_offer_info", "llmops.vastai.vast_instance",
                                  "llmops.vastai.vast_instance_info", "llmops.vastai.vast_billing_info"))
    assert all(d["doc"]["short_description"] and d["examples"] for d in docs.values()), docs.keys()
    inv = json.loads(ansible_doc(installed, "-t", "inventory", "--json", "llmops.vastai.vast"))
    assert inv["llmops.vastai.vast"]["doc"]["short_description"]
