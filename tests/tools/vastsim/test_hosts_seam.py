"""The host-backend seam (tools/vastsimlib/hosts/base.py), in-process with a fake backend:
a backend sees the lifecycle events, sets network fields and can hold "loading" until ready."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "tools"))

from vastsimlib import billing  # noqa: E402
from vastsimlib.hosts.base import HostBackend  # noqa: E402
from vastsimlib.state import Sim  # noqa: E402


class FakeBackend(HostBackend):
    name = "fake"

    def __init__(self, sim, options):
        super().__init__(sim, options)
        self.events = []
        self.ready = False

    def on_create(self, inst):
        self.events.append(("create", inst.id))
        inst.backend["box"] = f"box-{inst.id}"

    def is_ready(self, inst):
        return self.ready

    def on_running(self, inst):
        self.events.append(("running", inst.id))
        inst.net.update(ssh_host="127.0.0.1", ssh_port=42022, public_ipaddr="127.0.0.1",
                        ports={"22/tcp": [{"HostIp": "127.0.0.1", "HostPort": "42022"}]})

    def on_stop(self, inst):
        self.events.append(("stop", inst.id))

    def on_start(self, inst):
        self.events.append(("start", inst.id))

    def on_ssh_keys(self, inst):
        self.events.append(("keys", tuple(inst.ssh_keys)))

    def on_destroy(self, inst):
        self.events.append(("destroy", inst.id))


@pytest.fixture
def sim():
    s = Sim(seed=5, n_offers=50, speed=0.0001)
    s.hosts = FakeBackend(s, {})
    return s


def test_backend_gates_running_and_fills_network_fields(sim):
    offer = sim.catalogue[0]
    inst = sim.create(offer["id"], {"image": "img", "disk": 10}, "ik")
    sim.clock.advance(3600)
    sim.tick()
    assert inst.actual_status == "loading"             # not ready: no "running", no GPU billing
    assert billing.ledger(sim)["instances"][str(inst.id)]["gpu"] == 0
    sim.hosts.ready = True
    sim.clock.advance(1)
    sim.tick()
    row = inst.row(sim.clock.now())
    assert row["actual_status"] == "running" and row["ssh_port"] == 42022
    assert row["ports"]["22/tcp"][0]["HostPort"] == "42022"
    sim.stop(inst)
    sim.clock.advance(10)
    sim.tick()
    assert inst.row(sim.clock.now())["ports"] is None    # the server hides ports unless running
    sim.start(inst)
    inst.ssh_keys.append("ssh-ed25519 AAAA x")
    sim.hosts.on_ssh_keys(inst)
    sim.destroy(inst)
    kinds = [e[0] for e in sim.hosts.events]
    assert kinds == ["create", "running", "stop", "start", "keys", "destroy"]
    assert inst.backend == {"box": f"box-{inst.id}"}


def test_none_backend_is_plausible():
    from vastsimlib.hosts import load_backend
    s = Sim(seed=5, n_offers=50, speed=0.0001)
    s.hosts = load_backend("none", s)
    offer = next(o for o in s.catalogue if o["direct_port_count"] > 0)
    inst = s.create(offer["id"], {"image": "img", "disk": 10, "runtype": "ssh_direc ssh_proxy"}, "ik")
    s.clock.advance(60)
    s.tick()
    row = inst.row(s.clock.now())
    assert row["ssh_host"].startswith("ssh") and row["ssh_host"].endswith(".vast.ai")
    assert "22/tcp" in row["ports"]
    with pytest.raises(ValueError):
        load_backend("kvm", s)


def test_platform_events_reach_the_backend(sim):
    # --hosts docker stops the box on preempt and offline (its ports go dark) and starts it again
    # when the host returns: the events reach the backend as on_stop / on_start
    sim.hosts.ready = True
    bid = sim.catalogue[1]
    inst = sim.create(bid["id"], {"image": "img", "disk": 10, "price": bid["min_bid"] * 2}, "ik")
    sim.clock.advance(3600)
    sim.tick()
    assert inst.actual_status == "running"
    sim.event(inst, "offline")
    assert inst.actual_status == "offline" and sim.hosts.events[-1] == ("stop", inst.id)
    sim.clock.advance(3600)
    sim.tick()
    assert inst.actual_status == "offline"
    sim.event(inst, "online")
    assert sim.hosts.events[-1] == ("start", inst.id)
    sim.clock.advance(60)
    sim.tick()
    assert inst.actual_status == "running"
    sim.event(inst, "preempt")
    assert sim.hosts.events[-1] == ("stop", inst.id)
    sim.clock.advance(60)
    sim.tick()
    assert (inst.actual_status, inst.intended_status) == ("stopped", "stopped")
    with pytest.raises(ValueError, match="unknown event"):
        sim.event(inst, "meteor")


def stopped_instance(sim):
    """An instance that ran (ready backend) and was stopped: the start tests' starting point."""
    sim.hosts.ready = True
    inst = sim.create(sim.catalogue[0]["id"], {"image": "img", "disk": 10}, "ik")
    sim.clock.advance(3600)
    sim.tick()
    sim.stop(inst)
    sim.clock.advance(60)
    sim.tick()
    assert (inst.actual_status, inst.intended_status) == ("stopped", "stopped")
    return inst


def test_no_box_runs_while_a_start_waits_for_a_taken_gpu(sim):
    # A start stuck in scheduling runs nothing on the host: the box starts when the GPU is free.
    # Before, start() started the box at once, so a --hosts docker "scheduling" instance had a
    # live container, and a stop right after (offline, cancel) hit an engine still importing
    # (PID 1 without its SIGTERM handler yet: a 10 s docker stop that stalled the replacement
    # campaign's follow-ups).
    inst = stopped_instance(sim)
    sim.event(inst, "gpu_taken")
    del sim.hosts.events[:]
    sim.start(inst)
    sim.clock.advance(3600)
    sim.tick()
    assert (inst.actual_status, inst.intended_status) == ("stopped", "running")
    assert sim.hosts.events == []                        # scheduling: no box
    sim.event(inst, "offline")
    sim.event(inst, "online")
    assert ("start", inst.id) not in sim.hosts.events    # back online, GPU still taken: still none
    sim.event(inst, "gpu_released")
    assert sim.hosts.events[-1] == ("start", inst.id)
    sim.clock.advance(60)
    sim.tick()
    assert inst.actual_status == "running"


def test_gpu_taken_during_a_scheduled_start_stops_the_box_it_began(sim):
    inst = stopped_instance(sim)
    del sim.hosts.events[:]
    sim.start(inst)                                      # GPU free: the box starts
    assert sim.hosts.events == [("start", inst.id)]
    sim.event(inst, "gpu_taken")                         # another tenant wins the GPU first
    assert sim.hosts.events[-1] == ("stop", inst.id)
    sim.clock.advance(3600)
    sim.tick()
    assert (inst.actual_status, inst.intended_status) == ("stopped", "running")
    sim.event(inst, "gpu_released")
    assert sim.hosts.events[-1] == ("start", inst.id)
    sim.clock.advance(60)
    sim.tick()
    assert inst.actual_status == "running"
