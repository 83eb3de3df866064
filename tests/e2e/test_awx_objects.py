"""Static validation of awx/configure.yml and execution-environment.yml (no AWX here).

Every awx.awx task's options are checked against the installed awx.awx module's documented
options (names, aliases, choices, required), the schedules' rrules are parsed and their
periods measured, and what the objects point at (playbooks, inventory source) must exist.
"""
import datetime
import os
import pathlib
import re
import subprocess

import pytest
import yaml
from ansible.parsing.yaml.loader import AnsibleLoader

REPO = pathlib.Path(__file__).resolve().parents[2]
AWX = REPO / "awx" / "configure.yml"
EE = REPO / "execution-environment.yml"

awx_pkg = pytest.importorskip("ansible_collections.awx.awx", reason="awx.awx collection (ansible package) missing")
AWX_MODULES = pathlib.Path(awx_pkg.__path__[0]) / "plugins" / "modules"


def load_ansible_yaml(path):
    return yaml.load(path.read_text(), Loader=AnsibleLoader)  # noqa: S506 - Ansible's own loader (!unsafe)


def module_options(name):
    src = (AWX_MODULES / f"{name}.py").read_text()
    doc = re.search(r"DOCUMENTATION = r?'''(.*?)'''", src, re.S) or re.search(r'DOCUMENTATION = r?"""(.*?)"""', src, re.S)
    assert doc, f"no DOCUMENTATION in awx.awx.{name}"
    opts = yaml.safe_load(doc.group(1))["options"]
    return opts


def tasks():
    plays = load_ansible_yaml(AWX)
    out = []
    for play in plays:
        for task in play["tasks"]:
            mods = [k for k in task if k.startswith("awx.awx.")]
            assert len(mods) == 1, f"task {task.get('name')} should call exactly one awx.awx module"
            out.append((task, mods[0].split(".")[-1], task[mods[0]]))
    return out


