"""Secret audit: run the modules and the playbooks at -vvv with distinctive secrets and look
for them everywhere they must not be: stdout/stderr, the Ansible log (ANSIBLE_LOG_PATH), the
audit trail (VAST_AUDIT_LOG), the URLs the simulator saw (/_sim/requests), and every file
written on the controller (the run's HOME and working directory, and files under /tmp changed
during the audit) except where a secret belongs (the endpoint's token file, 0600).

Secrets: the vast.ai API key (the simulator runs with it: --api-key), a wrong vast.ai key (the
auth-failure path), a Hugging Face token and a vLLM API key (container env on create and the
token file), a registry password (image_login).

    python -m tests.campaigns.secrets [--full]    # prints the findings
"""
import argparse
import json
import os
import secrets as pysecrets
import stat
import sys
import tempfile
import time

from tests.campaigns.common import playbook
from tests.helpers.ansible import REPO, run_playbook
from tests.helpers.vastsim import launch

IMAGE = "vllm/vllm-openai:v0.20.0"
PLAYBOOKS = os.path.join(REPO, "playbooks")


def make_secrets():
    h = lambda: pysecrets.token_hex(12)  # noqa: E731
    return {"vast_api_key": "SECRET-vast-" + h(), "wrong_vast_key": "SECRET-wrong-" + h(),
            "hf_token": "SECRET-hf-" + h(), "vllm_api_key": "SECRET-vllm-" + h(),
            "registry_password": "SECRET-reg-" + h()}


def module_tasks(s):
    """Every module, on the success and on the failure paths, with the secrets as arguments."""
    fq = "llmops.vastai."
    rent = {"label": "sec-mod", "state": "running", "image": IMAGE, "wait": True, "wait_timeout": 60,
            "poll_interval": 0.5, "offer_filters": {"gpu_names": ["RTX 4090", "RTX 3090"], "max_dph": 1.5},
            # secrets go where the module documents them (secret_env, no_log); env holds none
            "env": {"VLLM_LOGGING_LEVEL": "INFO"},
            "secret_env": {"HF_TOKEN": "{{ hf_token }}", "VLLM_API_KEY": "{{ vllm_api_key }}"},
            "image_login": "-u llmops -p {{ registry_password }} docker.io", "runtype": "args",
            "args": ["--model", "Qwen/Qwen2.5-1.5B-Instruct"], "destroy_on_failure": True}
    return [
        {"name": "offers (key from the api_key option)", fq + "vast_offer_info": {
            "api_key": "{{ vast_api_key }}", "gpu_names": ["RTX 4090"], "limit": 2}},
        {"name": "rent with secrets in env and image_login", fq + "vast_instance": rent, "register": "rented"},
        {"name": "rent again (idempotent)", fq + "vast_instance": rent},
        {"name": "list", fq + "vast_instance_info": {"label": "sec-mod"}},
        {"name": "billing", fq + "vast_billing_info": {"start": "-1d"}},
        {"name": "stop", fq + "vast_instance": {"label": "sec-mod", "state": "stopped", "poll_interval": 0.5}},
        {"name": "start", fq + "vast_instance": {"label": "sec-mod", "state": "running", "poll_interval": 0.5}},
        {"name": "wrong key (auth failure path)", fq + "vast_instance_info": {"api_key": "{{ wrong_vast_key }}"},
         "ignore_errors": True},
        {"name": "wrong key on create", fq + "vast_instance": dict(rent, label="sec-wrong", api_key="{{ wrong_vast_key }}"),
         "ignore_errors": True},
        {"name": "create on a missing offer (error path with image_login)", fq + "vast_instance": dict(
            {k: v for k, v in rent.items() if k != "offer_filters"}, label="sec-missing", offer_id=999999999),
         "ignore_errors": True},
        {"name": "check mode create", fq + "vast_instance": dict(rent, label="sec-check"), "check_mode": True},
        {"name": "destroy", fq + "vast_instance": {"label": "sec-mod", "state": "absent"}},
    ]


def scan_text(text, secret_values):
    return sorted(name for name, v in secret_values.items() if v in (text or ""))


