# -*- coding: utf-8 -*-
# Copyright: llmops.vastai contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Append-only audit trail: one JSON line per mutation, never any secret."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import time

AUDIT_FIELDS = ("time", "module", "action", "instance_id", "label", "price", "offer_id", "result", "check_mode", "detail",
                "actor", "endpoint", "figures")


def audit_record(action, instance_id=None, label=None, price=None, result="ok", **extra):
    rec = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "action": action,
        "instance_id": instance_id,
        "label": label,
        "price": price,
        "result": result,
    }
    for key, value in extra.items():
        if key in AUDIT_FIELDS and value is not None:
            rec[key] = value
    return rec


def render_line(record):
    """The trail's line format: the known fields only, sorted keys, one line (no newline)."""
    return json.dumps({k: record.get(k) for k in AUDIT_FIELDS if k in record}, sort_keys=True)


def append_audit(path, record):
    """Append ``record`` as one line; a single O_APPEND write keeps concurrent writers whole."""
    if not path:
        return
    line = render_line(record) + "\n"
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        os.makedirs(directory, exist_ok=True)  # several writers may race to create it
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)
