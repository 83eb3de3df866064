"""`--hosts docker`: every instance is a real container on the project's Docker engine.

- VM-mode instances (`vm: true` or a `vastai/kvm` image) are systemd containers of the vast VM
  stand-in (local/llmops-vastvm: sshd, Docker, compose v2; docs/testhost.md).
- Container-mode instances run the image asked for when it exists locally (e.g. the vLLM engine
  stand-in), with the instance's args as command and env as environment. An image that is not
  local (nothing can be pulled here) falls back to the vast VM stand-in, so SSH flows still work;
  the instance's logs say so.

Ports are published on 127.0.0.1 only: a "proxy" SSH port (ssh_host/ssh_port), a "direct" SSH
port (ports["22/tcp"]) and one host port per `-p N:N` env key (ports["N/tcp"]). Host ports are
chosen once at create, so they survive stop/start. public_ipaddr is 127.0.0.1.
SSH keys on the instance (account keys at create, instance keys attached later) are written to
root's authorized_keys; CONTAINER_ID, CONTAINER_API_KEY and VAST_CONTAINERLABEL go into
/etc/environment (VM) or the container environment (container mode), as on vast.ai.
An instance is reported ready (loading → running) only once sshd sends its banner (or, for an
image without sshd, once the container runs).

The hooks run under sim.lock and must not block: every docker call happens in a worker thread
per instance that executes that instance's operations in order.
Containers carry the label llmops-vastai.vastsim=1 (and the owning simulator's pid); close()
removes this simulator's containers, and a new simulator removes those of dead simulators.
By hand: tools/testhost/cleanup.sh
"""
import os
import queue
import socket
import subprocess
import threading
import time

from .base import HostBackend

LABEL = "llmops-vastai.vastsim"
DEFAULT_DOCKER_HOST = "unix:///run/llmops-vastai/docker.sock"
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
BUILD = os.path.join(REPO, "tools", "testhost", "build.sh")
DOCKERD = os.path.join(REPO, "tools", "testhost", "dockerd.sh")
RUN_FLAGS = os.path.join(REPO, "tools", "testhost", "run-flags.txt")
VM_IMAGE = os.environ.get("LLMOPS_VASTSIM_VM_IMAGE", "local/llmops-vastvm:latest")
SSH_READY_TIMEOUT = 120.0


def _free_port(taken):
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in taken:
            taken.add(port)
            return port
    raise RuntimeError("no free port")


def _ssh_banner(port, timeout=2.0):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(16).startswith(b"SSH-")
    except OSError:
        return False


