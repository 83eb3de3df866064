"""Bad-input campaign: invalid argument sets generated with hypothesis from each module's own
argument spec (captured from the module's main(), see common.module_spec), run as the tasks of
ONE playbook per module (ignore_errors), each checked for: failed, a clear message naming the
offending option(s), and no mutating request to the simulator in the task's time window.

    python -m tests.campaigns.badinput [--per-module N] [--seed S]   # prints the summary
"""
import argparse
import json
import os
import random
import re
import secrets as pysecrets
import string
import sys
import tempfile

from hypothesis import HealthCheck, Phase, given, seed as hyp_seed, settings, strategies as st

from tests.campaigns.common import (
    FQCN,
    MODULES,
    clear_msg,
    is_mutating,
    mentions,
    module_spec,
    playbook,
    requests_between,
    task_window,
)
from tests.helpers.ansible import run_inventory, run_playbook
from tests.helpers.vastsim import launch

IMAGE = "vllm/vllm-openai:v0.33.0"
# A valid argument set per module: each case breaks exactly one thing in it. For vast_instance
# it would rent if the break went unnoticed, so a missed check shows up as a mutating call.
BASE = {
    "vast_offer_info": {"gpu_names": ["RTX 4090"], "max_dph": 1.5, "limit": 3},
    "vast_instance": {"label": "bad-input", "state": "running", "image": IMAGE,
                      "offer_filters": {"gpu_names": ["RTX 4090"], "max_dph": 2.0},
                      "wait_timeout": 30, "poll_interval": 0.5, "destroy_on_failure": True, "wait": False},
    "vast_instance_info": {"label_prefix": "bad-"},
    "vast_billing_info": {"start": "-1d"},
}
BOOLEAN_WORDS = {"y", "yes", "on", "1", "true", "t", "n", "no", "off", "0", "false", "f", "1.0", "0.0"}
SAFE_TEXT = string.ascii_letters + string.digits + " -_.:/@!?"  # no Jinja2 delimiters


def _floatable(v):
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


words = st.text(alphabet=SAFE_TEXT, min_size=1, max_size=14)
non_numeric = words.filter(lambda s: not _floatable(s))
non_bool_text = words.filter(lambda s: s.strip().lower() not in BOOLEAN_WORDS)
small_lists = st.lists(st.integers(-5, 5), min_size=1, max_size=3)
small_dicts = st.dictionaries(st.from_regex(r"[a-z]{1,6}", fullmatch=True), st.integers(0, 9), min_size=1, max_size=2)
neg_or_zero = st.one_of(st.just(0), st.integers(-10 ** 6, -1))
neg_float = st.floats(-1e6, -1e-3, allow_nan=False)


def wrong_type(opt):
    """Values Ansible cannot convert to the option's declared type (None when any value goes)."""
    t = opt.get("type", "str")
    if t == "int":
        return st.one_of(non_numeric, st.floats(-1e4, 1e4, allow_nan=False).filter(lambda x: not x.is_integer()),
                         small_lists, small_dicts)
    if t == "float":
        return st.one_of(non_numeric, small_lists, small_dicts)
    if t == "bool":
        return st.one_of(non_bool_text, st.integers(2, 99), st.integers(-99, -1), small_lists)
    if t == "list":
        if opt.get("elements") == "int":
            return st.one_of(small_dicts, st.lists(non_numeric, min_size=1, max_size=2))
        return small_dicts
    if t == "dict":
        return st.one_of(words.filter(lambda s: "=" not in s and not s.lstrip().startswith("{")),
                         st.integers(-9, 9), small_lists)
    return None


def case(kind, args, expect, expect_all=False):
    return {"kind": kind, "args": args, "expect": list(expect), "expect_all": expect_all}


