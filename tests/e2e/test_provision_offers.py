"""provision.yml's offer choice against the simulator (--hosts none, container mode, no deploy):
reachable offers only, a host whose CUDA runs the profile's image, GPU RAM as users mean it."""
import os

import pytest

from tests.helpers.ansible import run_playbook

PLAYBOOKS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "playbooks")


@pytest.fixture
def sim(vastsim_factory):
    s = vastsim_factory(api_key="vk-prov-0123456789abcdef", speed=50)
    s.set_credit(1000)
    return s


def provision(sim, tmp_path, label, **extra):
    ev = {"vast_mode": "container", "provision_deploy": False, "instance_label": label, "wait_timeout": 120,
          "max_instances": 20, "min_credit": 0, "llmops_token_dir": str(tmp_path / "tokens"),
          "llmops_ssh_key_file": str(tmp_path / "ssh" / "id_ed25519")}
    ev.update(extra)
    res = run_playbook(os.path.join(PLAYBOOKS, "provision.yml"), extra_vars=ev, env=dict(sim.env))
    rows = [r for r in sim.state()["instances"] if r["label"] == label and not r.get("destroyed_at")]
    return res, rows


def test_container_mode_rents_only_reachable_offers(sim, tmp_path):
    # without direct ports an instance has no `ports` mapping: its 8000 would be unreachable.
    # Make every cheap budget offer port-less except one, so the cheapest is unreachable.
    # Another tenant takes every reachable budget offer but the dearest, so the cheapest left
    # have no direct ports.
    offers = sim.ctl("GET", "offers")["offers"]
    gpus = ("RTX 3090", "RTX 4090", "RTX A5000", "L4")
    ported = [o for o in offers if o["gpu_name"] in gpus and o["direct_port_count"] >= 1]
    keep = max((o for o in ported if o["cuda_max_good"] >= 13.0), key=lambda o: o["dph_base"])
    for o in ported:
        if o["id"] != keep["id"]:
            sim.ctl("POST", "offers/%d/take" % o["id"])
    res, rows = provision(sim, tmp_path, "reach-1", vast_profile_overrides={"max_dph": 10.0})
    assert res.rc == 0, res.summary()
    assert len(rows) == 1 and rows[0]["direct_port_count"] >= 1 and rows[0]["offer_id"] == keep["id"]
    assert "8000/tcp" in rows[0]["ports"]
    assert rows[0]["cuda_max_good"] >= 13.0                 # the profile's image is a CUDA 13 build
    assert rows[0]["image_uuid"] == "vllm/vllm-openai:v0.33.0"


def test_research_profile_can_rent_an_l40s(sim, tmp_path):
    # a 48 GB L40S reports 46068 MB (gpuhunt); min_gpu_ram_gb 48 must still match it
    res, rows = provision(sim, tmp_path, "research-1", vast_profile="research",
                          vast_profile_overrides={"gpu_names": ["L40S"], "max_dph": 5.0})
    assert res.rc == 0, res.summary()
    assert len(rows) == 1 and rows[0]["gpu_name"] == "L40S" and rows[0]["gpu_ram"] == 46068


def test_labels_that_do_not_all_fit_max_instances_rent_none(sim, tmp_path):
    # The preflight counts the whole run before the first create: with 1 active instance and
    # max_instances 2, renting three labels would stop after the first with one billing; the run
    # must refuse before any create. The module's own check (after each create) cannot do this:
    # it sees one label at a time.
    res, rows = provision(sim, tmp_path, "cap-a")
    assert res.rc == 0 and len(rows) == 1, res.summary()
    sim.clear_requests()
    res, _ = provision(sim, tmp_path, "cap-b", instance_labels=["cap-a", "cap-b", "cap-c"], max_instances=2)
    assert res.rc != 0
    assert "Budget guard: 1 active instance(s) (cap-a), 2 more wanted, max_instances is 2" in res.stdout, res.stdout[-2000:]
    assert not [e for e in sim.requests() if e.get("endpoint") == "create"], "a create was sent"
    live = sorted(r["label"] for r in sim.state()["instances"] if not r.get("destroyed_at"))
    assert live == ["cap-a"]
    # the labels that exist are adopted, not counted twice: cap-a + cap-b fit max_instances 2
    res, _ = provision(sim, tmp_path, "cap-b", instance_labels=["cap-a", "cap-b"], max_instances=2)
    assert res.rc == 0, res.summary()
    live = sorted(r["label"] for r in sim.state()["instances"] if not r.get("destroyed_at"))
    assert live == ["cap-a", "cap-b"]
