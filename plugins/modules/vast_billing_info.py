#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmops.vastai contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: vast_billing_info
short_description: Credit, charges, invoices and per-instance cost of a vast.ai account
version_added: 0.1.0
description:
  - Reads the account credit, the charges and invoices in a date range and the current
    instances, and computes per-instance cost (rate, uptime, total, projected daily and
    monthly cost, storage billed while stopped) with totals.
  - vast.ai bills GPU time only while an instance runs, but storage from creation until it
    is destroyed, stopped included.
author:
  - llmops.vastai maintainers (@llmops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - llmops.vastai.vast
  - llmops.vastai.vast.info
options:
  start:
    description:
      - Start of the range, as V(YYYY-MM-DD) (UTC), an ISO 8601 date-time, epoch seconds, or
        a relative V(-7d) / V(-12h) counted back from O(end).
    type: str
    default: "-7d"
  end:
    description: End of the range in the same forms as O(start) (relative to now); V(now) by default.
    type: str
    default: now
  label_prefix:
    description: Only instances (and their charges) whose label starts with this text.
    type: str
  include_invoices:
    description: Also read invoices (payments and credits) of the range.
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Cost report for the last 7 days
  llmops.vastai.vast_billing_info:
  register: bill

- name: Show it
  ansible.builtin.debug:
    msg: >-
      credit ${{ bill.credit }}, spent ${{ bill.totals.charges }} in the range,
      burning ${{ bill.totals.current_dph }}/h (~${{ bill.totals.projected_monthly }}/month)

- name: One month of one deployment
  llmops.vastai.vast_billing_info:
    start: "2026-10-01"
    end: "2026-11-01"
    label_prefix: llm-
"""

RETURN = r"""
credit:
  description: Spendable account credit in dollars.
  returned: always
  type: float
balance:
  description: The account C(balance) field as the API reports it.
  returned: always
  type: float
range:
  description: The range read, as epoch seconds and ISO text (C(start), C(end), C(start_iso), C(end_iso)).
  returned: always
  type: dict
instances:
  description:
    - Per-instance cost, one entry for every current instance and every instance charged in
      the range (destroyed ones included), sorted by id.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: Instance id.
      type: int
    label:
      description: Label.
      type: str
    status:
      description: Current C(actual_status), or V(destroyed) when it is gone.
      type: str
    rate_per_hour:
      description: C(dph_total) in $/h while running (GPU plus storage).
      type: float
    storage_per_hour:
      description: Storage cost in $/h, billed while the instance exists, stopped included.
      type: float
    uptime_hours:
      description: GPU-billed (running) hours in the range.
      type: float
    total:
      description: Dollars charged in the range (GPU, storage and bandwidth).
      type: float
    gpu_cost:
      description: GPU part of RV(instances[].total) in dollars.
      type: float
    storage_cost:
      description: Storage part of RV(instances[].total) in dollars.
      type: float
    current_per_hour:
      description: What the instance costs per hour now (rate when running, storage only when stopped, 0 when destroyed).
      type: float
    projected_daily:
      description: RV(instances[].current_per_hour) times 24.
      type: float
    projected_monthly:
      description: RV(instances[].current_per_hour) times 720 (30 days).
      type: float
    storage_while_stopped:
      description: True when the instance is stopped and only its storage is being billed.
      type: bool
totals:
  description: Sums over RV(instances) plus the charges and invoices of the range.
  returned: always
  type: dict
  contains:
    instances:
      description: Number of entries in RV(instances).
      type: int
    running:
      description: Instances running now.
      type: int
    charges:
      description: Dollars charged in the range.
      type: float
    gpu:
      description: GPU dollars in the range.
      type: float
    storage:
      description: Storage dollars in the range.
      type: float
    current_dph:
      description: What the account costs per hour now.
      type: float
    stopped_storage_dph:
      description: Per hour spent on storage of stopped instances.
      type: float
    projected_daily:
      description: RV(totals.current_dph) times 24.
      type: float
    projected_monthly:
      description: RV(totals.current_dph) times 720.
      type: float
    invoices:
      description: Sum of invoice amounts in the range (credits are negative).
      type: float
    days_of_credit:
      description: How many days the credit lasts at the current rate (null when nothing is billed).
      type: float
charges:
  description: Charge rows of the range as the API returns them (C(source) is C(instance-<id>), amounts in $).
  returned: always
  type: list
  elements: dict
invoices:
  description: Invoice rows of the range (payments, credits).
  returned: when O(include_invoices=true)
  type: list
  elements: dict
sessions:
  description: Billing sessions, one per charge row of an instance (instance_id, label, start, end, hours running, amount).
  returned: always
  type: list
  elements: dict
"""

import calendar
import math
import re
import time
from datetime import datetime

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmops.vastai.plugins.module_utils.base import VastModule, vast_argument_spec
from ansible_collections.llmops.vastai.plugins.module_utils.client import account_credit, parse_charge
from ansible_collections.llmops.vastai.plugins.module_utils.pricing import (
    HOURS_PER_MONTH,
    cost_totals,
    num,
    storage_rate,
)

RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)([smhdw])$")
UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
LATEST = 253402300799.0  # 9999-12-31T23:59:59Z, the last time time.gmtime() can print


def parse_time(text, anchor):
    """Epoch seconds for ``text`` (see the start/end docs); ValueError when unreadable."""
    text = str(text).strip()
    if text == "now":
        return anchor
    m = RELATIVE.match(text)
    if m:
        return anchor - float(m.group(1)) * UNIT[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    for fmt in ("%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M"):
        try:
            return float(calendar.timegm(datetime.strptime(text, fmt).timetuple()))
        except ValueError:
            continue
    raise ValueError(text)


def iso(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class VastBillingInfo(VastModule):
    def validate(self):
        now = time.time()
        errors = []
        try:
            self.end = parse_time(self.params["end"], now)
        except ValueError:
            errors.append("end %r is not a date (YYYY-MM-DD), date-time, epoch or 'now'" % self.params["end"])
            return errors
        try:
            self.start = parse_time(self.params["start"], self.end)
        except ValueError:
            errors.append("start %r is not a date (YYYY-MM-DD), date-time, epoch or relative (-7d)" % self.params["start"])
            return errors
        for name, value in (("end", self.end), ("start", self.start)):
            # "nan", "inf" and "1e400" parse as floats; NaN would pass every comparison below
            if not math.isfinite(value) or not 0 <= value <= LATEST:
                errors.append("%s %r is not a time between 1970 and 9999" % (name, self.params[name]))
        if errors:
            return errors
        if self.start >= self.end:
            errors.append("start (%s) must be before end (%s)" % (iso(self.start), iso(self.end)))
        return errors

    def run(self):
        p = self.params
        user = self.client.current_user()
        rows = self.client.list_instances()
        charges = self.client.charges(self.start, self.end)
        invoices = self.client.invoices(self.start, self.end) if p["include_invoices"] else []
        prefix = p["label_prefix"]

        entries = {}
        for r in rows:
            if prefix and not (r.get("label") or "").startswith(prefix):
                continue
            entries[int(r["id"])] = self.entry_from_row(r)
        kept_charges = []
        sessions = []
        for c in charges:
            charge = parse_charge(c)
            iid, label = charge["instance_id"], charge["label"]
            if prefix and iid is not None and iid not in entries and not (label or "").startswith(prefix):
                continue
            if prefix and iid is None:
                continue
            kept_charges.append(c)
            if iid is None:
                continue
            e = entries.get(iid)
            if e is None:
                e = entries[iid] = self.entry_gone(iid, label)
            e["gpu_cost"] += charge["gpu"]
            e["storage_cost"] += charge["storage"]
            e["uptime_hours"] += charge["gpu_hours"]
            e["total"] += charge["amount"]
            sessions.append(dict(instance_id=iid, label=label or e.get("label"), start=charge["start"],
                                 end=charge["end"], hours_running=round(charge["gpu_hours"], 6),
                                 amount=round(charge["amount"], 6)))
        instances = []
        for iid in sorted(entries):
            e = entries[iid]
            for k in ("gpu_cost", "storage_cost", "total", "uptime_hours"):
                e[k] = round(e[k], 6)
            instances.append(e)
        credit = account_credit(user) or 0.0
        sums = cost_totals(instances)
        current = sums["per_hour"]
        totals = dict(
            instances=len(instances),
            running=sum(1 for e in instances if e["status"] == "running"),
            charges=round(sum(num(c.get("amount")) for c in kept_charges), 6),
            gpu=sums["gpu"],
            storage=sums["storage"],
            current_dph=current,
            stopped_storage_dph=sums["stopped_per_hour"],
            projected_daily=round(current * 24, 4),
            projected_monthly=round(current * HOURS_PER_MONTH, 2),
            invoices=round(sum(num(i.get("amount")) for i in invoices), 6),
            days_of_credit=round(credit / (current * 24), 2) if current > 0 else None,
        )
        self.result.update(
            credit=credit,
            balance=num(user.get("balance")),  # as the API reports it; credit is what can be spent
            range=dict(start=self.start, end=self.end, start_iso=iso(self.start), end_iso=iso(self.end)),
            instances=instances,
            totals=totals,
            charges=kept_charges,
            sessions=sessions,
        )
        if p["include_invoices"]:
            self.result["invoices"] = invoices

    @staticmethod
    def entry_from_row(r):
        status = r.get("actual_status") or "provisioning"
        rate = num(r.get("dph_total"))
        storage = storage_rate(r)
        running = status == "running"
        stopped = status in ("stopped", "exited") or r.get("intended_status") == "stopped" and not running
        current = rate if running else storage
        return dict(
            id=int(r["id"]), label=r.get("label"), status=status, gpu_name=r.get("gpu_name"),
            num_gpus=r.get("num_gpus"), rate_per_hour=round(rate, 6), storage_per_hour=round(storage, 6),
            uptime_hours=0.0, total=0.0, gpu_cost=0.0, storage_cost=0.0,
            current_per_hour=round(current, 6), projected_daily=round(current * 24, 4),
            projected_monthly=round(current * HOURS_PER_MONTH, 2), storage_while_stopped=bool(stopped),
        )

    @staticmethod
    def entry_gone(iid, label):
        return dict(id=iid, label=label, status="destroyed", gpu_name=None, num_gpus=None, rate_per_hour=0.0,
                    storage_per_hour=0.0, uptime_hours=0.0, total=0.0, gpu_cost=0.0, storage_cost=0.0,
                    current_per_hour=0.0, projected_daily=0.0, projected_monthly=0.0, storage_while_stopped=False)


def main():
    argument_spec = vast_argument_spec()
    argument_spec.update(
        start=dict(type="str", default="-7d"),
        end=dict(type="str", default="now"),
        label_prefix=dict(type="str"),
        include_invoices=dict(type="bool", default=True),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    VastBillingInfo(module).execute()


if __name__ == "__main__":
    main()
