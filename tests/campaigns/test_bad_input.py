"""Bad-input campaign (issue 6, part 4; issue 13): invalid argument sets generated with
hypothesis from each module's argument spec, plus hostile input the specs never generate
(NaN/infinity, huge and negative numbers, odd strings in every string option, API keys with
whitespace, reserved labels), run as one playbook per module against the simulator. Every case
that must be refused fails with a clear message naming the offending option, before any API
call (0 mutations); a case that may pass (checked in check mode for vast_instance) ends
cleanly; no output shows any form of the API key; instances labelled like inventory groups are
all listed by ansible-inventory.

`make faults`: >= 100 spec cases and every hostile case per module (marker `faults`);
`make test`: a short seeded sample of each. Seed: CAMPAIGN_SEED (default 6), printed with the summary.
"""
import io
import os

import pytest

from tests.campaigns import badinput
from tests.campaigns.common import MODULES

SEED = int(os.environ.get("CAMPAIGN_SEED", "6"))
SAMPLE = int(os.environ.get("CAMPAIGN_SAMPLE_CASES", "8"))
FULL = max(100, int(os.environ.get("CAMPAIGN_BAD_INPUT_CASES", "100")))
HOSTILE_SAMPLE = int(os.environ.get("CAMPAIGN_HOSTILE_SAMPLE_CASES", "10"))
# every hostile case by default; CAMPAIGN_HOSTILE_CASES=N caps them per module (a reduced run)
HOSTILE_FULL = int(os.environ["CAMPAIGN_HOSTILE_CASES"]) if os.environ.get("CAMPAIGN_HOSTILE_CASES") else None


def run(module, count, capsys, hostile=HOSTILE_SAMPLE):
    buf = io.StringIO()
    verdicts, summary = badinput.campaign(count, SEED, (module,), out=buf, hostile_cases=hostile)
    with capsys.disabled():
        print(buf.getvalue())
    s = summary["modules"][module]
    assert s["cases"] >= count
    bad = [v for v in verdicts if v["problems"]]
    assert not bad, "%d of %d invalid argument sets were not cleanly rejected (seed %d):\n%s" % (
        len(bad), len(verdicts), SEED, "\n".join("%s %s: %s" % (v["kind"], v["args"], "; ".join(v["problems"]))
                                               for v in bad[:25]))
    assert s["rejected"] == s["must_refuse"] and s["must_refuse"] > 0
    assert s["mutations"] == 0 and s["refused_mutations"] == 0 and s["refused_calls"] == 0
    assert summary["leaks"] == 0
    assert summary["instances_created"] == 0, "the simulator has instances after a bad-input campaign"
    if module == "vast_instance":
        r = summary["reserved_labels"]
        assert r and not r["problems"] and r["hosts"] == r["instances"] == r["labels"] + 1, r
        assert summary["instances_live_at_end"] == 0


@pytest.mark.parametrize("module", MODULES)
def test_bad_input_sample(module, capsys):
    run(module, SAMPLE, capsys)


@pytest.mark.faults
@pytest.mark.slow
@pytest.mark.parametrize("module", MODULES)
def test_bad_input_campaign(module, capsys):
    run(module, FULL, capsys, hostile=HOSTILE_FULL)


def test_hostile_families_cover_every_option():
    """Every float option gets NaN/infinity, every numeric option huge and negative values,
    every free-text option odd strings; the documented bounds decide what must be refused."""
    spec = badinput.module_spec("vast_instance")["argument_spec"]
    fams = badinput.hostile_families("vast_instance", "SECRET-k-0123456789")
    floats = {".".join(p) for p, o in badinput._numeric_options(spec) if o["type"] == "float"}
    seen = {k for c in fams["non-finite"] for k in c["expect"]}
    assert floats <= seen, floats - seen
    assert all(c["must_refuse"] for c in fams["non-finite"])
    huge = {c["expect"][0] for c in fams["huge/negative"]}
    assert {"disk_gb", "exact_count", "api_timeout", "min_num_gpus", "limit"} <= huge
    disk = [c for c in fams["huge/negative"] if c["expect"] == ["disk_gb"]]
    assert all(c["must_refuse"] for c in disk if c["args"]["disk_gb"] > 16384 or c["args"]["disk_gb"] < 8)
    odd = {c["expect"][0] for c in fams["odd string"]}
    assert {"image", "label", "ports", "ssh_keys", "countries", "gpu_names", "env", "onstart"} <= odd
    assert len(fams["reserved label"]) == len(badinput.RESERVED_LABELS)


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
