"""llmops.vastai.vast through real `ansible-inventory --list/--graph` runs against the simulator.

The instances are created through the API (search + create), so the rows, their SSH fields and
their ports come from the simulator, not from the test; expectations are read back from the
simulator's own state.
"""
import json
import re
from pathlib import Path

import pytest
from ansible.release import __version__ as _CORE

from ansible_collections.llmops.vastai.plugins.module_utils.client import VastClient
from tests.helpers.net import ssh_listener
from tests.helpers.vastsim import start_vastsim

from .conftest import SECRET, make_runner

ANSIBLE_CORE = tuple(int(x) for x in _CORE.split(".")[:2])

DIRECT = "ssh_direc ssh_proxy"
PROXY = "ssh_proxy"
# label -> runtype; None = unlabelled. "dup" twice on purpose.
PLAN = [
    ("llm-direct-1", DIRECT),
    ("llm-proxy-1", PROXY),
    ("train-a", PROXY),
    ("dup", PROXY),
    ("dup", DIRECT),
    (None, PROXY),
    ("weird label!", PROXY),
    ("{{ 7 * 6 }}", PROXY),  # API data must never be templated
    ("llm-stopped", DIRECT),
]


def point_direct_at(sim, iid, port):
    """The instance's direct SSH endpoint becomes 127.0.0.1:port (its proxy stays as it is)."""
    ports = {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(port)}]}
    sim.ctl("POST", "instances/%d/net" % iid, {"public_ipaddr": "127.0.0.1", "ports": ports})


@pytest.fixture(scope="module")
def sim():
    with start_vastsim(api_key=SECRET) as s:
        s.set_credit(10 ** 6)  # the clock runs fast: never let zero balance stop the instances
        client = VastClient(s.api_key, api_url=s.url)
        offers = client.search_offers(
            {
                "rentable": {"eq": True},
                "rented": {"eq": False},
                "direct_port_count": {"gte": 1},
                "order": [["dph_total", "asc"]],
                "type": "on-demand",
                "limit": 64,
            }
        )
        # spread the instances over several GPU models so the GPU groups mean something
        by_gpu = {}
        for offer in offers:
            by_gpu.setdefault(offer["gpu_name"], []).append(offer)
        picked = []
        while len(picked) < len(PLAN):
            for gpu in sorted(by_gpu):
                if by_gpu[gpu] and len(picked) < len(PLAN):
                    picked.append(by_gpu[gpu].pop(0))
        s.ids = {}
        for (label, runtype), offer in zip(PLAN, picked):
            body = {"client_id": "me", "image": "vastai/base-image:latest", "disk": 16, "runtype": runtype,
                    "env": {"HF_TOKEN": "hf_notforhostvars"}, "onstart": "echo hi"}
            if label:
                body["label"] = label
            new = client.create_instance(offer["id"], body)
            iid = new["new_contract"] if isinstance(new, dict) else new
            s.ids.setdefault(label, []).append(int(iid))
        s.advance(3600)  # everything loads and runs
        client.set_state(s.ids["llm-stopped"][0], "stopped")
        s.advance(600)
        # the running direct instances answer SSH on their direct port, as a healthy host does
        s.sshd = ssh_listener()
        for label in ("llm-direct-1", "dup"):
            for iid in s.ids[label]:
                if one_by_id(s, iid).get("ports"):
                    point_direct_at(s, iid, s.sshd.getsockname()[1])
        yield s
        s.sshd.close()


def one_by_id(sim, iid):
    return [r for r in sim.state()["instances"] if r["id"] == iid][0]


@pytest.fixture(scope="module")
def default_run(sim, tmp_path_factory, collections_path):
    """One `ansible-inventory --list` with the default options, shared by the read-only checks."""
    run = make_runner(tmp_path_factory.mktemp("default-run"), collections_path)(sim, {})
    assert run.rc == 0, run.err
    return run


def rows(sim):
    return {r["id"]: r for r in sim.state()["instances"] if not r.get("destroyed_at")}


def one(sim, label):
    (iid,) = sim.ids[label]
    return rows(sim)[iid]


def list_calls(sim):
    return [r for r in sim.requests() if r.get("endpoint") == "list"]


