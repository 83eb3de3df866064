# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for idle detection: thin wrappers around plugins/module_utils/idle_policy.py, the one
idle policy that the controller, the on-host probe and the on-host watchdog all run.

Pure functions of their inputs (no I/O, no clock): the decision that stops paid instances is
unit-tested in isolation; the playbooks only gather observations.
"""

from __future__ import annotations

from decimal import Decimal, ROUND_HALF_UP

from ansible.errors import AnsibleFilterError

# The policy itself lives in module_utils so that the on-host probe and watchdog run this very
# file (idle_shutdown.yml ships it as its probe, roles/idle_watchdog copies it to the host).
from ansible_collections.llmops.vastai.plugins.module_utils import idle_policy

DEFAULT_POLICY = idle_policy.DEFAULT_POLICY


def _wrap(func, name):
    def call(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except idle_policy.PolicyError as exc:
            raise AnsibleFilterError("%s: %s" % (name, exc))
    call.__name__ = name
    call.__doc__ = func.__doc__
    return call


def vllm_activity(text):
    """Parse Prometheus exposition text from vLLM (idle_policy.metrics_activity)."""
    if text is not None and not isinstance(text, str):
        raise AnsibleFilterError("vllm_activity expects the /metrics body as a string, got %s" % type(text).__name__)
    return _wrap(idle_policy.metrics_activity, "vllm_activity")(text)


def nginx_last_request(log, prefix="/v1", ignore_statuses=idle_policy.IGNORED_STATUSES):
    """Newest start/end of the requests that count in JSON access-log lines (idle_policy.log_activity)."""
    return idle_policy.log_activity(log, prefix, ignore_statuses)


def idle_observation(raw, api_now=None, created_at=None, uptime_mins=None, reachable=True, failed_probes=0):
    """The probe's JSON (or None when the host was not read) + the API's facts -> an observation."""
    if raw is not None and not isinstance(raw, dict):
        raise AnsibleFilterError("idle_observation expects the probe's JSON object")
    return _wrap(idle_policy.observe, "idle_observation")(raw, api_now=api_now, created_at=created_at,
                                                           uptime_mins=uptime_mins, reachable=reachable,
                                                           failed_probes=failed_probes)


def idle_decision(observation, policy=None):
    """Decide what to do with one running instance, and when (idle_policy.decide)."""
    if not isinstance(observation, dict):
        raise AnsibleFilterError("idle_decision expects a dict of observations")
    return _wrap(idle_policy.decide, "idle_decision")(observation, policy)


def session_cost(dph, seconds):
    """Cost in dollars of `seconds` at `dph` $/h, rounded to the cent."""
    # Decimal: binary floats round 0.525 down, money rounds half up.
    cost = Decimal(str(dph or 0)) * Decimal(str(seconds or 0)) / Decimal(3600)
    return float(cost.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def duration_human(seconds):
    """`3725` -> `1h 02m 05s` (for the messages the playbooks print)."""
    if seconds is None:
        return "unknown"
    seconds = int(round(float(seconds)))
    h, rest = divmod(max(seconds, 0), 3600)
    m, s = divmod(rest, 60)
    return "%dh %02dm %02ds" % (h, m, s)


class FilterModule(object):
    def filters(self):
        return {
            "vllm_activity": vllm_activity,
            "nginx_last_request": nginx_last_request,
            "idle_decision": idle_decision,
            "idle_observation": idle_observation,
            "session_cost": session_cost,
            "duration_human": duration_human,
        }
