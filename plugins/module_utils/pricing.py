# -*- coding: utf-8 -*-
# Copyright: llmops.vastai contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What vast.ai bills, in $/h: the one home of price arithmetic (offers, rentals, the account)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

HOURS_PER_MONTH = 720  # vast.ai prices storage per GB and month of 30 days
STOPPED = ("stopped", "exited")


def num(value, default=0.0):
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def storage_rate(row, disk_gb=None):
    """Storage $/h of an offer (priced for ``disk_gb`` or its ``allocated_storage``) or an instance."""
    if row.get("storage_total_cost") is not None and disk_gb is None:
        return num(row["storage_total_cost"])
    size = disk_gb if disk_gb is not None else row.get("disk_space")
    return num(row.get("storage_cost")) * num(size) / HOURS_PER_MONTH


def billed_dph(offer, bid_price=None):
    """$/h a rental of ``offer`` bills while running: the bid plus storage for an interruptible
    rental (vast-cli PR #403: the bid is the price), else the on-demand ``dph_total``, which the
    search already priced with storage for the requested disk (``allocated_storage``)."""
    if bid_price is not None:
        return float(bid_price) + storage_rate(offer)
    return num(offer.get("dph_total"))


def running(row):
    return row.get("actual_status") == "running"


def gpu_billed(row):
    """The instance bills its GPUs now or is about to (asked to run and not stopped)."""
    if row.get("actual_status") == "running":
        return True
    return row.get("intended_status") == "running" and row.get("actual_status") not in STOPPED + ("offline",)


def burn_rate(row):
    """What an instance costs per hour now: GPU and storage when it runs, storage alone otherwise."""
    return num(row.get("dph_total")) if running(row) else storage_rate(row)


def account_burn(rows, leave_out=()):
    """Sum of what every instance in ``rows`` bills per hour, counting those about to run at full
    rate (a start was asked for), leaving out the ids in ``leave_out``."""
    total = 0.0
    for row in rows:
        if row.get("id") in leave_out:
            continue
        total += num(row.get("dph_total")) if gpu_billed(row) else storage_rate(row)
    return total


def cost_totals(entries):
    """Sums over per-instance cost entries (vast_billing_info's ``instances``), exact in decimal:
    ``total``, ``gpu``, ``storage`` (spend), ``per_hour`` (current burn), ``stopped_count`` and
    ``stopped_per_hour`` (storage billed by stopped instances). The one place costs are added up."""
    from decimal import Decimal

    def dec(value):
        return Decimal(str(value if value is not None else 0))
    sums = dict(total=Decimal(0), gpu=Decimal(0), storage=Decimal(0), per_hour=Decimal(0), stopped_per_hour=Decimal(0))
    stopped = 0
    for e in entries:
        sums["total"] += dec(e.get("total"))
        sums["gpu"] += dec(e.get("gpu_cost"))
        sums["storage"] += dec(e.get("storage_cost"))
        sums["per_hour"] += dec(e.get("current_per_hour"))
        if e.get("storage_while_stopped"):
            stopped += 1
            sums["stopped_per_hour"] += dec(e.get("current_per_hour"))
    out = dict((k, round(float(v), 6)) for k, v in sums.items())
    out["stopped_count"] = stopped
    return out