def test_hosts_named_by_label_with_id_fallback(sim, default_run):
    run = default_run
    assert run.rc == 0, run.err
    running = {i for i, r in rows(sim).items() if r["actual_status"] == "running"}
    assert {hv["vast_id"] for hv in run.hostvars.values()} == running
    dup = sim.ids["dup"]
    expected = {"llm-direct-1", "llm-proxy-1", "train-a", "weird_label_", "___7___6___"}
    expected |= {"vast-%d" % i for i in dup + sim.ids[None]}
    assert run.hosts == expected
    assert "llm-stopped" not in run.hosts  # default statuses: [running]
    for name, hv in run.hostvars.items():
        if name.startswith("vast-"):
            assert name == "vast-%d" % hv["vast_id"]


def test_default_groups(sim, default_run):
    run = default_run
    assert run.rc == 0, run.err
    assert run.group("vast") == run.hosts
    assert run.group("vast_status_running") == run.hosts
    by_gpu = {}
    for name, hv in run.hostvars.items():
        by_gpu.setdefault(re.sub(r"[^a-z0-9_]", "_", hv["vast_gpu_name"].lower().replace(" ", "_")), set()).add(name)
    assert len(by_gpu) > 1
    for gpu, names in by_gpu.items():
        assert run.group("vast_gpu_" + gpu) == names
    assert run.group("vast_label_llm") == {"llm-direct-1", "llm-proxy-1"}
    assert run.group("vast_label_train") == {"train-a"}


def test_hostvars(sim, default_run):
    run = default_run
    hv = run.hostvars["llm-direct-1"]
    row = one(sim, "llm-direct-1")
    for field in ("id", "gpu_name", "num_gpus", "dph_total", "public_ipaddr", "ssh_host", "ssh_port", "label",
                  "machine_id", "image_uuid", "actual_status"):
        assert hv["vast_" + field] == row[field], field
    assert hv["vast_status"] == "running"
    assert hv["vast_cost_per_hour"] == pytest.approx(float(row["dph_total"]))
    assert isinstance(hv["vast_uptime_seconds"], int) and hv["vast_uptime_seconds"] >= 0
    assert hv["vast_port_map"]["22/tcp"] == int(row["ports"]["22/tcp"][0]["HostPort"])
    # secrets-prone fields stay out of hostvars
    for field in ("vast_extra_env", "vast_onstart", "vast_jupyter_token"):
        assert field not in hv
    assert "hf_notforhostvars" not in run.out


def test_hostvars_fields(sim, inventory, default_run):
    row = one(sim, "llm-direct-1")
    default = default_run.hostvars["llm-direct-1"]
    assert "score" in row and "vast_score" not in default  # not in the default field list
    every = inventory(sim, {"hostvars_fields": ["*"]}).hostvars["llm-direct-1"]
    assert every["vast_score"] == row["score"]
    assert set(default) < set(every)
    # secrets and the default exclusions stay out even with "*"
    assert not {"vast_extra_env", "vast_onstart", "vast_jupyter_token"} & set(every)
    few = inventory(sim, {"hostvars_fields": ["gpu_name", "extra_env"], "hostvars_exclude": []})
    hv = few.hostvars["llm-direct-1"]
    assert {k for k in hv if k.startswith("vast_")} == {
        "vast_gpu_name", "vast_extra_env", "vast_status", "vast_cost_per_hour", "vast_uptime_seconds",
        "vast_port_map", "vast_ssh_kind", "vast_ssh_direct_silent"}
    assert hv["ansible_host"] == row["public_ipaddr"]


def test_api_values_are_never_templated(sim, inventory):
    run = inventory(sim, {"compose": {"label_copy": "vast_label"}})
    assert run.rc == 0, run.err
    assert run.hostvars["___7___6___"]["vast_label"] == "{{ 7 * 6 }}"
    assert run.hostvars["___7___6___"]["label_copy"] == "{{ 7 * 6 }}"
    # ansible-core 2.19 prints untrusted values as {"__ansible_unsafe": ...}; older ones plainly
    assert run.raw["_meta"]["hostvars"]["___7___6___"]["vast_label"] in ({"__ansible_unsafe": "{{ 7 * 6 }}"},
                                                                          "{{ 7 * 6 }}")
    assert "42" not in json.dumps(run.hostvars["___7___6___"].get("label_copy"))


