"""More instances than one 25-row page: sequential and parallel listing must agree and be complete."""
import pytest

from tests.helpers.vastsim import start_vastsim

from .conftest import SECRET

COUNT = 137  # not a multiple of 25


@pytest.fixture(scope="module")
def bulk_sim():
    with start_vastsim(api_key=SECRET, speed=1) as s:
        s.set_credit(10 ** 6)  # 167 rentals must not run the account dry during the tests
        s.ids = s.bulk(COUNT, label_prefix="bulk-", status="running")
        s.stopped = s.bulk(30, label_prefix="cold-", status="stopped")
        yield s


@pytest.mark.parametrize("parallel", [1, 8])
def test_every_page_is_read(bulk_sim, inventory, parallel):
    bulk_sim.clear_requests()
    run = inventory(bulk_sim, {"parallel_requests": parallel})
    assert run.rc == 0, run.err
    ids = sorted(hv["vast_id"] for hv in run.hostvars.values())
    assert ids == sorted(bulk_sim.ids)
    assert len(run.hosts) == COUNT
    assert run.group("vast_label_bulk") == run.hosts
    calls = [r for r in bulk_sim.requests() if r.get("endpoint") == "list"]
    pages = -(-COUNT // 25)
    if parallel == 1:
        assert len(calls) == pages
    else:
        # disjoint id ranges: a few more (partly empty) pages, never a second full listing
        assert pages <= len(calls) < 2 * pages + parallel
    print("parallel=%d: %d list requests for %d instances" % (parallel, len(calls), COUNT))


def test_all_statuses_across_pages(bulk_sim, inventory):
    run = inventory(bulk_sim, {"statuses": [], "parallel_requests": 4})
    assert run.rc == 0, run.err
    assert sorted(hv["vast_id"] for hv in run.hostvars.values()) == sorted(bulk_sim.ids + bulk_sim.stopped)
    assert len(run.group("vast_status_stopped")) == 30


def test_a_failing_page_builds_nothing(bulk_sim, inventory):
    # from the 4th listing request on, the API fails for good (500s, retried, then given up): no half-built
    # inventory, a clear error. (ansible's `auto` plugin retries the same file once, hence
    # a lasting fault.)
    bulk_sim.clear_faults()
    bulk_sim.add_faults([{"endpoint": "list", "fault": "500", "after": 3, "times": -1}])
    try:
        run = inventory(bulk_sim, {"parallel_requests": 1}, env={"ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "0"})
    finally:
        bulk_sim.clear_faults()
    assert run.rc == 0  # ansible only warns about a failed source unless told otherwise
    assert run.hostvars == {}
    assert "listing vast.ai instances at" in run.err and "HTTP 500" in run.err


def test_transient_errors_are_retried(bulk_sim, inventory):
    bulk_sim.add_faults([{"endpoint": "list", "fault": "503", "after": 2, "times": 2}])
    try:
        run = inventory(bulk_sim, {"parallel_requests": 8})
    finally:
        bulk_sim.clear_faults()
    assert run.rc == 0, run.err
    assert len(run.hosts) == COUNT


def test_rate_limited_parallel_listing_still_complete(inventory):
    # vast.ai's documented pace for the v1 list is ~1 call/s per key: concurrent pages get 429s.
    with start_vastsim(api_key=SECRET, speed=1, rate_limits=True) as sim:
        sim.set_credit(10 ** 6)
        ids = sim.bulk(80, label_prefix="rl-", status="running")
        run = inventory(sim, {"parallel_requests": 8})
        assert run.rc == 0, run.err
        assert sorted(hv["vast_id"] for hv in run.hostvars.values()) == sorted(ids)
        statuses = [r["status"] for r in sim.requests() if r.get("endpoint") == "list"]
        assert 429 in statuses  # the limit was really hit
        print("list requests: %d, of which 429: %d; fallback used: %s" % (
            len(statuses), statuses.count(429), "one page at a time" in run.err))
