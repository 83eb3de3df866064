"""Secret audit: run the modules and the playbooks at -vvv with distinctive secrets and look
for them everywhere they must not be: stdout/stderr, the Ansible log (ANSIBLE_LOG_PATH), the
audit trail (VAST_AUDIT_LOG), the URLs the simulator saw (/_sim/requests), and every file
written on the controller (the run's HOME and working directory, and files under /tmp changed
during the audit) except where a secret belongs (the endpoint's token file, 0600).

Secrets: the vast.ai API key (the simulator runs with it: --api-key), a wrong vast.ai key (the
auth-failure path), a Hugging Face token and a vLLM API key (container env on create and the
token file), a registry password (image_login).

With `docker=True` (`--docker`) the playbooks run against a `--hosts docker` simulator whose
instances are real containers (sshd, systemd, Docker): provision.yml with the stack deployed,
deploy.yml, idle_shutdown.yml (for real, over SSH), power_off/power_on with the health wait,
cost_report and teardown. Before teardown every file on the instance is read (plus the process
command lines and the journal): the vLLM API key and the HF token may only be in the stack's
env file, nginx's token map, and Docker's record of the engine container's environment
(all 0600, root); anywhere else is a leak.

    python -m tests.campaigns.secrets [--full | --docker]    # prints the findings
"""
import argparse
import fnmatch
import json
import os
import secrets as pysecrets
import stat
import sys
import tempfile
import time

from tests.campaigns.common import playbook
from tests.helpers import images
from tests.helpers.ansible import REPO, run_inventory, run_playbook
from tests.helpers.vastsim import launch

IMAGE = "vllm/vllm-openai:v0.33.0"
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
        # a key read from a file: surrounding whitespace works, inner whitespace is refused
        {"name": "key with surrounding whitespace (api_key)", fq + "vast_instance_info": {
            "api_key": "{{ vast_api_key_padded }}", "label": "sec-mod"}},
        {"name": "key with inner whitespace (api_key)", fq + "vast_instance_info": {
            "api_key": "{{ vast_api_key_inner }}"}, "ignore_errors": True},
        # failing requests: nothing listens; the key in the URL path too (requests quotes URLs)
        {"name": "request to a closed port", fq + "vast_instance_info": {
            "api_url": "http://127.0.0.1:9", "api_retries": 0, "api_key": "{{ vast_api_key_padded }}"},
         "ignore_errors": True},
        {"name": "key in the URL of a failing request", fq + "vast_offer_info": {
            "api_url": "http://127.0.0.1:9/{{ vast_api_key }}", "api_retries": 0}, "ignore_errors": True},
        {"name": "destroy", fq + "vast_instance": {"label": "sec-mod", "state": "absent"}},
    ]


def failing_tasks():
    """Every module while the simulator resets, times out or answers 5xx (key from the
    environment, with a trailing newline as from a file)."""
    fq = "llmops.vastai."
    quick = {"api_retries": 1, "api_timeout": 2}
    return [
        {"name": "list while connections reset", fq + "vast_instance_info": dict(quick), "ignore_errors": True},
        {"name": "search while answers are 500", fq + "vast_offer_info": dict(quick), "ignore_errors": True},
        {"name": "create while answers are 500", fq + "vast_instance": dict(
            quick, label="sec-fail5", state="running", image=IMAGE, wait=False,
            offer_filters={"gpu_names": ["RTX 4090", "RTX 3090"], "max_dph": 1.5}), "ignore_errors": True},
        {"name": "billing while connections reset", fq + "vast_billing_info": dict(quick), "ignore_errors": True},
    ]


# Where the endpoint's secrets belong on the instance (each must be 0600, root): the stack's env
# file and nginx's token map. Not Docker's or containerd's state: the engine gets the secrets
# from the mounted env file, not from the container's configuration (vllm_stack role).
HOST_ALLOWED = [
    ("/opt/llm-stack/vllm.env", {"hf_token", "vllm_api_key"}),
    ("/etc/nginx/llm-proxy/auth.conf", {"vllm_api_key"}),
]

