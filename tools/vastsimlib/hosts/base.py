"""The seam between the simulated API and whatever stands behind an instance.

The server owns the API state; a backend owns the "machine". The simulator calls the hooks
below while holding `sim.lock`, so every hook must return quickly: start slow work (docker run,
waiting for sshd) in a thread of your own and report it through `is_ready()`.

Lifecycle as the backend sees it (all times are the simulated clock, `sim.clock.now()`):

    on_create(inst)        the instance was rented (actual_status None); create the box here or
                           lazily in on_running. Instance keys are in inst.ssh_keys already.
    is_ready(inst) -> bool polled when the lifecycle wants loading → running; returning False
                           keeps the instance in "loading" (no GPU billing) until it turns True.
    on_running(inst)       it is now running: fill inst.net (see below).
    on_start(inst)         the user asked to start a stopped instance.
    on_stop(inst)          the user asked to stop it (actual_status becomes "stopped" a little later).
    on_reboot(inst), on_recycle(inst)
    on_destroy(inst)       gone for good: remove the box and free its ports.
    on_ssh_keys(inst)      inst.ssh_keys (list of public key texts) changed.
    logs(inst, tail)       text for `vastai logs`, or None to use the simulator's own log lines.
    execute(inst, command) output of an allowed `ls`/`rm`/`du`, or None for a canned answer.
    close()                the simulator is shutting down.

Network fields a backend sets on `inst.net` (a dict rendered into every instance row):
    ssh_host, ssh_port          the proxy SSH endpoint (ssh_port an int)
    public_ipaddr               the direct address (use "127.0.0.1" for published ports)
    ports                       {"22/tcp": [{"HostIp": "127.0.0.1", "HostPort": "40022"}], ...}
                                HostPort is a string; the server hides ports unless running
    direct_port_start/_end      the direct range, -1 when none
Useful instance attributes (read-only for backends): id, image, env (dict), runtype, onstart,
args, disk, is_vm(), requested_ports() (["8000/tcp", ...]), offer (dict), label, actual_status.
`inst.backend` is a dict the backend may use for its own per-instance data (container id…);
it is persisted with --state, so keep it JSON-serialisable.
If a backend thread must change an instance, take `sim.lock` first and then call
`sim.invalidate_caches()` (list pages are cached per state version).
"""


class HostBackend:
    name = "base"

    def __init__(self, sim, options):
        self.sim = sim
        self.options = options

    def on_create(self, inst):
        pass

    def is_ready(self, inst):
        return True

    def on_running(self, inst):
        pass

    def on_start(self, inst):
        pass

    def on_stop(self, inst):
        pass

    def on_reboot(self, inst):
        pass

    def on_recycle(self, inst):
        pass

    def on_destroy(self, inst):
        pass

    def on_ssh_keys(self, inst):
        pass

    def logs(self, inst, tail):
        return None

    def execute(self, inst, command):
        return None

    def close(self):
        pass
