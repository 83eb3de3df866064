"""`tools/vastsim --hosts docker`: instances rented through the API are real containers."""
import os
import subprocess
import tempfile
import time

import pytest
import requests

from tests.helpers.images import docker, ensure_images, wait_port
from tests.helpers.vastsim import start_vastsim

LABEL = "llmops-vastai.vastsim"


@pytest.fixture(scope="module")
def images():
    return ensure_images()


@pytest.fixture(scope="module")
def keys():
    with tempfile.TemporaryDirectory() as d:
        out = {}
        for name in ("account", "later"):
            path = os.path.join(d, name)
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", path], check=True)
            out[name] = path
        yield out


class Api:
    def __init__(self, sim):
        self.sim = sim
        self.h = {"Authorization": f"Bearer {sim.api_key}"}

    def __call__(self, method, path, **kw):
        r = requests.request(method, self.sim.url + path, headers=self.h, timeout=30, **kw)
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()

    def vm_offer(self):
        offers = self("POST", "/api/v0/bundles", json={"vms_enabled": {"eq": True}, "rentable": {"eq": True},
                                                        "limit": 5})["offers"]
        assert offers
        return offers[0]["id"]

    def any_offer(self):
        return self("POST", "/api/v0/bundles", json={"limit": 5})["offers"][-1]["id"]

    def show(self, iid):
        return self("GET", f"/api/v0/instances/{iid}")["instances"]

    def wait(self, iid, status, timeout=90):
        deadline = time.monotonic() + timeout
        row = None
        while time.monotonic() < deadline:
            row = self.show(iid)
            if row["actual_status"] == status:
                return row
            time.sleep(0.25)
        raise AssertionError(f"instance {iid} not {status} after {timeout}s: {row and row['actual_status']}\n"
                             f"{self.sim.output()[-3000:]}")


