"""Issue 13 item 8: labels cannot break the inventory. Instances labelled like Ansible's
implicit groups, localhost, this source's own groups, a default group, a composed group and a
keyed group are each listed (as vast-<id>) by real `ansible-inventory` runs; the rest keep their
label. Then the real idle_shutdown.yml (--check) runs over an inventory holding an instance
labelled `all` and one labelled `ungrouped`: every instance is considered, none is hidden.
"""
import os

import pytest

from ansible_collections.llmops.vastai.plugins.module_utils.client import VastClient
from tests.helpers.ansible import REPO, run_playbook
from tests.helpers.vastsim import start_vastsim

from .conftest import SECRET

# label -> does it keep its name? (with the configuration in CONFIG)
LABELS = {
    "all": False,
    "ungrouped": False,
    "localhost": False,
    "127.0.0.1": False,
    "vast": False,                  # this source's top group
    "vast_status_running": False,   # a default group
    "cheap": False,                 # a composed group (groups:)
    "gpus_1": False,                # a keyed group (keyed_groups: prefix gpus, key num_gpus)
    "llm-ok-1": True,
    "vast_label_llm": False,        # the default group made from llm-ok-1's label prefix
    "allx": True,
}
CONFIG = {
    "keyed_groups": [{"key": "vast_num_gpus | string", "prefix": "gpus"}],
    "groups": {"cheap": "vast_cost_per_hour is not none"},
}


@pytest.fixture(scope="module")
def sim():
    with start_vastsim(api_key=SECRET) as s:
        s.set_credit(10 ** 6)
        client = VastClient(s.api_key, api_url=s.url)
        offers = client.search_offers({"rentable": {"eq": True}, "rented": {"eq": False}, "num_gpus": {"eq": 1},
                                       "order": [["dph_total", "asc"]], "type": "on-demand", "limit": 64})
        s.ids = {}
        for label, offer in zip(LABELS, offers):
            new = client.create_instance(offer["id"], {"image": "vastai/base-image:latest", "disk": 16,
                                                       "runtype": "ssh_proxy", "label": label})
            s.ids[label] = int(new["new_contract"])
        s.advance(3600)
        yield s


def test_reserved_and_group_labels_fall_back_to_vast_id(sim, inventory):
    run = inventory(sim, CONFIG, "-v")
    assert run.rc == 0, run.err
    expected = {(label if keep else "vast-%d" % sim.ids[label]) for label, keep in LABELS.items()}
    assert run.hosts == expected
    # every instance is a host with its own variables, in the groups it belongs to
    by_id = {run.hostvars[h]["vast_id"]: h for h in run.hosts}
    assert sorted(by_id) == sorted(sim.ids.values())
    assert run.group("vast") == expected
    assert run.group("vast_status_running") == expected
    assert "Found both group and host" not in run.err + run.verbose
    # no instance's variables were set on a group (a host named "all" used to do that)
    assert "vars" not in run.data.get("all", {}) and "vars" not in run.data.get("vast", {})
    assert "localhost" not in run.hosts and "127.0.0.1" not in run.hosts
    assert "is labelled 'all'" in run.verbose + run.err


def test_graph_lists_every_instance(sim, inventory):
    run = inventory(sim, {}, graph=True)
    assert run.rc == 0, run.err
    for label, iid in sim.ids.items():
        assert ("vast-%d" % iid) in run.out or ("|--%s\n" % label) in run.out, label


def test_idle_shutdown_over_an_inventory_with_label_all(sim, tmp_path):
    """One instance labelled `all` used to make idle_shutdown.yml fail for the whole account,
    and `ungrouped` hid an instance from it; now the play considers every running instance."""
    inv = tmp_path / "labels.vast.yml"
    inv.write_text("plugin: llmops.vastai.vast\nstatuses: [running]\n")
    env = dict(sim.env, ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="1",
               VAST_AUDIT_LOG=str(tmp_path / "audit.jsonl"), HOME=str(tmp_path))
    res = run_playbook(os.path.join(REPO, "playbooks", "idle_shutdown.yml"), inventory=str(inv), env=env,
                       check=True, extra_vars={"idle_shutdown_probe_timeout": 2, "idle_shutdown_probe_delay": 1})
    assert res.rc == 0, res.summary()
    reports = [t for t in res.tasks if t.name == "Report"]
    reported_ids = sorted(int(t.result["msg"].split("(id ")[1].split(")")[0]) for t in reports)
    assert reported_ids == sorted(sim.ids.values()), [t.result["msg"] for t in reports]
    assert not any(t.host in ("all", "ungrouped", "localhost") for t in reports)
    # the controller's own plays ran on the controller, not over SSH on an instance named localhost
    assert all(t.host == "localhost" for t in res.tasks if t.play.startswith("Read the API"))
