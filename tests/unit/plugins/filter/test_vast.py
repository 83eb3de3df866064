"""Unit tests for plugins/filter/vast.py (reading instance rows)."""

import pytest
from ansible.errors import AnsibleFilterError

vast = pytest.importorskip("ansible_collections.llmops.vastai.plugins.filter.vast")

ROW = {"public_ipaddr": " 203.0.113.7 ", "ssh_host": "ssh5.vast.ai", "ssh_port": 40100,
       "ports": {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": "40022"}],
                 "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "40080"}]}}


def test_vast_port_docker_style_and_plain():
    assert vast.vast_port(ROW, 80) == 40080
    assert vast.vast_port(ROW, "22/tcp") == 40022
    assert vast.vast_port(ROW, 8000) is None
    # the modules return ports already flattened {"80/tcp": 40080}
    assert vast.vast_port({"ports": {"80/tcp": 40080}}, "80") == 40080
    with pytest.raises(AnsibleFilterError):
        vast.vast_port(None, 80)


def test_vast_http_url():
    assert vast.vast_http_url(ROW, 80, "/health") == "http://203.0.113.7:40080/health"
    assert vast.vast_http_url(ROW, 8000) is None            # not published
    assert vast.vast_http_url({"ports": {"80/tcp": 1}}, 80) is None  # no address yet


def test_vast_ssh():
    assert vast.vast_ssh(ROW) == {"host": "203.0.113.7", "port": 40022, "user": "root", "kind": "direct"}
    assert vast.vast_ssh(ROW, "proxy")["host"] == "ssh5.vast.ai"
    with pytest.raises(AnsibleFilterError):
        vast.vast_ssh(ROW, "sideways")
