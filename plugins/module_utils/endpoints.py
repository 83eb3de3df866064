# -*- coding: utf-8 -*-
# Copyright: llmops.vastai contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where to reach an instance: SSH endpoint (direct vs proxy) and its port map."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

SSH_USER = "root"


def port_map(row):
    """``{"8000/tcp": 41234, ...}`` from the Docker-style ``ports`` field (absent until running)."""
    out = {}
    ports = (row or {}).get("ports") or {}
    if not isinstance(ports, dict):
        return out
    for inner, bindings in ports.items():
        if not bindings:
            continue
        binding = bindings[0] if isinstance(bindings, list) else bindings
        host_port = binding.get("HostPort") if isinstance(binding, dict) else binding
        try:
            out[inner] = int(host_port)  # HostPort arrives as a string
        except (TypeError, ValueError):
            continue
    return out


def _direct(row):
    host = row.get("public_ipaddr")
    port = port_map(row).get("22/tcp")
    if host and port:
        return {"host": str(host).strip(), "port": port, "user": SSH_USER, "kind": "direct"}
    return None


def _proxy(row):
    host = row.get("ssh_host")
    port = row.get("ssh_port")
    if not host or not port:
        return None
    try:
        port = int(port)
    except (TypeError, ValueError):
        return None
    # The official CLI uses the next gateway port for jupyter launch modes.
    if "jupyter" in (row.get("image_runtype") or ""):
        port += 1
    return {"host": str(host).strip(), "port": port, "user": SSH_USER, "kind": "proxy"}


def ssh_endpoint(row, connect_with="auto"):
    """``{"host", "port", "user", "kind": "direct"|"proxy"}`` or None.

    ``auto`` prefers direct (``ports["22/tcp"]`` on ``public_ipaddr``) and falls back to
    the proxy gateway ``ssh_host:ssh_port``; ``direct``/``proxy`` return only that kind.
    """
    if not row:
        return None
    if connect_with == "direct":
        return _direct(row)
    if connect_with == "proxy":
        return _proxy(row)
    if connect_with != "auto":
        raise ValueError("connect_with must be auto, direct or proxy, not %r" % (connect_with,))
    return _direct(row) or _proxy(row)
