# -*- coding: utf-8 -*-
# Copyright: llmops.vastai contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Module base class: owns the client, error reporting, waiting and the instance view."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math
import re
import socket
import time

from ansible.module_utils.basic import env_fallback, missing_required_lib

from ansible_collections.llmops.vastai.plugins.module_utils.client import (
    DEFAULT_API_URL,
    HAS_REQUESTS,
    REQUESTS_IMPORT_ERROR,
    VastAuthError,
    VastClient,
    VastConnectionError,
    VastError,
    VastRateLimitError,
)
from ansible_collections.llmops.vastai.plugins.module_utils.endpoints import port_map, ssh_endpoint


def transient(exc):
    """An error that may pass: no answer, a 5xx, or a rate limit."""
    return isinstance(exc, (VastConnectionError, VastRateLimitError)) or (exc.status or 0) >= 500


# Row fields that must not leave the module (restricted keys, tokens).
SECRET_ROW_FIELDS = ("instance_api_key", "jupyter_token", "api_key", "image_login")


def vast_argument_spec():
    return dict(
        api_key=dict(type="str", no_log=True, fallback=(env_fallback, ["VAST_API_KEY"])),
        api_url=dict(type="str", default=DEFAULT_API_URL, fallback=(env_fallback, ["VAST_URL"])),
        api_timeout=dict(type="int", default=30, fallback=(env_fallback, ["VAST_API_TIMEOUT"])),
        api_retries=dict(type="int", default=5, fallback=(env_fallback, ["VAST_API_RETRIES"])),
    )


def validate_common(params):
    """Problems with the shared connection options (checked before any API call)."""
    errors = []
    timeout = params.get("api_timeout")
    if timeout is not None and timeout <= 0:
        errors.append("api_timeout must be a positive number of seconds, not %s" % timeout)
    retries = params.get("api_retries")
    if retries is not None and retries < 0:
        errors.append("api_retries must not be negative (0 means no retries), not %s" % retries)
    return errors


class WaitTimeout(Exception):
    def __init__(self, row, waited):
        super(WaitTimeout, self).__init__("timeout")
        self.row = row
        self.waited = waited


class WaitFailed(Exception):
    def __init__(self, row, reason):
        super(WaitFailed, self).__init__(reason)
        self.row = row
        self.reason = reason


def account_label_prefix(user):
    """nickname/username -> e-mail local part -> 'vast-user', made label-safe."""
    user = user or {}
    for candidate in (user.get("nickname"), user.get("username"), (user.get("email") or "").split("@")[0]):
        if candidate:
            text = re.sub(r"[^a-z0-9]+", "-", str(candidate).lower()).strip("-")
            if text:
                return text
    return "vast-user"


def represent_instance(row, connect_with="auto"):
    """The instance as modules return it: API row without secrets, plus ``ssh`` and ``ports``."""
    if not row:
        return None
    out = dict((k, v) for k, v in row.items() if k not in SECRET_ROW_FIELDS)
    out["ports"] = port_map(row)
    out["ssh"] = ssh_endpoint(row, connect_with)
    env = row.get("extra_env")
    if isinstance(env, list):
        # values may hold user secrets (tokens passed as env); keep only the names
        out["extra_env"] = sorted(set(str(pair[0]) for pair in env if pair))
    return out


def running_since(row, now=None):
    """When the current running session began: ``{"since", "source", "consistent"}`` or None.

    ``uptime_mins`` is documented nowhere (docs/vast-api-notes.md), so it is never trusted
    alone: a session cannot start before the rental (``start_date``), so the start it implies
    is clamped to ``start_date``; when it is missing, negative or not a number, ``start_date``
    is the answer (an upper bound of the session, since a restart makes it shorter).
    """
    row = row or {}
    now = time.time() if now is None else float(now)
    try:
        created = float(row.get("start_date"))
    except (TypeError, ValueError):
        created = None
    try:
        mins = float(row.get("uptime_mins"))
        if math.isnan(mins) or math.isinf(mins) or mins < 0:
            mins = None
    except (TypeError, ValueError):
        mins = None
    if mins is None:
        if created is None:
            return None
        return {"since": created, "source": "start_date", "consistent": False}
    implied = now - mins * 60.0
    if created is not None and implied < created - 60.0:  # a minute of clock skew is fine
        return {"since": created, "source": "start_date", "consistent": False}
    return {"since": implied, "source": "uptime_mins", "consistent": created is not None}


