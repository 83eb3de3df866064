"""Power races found by the race campaign (tests/campaigns/races.py, scenario ``power``): another
job changes an instance's intended state while this task reads or waits for it. A state the task
reports must be the one the API is heading for (vast-cli's poller waits for intended_status and
actual_status together), never a row that is already on its way elsewhere."""
import pytest

from ansible_collections.llmops.vastai.plugins.module_utils.lifecycle import Failure
from tests.unit.plugins.module_utils.test_lifecycle import FILTERS, lifecycle, run


def rented(sim, label):
    _, res = run(sim, label=label, state="running", offer_filters=FILTERS, image="i", wait=True)
    return res["instance"]["id"]


def test_running_with_a_stop_pending_is_started_again(vastsim):
    """power_on against power_off: the stop was sent, the container still runs (it stops seconds
    later). state=running used to return at once, changed=false, 'running' - and the instance
    stopped right after."""
    iid = rented(vastsim, "lc-pending-stop")
    vastsim.force(iid, "running", hold=True)  # the stop takes its time
    life = lifecycle(vastsim, id=iid, state="running", wait=True, wait_timeout=5)
    life.client.set_state(iid, "stopped")  # another job's power_off
    res = life.run({"running": "ensure_running"})
    assert res["changed"] is True and "start instance %d" % iid in res["actions"], res["actions"]
    row = vastsim.instance(iid)
    assert row["intended_status"] == "running", row
    assert res["instance"]["intended_status"] == "running"


def test_wait_for_stopped_does_not_end_when_another_job_starts_it(vastsim):
    """power_off against power_on: our stop landed, the instance is stopped for a moment, and
    another job's start is already asked for. The stop used to be reported done on that row."""
    iid = rented(vastsim, "lc-start-during-stop")
    life = lifecycle(vastsim, id=iid, state="stopped", wait=True, wait_timeout=2)
    send = life.client.set_state

    def ours_then_rival(instance_id, state):
        out = send(instance_id, state)
        vastsim.force(iid, "stopped", hold=True)  # stopped, and it stays so for the test
        send(instance_id, "running")  # the other job's power_on
        return out
    life.client.set_state = ours_then_rival
    with pytest.raises(Failure) as e:
        life.run({"stopped": "ensure_stopped"})
    assert "intended_status" in e.value.msg and "running" in e.value.msg, e.value.msg
    assert "%d" % iid in e.value.msg


def test_wait_for_running_does_not_end_on_a_row_that_is_stopping(vastsim):
    """A stop asked for while this task waits for running: a row with actual_status running and
    intended_status stopped is not 'running'."""
    iid = rented(vastsim, "lc-stop-during-start")
    run(vastsim, id=iid, state="stopped", wait=True)
    life = lifecycle(vastsim, id=iid, state="running", wait=True, wait_timeout=2)
    send = life.client.set_state

    def ours_then_rival(instance_id, state):
        out = send(instance_id, state)
        vastsim.force(iid, "running", hold=True)
        send(instance_id, "stopped")  # the other job's power_off; held, so it keeps running
        return out
    life.client.set_state = ours_then_rival
    with pytest.raises(Failure) as e:
        life.run({"running": "ensure_running"})
    assert "intended_status" in e.value.msg and "stopped" in e.value.msg, e.value.msg


def relabelled_twin(sim, label, after):
    """A second instance labelled ``label`` that is destroyed ``after`` s later, as a run that lost
    the create race does right after listing the label again (settle_race)."""
    import threading
    twin = rented(sim, label + "-twin")
    life = lifecycle(sim, id=twin, state="present")
    life.client.set_label(twin, label)
    timer = threading.Timer(after, lambda: life.client.destroy(twin))
    timer.start()
    return twin, timer


def test_a_twin_that_its_racing_run_destroys_is_waited_out(vastsim):
    """Found by the race campaign (5 racers): a run that lists the label while two racers' creates
    both stand (before the loser destroyed its own) failed with 'label matches 2 instances'."""
    first = rented(vastsim, "lc-twin")
    twin, timer = relabelled_twin(vastsim, "lc-twin", 0.6)
    _, res = run(vastsim, label="lc-twin", state="running", offer_filters=FILTERS, image="i", wait=False)
    timer.join()
    assert res["instance"]["id"] == first and twin != first


def test_exact_count_waits_out_a_twin_replica(vastsim):
    """The same for exact_count: 'replica labels ... are used by several instances; fix them first'
    while a racing run was about to destroy its loser."""
    _, res = run(vastsim, label="lc-xtwin", state="running", exact_count=1, offer_filters=FILTERS, image="i",
                 wait=False)
    first = res["instances"][0]["id"]
    twin, timer = relabelled_twin(vastsim, "lc-xtwin-1", 0.6)
    _, res = run(vastsim, label="lc-xtwin", state="running", exact_count=1, offer_filters=FILTERS, image="i",
                 wait=False)
    timer.join()
    assert [i["id"] for i in res["instances"]] == [first]


def test_lasting_duplicates_still_fail(vastsim):
    """Duplicates nobody removes are still refused (after the short wait), naming the ids."""
    first = rented(vastsim, "lc-dup2")
    twin, timer = relabelled_twin(vastsim, "lc-dup2", 3600)
    timer.cancel()
    with pytest.raises(Failure) as e:
        run(vastsim, label="lc-dup2", state="running", offer_filters=FILTERS, image="i", wait=False)
    assert str(first) in e.value.msg and str(twin) in e.value.msg