def test_direct_and_proxy_endpoints(sim, default_run):
    run = default_run
    direct, proxy = one(sim, "llm-direct-1"), one(sim, "llm-proxy-1")
    assert "22/tcp" in (direct.get("ports") or {}) and "22/tcp" not in (proxy.get("ports") or {})
    hv = run.hostvars["llm-direct-1"]
    assert (hv["ansible_host"], hv["ansible_port"], hv["ansible_user"], hv["vast_ssh_kind"]) == (
        direct["public_ipaddr"], int(direct["ports"]["22/tcp"][0]["HostPort"]), "root", "direct")
    hv = run.hostvars["llm-proxy-1"]
    assert (hv["ansible_host"], hv["ansible_port"], hv["ansible_user"], hv["vast_ssh_kind"]) == (
        proxy["ssh_host"], int(proxy["ssh_port"]), "root", "proxy")


def test_connect_with_proxy_forces_the_proxy(sim, inventory):
    run = inventory(sim, {"connect_with": "proxy"})
    direct = one(sim, "llm-direct-1")
    hv = run.hostvars["llm-direct-1"]
    assert (hv["ansible_host"], hv["ansible_port"], hv["vast_ssh_kind"]) == (
        direct["ssh_host"], int(direct["ssh_port"]), "proxy")


def test_connect_with_direct_leaves_proxy_only_hosts_without_address(sim, inventory):
    run = inventory(sim, {"connect_with": "direct"}, "-v")
    assert run.rc == 0, run.err
    assert "ansible_host" not in run.hostvars["llm-proxy-1"]
    assert run.hostvars["llm-proxy-1"]["vast_ssh_kind"] is None
    assert run.hostvars["llm-direct-1"]["vast_ssh_kind"] == "direct"
    iid = sim.ids["llm-proxy-1"][0]
    assert re.search(r"no direct SSH address for instance %d" % iid, run.verbose + run.err)


def test_graph(sim, inventory):
    run = inventory(sim, {}, graph=True)
    assert run.rc == 0, run.err
    assert "@vast:" in run.out and "@vast_label_llm:" in run.out
    assert re.search(r"\|--llm-direct-1$", run.out, re.M)


@pytest.mark.parametrize(
    "config,labels",
    [
        ({"statuses": ["stopped"]}, {"llm-stopped"}),
        ({"statuses": ["running"], "labels": ["train-a", "llm-proxy-1"]}, {"train-a", "llm-proxy-1"}),
        ({"label_prefix": ["llm-"]}, {"llm-direct-1", "llm-proxy-1"}),
        ({"statuses": [], "label_prefix": ["llm-"]}, {"llm-direct-1", "llm-proxy-1", "llm-stopped"}),
    ],
)
def test_filters(sim, inventory, config, labels):
    run = inventory(sim, config)
    assert run.rc == 0, run.err
    assert {hv["vast_label"] for hv in run.hostvars.values()} == labels


def test_status_and_label_filters_are_server_side(sim, inventory):
    sim.clear_requests()
    inventory(sim, {"statuses": ["running"], "labels": ["train-a"]})
    calls = list_calls(sim)
    assert calls
    for call in calls:
        sent = json.loads(call["query"]["select_filters"]) if isinstance(call["query"], dict) else None
        if sent is None:  # query logged as a raw string
            assert "actual_status" in call["query"] and "train-a" in call["query"]
            continue
        assert sent["actual_status"] == {"in": ["running"]}
        assert sent["label"] == {"in": ["train-a"]}


@pytest.mark.parametrize("sep", ["_", "-"])
def test_gpu_names_filter_accepts_underscores_and_dashes(sim, inventory, default_run, sep):
    everything = default_run
    gpu = sorted(hv["vast_gpu_name"] for hv in everything.hostvars.values() if " " in hv["vast_gpu_name"])[0]
    wanted = {n for n, hv in everything.hostvars.items() if hv["vast_gpu_name"] == gpu}
    assert wanted != everything.hosts  # the filter has something to remove
    sim.clear_requests()
    run = inventory(sim, {"gpu_names": [gpu.replace(" ", sep).lower()]})
    assert run.rc == 0, run.err
    assert run.hosts == wanted
    # the server is sent the API's own spelling, as the modules send it (one normaliser)
    sent = [r["query"] for r in sim.requests() if r["endpoint"] == "list"]
    assert sent and all('"gpu_name":{"in":["%s"]}' % gpu in q["select_filters"] for q in sent), sent


