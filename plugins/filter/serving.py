# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""serving_plan: keep_serving.yml's plan (module_utils/serving.py decides; this only adapts)."""

from __future__ import annotations

import json
import time

from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.vastai.plugins.module_utils.serving import PlanError, plan


def _events(audit):
    """Audit events from a list of dicts or from the trail's text (one JSON object per line;
    lines that are not, such as a half-written last line, are skipped)."""
    if isinstance(audit, (list, tuple)):
        return [e for e in audit if isinstance(e, dict)]
    out = []
    for line in str(audit or "").splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict):
            out.append(ev)
    return out


def _health(health):
    """{id: healthy} from a dict, or from the results of a looped uri probe (item = the row)."""
    if isinstance(health, dict):
        return health
    out = {}
    for res in health or []:
        if isinstance(res, dict) and isinstance(res.get("item"), dict) and not res.get("skipped"):
            out[res["item"].get("id")] = res.get("status") == 200
    return out


def serving_plan(services, instances, profiles, audit=None, health=None, now=None):
    try:
        return plan(services, instances, _events(audit), time.time() if now is None else float(now), _health(health),
                    profiles)
    except PlanError as e:
        raise AnsibleFilterError(str(e))


class FilterModule(object):
    def filters(self):
        return {"serving_plan": serving_plan}