# Runs inside the instance (python3 -, SECRETS prepended): every regular file under / except
# the kernel's trees and the overlay mounts of running containers (their layers are read
# directly), plus every process's command line and the journal as text (it may be compressed
# on disk). Prints one JSON line.
HOST_SCAN = r'''
import json, os, stat, subprocess
hits, files, size = [], 0, 0
def check(path, data, st):
    names = [n for n, v in SECRETS.items() if v.encode() in data]
    if names:
        hits.append({"path": path, "names": names, "mode": stat.S_IMODE(st.st_mode) if st else 0,
                     "uid": st.st_uid if st else -1})
for dirpath, dirnames, filenames in os.walk("/"):
    if dirpath == "/":
        dirnames[:] = [d for d in dirnames if d not in ("proc", "sys", "dev")]
    if dirpath.startswith("/var/lib/docker/overlay2/"):
        dirnames[:] = [d for d in dirnames if d != "merged"]
    for fn in filenames:
        path = os.path.join(dirpath, fn)
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or st.st_size > 64 * 2 ** 20:
                continue
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        files += 1
        size += len(data)
        check(path, data, st)
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                check("/proc/%s/cmdline" % pid, f.read(), None)
        except OSError:
            pass
try:
    journal = subprocess.run(["journalctl", "--no-pager", "-o", "cat"], capture_output=True, timeout=120).stdout
    check("journalctl (all units, as text)", journal, None)
except (OSError, subprocess.SubprocessError):
    pass
print(json.dumps({"hits": hits, "files": files, "bytes": size}))
'''


def scan_text(text, secret_values):
    return sorted(name for name, v in secret_values.items() if v in (text or ""))


