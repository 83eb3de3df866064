import json
import threading

import pytest

from ansible_collections.llmops.vastai.plugins.module_utils import query as Q
from ansible_collections.llmops.vastai.plugins.module_utils.audit import append_audit, audit_record
from ansible_collections.llmops.vastai.plugins.module_utils.base import account_label_prefix, represent_instance


def defaults(**kw):
    f = dict((k, v.get("default")) for k, v in Q.OFFER_FILTER_SPEC.items())
    f.update(kw)
    return f


@pytest.mark.parametrize("typed,api", [
    ("RTX 4090", "RTX 4090"), ("rtx_4090", "RTX 4090"), ("rtx-4090", "RTX 4090"), ("  RTX__4090 ", "RTX 4090"),
    ("a100_sxm4", "A100 SXM4"), ("h100-sxm", "H100 SXM"), ("rtx 6000ada", "RTX 6000Ada"),
    ("Some New_GPU", "Some New GPU"),
])
def test_gpu_spellings(typed, api):
    assert Q.normalize_gpu_name(typed) == api


def test_units_operators_and_defaults():
    q = Q.build_query(defaults(gpu_names=["rtx_3090"], min_num_gpus=2, max_num_gpus=4, min_gpu_ram_gb=24,
                               min_cpu_ram_gb=64, max_dph=1.5, min_reliability=0.98, countries=["us", "De"],
                               min_cuda=12.4, min_disk_gb=50, min_inet_down=500, datacenter=True,
                               min_direct_ports=2, vm_capable=True, exclude_machine_ids=[7]),
                      allocated_storage=60)
    assert q["gpu_name"] == {"in": ["RTX 3090"]}
    assert q["num_gpus"] == {"gte": 2, "lte": 4}
    assert q["gpu_ram"] == {"gte": 22855.7} and q["cpu_ram"] == {"gte": 64000.0}
    assert q["dph_total"] == {"lte": 1.5} and q["reliability"] == {"gte": 0.98}
    assert q["geolocation"] == {"in": ["DE", "US"]}
    assert q["cuda_max_good"] == {"gte": 12.4} and q["disk_space"] == {"gte": 50}
    assert q["compute_cap"] == {"gte": 600}
    assert q["inet_down"] == {"gte": 500} and q["datacenter"] == {"eq": True}
    assert q["direct_port_count"] == {"gte": 2} and q["vms_enabled"] == {"eq": True}
    assert q["machine_id"] == {"notin": [7]}
    assert q["verified"] == {"eq": True} and q["rentable"] == {"eq": True} and q["rented"] == {"eq": False}
    assert q["type"] == "on-demand" and q["order"] == [["dph_total", "asc"]] and q["limit"] == 10
    assert q["allocated_storage"] == 60.0
    json.dumps(q)


def test_types_orders_regions_and_raw_query_wins():
    assert Q.build_query(defaults(offer_type="interruptible"))["type"] == "bid"
    assert Q.build_query(defaults(order_by="value"))["order"] == [["dlperf_per_dphtotal", "desc"]]
    q = Q.build_query(defaults(regions=["oceania"], countries=["US"]))
    assert q["geolocation"] == {"in": ["AU", "NZ", "US"]}
    q = Q.build_query(defaults(verified=False, query={"verified": {"eq": True}, "compute_cap": {"gte": 800}}))
    assert q["verified"] == {"eq": True} and q["compute_cap"] == {"gte": 800}


@pytest.mark.parametrize("kw,word", [
    (dict(min_num_gpus=0), "min_num_gpus"), (dict(min_num_gpus=4, max_num_gpus=2), "greater than"),
    (dict(min_gpu_ram_gb=-1), "negative"), (dict(max_dph=0), "max_dph"), (dict(min_reliability=98), "between 0 and 1"),
    (dict(countries=["USA"]), "two-letter"), (dict(limit=0), "limit"), (dict(gpu_names=[""]), "empty"),
])
def test_validation(kw, word):
    errors = Q.validate_filters(defaults(**kw))
    assert errors and any(word in e for e in errors)
    assert Q.validate_filters(defaults()) == []


def test_sort_offers_is_stable_by_id():
    offers = [{"id": 3, "dph_total": 0.5}, {"id": 1, "dph_total": 0.5}, {"id": 2, "dph_total": 0.2}]
    assert [o["id"] for o in Q.sort_offers(offers, "price")] == [2, 1, 3]
    offers = [{"id": 3, "score": 5}, {"id": 1, "score": 5}, {"id": 2, "score": 9}]
    assert [o["id"] for o in Q.sort_offers(offers, "score")] == [2, 1, 3]


