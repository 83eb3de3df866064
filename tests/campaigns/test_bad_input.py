"""Bad-input campaign (issue 6, part 4): invalid argument sets generated with hypothesis from
each module's argument spec, run as one playbook per module against the simulator. Every case
must fail with a clear message naming the offending option, without any mutating API call.

`make faults`: >= 100 cases per module (marker `faults`); `make test`: a short seeded sample.
Seed: CAMPAIGN_SEED (default 6); it is printed with the summary.
"""
import io
import os

import pytest

from tests.campaigns import badinput
from tests.campaigns.common import MODULES

SEED = int(os.environ.get("CAMPAIGN_SEED", "6"))
SAMPLE = int(os.environ.get("CAMPAIGN_SAMPLE_CASES", "8"))
FULL = max(100, int(os.environ.get("CAMPAIGN_BAD_INPUT_CASES", "100")))


def run(module, count, capsys):
    buf = io.StringIO()
    verdicts, summary = badinput.campaign(count, SEED, (module,), out=buf)
    with capsys.disabled():
        print(buf.getvalue())
    s = summary["modules"][module]
    assert s["cases"] >= count
    bad = [v for v in verdicts if v["problems"]]
    assert not bad, "%d of %d invalid argument sets were not cleanly rejected (seed %d):\n%s" % (
        len(bad), len(verdicts), SEED, "\n".join("%s %s: %s" % (v["kind"], v["args"], "; ".join(v["problems"]))
                                               for v in bad[:25]))
    assert s["rejected"] == s["cases"]
    assert s["mutations"] == 0
    assert summary["instances_created"] == 0, "the simulator has instances after a bad-input campaign"


@pytest.mark.parametrize("module", MODULES)
def test_bad_input_sample(module, capsys):
    run(module, SAMPLE, capsys)


@pytest.mark.faults
@pytest.mark.slow
@pytest.mark.parametrize("module", MODULES)
def test_bad_input_campaign(module, capsys):
    run(module, FULL, capsys)


def test_generator_is_reproducible_and_invalid_by_construction():
    """Same seed, same cases; every case breaks the module's own spec or value rules."""
    a = badinput.generate("vast_instance", 30, seed=SEED)
    b = badinput.generate("vast_instance", 30, seed=SEED)
    assert a == b
    spec = badinput.module_spec("vast_instance")["argument_spec"]
    kinds = {c["kind"] for c in a}
    assert len(kinds) >= 4, kinds
    for c in a:
        assert c["args"] != badinput.BASE["vast_instance"]
        assert c["expect"], c
        if c["kind"] == "unknown option":
            assert any(k not in spec for k in c["args"])