class Audit:
    def __init__(self, full=False, docker=False, out=sys.stdout):
        self.full, self.docker, self.out = full, docker, out
        self.s = make_secrets()
        self.findings = []   # (where, secret names)
        self.runs = []       # (name, rc, seconds)
        self.must_fail = set()
        self.checked = {"outputs": 0, "files": 0, "requests": 0, "log_bytes": 0}

    def finding(self, where, names):
        if names:
            self.findings.append((where, names))

    def run(self, name, pb, extra_vars=None, args=(), check=False, inventory=None, must_fail=False):
        res = run_playbook(pb, extra_vars=dict(extra_vars or {}), env=self.env, verbosity=3, json_output=False,
                           check=check, inventory=inventory, args=args, cwd=self.work, timeout=900)
        return self.record(name, res, must_fail)

    def record(self, name, res, must_fail=False):
        """Keep a run's outcome and scan what it printed."""
        self.runs.append((name, res.rc, round(res.duration, 1)))
        if must_fail:
            self.must_fail.add(name)
        for stream, text in (("stdout", res.stdout), ("stderr", res.stderr)):
            self.checked["outputs"] += 1
            self.finding("%s %s" % (name, stream), scan_text(text, self.s))
        self.out.write("  %-34s rc=%d %5.1fs%s\n" % (name, res.rc, res.duration, " (must fail)" if must_fail else ""))
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
        label = "sec-dock" if self.docker else "sec-prov"
        # the endpoints' token, where provision.yml keeps it (the one place a secret belongs)
        self.allowed = {}
        for name in (label, "sec-fail"):
            token_file = os.path.join(self.tokens, name + ".token")
            with open(token_file, "w") as f:
                f.write(self.s["vllm_api_key"] + "\n")
            os.chmod(token_file, 0o600)
            self.allowed[os.path.realpath(token_file)] = {"vllm_api_key"}
        if self.docker:
            self.imgs = images.ensure_images()
            self.sim = launch(hosts="docker", api_key=self.s["vast_api_key"], speed=20)
        else:
            self.sim = launch(hosts="none", api_key=self.s["vast_api_key"], speed=60)
        self.env = dict(self.sim.env, HOME=self.home, ANSIBLE_LOG_PATH=os.path.join(logs, "ansible.log"),
                        VAST_AUDIT_LOG=os.path.join(logs, "audit.jsonl"),
                        ANSIBLE_LOCAL_TEMP=os.path.join(self.home, ".ansible", "tmp"))
        mode = "docker hosts" if self.docker else "full" if self.full else "sample"
        self.out.write("secret audit (%s), -vvv, workdir %s\n" % (mode, tmp))
        try:
            if self.docker:
                self.docker_runs(tmp, label)
            else:
                self.none_runs(label)
            log = self.sim.requests()
        finally:
            self.sim.stop()
        # URLs (paths and query strings) the simulator saw
        for e in log:
            self.checked["requests"] += 1
            self.finding("simulator request %s %s?%s" % (e.get("method"), e.get("path"), e.get("query")),
                         scan_text(json.dumps(e), self.s))
        self.scan_controller(tmp, started)
        for p in (self.env["ANSIBLE_LOG_PATH"], self.env["VAST_AUDIT_LOG"]):
            if not os.path.exists(p) or os.path.getsize(p) == 0:
                self.findings.append(("%s was not written: nothing audited there" % p, ["(coverage)"]))
        self.report(tmp)
        return self

    def key_vars(self):
        key = self.s["vast_api_key"]
        return dict(self.s, vast_api_key_padded="  %s \r\n" % key, vast_api_key_inner="%s %s" % (key[:9], key[9:]))

    def failing_runs(self):
        """Failing requests (resets, timeouts, 5xx, nothing listening) with the key as read from
        a file (trailing newline), for the modules and the inventory, at -vvv."""
        key = self.s["vast_api_key"]
        saved = dict(self.env)
        self.env["VAST_API_KEY"] = key + "\n"
        try:
            self.sim.add_faults([{"endpoint": "list", "fault": "reset", "times": 200},
                                 {"endpoint": "search", "fault": "500", "times": 200},
                                 {"endpoint": "create", "fault": "500", "times": 200},
                                 {"endpoint": "user", "fault": "reset", "times": 200}])
            self.run("modules (failing requests, key + newline)", playbook(failing_tasks(), "secret audit: failing"))
            inv = self.inventory_file()
            self.record("ansible-inventory (resets, key + newline)", must_fail=True, res=run_inventory(
                inv, env=self.env, verbosity=3))
            self.sim.clear_faults()
            self.record("ansible-inventory (key + newline)", res=run_inventory(inv, env=self.env, verbosity=3))
            self.record("ansible-inventory (closed port)", must_fail=True, res=run_inventory(
                inv, env=dict(self.env, VAST_URL="http://127.0.0.1:9/" + key), verbosity=3))
            self.record("ansible-inventory (inner whitespace)", must_fail=True, res=run_inventory(
                inv, env=dict(self.env, VAST_API_KEY="%s\t%s" % (key[:9], key[9:])), verbosity=3))
        finally:
            self.sim.clear_faults()
            self.env.clear()
            self.env.update(saved)

    def none_runs(self, label):
        """Modules (always) and, with full, every playbook that works on a --hosts none simulator."""
        self.run("modules", playbook(module_tasks(self.s), "secret audit: modules"), self.key_vars())
        self.failing_runs()
        if not self.full:
            return
        self.run("cost_report.yml", os.path.join(PLAYBOOKS, "cost_report.yml"),
                 {"cost_report_dir": os.path.join(self.work, "reports")})
        prov = {"vast_mode": "container", "provision_deploy": False, "instance_label": label,
                "vast_profile": "budget", "llmops_token_dir": self.tokens, "wait_timeout": 120,
                "vllm_stack_hf_token": self.s["hf_token"]}
        # the failure path first: every create answered 500, so the rent task fails (its result
        # and message are printed in full: no task-level no_log hides them)
        self.sim.add_faults([{"endpoint": "create", "fault": "500", "times": 10}])
        self.run("provision.yml (create fails)", os.path.join(PLAYBOOKS, "provision.yml"),
                 dict(prov, instance_label="sec-fail"), must_fail=True)
        self.sim.clear_faults()
        self.run("provision.yml (container, no deploy)", os.path.join(PLAYBOOKS, "provision.yml"), prov)
        self.run("power_off.yml", os.path.join(PLAYBOOKS, "power_off.yml"), {"instance_label": label})
        self.run("power_on.yml", os.path.join(PLAYBOOKS, "power_on.yml"),
                 {"instance_label": label, "wait_for_health": False})
        inv = self.inventory_file()
        self.run("idle_shutdown.yml --check", os.path.join(PLAYBOOKS, "idle_shutdown.yml"),
                 {"idle_shutdown_probe_timeout": 3, "idle_shutdown_probe_delay": 1,
                  "idle_shutdown_max_clock_skew_minutes": 0}, check=True, inventory=inv)
        self.run("cost_report.yml (after)", os.path.join(PLAYBOOKS, "cost_report.yml"),
                 {"cost_report_dir": os.path.join(self.work, "reports")})
        self.run("teardown.yml", os.path.join(PLAYBOOKS, "teardown.yml"), {"instance_label": label, "confirm": label})

    def inventory_file(self):
        inv = os.path.join(self.work, "audit.vast.yml")
        with open(inv, "w") as f:
            f.write("plugin: llmops.vastai.vast\nstatuses: [running]\nlabel_prefix: [sec-]\n")
        return inv

    def docker_runs(self, tmp, label):
        """The lifecycle on a real container host: rent + deploy, re-deploy, idle check over SSH,
        power off/on with the health wait, the wrong key on the inventory; the host is read
        before teardown."""
        # no registry here: the engine image travels as a file
        archive = images.save_archive(self.imgs["vllm"], os.path.join(tmp, "engine.tar.gz"))
        key = os.path.join(self.home, ".ssh", "llmops_vastai_ed25519")
        self.env.update({"ANSIBLE_PRIVATE_KEY_FILE": key, "ANSIBLE_HOST_KEY_CHECKING": "False",
                         "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=60s"
                                             " -o UserKnownHostsFile=/dev/null",
                         "DOCKER_HOST": images.docker_env()["DOCKER_HOST"]})
        stack = {"llmops_token_dir": self.tokens, "llmops_engine_image_archive": archive,
                 "vllm_stack_hf_token": self.s["hf_token"]}
        self.run("provision.yml (vm, deploy)", os.path.join(PLAYBOOKS, "provision.yml"),
                 dict(stack, instance_label=label, vast_profile="budget"))
        inv = self.inventory_file()
        self.run("deploy.yml", os.path.join(PLAYBOOKS, "deploy.yml"), dict(stack, deploy_hosts=label), inventory=inv)
        self.run("idle_shutdown.yml", os.path.join(PLAYBOOKS, "idle_shutdown.yml"),
                 {"idle_shutdown_probe_timeout": 10, "idle_shutdown_probe_delay": 2,
                  # the simulator's clock runs 20x and jumps: the host-vs-API clock check would keep
                  "idle_shutdown_max_clock_skew_minutes": 0}, inventory=inv)
        self.run("power_off.yml", os.path.join(PLAYBOOKS, "power_off.yml"), {"instance_label": label})
        self.run("power_on.yml (health wait)", os.path.join(PLAYBOOKS, "power_on.yml"),
                 {"instance_label": label, "health_timeout": 300})
        self.record("ansible-inventory (wrong key)", must_fail=True, res=run_inventory(
            inv, env=dict(self.env, VAST_API_KEY=self.s["wrong_vast_key"]), verbosity=3))
        self.scan_host(label)
        self.run("cost_report.yml", os.path.join(PLAYBOOKS, "cost_report.yml"),
                 {"cost_report_dir": os.path.join(self.work, "reports")})
        self.run("teardown.yml", os.path.join(PLAYBOOKS, "teardown.yml"), {"instance_label": label, "confirm": label})

    def scan_host(self, label):
        """Read every file on the instance (a container of the simulator's docker backend)."""
        inst = [i for i in self.sim.state()["instances"] if i.get("label") == label and i.get("destroyed_at") is None]
        if len(inst) != 1:
            self.findings.append(("instance %s not found for the host scan" % label, ["(coverage)"]))
            return
        cid = images.docker("ps", "-q", "--filter", "label=llmops-vastai.vastsim.instance=%s" % inst[0]["id"]).stdout.strip()
        if not cid:
            self.findings.append(("container of %s not found for the host scan" % label, ["(coverage)"]))
            return
        # the key did reach the engine (through the env file): it refuses /v1 without it
        code = images.docker("exec", cid, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                             "http://127.0.0.1:8000/v1/models", check=False).stdout.strip()
        if code != "401":
            self.findings.append(("engine answered %s (not 401) on /v1/models without the key" % code, ["(coverage)"]))
        wanted = {k: self.s[k] for k in ("vast_api_key", "hf_token", "vllm_api_key")}
        script = "SECRETS = %s\n%s" % (json.dumps(wanted), HOST_SCAN)
        res = images.docker("exec", "-i", cid, "python3", "-", input=script, timeout=600)
        doc = json.loads(res.stdout.strip().splitlines()[-1])
        self.checked["host_files"] = doc["files"]
        self.checked["host_bytes"] = doc["bytes"]
        for hit in doc["hits"]:
            where, names, mode, uid = hit["path"], set(hit["names"]), hit["mode"], hit["uid"]
            ok = set()
            for pattern, allowed in HOST_ALLOWED:
                if fnmatch.fnmatch(where, pattern):
                    ok = allowed
            if ok and (mode & 0o077 or uid != 0):
                self.finding("host %s (mode %o uid %d, should be 0600 root)" % (where, mode, uid), sorted(names & ok))
            self.finding("host " + where, sorted(names - ok))
        self.host_hits = doc["hits"]

    def scan_controller(self, tmp, started):
        """Every file under the audit's directories, plus /tmp files changed meanwhile."""
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
                    ok = self.allowed.get(os.path.realpath(path), set())
                    if ok and (st.st_mode & 0o077):
                        self.finding("%s (mode %o, should be 0600)" % (path, st.st_mode & 0o777), sorted(ok))
                    self.finding(path, [n for n in names if n not in ok])

    def bad_runs(self):
        """Runs that did not end as they must (every playbook green; the wrong-key runs failing)."""
        return [r for r in self.runs if (r[1] != 0) != (r[0] in self.must_fail)]

    def report(self, tmp):
        w = self.out.write
        w("\n=== secret audit ===\n")
        w("runs: %d (%s)\n" % (len(self.runs), ", ".join("%s rc=%d" % (n, rc) for n, rc, _ in self.runs)))
        w("checked: %d output streams, %d simulator requests, %d files (%d bytes of logs/audit)\n" % (
            self.checked["outputs"], self.checked["requests"], self.checked["files"], self.checked["log_bytes"]))
        if "host_files" in self.checked:
            w("instance: %d files read (%.0f MB), process command lines, the journal; secrets where they belong: %s\n" % (
                self.checked["host_files"], self.checked["host_bytes"] / 2 ** 20,
                ", ".join("%s (%s)" % (h["path"], "+".join(h["names"])) for h in self.host_hits
                          if any(fnmatch.fnmatch(h["path"], p) for p, _ in HOST_ALLOWED)) or "-"))
        w("secrets: %s\n" % ", ".join(sorted(self.s)))
        w("leaks: %d\n" % len(self.findings))
        for where, names in self.findings:
            w("  LEAK %s in %s\n" % ("+".join(names), where))
        w("(audit files in %s)\n" % tmp)
        self.out.flush()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--docker", action="store_true", help="the playbooks on real container hosts")
    a = ap.parse_args(argv)
    audit = Audit(full=a.full, docker=a.docker).go()
    return 1 if audit.findings else 0


if __name__ == "__main__":
    sys.exit(main())
