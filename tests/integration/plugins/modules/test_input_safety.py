"""Issue 13, items 5 and 7: every input is checked before anything is rented, and the API key
never shows, in any form. Real ansible-playbook runs against the simulator; the simulator's
request log proves that a refused task made no API call at all.

Task arguments are written into the playbook as YAML (``.nan``/``.inf`` for float values
inside raw dicts) or as strings that Ansible's float conversion turns into NaN/infinity
("nan", "inf", "1e400"), exactly as a user's playbook or extra variable would.
"""
import base64
import os
import secrets
import struct

import pytest
import yaml

from tests.helpers.ansible import run_playbook

IMAGE = "vllm/vllm-openai:latest"
NAN = float("nan")


def key():
    return "vk-" + secrets.token_hex(16)


@pytest.fixture
def sim(vastsim_factory):
    return vastsim_factory(api_key=key())


def create_args(label, **kw):
    a = dict(label=label, state="running", image=IMAGE, poll_interval=0.2, wait_timeout=60, wait=False,
             offer_filters={"gpu_names": ["RTX 3090"], "max_dph": 2.0})
    a.update(kw)
    return a


def run_tasks(sim, calls, env=None, verbosity=0, check=False):
    """Module calls as literal tasks of one playbook (ignore_errors); [task results]."""
    tasks = [{"name": "c%d" % i, "llmops.vastai." + module: args, "ignore_errors": True}
             for i, (module, args) in enumerate(calls)]
    pb = yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}])
    e = dict(sim.env)
    e.update(env or {})
    res = run_playbook(pb, env=e, verbosity=verbosity, check=check)
    return res, [res.task("c%d" % i) for i in range(len(calls))]


def pubkey(kind="ssh-ed25519", inner=None):
    inner = kind if inner is None else inner
    blob = struct.pack(">I", len(inner)) + inner.encode() + struct.pack(">I", 32) + os.urandom(32)
    return "%s %s me@laptop" % (kind, base64.b64encode(blob).decode())


# (module, args, words the message must hold) -- each would have rented, searched or read
# with a guard switched off; every one must fail before the first API call.
REFUSED = [
    # NaN and infinity in every float option
    ("vast_instance", create_args("n1", disk_gb="nan"), "disk_gb must be a number, not NaN"),
    ("vast_instance", create_args("n2", max_dph="nan"), "max_dph must be a number, not NaN"),
    ("vast_instance", create_args("n3", min_credit="-inf"), "min_credit must be a finite number"),
    ("vast_instance", create_args("n4", bid_price="inf"), "bid_price must be a finite number"),
    ("vast_instance", create_args("n5", poll_interval="nan"), "poll_interval must be a number"),
    ("vast_instance", create_args("n6", disk_gb="1e400"), "disk_gb must be a finite number"),
    ("vast_instance", create_args("n7", offer_filters={"gpu_names": ["RTX 3090"], "max_dph": "nan"}),
     "offer_filters.max_dph must be a number, not NaN"),
    ("vast_instance", create_args("n8", offer_filters={"min_reliability": "nan"}), "offer_filters.min_reliability"),
    ("vast_instance", create_args("n9", offer_filters={"min_gpu_ram_gb": "inf"}), "offer_filters.min_gpu_ram_gb"),
    ("vast_instance", create_args("n10", offer_filters={"query": {"dph_total": {"lte": NAN}}}),
     "offer_filters.query holds NaN or infinity at dph_total.lte"),
    ("vast_offer_info", {"max_dph": "nan"}, "max_dph must be a number"),
    ("vast_offer_info", {"allocated_storage": "inf"}, "allocated_storage must be a finite number"),
    ("vast_offer_info", {"min_cuda": "-inf"}, "min_cuda must be a finite number"),
    ("vast_offer_info", {"query": {"dph_total": {"lte": float("inf")}}}, "query holds NaN or infinity"),
    ("vast_billing_info", {"start": "nan"}, "start 'nan' is not a time"),
    ("vast_billing_info", {"end": "inf"}, "end 'inf' is not a time"),
    ("vast_billing_info", {"start": "-99999999999999999999d"}, "is not a time between 1970 and 9999"),
    # huge numbers
    ("vast_instance", create_args("h1", disk_gb=1e9), "disk_gb must be at most 16384"),
    ("vast_instance", create_args("h2", exact_count=21), "above max_exact_count (20)"),
    ("vast_instance", create_args("h3", exact_count=5, max_exact_count=0), "max_exact_count must be at least 1"),
    ("vast_instance", create_args("h4", api_timeout=10 ** 12), "api_timeout must be at most 3600"),
    ("vast_instance_info", {"api_retries": 10 ** 9}, "api_retries must be at most 100"),
    ("vast_offer_info", {"allocated_storage": 1e7}, "allocated_storage must be at most 16384"),
    # ports, images, SSH keys
    ("vast_instance", create_args("p1", ports=["8000", "0"]), "ports entry '0'"),
    ("vast_instance", create_args("p2", ports=["65536"]), "ports entry '65536'"),
    ("vast_instance", create_args("p3", ports=["8000/sctp"]), "ports entry '8000/sctp'"),
    ("vast_instance", create_args("i1", image=""), "image must not be empty"),
    ("vast_instance", create_args("i2", image="vllm/vllm-openai latest"), "must not contain spaces"),
    ("vast_instance", create_args("i3", image="  "), "image must not be empty"),
    ("vast_instance", create_args("k1", ssh_keys=[pubkey(), "ssh-ed25519 not-base64!"]),
     "ssh_keys entry 2 is not an OpenSSH public key"),
    ("vast_instance", create_args("k2", ssh_keys=[pubkey("ssh-ed25519", inner="ssh-rsa")]),
     "is a 'ssh-rsa' key, not ssh-ed25519"),
    ("vast_instance", create_args("k3", ssh_keys=["AAAAC3NzaC1lZDI1NTE5AAAAIG"]), "it has no base64 part"),
    ("vast_instance", create_args("k4", ssh_keys=["ssh-ed2551 AAAAC3NzaC1lZDI1NTE5"]), "unknown key type"),
]