def ssh(key, port, cmd, check=True):
    res = subprocess.run(
        ["ssh", "-i", key, "-p", str(port), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", "root@127.0.0.1", cmd],
        capture_output=True, text=True, timeout=60)
    if check:
        assert res.returncode == 0, res.stderr
    return res


def containers(sim_pid=None, instance=None, all_=True):
    flt = ["--filter", f"label={LABEL}=1"]
    if sim_pid:
        flt += ["--filter", f"label={LABEL}.pid={sim_pid}"]
    if instance:
        flt += ["--filter", f"label={LABEL}.instance={instance}"]
    out = docker("ps", *(["-a"] if all_ else []), *flt, "--format", "{{.Names}} {{.State}}").stdout
    return dict(line.split() for line in out.splitlines())


def test_vm_instance_lifecycle_is_a_container(images, keys):
    with start_vastsim(hosts="docker") as sim:
        api = Api(sim)
        api("POST", "/api/v0/ssh/", json={"ssh_key": open(keys["account"] + ".pub").read()})
        t0 = time.monotonic()
        created = api("PUT", f"/api/v0/asks/{api.vm_offer()}/",
                      json={"image": "docker.io/vastai/kvm:ubuntu_cli_22.04-2025-01-01", "disk": 20,
                            "label": "dockertest", "env": {"-p 80:80": "1", "MY_SETTING": "x y"},
                            "runtype": "ssh_direc ssh_proxy"})
        iid = created["new_contract"]
        row = api.wait(iid, "running")
        print(f"create → running (sshd answering) in {time.monotonic() - t0:.1f} s")
        assert row["ssh_host"] == "127.0.0.1" and row["public_ipaddr"] == "127.0.0.1"
        proxy = int(row["ssh_port"])
        direct = int(row["ports"]["22/tcp"][0]["HostPort"])
        http = int(row["ports"]["80/tcp"][0]["HostPort"])
        assert len({proxy, direct, http}) == 3
        [(name, state)] = containers(sim.proc.pid, iid).items()
        assert state == "running"

        # Both SSH endpoints reach the same box, with the account key, as root under systemd.
        for port in (proxy, direct):
            out = ssh(keys["account"], port, "hostname; ps -p 1 -o comm=; docker compose version --short")
            host, init, compose = out.stdout.split()
            assert (host, init) == (f"C.{iid}", "systemd") and compose.startswith("2.")
        # vast's environment: CONTAINER_ID and the instance's API key (pam_env reads /etc/environment).
        out = ssh(keys["account"], proxy, 'echo "$CONTAINER_ID|$CONTAINER_API_KEY|$MY_SETTING"').stdout.strip()
        assert out == f"{iid}|{created['instance_api_key']}|x y"
        # The requested port 80 is published: a server inside answers through it.
        ssh(keys["account"], proxy, "cd /root && echo hello-80 > index.html && "
                                    "(setsid python3 -m http.server 80 >/dev/null 2>&1 &)")
        deadline = time.monotonic() + 15
        while True:  # docker-proxy accepts, then resets until the server inside listens
            try:
                assert requests.get(f"http://127.0.0.1:{http}/index.html", timeout=5).text.strip() == "hello-80"
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.2)

        # A key attached later to the instance is accepted too; before, it is refused.
        assert ssh(keys["later"], direct, "true", check=False).returncode == 255
        attached = api("POST", f"/api/v0/instances/{iid}/ssh/", json={"ssh_key": open(keys["later"] + ".pub").read()})
        deadline = time.monotonic() + 20
        while ssh(keys["later"], direct, "true", check=False).returncode != 0:
            assert time.monotonic() < deadline, "attached key not accepted"
            time.sleep(0.3)

        # Detached again: refused again.
        api("DELETE", f"/api/v0/instances/{iid}/ssh/{attached['key_id']}/")
        deadline = time.monotonic() + 20
        while ssh(keys["later"], direct, "true", check=False).returncode != 255:
            assert time.monotonic() < deadline, "detached key still accepted"
            time.sleep(0.3)
        api("POST", f"/api/v0/instances/{iid}/ssh/", json={"ssh_key": open(keys["later"] + ".pub").read()})

        # stop → container stopped, SSH refused.
        api("PUT", f"/api/v0/instances/{iid}/", json={"state": "stopped"})
        api.wait(iid, "stopped")
        deadline = time.monotonic() + 30
        while containers(sim.proc.pid, iid)[name] != "exited":
            assert time.monotonic() < deadline
            time.sleep(0.3)
        res = ssh(keys["account"], proxy, "true", check=False)
        assert res.returncode == 255 and "refused" in res.stderr.lower()

        # start → the same box back, same ports, state kept.
        api("PUT", f"/api/v0/instances/{iid}/", json={"state": "running"})
        row = api.wait(iid, "running")
        assert int(row["ssh_port"]) == proxy and int(row["ports"]["22/tcp"][0]["HostPort"]) == direct
        assert ssh(keys["later"], proxy, "cat /root/index.html").stdout.strip() == "hello-80"

        # reboot → the box restarts (systemd boots again) and comes back by itself.
        # (sshd's start time on the shared monotonic clock changes with every boot of the box)
        started = "systemctl show -p ActiveEnterTimestampMonotonic --value ssh"
        before = ssh(keys["account"], proxy, started).stdout.strip()
        api("PUT", f"/api/v0/instances/reboot/{iid}/")
        api.wait(iid, "rebooting", timeout=10)
        api.wait(iid, "running")
        assert int(ssh(keys["account"], proxy, started).stdout.strip()) > int(before)

        # destroy → container gone.
        api("DELETE", f"/api/v0/instances/{iid}/")
        deadline = time.monotonic() + 30
        while containers(sim.proc.pid, iid):
            assert time.monotonic() < deadline, "container not removed after destroy"
            time.sleep(0.3)
        assert ssh(keys["account"], proxy, "true", check=False).returncode == 255


def test_container_mode_runs_local_image_and_exit_cleans_up(images, keys):
    with start_vastsim(hosts="docker") as sim:
        api = Api(sim)
        api("POST", "/api/v0/ssh/", json={"ssh_key": open(keys["account"] + ".pub").read()})
        created = api("PUT", f"/api/v0/asks/{api.any_offer()}/",
                      json={"image": images["vllm"], "disk": 16, "args": ["org/tiny", "--served-model-name", "tiny"],
                            "env": {"-p 8000:8000": "1", "STANDIN_LOAD_SECONDS": "0"}, "runtype": "args"})
        iid = created["new_contract"]
        row = api.wait(iid, "running")
        port = int(row["ports"]["8000/tcp"][0]["HostPort"])
        wait_port(port, timeout=20)
        r = requests.get(f"http://127.0.0.1:{port}/v1/models", timeout=5)
        assert r.json()["data"][0]["id"] == "tiny"
        # A VM instance next to it, then the simulator exits: all of its containers are removed.
        vm = api("PUT", f"/api/v0/asks/{api.vm_offer()}/", json={"image": "docker.io/vastai/kvm:x", "disk": 20})
        api.wait(vm["new_contract"], "running")
        pid = sim.proc.pid
        assert len(containers(pid)) == 2
    assert containers(pid) == {}