class VastModule(object):
    """Common life of a module: validate, build the client lazily, run, report errors."""

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.result = dict(changed=False)
        self._client = None
        if not HAS_REQUESTS:
            module.fail_json(msg=missing_required_lib("requests"), exception=REQUESTS_IMPORT_ERROR)
        if not self.params.get("api_key"):
            module.fail_json(msg="no vast.ai API key: set the api_key option or the VAST_API_KEY environment variable")
        errors = validate_common(self.params) + self.validate()
        if errors:
            # Wrong arguments are reported before any API call is made.
            module.fail_json(msg="invalid arguments: " + "; ".join(errors), **self.result)

    # -- to override
    def validate(self):
        return []

    def run(self):
        raise NotImplementedError

    # -- plumbing
    @property
    def client(self):
        if self._client is None:
            self._client = VastClient(
                self.params["api_key"],
                api_url=self.params.get("api_url"),
                timeout=self.params.get("api_timeout") if self.params.get("api_timeout") is not None else 30,
                retries=self.params.get("api_retries") if self.params.get("api_retries") is not None else 5,
            )
        return self._client

    def execute(self):
        try:
            self.run()
        except VastError as e:
            self.fail_vast(e)
        self.module.exit_json(**self.result)

    def fail(self, msg, exc=None, **extra):
        result = dict(self.result)
        result.update(extra)
        if exc is not None:
            result["failure"] = exc.to_dict()
        self.module.fail_json(msg=msg, **result)

    def fail_vast(self, exc, doing=None, **extra):
        if isinstance(exc, VastAuthError):
            msg = "authentication failed: vast.ai rejected the API key (%s); check api_key / VAST_API_KEY" % exc.msg
        elif isinstance(exc, VastRateLimitError):
            msg = "rate limited by vast.ai after %s retries (%s); try again later or raise api_retries" % (
                self.params.get("api_retries"), exc.msg)
        elif isinstance(exc, VastConnectionError):
            msg = "cannot talk to the vast.ai API: %s" % exc.msg
        else:
            msg = "vast.ai API error: %s" % exc
        if doing:
            msg = "%s: %s" % (doing, msg)
        self.fail(msg, exc=exc, **extra)

    # -- waiting
    def wait_instance(self, instance_id, done, timeout, interval, fail_fast=None):
        """Poll ``get_instance`` until ``done(row)``; WaitFailed on ``fail_fast(row)``, WaitTimeout at the end.

        A poll that fails for a passing reason (5xx, reset, rate limit once the client's own
        retries are spent) does not end the wait: the instance keeps moving, so poll on; the
        error is raised only when the deadline comes with no good answer since."""
        deadline = time.monotonic() + timeout
        started = time.monotonic()
        row = None
        while True:
            try:
                row = self.client.get_instance(instance_id)
            except VastError as e:
                left = deadline - time.monotonic()
                if not transient(e) or left <= 0:
                    raise
                time.sleep(min(interval, left))
                continue
            if row is not None and done(row):
                return row
            if row is not None and fail_fast is not None:
                reason = fail_fast(row)
                if reason:
                    raise WaitFailed(row, reason)
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(row, time.monotonic() - started)
            time.sleep(min(interval, left))

    @staticmethod
    def wait_ssh_banner(endpoint, timeout, interval=1.0):
        """True once ``host:port`` accepts TCP and sends an SSH banner within ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                sock = socket.create_connection((endpoint["host"], endpoint["port"]), timeout=max(1.0, min(left, 10)))
                try:
                    sock.settimeout(max(1.0, min(left, 10)))
                    if sock.recv(64).startswith(b"SSH-"):
                        return True
                finally:
                    sock.close()
            except (OSError, socket.timeout):
                pass
            if time.monotonic() + interval > deadline:
                return False
            time.sleep(interval)