# --- generic cases from the argument spec -----------------------------------------------------
def spec_cases(module, spec):
    base = BASE[module]
    aspec = spec["argument_spec"]
    typed = sorted(n for n, o in aspec.items() if wrong_type(o) is not None)
    with_choices = sorted(n for n, o in aspec.items() if o.get("choices"))

    @st.composite
    def bad_type(draw):
        name = draw(st.sampled_from(typed))
        return case("wrong type", dict(base, **{name: draw(wrong_type(aspec[name]))}), [name])

    @st.composite
    def bad_choice(draw):
        name = draw(st.sampled_from(with_choices))
        opt = aspec[name]
        value = draw(words.filter(lambda s: s not in opt["choices"]))
        if opt.get("type") == "list":
            value = [value]
        return case("unknown choice", dict(base, **{name: value}), [name])

    @st.composite
    def unknown_option(draw):
        name = draw(st.from_regex(r"[a-z][a-z_]{2,14}", fullmatch=True).filter(lambda n: n not in aspec))
        return case("unknown option", dict(base, **{name: draw(st.one_of(words, st.integers()))}), [name])

    @st.composite
    def common_bad(draw):
        which = draw(st.sampled_from(["api_key", "api_timeout", "api_retries"]))
        if which == "api_key":
            return case("empty required value", dict(base, api_key=""), ["api_key"])
        if which == "api_timeout":
            return case("out of range", dict(base, api_timeout=draw(neg_or_zero)), ["api_timeout"])
        return case("out of range", dict(base, api_retries=draw(st.integers(-1000, -1))), ["api_retries"])

    strategies = [bad_type(), bad_type(), unknown_option(), common_bad()]
    if with_choices:
        strategies.append(bad_choice())
    if "offer_filters" in aspec:
        sub = aspec["offer_filters"]["options"]
        sub_typed = sorted(n for n, o in sub.items() if wrong_type(o) is not None)

        @st.composite
        def bad_sub(draw):
            kind = draw(st.sampled_from(["wrong type", "unknown option"]))
            f = dict(base["offer_filters"])
            if kind == "wrong type":
                name = draw(st.sampled_from(sub_typed))
                f[name] = draw(wrong_type(sub[name]))
            else:
                name = draw(st.from_regex(r"[a-z][a-z_]{2,14}", fullmatch=True).filter(lambda n: n not in sub))
                f[name] = draw(words)
            return case(kind + " (offer_filters)", dict(base, offer_filters=f), [name])

        strategies.append(bad_sub())
    return strategies


# --- semantic cases: values of the right type that make no sense -------------------------------
FILTER_RULES = ["num_gpus", "min_gt_max", "negative", "max_dph", "reliability", "countries", "limit", "gpu_names"]


@st.composite
def filter_values(draw, which=None):
    """(filters update, names) that violate the offer filter rules."""
    which = which or draw(st.sampled_from(FILTER_RULES))
    if which == "num_gpus":
        name = draw(st.sampled_from(["min_num_gpus", "max_num_gpus"]))
        return {name: draw(neg_or_zero)}, [name], "out of range"
    if which == "min_gt_max":
        hi = draw(st.integers(2, 64))
        return {"min_num_gpus": hi, "max_num_gpus": draw(st.integers(1, hi - 1))}, ["min_num_gpus", "max_num_gpus"], \
            "contradictory range"
    if which == "negative":
        name = draw(st.sampled_from(["min_gpu_ram_gb", "min_total_gpu_ram_gb", "min_cpu_ram_gb", "min_disk_gb",
                                     "min_inet_down", "min_cuda"]))
        return {name: draw(neg_float)}, [name], "negative number"
    if which == "max_dph":
        return {"max_dph": draw(st.one_of(st.just(0.0), neg_float))}, ["max_dph"], "negative price"
    if which == "reliability":
        return {"min_reliability": draw(st.one_of(st.floats(1.0001, 1e3), neg_float))}, ["min_reliability"], \
            "out of range"
    if which == "countries":
        bad = draw(st.text(alphabet=SAFE_TEXT, min_size=0, max_size=6).filter(
            lambda s: not (len(s) == 2 and s.isalpha() and s.isascii())))
        return {"countries": ["US", bad]}, ["countries"], "bad country"
    if which == "limit":
        return {"limit": draw(st.one_of(neg_or_zero, st.integers(1001, 10 ** 6)))}, ["limit"], "out of range"
    return {"gpu_names": ["RTX 4090", draw(st.sampled_from(["", " ", "   "]))]}, ["gpu_names"], "empty value"


OFFER_INFO_RULES = FILTER_RULES + ["allocated_storage"]


@st.composite
def offer_info_semantic(draw, which=None):
    which = which or draw(st.sampled_from(OFFER_INFO_RULES))
    if which == "allocated_storage":
        return case("out of range", dict(BASE["vast_offer_info"], allocated_storage=draw(
            st.one_of(st.just(0.0), neg_float))), ["allocated_storage"])
    upd, names, kind = draw(filter_values(which))
    return case(kind, dict(BASE["vast_offer_info"], **upd), names, expect_all=len(names) > 1)


INSTANCE_RULES = ["filters", "label_empty", "label_long", "disk", "bid", "tries", "wait_timeout", "poll",
                  "ports", "env", "args", "exact_neg", "exact_id", "exact_state", "no_image", "min_credit", "max_dph",
                  "mutex", "no_identity", "bad_id", "bad_offer_id", "empty_name"]


