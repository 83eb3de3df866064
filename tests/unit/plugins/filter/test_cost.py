"""Unit tests for plugins/filter/cost.py (cost report shaping)."""

import importlib.util
import pathlib

import pytest
from ansible.errors import AnsibleFilterError

_PATH = pathlib.Path(__file__).resolve().parents[4] / "plugins" / "filter" / "cost.py"
_spec = importlib.util.spec_from_file_location("llmops_filter_cost", _PATH)
cost = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cost)


def inst(iid, status, total, gpu, storage, now_rate, stopped=False, hours=1.0):
    return {"id": iid, "label": "llm-%d" % iid, "status": status, "total": total, "gpu_cost": gpu,
            "storage_cost": storage, "current_per_hour": now_rate, "rate_per_hour": 0.3,
            "storage_per_hour": 0.0167, "uptime_hours": hours, "storage_while_stopped": stopped}


BILLING = {
    "credit": 42.5,
    "range": {"start": 0.0, "end": 1795547450.0, "start_iso": "1970-01-01T00:00:00Z", "end_iso": "2026-11-24T19:10:50Z"},
    "instances": [
        # exact figures whose rounded cents do not add up to the rounded sum
        inst(1, "running", 0.005, 0.004, 0.001, 0.3),
        inst(2, "running", 0.005, 0.004, 0.001, 0.3),
        inst(3, "stopped", 1.234567, 1.2, 0.034567, 0.0167, stopped=True, hours=4.5),
        inst(4, "destroyed", 10.0, 9.5, 0.5, 0.0),
    ],
    "totals": {"days_of_credit": None},
}


def test_totals_are_exact_sums_rounded_once():
    r = cost.cost_report_data(BILLING, generated_at="t")
    # 0.005 + 0.005 + 1.234567 + 10 = 11.244567 -> 11.24 (summing rounded cents would give 11.25)
    assert r["totals"]["total"] == 11.24
    assert r["totals"]["gpu"] == 10.71
    assert r["totals"]["storage"] == 0.54
    assert r["totals"]["instances"] == 4 and r["totals"]["running"] == 2


def test_burn_rate_and_projections():
    r = cost.cost_report_data(BILLING)
    assert r["burn_rate"]["per_hour"] == pytest.approx(0.6167)
    assert r["burn_rate"]["per_day"] == 14.80
    assert r["burn_rate"]["per_month"] == 444.02
    assert r["burn_rate"]["days_of_credit"] == pytest.approx(42.5 / 0.6167 / 24, abs=0.05)


def test_stopped_storage_and_ordering():
    r = cost.cost_report_data(BILLING)
    assert r["stopped_storage"] == {"count": 1, "per_hour": 0.0167, "per_month": 12.02}
    assert [i["id"] for i in r["instances"]] == [4, 3, 1, 2]
    third = r["instances"][1]
    assert third["running_human"] == "4h 30m" and third["total"] == 1.23 and third["storage_while_stopped"]


def test_period_and_empty_account():
    r = cost.cost_report_data({"credit": None, "instances": [], "totals": {}})
    assert r["totals"]["total"] == 0 and r["burn_rate"]["days_of_credit"] is None
    assert r["credit"] is None and r["period"]["start"] is None
    r = cost.cost_report_data(BILLING)
    assert r["period"]["end_iso"] == "2026-11-24T19:10:50Z"


def test_rejects_other_input():
    with pytest.raises(AnsibleFilterError):
        cost.cost_report_data({"instances": None})
    with pytest.raises(AnsibleFilterError):
        cost.cost_report_data([1, 2])