class DockerBackend(HostBackend):
    name = "docker"

    def __init__(self, sim, options):
        super().__init__(sim, options)
        self.env = dict(os.environ)
        self.env.setdefault("DOCKER_HOST", DEFAULT_DOCKER_HOST)
        self.session = str(os.getpid())
        self.ports_taken = set()
        self.ready = {}          # iid -> bool; runtime only (a restored simulator re-creates boxes)
        self.workers = {}        # iid -> (queue, thread)
        self.state_lock = threading.Lock()
        self.image_lock = threading.Lock()
        self.closed = False
        with open(RUN_FLAGS) as f:
            self.systemd_flags = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
        self._ensure_engine()
        self._remove_orphans()
        self._restore()

    def _restore(self):
        """Instances restored from --state lost their boxes (close() removed them): make them again."""
        for inst in self.sim.live_instances():
            b = inst.backend
            if not b.get("name"):
                continue
            self.ports_taken.update(b.get("ports", {}).values())
            self.ports_taken.add(b.get("proxy_port"))
            self.ready[inst.id] = False
            if inst.intended_status == "running":
                self._submit(inst, "start", keys=list(inst.ssh_keys))

    # --- docker plumbing ---------------------------------------------------------------------
    def docker(self, *args, check=True, input=None, timeout=300):
        res = subprocess.run(["docker", *args], env=self.env, input=input, text=True,
                             capture_output=True, timeout=timeout)
        if check and res.returncode != 0:
            raise RuntimeError(f"docker {args[0]}: {res.stderr.strip()}")
        return res

    def _ensure_engine(self):
        if self.docker("version", check=False, timeout=30).returncode == 0:
            return
        if self.env["DOCKER_HOST"] != DEFAULT_DOCKER_HOST:
            raise RuntimeError(f"--hosts docker: no Docker engine at {self.env['DOCKER_HOST']}")
        res = subprocess.run([DOCKERD, "start"], env=self.env, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"--hosts docker: could not start the Docker engine: {res.stderr}")

    def _remove_orphans(self):
        """Containers left by simulators that died without close() (kill -9, crash)."""
        out = self.docker("ps", "-a", "--filter", f"label={LABEL}=1", "--format",
                          '{{.ID}} {{.Label "' + LABEL + '.pid"}}', check=False).stdout
        dead = []
        for line in out.splitlines():
            cid, _, pid = line.partition(" ")
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                dead.append(cid)
        if dead:
            self.docker("rm", "-f", "-v", *dead, check=False)

    def _have_image(self, image):
        return self.docker("image", "inspect", image, check=False).returncode == 0

    def _ensure_vm_image(self):
        with self.image_lock:
            if not self._have_image(VM_IMAGE):
                res = subprocess.run([BUILD, "vastvm"], env=self.env, capture_output=True, text=True)
                if res.returncode != 0:
                    raise RuntimeError(f"building {VM_IMAGE} failed: {res.stderr[-2000:]}")

    # --- per-instance worker ------------------------------------------------------------------
    def _submit(self, inst, op, **data):
        with self.state_lock:
            if self.closed:
                return
            w = self.workers.get(inst.id)
            if w is None:
                q = queue.Queue()
                t = threading.Thread(target=self._work, args=(inst, q), daemon=True,
                                     name=f"vastsim-docker-{inst.id}")
                self.workers[inst.id] = w = (q, t)
                t.start()
        w[0].put((op, data))

    def _work(self, inst, q):
        while True:
            op, data = q.get()
            try:
                getattr(self, "_op_" + op)(inst, **data)
            except Exception as e:  # noqa: BLE001 - reported in the instance's log, never fatal
                self._log(inst, f"hosts docker: {op} failed: {e}")
            if op == "destroy":
                return

    def _log(self, inst, line):
        with self.sim.lock:
            inst.log_lines.append(f"[{self.sim.clock.now():.0f}] {line}")

    def _set_ready(self, iid, value):
        with self.state_lock:
            if iid in self.ready:  # a destroyed instance stays out
                self.ready[iid] = value

    # --- operations (worker thread) -------------------------------------------------------------
    def _op_create(self, inst, spec):
        b = spec
        if b["mode"] == "vm":
            self._ensure_vm_image()
        args = ["run", "-d", "--name", b["name"], "--hostname", f"C.{inst.id}",
                "--label", f"{LABEL}=1", "--label", f"{LABEL}.pid={self.session}",
                "--label", f"{LABEL}.instance={inst.id}"]
        for inner, host in b["publish"]:
            args += ["-p", f"127.0.0.1:{host}:{inner}"]
        if b["mode"] == "vm":
            args += self.systemd_flags + [VM_IMAGE]
        else:
            for k, v in b["env"].items():
                args += ["-e", f"{k}={v}"]
            args += [b["image"], *b["args"]]
        self.docker(*args)
        self._log(inst, f"hosts docker: container {b['name']} started from "
                        f"{VM_IMAGE if b['mode'] == 'vm' else b['image']}")
        self._boot(inst, b)

    def _boot(self, inst, b):
        """After the container (re)starts: keys and environment in place, then wait for sshd."""
        if b["mode"] == "vm":
            self._write_vm_files(b)
            deadline = time.monotonic() + SSH_READY_TIMEOUT
            while not _ssh_banner(b["proxy_port"]):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"sshd did not answer within {SSH_READY_TIMEOUT:.0f} s")
                if self.ready.get(inst.id) is None:  # destroyed meanwhile
                    return
                time.sleep(0.1)
        else:
            state = self.docker("inspect", "-f", "{{.State.Running}}", b["name"]).stdout.strip()
            if state != "true":
                raise RuntimeError(f"container exited: {self.docker('logs', '--tail', '20', b['name'], check=False).stderr}")
        self._set_ready(inst.id, True)

    def _write_vm_files(self, b):
        keys = "".join(k.strip() + "\n" for k in b["keys"] if k and k.strip())
        env = "".join(f'{k}="{v}"\n' for k, v in b["env"].items())
        # One exec writes both files atomically enough for sshd (which reads them per login).
        script = ("set -e; umask 077; mkdir -p /root/.ssh; "
                  "cat > /root/.ssh/authorized_keys.tmp <<'LLMOPS_KEYS'\n" + keys + "LLMOPS_KEYS\n"
                  "mv /root/.ssh/authorized_keys.tmp /root/.ssh/authorized_keys; umask 022; "
                  "grep -v -E '^(CONTAINER_ID|CONTAINER_API_KEY|VAST_CONTAINERLABEL|"
                  + "|".join(b["env"]) +
                  ")=' /etc/environment > /etc/environment.tmp || true; "
                  "cat >> /etc/environment.tmp <<'LLMOPS_ENV'\n" + env + "LLMOPS_ENV\n"
                  "mv /etc/environment.tmp /etc/environment\n")
        self.docker("exec", "-i", b["name"], "sh", "-c", "cat > /tmp/.llmops-setup && sh /tmp/.llmops-setup; "
                    "rc=$?; rm -f /tmp/.llmops-setup; exit $rc", input=script)

    def _op_keys(self, inst, keys):
        with self.state_lock:
            b = dict(inst.backend)
        b["keys"] = keys
        if b.get("mode") == "vm" and self._running(b["name"]):
            self._write_vm_files(b)

    def _running(self, name):
        res = self.docker("inspect", "-f", "{{.State.Running}}", name, check=False)
        return res.stdout.strip() == "true"

    def _op_stop(self, inst):
        self._set_ready(inst.id, False)
        self.docker("stop", "-t", "10", inst.backend["name"])

    def _op_start(self, inst, keys):
        b = dict(inst.backend)
        b["keys"] = keys
        if not self._exists(b["name"]):
            return self._op_create(inst, b)
        if not self._running(b["name"]):
            self.docker("start", b["name"])
        self._boot(inst, b)

    def _op_restart(self, inst, keys):
        self._set_ready(inst.id, False)
        b = dict(inst.backend)
        b["keys"] = keys
        self.docker("restart", "-t", "10", b["name"])
        self._boot(inst, b)

    def _op_recycle(self, inst, keys):
        self._set_ready(inst.id, False)
        b = dict(inst.backend)
        b["keys"] = keys
        self.docker("rm", "-f", "-v", b["name"], check=False)
        self._op_create(inst, b)

    def _op_destroy(self, inst, name):
        self.docker("rm", "-f", "-v", name, check=False)

    def _exists(self, name):
        return self.docker("inspect", name, check=False).returncode == 0

    # --- hooks (under sim.lock: no blocking work) -----------------------------------------------
    def _spec(self, inst):
        """Everything a worker needs, decided once at create and kept in inst.backend."""
        mode = "vm"
        image = inst.image or ""
        if not inst.is_vm() and self._have_image(image):
            mode = "container"
        proxy = _free_port(self.ports_taken)
        direct = _free_port(self.ports_taken)
        publish = []
        ports = {}
        if mode == "vm":
            publish += [(22, proxy), (22, direct)]
            ports["22/tcp"] = direct
        for p in inst.requested_ports():
            n, proto = p.split("/")
            if proto != "tcp" or p in ports:
                continue
            host = _free_port(self.ports_taken)
            publish.append((int(n), host))
            ports[p] = host
        # Plain NAME=value entries only (not the "-p 80:80" port keys); no quotes or newlines,
        # which /etc/environment cannot carry.
        env = {k: str(v).replace('"', "").replace("\n", " ") for k, v in (inst.env or {}).items()
               if not str(k).startswith("-") and str(k).replace("_", "").isalnum()}
        env.update({"CONTAINER_ID": str(inst.id), "CONTAINER_API_KEY": inst.instance_api_key or "",
                    "VAST_CONTAINERLABEL": f"C.{inst.id}"})
        args = [str(a) for a in (inst.args or [])]
        return {"mode": mode, "image": image, "name": f"vastsim-{self.session}-{inst.id}",
                "proxy_port": proxy, "ports": ports, "publish": publish, "env": env, "args": args,
                "keys": list(inst.ssh_keys)}

    def on_create(self, inst):
        spec = self._spec(inst)
        inst.backend.update({k: v for k, v in spec.items() if k != "keys"})
        inst.net.update({"ssh_host": "127.0.0.1", "ssh_port": spec["proxy_port"],
                         "public_ipaddr": "127.0.0.1", "local_ipaddrs": "127.0.0.1 ",
                         "ssh_idx": "0"})
        if spec["ports"]:
            inst.net["direct_port_start"] = min(spec["ports"].values())
            inst.net["direct_port_end"] = max(spec["ports"].values())
        else:
            inst.net["direct_port_start"] = inst.net["direct_port_end"] = -1
        with self.state_lock:
            self.ready[inst.id] = False
        if inst.intended_status == "running":
            self._submit(inst, "create", spec=spec)
        else:
            inst.backend["created"] = False  # created stopped: the box appears at the first start

    def is_ready(self, inst):
        with self.state_lock:
            return bool(self.ready.get(inst.id))

    def on_running(self, inst):
        ports = inst.backend.get("ports") or {}
        inst.net["ports"] = {p: [{"HostIp": "127.0.0.1", "HostPort": str(h)}] for p, h in ports.items()}

    # Readiness drops at once in the hook, so the lifecycle can never see the old box as "up".
    def on_start(self, inst):
        if not inst.backend.get("name"):
            return self.on_create(inst)
        self._set_ready(inst.id, False)
        self._submit(inst, "start", keys=list(inst.ssh_keys))

    def on_stop(self, inst):
        if inst.backend.get("name"):
            self._set_ready(inst.id, False)
            self._submit(inst, "stop")

    def on_reboot(self, inst):
        self._set_ready(inst.id, False)
        self._submit(inst, "restart", keys=list(inst.ssh_keys))

    def on_recycle(self, inst):
        self._set_ready(inst.id, False)
        self._submit(inst, "recycle", keys=list(inst.ssh_keys))

    def on_destroy(self, inst):
        name = inst.backend.get("name")
        with self.state_lock:
            self.ready.pop(inst.id, None)
        for p in (inst.backend.get("ports") or {}).values():
            self.ports_taken.discard(p)
        self.ports_taken.discard(inst.backend.get("proxy_port"))
        if name:
            self._submit(inst, "destroy", name=name)

    def on_ssh_keys(self, inst):
        self._submit(inst, "keys", keys=list(inst.ssh_keys))

    def logs(self, inst, tail):
        if inst.backend.get("mode") != "container" or not inst.backend.get("name"):
            return None
        res = self.docker("logs", "--tail", str(tail or 1000), inst.backend["name"], check=False, timeout=10)
        return res.stdout + res.stderr if res.returncode == 0 else None

    def execute(self, inst, command):
        name = inst.backend.get("name")
        if not name:
            return None
        res = self.docker("exec", name, "sh", "-c", command, check=False, timeout=20)
        return res.stdout + res.stderr

    def close(self):
        with self.state_lock:
            self.closed = True
        ids = self.docker("ps", "-aq", "--filter", f"label={LABEL}.pid={self.session}", check=False).stdout.split()
        if ids:
            self.docker("rm", "-f", "-v", *ids, check=False, timeout=120)