def test_state_restore_recreates_the_box(images, keys, tmp_path):
    state = str(tmp_path / "sim.json")
    with start_vastsim(hosts="docker", state=state) as sim:
        api = Api(sim)
        api("POST", "/api/v0/ssh/", json={"ssh_key": open(keys["account"] + ".pub").read()})
        iid = api("PUT", f"/api/v0/asks/{api.vm_offer()}/", json={"vm": True, "image": "ubuntu", "disk": 20})["new_contract"]
        row = api.wait(iid, "running")
        ssh(keys["account"], int(row["ssh_port"]), "echo kept > /root/marker")
        first = sim.proc.pid
    assert containers(first) == {}
    # A new simulator on the same state: the instance is still rented and gets a fresh box
    # (disk contents are not kept across simulator restarts), reachable on the same port.
    with start_vastsim(hosts="docker", state=state) as sim:
        api = Api(sim)
        row = api.wait(iid, "running")
        wait_port(int(row["ssh_port"]), banner=b"SSH-", timeout=60)
        deadline = time.monotonic() + 20
        while ssh(keys["account"], int(row["ssh_port"]), "true", check=False).returncode != 0:
            assert time.monotonic() < deadline, "restored box does not accept the account key"
            time.sleep(0.3)
        assert ssh(keys["account"], int(row["ssh_port"]), "ls /root/marker", check=False).returncode != 0
        assert list(containers(sim.proc.pid).values()) == ["running"]


def test_orphans_of_dead_simulators_are_removed_live_ones_kept(images):
    dead = subprocess.Popen(["true"])
    dead.wait()
    names = {}
    for kind, pid in (("dead", dead.pid), ("live", os.getpid())):
        names[kind] = f"vastsim-orphan-test-{kind}-{os.getpid()}"
        docker("run", "-d", "--name", names[kind], "--label", f"{LABEL}=1", "--label", f"{LABEL}.pid={pid}",
               "--entrypoint", "sleep", images["standin"], "300")
    try:
        for tool in ("sim", "script"):
            if tool == "sim":
                with start_vastsim(hosts="docker"):
                    pass
            else:
                docker("run", "-d", "--name", names["dead"], "--label", f"{LABEL}=1", "--label",
                       f"{LABEL}.pid={dead.pid}", "--entrypoint", "sleep", images["standin"], "300")
                out = subprocess.run([os.path.join(os.path.dirname(__file__), "..", "..", "..", "tools", "testhost",
                                                   "cleanup.sh")], capture_output=True, text=True, check=True)
                assert "removed 1 container" in out.stdout
            present = docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
            assert names["dead"] not in present and names["live"] in present, tool
    finally:
        docker("rm", "-f", *names.values(), check=False)


def test_platform_events_stop_and_restart_the_box(images):
    # /_sim/instances/<id>/offline: the host is lost, so the box is stopped and its ports go
    # dark; /online brings it back; /preempt stops it for good (an outbid interruptible)
    with start_vastsim(hosts="docker") as sim:
        api = Api(sim)
        offer = api("POST", "/api/v0/bundles", json={"limit": 5, "type": "bid"})["offers"][-1]
        created = api("PUT", f"/api/v0/asks/{offer['id']}/",
                      json={"image": images["vllm"], "disk": 16, "args": ["org/tiny"], "price": offer["min_bid"] * 2,
                            "env": {"-p 8000:8000": "1", "STANDIN_LOAD_SECONDS": "0"}, "runtype": "args"})
        iid = created["new_contract"]
        port = int(api.wait(iid, "running")["ports"]["8000/tcp"][0]["HostPort"])
        wait_port(port, timeout=20)

        def box():
            [(_, state)] = containers(sim.proc.pid, iid).items()
            return state

        def settle(want, timeout=30):
            deadline = time.monotonic() + timeout
            while box() != want:
                assert time.monotonic() < deadline, f"container {box()}, not {want}"
                time.sleep(0.2)

        assert sim.ctl("POST", f"instances/{iid}/offline")["instance"]["actual_status"] == "offline"
        settle("exited")
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/v1/models", timeout=3)
        sim.ctl("POST", f"instances/{iid}/online")
        api.wait(iid, "running")
        assert box() == "running"
        wait_port(port, timeout=20)
        sim.ctl("POST", f"instances/{iid}/preempt")
        settle("exited")
        sim.advance(30)
        assert api.show(iid)["actual_status"] == "stopped"
