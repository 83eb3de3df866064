"""Fault campaign (issue 6, part 2): randomized fault schedules from the simulator (429 storms,
5xx, resets, timeouts, lost responses, offers taken, instances stuck in loading/scheduling)
over provision / power_off / power_on / teardown / idle_shutdown (the real playbooks), each run
one ansible-playbook; after every run the
simulator's state is checked: no orphan, no double rental, failures clear and naming the
instance id, successes true.

`make faults`: >= 200 seeded random runs (marker `faults`; CAMPAIGN_SEED, CAMPAIGN_RUNS);
`make test`: a fixed five-run schedule that injects every fault kind once.
"""
import io
import os

import pytest

from tests.campaigns import faults
from tests.campaigns.common import tee

SEED = int(os.environ.get("CAMPAIGN_SEED", "6"))
RUNS = max(200, int(os.environ.get("CAMPAIGN_RUNS", "200")))


def check(summary, text, runs):
    problems = "\n".join(l for l in text.splitlines() if l.startswith(("run ", "    ! ")))
    assert summary["runs"] == runs
    assert summary["orphans"] == 0, problems
    assert summary["double_rentals"] == 0, problems
    assert summary["bad_runs"] == 0, "%d runs with defects (seed %d):\n%s" % (summary["bad_runs"], SEED, problems)


def test_fault_sample(capsys):
    buf = io.StringIO()
    summary = faults.Campaign(0, SEED, out=buf, verbose=True, plan=faults.SAMPLE_PLAN).go()
    with capsys.disabled():
        print(buf.getvalue())
    check(summary, buf.getvalue(), len(faults.SAMPLE_PLAN))
    fired = summary["faults_injected"]
    # the plan is only a test if its faults really hit the runs
    for kind in ("lost_response", "5xx", "429", "offer_taken", "stuck_loading", "stuck_scheduling"):
        assert fired.get(kind), "fault %s was never injected: %s" % (kind, fired)
    assert summary["instances_created"] >= 2


@pytest.mark.faults
@pytest.mark.slow
def test_fault_campaign(capsys):
    buf, out = tee(capsys)
    summary = faults.Campaign(RUNS, SEED, out=out).go()
    check(summary, buf.getvalue(), RUNS)
    assert summary["runs_with_faults"] >= RUNS // 2, summary
    assert summary["faults_total"] >= RUNS // 2, summary


def test_lost_create_answer_then_list_storm_leaves_no_orphan(capsys):
    """Found by the campaign (seed 6): the create happens but its answer is lost, and the
    label lookups that reconcile it hit a 429 storm longer than api_retries. The instance
    must then be adopted (reported) or destroyed — or at least named — never left billing
    unreported behind a 'rate limited' error."""
    buf = io.StringIO()
    plan = [("fc-a", "rent", [{"endpoint": "create", "fault": "lost_response"},
                              # after the preflight lists (instances, billing), the rent's own lookup and
                              # its max_instances check: the storm hits the lookups that reconcile
                              {"endpoint": "list", "fault": "429", "times": 6, "after": 4}], {})]
    summary = faults.Campaign(0, SEED, out=buf, verbose=True, plan=plan).go()
    with capsys.disabled():
        print(buf.getvalue())
    assert summary["faults_injected"].get("lost_response") == 1
    assert summary["instances_created"] == 1
    check(summary, buf.getvalue(), 1)


def test_inventory_failure_during_idle_shutdown_is_a_clear_failure(capsys):
    """Found by the campaign (seed 6, real playbooks): the dynamic inventory's listing fails
    for good during idle_shutdown. The job must fail with the plugin's own message (not only
    the ini/yaml plugins' noise after it) and change nothing."""
    buf = io.StringIO()
    plan = [("fc-a", "rent", [], {}),
            ("fc-a", "idle_shutdown", [{"endpoint": "list", "fault": "500", "times": 40}], {})]
    summary = faults.Campaign(0, SEED, out=buf, verbose=True, plan=plan).go()
    with capsys.disabled():
        print(buf.getvalue())
    check(summary, buf.getvalue(), 2)
    assert summary["clean_failures"] == 1 and summary["faults_injected"].get("5xx", 0) >= 4
    assert "listing vast.ai instances at" in buf.getvalue()
