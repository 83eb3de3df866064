# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Audit events written by the playbooks, in the modules' own format (module_utils/audit.py)."""

from __future__ import annotations

import json
import time

from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.vastai.plugins.module_utils.audit import AUDIT_FIELDS, render_line


def audit_actor(explicit=None, user=None, awx_job_id=None, awx_user=None):
    """Who asked: `explicit` when given, else the AWX job (and its user), else the OS user."""
    if explicit:
        return str(explicit)
    if awx_job_id not in (None, ""):
        return "awx job %s%s" % (awx_job_id, " (%s)" % awx_user if awx_user else "")
    return "user %s" % (user or "unknown")


def audit_event(record, actor=None, now=None):
    """A playbook's event -> the trail's record: `time` filled in (UTC), `module` defaulted to
    `playbook`, only the trail's fields kept (unknown keys are an error, not silently dropped)."""
    if not isinstance(record, dict) or not record.get("action"):
        raise AnsibleFilterError("audit_event expects a dict with at least `action`")
    unknown = sorted(set(record) - set(AUDIT_FIELDS))
    if unknown:
        raise AnsibleFilterError("audit_event: not audit fields: %s (known: %s)" % (", ".join(unknown), ", ".join(AUDIT_FIELDS)))
    out = dict(record)
    out.setdefault("module", "playbook")
    out["time"] = out.get("time") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    if actor is not None:
        out["actor"] = actor
    return out


def audit_line(record):
    """The record as the one JSON line the audit file holds."""
    return render_line(record)


def audit_tail(text, count=10, actions=None):
    """The last `count` events of an audit file's text (bad lines skipped), oldest first."""
    events = []
    for line in (text or "").splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict) and (not actions or ev.get("action") in actions):
            events.append(ev)
    return events[-int(count):] if int(count) > 0 else []


class FilterModule(object):
    def filters(self):
        return {"audit_actor": audit_actor, "audit_event": audit_event, "audit_line": audit_line,
                "audit_tail": audit_tail}
