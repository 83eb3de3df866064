"""VastClient against the simulator (real HTTP) on the live behaviours of docs/vast-api-notes.md."""
import json

import pytest

from ansible_collections.llmops.vastai.plugins.module_utils import client as C


@pytest.fixture(scope="module")
def sim():
    from tests.helpers.vastsim import launch
    s = launch()
    yield s
    s.stop()


@pytest.fixture
def client(sim):
    return C.VastClient(sim.api_key, api_url=sim.url, backoff=0.01)


def _rent(client, **body):
    offer = client.search_offers({"limit": 1, "type": "bid", "order": [["dph_total", "asc"]]})[0]
    body.setdefault("image", "vllm/vllm-openai:latest")
    body.setdefault("disk", 10)
    return offer, client.create_instance(offer["id"], body)


def test_destroy_of_a_gone_instance_is_done(client):
    # dstack PR #4030: no_such_instance means the instance is gone
    dummy, out = _rent(client)
    iid = out["new_contract"]
    assert client.destroy(iid)["success"] is True
    again = client.destroy(iid)
    assert again["success"] is True and again["already_gone"] is True
    assert client.destroy(1)["already_gone"] is True
    # other errors still raise
    with pytest.raises(C.VastAuthError):
        C.VastClient("wrong-key", api_url=client.api_url).destroy(iid)


def test_refused_bid_error_names_the_instance_it_created(client):
    # dstack PR #4036: an insufficient bid answers an error carrying new_contract
    offer = client.search_offers({"limit": 1, "type": "bid"})[0]
    with pytest.raises(C.VastError) as e:
        client.create_instance(offer["id"], {"image": "i", "disk": 10, "price": round(offer["min_bid"] / 2, 4)})
    iid = e.value.new_contract
    assert isinstance(iid, int) and e.value.code == "insufficient_bid"
    assert e.value.to_dict()["new_contract"] == iid
    row = client.get_instance(iid)
    assert row["intended_status"] == "stopped"
    client.destroy(iid)
    assert C.VastApiError("x", body={"error": "e"}).new_contract is None


def test_account_keys_read_every_field_form(client, sim):
    text = "ssh-ed25519 AAAAclientlive me@x"
    row = client.add_account_ssh_key(text)
    assert row["public_key"] == text and isinstance(row["id"], int)
    keys = client.account_ssh_keys()     # live rows carry the key in ssh_key (Terraform 7929bf6)
    assert [k["public_key"] for k in keys] == [text] and keys[0]["ssh_key"] == text
    for form in ({"ssh_key": text}, {"public_key": text}, {"key": text}, {"ssh_key": "", "public_key": text}):
        assert C.key_text(form) == text
    client.delete_account_ssh_key(row["id"])
    assert client.account_ssh_keys() == []


def test_team_scoped_key_error_says_vms_need_a_personal_key(client, sim):
    sim.ctl("POST", "account", {"team_scoped": True})
    try:
        for call in (client.account_ssh_keys, lambda: client.add_account_ssh_key("ssh-ed25519 AAAAx y")):
            with pytest.raises(C.VastTeamKeyError) as e:
                call()
            assert e.value.code == "team_ssh_keys_not_supported" and e.value.status == 400
            assert "personal" in str(e.value) and "VM" in str(e.value)
    finally:
        sim.ctl("POST", "account", {"team_scoped": False})


def test_list_by_label_uses_in(client, sim):
    dummy, a = _rent(client, label="lbl-a")
    dummy, b = _rent(client, label="lbl-b")
    sim.clear_requests()
    rows = client.list_by_label(["lbl-a", "lbl-b", "lbl-none"])
    assert sorted(r["label"] for r in rows) == ["lbl-a", "lbl-b"]
    sent = [r for r in sim.requests() if r["path"].rstrip("/") == "/api/v1/instances"]
    assert len(sent) == 1 and json.loads(sent[0]["query"]["select_filters"]) == {
        "label": {"in": ["lbl-a", "lbl-b", "lbl-none"]}}
    assert client.list_by_label([]) == []
    for out in (a, b):
        client.destroy(out["new_contract"])


def test_billing_windows_are_whole_seconds(client, sim):
    sim.clear_requests()
    client.charges(1700000000.7, 1700003600.2)
    client.invoices(1700000000.7, 1700003600.2)
    sent = [json.loads(r["query"]["select_filters"]) for r in sim.requests()
            if r["path"].rstrip("/") in ("/api/v0/charges", "/api/v1/invoices")]
    assert sent == [{"day": {"gte": 1700000000, "lte": 1700003601}}, {"when": {"gte": 1700000000, "lte": 1700003601}}]