def test_describe_offer_units():
    o = Q.describe_offer({"gpu_ram": 24564, "cpu_ram": 131072, "geolocation": "California, US"})
    assert o["gpu_ram_gb"] == 24.6 and o["cpu_ram_gb"] == 131.1 and o["country"] == "US"


@pytest.mark.parametrize("user,prefix", [
    ({"nickname": "Ada L.", "username": "x"}, "ada-l"), ({"username": "simuser"}, "simuser"),
    ({"email": "Jane.Doe@example.com"}, "jane-doe"), ({}, "vast-user"), (None, "vast-user"), ({"username": "!!"}, "vast-user"),
])
def test_account_label_prefix(user, prefix):
    assert account_label_prefix(user) == prefix


def test_represent_instance_drops_secrets():
    row = {"id": 1, "instance_api_key": "k", "jupyter_token": "t", "extra_env": [["HF_TOKEN", "secret"], ["-p 8000:8000", "1"]],
           "ssh_host": "ssh1.vast.ai", "ssh_port": 2222, "ports": None}
    out = represent_instance(row)
    assert "instance_api_key" not in out and "jupyter_token" not in out
    assert out["extra_env"] == ["-p 8000:8000", "HF_TOKEN"] and "secret" not in json.dumps(out)
    assert out["ssh"]["kind"] == "proxy" and out["ports"] == {}


def test_audit_lines_whole_under_concurrency(tmp_path):
    path = str(tmp_path / "sub" / "audit.jsonl")

    def writer(n):
        for i in range(50):
            append_audit(path, audit_record("create", instance_id=n * 1000 + i, label="l" * 200, price=0.1,
                                            module="m", api_key="never", detail="d"))
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    lines = [json.loads(x) for x in open(path).read().splitlines()]
    assert len(lines) == 200 and len({x["instance_id"] for x in lines}) == 200
    assert all("api_key" not in x for x in lines) and "never" not in open(path).read()
    append_audit(None, audit_record("x"))  # no path: no-op


def test_min_cuda_always_brings_a_compute_cap_floor():
    # gpuhunt#142: cuda_max_good alone hid H100/H200 offers; dstack sends compute_cap >= 600 beside it
    assert "compute_cap" not in Q.build_query(defaults())
    assert Q.build_query(defaults(min_cuda=13.0))["compute_cap"] == {"gte": Q.COMPUTE_CAP_FLOOR}
    q = Q.build_query(defaults(min_cuda=13.0, query={"compute_cap": {"gte": 900}}))
    assert q["compute_cap"] == {"gte": 900}            # the user's own floor wins


@pytest.mark.parametrize("gb,reported,match", [
    (48, 46068, True),     # L40S (gpuhunt test_constraints)
    (48, 49140, True),     # RTX A6000
    (48, 40960, False),    # A100 40 GB is not a 48 GB card
    (80, 81559, True),     # H100 80 GB
    (80, 49140, False),
    (24, 24564, True),     # RTX 4090
    (24, 23028, True),     # A10G (gpuhunt test_constraints)
    (94, 95830, True),     # H100 NVL (gpuhunt test_constraints)
])
def test_min_gpu_ram_gb_means_the_marketing_size(gb, reported, match):
    floor = Q.build_query(defaults(min_gpu_ram_gb=gb))["gpu_ram"]["gte"]
    assert (reported >= floor) is match


@pytest.mark.parametrize("ports,runtype,vm,count", [
    (None, None, False, 0), (["8000"], "args", False, 1), (["8000", "8000/tcp"], "args", False, 1),
    (["80"], "ssh_direc ssh_proxy", False, 2), ([], "ssh_direct", False, 1), (["80"], None, True, 2),
    (["8000:8000", "9000"], "ssh_proxy", False, 2),
])
def test_required_direct_ports(ports, runtype, vm, count):
    assert Q.required_direct_ports(ports, runtype, vm) == count


def test_direct_ports_are_required_automatically():
    assert "direct_port_count" not in Q.build_query(defaults())
    assert Q.build_query(defaults(), direct_ports=2)["direct_port_count"] == {"gte": 2}
    assert Q.build_query(defaults(min_direct_ports=4), direct_ports=2)["direct_port_count"] == {"gte": 4}
    assert Q.build_query(defaults(min_direct_ports=1), direct_ports=3)["direct_port_count"] == {"gte": 3}
    assert Q.build_query(defaults(min_direct_ports=0))["direct_port_count"] == {"gte": 0}
