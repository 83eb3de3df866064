# -*- coding: utf-8 -*-
# Copyright: llmops.vastai contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Module base class: owns the client and error reporting; the instance view."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible.module_utils.basic import env_fallback, missing_required_lib

from ansible_collections.llmops.vastai.plugins.module_utils.client import (
    DEFAULT_API_URL,
    HAS_REQUESTS,
    REQUESTS_IMPORT_ERROR,
    SECRET_ROW_FIELDS,
    VastClient,
    VastError,
    describe_error,
)
from ansible_collections.llmops.vastai.plugins.module_utils.endpoints import port_map, ssh_endpoint
from ansible_collections.llmops.vastai.plugins.module_utils.validation import clean_api_key, finite_errors


def vast_argument_spec():
    return dict(
        api_key=dict(type="str", no_log=True, fallback=(env_fallback, ["VAST_API_KEY"])),
        api_url=dict(type="str", default=DEFAULT_API_URL, fallback=(env_fallback, ["VAST_URL"])),
        api_timeout=dict(type="int", default=30, fallback=(env_fallback, ["VAST_API_TIMEOUT"])),
        api_retries=dict(type="int", default=5, fallback=(env_fallback, ["VAST_API_RETRIES"])),
    )


MAX_API_TIMEOUT = 3600
MAX_API_RETRIES = 100


def validate_common(params):
    """Problems with the shared connection options (checked before any API call)."""
    errors = []
    timeout = params.get("api_timeout")
    if timeout is not None and timeout <= 0:
        errors.append("api_timeout must be a positive number of seconds, not %s" % timeout)
    elif timeout is not None and timeout > MAX_API_TIMEOUT:
        # far beyond any useful wait; huge values overflow the socket layer
        errors.append("api_timeout must be at most %d seconds, not %s" % (MAX_API_TIMEOUT, timeout))
    retries = params.get("api_retries")
    if retries is not None and retries < 0:
        errors.append("api_retries must not be negative (0 means no retries), not %s" % retries)
    elif retries is not None and retries > MAX_API_RETRIES:
        errors.append("api_retries must be at most %d, not %s" % (MAX_API_RETRIES, retries))
    return errors


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


class VastModule(object):
    """Common life of a module: validate, build the client lazily, run, report errors."""

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.result = dict(changed=False)
        self._client = None
        if not HAS_REQUESTS:
            module.fail_json(msg=missing_required_lib("requests"), exception=REQUESTS_IMPORT_ERROR)
        key, problem = clean_api_key(self.params.get("api_key"))
        if not key:
            module.fail_json(msg="no vast.ai API key: set the api_key option or the VAST_API_KEY environment variable")
        # A key read from a file ends in a newline. Ansible masks the value as given; the
        # stripped one is what is sent and what an error could quote, so mask it too.
        module.no_log_values.add(key)
        self.params["api_key"] = key
        if problem:
            module.fail_json(msg="the vast.ai API key (api_key / VAST_API_KEY) cannot be used: %s" % problem)
        # NaN/infinity first: every comparison with NaN is false, so the checks below miss it.
        errors = finite_errors(self.params, module.argument_spec) + validate_common(self.params) + self.validate()
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
        msg = describe_error(exc, self.params.get("api_retries"))
        if doing:
            msg = "%s: %s" % (doing, msg)
        self.fail(msg, exc=exc, **extra)
