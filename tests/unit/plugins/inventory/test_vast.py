"""Pure parts of the inventory plugin: host naming, computed variables, GPU name matching."""
import json

import pytest

from ansible_collections.llmops.vastai.plugins.inventory import vast


def rows(*pairs):
    return [{"id": iid, "label": label} for iid, label in pairs]


def test_unique_labels_are_host_names():
    assert vast.host_names(rows((1, "llm-a"), (2, "llm-b"))) == {1: "llm-a", 2: "llm-b"}


def test_unlabelled_and_blank_labels_fall_back_to_id():
    assert vast.host_names(rows((7, None), (8, ""), (9, "   "))) == {7: "vast-7", 8: "vast-8", 9: "vast-9"}


def test_duplicate_labels_all_fall_back_to_id():
    # neither copy keeps the label: picking one would depend on listing order
    assert vast.host_names(rows((1, "x"), (2, "x"), (3, "y"))) == {1: "vast-1", 2: "vast-2", 3: "y"}


def test_labels_that_only_differ_after_sanitizing_are_duplicates():
    assert vast.host_names(rows((1, "my box"), (2, "my/box"), (3, "ok box"))) == {
        1: "vast-1",
        2: "vast-2",
        3: "ok_box",
    }


def test_label_mimicking_another_instances_fallback_name_is_not_used():
    names = vast.host_names(rows((5, None), (9, "vast-5"), (11, "vast-11")))
    assert names == {5: "vast-5", 9: "vast-9", 11: "vast-11"}
    assert len(set(names.values())) == 3


@pytest.mark.parametrize(
    "label,expected",
    [("a.b_c-d", "a.b_c-d"), ("héllo wörld", "h_llo_w_rld"), ("x;rm -rf", "x_rm_-rf"), (" pad ", "pad")],
)
def test_sanitize(label, expected):
    assert vast._sanitize_label(label) == expected


def test_gpu_names_compare_loosely():
    assert vast._norm_gpu("RTX_4090") == vast._norm_gpu("rtx 4090") == vast._norm_gpu("RTX-4090")
    assert vast._norm_gpu("H100 SXM") != vast._norm_gpu("H100 PCIE")


def test_computed_vars_running_instance_ages_cached_uptime():
    row = {
        "actual_status": "running",
        "dph_total": "0.4213",
        "uptime_mins": 10,
        "ports": {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": "40022"}], "8000/tcp": [{"HostPort": "40800"}]},
    }
    out = vast.computed_vars(row, fetched_at=1000.0, now=1030.0)
    assert out["cost_per_hour"] == pytest.approx(0.4213)
    assert out["uptime_seconds"] == 630
    assert out["port_map"] == {"22/tcp": 40022, "8000/tcp": 40800}
    json.dumps(out)  # hostvars must serialise


def test_computed_vars_uptime_from_start_date_without_uptime_mins():
    out = vast.computed_vars({"actual_status": "running", "start_date": 100.0}, fetched_at=0, now=160.0)
    assert out["uptime_seconds"] == 60


def test_computed_vars_stopped_and_garbage_fields():
    out = vast.computed_vars(
        {"actual_status": "stopped", "storage_total_cost": "x", "uptime_mins": 5, "ports": None}, fetched_at=0, now=10
    )
    assert out == {"status": "stopped", "cost_per_hour": None, "uptime_seconds": None, "port_map": {}}


def test_cost_per_hour_is_storage_only_when_not_holding_the_gpu():
    row = {"dph_total": 0.5, "storage_total_cost": 0.01}
    assert vast.computed_vars(dict(row, actual_status="running"), 0, 0)["cost_per_hour"] == 0.5
    assert vast.computed_vars(dict(row, actual_status="stopped"), 0, 0)["cost_per_hour"] == 0.01
