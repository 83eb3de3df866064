# -*- coding: utf-8 -*-
# Copyright: llmops.vastai contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Shared connection options of every llmops.vastai module.
    DOCUMENTATION = r"""
options:
  api_key:
    description:
      - The vast.ai API key.
      - Falls back to the E(VAST_API_KEY) environment variable.
      - Sent only in the C(Authorization) header as a bearer token; never logged or returned.
      - Required, either as this option or through the environment.
      - Surrounding whitespace is dropped (a key read from a file usually ends in a newline);
        a key with whitespace or non-printable characters inside it is refused, with a message
        that does not contain it.
      - Prefer E(VAST_API_KEY) over this option. With E(ANSIBLE_DEBUG=1) Ansible prints the
        arguments of every module it runs before C(no_log) masking applies, so a key given
        as a task argument shows up there; one in the environment does not.
    type: str
  api_url:
    description:
      - Base URL of the vast.ai API (the same variable the official CLI reads).
      - Falls back to the E(VAST_URL) environment variable.
    type: str
    default: https://console.vast.ai
  api_timeout:
    description:
      - Timeout in seconds for one HTTP request. Must be greater than 0 and at most 3600.
      - Falls back to the E(VAST_API_TIMEOUT) environment variable (set it once for a whole
        playbook run, e.g. in an AWX credential).
    type: int
    default: 30
  api_retries:
    description:
      - How many times a read (GET, offer search) is retried on HTTP 429/500/502/503/504,
        timeouts and connection resets, with exponential backoff.
      - Mutations are never retried blindly; only a 429 refusal is sent again. A mutation whose
        answer is lost is reconciled by reading the instance again (and sent once more when
        that read shows it did not happen; creates never are).
      - Must not be negative nor above 100; V(0) means one attempt without retries.
      - Falls back to the E(VAST_API_RETRIES) environment variable.
    type: int
    default: 5
requirements:
  - requests
notes:
  - All modules of this collection belong to the action group C(llmops.vastai.vast), so
    credentials can be set once with C(module_defaults).
"""

    # Attributes of the modules that only read (llmops.vastai.vast.info).
    INFO = r"""
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: all
"""

    # Attributes of the modules that change something and show it (llmops.vastai.vast.actions).
    ACTIONS = r"""
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: all
"""
