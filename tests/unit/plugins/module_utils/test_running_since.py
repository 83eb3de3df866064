"""running_since: uptime_mins (undocumented) cross-checked against start_date."""
import pytest

from ansible_collections.llmops.vastai.plugins.module_utils.base import running_since

NOW = 1_800_000_000.0


@pytest.mark.parametrize("row,since,source,consistent", [
    ({"start_date": NOW - 7200, "uptime_mins": 30}, NOW - 1800, "uptime_mins", True),     # restarted: shorter
    ({"start_date": NOW - 600, "uptime_mins": 500}, NOW - 600, "start_date", False),       # cannot predate the rental
    ({"start_date": NOW - 600, "uptime_mins": None}, NOW - 600, "start_date", False),
    ({"start_date": NOW - 600, "uptime_mins": -3}, NOW - 600, "start_date", False),
    ({"start_date": NOW - 600, "uptime_mins": "x"}, NOW - 600, "start_date", False),
    ({"start_date": NOW - 600, "uptime_mins": float("nan")}, NOW - 600, "start_date", False),
    ({"uptime_mins": 10}, NOW - 600, "uptime_mins", False),
])
def test_running_since(row, since, source, consistent):
    out = running_since(row, NOW)
    assert out == {"since": pytest.approx(since), "source": source, "consistent": consistent}


def test_nothing_known():
    assert running_since({}, NOW) is None and running_since(None, NOW) is None
