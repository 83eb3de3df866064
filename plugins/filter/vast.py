# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Small helpers the playbooks need to read instance rows (no API calls)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.llmops.vastai.plugins.module_utils.endpoints import port_map, ssh_endpoint


def vast_port(row, port, proto="tcp"):
    """Host port published for a container port (`80` or `80/tcp`), or None."""
    if not isinstance(row, dict):
        raise AnsibleFilterError("vast_port expects an instance row (dict)")
    key = str(port) if "/" in str(port) else "%s/%s" % (port, proto)
    return port_map(row).get(key)


def vast_http_url(row, port=80, path="", proto="tcp"):
    """`http://<public ip>:<published port><path>` for a container port, or None when the
    instance does not publish it yet (it is still loading or the port was not requested)."""
    host = (row or {}).get("public_ipaddr")
    published = vast_port(row, port, proto)
    if not host or not published:
        return None
    return "http://%s:%s%s" % (str(host).strip(), published, path)


def vast_ssh(row, connect_with="auto"):
    """The SSH endpoint of an instance row: `{host, port, user, kind}` or None."""
    try:
        return ssh_endpoint(row, connect_with)
    except ValueError as exc:
        raise AnsibleFilterError(str(exc))


class FilterModule(object):
    def filters(self):
        return {"vast_port": vast_port, "vast_http_url": vast_http_url, "vast_ssh": vast_ssh}
