"""Shared fixtures: simulators of the vast.ai API (tools/vastsim) on free ports."""
import pytest

from tests.helpers.vastsim import launch


@pytest.fixture
def vastsim_factory():
    """Call with launcher options (e.g. speed=100, faults="create:lost_response"); every
    simulator started this way is stopped at teardown."""
    started = []

    def factory(**options):
        sim = launch(**options)
        started.append(sim)
        return sim

    yield factory
    for sim in started:
        sim.stop()


@pytest.fixture
def vastsim(vastsim_factory):
    """A default simulator: seed 1, 400 offers, key sim-key, fast clock (helpers.TEST_SPEED)."""
    return vastsim_factory()
