"""The probing SSH endpoint choice (direct when it answers, else the proxy) on real sockets."""
import socket
import time

import pytest

from ansible_collections.llmops.vastai.plugins.module_utils import endpoints as E
from tests.helpers.net import ssh_listener


@pytest.fixture
def listeners():
    made = []

    def make(banner):
        srv = ssh_listener(banner, hold=3)
        made.append(srv)
        return srv.getsockname()[1]

    yield make
    for srv in made:
        srv.close()


def row(iid, direct_port, status="running"):
    return {"id": iid, "actual_status": status, "public_ipaddr": "127.0.0.1 ", "ssh_host": "ssh4.vast.ai",
            "ssh_port": 40000 + iid, "ports": {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(direct_port)}]}}


def test_direct_when_it_answers_proxy_when_silent_or_closed(listeners):
    good, silent = listeners(True), listeners(False)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    cport = closed.getsockname()[1]
    closed.close()
    rows = [row(1, good), row(2, silent), row(3, cport), row(4, silent, status="loading")]
    t = time.monotonic()
    out = E.ssh_endpoints_probed(rows, "auto", timeout=1.0)
    assert time.monotonic() - t < 1.8                       # concurrent: one timeout, not one per row
    assert (out[1]["kind"], out[1]["port"]) == ("direct", good) and not out[1].get("direct_silent")
    assert (out[2]["kind"], out[2]["host"], out[2]["port"], out[2]["direct_silent"]) == ("proxy", "ssh4.vast.ai", 40002, True)
    assert out[3]["kind"] == "proxy"
    assert out[4]["kind"] == "direct"                       # not running yet: nothing to probe
    assert E.ssh_endpoint_probed(row(5, silent), "auto", timeout=0.5)["kind"] == "proxy"
    assert E.ssh_endpoint_probed(row(5, silent), "auto", timeout=0)["kind"] == "direct"      # probe off
    assert E.ssh_endpoint_probed(row(5, silent), "direct", timeout=0.5)["kind"] == "direct"  # forced
    assert E.ssh_endpoint_probed(None) is None
