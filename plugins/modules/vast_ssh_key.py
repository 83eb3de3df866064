#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmops.vastai contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: vast_ssh_key
short_description: Manage the SSH public keys of a vast.ai account
version_added: 0.1.0
description:
  - Makes sure an SSH public key is (or is not) on the vast.ai account.
  - VM instances take their SSH keys from the account only, and only when they are created;
    containers can also get keys per instance (O(llmops.vastai.vast_instance#module:ssh_keys)).
  - Keys are compared by their type and key material; the comment is ignored, so the same key
    with another comment is not added twice.
  - A team-scoped API key cannot manage account keys (vast.ai answers HTTP 400
    C(team_ssh_keys_not_supported)); the module then fails with a message that says VMs need a
    personal API key.
author:
  - llmops.vastai maintainers (@llmops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - llmops.vastai.vast
  - llmops.vastai.vast.actions
options:
  key:
    description:
      - The OpenSSH public key, for example the content of C(~/.ssh/id_ed25519.pub).
    type: str
    required: true
  state:
    description:
      - V(present) adds the key unless the account has it; V(absent) removes every copy of it.
    type: str
    choices: [present, absent]
    default: present
"""

EXAMPLES = r"""
- name: Put the controller's key on the account
  llmops.vastai.vast_ssh_key:
    key: "{{ lookup('ansible.builtin.file', '~/.ssh/id_ed25519.pub') }}"

- name: Take it off again
  llmops.vastai.vast_ssh_key:
    key: "{{ lookup('ansible.builtin.file', '~/.ssh/id_ed25519.pub') }}"
    state: absent
"""

RETURN = r"""
key:
  description: The account's row for the key (after the change; the first copy when several).
  returned: when O(state=present)
  type: dict
  sample: {"id": 90001, "public_key": "ssh-ed25519 AAAAC3... me@laptop"}
key_ids:
  description: Ids of the account rows that hold this key (before removal for O(state=absent)).
  returned: always
  type: list
  elements: int
count:
  description: How many keys the account has after the run.
  returned: always
  type: int
"""

import re

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmops.vastai.plugins.module_utils.base import VastModule, vast_argument_spec
from ansible_collections.llmops.vastai.plugins.module_utils.client import VastError, VastTeamKeyError

_KEY_RE = re.compile(r"^(ssh-[a-z0-9-]+|ecdsa-sha2-[a-z0-9-]+|sk-[a-z0-9@.-]+)\s+([A-Za-z0-9+/=]+)(\s.*)?$")


def material(text):
    """``type base64`` of a public key: what identifies it (the comment does not)."""
    parts = str(text or "").split()
    return " ".join(parts[:2])


class VastSshKey(VastModule):
    def validate(self):
        key = (self.params["key"] or "").strip()
        if "PRIVATE KEY" in key:
            # never echo it back
            return ["key looks like a private key; give the public key (the .pub file)"]
        if not _KEY_RE.match(key):
            return ["key is not an OpenSSH public key (expected 'ssh-ed25519 AAAA... comment')"]
        return []

    def run(self):
        p = self.params
        key = p["key"].strip()
        want = material(key)
        rows = self.client.account_ssh_keys()
        before = sorted(material(r["public_key"]) for r in rows)
        mine = [r for r in rows if material(r["public_key"]) == want]
        self.result["key_ids"] = [r.get("id") for r in mine]
        after = list(before)
        if p["state"] == "present":
            if mine:
                self.result["key"] = self._view(mine[0])
            else:
                self.result["changed"] = True
                after = sorted(before + [want])
                if not self.module.check_mode:
                    row = self.client.add_account_ssh_key(key)
                    self.result["key"] = self._view(row)
                    self.result["key_ids"] = [row.get("id")]
                else:
                    self.result["key"] = {"id": None, "public_key": key}
        else:
            if mine:
                self.result["changed"] = True
                after = [m for m in before if m != want]
                if not self.module.check_mode:
                    for r in mine:
                        self.client.delete_account_ssh_key(r["id"])
        self.result["count"] = len(after)
        if self.module._diff:
            self.result["diff"] = {"before": {"account_keys": before}, "after": {"account_keys": after}}

    @staticmethod
    def _view(row):
        return {"id": row.get("id"), "public_key": row.get("public_key")}

    def execute(self):
        try:
            self.run()
        except VastTeamKeyError as e:
            self.fail("cannot manage account SSH keys: %s" % e.msg, exc=e)
        except VastError as e:
            self.fail_vast(e, doing="account SSH keys")
        self.module.exit_json(**self.result)


def main():
    spec = vast_argument_spec()
    spec.update(
        key=dict(type="str", required=True, no_log=False),
        state=dict(type="str", default="present", choices=["present", "absent"]),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    VastSshKey(module).execute()


if __name__ == "__main__":
    main()