class Audit:
    def __init__(self, full=False, out=sys.stdout):
        self.full, self.out = full, out
        self.s = make_secrets()
        self.findings = []   # (where, secret names)
        self.runs = []
        self.checked = {"outputs": 0, "files": 0, "requests": 0, "log_bytes": 0}

    def finding(self, where, names):
        if names:
            self.findings.append((where, names))

    def run(self, name, pb, extra_vars=None, args=(), check=False, inventory=None):
        extra = dict(extra_vars or {})
        res = run_playbook(pb, extra_vars=extra, env=self.env, verbosity=3, json_output=False, check=check,
                           inventory=inventory, args=args, cwd=self.work, timeout=900)
        self.runs.append((name, res.rc, round(res.duration, 1)))
        for stream, text in (("stdout", res.stdout), ("stderr", res.stderr)):
            self.checked["outputs"] += 1
            self.finding("%s %s" % (name, stream), scan_text(text, self.s))
        self.out.write("  %-34s rc=%d %5.1fs\n" % (name, res.rc, res.duration))
        self.out.flush()
        return res

    def go(self):
        started = time.time()
        tmp = tempfile.mkdtemp(prefix="secret-audit-")
        self.home, self.work, logs = (os.path.join(tmp, d) for d in ("home", "work", "logs"))
        for d in (self.home, self.work, logs):
            os.makedirs(d)
        self.tokens = os.path.join(self.home, ".config", "llmops-vastai", "tokens")
        os.makedirs(self.tokens)
        # the endpoint's token, where provision.yml keeps it (the one place a secret belongs)
        token_file = os.path.join(self.tokens, "sec-prov.token")
        with open(token_file, "w") as f:
            f.write(self.s["vllm_api_key"] + "\n")
        os.chmod(token_file, 0o600)
        self.sim = launch(hosts="none", api_key=self.s["vast_api_key"], speed=60)
        self.env = dict(self.sim.env, HOME=self.home, ANSIBLE_LOG_PATH=os.path.join(logs, "ansible.log"),
                        VAST_AUDIT_LOG=os.path.join(logs, "audit.jsonl"),
                        ANSIBLE_LOCAL_TEMP=os.path.join(self.home, ".ansible", "tmp"))
        secret_vars = {k: v for k, v in self.s.items()}
        self.out.write("secret audit (%s), -vvv, workdir %s\n" % ("full" if self.full else "sample", tmp))
        try:
            self.run("modules", playbook(module_tasks(self.s), "secret audit: modules"), secret_vars)
            if self.full:
                self.run("cost_report.yml", os.path.join(PLAYBOOKS, "cost_report.yml"),
                         {"cost_report_dir": os.path.join(self.work, "reports")})
                prov = {"vast_mode": "container", "provision_deploy": False, "instance_label": "sec-prov",
                        "vast_profile": "budget", "llmops_token_dir": self.tokens, "wait_timeout": 120,
                        "vllm_stack_hf_token": self.s["hf_token"]}
                self.run("provision.yml (container, no deploy)", os.path.join(PLAYBOOKS, "provision.yml"), prov)
                self.run("power_off.yml", os.path.join(PLAYBOOKS, "power_off.yml"), {"instance_label": "sec-prov"})
                self.run("power_on.yml", os.path.join(PLAYBOOKS, "power_on.yml"),
                         {"instance_label": "sec-prov", "wait_for_health": False})
                inv = os.path.join(self.work, "audit.vast.yml")
                with open(inv, "w") as f:
                    f.write("plugin: llmops.vastai.vast\nstatuses: [running]\nlabel_prefix: [sec-]\n")
                self.run("idle_shutdown.yml --check", os.path.join(PLAYBOOKS, "idle_shutdown.yml"),
                         {"idle_shutdown_probe_timeout": 3, "idle_shutdown_probe_delay": 1}, check=True, inventory=inv)
                self.run("cost_report.yml (after)", os.path.join(PLAYBOOKS, "cost_report.yml"),
                         {"cost_report_dir": os.path.join(self.work, "reports")})
                self.run("teardown.yml", os.path.join(PLAYBOOKS, "teardown.yml"),
                         {"instance_label": "sec-prov", "confirm": "sec-prov"})
            log = self.sim.requests()
        finally:
            self.sim.stop()
        # URLs (paths and query strings) the simulator saw
        for e in log:
            self.checked["requests"] += 1
            self.finding("simulator request %s %s?%s" % (e.get("method"), e.get("path"), e.get("query")),
                         scan_text(json.dumps(e), self.s))
        # every file under the audit's directories, plus /tmp files changed meanwhile
        allowed = {os.path.realpath(token_file): {"vllm_api_key"}}
        for root in (tmp, "/tmp"):
            for dirpath, dirnames, filenames in os.walk(root):
                if root == "/tmp" and dirpath.startswith(tmp):
                    dirnames[:] = []
                    continue
                for fn in filenames:
                    path = os.path.join(dirpath, fn)
                    try:
                        st = os.lstat(path)
                        if not stat.S_ISREG(st.st_mode) or st.st_size > 20 * 2 ** 20:
                            continue
                        if root == "/tmp" and st.st_mtime < started:
                            continue
                        with open(path, "rb") as f:
                            data = f.read().decode("utf-8", "replace")
                    except OSError:
                        continue
                    self.checked["files"] += 1
                    if path.endswith(".log") or path.endswith(".jsonl"):
                        self.checked["log_bytes"] += len(data)
                    names = scan_text(data, self.s)
                    ok = allowed.get(os.path.realpath(path), set())
                    if ok and (st.st_mode & 0o077):
                        self.finding("%s (mode %o, should be 0600)" % (path, st.st_mode & 0o777), sorted(ok))
                    self.finding(path, [n for n in names if n not in ok])
        for p in (self.env["ANSIBLE_LOG_PATH"], self.env["VAST_AUDIT_LOG"]):
            if not os.path.exists(p) or os.path.getsize(p) == 0:
                self.findings.append(("%s was not written: nothing audited there" % p, ["(coverage)"]))
        self.report(tmp)
        return self

    def report(self, tmp):
        w = self.out.write
        w("\n=== secret audit ===\n")
        w("runs: %d (%s)\n" % (len(self.runs), ", ".join("%s rc=%d" % (n, rc) for n, rc, _ in self.runs)))
        w("checked: %d output streams, %d simulator requests, %d files (%d bytes of logs/audit)\n" % (
            self.checked["outputs"], self.checked["requests"], self.checked["files"], self.checked["log_bytes"]))
        w("secrets: %s\n" % ", ".join(sorted(self.s)))
        w("leaks: %d\n" % len(self.findings))
        for where, names in self.findings:
            w("  LEAK %s in %s\n" % ("+".join(names), where))
        w("(audit files in %s)\n" % tmp)
        self.out.flush()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true")
    a = ap.parse_args(argv)
    audit = Audit(full=a.full).go()
    return 1 if audit.findings else 0


if __name__ == "__main__":
    sys.exit(main())
