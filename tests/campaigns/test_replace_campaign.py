"""Replacement fault campaign (issue 16): preempt / gpu_taken / offline events and
lost_response / 500 faults at every step of keep_serving's and power_on's replacement flows
(tests/campaigns/replace_faults.py), on a `--hosts docker` simulator in container mode.

`make faults`: every step of both recordings (marker `faults`; REPLACE_STRIDE=N injects at every
N-th step only); `make test`: three injections on keep_serving (about a minute).
"""
import io
import os

import pytest

images = pytest.importorskip("tests.helpers.images")
if not images.have_docker_cli():
    pytest.skip("docker CLI missing (make host-deps)", allow_module_level=True)

from tests.campaigns import replace_faults  # noqa: E402
from tests.campaigns.common import tee  # noqa: E402

pytestmark = [pytest.mark.timeout(4 * 3600)]


def check(summary, text):
    problems = "\n".join(l for l in text.splitlines() if l.startswith(("keep_serving", "power_on", "    ! ")))
    tot = summary["total"]
    assert tot["orphans"] == 0, problems
    assert tot["doubles"] == 0, problems
    assert tot["unnamed"] == 0, problems
    # a failed replacement also names the old instance it left as it was (id, state, $/h)
    assert tot["unnamed_old"] == 0, problems


def test_replace_fault_sample(capsys):
    buf = io.StringIO()
    summary = replace_faults.Campaign(("keep_serving",), plan=replace_faults.SAMPLE_PLAN, out=buf,
                                      verbose=True).go()
    with capsys.disabled():
        print(buf.getvalue())
    assert summary["total"]["injections"] == len(replace_faults.SAMPLE_PLAN)
    assert summary["total"]["fired"] == len(replace_faults.SAMPLE_PLAN), "an injection never hit its request"
    check(summary, buf.getvalue())


@pytest.mark.faults
@pytest.mark.slow
def test_replace_fault_campaign(capsys):
    buf, out = tee(capsys)
    stride = int(os.environ.get("REPLACE_STRIDE", "1"))
    summary = replace_faults.Campaign(stride=stride, out=out).go()
    assert summary["total"]["injections"] >= 20, summary
    check(summary, buf.getvalue())
