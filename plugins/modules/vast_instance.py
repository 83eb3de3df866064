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
    description: Bid in $/h for an interruptible rental (0.001 to 128). Creation only.
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
    type: bool
    default: true
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
  wait_ssh:
    description: After running, also wait until the SSH endpoint accepts a TCP connection and sends an SSH banner.
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
      - Destroy an instance this task created when it fails to become ready within
        O(wait_timeout), so it does not keep costing money.
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
    description: Refuse to create on an offer whose total price in $/h is above this.
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
offers_tried:
  description: Offers tried during a create, with the outcome of each.
  returned: when an instance was created
  type: list
  elements: dict
"""

import re
import time

from ansible.module_utils.basic import AnsibleModule, env_fallback

from ansible_collections.llmops.vastai.plugins.module_utils.audit import append_audit, audit_record
from ansible_collections.llmops.vastai.plugins.module_utils.base import (
    VastModule,
    WaitFailed,
    WaitTimeout,
    account_label_prefix,
    represent_instance,
    vast_argument_spec,
)
from ansible_collections.llmops.vastai.plugins.module_utils.client import (
    VastConnectionError,
    VastError,
    VastOfferUnavailableError,
)
from ansible_collections.llmops.vastai.plugins.module_utils.endpoints import ssh_endpoint
from ansible_collections.llmops.vastai.plugins.module_utils.query import (
    OFFER_FILTER_SPEC,
    build_query,
    sort_offers,
    validate_filters,
)
from ansible_collections.llmops.vastai.plugins.module_utils.validation import (
    DEFAULT_MAX_EXACT_COUNT,
    MAX_DISK_GB,
    image_errors,
    port_errors,
    ssh_key_errors,
)

CREATION_OPTIONS = ("offer_id", "offer_filters", "image", "template_hash")
RUNTYPES = {"ssh_direct": "ssh_direc ssh_proxy", "ssh_proxy": "ssh_proxy", "args": "args"}
STOPPED = ("stopped", "exited")
RECONCILE_TRIES = 5
MUTATION_RECONCILE_TRIES = 3


class CreateFailed(Exception):
    pass


def _answer_may_be_lost(exc):
    """A transport error or a 5xx: the server may have performed the mutation anyway."""
    return isinstance(exc, VastConnectionError) or (exc.status is not None and exc.status >= 500)


def _key_material(text):
    """'ssh-ed25519 AAAA... comment' -> 'ssh-ed25519 AAAA...' (comments differ, keys do not)."""
    return " ".join(str(text or "").split()[:2])


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
        if p["max_dph"] is not None and p["max_dph"] <= 0:
            errors.append("max_dph must be greater than 0")
        return errors

    # ------------------------------------------------------------------ helpers
    def audit(self, action, instance_id=None, label=None, price=None, result="ok", **extra):
        if self.module.check_mode:
            return
        append_audit(self.params["audit_log"], audit_record(
            action, instance_id=instance_id, label=label, price=price, result=result,
            module="vast_instance", **extra))

    def view(self, row):
        return represent_instance(row, self.params["connect_with"])

    def resolve_label(self):
        p = self.params
        if p["label"]:
            return p["label"]
        if p["id"] is not None:
            return None
        if not p["name"]:
            return None
        return "%s-%s" % (account_label_prefix(self.user()), p["name"])

    def user(self):
        if not hasattr(self, "_user"):
            self._user = self.client.current_user()
        return self._user

    def by_label(self, label):
        return self.client.list_instances({"label": {"eq": label}})

    def find(self, label):
        """(row or None) for the identity; fails when a label matches several instances."""
        if self.params["id"] is not None:
            return self.client.get_instance(self.params["id"])
        rows = self.by_label(label)
        if len(rows) > 1:
            ids = sorted(r["id"] for r in rows)
            self.fail(
                "label %r matches %d instances (ids %s); vast.ai labels are not unique, so target one "
                "with id, or relabel/destroy the extra ones" % (label, len(rows), ", ".join(str(i) for i in ids)),
                instance_ids=ids)
        return rows[0] if rows else None

    # ------------------------------------------------------------------ create
    def creation_body(self, label, target_state):
        p = self.params
        env = dict((str(k), str(v)) for k, v in p["env"].items())
        env.update((str(k), str(v)) for k, v in p["secret_env"].items())
        for port in p["ports"]:
            port = str(port)
            num, _sep, proto = port.partition("/")
            suffix = "/" + proto if proto else ""
            env["-p %s:%s%s" % (num, num, suffix)] = "1"  # the API's encoding of `-p`
        body = dict(
            image=p["image"],
            disk=float(p["disk_gb"]),
            label=label,
            env=env,
            onstart=p["onstart"],
            price=p["bid_price"],
            cancel_unavail=p["cancel_unavail"],
            target_state=target_state,
        )
        if p["template_hash"]:
            body["template_hash_id"] = p["template_hash"]
        else:
            body["runtype"] = RUNTYPES[p["runtype"]]
        if p["args"]:
            body["args"] = list(p["args"])
        if p["image_login"]:
            body["image_login"] = p["image_login"]
        if p["vm"]:
            body["vm"] = True
        return body

    def search(self, excluded):
        p = self.params
        f = dict(p["offer_filters"])
        f["exclude_machine_ids"] = sorted(set(f.get("exclude_machine_ids") or []) | excluded)
        if p["vm"]:
            f["vm_capable"] = True
        if p["bid_price"] is not None and f.get("offer_type") == "on-demand":
            f["offer_type"] = "interruptible"
        query = build_query(f, allocated_storage=p["disk_gb"])
        offers = sort_offers(self.client.search_offers(query), f["order_by"])
        offers = [o for o in offers if o.get("machine_id") not in excluded]
        if p["offer_pick"] == "second" and len(offers) > 1:
            offers[0], offers[1] = offers[1], offers[0]
        return offers

    def candidates(self, excluded):
        p = self.params
        if p["offer_id"] is not None:
            if p["max_dph"] is None:
                return [{"id": p["offer_id"]}]
            # price check needs the offer row; an offer already taken is simply not found
            found = self.client.search_offers({"id": {"eq": p["offer_id"]}, "limit": 1,
                                               "allocated_storage": float(p["disk_gb"])})
            return found or [{"id": p["offer_id"], "_missing": True}]
        return self.search(excluded)

    def preflight(self, offer):
        p = self.params
        price = offer.get("dph_total")
        if p["max_dph"] is not None and price is not None and float(price) > p["max_dph"]:
            raise CreateFailed("refusing to rent offer %s: $%.4f/h is above max_dph $%.4f/h" % (
                offer["id"], float(price), p["max_dph"]))

    def check_credit(self):
        p = self.params
        if p["min_credit"] is None:
            return
        user = self.user()
        credit = user.get("credit")
        if credit is None:
            credit = user.get("balance")
        try:
            credit = float(credit)
        except (TypeError, ValueError):
            raise CreateFailed("cannot read the account credit to check min_credit")
        if credit < p["min_credit"]:
            raise CreateFailed("refusing to create: account credit $%.2f is below min_credit $%.2f" % (
                credit, p["min_credit"]))

    def reconcile(self, label, offer_id, cause):
        """After a create error the instance may exist anyway (lost answer): look the label up
        again, riding out lagging lists and error storms. Exactly one -> adopt it."""
        last = None
        for attempt in range(RECONCILE_TRIES):
            try:
                rows = self.by_label(label)
            except VastError as e:
                last, rows = e, None
            if rows is not None:
                last = None
                if len(rows) == 1:
                    return rows[0]
                if len(rows) > 1:
                    self.fail("after an interrupted create, label %r matches %d instances (ids %s); destroy the "
                              "extra ones" % (label, len(rows), ", ".join(str(r["id"]) for r in rows)),
                              instance_ids=[r["id"] for r in rows])
            if attempt + 1 < RECONCILE_TRIES:
                time.sleep(min(2 ** attempt, 8) * min(1.0, self.params["poll_interval"]))
        if last is not None:
            self.fail("renting offer %s for %r failed (%s) and looking the label up again failed too (%s): an "
                      "instance may have been rented and cost money; run the task again (it adopts the instance "
                      "by label) or check vast_instance_info label=%s" % (offer_id, label, cause.msg, last.msg, label),
                      exc=last)
        return None

    def create(self, label, target_state):
        """Rent one instance labelled ``label``; returns (row or None in check mode, offer)."""
        p = self.params
        self.check_credit()
        excluded = set()
        tried = []
        self.result["offers_tried"] = tried
        offers = self.candidates(excluded)
        if not offers or offers[0].get("_missing") and p["max_dph"] is not None:
            if p["offer_id"] is not None:
                raise CreateFailed("offer %s is not available (taken or gone); search again with vast_offer_info "
                                   "or use offer_filters" % p["offer_id"])
            raise CreateFailed("no offer matches offer_filters; widen gpu_names, max_dph or min_reliability "
                               "(query: %s)" % build_query(p["offer_filters"], p["disk_gb"]))
        body = self.creation_body(label, target_state)
        self.ensure_account_keys()
        last_error = None
        while len(tried) < p["max_offer_tries"]:
            offer = next((o for o in offers if o.get("machine_id") not in excluded
                          and o["id"] not in [t["offer_id"] for t in tried]), None)
            if offer is None:
                if p["offer_id"] is not None:
                    break
                offers = self.search(excluded)  # fresh candidates without the failed machines
                offer = next((o for o in offers if o["id"] not in [t["offer_id"] for t in tried]), None)
                if offer is None:
                    break
            self.preflight(offer)
            price = offer.get("dph_total")
            self.result["actions"].append("rent offer %s%s as %s" % (
                offer["id"], " ($%.4f/h)" % price if price is not None else "", label))
            if self.module.check_mode:
                tried.append(dict(offer_id=offer["id"], machine_id=offer.get("machine_id"), result="check_mode"))
                return None, offer
            try:
                answer = self.client.create_instance(offer["id"], body)
            except VastOfferUnavailableError as e:
                last_error = e
                tried.append(dict(offer_id=offer["id"], machine_id=offer.get("machine_id"), result="taken"))
                self.audit("create", label=label, price=price, result="offer_taken", offer_id=offer["id"])
                if offer.get("machine_id") is not None:
                    excluded.add(offer["machine_id"])
                row = self.reconcile_quick(label)
                if row:
                    return row, offer
                continue
            except VastError as e:
                tried.append(dict(offer_id=offer["id"], machine_id=offer.get("machine_id"), result="error: %s" % e.msg))
                if e.status is not None and 400 <= e.status < 500:
                    # refused outright (bad request, auth, credit): nothing was rented
                    self.audit("create", label=label, price=price, result="error", offer_id=offer["id"], detail=e.msg)
                    self.fail_vast(e, doing="renting offer %s for %r was refused" % (offer["id"], label))
                # The answer may be lost while the rental happened: never retry blindly.
                row = self.reconcile(label, offer["id"], e)
                if row is not None:
                    self.result["actions"].append("create answer lost; found instance %s by label" % row["id"])
                    self.audit("create", instance_id=row["id"], label=label, price=price, result="reconciled",
                               offer_id=offer["id"])
                    return row, offer
                self.audit("create", label=label, price=price, result="error", offer_id=offer["id"], detail=e.msg)
                self.fail_vast(e, doing="renting offer %s for %r failed and no instance with that label exists"
                               % (offer["id"], label))
            new_id = answer.get("new_contract")
            tried.append(dict(offer_id=offer["id"], machine_id=offer.get("machine_id"), result="created"))
            self.audit("create", instance_id=new_id, label=label, price=price, offer_id=offer["id"])
            self.created_ids.append(new_id)
            try:
                self.attach_keys(new_id)
                row = self.client.get_instance(new_id) or {"id": new_id, "label": label, "actual_status": None}
            except VastError as e:
                self.fail_vast(e, doing="instance %s (%s) was rented, but" % (new_id, label), instance_id=new_id)
            return row, offer
        ids = ", ".join(str(t["offer_id"]) for t in tried)
        raise CreateFailed("could not rent an instance: tried %d offer(s) (%s), all taken%s; widen max_dph or "
                           "gpu_names, or raise max_offer_tries" % (
                               len(tried), ids, " (%s)" % last_error.msg if last_error else ""))

    def reconcile_quick(self, label):
        rows = self.by_label(label)
        return rows[0] if len(rows) == 1 else None

    def ensure_account_keys(self):
        """VMs take their SSH keys from the account at creation: add missing ones first."""
        p = self.params
        if not (p["vm"] and p["ssh_keys"]) or self.module.check_mode:
            return
        have = set(_key_material(k.get("public_key") or k.get("key")) for k in self.client.account_ssh_keys())
        for key in p["ssh_keys"]:
            if _key_material(key) not in have:
                self.client.add_account_ssh_key(key)
                self.result["actions"].append("add ssh key to the account (needed by VMs)")
                have.add(_key_material(key))

    def attach_keys(self, instance_id):
        p = self.params
        if not p["ssh_keys"] or p["vm"]:
            return
        for key in p["ssh_keys"]:
            self.client.attach_ssh_key(instance_id, key)
        self.result["actions"].append("attach %d ssh key(s)" % len(p["ssh_keys"]))

    # ------------------------------------------------------------------ mutations
    def mutate(self, action, row, call, settled, what):
        """Run one mutation of an existing instance (``call()``); never re-send it blindly.

        When the answer is lost (reset, timeout, 5xx) the server may have done it anyway:
        re-read the instance (a GET, retried safely) and, when ``settled(row_or_None)``, carry on
        as a success. When the re-read shows it did not happen, send it once more: these
        requests are idempotent (a target state, a label, a delete), so a first one that lands
        late does no harm. Otherwise fail naming the instance.
        """
        iid = row["id"]
        try:
            call()
            return False
        except VastError as e:
            if not _answer_may_be_lost(e):
                raise
            cause = e
        done, last = self.reread(iid, settled)
        if not done and last is None:
            self.result["actions"].append("%s answer lost and not done; sent it once more" % action)
            try:
                call()
                return True
            except VastError as e:
                cause = e  # lost again, or refused because a late first request already did it
            done, last = self.reread(iid, settled)
        if done:
            self.result["actions"].append("%s answer lost; instance %s is %s" % (action, iid, what))
            return True
        self.result["changed"] = True  # it may have happened
        if last is not None:
            self.fail("%s of instance %s (%s): the answer was lost (%s) and re-reading the instance failed too "
                      "(%s); its state is unknown, check it with vast_instance_info id=%s" % (
                          action, iid, row.get("label"), cause.msg, last.msg, iid),
                      exc=last, instance_id=iid)
        self.fail("%s of instance %s (%s): sent twice, both answers lost or refused (%s), and the instance is "
                  "not %s; run the task again" % (action, iid, row.get("label"), cause.msg, what),
                  exc=cause, instance_id=iid)

    def reread(self, iid, settled):
        """(settled, last read error) after up to MUTATION_RECONCILE_TRIES reads of the instance."""
        last = None
        for attempt in range(MUTATION_RECONCILE_TRIES):
            try:
                now = self.client.get_instance(iid)
            except VastError as e:
                last = e
            else:
                last = None
                if settled(now):
                    return True, None
            if attempt + 1 < MUTATION_RECONCILE_TRIES:
                time.sleep(min(1.0, self.params["poll_interval"]) * (attempt + 1))
        return False, last

    def destroy_instance(self, row):
        """Destroy; True when a lost answer was reconciled (the instance is gone)."""
        return self.mutate("destroy", row, lambda: self.client.destroy(row["id"]),
                           lambda now: now is None or now.get("destroyed_at") is not None
                           or now.get("actual_status") == "destroyed", "gone")

    def change_power(self, row, state, action):
        """Plan a start/stop (result, actions, diff plan); outside check mode send it and audit it."""
        self.result["changed"] = True
        self.result["actions"].append("%s instance %s" % (action, row["id"]))
        self.result["_planned"] = {"id": row["id"], "label": row.get("label"), "state": state}
        if self.module.check_mode:
            return
        lost = self.set_instance_state(row, state)
        self.audit(action, instance_id=row["id"], label=row.get("label"), price=row.get("dph_total"),
                   result="reconciled" if lost else "ok")

    def set_instance_state(self, row, state):
        return self.mutate("start" if state == "running" else "stop", row,
                           lambda: self.client.set_state(row["id"], state),
                           lambda now: now is not None and now.get("intended_status") == state,
                           "now intended %s" % state)

    # ------------------------------------------------------------------ waiting
    def wait_running(self, row, created=False):
        p = self.params
        if not p["wait"] or self.module.check_mode or row is None:
            return row
        self.result["actions"].append("wait for running")
        started = time.monotonic()

        def fail_fast(r):
            if r.get("actual_status") == "offline":
                return "the host went offline"
            if r.get("actual_status") == "exited" and r.get("intended_status") == "running":
                return "the container exited"
            return None
        try:
            row = self.wait_instance(row["id"], lambda r: r.get("actual_status") == "running",
                                     p["wait_timeout"], p["poll_interval"], fail_fast)
        except VastError as e:
            self.fail_vast(e, doing="waiting for instance %s (%s) to run" % (row["id"], row.get("label")),
                           instance_id=row["id"], changed=self.result["changed"])
        except WaitTimeout as e:
            self.wait_failed(e.row or row, "did not reach running within %ds" % p["wait_timeout"], created)
        except WaitFailed as e:
            self.wait_failed(e.row, e.reason, created)
        if p["wait_ssh"]:
            endpoint = ssh_endpoint(row, p["connect_with"])
            left = p["wait_timeout"] - (time.monotonic() - started)
            self.result["actions"].append("wait for ssh")
            if endpoint is None or not self.wait_ssh_banner(endpoint, max(left, 1), min(p["poll_interval"], 2)):
                self.wait_failed(row, "runs, but SSH %s did not answer with a banner within %ds" % (
                    "%s:%s" % (endpoint["host"], endpoint["port"]) if endpoint else "(no endpoint)",
                    p["wait_timeout"]), created)
        return row

    def wait_stopped(self, row):
        p = self.params
        if not p["wait"] or self.module.check_mode:
            return row
        self.result["actions"].append("wait for stopped")
        try:
            return self.wait_instance(row["id"], lambda r: r.get("actual_status") in STOPPED,
                                      p["wait_timeout"], p["poll_interval"])
        except VastError as e:
            self.fail_vast(e, doing="waiting for instance %s (%s) to stop" % (row["id"], row.get("label")),
                           instance_id=row["id"])
        except WaitTimeout as e:
            self.wait_failed(e.row or row, "did not stop within %ds" % p["wait_timeout"], False)

    def wait_failed(self, row, what, created):
        p = self.params
        iid = row.get("id")
        tail = ""
        try:
            tail = self.client.logs(iid, tail=20, poll_tries=10)
        except VastError:
            tail = "(log not available)"
        msg = "instance %s (%s) %s: actual_status=%s, status_msg=%r" % (
            iid, row.get("label"), what, row.get("actual_status"), row.get("status_msg"))
        destroyed = False
        if created and p["destroy_on_failure"]:
            try:
                self.client.destroy(iid)
                destroyed = True
                self.audit("destroy", instance_id=iid, label=row.get("label"), price=row.get("dph_total"),
                           detail="destroy_on_failure")
                msg += "; destroyed it (destroy_on_failure)"
            except VastError as e:
                msg += "; destroy_on_failure failed too: %s" % e.msg
        elif created:
            msg += "; this task created it and it still exists, billing (destroy_on_failure is off)"
        self.result["changed"] = self.result["changed"] or created or destroyed
        self.fail(msg, instance_id=iid, status_msg=row.get("status_msg"), log_tail=tail,
                  instance=None if destroyed else self.view(row))

    # ------------------------------------------------------------------ states
    def run(self):
        self.result["actions"] = []
        self.created_ids = []
        p = self.params
        if p["exact_count"] is not None:
            return self.run_exact_count()
        label = self.resolve_label()
        if label is None and p["id"] is None:
            self.fail("give label, name or id to identify the instance")
        found = None
        try:
            row = found = self.find(label)
            before = self.snapshot(row)
            row = self.ensure(row, label)
        except CreateFailed as e:
            self.fail(str(e))
        except VastError as e:
            iid = p["id"] if p["id"] is not None else (found or {}).get("id")
            if iid is None:
                raise
            # name the instance, so nobody has to guess which one is in an unknown state
            self.fail_vast(e, doing="instance %s (%s), state=%s" % (iid, label or "no label", p["state"]),
                           instance_id=iid)
        self.result["instance"] = self.view(row) if row else None
        self.result["diff"] = dict(before=before, after=self.snapshot(row, self.result.get("_planned")))
        self.result.pop("_planned", None)

    def snapshot(self, row, planned=None):
        if planned:
            return planned
        if not row:
            return {"state": "absent"}
        return {"id": row.get("id"), "label": row.get("label"),
                "state": row.get("actual_status") or row.get("intended_status") or "created"}

    def ensure(self, row, label):
        p = self.params
        state = p["state"]
        if state == "absent":
            if row is None:
                return None
            self.result["changed"] = True
            self.result["actions"].append("destroy instance %s" % row["id"])
            if not self.module.check_mode:
                lost = self.destroy_instance(row)
                self.audit("destroy", instance_id=row["id"], label=row.get("label"), price=row.get("dph_total"),
                           result="reconciled" if lost else "ok")
            self.result["_planned"] = {"state": "absent"}
            return None

        if row is None:
            if p["id"] is not None:
                self.fail("instance %s does not exist (destroyed, or not on this account); an instance cannot be "
                          "created with a given id - use label" % p["id"], instance_id=p["id"])
            if not any(p[k] for k in CREATION_OPTIONS):
                self.fail("no instance labelled %r exists and no creation options (offer_id or offer_filters, "
                          "image) were given to create one" % label)
            if not (p["offer_id"] or p["offer_filters"]):
                self.fail("no instance labelled %r exists; give offer_id or offer_filters to rent one" % label)
            target = "stopped" if state == "stopped" else "running"
            self.result["changed"] = True
            new_row, offer = self.create(label, target)
            if new_row is None:  # check mode
                self.result["_planned"] = {"id": None, "label": label, "state": target, "offer_id": offer["id"]}
                return None
            if state == "stopped":
                return self.wait_stopped(new_row) if new_row.get("actual_status") not in STOPPED else new_row
            return self.wait_running(new_row, created=True)

        if p["id"] is not None and p["label"] and row.get("label") != p["label"]:
            self.result["changed"] = True
            self.result["actions"].append("set label %r" % p["label"])
            if not self.module.check_mode:
                lost = self.mutate("label", row, lambda: self.client.set_label(row["id"], p["label"]),
                                   lambda now: now is not None and now.get("label") == p["label"],
                                   "labelled %r" % p["label"])
                self.audit("label", instance_id=row["id"], label=p["label"], price=row.get("dph_total"),
                           result="reconciled" if lost else "ok")
            row = dict(row, label=p["label"])

        status = row.get("actual_status")
        intended = row.get("intended_status")
        if state == "present":
            if status in (None, "loading", "created") and intended != "stopped":
                return self.wait_running(row) if p["wait"] else row
            return row
        if state == "running":
            if status == "running":
                return row
            if intended != "running":
                self.change_power(row, "running", "start")
                if self.module.check_mode:
                    return row
            return self.wait_running(row)
        if state == "stopped":
            if status in STOPPED and intended != "running":
                return row
            if intended == "stopped":  # already asked for; just wait
                return self.wait_stopped(row)
            self.change_power(row, "stopped", "stop")
            if self.module.check_mode:
                return row
            return self.wait_stopped(row)
        if state == "restarted":
            self.result["changed"] = True
            self.result["_planned"] = {"id": row["id"], "label": row.get("label"), "state": "running"}
            if status == "running":
                self.result["actions"].append("reboot instance %s" % row["id"])
                if not self.module.check_mode:
                    self.client.reboot(row["id"])
                    self.audit("reboot", instance_id=row["id"], label=row.get("label"), price=row.get("dph_total"))
            else:
                self.result["actions"].append("start instance %s" % row["id"])
                if not self.module.check_mode:
                    lost = self.set_instance_state(row, "running")
                    self.audit("start", instance_id=row["id"], label=row.get("label"), price=row.get("dph_total"),
                               result="reconciled" if lost else "ok")
            if self.module.check_mode:
                return row
            return self.wait_running(dict(row, actual_status="rebooting"))
        return row  # pragma: no cover

    def run_exact_count(self):
        p = self.params
        prefix = self.resolve_label()
        if not prefix:
            self.fail("exact_count needs label or name for the replica label prefix")
        pattern = re.compile(r"^%s-(\d+)$" % re.escape(prefix))
        rows = [r for r in self.client.list_instances() if pattern.match(r.get("label") or "")]
        by_index = {}
        for r in rows:
            by_index.setdefault(int(pattern.match(r["label"]).group(1)), []).append(r)
        dupes = [ix for ix, rs in by_index.items() if len(rs) > 1]
        if dupes:
            ids = sorted(r["id"] for ix in dupes for r in by_index[ix])
            self.fail("replica labels %s are used by several instances (ids %s); fix them first" % (
                ", ".join("%s-%d" % (prefix, ix) for ix in sorted(dupes)), ", ".join(str(i) for i in ids)),
                instance_ids=ids)
        have = sorted(by_index)
        keep = have[: p["exact_count"]]
        drop = have[p["exact_count"]:]
        before = {"count": len(have), "labels": ["%s-%d" % (prefix, ix) for ix in have]}
        result_rows = []
        for ix in drop:
            r = by_index[ix][0]
            self.result["changed"] = True
            self.result["actions"].append("destroy instance %s (%s)" % (r["id"], r["label"]))
            if not self.module.check_mode:
                lost = self.destroy_instance(r)
                self.audit("destroy", instance_id=r["id"], label=r["label"], price=r.get("dph_total"),
                           detail="exact_count", result="reconciled" if lost else "ok")
        missing = []
        ix = 1
        while len(keep) + len(missing) < p["exact_count"]:
            if ix not in by_index:
                missing.append(ix)
            ix += 1
        try:
            for ix in keep:
                result_rows.append(self.ensure(by_index[ix][0], "%s-%d" % (prefix, ix)))
            for ix in missing:
                label = "%s-%d" % (prefix, ix)
                self.result["changed"] = True
                new_row, offer = self.create(label, "running")
                result_rows.append(new_row or {"id": None, "label": label, "actual_status": None})
            if not self.module.check_mode:
                result_rows = [self.wait_running(r, created=r["id"] in self.created_ids) for r in result_rows]
        except CreateFailed as e:
            self.fail(str(e))
        self.result["instances"] = sorted((self.view(r) for r in result_rows if r), key=lambda r: r.get("label") or "")
        after_labels = sorted(set(["%s-%d" % (prefix, i) for i in keep + missing]))
        self.result["diff"] = dict(before=before, after={"count": len(after_labels), "labels": after_labels})
        self.result.pop("_planned", None)


def main():
    argument_spec = vast_argument_spec()
    argument_spec.update(
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
        cancel_unavail=dict(type="bool", default=True),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=900),
        wait_ssh=dict(type="bool", default=False),
        poll_interval=dict(type="float", default=5, fallback=(env_fallback, ["VAST_POLL_INTERVAL"])),
        destroy_on_failure=dict(type="bool", default=False),
        exact_count=dict(type="int"),
        max_exact_count=dict(type="int", default=DEFAULT_MAX_EXACT_COUNT),
        min_credit=dict(type="float"),
        max_dph=dict(type="float"),
        connect_with=dict(type="str", default="auto", choices=["auto", "direct", "proxy"]),
        audit_log=dict(type="path", fallback=(env_fallback, ["VAST_AUDIT_LOG"])),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        mutually_exclusive=[("offer_id", "offer_filters")],
        required_one_of=[("id", "label", "name")],
    )
    VastInstance(module).execute()


if __name__ == "__main__":
    main()