@st.composite
def instance_semantic(draw, which=None):
    base = BASE["vast_instance"]
    which = which or draw(st.sampled_from(INSTANCE_RULES))
    if which == "filters":
        upd, names, kind = draw(filter_values())
        return case(kind + " (offer_filters)", dict(base, offer_filters=dict(base["offer_filters"], **upd)), names,
                    expect_all=len(names) > 1)
    if which == "label_empty":
        return case("empty required value", dict(base, label=draw(st.sampled_from(["", " ", "\t", "   "]))), ["label"])
    if which == "label_long":
        return case("too long", dict(base, label="x" * draw(st.integers(257, 600))), ["label"])
    if which == "disk":
        return case("out of range", dict(base, disk_gb=draw(st.one_of(st.floats(-1e4, 7.99), st.just(0.0)))),
                    ["disk_gb"])
    if which == "bid":
        return case("negative price", dict(base, bid_price=draw(st.one_of(neg_float, st.just(0.0),
                                                                        st.floats(128.01, 1e6)))), ["bid_price"])
    if which == "tries":
        return case("out of range", dict(base, max_offer_tries=draw(neg_or_zero)), ["max_offer_tries"])
    if which == "wait_timeout":
        return case("out of range", dict(base, wait_timeout=draw(neg_or_zero)), ["wait_timeout"])
    if which == "poll":
        return case("out of range", dict(base, poll_interval=draw(st.one_of(st.just(0.0), neg_float))),
                    ["poll_interval"])
    if which == "ports":
        bad = draw(st.text(alphabet=SAFE_TEXT, min_size=1, max_size=10).filter(
            lambda s: not (s.split("/")[0].isdigit() and len(s.split("/")[0]) <= 5)))
        return case("bad value", dict(base, ports=["8000", bad]), ["ports"])
    if which == "env":
        bad = draw(st.text(alphabet=SAFE_TEXT, min_size=1, max_size=10).filter(
            lambda s: not (s[0].isalpha() or s[0] == "_") or any(not (c.isalnum() or c == "_") for c in s)))
        return case("bad value", dict(base, env={"GOOD": "1", bad: "x"}), ["env"])
    if which == "args":
        rt = draw(st.sampled_from(["ssh_direct", "ssh_proxy"]))
        return case("inconsistent options", dict(base, args=["--model", "x"], runtype=rt), ["args", "runtype"])
    if which == "exact_neg":
        return case("out of range", dict(base, exact_count=draw(st.integers(-100, -1))), ["exact_count"])
    if which == "exact_id":
        return case("inconsistent options", dict(base, exact_count=draw(st.integers(0, 5)), id=draw(
            st.integers(1, 10 ** 7))), ["exact_count", "id"], expect_all=True)
    if which == "exact_state":
        return case("inconsistent options", dict(base, exact_count=draw(st.integers(1, 3)), state=draw(
            st.sampled_from(["stopped", "absent", "restarted"]))), ["exact_count"])
    if which == "no_image":
        args = dict(base)
        del args["image"]
        return case("missing value", args, ["image"])
    if which == "min_credit":
        return case("negative price", dict(base, min_credit=draw(neg_float)), ["min_credit"])
    if which == "max_dph":
        return case("negative price", dict(base, max_dph=draw(st.one_of(st.just(0.0), neg_float))), ["max_dph"])
    if which == "mutex":
        return case("mutually exclusive", dict(base, offer_id=draw(st.integers(1, 10 ** 7))),
                    ["offer_id", "offer_filters"], expect_all=True)
    if which == "no_identity":
        args = dict(base)
        del args["label"]
        return case("missing value", args, ["id", "label", "name"], expect_all=True)
    if which == "bad_id":
        return case("bad id", {"id": draw(neg_or_zero), "state": draw(st.sampled_from(["stopped", "absent", "running"]))},
                    ["id"])
    if which == "bad_offer_id":
        args = dict(base)
        del args["offer_filters"]
        return case("bad id", dict(args, offer_id=draw(neg_or_zero)), ["offer_id"])
    args = dict(base)
    del args["label"]
    return case("empty required value", dict(args, name=""), ["name"])


INFO_RULES = ["parallel", "statuses", "id", "gpu_names"]


@st.composite
def instance_info_semantic(draw, which=None):
    base = BASE["vast_instance_info"]
    which = which or draw(st.sampled_from(INFO_RULES))
    if which == "parallel":
        return case("out of range", dict(base, parallel=draw(st.one_of(neg_or_zero, st.integers(33, 10 ** 4)))),
                    ["parallel"])
    if which == "statuses":
        return case("empty value", dict(base, statuses=[]), ["statuses"])
    if which == "id":
        return case("bad id", dict(base, id=draw(neg_or_zero)), ["id"])
    return case("empty value", dict(base, gpu_names=["RTX 4090", draw(st.sampled_from(["", " "]))]), ["gpu_names"])


BAD_DATES = st.one_of(
    st.sampled_from(["2026-13-45", "2026-02-30", "yesterday", "last week", "-7x", "7d", "--1d", "2026/01/01",
                     "01-01-2026", "-d", "noon", "T12:00", "2026-01-01T25:00"]),
    st.from_regex(r"[a-z]{3,10}", fullmatch=True).filter(lambda s: s != "now"),
    st.from_regex(r"-[0-9]{1,3}[abce-gi-lnoqrtuvx-z]", fullmatch=True),  # units s/m/h/d/w are valid
)


BILLING_RULES = ["start", "end", "order"]