def test_keyed_groups_compose_groups(sim, inventory):
    config = {
        "keyed_groups": [{"key": "vast_num_gpus | string", "prefix": "gpus"}, {"key": "vast_ssh_kind", "prefix": "ssh"}],
        "compose": {"ssh_url": "'ssh://' ~ ansible_user ~ '@' ~ ansible_host ~ ':' ~ ansible_port",
                    "ansible_python_interpreter": "'/usr/bin/python3'"},
        "groups": {"pricey": "vast_cost_per_hour > 0", "direct_only": "vast_ssh_kind == 'direct'"},
    }
    run = inventory(sim, config)
    assert run.rc == 0, run.err
    for name, hv in run.hostvars.items():
        assert name in run.group("gpus_%d" % hv["vast_num_gpus"])
        assert name in run.group("ssh_" + hv["vast_ssh_kind"])
        assert hv["ssh_url"] == "ssh://root@%s:%s" % (hv["ansible_host"], hv["ansible_port"])
        assert hv["ansible_python_interpreter"] == "/usr/bin/python3"
    assert run.group("direct_only") == {n for n, hv in run.hostvars.items() if hv["vast_ssh_kind"] == "direct"}
    assert "llm-direct-1" in run.group("direct_only"), (run.groups(), run.err, {n: hv["vast_ssh_kind"] for n, hv in run.hostvars.items()})
    assert "llm-proxy-1" not in run.group("direct_only")
    assert run.group("pricey") == run.hosts


