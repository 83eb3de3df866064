"""Render the roles' templates with real Ansible templating (ansible-playbook, local), and run
the host's nginx with the health_proxy config in a private work dir.

Used by the static checks in this package and by tests/bench/bench_proxy.py.
"""
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import yaml

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
ROLES = os.path.join(REPO, "roles")
STANDIN = os.path.join(REPO, "tools", "engine_standin", "vllm_standin.py")


def render(role, templates, overrides, outdir):
    """Render roles/<role>/templates/<src> to outdir/<dest> for each (src, dest) in templates,
    with the role's defaults and vars plus overrides. Returns {dest: path}."""
    return render_many(role, [(templates, overrides, outdir)])[0]


def render_many(role, jobs):
    """Several renders [(templates, overrides, outdir), ...] in one ansible-playbook run (one
    play each): ansible-playbook start-up dominates on a busy host."""
    var_files = [os.path.join(ROLES, role, d, "main.yml") for d in ("defaults", "vars")]
    var_files = [p for p in var_files if os.path.exists(p)]
    plays, results = [], []
    for templates, overrides, outdir in jobs:
        os.makedirs(outdir, exist_ok=True)
        with open(os.path.join(outdir, "_overrides.json"), "w") as f:
            json.dump(overrides, f)
        tasks = [{"ansible.builtin.template": {"src": os.path.join(ROLES, role, "templates", src),
                                               "dest": os.path.join(outdir, dest), "mode": "0600"}}
                 for src, dest in templates]
        plays.append({"hosts": "localhost", "gather_facts": False,
                      "vars_files": var_files + [os.path.join(outdir, "_overrides.json")], "tasks": tasks})
        results.append({dest: os.path.join(outdir, dest) for _, dest in templates})
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        yaml.safe_dump(plays, f)
        pb = f.name
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    try:
        res = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
                              "-i", "localhost,", "-c", "local",
                              "-e", f"ansible_python_interpreter={sys.executable}", pb],
                             capture_output=True, text=True, env=env, timeout=300)
    finally:
        os.unlink(pb)
    if res.returncode != 0:
        raise RuntimeError(f"rendering {role} templates failed:\n{res.stdout[-3000:]}{res.stderr[-2000:]}")
    return results


def nginx_main_conf(workdir, site, workers=1):
    """A main nginx.conf whose pid, logs and temp paths are all inside workdir."""
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(os.path.join(workdir, "tmp", d), exist_ok=True)
    path = os.path.join(workdir, "nginx.conf")
    with open(path, "w") as f:
        f.write(f"""daemon on;
worker_processes {workers};
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    include /etc/nginx/mime.types;
    access_log off;
    client_body_temp_path {workdir}/tmp/body;
    proxy_temp_path {workdir}/tmp/proxy;
    fastcgi_temp_path {workdir}/tmp/fastcgi;
    uwsgi_temp_path {workdir}/tmp/uwsgi;
    scgi_temp_path {workdir}/tmp/scgi;
    include {site};
}}
""")
    return path


def proxy_overrides(workdir, token, upstream_port, listen, engine_key=""):
    return {"health_proxy_token": token, "health_proxy_engine_api_key": engine_key,
            "health_proxy_config_dir": workdir,
            "health_proxy_upstream": f"127.0.0.1:{upstream_port}",
            "health_proxy_listen_port": listen,
            "health_proxy_access_log": os.path.join(workdir, "vllm-access.log"),
            "health_proxy_activity_log": os.path.join(workdir, "vllm-activity.log")}


PROXY_TEMPLATES = [("auth.conf.j2", "auth.conf"), ("llm-proxy.conf.j2", "llm-proxy.conf"),
                   ("nginx-check.sh.j2", "nginx-check.sh")]


def render_proxies(jobs):
    """Render health_proxy configs for local nginx runs; jobs are proxy_overrides() argument
    dicts. Returns the main nginx.conf path of each."""
    results = render_many("health_proxy", [(PROXY_TEMPLATES, proxy_overrides(**j), j["workdir"]) for j in jobs])
    confs = []
    for files in results:
        os.chmod(files["nginx-check.sh"], 0o755)
        confs.append(nginx_main_conf(os.path.dirname(files["auth.conf"]), files["llm-proxy.conf"]))
    return confs


def render_proxy(workdir, token, upstream_port, listen, engine_key=""):
    """Render one health_proxy config for a local nginx; returns the main config path."""
    return render_proxies([dict(workdir=workdir, token=token, upstream_port=upstream_port,
                                listen=listen, engine_key=engine_key)])[0]


def wait_http(port, path="/health", timeout=30):
    import http.client
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            if c.getresponse().status == 200:
                return True
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"127.0.0.1:{port}{path} not 200 after {timeout}s")


@contextlib.contextmanager
def standin(port, api_key=None, load_seconds=0, token_delay=0.02, extra_env=None, wait=True):
    """The engine stand-in as a plain python process on 127.0.0.1:port."""
    env = dict(os.environ, STANDIN_LOAD_SECONDS=str(load_seconds), STANDIN_TOKEN_DELAY=str(token_delay),
               **(extra_env or {}))
    env.pop("VLLM_API_KEY", None)
    args = [sys.executable, STANDIN, "Qwen/Qwen2.5-0.5B-Instruct", "--served-model-name", "qwen-test",
            "--host", "127.0.0.1", "--port", str(port)]
    if api_key:
        args += ["--api-key", api_key]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if wait:
            wait_http(port, timeout=30 + load_seconds)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def nginx(main_conf):
    """Run the host's nginx with main_conf (pid in its work dir); stopped with QUIT on exit."""
    res = subprocess.run(["nginx", "-c", main_conf], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"nginx failed to start: {res.stderr}")
    pidfile = os.path.join(os.path.dirname(main_conf), "nginx.pid")
    for _ in range(100):
        if os.path.exists(pidfile):
            break
        time.sleep(0.02)
    try:
        yield
    finally:
        with open(pidfile) as f:
            pid = int(f.read())
        os.kill(pid, signal.SIGQUIT)
        for _ in range(200):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)


def workdir(prefix="llmops-proxy-"):
    return tempfile.mkdtemp(prefix=prefix)


def load_idle_policy():
    """plugins/module_utils/idle_policy.py loaded from its file, the way the hosts run it."""
    import importlib.util
    path = os.path.join(os.path.dirname(__file__), "..", "..", "..", "plugins", "module_utils", "idle_policy.py")
    spec = importlib.util.spec_from_file_location("llmops_idle_policy_file", os.path.abspath(path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
