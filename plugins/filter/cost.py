# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""cost_report_data: shape a vast_billing_info result into the report that
playbooks/cost_report.yml writes as Markdown and JSON (pure, unit-tested).

Spend figures are the API's (vast_billing_info), never recomputed from rates, so the report's
totals are the account's ledger; this only rounds to cents for display and adds a few sums.
"""

from __future__ import annotations

import datetime
from decimal import Decimal, ROUND_HALF_UP

from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.vastai.plugins.module_utils.pricing import HOURS_PER_MONTH, cost_totals


def _dec(v):
    return Decimal(str(v if v is not None else 0))


def _cents(v):
    return float(_dec(v).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def _rate(v):
    return float(_dec(v).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP))


def _human(hours):
    seconds = int(round(float(hours or 0) * 3600))
    h, rest = divmod(seconds, 3600)
    return "%dh %02dm" % (h, rest // 60)


def _iso(epoch):
    if epoch is None:
        return None
    try:
        return datetime.datetime.fromtimestamp(float(epoch), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (TypeError, ValueError, OverflowError):
        return str(epoch)


def cost_report_data(billing, generated_at=None):
    """Build the report dict from a registered vast_billing_info result."""
    if not isinstance(billing, dict) or not isinstance(billing.get("instances"), list):
        raise AnsibleFilterError("cost_report_data expects the registered result of llmops.vastai.vast_billing_info")
    instances = []
    sums = cost_totals(billing["instances"])
    burn, stopped_rate = _dec(sums["per_hour"]), _dec(sums["stopped_per_hour"])
    for b in billing["instances"]:
        i_total, i_gpu, i_storage = _dec(b.get("total")), _dec(b.get("gpu_cost")), _dec(b.get("storage_cost"))
        now_rate = _dec(b.get("current_per_hour"))
        instances.append({
            "id": b.get("id"), "label": b.get("label"), "status": b.get("status") or "unknown",
            "rate_per_hour": _rate(b.get("rate_per_hour")), "current_per_hour": _rate(now_rate),
            "storage_per_hour": _rate(b.get("storage_per_hour")),
            "running_hours": round(float(b.get("uptime_hours") or 0), 4), "running_human": _human(b.get("uptime_hours")),
            "gpu": _cents(i_gpu), "storage": _cents(i_storage), "total": _cents(i_total),
            "projected_daily": _cents(now_rate * 24), "projected_monthly": _cents(now_rate * HOURS_PER_MONTH),
            "storage_while_stopped": bool(b.get("storage_while_stopped")),
        })
    instances.sort(key=lambda i: (-i["total"], str(i["id"])))
    totals_in = billing.get("totals") or {}
    credit = billing.get("credit")
    days = totals_in.get("days_of_credit")
    if days is None and credit is not None and burn > 0:
        days = float(_dec(credit) / burn / 24)
    rng = billing.get("range") or {}
    return {
        "generated_at": generated_at,
        "period": {"start": rng.get("start"), "end": rng.get("end"),
                   "start_iso": rng.get("start_iso") or _iso(rng.get("start")),
                   "end_iso": rng.get("end_iso") or _iso(rng.get("end"))},
        "credit": float(credit) if credit is not None else None,
        # sums of the exact per-instance figures, rounded once (not sums of rounded cents)
        "totals": {"total": _cents(sums["total"]), "gpu": _cents(sums["gpu"]), "storage": _cents(sums["storage"]),
                   "instances": len(instances), "running": sum(1 for i in instances if i["status"] == "running")},
        "burn_rate": {"per_hour": _rate(burn), "per_day": _cents(burn * 24),
                      "per_month": _cents(burn * HOURS_PER_MONTH),
                      "days_of_credit": round(float(days), 1) if days is not None else None},
        "stopped_storage": {"count": sums["stopped_count"], "per_hour": _rate(stopped_rate),
                            "per_month": _cents(stopped_rate * HOURS_PER_MONTH)},
        "instances": instances,
    }


class FilterModule(object):
    def filters(self):
        return {"cost_report_data": cost_report_data}
