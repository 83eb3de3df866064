"""`--hosts none`: no machine behind instances, only plausible network fields.

ssh_host is a vast-style proxy name (sshN.vast.ai) and public_ipaddr comes from the offer,
which uses loopback addresses (127.0.113.0/24, 127.51.100.0/24) where nothing listens, so a
connection to an instance never leaves this machine and is refused at once. Direct ports are taken from the offer's direct range.
"""
from .base import HostBackend


class NoneBackend(HostBackend):
    name = "none"

    def on_create(self, inst):
        inst.net["ssh_host"] = f"ssh{1 + inst.id % 9}.vast.ai"
        inst.net["ssh_port"] = 10000 + inst.id % 50000
        inst.net["ssh_idx"] = str(1 + inst.id % 9)
        inst.net["local_ipaddrs"] = f"172.17.0.{2 + inst.id % 200} "

    def on_running(self, inst):
        start = inst.offer.get("direct_port_start", -1)
        count = inst.offer.get("direct_port_count", 0) or 0
        ports = {}
        if start and start > 0 and count > 0:
            wanted = []
            if "direc" in (inst.runtype or "") or inst.is_vm():
                wanted.append("22/tcp")
                if "jupyter" in (inst.runtype or ""):
                    wanted.append("8080/tcp")
            wanted += [p for p in inst.requested_ports() if p not in wanted]
            for n, port in enumerate(wanted[:count]):
                inner = int(port.split("/")[0])
                # internal ports above 70000 ask for an identity mapping
                host = inner if inner > 70000 else start + n
                ports[port] = [{"HostIp": "0.0.0.0", "HostPort": str(host)}]
        inst.net["ports"] = ports