def test_syntax_check():
    env = dict(os.environ)
    out = subprocess.run(["ansible-playbook", "--syntax-check", str(AWX)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("task,module,args", tasks(), ids=lambda v: v.get("name") if isinstance(v, dict) and "name" in v else None)
def test_task_options_match_module(task, module, args):
    opts = module_options(module)
    known = {}
    for name, spec in opts.items():
        known[name] = spec
        for alias in spec.get("aliases", []) or []:
            known[alias] = spec
    unknown = set(args) - set(known)
    assert not unknown, f"awx.awx.{module}: unknown option(s) {sorted(unknown)}"
    for name, spec in opts.items():
        if spec.get("required") and name not in args:
            pytest.fail(f"awx.awx.{module}: required option {name} missing")
    for key, value in args.items():
        choices = known[key].get("choices")
        if choices and isinstance(value, str) and "{{" not in value:
            assert value in choices, f"awx.awx.{module}.{key}={value!r} not in {choices}"
        if known[key].get("type") == "bool" and not (isinstance(value, str) and "{{" in value):
            assert isinstance(value, bool), f"awx.awx.{module}.{key} must be a bool, got {value!r}"


def _by_module(module):
    return [args for _, m, args in tasks() if m == module]


def _credential_type(name):
    (ct,) = [args for args in _by_module("credential_type") if args["name"] == name]
    return ct


def test_credential_type_injects_vast_api_key_from_a_secret_field():
    ct = _credential_type("vast.ai API")
    secret_fields = {f["id"] for f in ct["inputs"]["fields"] if f.get("secret")}
    env = ct["injectors"]["env"]
    assert "VAST_API_KEY" in env
    ref = re.fullmatch(r"\{\{\s*(\w+)\s*\}\}", str(env["VAST_API_KEY"]).strip())
    assert ref and ref.group(1) in secret_fields, "VAST_API_KEY must come from a secret input field"
    assert "api_key" in ct["inputs"]["required"]
    # secrets passed to credentials are never logged
    for task, module, args in tasks():
        if module == "credential":
            assert task.get("no_log") is True, f"{task['name']} must be no_log"


def _render(expr, **names):
    import jinja2.nativetypes
    return jinja2.nativetypes.NativeEnvironment().from_string(expr).render(**names)


def test_endpoint_token_credential_type_and_the_templates_that_deploy():
    """LLMOPS_ENDPOINT_TOKEN (read by playbooks/tasks/deploy_stack.yml) from a secret field of its
    own credential type, attached to the templates that deploy the stack when a token is given."""
    ct = _credential_type("llmops endpoint token")
    fields = {f["id"]: f for f in ct["inputs"]["fields"]}
    assert fields["endpoint_token"]["secret"] is True and ct["inputs"]["required"] == ["endpoint_token"]
    assert ct["kind"] == "cloud"  # the kinds AWX allows for a custom type: cloud, net
    env = ct["injectors"]["env"]
    assert list(env) == ["LLMOPS_ENDPOINT_TOKEN"]
    assert re.fullmatch(r"\{\{\s*endpoint_token\s*\}\}", str(env["LLMOPS_ENDPOINT_TOKEN"]).strip())
    assert "lookup('ansible.builtin.env', 'LLMOPS_ENDPOINT_TOKEN')" in (
        REPO / "playbooks" / "tasks" / "deploy_stack.yml").read_text()
    play = load_ansible_yaml(AWX)[0]
    cred_task, cred = [(t, a) for t, m, a in tasks() if m == "credential" and a["credential_type"] == ct["name"]][0]
    assert cred_task["no_log"] is True and cred["inputs"] == {"endpoint_token": "{{ llmops_endpoint_token }}"}
    assert cred_task["when"] == "llmops_endpoint_token | length > 0"
    name = play["vars"]["awx_endpoint_token_credential"]
    assert _render(cred["name"], awx_endpoint_token_credential=name) == name
    (jt,) = _by_module("job_template")
    base = ["vast.ai account", "vast.ai instances SSH"]
    for token in ("", "a-token"):
        got = {t["playbook"]: _render(jt["credentials"].strip(), item=t, llmops_endpoint_token=token,
                                      awx_endpoint_token_credential=name)
               for t in play["vars"]["awx_job_templates"]}
        for book, creds in got.items():
            deploys = book in ("playbooks/provision.yml", "playbooks/deploy.yml", "playbooks/keep_serving.yml")
            assert creds == base + ([name] if token and deploys else []), (book, creds)
    assert play["vars"]["llmops_endpoint_token"] == ""  # optional: without it each host keeps its own


def _next_gap(rrule_text):
    from dateutil.rrule import rrulestr
    rule = rrulestr(rrule_text.replace(" RRULE:", "\nRRULE:"))
    first = rule.after(datetime.datetime(2026, 6, 1, tzinfo=datetime.timezone.utc))
    second = rule.after(first)
    return (second - first).total_seconds(), first


def test_schedules():
    scheds = {s["unified_job_template"]: s for s in _by_module("schedule")}
    templates = {t["name"]: t for t in load_ansible_yaml(AWX)[0]["vars"]["awx_job_templates"]}
    idle = scheds["vast.ai - idle shutdown"]
    gap, _ = _next_gap(idle["rrule"])
    assert gap == 300, "idle shutdown must run every 5 minutes"
    keep = scheds["vast.ai - keep serving"]
    assert _next_gap(keep["rrule"])[0] == 600, "keep serving must run every 10 minutes"
    cost = scheds["vast.ai - cost report"]
    gap, first = _next_gap(cost["rrule"])
    assert gap == 86400, "cost report must run daily"
    for s in scheds.values():
        assert s["unified_job_template"] in templates
        assert s["enabled"] is True


def test_job_templates_point_at_existing_playbooks():
    templates = load_ansible_yaml(AWX)[0]["vars"]["awx_job_templates"]
    books = {t["playbook"] for t in templates}
    for book in books:
        assert (REPO / book).is_file(), f"job template playbook {book} missing"
    assert {"playbooks/idle_shutdown.yml", "playbooks/cost_report.yml", "playbooks/provision.yml"} <= books
    # every scheduled job template runs without prompting (no one answers a prompt at 3 am)
    for t in templates:
        if t["playbook"] in ("playbooks/idle_shutdown.yml", "playbooks/cost_report.yml"):
            assert not t.get("ask_variables_on_launch")


def test_inventory_source_uses_the_plugin():
    (src,) = _by_module("inventory_source")
    path = REPO / src["source_path"]
    assert path.is_file()
    assert re.search(r"vast\.ya?ml$", path.name), "the plugin only accepts *vast.yml / *vast.yaml"
    cfg = yaml.safe_load(path.read_text())
    assert cfg["plugin"] == "llmops.vastai.vast"
    assert "api_key" not in cfg, "the key comes from the credential, never from the file"
    assert cfg.get("statuses") == ["running"]
    assert src["update_on_launch"] is True and src["credential"] == "vast.ai account"


def test_execution_environment():
    """The EE definition (built and run for real by tests/packaging/test_ee.py): the collection
    from its tarball, whose own meta/execution-environment.yml brings the Python and system
    packages; ansible-core within the versions meta/runtime.yml claims; a public base image."""
    ee = yaml.safe_load(EE.read_text())
    assert ee["version"] == 3
    deps = ee["dependencies"]
    assert "python" not in deps and "system" not in deps, "run-time deps come from the collection's meta/"
    assert deps["ansible_core"]["package_pip"].startswith("ansible-core>=2.17.0,")
    assert deps["galaxy"]["collections"] == [{"name": "collections/llmops-vastai.tar.gz", "type": "file"}]
    assert ee["images"]["base_image"]["name"].startswith("docker.io/")
    srcs = [f["src"] for f in ee["additional_build_files"]]
    assert "build/llmops-vastai.tar.gz" in srcs

def test_survey_specs_ask_for_what_the_playbooks_read():
    play = yaml.load(AWX.read_text(), Loader=AnsibleLoader)[0]
    templates = play["vars"]["awx_job_templates"]
    profiles = yaml.safe_load((REPO / "playbooks" / "vars" / "profiles.yml").read_text())["vast_profiles"]
    surveyed = {t["playbook"]: t["survey"] for t in templates if "survey" in t}
    assert set(surveyed) == {"playbooks/provision.yml", "playbooks/deploy.yml", "playbooks/power_on.yml",
                             "playbooks/power_off.yml", "playbooks/teardown.yml", "playbooks/keep_serving.yml"}
    # a scheduled job with a survey: nobody answers at 3 am, so every answer has a default
    for q in surveyed["playbooks/keep_serving.yml"]["spec"]:
        assert not q["required"] and q.get("default") is not None, q
    for t in templates:
        if "survey" not in t:
            continue
        survey = t["survey"]
        assert survey["name"] and survey["description"] and survey["spec"], t["name"]
        text = (REPO / t["playbook"]).read_text()
        assert t["ask_variables_on_launch"] or t.get("survey"), t["name"]
        for q in survey["spec"]:
            assert q["type"] in ("text", "multiplechoice", "integer", "float", "password", "textarea"), q
            assert q["variable"] in text, f"{t['playbook']} does not read {q['variable']}"
            if q["type"] == "multiplechoice":
                assert q.get("default") in q["choices"], q
            if q["variable"] == "vast_profile":
                assert set(q["choices"]) == set(profiles), q
    # the teardown guard: the survey asks for the label twice
    assert [q["variable"] for q in surveyed["playbooks/teardown.yml"]["spec"]] == ["instance_label", "confirm"]
    # scheduled jobs never prompt
    for t in templates:
        if t["playbook"] in ("playbooks/idle_shutdown.yml", "playbooks/cost_report.yml"):
            assert "survey" not in t


def test_keep_serving_and_the_stops_share_one_lasting_audit_file():
    """keep_serving tells our stops from preemptions by the audit file: the templates that stop
    instances must write the file it reads (issue 16)."""
    play = yaml.load(AWX.read_text(), Loader=AnsibleLoader)[0]
    templates = {t["playbook"]: t for t in play["vars"]["awx_job_templates"]}
    paths = {book: templates[book].get("extra_vars", {}).get("vast_audit_log")
             for book in ("playbooks/keep_serving.yml", "playbooks/idle_shutdown.yml", "playbooks/power_off.yml")}
    assert set(paths.values()) == {"{{ awx_audit_log }}"}, paths
    assert play["vars"]["awx_audit_log"].startswith("/var/lib/"), "a path exposed to jobs, not the job's own"