def test_strict_turns_bad_compose_into_an_error(sim, inventory):
    bad = {"compose": {"x": "vast_no_such_field.attr"}}
    assert inventory(sim, bad).rc == 0  # not strict: the entry is skipped
    run = inventory(sim, dict(bad, strict=True), env={"ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "1"})
    assert run.rc != 0
    assert "Could not set x" in " ".join(run.err.split())  # older ansible-core wraps its messages


def test_hostvars_prefix_group_and_default_groups_options(sim, inventory):
    run = inventory(sim, {"hostvars_prefix": "gpu_box_", "group": "gpus", "default_groups": False})
    assert run.rc == 0, run.err
    hv = run.hostvars["llm-direct-1"]
    assert "gpu_box_id" in hv and "vast_id" not in hv and hv["gpu_box_ssh_kind"] == "direct"
    assert "ansible_host" in hv
    assert run.group("gpus") == run.hosts
    assert not [g for g in run.groups() if g.startswith(("gpus_status", "vast_"))]


def test_api_key_templated_from_a_lookup(sim, inventory):
    run = inventory(sim, {"api_key": "{{ lookup('env', 'MY_VAST_KEY') }}"}, key=None, env={"MY_VAST_KEY": SECRET})
    assert run.rc == 0, run.err
    assert "llm-direct-1" in run.hosts


def test_api_key_templated_from_extra_vars(sim, inventory):
    # --graph: `--list` would print the extra vars themselves (ansible shows -e vars as hostvars)
    run = inventory(sim, {"api_key": "{{ my_vast_key }}"}, "-e", "my_vast_key=" + SECRET, key=None, graph=True)
    assert run.rc == 0, run.err
    assert re.search(r"\|--llm-direct-1$", run.out, re.M)


def test_auth_error_is_clear_and_builds_nothing(sim, inventory):
    wrong = "wrongkey-77aa0c3b9f8e4d2a9c1b5e6f7a8b9c0d"
    failing = {"ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "1"}
    run = inventory(sim, {}, "-vvv", key=wrong, env=failing)
    assert run.rc != 0
    err = " ".join(run.err.split())  # older ansible-core wraps its messages
    assert "vast.ai rejected the API key" in err
    assert "VAST_API_KEY" in err
    # without the strict setting ansible only warns: the source must then add no host at all
    run = inventory(sim, {}, key=wrong, env={"ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "0"})
    assert run.rc == 0
    assert run.hostvars == {} and "rejected the API key" in run.err


def test_missing_key_is_clear(sim, inventory):
    run = inventory(sim, {}, key=None, env={"ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "1"})
    assert run.rc != 0 and "no vast.ai API key" in run.err


def cache_config(tmp_path, **extra):
    return dict({"cache": True, "cache_plugin": "ansible.builtin.jsonfile",
                 "cache_connection": str(tmp_path / "cache"), "cache_timeout": 600}, **extra)


def test_cache_warm_run_makes_no_api_call_and_applies_config_changes(sim, inventory, tmp_path):
    config = cache_config(tmp_path)
    sim.clear_requests()
    cold = inventory(sim, config)
    assert cold.rc == 0, cold.err
    assert list_calls(sim), "cold run must list instances"

    sim.clear_requests()
    warm = inventory(sim, config)
    assert warm.rc == 0, warm.err
    assert sim.requests() == []
    assert warm.data["_meta"]["hostvars"].keys() == cold.hostvars.keys()
    for name, hv in warm.hostvars.items():
        a, b = dict(hv), dict(cold.hostvars[name])
        a.pop("vast_uptime_seconds"), b.pop("vast_uptime_seconds")
        assert a == b
    assert warm.groups() == cold.groups()

    # the cache holds raw rows without the key, and without secret-bearing fields
    files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert files
    text = "".join(p.read_text() for p in files)
    assert SECRET not in text
    assert "jupyter_token" not in text

    # config changes that do not touch the server-side filters are applied to the cached rows
    sim.clear_requests()
    changed = dict(config, connect_with="proxy", label_prefix=["llm-"],
                   compose={"where": "ansible_host"}, keyed_groups=[{"key": "vast_ssh_kind", "prefix": "k"}])
    run = inventory(sim, changed)
    assert run.rc == 0, run.err
    assert sim.requests() == []
    assert run.hosts == {"llm-direct-1", "llm-proxy-1"}
    assert run.hostvars["llm-direct-1"]["vast_ssh_kind"] == "proxy"
    assert run.hostvars["llm-direct-1"]["where"] == one(sim, "llm-direct-1")["ssh_host"]
    assert run.group("k_proxy") == run.hosts


def test_cache_misses_when_server_side_filters_or_account_change(sim, inventory, tmp_path):
    config = cache_config(tmp_path)
    assert inventory(sim, config).rc == 0
    sim.clear_requests()
    run = inventory(sim, dict(config, statuses=["stopped"]))
    assert list_calls(sim) and {hv["vast_label"] for hv in run.hostvars.values()} == {"llm-stopped"}
    sim.clear_requests()
    if ANSIBLE_CORE >= (2, 18):  # ansible-inventory has --flush-cache from ansible-core 2.18
        assert inventory(sim, config, "--flush-cache").rc == 0
        assert list_calls(sim)
    # another key on the same endpoint never gets these cached rows: it goes to the API
    wrong = inventory(sim, config, key="otherkey-00000000000000000000000000000000")
    assert wrong.rc != 0 and "rejected the API key" in wrong.err


def test_example_config_is_valid(sim, inventory, tmp_path):
    import yaml

    example = yaml.safe_load((Path(__file__).resolve().parents[4] / "inventory" / "example.vast.yml").read_text())
    example["cache_connection"] = str(tmp_path / "cache")
    run = inventory(sim, example)
    assert run.rc == 0, run.err
    assert run.hosts == {"llm-direct-1", "llm-proxy-1"}
    assert "[WARNING]" not in run.err, run.err


def test_auto_falls_back_to_the_proxy_when_direct_ssh_is_silent(sim, inventory):
    # SkyPilot: direct SSH to public_ipaddr times out on some hosts, the proxy works; dstack and
    # the CLI use direct. auto: direct when it answers, the proxy when it does not.
    iid = sim.ids["llm-direct-1"][0]
    silent = ssh_listener(banner=False)
    try:
        point_direct_at(sim, iid, silent.getsockname()[1])
        row = one(sim, "llm-direct-1")
        hv = inventory(sim, {"ssh_probe_timeout": 1.0}).hostvars["llm-direct-1"]
        assert (hv["ansible_host"], hv["ansible_port"], hv["vast_ssh_kind"], hv["vast_ssh_direct_silent"]) == (
            row["ssh_host"], int(row["ssh_port"]), "proxy", True)
        hv = inventory(sim, {"ssh_probe_timeout": 0}).hostvars["llm-direct-1"]     # probe off: as before
        assert (hv["ansible_port"], hv["vast_ssh_kind"]) == (silent.getsockname()[1], "direct")
        hv = inventory(sim, {"connect_with": "direct"}).hostvars["llm-direct-1"]   # forced: no fallback
        assert hv["vast_ssh_kind"] == "direct"
    finally:
        point_direct_at(sim, iid, sim.sshd.getsockname()[1])
        silent.close()
    hv = inventory(sim, {}).hostvars["llm-direct-1"]
    assert (hv["ansible_port"], hv["vast_ssh_kind"], hv["vast_ssh_direct_silent"]) == (
        sim.sshd.getsockname()[1], "direct", False)