@st.composite
def billing_semantic(draw, which=None):
    which = which or draw(st.sampled_from(BILLING_RULES))
    if which == "start":
        return case("bad date", {"start": draw(BAD_DATES)}, ["start"])
    if which == "end":
        return case("bad date", {"start": "-1d", "end": draw(BAD_DATES)}, ["end"])
    end = draw(st.integers(1_600_000_000, 1_900_000_000))
    start = end + draw(st.integers(0, 10 ** 7))
    return case("start not before end", {"start": str(start), "end": str(end)}, ["start"])


SEMANTIC = {"vast_offer_info": (offer_info_semantic, OFFER_INFO_RULES),
            "vast_instance": (instance_semantic, INSTANCE_RULES),
            "vast_instance_info": (instance_info_semantic, INFO_RULES),
            "vast_billing_info": (billing_semantic, BILLING_RULES)}


def _collect(strategy, limit, seed):
    """Up to ``limit`` distinct examples of ``strategy`` (hypothesis, reproducible for a seed)."""
    found, seen = [], set()

    @hyp_seed(seed)
    @settings(max_examples=max(limit * 3, 20), database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(c):
        key = json.dumps(c, sort_keys=True, default=str)
        if key not in seen and len(found) < limit:
            seen.add(key)
            found.append(c)

    collect()
    return found


def generate(module, count, seed=0):
    """``count`` distinct invalid argument sets for ``module`` (reproducible for a seed).

    Every family of breakage (each spec-derived strategy, each value rule) gets its own
    hypothesis run and the results are interleaved, so a 100-case campaign covers all of them
    instead of what hypothesis' bias towards simple branches would favour."""
    spec = module_spec(module)
    semantic, rules = SEMANTIC[module]
    families = spec_cases(module, spec) + [semantic(rule) for rule in rules]
    per = max(4, 2 * count // len(families) + 2)  # spare: some families have few distinct values
    pools = [_collect(f, per, seed + i) for i, f in enumerate(families)]
    random.Random(seed).shuffle(pools)  # a short sample then mixes spec and value breakage
    cases, seen = [], set()
    while len(cases) < count and any(pools):
        for pool in pools:
            if pool and len(cases) < count:
                c = pool.pop(0)
                key = json.dumps(c, sort_keys=True, default=str)
                if key not in seen:
                    seen.add(key)
                    cases.append(c)
    if len(cases) < count:
        raise AssertionError("%s: only %d distinct cases generated" % (module, len(cases)))
    return cases


# --- hostile input beyond the argument specs (issue 13) ----------------------------------------
# Values of the declared type that a spec-driven generator never draws: NaN and infinity (as
# Ansible receives them: the strings "nan"/"inf"/"1e400" or YAML .nan/.inf), huge and negative
# numbers, odd strings in every string option, API keys with whitespace, labels that name
# inventory groups. A case either MUST be refused (before any API call: a missed check shows as
# API calls, for vast_instance as a rental) or MAY pass; one that may pass runs in check mode
# for vast_instance and must then end cleanly (success, or a failure with a clear message) with
# no mutation. Nothing may ever show the API key.
NAN, INF = float("nan"), float("inf")
NON_FINITE = ["nan", "NaN", "inf", "-inf", "1e400", "-1e400", NAN, INF, -INF]
HUGE_INTS = [10 ** 12, 10 ** 30]
NEG_INTS = [-1, -10 ** 9]
ODD_STRINGS = ["", " ", "\t", "\n", "x" * 5000, "\u00fcn\u00ef\U0001F600", "\u202egnp.exe", "-rf", "a b", "$(reboot)",
               "%s%n%x", "../../etc/passwd", "\\", "'\"", "NaN", "\u00a0"]
# Documented bounds (inclusive; None is open): outside them a value must be refused.
FILTER_BOUNDS = {"min_num_gpus": (1, None), "max_num_gpus": (1, None), "min_gpu_ram_gb": (0, None),
                 "min_total_gpu_ram_gb": (0, None), "min_cpu_ram_gb": (0, None), "max_dph": (1e-9, None),
                 "min_reliability": (0, 1), "min_cuda": (0, None), "min_disk_gb": (0, None),
                 "min_inet_down": (0, None), "min_direct_ports": (None, None), "limit": (1, 1000)}
COMMON_BOUNDS = {"api_timeout": (1, 3600), "api_retries": (0, 100)}
BOUNDS = {
    "vast_instance": dict(COMMON_BOUNDS, id=(1, None), offer_id=(1, None), max_offer_tries=(1, None),
                          disk_gb=(8, 16384), bid_price=(0.001, 128), wait_timeout=(1, None),
                          poll_interval=(1e-9, None), exact_count=(0, 20), min_credit=(0, None),
                          max_dph=(1e-9, None), max_exact_count=(1, None)),
    "vast_offer_info": dict(COMMON_BOUNDS, allocated_storage=(1e-9, 16384), **FILTER_BOUNDS),
    "vast_instance_info": dict(COMMON_BOUNDS, id=(1, None), parallel=(1, 32)),
    "vast_billing_info": dict(COMMON_BOUNDS),
}
# Labels that name what an inventory builds (Ansible's groups, localhost, this plugin's groups).
RESERVED_LABELS = ["all", "ungrouped", "localhost", "127.0.0.1", "vast", "vast_status_running"]


def _inside(value, bounds):
    low, high = bounds
    return (low is None or value >= low) and (high is None or value <= high)


def _has_space(text):
    return any(c.isspace() for c in text)


def _must_refuse_string(module, name, value):
    """Whether an odd string in option ``name`` must be refused (the option's documented rule)."""
    if name == "image":
        return not value.strip() or _has_space(value) or value.startswith("-") or len(value) > 1024 \
            or any(ord(c) < 32 for c in value)
    if name == "label" and module == "vast_instance":   # elsewhere a label is only a filter
        return not value.strip() or len(value) > 256
    if name == "name":
        return value == ""
    if name in ("ports", "ssh_keys", "countries"):
        return True   # no odd string is a port, an OpenSSH key line or a country code
    if name == "gpu_names":
        return not value.strip()
    if name == "onstart":
        return len(value) > 4096
    if name in ("start", "end"):
        return True   # no odd string is a time
    return False


def _hcase(kind, args, expect, must_refuse, check=False):
    return {"kind": kind, "args": args, "expect": list(expect), "expect_all": False, "must_refuse": must_refuse,
            "check": check and not must_refuse}


def _numeric_options(spec):
    """(path, option spec) for every int/float option, offer_filters suboptions included."""
    out = []
    for name, opt in sorted(spec.items()):
        if opt.get("type") in ("int", "float"):
            out.append(((name,), opt))
        if opt.get("options"):
            out.extend(((name, sub), so) for sub, so in sorted(opt["options"].items())
                       if so.get("type") in ("int", "float"))
    return out


def _string_options(spec):
    """(path, is_list) for every str option (and list-of-str option) that takes free text."""
    out = []
    for name, opt in sorted(spec.items()):
        t = opt.get("type", "str")
        if opt.get("no_log") or t == "path" or name in ("api_key", "args"):
            continue
        if t == "str" or (t == "list" and opt.get("elements") == "str"):
            out.append(((name,), t == "list"))
        if opt.get("options"):
            out.extend(((name, sub), so.get("type") == "list") for sub, so in sorted(opt["options"].items())
                       if so.get("type", "str") in ("str", "list") and so.get("elements", "str") == "str"
                       and so.get("type", "str") != "dict")
    return out


def _with(base, path, value):
    args = json.loads(json.dumps(base))
    if len(path) == 1:
        args[path[0]] = value
    else:
        args[path[0]] = dict(args.get(path[0]) or {}, **{path[1]: value})
    return args


def hostile_families(module, api_key):
    """{family: [cases]} for ``module``; every family is complete (make faults runs them all)."""
    spec = module_spec(module)["argument_spec"]
    base = BASE[module]
    mutating = module == "vast_instance"
    fam = {"non-finite": [], "huge/negative": [], "odd string": [], "api key whitespace": []}
    for path, opt in _numeric_options(spec):
        name = path[-1]
        dotted = ".".join(path)
        if opt.get("type") == "float":
            for v in NON_FINITE:
                fam["non-finite"].append(_hcase("non-finite float", _with(base, path, v), [dotted], True))
        bounds = (FILTER_BOUNDS if len(path) > 1 else BOUNDS[module]).get(name, (None, None))
        values = HUGE_INTS + NEG_INTS + [0] if opt.get("type") == "int" else [1e300, -1e300, -1.5, 0.0, 1e12]
        for v in values:
            refuse = not _inside(v, bounds)
            fam["huge/negative"].append(_hcase("huge/negative number", _with(base, path, v), [name], refuse,
                                               check=mutating))
    for raw in ("query",) if module == "vast_offer_info" else ():
        for v in (NAN, INF, -INF):
            fam["non-finite"].append(_hcase("non-finite in raw dict", dict(base, query={"dph_total": {"lte": v}}),
                                            ["query"], True))
    if module == "vast_instance":
        for v in (NAN, INF):
            fam["non-finite"].append(_hcase("non-finite in raw dict", dict(
                base, offer_filters=dict(base["offer_filters"], query={"dph_total": {"lte": v}})),
                ["offer_filters.query"], True))
    if module == "vast_billing_info":
        for name in ("start", "end"):
            for v in ("nan", "inf", "-inf", "1e400", "-99999999999999999999d", "99999999999999"):
                fam["non-finite"].append(_hcase("time out of range", dict(base, **{name: v}), [name], True))
    for path, is_list in _string_options(spec):
        opt = spec[path[0]] if len(path) == 1 else spec[path[0]]["options"][path[1]]
        for v in ODD_STRINGS:
            refuse = bool(opt.get("choices")) or _must_refuse_string(module, path[-1], v)
            value = [v] if is_list else v
            fam["odd string"].append(_hcase("odd string", _with(base, path, value), [path[-1]], refuse,
                                            check=mutating))
    if module == "vast_instance":
        for v in ODD_STRINGS:
            ok_name = bool(re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", v))
            fam["odd string"].append(_hcase("odd string", dict(base, env={v: "1"}), ["env"], not ok_name,
                                            check=True))
            fam["odd string"].append(_hcase("odd string", dict(base, env={"ODD": v}), ["env"], False, check=True))
    for v in (" %s" % api_key, "%s\n" % api_key, "\t%s\r\n" % api_key, "  %s  " % api_key):
        fam["api key whitespace"].append(_hcase("api key, surrounding whitespace", dict(base, api_key=v),
                                                ["api_key"], False, check=mutating))
    for v in ("%s %s" % (api_key, api_key), "%s\n%s" % (api_key, api_key), "%s %s" % (api_key[:6], api_key[6:]),
              api_key + "\u2019"):
        fam["api key whitespace"].append(_hcase("api key, inner whitespace", dict(base, api_key=v),
                                                ["api_key"], True))
    if module == "vast_instance":
        fam["reserved label"] = [_hcase("reserved label", dict(base, label=v), ["label"], False, check=True)
                                 for v in RESERVED_LABELS]
    return fam


def hostile(module, count, api_key, seed=0):
    """``count`` hostile cases (None: all), drawn round-robin over the families so a small
    sample covers every one; reproducible for a seed."""
    fams = hostile_families(module, api_key)
    rnd = random.Random(seed)
    pools = []
    for name in sorted(fams):
        pool = list(fams[name])
        rnd.shuffle(pool)
        pools.append(pool)
    out = []
    while any(pools) and (count is None or len(out) < count):
        for pool in pools:
            if pool and (count is None or len(out) < count):
                out.append(pool.pop(0))
    return out


def leaked(text, secret):
    """Forms of ``secret`` (raw, repr, JSON, URL-encoded) found in ``text``."""
    if not secret or not text:
        return []
    from urllib.parse import quote
    forms = {secret, repr(secret)[1:-1], json.dumps(secret)[1:-1], quote(secret, safe="")}
    return sorted(f for f in forms if f in text)


def yaml_playbook(tasks, name):
    """Like common.playbook, as YAML: float NaN/infinity must reach Ansible as .nan/.inf."""
    import yaml
    play = {"name": name, "hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": tasks}
    return yaml.safe_dump([play], allow_unicode=True, width=10 ** 6)


def run_module_cases(sim, module, cases, workdir):
    """One playbook with one task per case; returns per-case verdicts."""
    tasks = []
    for i, c in enumerate(cases):
        args = dict(c["args"])
        if args.get("label") == BASE["vast_instance"]["label"]:
            args["label"] = "bad-input-%03d" % i  # a missed check rents anew, never finds an old one
        task = {"name": "case %03d" % i, FQCN % module: args, "ignore_errors": True}
        if c.get("check"):
            task["check_mode"] = True
        tasks.append(task)
    audit = os.path.join(workdir, "audit-%s.jsonl" % module)
    sim.clear_requests()
    res = run_playbook(yaml_playbook(tasks, "bad input: %s" % module), env=dict(sim.env, VAST_AUDIT_LOG=audit),
                       timeout=1800)
    log = sim.requests()
    windows = task_window(res)
    verdicts = []
    for i, c in enumerate(cases):
        name = "case %03d" % i
        try:
            r = res.task(name)
        except KeyError:
            r = {}
        msg = r.get("msg") if isinstance(r.get("msg"), str) else json.dumps(r.get("msg"))
        start, end = windows.get(name, (0, 0))
        # no slack before the start: a request logged before this task began belongs to the one
        # before it (its module cannot have run yet), and a refused case must show none
        calls = [e for e in requests_between(log, start, end) if e["t"] >= start]
        mutations = [e for e in calls if is_mutating(e)]
        found = [t for t in c["expect"] if mentions(msg, t)]
        named = (len(found) == len(c["expect"])) if c["expect_all"] else bool(found)
        problems = []
        must_refuse = c.get("must_refuse", True)
        leaks = leaked(json.dumps(r, default=str), sim.api_key)
        if leaks:
            problems.append("API key in the task result (%d form(s))" % len(leaks))
        if not r:
            problems.append("no result")
        elif not must_refuse:
            # may pass: a clean success, or a failure a person can act on; never a crash
            if r.get("failed") and not clear_msg(msg):
                problems.append("unclear failure")
            if c["kind"].startswith("api key, surrounding") and r.get("failed"):
                problems.append("key with surrounding whitespace refused: %s" % (msg or "")[:120])
        elif not r.get("failed"):
            problems.append("accepted (changed=%s)" % r.get("changed"))
        else:
            if not clear_msg(msg):
                problems.append("unclear message")
            if not named:
                problems.append("message does not name %s" % " and ".join(c["expect"]) if c["expect_all"]
                                else "message names none of %s" % c["expect"])
        if mutations:
            problems.append("mutating request(s): %s" % ", ".join(
                "%s %s -> %s" % (e["method"], e["path"], e["status"]) for e in mutations))
        if must_refuse and calls:
            problems.append("refused only after %d API call(s)" % len(calls))
        verdicts.append(dict(module=module, index=i, kind=c["kind"], args=c["args"], msg=msg,
                             api_calls=len(calls), mutations=len(mutations), problems=problems,
                             must_refuse=must_refuse, hostile="must_refuse" in c,
                             refused=bool(r.get("failed")), leaks=len(leaks)))
    audit_lines = open(audit).read().splitlines() if os.path.exists(audit) else []
    return verdicts, res, audit_lines


def reserved_label_inventory(sim, labels=RESERVED_LABELS):
    """Rent one instance per reserved label (real creates), list the account with the real
    ansible-inventory, destroy them. Every instance must be a host, none named like a group."""
    label_prefix = "rl-"
    tasks = [{"name": "rent %s" % lb, FQCN % "vast_instance": dict(
        BASE["vast_instance"], label=lb, wait=True, wait_timeout=120, poll_interval=0.3)} for lb in labels]
    tasks.append({"name": "rent a normal one", FQCN % "vast_instance": dict(
        BASE["vast_instance"], label=label_prefix + "1", wait=True, wait_timeout=120, poll_interval=0.3)})
    rented = run_playbook(yaml_playbook(tasks, "reserved labels: rent"), env=sim.env, timeout=900)
    rows = [r for r in sim.state()["instances"] if r.get("destroyed_at") is None]
    inv = run_inventory("plugin: llmops.vastai.vast\nstatuses: [running]\n"
                        "keyed_groups: [{key: vast_num_gpus | string, prefix: gpus}]\n", env=sim.env)
    hostvars = (inv.data.get("_meta") or {}).get("hostvars") or {}
    ids = {}
    for host, hv in hostvars.items():
        vid = hv.get("vast_id")
        ids[vid.get("__ansible_unsafe") if isinstance(vid, dict) else vid] = host
    problems = []
    if rented.rc != 0:
        problems.append("renting failed: %s" % rented.summary()[:300])
    if inv.rc != 0:
        problems.append("ansible-inventory failed: %s" % inv.stderr[-300:])
    missing = [r["id"] for r in rows if r["id"] not in ids]
    if missing:
        problems.append("instances without a host: %s" % missing)
    named_like_group = sorted(h for h in hostvars if h in labels)
    if named_like_group:
        problems.append("hosts named like a group or localhost: %s" % named_like_group)
    if (label_prefix + "1") not in hostvars:
        problems.append("a normal label lost its name")
    sim.destroy_all()
    return dict(labels=len(labels), instances=len(rows), hosts=len(hostvars),
                fallbacks=sum(1 for h in hostvars if h.startswith("vast-")), problems=problems,
                seconds=round(rented.duration + inv.duration, 1))


def campaign(per_module=100, seed=0, modules=MODULES, out=sys.stdout, hostile_cases=None):
    """Run the campaign on a fresh simulator; returns (verdicts, summary dict).

    ``hostile_cases``: how many hostile cases per module (None: every one, 0: none)."""
    # a distinctive key, so that any form of it in any output is found
    api_key = "SECRET-badinput-" + pysecrets.token_hex(12)
    sim = launch(hosts="none", seed=seed or 1, api_key=api_key)
    verdicts, extra = [], {}
    try:
        with tempfile.TemporaryDirectory(prefix="bad-input-") as tmp:
            for module in modules:
                cases = generate(module, per_module, seed) if per_module else []
                if hostile_cases != 0:
                    cases += hostile(module, hostile_cases, api_key, seed)
                v, res, audit_lines = run_module_cases(sim, module, cases, tmp)
                verdicts.extend(v)
                extra[module] = dict(rc=res.rc, seconds=round(res.duration, 1), audit_lines=len(audit_lines),
                                     output_leaks=len(leaked(res.stdout + res.stderr, api_key)))
            state = sim.state()   # before the reserved-label rentals: refused cases must have rented nothing
            reserved = reserved_label_inventory(sim) if "vast_instance" in modules and hostile_cases != 0 else None
            live_after = [r for r in sim.state()["instances"] if r.get("destroyed_at") is None]
    finally:
        sim.stop()
    live = [r for r in state["instances"] if r.get("destroyed_at") is None]
    created = state["instances"]
    summary = summarize(verdicts, extra, created, live, seed)
    summary["reserved_labels"] = reserved
    summary["instances_live_at_end"] = len(live_after)
    if reserved and reserved["problems"]:
        summary["bad"] += len(reserved["problems"])
    print_summary(summary, verdicts, out)
    return verdicts, summary


def summarize(verdicts, extra, created, live, seed):
    per = {}
    for v in verdicts:
        m = per.setdefault(v["module"], dict(cases=0, rejected=0, named=0, api_calls=0, cases_with_calls=0,
                                            mutations=0, bad=0, kinds={}, must_refuse=0, may_pass=0, passed=0,
                                            refused_mutations=0, refused_calls=0, leaks=0, hostile=0))
        m["cases"] += 1
        m["hostile"] += 1 if v.get("hostile") else 0
        m["kinds"][v["kind"]] = m["kinds"].get(v["kind"], 0) + 1
        if v.get("must_refuse", True):
            m["must_refuse"] += 1
            rejected = not any(p.startswith(("accepted", "no result")) for p in v["problems"])
            m["rejected"] += 1 if rejected else 0
            m["named"] += 1 if rejected and not any("message" in p for p in v["problems"]) else 0
            m["refused_mutations"] += v["mutations"]
            m["refused_calls"] += v["api_calls"]
        else:
            m["may_pass"] += 1
            m["passed"] += 0 if v.get("refused") else 1
        m["api_calls"] += v["api_calls"]
        m["cases_with_calls"] += 1 if v["api_calls"] else 0
        m["mutations"] += v["mutations"]
        m["leaks"] += v.get("leaks", 0)
        m["bad"] += 1 if v["problems"] else 0
        m.update(extra.get(v["module"], {}))
    for m in per.values():
        m["leaks"] += m.get("output_leaks", 0)
    return dict(seed=seed, modules=per, instances_created=len(created), instances_live=len(live),
                cases=len(verdicts), bad=sum(1 for v in verdicts if v["problems"]),
                leaks=sum(m["leaks"] for m in per.values()),
                refused_mutations=sum(m["refused_mutations"] for m in per.values()))


def print_summary(summary, verdicts, out=sys.stdout):
    w = out.write
    w("\n=== bad-input campaign (seed %s) ===\n" % summary["seed"])
    w("%-20s %6s %7s %11s %9s %12s %10s %10s %9s %6s %8s\n" % (
        "module", "cases", "hostile", "must refuse", "rejected", "msg names it", "may pass", "passed",
        "mutations", "leaks", "defects"))
    for m, s in summary["modules"].items():
        w("%-20s %6d %7d %11d %9d %12d %10d %10d %9d %6d %8d\n" % (
            m, s["cases"], s["hostile"], s["must_refuse"], s["rejected"], s["named"], s["may_pass"], s["passed"],
            s["refused_mutations"], s["leaks"], s["bad"]))
    w("mutations on refused cases: %d; API calls on refused cases: %d; key leaks: %d\n" % (
        summary["refused_mutations"], sum(s["refused_calls"] for s in summary["modules"].values()),
        summary["leaks"]))
    w("instances created on the simulator: %d (live: %d)\n" % (summary["instances_created"], summary["instances_live"]))
    r = summary.get("reserved_labels")
    if r:
        w("reserved labels: %d instances labelled %s + 1 normal -> ansible-inventory: %d hosts (%d as vast-<id>), "
          "%s; live after destroy: %d\n" % (r["instances"] - 1, "/".join(RESERVED_LABELS), r["hosts"], r["fallbacks"],
                                            "; ".join(r["problems"]) or "every instance listed",
                                            summary.get("instances_live_at_end", 0)))
    w("playbook time per module: %s\n" % ", ".join("%s %ss" % (m, s.get("seconds")) for m, s in summary["modules"].items()))
    for m, s in summary["modules"].items():
        w("%s kinds: %s\n" % (m, ", ".join("%s %d" % kv for kv in sorted(s["kinds"].items()))))
    shown = {}
    for v in verdicts:  # one sample message per (module, kind)
        if not v["problems"] and (v["module"], v["kind"]) not in shown:
            shown[(v["module"], v["kind"])] = v["msg"]
    w("sample messages:\n")
    for (m, k), msg in sorted(shown.items()):
        w("  %s / %s: %s\n" % (m, k, (msg or "")[:160]))
    bad = [v for v in verdicts if v["problems"]]
    if bad:
        w("DEFECTS (%d cases):\n" % len(bad))
        for v in bad:
            w("  %s case %03d [%s] args=%s\n    -> %s | msg: %s\n" % (
                v["module"], v["index"], v["kind"], json.dumps(v["args"], default=str)[:300],
                "; ".join(v["problems"]), (v["msg"] or "")[:200]))
    out.flush()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-module", type=int, default=100)
    ap.add_argument("--seed", type=int, default=int(os.environ.get("CAMPAIGN_SEED", "6")))
    ap.add_argument("--module", action="append", choices=MODULES)
    ap.add_argument("--hostile", type=int, default=None, help="hostile cases per module (default: all)")
    a = ap.parse_args(argv)
    _, summary = campaign(a.per_module, a.seed, tuple(a.module or MODULES), hostile_cases=a.hostile)
    return 1 if summary["bad"] or summary["instances_created"] or summary["leaks"] else 0


if __name__ == "__main__":
    sys.exit(main())
