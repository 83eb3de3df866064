"""Unit tests for plugins/filter/idle.py: metrics parsing, access-log parsing, idle decision."""

import importlib.util
import json
import pathlib

import pytest
from ansible.errors import AnsibleFilterError

_PATH = pathlib.Path(__file__).resolve().parents[4] / "plugins" / "filter" / "idle.py"
_spec = importlib.util.spec_from_file_location("llmops_filter_idle", _PATH)
idle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(idle)

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
        assert got["in_flight"] is None
        assert idle.vllm_activity("")["in_flight"] is None
        assert idle.vllm_activity(None)["in_flight"] is None

    def test_untyped_metrics_without_type_lines(self):
        # Some exporters omit TYPE lines; the parser then names the family after the sample.
        got = idle.vllm_activity('vllm:num_requests_running{a="1"} 2\nvllm:request_success_total{r="stop"} 5\n')
        assert got["requests_running"] == 2
        assert got["request_success_total"] == 5.0

    def test_only_waiting_present(self):
        got = idle.vllm_activity("vllm:num_requests_waiting 2\n")
        assert got["in_flight"] == 2

    def test_garbage_raises_clear_error(self):
        with pytest.raises(AnsibleFilterError, match="not Prometheus text"):
            idle.vllm_activity("<html>502 Bad Gateway</html>\n")

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


NOW_API = 1_000_000.0
NOW_HOST = 5_000_000.0  # deliberately a different clock


def obs(**kw):
    base = {
        "reachable": True, "failed_probes": 0,
        "host_now": NOW_HOST, "last_request_start": None, "last_request_end": None,
        "stack_started_at": NOW_HOST - 3 * 3600,
        "requests_running": 0, "requests_waiting": 0,
        "api_now": NOW_API, "created_at": NOW_API - 4 * 3600, "session_started_at": NOW_API - 3 * 3600,
    }
    base.update(kw)
    return base


POLICY = {"idle_minutes": 30, "boot_grace_minutes": 20, "ttl_hours": None, "unreachable_limit": 3,
          "unreachable_min_age_minutes": 30}


