#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmops.vastai contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: vast_instance_info
short_description: List vast.ai instances with statistics
version_added: 0.1.0
description:
  - Lists the account's instances, optionally narrowed by id, label, label prefix, status or
    GPU model, and summarises them (counts by status, GPU distribution, $/h).
  - Id, label and status filters are applied by the API; the label prefix and GPU models on the client.
author:
  - llmops.vastai maintainers (@llmops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - llmops.vastai.vast
  - llmops.vastai.vast.info
options:
  id:
    description: Only the instance with this id, a positive integer (empty result when it does not exist).
    type: int
  label:
    description: Only instances with exactly this label.
    type: str
  label_prefix:
    description: Only instances whose label starts with this text.
    type: str
  statuses:
    description: Only instances whose C(actual_status) is one of these (for example V(running), V(stopped), V(loading)).
    type: list
    elements: str
  gpu_names:
    description: Only instances on these GPU models (any spelling, as in M(llmops.vastai.vast_offer_info)); names must not be blank.
    type: list
    elements: str
  connect_with:
    description: Which SSH endpoint C(ssh) describes for each instance; V(auto) prefers direct.
    type: str
    default: auto
    choices: [auto, direct, proxy]
  parallel:
    description: Fetch list pages with this many concurrent requests (faster for large accounts; results are identical).
    type: int
    default: 1
"""

EXAMPLES = r"""
- name: Everything on the account
  llmops.vastai.vast_instance_info:
  register: all_instances

- name: Running instances of one deployment
  llmops.vastai.vast_instance_info:
    label_prefix: llm-
    statuses: [running]
  register: running

- name: Hourly burn rate
  ansible.builtin.debug:
    msg: "{{ running.statistics.count }} running, ${{ running.statistics.total_dph }}/h"
"""

RETURN = r"""
instances:
  description:
    - Matching instances sorted by id, as the API shows them without secrets (C(extra_env)
      lists only variable names), plus C(ssh) and C(ports). Empty list when none match.
  returned: always
  type: list
  elements: dict
  sample:
    - id: 8123456
      label: llm-budget
      actual_status: running
      gpu_name: RTX 4090
      num_gpus: 1
      dph_total: 0.412
      ssh: {host: 203.0.113.7, port: 40022, user: root, kind: direct}
      ports: {"22/tcp": 40022}
api_now:
  description:
    - The API's clock (epoch seconds) as of this answer, from the instances' C(start_date) +
      C(duration); null when no matching instance carries them. Ages computed against it do not
      depend on the controller's clock.
  returned: always
  type: float
  sample: 1767225600.0
statistics:
  description: Summary of the matching instances.
  returned: always
  type: dict
  contains:
    count:
      description: Number of instances.
      type: int
    by_status:
      description: Instances per C(actual_status) (V(provisioning) when the API has none yet).
      type: dict
    gpus:
      description: Per GPU model, C({instances, gpus}) counts.
      type: dict
    total_gpus:
      description: GPUs over all instances.
      type: int
    total_dph:
      description: Sum of C(dph_total) of all listed instances in $/h (what they cost while running).
      type: float
    running_dph:
      description: Sum of C(dph_total) of the running instances in $/h.
      type: float
    average_dph:
      description: Mean C(dph_total) in $/h (0 when there are none).
      type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmops.vastai.plugins.module_utils.base import VastModule, represent_instance, vast_argument_spec
from ansible_collections.llmops.vastai.plugins.module_utils.client import api_now
from ansible_collections.llmops.vastai.plugins.module_utils.query import normalize_gpu_name


def statistics(rows):
    by_status = {}
    gpus = {}
    total = running = 0.0
    total_gpus = 0
    for r in rows:
        status = r.get("actual_status") or "provisioning"
        by_status[status] = by_status.get(status, 0) + 1
        name = r.get("gpu_name") or "unknown"
        n = int(r.get("num_gpus") or 0)
        entry = gpus.setdefault(name, {"instances": 0, "gpus": 0})
        entry["instances"] += 1
        entry["gpus"] += n
        total_gpus += n
        dph = float(r.get("dph_total") or 0)
        total += dph
        if r.get("actual_status") == "running":
            running += dph
    return dict(
        count=len(rows),
        by_status=by_status,
        gpus=gpus,
        total_gpus=total_gpus,
        total_dph=round(total, 6),
        running_dph=round(running, 6),
        average_dph=round(total / len(rows), 6) if rows else 0.0,
    )


class VastInstanceInfo(VastModule):
    def validate(self):
        errors = []
        if self.params["parallel"] < 1 or self.params["parallel"] > 32:
            errors.append("parallel must be between 1 and 32")
        if self.params["statuses"] is not None and not self.params["statuses"]:
            errors.append("statuses must not be an empty list")
        if self.params["id"] is not None and self.params["id"] <= 0:
            errors.append("id must be a positive instance id, not %s" % self.params["id"])
        names = self.params["gpu_names"]
        if names is not None and not all(n is not None and str(n).strip() for n in names):
            errors.append("gpu_names must not contain empty names")
        return errors

    def run(self):
        p = self.params
        if p["id"] is not None:
            row = self.client.get_instance(p["id"])
            rows = [row] if row else []
            rows = [r for r in rows if self.matches(r)]
        else:
            filters = {}
            if p["label"] is not None:
                filters["label"] = {"eq": p["label"]}
            if p["statuses"]:
                filters["actual_status"] = {"in": list(p["statuses"])}
            # gpu_names is matched on the client: how the API compares GPU spellings is not
            # confirmed, and a wrong server-side match would silently drop instances.
            rows = self.client.list_instances(filters, parallel=p["parallel"])
            rows = [r for r in rows if self.matches(r)]
        rows = sorted(rows, key=lambda r: r.get("id") or 0)
        self.result["instances"] = [represent_instance(r, p["connect_with"]) for r in rows]
        self.result["statistics"] = statistics(rows)
        self.result["api_now"] = api_now(rows)

    def matches(self, r):
        p = self.params
        if p["label"] is not None and r.get("label") != p["label"]:
            return False
        if p["label_prefix"] and not (r.get("label") or "").startswith(p["label_prefix"]):
            return False
        if p["statuses"] and r.get("actual_status") not in p["statuses"]:
            return False
        if p["gpu_names"]:
            wanted = set(normalize_gpu_name(n).lower() for n in p["gpu_names"])
            if normalize_gpu_name(r.get("gpu_name") or "").lower() not in wanted:
                return False
        return True


def main():
    argument_spec = vast_argument_spec()
    argument_spec.update(
        id=dict(type="int"),
        label=dict(type="str"),
        label_prefix=dict(type="str"),
        statuses=dict(type="list", elements="str"),
        gpu_names=dict(type="list", elements="str"),
        connect_with=dict(type="str", default="auto", choices=["auto", "direct", "proxy"]),
        parallel=dict(type="int", default=1),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    VastInstanceInfo(module).execute()


if __name__ == "__main__":
    main()
