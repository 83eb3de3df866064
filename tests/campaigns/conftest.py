"""The full campaigns (marker `faults`) run only when asked for with `-m faults` (make faults);
a plain `pytest tests/campaigns` (make test) runs the short samples and skips them."""
import pytest


def pytest_collection_modifyitems(config, items):
    if "faults" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="full campaign: run with -m faults (make faults)")
    for item in items:
        if item.get_closest_marker("faults"):
            item.add_marker(skip)