def test_hostile_values_refused_before_any_api_call(sim):
    sim.clear_requests()
    res, results = run_tasks(sim, [(m, a) for m, a, _w in REFUSED])
    wrong = []
    for (module, margs, words), r in zip(REFUSED, results):
        if not (r.get("failed") and words in (r.get("msg") or "") and r.get("changed") is False):
            wrong.append((module, margs, r.get("msg")))
    assert not wrong, "\n".join(map(repr, wrong))
    assert sim.requests() == [], "refused tasks called the API"
    assert sim.state()["instances"] == []


def test_valid_ssh_keys_and_raised_exact_count_pass_validation(sim):
    # a real key pair's line and a key without comment go through; so does exact_count 25 when raised
    res, results = run_tasks(sim, [
        ("vast_instance", create_args("ok", ssh_keys=[pubkey(), pubkey("ssh-rsa").rsplit(" ", 1)[0]],
                                      ports=["8000", "65535/udp", "22/tcp"])),
        ("vast_instance", dict(create_args("fleet", exact_count=25, max_exact_count=30), state="present")),
    ], check=True)
    for r in results:
        assert not r.get("failed"), r.get("msg")


def test_api_key_with_surrounding_whitespace_works_and_never_shows(sim):
    """A key from a file (trailing newline, CRLF, spaces) in VAST_API_KEY or in api_key works;
    before, requests refused the header and its error quoted the key (repr-escaped)."""
    res, results = run_tasks(sim, [("vast_instance_info", {}),
                                   ("vast_offer_info", {"api_key": "  %s \r\n" % sim.api_key, "limit": 1}),
                                   ("vast_billing_info", {})],
                             env={"VAST_API_KEY": sim.api_key + "\n"}, verbosity=3)
    for r in results:
        assert not r.get("failed"), r.get("msg")
    assert sim.api_key not in res.stdout + res.stderr


@pytest.mark.parametrize("bad", ["{k} {k}", "{k}\n{k}", "{k}\u2019", "{k}\x7f"])
def test_api_key_with_inner_whitespace_refused_without_quoting_it(sim, bad):
    bad = bad.format(k=sim.api_key)
    sim.clear_requests()
    res, results = run_tasks(sim, [("vast_instance", create_args("kw")), ("vast_instance_info", {"api_key": bad})],
                             env={"VAST_API_KEY": bad}, verbosity=3)
    for r in results:
        assert r.get("failed") and "cannot be used" in r["msg"], r.get("msg")
    text = res.stdout + res.stderr
    assert sim.api_key not in text and sim.api_key[3:19] not in text
    assert sim.requests() == []


def test_failing_requests_never_quote_the_key(sim):
    """Transport failures (nothing listens; a reset) go through requests/urllib3, whose
    messages may quote what was sent: the task message must hold no form of the key."""
    sim.add_faults([{"endpoint": "list", "fault": "reset", "times": 50}])
    res, results = run_tasks(sim, [
        ("vast_instance_info", {"api_retries": 1}),
        ("vast_instance_info", {"api_url": "http://127.0.0.1:9/%s" % sim.api_key, "api_retries": 0}),
    ], env={"VAST_API_KEY": sim.api_key + "\n"}, verbosity=3)
    for r in results:
        assert r.get("failed") and "cannot talk to the vast.ai API" in r["msg"], r.get("msg")
    assert sim.api_key not in res.stdout + res.stderr


def test_refused_create_reports_not_changed(sim):
    """Issue 13 item 9: a create refused by a guard (price above max_dph, credit below
    min_credit) rents nothing, so the task must say changed: false."""
    sim.set_credit(1.0)
    res, results = run_tasks(sim, [
        ("vast_instance", create_args("poor", min_credit=5)),
        ("vast_instance", create_args("dear", max_dph=0.0001)),
    ])
    assert sim.state()["instances"] == []
    for r in results:
        assert r.get("failed"), r
        assert r.get("changed") is False, r


def test_ansible_debug_prints_task_arguments_so_the_key_belongs_in_the_environment(sim):
    """What the api_key documentation says: with ANSIBLE_DEBUG=1 Ansible prints a module's
    arguments before no_log masking, so a key given as a task argument shows up there, and a
    key in VAST_API_KEY does not. If Ansible stops printing it, this test tells us to update
    the docs."""
    pb = "- hosts: localhost\n  gather_facts: false\n  tasks:\n    - llmops.vastai.vast_instance_info: %s\n"
    as_arg = run_playbook(pb % ("{api_key: %s}" % sim.api_key), env=dict(sim.env, VAST_API_KEY=None,
                                                                        ANSIBLE_DEBUG="1"), json_output=False)
    from_env = run_playbook(pb % "{}", env=dict(sim.env, ANSIBLE_DEBUG="1"), json_output=False)
    assert as_arg.rc == 0 and from_env.rc == 0
    assert sim.api_key in as_arg.stdout + as_arg.stderr
    assert sim.api_key not in from_env.stdout + from_env.stderr