class TestIdleDecision:
    def test_idle_instance_stops(self):
        d = idle.idle_decision(obs(last_request_start=NOW_HOST - 3600, last_request_end=NOW_HOST - 3590), POLICY)
        assert d["action"] == "stop" and d["reason"] == "idle"
        assert d["idle_seconds"] == pytest.approx(3590)
        assert "idle for" in d["message"]

    def test_recent_request_keeps(self):
        d = idle.idle_decision(obs(last_request_start=NOW_HOST - 600, last_request_end=NOW_HOST - 599), POLICY)
        assert d["action"] == "keep" and d["reason"] == "active"
        assert d["idle_seconds"] == pytest.approx(599)

    def test_exactly_at_limit_stops(self):
        d = idle.idle_decision(obs(last_request_start=NOW_HOST - 1800, stack_started_at=None), POLICY)
        assert d["action"] == "stop"

    def test_long_stream_counts_until_its_end(self):
        # started 2 h ago, ended 5 min ago: the engine was busy until 5 min ago
        d = idle.idle_decision(obs(last_request_start=NOW_HOST - 7200, last_request_end=NOW_HOST - 300), POLICY)
        assert d["action"] == "keep" and d["reason"] == "active"

    @pytest.mark.parametrize("running,waiting", [(1, 0), (0, 1), (2, 5)])
    def test_in_flight_never_stops(self, running, waiting):
        d = idle.idle_decision(obs(requests_running=running, requests_waiting=waiting,
                                   last_request_start=NOW_HOST - 99999), POLICY)
        assert d["action"] == "keep" and d["reason"] == "busy"
        assert d["in_flight"] == running + waiting

    def test_in_flight_beats_ttl(self):
        d = idle.idle_decision(obs(requests_running=1), dict(POLICY, ttl_hours=1))
        assert d["action"] == "keep" and d["reason"] == "busy"
        assert "TTL" in d["message"]

    def test_ttl_stops_even_when_active(self):
        d = idle.idle_decision(obs(last_request_start=NOW_HOST - 5), dict(POLICY, ttl_hours=2))
        assert d["action"] == "stop" and d["reason"] == "ttl"

    def test_ttl_not_reached(self):
        d = idle.idle_decision(obs(last_request_start=NOW_HOST - 5), dict(POLICY, ttl_hours=5))
        assert d["action"] == "keep"

    def test_ttl_zero_or_none_is_off(self):
        for ttl in (0, None):
            d = idle.idle_decision(obs(last_request_start=NOW_HOST - 5), dict(POLICY, ttl_hours=ttl))
            assert d["action"] == "keep"

    def test_grace_period_keeps_a_fresh_session(self):
        d = idle.idle_decision(obs(session_started_at=NOW_API - 300, stack_started_at=NOW_HOST - 99999), POLICY)
        assert d["action"] == "keep" and d["reason"] == "grace"

    def test_grace_uses_api_clock_not_host_clock(self):
        # host says the stack started long ago, API says the session is 10 min old
        d = idle.idle_decision(obs(session_started_at=NOW_API - 600), POLICY)
        assert d["reason"] == "grace"
        # and the reverse: an old session whose stack was just restarted is not in grace,
        # but its idle time counts from the restart
        d = idle.idle_decision(obs(stack_started_at=NOW_HOST - 60), POLICY)
        assert d["action"] == "keep" and d["reason"] == "active"

    def test_session_falls_back_to_creation(self):
        d = idle.idle_decision(obs(session_started_at=None, created_at=NOW_API - 60), POLICY)
        assert d["reason"] == "grace"

    def test_no_activity_ever_counts_from_session_start(self):
        d = idle.idle_decision(obs(stack_started_at=None, host_now=None), POLICY)
        assert d["action"] == "stop" and d["idle_seconds"] == pytest.approx(3 * 3600)

    def test_engine_down_past_grace_stops(self):
        d = idle.idle_decision(obs(requests_running=None, requests_waiting=None,
                                   last_request_start=NOW_HOST - 3600), POLICY)
        assert d["action"] == "stop" and d["reason"] == "idle"

    def test_engine_down_kept_when_configured(self):
        d = idle.idle_decision(obs(requests_running=None, requests_waiting=None),
                               dict(POLICY, stop_when_engine_down=False))
        assert d["action"] == "keep" and d["reason"] == "busy"

    def test_engine_down_inside_grace_keeps(self):
        d = idle.idle_decision(obs(requests_running=None, requests_waiting=None,
                                   session_started_at=NOW_API - 60), POLICY)
        assert d["reason"] == "grace"

    def test_unreachable_reported_below_limit(self):
        d = idle.idle_decision(obs(reachable=False, failed_probes=2), POLICY)
        assert d["action"] == "keep" and d["reason"] == "unreachable" and d["unreachable"] is True
        assert "2/3" in d["message"]

    def test_unreachable_stopped_at_limit(self):
        d = idle.idle_decision(obs(reachable=False, failed_probes=3), POLICY)
        assert d["action"] == "stop" and d["reason"] == "unreachable" and d["unreachable"]

    def test_unreachable_young_session_not_stopped(self):
        # 3 h of grace+min-age would be needed; session is 40 min old
        d = idle.idle_decision(obs(reachable=False, failed_probes=9, session_started_at=NOW_API - 2400),
                               dict(POLICY, unreachable_min_age_minutes=60))
        assert d["action"] == "keep" and "younger" in d["message"]

    def test_unreachable_limit_zero_only_reports(self):
        d = idle.idle_decision(obs(reachable=False, failed_probes=100), dict(POLICY, unreachable_limit=0))
        assert d["action"] == "keep" and "off" in d["message"]

    def test_unreachable_past_ttl_stops(self):
        d = idle.idle_decision(obs(reachable=False, failed_probes=0), dict(POLICY, ttl_hours=1))
        assert d["action"] == "stop" and d["reason"] == "ttl" and d["unreachable"]

    def test_clock_skew_clamped(self):
        d = idle.idle_decision(obs(last_request_start=NOW_HOST + 50), POLICY)
        assert d["idle_seconds"] == 0 and d["action"] == "keep"

    def test_default_policy(self):
        d = idle.idle_decision(obs(last_request_start=NOW_HOST - 31 * 60, stack_started_at=None))
        assert d["action"] == "stop"
        d = idle.idle_decision(obs(last_request_start=NOW_HOST - 29 * 60, stack_started_at=None))
        assert d["action"] == "keep"

    def test_string_numbers_from_templates(self):
        d = idle.idle_decision(obs(api_now=str(NOW_API), last_request_start=str(NOW_HOST - 4000),
                                   requests_running="0"), {"idle_minutes": "30", "boot_grace_minutes": "20"})
        assert d["action"] == "stop"

    def test_bad_inputs_raise(self):
        with pytest.raises(AnsibleFilterError, match="api_now"):
            idle.idle_decision(obs(api_now=None), POLICY)
        with pytest.raises(AnsibleFilterError, match="idle_minutes"):
            idle.idle_decision(obs(), dict(POLICY, idle_minutes="soon"))
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
        assert {"vllm_activity", "nginx_last_request", "idle_decision", "session_cost"} <= names
