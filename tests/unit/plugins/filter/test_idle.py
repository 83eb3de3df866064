"""Unit tests for plugins/filter/idle.py: metrics parsing, access-log parsing, idle decision."""

import json

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.vastai.plugins.filter import idle

# Shaped like vLLM V1 output: two engines, several finish reasons, HELP/TYPE lines, histograms.
METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="qwen"} 1.0
vllm:num_requests_running{engine="1",model_name="qwen"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="qwen"} 0.0
vllm:num_requests_waiting{engine="1",model_name="qwen"} 4.0
# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{engine="0",finished_reason="stop",model_name="qwen"} 10.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="qwen"} 3.0
vllm:request_success_total{engine="0",finished_reason="abort",model_name="qwen"} 1.0
vllm:request_success_total{engine="1",finished_reason="stop",model_name="qwen"} 6.0
# TYPE vllm:request_success_created gauge
vllm:request_success_created{engine="0",finished_reason="stop",model_name="qwen"} 1.7e9
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="qwen"} 1200.0
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="qwen"} 3400.0
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{le="1.0",model_name="qwen"} 3.0
vllm:e2e_request_latency_seconds_bucket{le="+Inf",model_name="qwen"} 20.0
vllm:e2e_request_latency_seconds_count{model_name="qwen"} 20.0
vllm:e2e_request_latency_seconds_sum{model_name="qwen"} 40.5
"""


class TestVllmActivity:
    def test_sums_across_label_sets(self):
        got = idle.vllm_activity(METRICS)
        assert got["requests_running"] == 3
        assert got["requests_waiting"] == 4
        assert got["in_flight"] == 7
        # all finish reasons (stop, length, abort) on both engines
        assert got["request_success_total"] == 20.0
        assert got["prompt_tokens_total"] == 1200.0
        assert got["generation_tokens_total"] == 3400.0

    def test_idle_engine_reads_zero_not_none(self):
        text = ("# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{model_name=\"m\"} 0\n"
                "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name=\"m\"} 0\n")
        got = idle.vllm_activity(text)
        assert got["requests_running"] == 0 and got["requests_waiting"] == 0
        assert got["in_flight"] == 0
        assert got["request_success_total"] is None

    def test_absent_metrics_are_none(self):
        got = idle.vllm_activity("# TYPE other gauge\nother 1\n")
        assert got["requests_running"] is None
        assert got["in_flight"] is None and "without vLLM's" in got["problem"]
        assert idle.vllm_activity("")["in_flight"] is None
        assert idle.vllm_activity(None)["in_flight"] is None

    def test_untyped_metrics_without_type_lines(self):
        # Some exporters omit TYPE lines; the parser then names the family after the sample.
        got = idle.vllm_activity('vllm:num_requests_running{a="1"} 2\nvllm:request_success_total{r="stop"} 5\n')
        assert got["requests_running"] == 2
        assert got["request_success_total"] == 5.0

    def test_only_waiting_present_is_unknown(self):
        # half the picture: a request could be running; in flight is unknown, not 2
        got = idle.vllm_activity("vllm:num_requests_waiting 2\n")
        assert got["requests_waiting"] == 2 and got["in_flight"] is None

    def test_garbage_is_a_problem_not_a_crash(self):
        got = idle.vllm_activity("<html>502 Bad Gateway</html>\n")
        assert got["in_flight"] is None and "not Prometheus text" in got["problem"]

    def test_nan_gauge_is_unknown_not_zero(self):
        got = idle.vllm_activity("vllm:num_requests_running NaN\nvllm:num_requests_waiting 0\n")
        assert got["requests_running"] is None and got["in_flight"] is None
        assert "NaN" in got["problem"] or "nan" in got["problem"]

    def test_non_string_rejected(self):
        with pytest.raises(AnsibleFilterError):
            idle.vllm_activity({"a": 1})


def _line(**kw):
    base = {"msec": "1000.000", "request_time": "0.010", "status": "200", "uri": "/v1/chat/completions",
            "method": "POST"}
    base.update(kw)
    return json.dumps(base)


class TestNginxLastRequest:
    def test_start_is_end_minus_request_time(self):
        log = "\n".join([
            _line(msec="1000.500", request_time="0.500"),
            _line(msec="2000.000", request_time="1200.000"),  # a 20 min stream that began at 800
            _line(msec="1500.000", request_time="0.100"),
        ])
        got = idle.nginx_last_request(log)
        assert got["last_start"] == pytest.approx(1499.9)
        assert got["last_end"] == pytest.approx(2000.0)
        assert got["requests"] == 3

    def test_ignores_other_paths_and_unauthenticated(self):
        log = "\n".join([
            _line(msec="100", uri="/v1/models"),
            _line(msec="900", uri="/health"),
            _line(msec="950", uri="/metrics"),
            _line(msec="990", status="401"),
            _line(msec="995", status=403),
        ])
        got = idle.nginx_last_request(log)
        assert got["last_start"] == pytest.approx(99.99)
        assert got["requests"] == 1
        assert got["ignored"] == 2

    def test_ignore_statuses_configurable(self):
        log = _line(msec="990", status="401")
        assert idle.nginx_last_request(log, ignore_statuses=[])["last_start"] == pytest.approx(989.99)

    def test_bad_and_truncated_lines_are_skipped(self):
        log = "\n".join(["not json", _line(msec="50"), '{"msec": "60", "uri": "/v1/x", "sta', "[1, 2]",
                         json.dumps({"uri": "/v1/x", "status": 200}), ""])
        got = idle.nginx_last_request(log)
        assert got["last_start"] == pytest.approx(49.99)
        assert got["bad_lines"] == 4

    def test_empty_log(self):
        got = idle.nginx_last_request("")
        assert got == {"last_start": None, "last_end": None, "requests": 0, "ignored": 0, "bad_lines": 0}
        assert idle.nginx_last_request(None)["requests"] == 0

    def test_accepts_list_of_lines_and_dash_request_time(self):
        got = idle.nginx_last_request([_line(msec="70", request_time="-")])
        assert got["last_start"] == pytest.approx(70.0)

    def test_custom_prefix(self):
        log = "\n".join([_line(msec="10", uri="/v1/a"), _line(msec="20", uri="/v2/b")])
        assert idle.nginx_last_request(log, prefix="/v2")["last_start"] == pytest.approx(19.99)


# ------------------------------------------------------------------------------------------
# The decision, as a table. Clocks: the API's and the host's agree to a few seconds (as on
# vast.ai); the monotonic clock is the host's since boot.
# ------------------------------------------------------------------------------------------
NOW = 1_800_000_000.0
HOST = NOW + 4.0       # host clock 4 s ahead of the API: normal
MONO = 50_000.0        # host monotonic clock "now"
H, M = 3600.0, 60.0


def obs(**kw):
    """A healthy, reachable instance: 3 h into its session, the stack up since then, engine
    answering with nothing in flight, last request 1 h ago (so: idle)."""
    base = {
        "reachable": True, "failed_probes": 0,
        "api_now": NOW, "created_at": NOW - 4 * H, "session_started_at": NOW - 3 * H,
        "host_now": HOST, "host_monotonic": MONO,
        "stack_state": "active", "stack_started_at": HOST - 3 * H, "stack_started_mono": MONO - 3 * H,
        "engine": "ok", "requests_running": 0, "requests_waiting": 0,
        "log_state": "ok", "log_path": "/var/log/nginx/vllm-activity.log",
        "last_request_start": HOST - 3600.5, "last_request_end": HOST - 3600,
    }
    base.update(kw)
    return base


def raw(**kw):
    """What the host probe (idle_policy.gather) returns for the same healthy instance."""
    base = {
        "now": HOST, "monotonic": MONO,
        "log": {"state": "ok", "path": "/var/log/nginx/vllm-activity.log", "files": ["vllm-activity.log"],
                "last_start": HOST - 3600.5, "last_end": HOST - 3600, "ignored": 0, "bad_lines": 0},
        "unit": {"state": "active", "wall": HOST - 3 * H, "mono": MONO - 3 * H},
        "container": {"running": True, "status": "running", "started_at": HOST - 3 * H, "restarts": 0},
        "metrics": ("vllm:num_requests_running{engine=\"0\",model_name=\"m\"} 0.0\n"
                    "vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 0.0\n"),
        "metrics_error_kind": None, "metrics_error": None,
    }
    base.update(kw)
    return base


def from_raw(uptime_mins=180, **kw):
    return idle.idle_observation(raw(**kw), api_now=NOW, created_at=NOW - 4 * H, uptime_mins=uptime_mins)


POLICY = {"idle_minutes": 30, "boot_grace_minutes": 20, "ttl_hours": None, "unreachable_limit": 3,
          "unreachable_min_age_minutes": 30}
REFUSED = {"metrics": None, "metrics_error_kind": "refused", "metrics_error": "ConnectionRefusedError"}
LOADING_START = {"unit": {"state": "active", "wall": HOST - 40 * M, "mono": MONO - 40 * M},
                 "container": {"running": True, "status": "running", "started_at": HOST - 40 * M, "restarts": 0}}

# (id, observation, policy overrides, action, reason, text in message, unknown, stop_in_seconds)
# stop_in_seconds: a number (approx), None (never while this lasts) or ... (not checked)
CASES = [
    # --- the existing rules (controls) -------------------------------------------------------
    ("idle-1h-stops", obs(), {}, "stop", "idle", "idle for 60 min", False, 0),
    ("recent-request-keeps", obs(last_request_start=HOST - 601, last_request_end=HOST - 600), {},
     "keep", "active", "active 10 min ago", False, 20 * M),
    ("exactly-at-limit-stops", obs(last_request_start=HOST - 1801, last_request_end=HOST - 1800), {},
     "stop", "idle", "idle for 30 min", False, 0),
    ("long-stream-counts-until-its-end", obs(last_request_start=HOST - 2 * H, last_request_end=HOST - 300), {},
     "keep", "active", "active 5.0 min ago", False, 25 * M),
    ("running-request-keeps", obs(requests_running=1), {}, "keep", "busy", "1 request(s) in flight", False, None),
    ("waiting-request-keeps", obs(requests_waiting=1), {}, "keep", "busy", "in flight", False, None),
    ("many-in-flight-keep", obs(requests_running=2, requests_waiting=5), {}, "keep", "busy", "7 request(s)", False, None),
    ("in-flight-beats-ttl", obs(requests_running=1), {"ttl_hours": 1}, "keep", "busy", "past TTL", False, None),
    ("ttl-stops-even-when-active", obs(last_request_end=HOST - 5), {"ttl_hours": 2}, "stop", "ttl", "TTL of 2.0 h",
     False, 0),
    ("ttl-not-reached-counts-down", obs(last_request_start=HOST - 6, last_request_end=HOST - 5), {"ttl_hours": 4.1},
     "keep", "active", "active", False, 6 * M),
    ("ttl-zero-is-off", obs(last_request_end=HOST - 5, last_request_start=HOST - 6), {"ttl_hours": 0},
     "keep", "active", "", False, ...),
    ("grace-keeps-fresh-session", obs(session_started_at=NOW - 300, last_request_start=None, last_request_end=None,
                                      stack_started_at=HOST - 300, stack_started_mono=MONO - 300), {},
     "keep", "grace", "inside boot grace (5.0 min of 20 min)", False, 25 * M),
    ("grace-on-api-clock-not-host", obs(session_started_at=NOW - 600), {}, "keep", "grace", "boot grace", False, 10 * M),
    ("stack-restart-restarts-idle-clock", obs(stack_started_at=HOST - 60, stack_started_mono=MONO - 60), {},
     "keep", "active", "active 1.0 min ago", False, 29 * M),
    ("no-activity-ever-counts-from-session", obs(last_request_start=None, last_request_end=None, stack_started_at=None,
                                                 stack_started_mono=None), {}, "stop", "idle", "idle for 180 min",
     False, 0),
    ("engine-down-past-grace-stops", from_raw(container={"running": False, "status": "exited", "started_at": None,
                                                         "restarts": 0}, unit={"state": "inactive", "wall": None,
                                                                               "mono": None}, **REFUSED),
     {}, "stop", "idle", "engine not running (container exited)", False, 0),
    ("engine-down-kept-when-configured", from_raw(container={"running": False, "status": "exited", "started_at": None,
                                                             "restarts": 0}, **REFUSED),
     {"stop_when_engine_down": False}, "keep", "engine_down", "stop_when_engine_down is off", False, None),
    ("engine-down-inside-grace-keeps", obs(engine=None, requests_running=None, requests_waiting=None,
                                           session_started_at=NOW - 60),
     {}, "keep", "grace", "boot grace", False, ...),
    ("unreachable-below-limit-reported", obs(reachable=False, failed_probes=2), {}, "keep", "unreachable", "2/3",
     False, None),
    ("unreachable-at-limit-stops", obs(reachable=False, failed_probes=3), {}, "stop", "unreachable", "3 consecutive",
     False, 0),
    ("unreachable-young-session-kept", obs(reachable=False, failed_probes=9, session_started_at=NOW - 2400),
     {"unreachable_min_age_minutes": 60}, "keep", "unreachable", "younger", False, None),
    ("unreachable-limit-zero-only-reports", obs(reachable=False, failed_probes=100), {"unreachable_limit": 0},
     "keep", "unreachable", "off", False, None),
    ("unreachable-past-ttl-stops", obs(reachable=False), {"ttl_hours": 1}, "stop", "ttl", "unreachable and past", False, 0),
    ("default-policy-stops-at-31-min", obs(last_request_start=HOST - 31 * M, last_request_end=HOST - 31 * M,
                                           stack_started_at=None), None, "stop", "idle", "", False, 0),
    ("default-policy-keeps-at-29-min", obs(last_request_start=HOST - 29 * M, last_request_end=HOST - 29 * M,
                                           stack_started_at=None), None, "keep", "active", "", False, 1 * M),
    ("string-numbers-from-templates", obs(api_now=str(NOW), last_request_end=str(HOST - 4000), requests_running="0",
                                          last_request_start=None), {"idle_minutes": "30", "boot_grace_minutes": "20"},
     "stop", "idle", "", False, 0),

    # --- metrics answer without vLLM's gauges: unknown, keep, say why -----------------------
    ("metrics-empty-body", from_raw(metrics=""), {}, "keep", "unknown", "empty body", True, None),
    ("metrics-nan-gauge", from_raw(metrics="vllm:num_requests_running NaN\nvllm:num_requests_waiting 0\n"), {},
     "keep", "unknown", "vllm:num_requests_running", True, None),
    ("metrics-another-engine", from_raw(metrics="# TYPE sglang:num_running_reqs gauge\nsglang:num_running_reqs 1\n"),
     {}, "keep", "unknown", "without vLLM's vllm:num_requests_running and vllm:num_requests_waiting", True, None),
    ("metrics-renamed-gauge", from_raw(metrics="vllm:num_requests_running_total 1\nvllm:num_requests_waiting 0\n"),
     {}, "keep", "unknown", "without vLLM's vllm:num_requests_running", True, None),
    ("metrics-not-prometheus", from_raw(metrics="<html><body>502 Bad Gateway</body></html>\n"), {},
     "keep", "unknown", "not Prometheus text", True, None),
    ("metrics-http-500", from_raw(metrics=None, metrics_error_kind="http", metrics_error="HTTP 500"), {},
     "keep", "unknown", "/metrics failed: HTTP 500", True, None),
    ("metrics-no-gauges-past-ttl-still-kept", from_raw(metrics=""), {"ttl_hours": 1}, "keep", "unknown", "empty", True,
     None),
    ("metrics-gauges-read-control", from_raw(), {}, "stop", "idle", "idle for 60 min", False, 0),

    # --- the engine loads: the port refuses while the container runs ------------------------
    ("loading-40-min-kept", from_raw(**dict(REFUSED, **LOADING_START)), {}, "keep", "loading",
     "engine loading for 40 min (load_timeout 120 min)", False, 80 * M),
    ("loading-64gb-past-grace-and-idle-kept", from_raw(**dict(REFUSED, unit={"state": "active", "wall": HOST - 100 * M,
                                                                             "mono": MONO - 100 * M},
                                                              container={"running": True, "status": "running",
                                                                         "started_at": HOST - 100 * M, "restarts": 0})),
     {}, "keep", "loading", "loading for 100 min", False, 20 * M),
    ("loading-past-timeout-stops", from_raw(**dict(REFUSED, unit={"state": "active", "wall": HOST - 130 * M,
                                                                  "mono": MONO - 130 * M},
                                                   container={"running": True, "status": "running",
                                                              "started_at": HOST - 130 * M, "restarts": 0})),
     {}, "stop", "unhealthy", "never became healthy in 130 min", False, 0),
    ("loading-past-timeout-kept-by-policy", from_raw(**dict(REFUSED, unit={"state": "active", "wall": HOST - 130 * M,
                                                                           "mono": MONO - 130 * M},
                                                            container={"running": True, "status": "running",
                                                                       "started_at": HOST - 130 * M, "restarts": 0})),
     {"stop_when_never_healthy": False}, "keep", "unhealthy", "never became healthy in 130 min", False, None),
    ("loading-while-image-pull-activating", from_raw(**dict(REFUSED, container=None,
                                                            unit={"state": "activating", "wall": None, "mono": None})),
     {}, "keep", "unknown", "start time is unknown", True, None),
    ("loading-inside-grace", from_raw(uptime_mins=5, **dict(REFUSED, **LOADING_START)), {}, "keep", "grace",
     "loading, inside boot grace", False, 80 * M),
    ("loading-past-ttl-stops", from_raw(**dict(REFUSED, **LOADING_START)), {"ttl_hours": 3.5}, "stop", "ttl", "TTL",
     False, 0),
    ("crash-looping-container-measured-from-stack-start",
     from_raw(**dict(REFUSED, unit={"state": "active", "wall": HOST - 3 * H, "mono": MONO - 3 * H},
                     container={"running": True, "status": "running", "started_at": HOST - 30, "restarts": 7})),
     {}, "stop", "unhealthy", "never became healthy in 180 min", False, 0),

    # --- clocks: keep and say why, never clamp silently --------------------------------------
    ("clock-stepped-back-request-in-future", obs(last_request_start=HOST + 3599, last_request_end=HOST + 3600,
                                                 stack_started_mono=None), {},
     "keep", "clock", "stamped 60 min after the host's clock", True, None),
    ("clock-jitter-within-tolerance", obs(last_request_start=HOST + 49, last_request_end=HOST + 50), {},
     "keep", "active", "", False, ...),
    ("clock-stepped-forward-wall-vs-monotonic", obs(host_now=HOST, stack_started_mono=MONO - 3 * H + 45 * M), {},
     "keep", "clock", "stepped forward by 45 min", True, None),
    ("clock-stepped-back-wall-vs-monotonic", obs(stack_started_mono=MONO - 3 * H - 20 * M,
                                                 last_request_start=None, last_request_end=None), {},
     "keep", "clock", "stepped back by 20 min", True, None),
    ("clock-step-within-bound-control", obs(stack_started_mono=MONO - 3 * H + 2 * M), {}, "stop", "idle", "", False, 0),
    ("clock-host-vs-api-skew", obs(host_now=NOW + 2 * H, stack_started_at=NOW + 2 * H - 3 * H,
                                   last_request_start=NOW + H - 1, last_request_end=NOW + H), {},
     "keep", "clock", "ahead of the API's", True, None),
    ("clock-skew-check-off", obs(host_now=NOW + 2 * H, stack_started_at=NOW + 2 * H - 3 * H,
                                 last_request_start=NOW + H - 1, last_request_end=NOW + H),
     {"max_clock_skew_minutes": 0}, "stop", "idle", "idle for 60 min", False, 0),
    ("clock-skew-does-not-block-ttl", obs(host_now=NOW - 2 * H), {"ttl_hours": 2}, "stop", "ttl", "", False, 0),

    # --- missing session facts: unknown, never "forever" -------------------------------------
    ("no-uptime-no-unit-start-unknown", from_raw(uptime_mins=None, unit={"state": "not-found", "wall": None, "mono": None},
                                                 log={"state": "ok", "last_start": None, "last_end": None}),
     {}, "keep", "unknown", "session start unknown", True, None),
    ("no-uptime-old-creation-fresh-stack-grace",
     idle.idle_observation(raw(unit={"state": "active", "wall": HOST - 120, "mono": MONO - 120},
                               log={"state": "ok", "last_start": None, "last_end": None}),
                           api_now=NOW, created_at=NOW - 48 * H, uptime_mins=None),
     {}, "keep", "grace", "inside boot grace (2.0 min", False, 28 * M),
    ("no-uptime-stack-age-past-grace-control", from_raw(uptime_mins=None), {}, "stop", "idle", "", False, 0),

    # --- the activity log itself ---------------------------------------------------------------
    ("activity-log-missing-unknown", from_raw(log={"state": "missing", "path": "/var/log/nginx/vllm-activity.log"}),
     {}, "keep", "unknown", "no activity log at /var/log/nginx/vllm-activity.log", True, None),
    ("activity-log-truncated-unknown", from_raw(log={"state": "truncated", "path": "/x.log"}), {},
     "keep", "unknown", "read budget", True, None),
    ("activity-log-not-required", from_raw(log={"state": "missing", "path": "/x.log"}),
     {"require_activity_log": False}, "stop", "idle", "idle for 180 min", False, 0),
]


@pytest.mark.parametrize("observation,policy,action,reason,text,unknown,stop_in",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decision_table(observation, policy, action, reason, text, unknown, stop_in):
    pol = None if policy is None else dict(POLICY, **policy)
    d = idle.idle_decision(observation, pol)
    assert (d["action"], d["reason"]) == (action, reason), d["message"]
    assert text in d["message"], d["message"]
    assert d["unknown"] is unknown
    if stop_in is None:
        assert d["stop_in_seconds"] is None and d["when"].startswith("not while"), d
    elif stop_in is not ...:
        assert d["stop_in_seconds"] == pytest.approx(stop_in, abs=10), d
        assert d["when"] == ("now" if stop_in == 0 else d["when"])


def test_table_is_big_enough():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


def test_idle_never_clamped():
    d = idle.idle_decision(obs(last_request_start=HOST + 49, last_request_end=HOST + 50), POLICY)
    assert d["idle_seconds"] == pytest.approx(-50)  # reported as it is, inside the tolerance


def test_bad_inputs_raise():
    with pytest.raises(AnsibleFilterError, match="api_now"):
        idle.idle_decision(obs(api_now=None), POLICY)
    with pytest.raises(AnsibleFilterError, match="idle_minutes"):
        idle.idle_decision(obs(), dict(POLICY, idle_minutes="soon"))
    with pytest.raises(AnsibleFilterError, match="engine"):
        idle.idle_decision(obs(engine="sleeping"), POLICY)
    with pytest.raises(AnsibleFilterError):
        idle.idle_decision(["not", "a", "dict"], POLICY)


class TestSmallHelpers:
    def test_session_cost(self):
        assert idle.session_cost(0.4, 3600) == 0.4
        assert idle.session_cost("0.35", 5400) == 0.53
        assert idle.session_cost(None, 100) == 0

    def test_duration_human(self):
        assert idle.duration_human(3725) == "1h 02m 05s"
        assert idle.duration_human(None) == "unknown"
        assert idle.duration_human(-3) == "0h 00m 00s"

    def test_filter_map(self):
        names = set(idle.FilterModule().filters())
        assert {"vllm_activity", "nginx_last_request", "idle_decision", "idle_observation", "session_cost"} <= names
