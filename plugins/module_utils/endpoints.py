# -*- coding: utf-8 -*-
# Copyright: llmops.vastai contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where to reach an instance: SSH endpoint (direct vs proxy) and its port map."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import selectors
import socket
import time

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


def _probe_batch(targets, timeout):
    """``(host, port)`` pairs of ``targets`` (numeric IPs) that send an SSH banner in ``timeout`` s.

    All connections are opened at once (non-blocking) so a batch costs at most ``timeout``.
    A TCP accept alone proves nothing (middleboxes accept anything): only ``SSH-`` counts.
    """
    sel = selectors.DefaultSelector()
    answered = set()
    try:
        for target in targets:
            try:
                info = socket.getaddrinfo(target[0], target[1], 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)[0]
                sock = socket.socket(info[0], socket.SOCK_STREAM)
            except (OSError, socket.gaierror, IndexError):
                continue
            sock.setblocking(False)
            try:
                sock.connect_ex(info[4])
                sel.register(sock, selectors.EVENT_READ, target)
            except OSError:
                sock.close()
        deadline = time.monotonic() + timeout
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, dummy in sel.select(timeout=left):
                sock = key.fileobj
                try:
                    data = sock.recv(64)
                except OSError:
                    data = b""
                if data.startswith(b"SSH-"):
                    answered.add(key.data)
                sel.unregister(sock)
                sock.close()
    finally:
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        sel.close()
    return answered


def ssh_answers(targets, timeout=2.0, batch=256):
    """The subset of ``(host, port)`` targets that answer with an SSH banner within ``timeout``
    seconds (per batch of ``batch`` concurrent probes). Host names are looked up first."""
    todo = []
    for host, port in dict.fromkeys((str(h).strip(), int(p)) for h, p in targets):
        try:
            socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
            todo.append((host, port))
        except socket.gaierror:
            try:  # a name: resolve once (the probe itself stays non-blocking)
                ip = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0][4][0]
            except (OSError, socket.gaierror, IndexError):
                continue
            todo.append((host, port, ip))
    answered = set()
    for i in range(0, len(todo), batch):
        chunk = todo[i:i + batch]
        by_ip = dict(((t[2] if len(t) == 3 else t[0], t[1]), (t[0], t[1])) for t in chunk)
        answered |= set(by_ip[t] for t in _probe_batch(list(by_ip), timeout))
    return answered


def ssh_endpoints_probed(rows, connect_with="auto", timeout=2.0, answers=None):
    """``{row id: endpoint}`` like ``ssh_endpoint``, but ``auto`` checks that the direct port
    answers before choosing it: SkyPilot found direct SSH to ``public_ipaddr`` blocked on some
    hosts (it uses the proxy), while dstack and the CLI use direct. A running instance whose
    direct endpoint sends no SSH banner within ``timeout`` seconds gets the proxy endpoint
    (``kind: proxy``, ``direct_silent: True``). ``timeout <= 0`` turns probing off. All probes
    of one call run concurrently, so the call costs about ``timeout`` seconds, not one per row.
    """
    out = dict((row["id"], ssh_endpoint(row, connect_with)) for row in rows if row)
    if connect_with != "auto" or not timeout or timeout <= 0:
        return out
    candidates = {}
    for row in rows:
        if not row or row.get("actual_status") != "running":
            continue
        direct, proxy = _direct(row), _proxy(row)
        if direct and proxy:
            candidates[row["id"]] = (direct, proxy)
    if not candidates:
        return out
    heard = (answers or ssh_answers)([(d["host"], d["port"]) for d, p in candidates.values()], timeout)
    for iid, (direct, proxy) in candidates.items():
        if (direct["host"], direct["port"]) not in heard:
            proxy = dict(proxy)
            proxy["direct_silent"] = True
            out[iid] = proxy
    return out


def ssh_endpoint_probed(row, connect_with="auto", timeout=2.0):
    """One row's endpoint, the direct port checked first in ``auto`` (see ssh_endpoints_probed)."""
    if not row:
        return None
    return ssh_endpoints_probed([row], connect_with, timeout).get(row["id"])
