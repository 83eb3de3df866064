#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmops.vastai contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: vast_instance
short_description: Rent, start, stop, restart and destroy vast.ai GPU instances
version_added: 0.1.0
description:
  - Manages one vast.ai instance identified by O(label) (the default) or O(id), or a set of
    replicas sharing a label prefix with O(exact_count).
  - Creates the instance from a given O(offer_id) or from the cheapest offer matching
    O(offer_filters); when an offer was taken meanwhile (C(no_such_ask)) the next offer is
    tried, up to O(max_offer_tries), leaving out machines that failed.
  - vast.ai does not keep labels unique. When several instances carry the label, the module
    fails and lists their ids instead of guessing.
  - A create whose answer is lost is reconciled by looking the label up again, so an
    instance is never rented twice.
  - Options marked "creation only" are used when the instance is created and are ignored for
    an existing instance (vast.ai cannot change them later; destroy and create to change them).
author:
  - llmops.vastai maintainers (@llmops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - llmops.vastai.vast
attributes:
  check_mode:
    support: full
    details: Offers are searched (a read) so the would-be offer is reported; nothing is rented or changed.
  diff_mode:
    support: full
  platform:
    platforms: all
options:
  state:
    description:
      - V(present) ensures the instance exists (creating it starts it; an existing stopped
        instance stays stopped).
      - V(running) ensures it exists and is running (starts a stopped instance).
      - V(stopped) ensures it is stopped (GPU billing ends, storage is still billed). A missing
        instance is created stopped when creation options are given, else the module fails.
      - V(restarted) reboots a running instance or starts a stopped one; always changes.
      - V(absent) destroys it (all charges end, data is lost).
    type: str
    default: present
    choices: [absent, present, restarted, running, stopped]
  id:
    description:
      - The instance id (a positive integer). Targets exactly that instance; with O(label) the label is set on it.
      - An instance cannot be created with a given id; use O(label) for create-or-reuse.
    type: int
  label:
    description:
      - The label identifying the instance (at most 256 characters).
      - With O(exact_count), the prefix of the replica labels (C(<label>-1), C(<label>-2), ...).
      - When neither O(label) nor O(id) is given, the label is derived from the account
        (nickname or username, else the e-mail local part, else C(vast-user)) and O(name),
        as C(<account>-<name>).
    type: str
  name:
    description: Name used to build the default label C(<account>-<name>) when O(label) is not set.
    type: str
  offer_id:
    description: Offer (ask) id to rent (a positive integer). Creation only. Mutually exclusive with O(offer_filters).
    type: int
  offer_filters:
    description:
      - Search criteria for the offer to rent; the same keys as M(llmops.vastai.vast_offer_info).
        Creation only. Mutually exclusive with O(offer_id).
    type: dict
    suboptions:
      gpu_names:
        description: GPU models to accept, in any spelling (V(RTX 4090), V(RTX_4090), V(rtx-4090)).
        type: list
        elements: str
      min_num_gpus:
        description: Minimum number of GPUs.
        type: int
      max_num_gpus:
        description: Maximum number of GPUs.
        type: int
      min_gpu_ram_gb:
        description: Minimum memory per GPU in GB.
        type: float
      min_total_gpu_ram_gb:
        description: Minimum memory over all GPUs, in GB.
        type: float
      min_cpu_ram_gb:
        description: Minimum system memory in GB.
        type: float
      max_dph:
        description: Maximum total price in $/h.
        type: float
      min_reliability:
        description: Minimum host reliability between 0 and 1.
        type: float
      countries:
        description: Two-letter country codes.
        type: list
        elements: str
      regions:
        description: Continent groups, expanded to country codes.
        type: list
        elements: str
        choices: [africa, asia, europe, north_america, oceania, south_america]
      min_cuda:
        description: Minimum CUDA version supported by the host driver.
        type: float
      min_disk_gb:
        description: Minimum free disk in GB.
        type: float
      min_inet_down:
        description: Minimum download bandwidth in Mb/s.
        type: float
      verified:
        description: Only verified hosts.
        type: bool
        default: true
      datacenter:
        description: Only datacenter (V(true)) or community (V(false)) hosts.
        type: bool
      min_direct_ports:
        description: Minimum number of directly mapped ports.
        type: int
      static_ip:
        description: Only hosts with a static IP.
        type: bool
      vm_capable:
        description: Only VM-capable hosts (set automatically when O(vm=true)).
        type: bool
      offer_type:
        description: V(on-demand), V(interruptible) (give O(bid_price)) or V(reserved).
        type: str
        default: on-demand
        choices: [on-demand, interruptible, reserved]
      exclude_machine_ids:
        description: Machines to leave out.
        type: list
        elements: int
        default: []
      query:
        description: Raw vast.ai query fields merged last (API units).
        type: dict
      order_by:
        description: Which offer is the best one.
        type: str
        default: price
        choices: [price, reliability, score, value]
      limit:
        description: How many offers to fetch per search (candidates for retries).
        type: int
        default: 10
  offer_pick:
    description:
      - V(best) rents the first offer in O(offer_filters.order_by) order; V(second) starts
        with the second one (a conservative pick that avoids the offer most likely to be raced).
    type: str
    default: best
    choices: [best, second]
  max_offer_tries:
    description: How many offers to try when offers are taken (C(no_such_ask)) before giving up.
    type: int
    default: 3
  image:
    description:
      - Docker image (for VMs a C(docker.io/vastai/kvm:*) image). Creation only. Required to create unless O(template_hash) is given.
      - Must be a non-empty image reference without spaces.
    type: str
  disk_gb:
    description:
      - Disk size in GB (at least 8, at most 16384). Creation only; vast.ai cannot resize it later.
      - The upper bound keeps a typo (V(1e9)) from renting a host whose storage alone is billed
        at hundreds of $/h; no vast.ai offer has that much disk.
    type: float
    default: 10
  env:
    description:
      - Environment variables for the container. Creation only.
      - The values are B(not) secret. Like any option that is not C(no_log), Ansible echoes them
        in the module arguments (C(module_args)) at C(-vvv) and in callbacks that log arguments.
        Put tokens and passwords in O(secret_env) instead, whose values are masked.
    type: dict
    default: {}
  secret_env:
    description:
      - Environment variables holding secrets (tokens). Merged into O(env); their values are
        masked in all output (C(no_log)). Creation only.
    type: dict
    default: {}
  ports:
    description:
      - Container ports to expose, such as V(8000) or V(8000/udp) (1 to 65535, optionally
        with C(/tcp) or C(/udp)). Creation only.
      - The mapped host ports are returned in RV(instance.ports) once the instance runs.
    type: list
    elements: str
    default: []
  onstart:
    description: Script run when the container starts. Creation only.
    type: str
  args:
    description: Arguments for the image entrypoint (with O(runtype=args)). Creation only.
    type: list
    elements: str
  runtype:
    description:
      - V(ssh_direct) asks for direct SSH on a mapped port plus the SSH proxy,
        V(ssh_proxy) for the proxy only, V(args) runs the image entrypoint with O(args).
      - Creation only. Ignored when O(template_hash) is given.
    type: str
    default: ssh_direct
    choices: [args, ssh_direct, ssh_proxy]
  vm:
    description:
      - Rent a full VM instead of a container (systemd and Docker available). Needs a
        VM-capable offer (added to the filters automatically). Creation only.
      - VMs take their SSH keys from the account at creation, so O(ssh_keys) missing there are
        added to the account first.
    type: bool
    default: false
  bid_price:
    description:
      - Bid in $/h for an interruptible rental (0.001 to 128). Creation only.
      - An interruptible rental (this option, or O(offer_filters.offer_type=interruptible)) always
        sends a bid; without this option it is the chosen offer's C(min_bid). A C(bid_price)
        below an offer's C(min_bid) is refused before anything is sent.
      - The bid plus storage is what the rental bills, and what O(max_dph) and the budget
        guards compare.
    type: float
  template_hash:
    description: Hash of a vast.ai template to create from. Creation only.
    type: str
  image_login:
    description: Docker login arguments for a private registry (C(-u user -p token registry)). Creation only.
    type: str
  ssh_keys:
    description:
      - Public SSH keys for the new instance (OpenSSH one-line form C(TYPE BASE64 [comment])). Creation only.
      - Each key is parsed before anything is rented; a key whose data does not decode or
        names another key type than its prefix is refused.
      - Attached to a container instance after creation; for O(vm=true) added to the account before creation.
    type: list
    elements: str
    default: []
  cancel_unavail:
    description:
      - Fail the create when the machine cannot start the instance now, instead of creating
        it stopped (vast.ai's behaviour without this flag). Creation only.
      - When not set, on-demand rentals send V(true) and interruptible (bid) rentals send
        nothing, as the official CLI does.
    type: bool
  wait:
    description:
      - Wait until the instance reached the requested state (running after create, start and
        restart; stopped after stop). A wait that runs out fails with the instance id, its
        C(status_msg) and the tail of its log.
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait in total (running and SSH together).
    type: int
    default: 900
  start_timeout:
    description:
      - Seconds a start of an existing instance may stay in C(scheduling) (asked to run, still
        stopped; on vast.ai another tenant may have rented its GPU while it was stopped, and the
        start then waits until they let go, possibly for hours).
      - When it runs out the task fails with RV(unavailable=true) and the start is cancelled
        (the instance is stopped again), so it cannot begin billing GPU time later, unattended.
        C(playbooks/power_on.yml) with C(on_unavailable=replace) then rents a replacement.
      - Not set, a start waits up to O(wait_timeout); one still scheduling then is cancelled too.
    type: int
  wait_ssh:
    description:
      - After running, also wait until the SSH endpoint accepts a TCP connection and sends an SSH banner.
      - With O(connect_with=auto) both the direct port and the vast.ai proxy are tried; the one that
        answered is returned in RV(instance.ssh) (direct SSH is blocked on some hosts).
    type: bool
    default: false
  poll_interval:
    description:
      - Seconds between status polls while waiting.
      - Falls back to the E(VAST_POLL_INTERVAL) environment variable.
    type: float
    default: 5
  destroy_on_failure:
    description:
      - Destroy an instance this task created when any step after the create fails (SSH key
        attach, the wait for running or SSH, a stop after a O(state=stopped) create), so it
        does not keep costing money. Without it the failure names the instance and its $/h.
      - An instance the API creates while refusing the create (an insufficient bid leaves one
        stopped) is always destroyed.
    type: bool
    default: false
  exact_count:
    description:
      - Keep exactly this many replicas labelled C(<label>-<n>) (n = 1, 2, ...); missing ones
        are created, those with the highest numbers beyond the count destroyed.
      - Needs O(label) or O(name); O(state) must be V(present) or V(running).
      - At most O(max_exact_count).
    type: int
  max_exact_count:
    description:
      - The highest O(exact_count) accepted. A guard against a typo renting dozens of
        instances in one task; raise it on purpose for a larger fleet.
    type: int
    default: 20
  min_credit:
    description: Refuse to create when the account credit in dollars is below this.
    type: float
  max_dph:
    description:
      - Refuse to create on an offer whose rental would bill more than this, in $/h (the bid plus
        storage for an interruptible rental, else the on-demand price with storage for O(disk_gb)).
    type: float
  max_total_dph:
    description:
      - Account-wide guard, checked right before any create or start - refuse when everything on
        the account would bill more than this per hour after the change (running instances at
        their rate, stopped ones for storage, plus the new rental or the started instance).
    type: float
  max_instances:
    description:
      - Refuse a create when the account already has this many active (not stopped) instances.
      - Checked again right after the create. When runs racing past the check together exceed it,
        the oldest instances stay and a run whose own new instance is beyond the limit destroys it
        and fails.
    type: int
  min_credit_hours:
    description:
      - Refuse a create or start when the account credit would cover fewer than this many hours
        of what the account bills per hour after the change.
    type: float
  connect_with:
    description: Which SSH endpoint RV(instance.ssh) describes; V(auto) prefers direct over proxy.
    type: str
    default: auto
    choices: [auto, direct, proxy]
  audit_log:
    description:
      - File to append one JSON line to for every mutation (time, action, instance id,
        label, price, result). Never contains secrets.
      - Falls back to the E(VAST_AUDIT_LOG) environment variable.
    type: path
notes:
  - vast.ai bills storage while an instance is stopped; only O(state=absent) ends all charges.
"""

EXAMPLES = r"""
- name: Rent the cheapest RTX 4090 under $0.60/h and wait until SSH answers
  llmops.vastai.vast_instance:
    label: llm-budget
    state: running
    offer_filters:
      gpu_names: [RTX 4090]
      min_gpu_ram_gb: 24
      max_dph: 0.60
      min_reliability: 0.98
    image: vllm/vllm-openai:latest
    disk_gb: 60
    ports: ["8000"]
    env:
      HF_HOME: /workspace/hf
    min_credit: 5
    wait_ssh: true
    wait_timeout: 1200
    destroy_on_failure: true
    audit_log: /var/log/vast-audit.jsonl
  register: rented

- name: Connect to it
  ansible.builtin.debug:
    msg: "ssh -p {{ rented.instance.ssh.port }} root@{{ rented.instance.ssh.host }}"

- name: Stop it (storage is still billed)
  llmops.vastai.vast_instance:
    label: llm-budget
    state: stopped

- name: Rent a known offer as a VM
  llmops.vastai.vast_instance:
    name: research
    offer_id: 1234567
    vm: true
    image: docker.io/vastai/kvm:ubuntu_cli_22.04-2025-01-01

- name: Three replicas llm-1..llm-3
  llmops.vastai.vast_instance:
    label: llm
    exact_count: 3
    offer_filters: {gpu_names: [RTX 3090], max_dph: 0.4}
    image: vllm/vllm-openai:latest

- name: Destroy by id
  llmops.vastai.vast_instance:
    id: 987654
    state: absent
"""

RETURN = r"""
instance:
  description:
    - The instance after the task, as the API shows it, without secrets (no instance API
      key, no env values; C(extra_env) lists only names), plus C(ssh) and C(ports).
    - Null when O(state=absent), or in check mode before a create (then C(id) is null).
  returned: unless O(exact_count) is used
  type: dict
  contains:
    id:
      description: Instance (contract) id.
      type: int
    label:
      description: Label.
      type: str
    actual_status:
      description: Container state (null while provisioning, loading, running, stopped, exited, ...).
      type: str
    intended_status:
      description: What was asked for (running or stopped).
      type: str
    status_msg:
      description: Free text from the host about the last state change.
      type: str
    dph_total:
      description: Total price in $/h.
      type: float
    ssh:
      description: SSH endpoint C({host, port, user, kind}), kind V(direct) or V(proxy); null until known.
      type: dict
    ports:
      description: Container port to host port, for example V(22/tcp) to V(40022); empty until running.
      type: dict
  sample:
    id: 8123456
    label: llm-budget
    actual_status: running
    dph_total: 0.412
    ssh: {host: 203.0.113.7, port: 40022, user: root, kind: direct}
    ports: {"22/tcp": 40022, "8000/tcp": 40100}
instances:
  description: With O(exact_count), the replicas after the task, sorted by label.
  returned: when O(exact_count) is used
  type: list
  elements: dict
actions:
  description: What was done (or would be done in check mode), in order.
  returned: always
  type: list
  elements: str
  sample: ["rent offer 1234567 ($0.41/h) as llm-budget", "wait for running"]
unavailable:
  description:
    - On failure, V(true) when the instance could not start because its GPU is not available
      (it stayed in C(scheduling) past O(start_timeout), or still was when O(wait_timeout) ran
      out); the start was then cancelled. A playbook can rent a replacement on it.
  returned: on failure
  type: bool
offers_tried:
  description: Offers tried during a create, with the outcome of each.
  returned: when an instance was created
  type: list
  elements: dict
"""

import re

from ansible.module_utils.basic import AnsibleModule, env_fallback

from ansible_collections.llmops.vastai.plugins.module_utils.base import VastModule, vast_argument_spec
from ansible_collections.llmops.vastai.plugins.module_utils.lifecycle import Failure, InstanceLifecycle
from ansible_collections.llmops.vastai.plugins.module_utils.query import OFFER_FILTER_SPEC, validate_filters
from ansible_collections.llmops.vastai.plugins.module_utils.validation import (
    DEFAULT_MAX_EXACT_COUNT,
    MAX_DISK_GB,
    image_errors,
    port_errors,
    ssh_key_errors,
)

# The desired state -> the lifecycle step that brings one existing (or missing) instance there.
STATES = {
    "absent": "ensure_absent",
    "present": "ensure_present",
    "running": "ensure_running",
    "stopped": "ensure_stopped",
    "restarted": "ensure_restarted",
}


class VastInstance(VastModule):
    def validate(self):
        p = self.params
        errors = []
        if p["id"] is not None and p["id"] <= 0:
            errors.append("id must be a positive instance id, not %s" % p["id"])
        if p["offer_id"] is not None and p["offer_id"] <= 0:
            errors.append("offer_id must be a positive offer id, not %s" % p["offer_id"])
        if p["label"] is not None and not p["label"].strip():
            errors.append("label must not be empty")
        if p["label"] and len(p["label"]) > 256:
            errors.append("label is %d characters long; vast.ai allows 256" % len(p["label"]))
        if p["disk_gb"] < 8:
            errors.append("disk_gb must be at least 8 (vast.ai minimum)")
        elif p["disk_gb"] > MAX_DISK_GB:
            errors.append("disk_gb must be at most %d GB, not %s (storage is billed per GB)" % (MAX_DISK_GB, p["disk_gb"]))
        if p["bid_price"] is not None and not 0.001 <= p["bid_price"] <= 128:
            errors.append("bid_price must be between 0.001 and 128 $/h")
        if p["max_offer_tries"] < 1:
            errors.append("max_offer_tries must be at least 1")
        if p["wait_timeout"] < 1:
            errors.append("wait_timeout must be a positive number of seconds")
        if p["start_timeout"] is not None and p["start_timeout"] < 1:
            errors.append("start_timeout must be a positive number of seconds")
        if p["poll_interval"] <= 0:
            errors.append("poll_interval must be greater than 0")
        errors.extend(port_errors(p["ports"]))
        errors.extend(image_errors(p["image"]))
        errors.extend(ssh_key_errors(p["ssh_keys"]))
        for key in list(p["env"]) + list(p["secret_env"]):
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", str(key)):
                errors.append("env name %r is not a valid variable name" % key)
        if len((p["onstart"] or "") + " ".join(p["args"] or [])) > 4096:
            errors.append("onstart and args together exceed vast.ai's 4096 characters")
        if p["args"] and p["runtype"] != "args":
            errors.append("args needs runtype=args")
        if p["offer_filters"]:
            errors.extend("offer_filters: %s" % e for e in validate_filters(p["offer_filters"]))
        if p["exact_count"] is not None:
            if p["exact_count"] < 0:
                errors.append("exact_count must not be negative")
            elif p["exact_count"] > p["max_exact_count"]:
                errors.append("exact_count %d is above max_exact_count (%d); raise max_exact_count on purpose "
                              "to keep more replicas" % (p["exact_count"], p["max_exact_count"]))
            if p["id"] is not None:
                errors.append("exact_count works on a label prefix and cannot be combined with id")
            if p["state"] not in ("present", "running"):
                errors.append("exact_count needs state present or running")
        if p["max_exact_count"] < 1:
            errors.append("max_exact_count must be at least 1")
        if p["state"] in ("present", "running") and p["id"] is None and p["exact_count"] != 0:
            # creating may be needed; these would fail anyway, so fail before any call
            if p["image"] is None and p["template_hash"] is None and (p["offer_id"] or p["offer_filters"]):
                errors.append("creating an instance needs image or template_hash")
        if p["min_credit"] is not None and p["min_credit"] < 0:
            errors.append("min_credit must not be negative")
        for key in ("max_dph", "max_total_dph"):
            if p[key] is not None and p[key] <= 0:
                errors.append("%s must be greater than 0" % key)
        if p["max_instances"] is not None and p["max_instances"] < 1:
            errors.append("max_instances must be at least 1")
        if p["min_credit_hours"] is not None and p["min_credit_hours"] < 0:
            errors.append("min_credit_hours must not be negative")
        return errors

    def run(self):
        life = InstanceLifecycle(self.client, self.params, check_mode=self.module.check_mode, result=self.result)
        failure = None
        try:
            if self.params["exact_count"] is not None:
                life.run_exact_count(STATES)
            else:
                life.run(STATES)
        except Failure as e:
            failure = e
        for warning in life.warnings:
            self.module.warn(warning)
        if failure is not None:
            self.fail(failure.msg, exc=failure.exc, **failure.extra)


def argument_spec():
    spec = vast_argument_spec()
    spec.update(
        state=dict(type="str", default="present", choices=["absent", "present", "restarted", "running", "stopped"]),
        id=dict(type="int"),
        label=dict(type="str"),
        name=dict(type="str"),
        offer_id=dict(type="int"),
        offer_filters=dict(type="dict", options=OFFER_FILTER_SPEC),
        offer_pick=dict(type="str", default="best", choices=["best", "second"]),
        max_offer_tries=dict(type="int", default=3),
        image=dict(type="str"),
        disk_gb=dict(type="float", default=10),
        env=dict(type="dict", default={}),
        secret_env=dict(type="dict", default={}, no_log=True),
        ports=dict(type="list", elements="str", default=[]),
        onstart=dict(type="str"),
        args=dict(type="list", elements="str"),
        runtype=dict(type="str", default="ssh_direct", choices=["args", "ssh_direct", "ssh_proxy"]),
        vm=dict(type="bool", default=False),
        bid_price=dict(type="float"),
        template_hash=dict(type="str"),
        image_login=dict(type="str", no_log=True),
        ssh_keys=dict(type="list", elements="str", default=[], no_log=False),
        cancel_unavail=dict(type="bool"),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=900),
        start_timeout=dict(type="int"),
        wait_ssh=dict(type="bool", default=False),
        poll_interval=dict(type="float", default=5, fallback=(env_fallback, ["VAST_POLL_INTERVAL"])),
        destroy_on_failure=dict(type="bool", default=False),
        exact_count=dict(type="int"),
        max_exact_count=dict(type="int", default=DEFAULT_MAX_EXACT_COUNT),
        min_credit=dict(type="float"),
        max_dph=dict(type="float"),
        max_total_dph=dict(type="float"),
        min_credit_hours=dict(type="float"),
        max_instances=dict(type="int"),
        connect_with=dict(type="str", default="auto", choices=["auto", "direct", "proxy"]),
        audit_log=dict(type="path", fallback=(env_fallback, ["VAST_AUDIT_LOG"])),
    )
    return spec


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        mutually_exclusive=[("offer_id", "offer_filters")],
        required_one_of=[("id", "label", "name")],
    )
    VastInstance(module).execute()


if __name__ == "__main__":
    main()
