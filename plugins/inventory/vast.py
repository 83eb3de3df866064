# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: vast
short_description: vast.ai GPU instances as an Ansible inventory
version_added: 0.1.0
description:
  - Reads the instances of a vast.ai account through the v1 instance listing and makes each
    one an inventory host that Ansible can reach over SSH.
  - Uses a YAML configuration file whose name ends with C(vast.yml) or C(vast.yaml).
  - "Host names come from instance labels. A label is sanitized (every character other than
    letters, digits, C(.), C(_) and C(-) becomes C(_)). An instance without a label, or whose
    sanitized label is shared with another listed instance, is named C(vast-<id>) instead, so
    every name is unique and the same instance keeps the same name from run to run while its
    label stays unique. A label that itself looks like C(vast-<digits>) but is not the
    instance's own id is treated as a duplicate for the same reason."
  - "A label that names a group or a reserved host is not used as a host name either (the
    instance is listed as C(vast-<id>)): C(all), C(ungrouped), C(localhost) (and C(127.0.0.1)),
    the O(group) of this source, its default groups and every group O(groups) and
    O(keyed_groups) create. A host named like a group would take that group's variables and
    children, so one label could break the inventory for every instance; no label can."
  - "Connection variables: O(connect_with=auto) uses the direct SSH port when the instance
    maps C(22/tcp) (an instance rented with direct SSH) and that port answers with an SSH
    banner within O(ssh_probe_timeout), and the vast.ai SSH proxy (C(ssh_host):C(ssh_port))
    otherwise: direct SSH is blocked on some hosts. When an instance has no usable address yet (it is
    still loading, or direct was forced and it has no direct port), C(ansible_host) is left
    unset and a message is shown at C(-v); O(compose) can supply a fallback."
  - With O(cache) enabled the plugin caches the raw API rows, not the built inventory, so a
    warm run makes no API call while changes to O(compose), O(keyed_groups), O(groups),
    O(connect_with), O(hostvars_prefix) and the client-side filters still apply. The cache
    entry is specific to the API URL, the account (a short one-way fingerprint of the key,
    never the key) and the server-side filters (O(statuses), O(labels), O(gpu_names)).
author:
  - llmops.vastai maintainers (@llmops)
requirements:
  - requests (on the controller, only when the API is called)
extends_documentation_fragment:
  - constructed
  - inventory_cache
options:
  plugin:
    description: Marks this file as a configuration for this plugin.
    required: true
    type: str
    choices: [llmops.vastai.vast]
  api_key:
    description:
      - vast.ai API key. It is sent only in the C(Authorization) header and never shown in
        output, logs, errors or the cache.
      - May be a template, for example C({{ lookup('env', 'MY_VAST_KEY') }}) or a vaulted
        extra variable; extra variables are available to the template.
      - Surrounding whitespace is dropped (a key read from a file ends in a newline); a key
        with whitespace or non-printable characters inside it is refused with a message that
        does not contain it.
      - Do not write the key itself into this file. When this plugin fails (wrong key, API
        down), Ansible tries the file with its other enabled inventory plugins, and the C(ini)
        plugin's parse errors may quote lines of it. E(VAST_API_KEY) or a vaulted variable
        keeps the key out of the file.
    type: str
    env:
      - name: VAST_API_KEY
  api_url:
    description: Base URL of the vast.ai API (the same variable the official CLI reads).
    type: str
    default: https://console.vast.ai
    env:
      - name: VAST_URL
  timeout:
    description: Seconds to wait for each API request (1 to 3600).
    type: int
    default: 30
  parallel_requests:
    description:
      - How many listing requests run at once. The listing returns at most 25 rows per page;
        with a value above 1 the id range is split into disjoint ranges that are paged
        concurrently, which is much faster on large accounts. Use 1 for a strictly
        sequential listing.
      - vast.ai documents a per-key pace for the listing (about one call a second). When the
        concurrent pages are still rate-limited after the client's retries, the plugin warns
        and reads the listing again one page at a time.
      - Between 1 and 64.
    type: int
    default: 8
  statuses:
    description:
      - Only instances whose C(actual_status) is one of these (server-side filter).
      - An empty list means every status.
    type: list
    elements: str
    default: [running]
  labels:
    description: Only instances with one of these labels (server-side filter, exact match).
    type: list
    elements: str
    default: []
  label_prefix:
    description: Only instances whose label starts with one of these prefixes (client-side).
    type: list
    elements: str
    default: []
  gpu_names:
    description:
      - Only instances with one of these GPU models (server-side filter), for example
        C(RTX 4090). C(_) and C(-) are treated as spaces and case is ignored.
    type: list
    elements: str
    default: []
  connect_with:
    description:
      - Which SSH endpoint sets C(ansible_host), C(ansible_port) and C(ansible_user).
      - V(auto) is direct when the instance maps C(22/tcp) and, for a running instance with a
        proxy too, the direct port answers SSH within O(ssh_probe_timeout); else the vast.ai
        proxy (C(vast_ssh_direct_silent) is then V(true)).
      - V(direct) is the public IP and the mapped port only; instances without one get no
        C(ansible_host).
      - V(proxy) is always C(ssh_host):C(ssh_port).
    type: str
    default: auto
    choices: [auto, direct, proxy]
  ssh_probe_timeout:
    description:
      - Seconds O(connect_with=auto) waits for the direct SSH ports to send their banner (all
        instances are probed at once, so a run costs about this long, not this long per host).
      - V(0) turns the probe off (direct whenever C(22/tcp) is mapped, without checking).
      - The probe also runs when the rows come from the cache.
    type: float
    default: 2.0
  hostvars_prefix:
    description:
      - Prefix of the host variables made from the API fields (and of the computed ones).
      - C(ansible_host), C(ansible_port) and C(ansible_user) are never prefixed.
      - "Computed variables (shown with the default prefix): C(vast_ssh_kind) (V(direct),
        V(proxy) or null), C(vast_ssh_direct_silent) (V(true) when O(connect_with=auto) chose
        the proxy because the direct port sent no SSH banner), C(vast_status) (C(actual_status)), C(vast_cost_per_hour) (what the
        instance costs now in $/h: C(dph_total) while running or frozen, C(storage_total_cost)
        otherwise, since storage is billed until destroy), C(vast_uptime_seconds) (running
        instances only; aged to the current time when read from the cache) and C(vast_port_map)
        (container port to published host port, for example C({'8000/tcp': 41234}))."
    type: str
    default: vast_
  hostvars_fields:
    description:
      - API fields turned into host variables (with O(hostvars_prefix)). The default is what is
        needed to reach, pick, place and bill an instance; V(*) takes every field of the row
        (about 100). C(ports) is left out by default because the computed C(vast_port_map)
        carries the same information in a usable form.
      - Every host variable costs Ansible time on every run (for 1,000 hosts, the 100 fields
        of V(*) make C(ansible-inventory) about twice as slow as this default), so add only
        what you use.
    type: list
    elements: str
    default: [id, label, actual_status, intended_status, status_msg, machine_id, image_uuid,
              num_gpus, gpu_name, gpu_ram, cpu_ram, disk_space, public_ipaddr, ssh_host, ssh_port,
              dph_total, storage_total_cost, is_bid, start_date, uptime_mins, geolocation, reliability2,
              cuda_max_good]
  hostvars_exclude:
    description:
      - API fields not to turn into host variables. C(extra_env) and C(onstart) are left out by
        default because they often carry secrets (tokens passed as environment variables).
      - Secrets such as C(jupyter_token) are never exposed nor cached, whatever this says.
    type: list
    elements: str
    default: [extra_env, onstart]
  group:
    description: Name of the group every host of this source belongs to.
    type: str
    default: vast
  default_groups:
    description:
      - "Add the built-in groups: C(<group>_status_<actual_status>),
        C(<group>_gpu_<gpu_name>) (lower case) and C(<group>_label_<prefix>), where the prefix
        is the part of the label before the first O(label_group_separator)."
    type: bool
    default: true
  label_group_separator:
    description: Separator that ends the label prefix used by the C(<group>_label_<prefix>) groups.
    type: str
    default: "-"
"""

EXAMPLES = r"""
# inventory/prod.vast.yml -- every running instance, key from the environment (VAST_API_KEY)
plugin: llmops.vastai.vast

---
# Key from a vaulted extra variable or a lookup instead of the environment
plugin: llmops.vastai.vast
api_key: "{{ vault_vast_api_key }}"

---
# Running and stopped LLM servers, always through the vast.ai SSH proxy, cached for 5 minutes
plugin: llmops.vastai.vast
statuses: [running, stopped]
label_prefix: [llm-]
connect_with: proxy
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/ansible/vast
cache_timeout: 300

---
# Your own groups and variables on top of the built-in ones
plugin: llmops.vastai.vast
gpu_names: [RTX 4090, H100 SXM]
keyed_groups:
  - key: vast_num_gpus | string
    prefix: gpus
  - key: vast_geolocation | default('unknown')
    prefix: geo
groups:
  cheap: vast_cost_per_hour < 0.5
compose:
  vllm_url: "'http://' ~ vast_public_ipaddr ~ ':' ~ (vast_port_map['8000/tcp'] | default(8000))"
"""

import hashlib
import json
import re
import time

from ansible import constants as C
from ansible.errors import AnsibleError
from ansible.inventory.data import InventoryData
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible.utils.unsafe_proxy import wrap_var
from ansible_collections.llmops.vastai.plugins.module_utils.client import SECRET_ROW_FIELDS
from ansible_collections.llmops.vastai.plugins.module_utils.endpoints import port_map, ssh_endpoints_probed
from ansible_collections.llmops.vastai.plugins.module_utils.query import normalize_gpu_name
from ansible_collections.llmops.vastai.plugins.module_utils.validation import clean_api_key

NAME = "llmops.vastai.vast"

# Never exposed as host variables and never written to the cache (the client's one list).
_SECRET_FIELDS = SECRET_ROW_FIELDS
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_ID_NAME = re.compile(r"^vast-(\d+)$")
_CACHE_FORMAT = 1
MAX_TIMEOUT = 3600
MAX_PARALLEL = 64
_GPU_BILLED = frozenset(("running", "frozen"))
# Names a host must not take: Ansible's implicit groups and its localhost spellings.
_RESERVED_NAMES = frozenset(("all", "ungrouped")) | frozenset(C.LOCALHOST)


def _norm_gpu(name):
    """Lower-case API spelling (the modules' one normaliser: '_'/'-' mean a space)."""
    return normalize_gpu_name(to_text(name)).lower()


def _sanitize_label(label):
    if label is None:
        return ""
    return _LABEL_UNSAFE.sub("_", to_text(label).strip())


def host_names(rows):
    """Map instance id -> unique inventory name (the rule is in DOCUMENTATION)."""
    wanted = {}
    for row in rows:
        wanted[row["id"]] = _sanitize_label(row.get("label"))
    counts = {}
    for name in wanted.values():
        if name:
            counts[name] = counts.get(name, 0) + 1
    names = {}
    for iid, name in wanted.items():
        id_form = _ID_NAME.match(name or "")
        # A label that mimics another instance's fallback name could collide with it.
        if not name or counts[name] > 1 or (id_form and int(id_form.group(1)) != iid):
            name = "vast-%s" % iid
        names[iid] = name
    return names


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def computed_vars(row, fetched_at, now):
    """Derived host variables (names without prefix)."""
    status = row.get("actual_status")
    # what the instance costs now: GPU + storage while it holds the GPU, storage only otherwise
    if status in _GPU_BILLED:
        dph = _number(row.get("dph_total"))
    else:
        dph = _number(row.get("storage_total_cost"))
    uptime = None
    if status == "running":
        mins = _number(row.get("uptime_mins"))
        if mins is not None:
            # the row was read at fetched_at (maybe from the cache): age it to now
            uptime = int(mins * 60 + max(0.0, now - fetched_at))
        else:
            start = _number(row.get("start_date"))
            if start is not None:
                uptime = int(max(0.0, now - start))
    return {
        "status": status,
        "cost_per_hour": round(dph, 6) if dph is not None else None,
        "uptime_seconds": uptime,
        "port_map": port_map(row),
    }


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = NAME

    def verify_file(self, path):
        if not super().verify_file(path):
            return False
        if path.endswith(("vast.yml", "vast.yaml")):
            return True
        self.display.vvv("Skipping %s: the llmops.vastai.vast configuration must end in vast.yml or vast.yaml" % path)
        return False

    # --- options ----------------------------------------------------------------------------

    def _api_key(self):
        key = self.get_option("api_key")
        if key and self.templar.is_template(key):
            self.templar.available_variables = self._vars or {}
            key = self.templar.template(key)
        key, problem = clean_api_key(to_text(key) if key else None)
        if not key:
            raise AnsibleError(
                "llmops.vastai.vast: no vast.ai API key; set api_key in the inventory file "
                "(a template such as a vaulted variable or lookup works) or the VAST_API_KEY environment variable"
            )
        if problem:
            # never the key itself: only why it cannot be sent
            raise AnsibleError("llmops.vastai.vast: the vast.ai API key (api_key / VAST_API_KEY) cannot be used: %s"
                               % problem)
        return key

    def _numbers(self):
        """timeout and parallel_requests, checked before any call (bounds as in the modules)."""
        timeout, parallel = self.get_option("timeout"), self.get_option("parallel_requests")
        errors = []
        if not 1 <= timeout <= MAX_TIMEOUT:
            errors.append("timeout must be between 1 and %d seconds, not %s" % (MAX_TIMEOUT, timeout))
        if not 1 <= parallel <= MAX_PARALLEL:
            errors.append("parallel_requests must be between 1 and %d, not %s" % (MAX_PARALLEL, parallel))
        if errors:
            raise AnsibleError("llmops.vastai.vast: " + "; ".join(errors))
        return timeout, parallel

    def _server_filters(self):
        filters = {}
        statuses = [s for s in self.get_option("statuses") or [] if s]
        if statuses:
            filters["actual_status"] = {"in": sorted(set(statuses))}
        labels = self.get_option("labels") or []
        if labels:
            filters["label"] = {"in": sorted(set(labels))}
        gpus = self.get_option("gpu_names") or []
        if gpus:
            # the API stores GPU names with spaces and its own capitals ("H100 PCIE")
            filters["gpu_name"] = {"in": sorted(set(normalize_gpu_name(g) for g in gpus))}
        return filters

    def _cache_key(self, path, api_url, api_key, filters):
        # One entry per account, endpoint and server-side filter set: changing any of them must
        # miss the cache, everything else is re-applied to the cached rows.
        material = json.dumps(
            {"url": api_url.rstrip("/"), "account": hashlib.sha256(api_key.encode()).hexdigest(), "filters": filters},
            sort_keys=True,
        )
        return "%s_%s" % (self.get_cache_key(path), hashlib.sha256(material.encode()).hexdigest()[:16])

    # --- API --------------------------------------------------------------------------------

    def _fetch(self, api_url, api_key, filters):
        # Imported here so that a warm (cached) run does not pay for importing requests.
        try:
            from ansible_collections.llmops.vastai.plugins.module_utils.client import (
                VastAuthError,
                VastClient,
                VastError,
                VastRateLimitError,
            )
            from ansible_collections.llmops.vastai.plugins.module_utils.client import _redact as redact
        except ImportError as exc:
            raise AnsibleError("llmops.vastai.vast needs the collection's API client: %s" % to_text(exc))

        raw_key = self.get_option("api_key")

        def scrub(text):
            # every form (raw, stripped, repr, URL-encoded, JSON-escaped) of the key as given
            # and as sent
            text = redact(to_text(text), api_key)
            return redact(text, to_text(raw_key)) if raw_key and not self.templar.is_template(raw_key) else text

        timeout, parallel = self._numbers()
        started = time.monotonic()
        # Each error below is raised outside its except block: a traceback at -vvv then shows
        # no chained original exception, whose text could quote the request.
        failure = None
        try:
            client = VastClient(api_key, api_url=api_url, timeout=timeout)
            try:
                rows = client.list_instances(select_filters=filters or None, parallel=parallel)
            except VastRateLimitError:
                if parallel == 1:
                    raise
                # vast.ai paces the listing per key (about one call a second); concurrent pages
                # can run out of retries where one page after another still gets through.
                self.display.warning(
                    "vast.ai rate-limited the parallel listing; reading it again one page at a time "
                    "(set parallel_requests: 1 to skip the first attempt)"
                )
                rows = client.list_instances(select_filters=filters or None, parallel=1)
        except VastAuthError as exc:
            failure = (
                "vast.ai rejected the API key at %s (HTTP %s: %s). Check api_key in the inventory file or "
                "the VAST_API_KEY environment variable." % (api_url, getattr(exc, "status", "?"), getattr(exc, "msg", exc))
            )
        except VastError as exc:
            failure = "listing vast.ai instances at %s failed: %s" % (api_url, exc)
        except Exception as exc:  # pylint: disable=broad-except
            # anything unexpected still must not leak the key nor leave a half-built inventory
            failure = "listing vast.ai instances at %s failed: %s: %s" % (api_url, type(exc).__name__, exc)
        if failure is not None:
            raise AnsibleError(scrub(failure))
        self.display.vvv(
            "llmops.vastai.vast: listed %d instances from %s in %.2f s" % (len(rows), api_url, time.monotonic() - started)
        )
        return [{k: v for k, v in row.items() if k not in _SECRET_FIELDS} for row in rows]

    # --- building ---------------------------------------------------------------------------

    def _wanted(self, row):
        statuses = [s for s in self.get_option("statuses") or [] if s]
        if statuses and row.get("actual_status") not in statuses:
            return False
        labels = self.get_option("labels") or []
        label = row.get("label") or ""
        if labels and label not in labels:
            return False
        prefixes = self.get_option("label_prefix") or []
        if prefixes and not any(label.startswith(p) for p in prefixes):
            return False
        gpus = self.get_option("gpu_names") or []
        if gpus and _norm_gpu(row.get("gpu_name") or "") not in set(_norm_gpu(g) for g in gpus):
            return False
        return True

    def _populate(self, rows, fetched_at):
        rows = sorted((r for r in rows if self._wanted(r)), key=lambda r: r["id"])
        names = host_names(rows)
        # A host named like a group ("all", "ungrouped", this source's group, a default,
        # composed or keyed group) would receive that group's variables and children, and
        # "localhost" would become the controller's own host: such a label is not a name.
        taken = set(_RESERVED_NAMES) | self._group_names(rows, fetched_at)
        for iid, name in names.items():
            if name in taken:
                self.display.v("llmops.vastai.vast: instance %s is labelled %r, which names a group or a reserved "
                               "host; it is listed as vast-%s" % (iid, name, iid))
                names[iid] = "vast-%s" % iid
        self._build(rows, names, fetched_at)

    def _group_names(self, rows, fetched_at):
        """Every group this source would create, found by building it once into a scratch
        inventory under names that cannot collide (keyed groups depend on host variables)."""
        real = self.inventory
        if not (self.get_option("groups") or self.get_option("keyed_groups")):
            # no constructed groups: the names follow from the rows alone (no scratch build)
            top = self._sanitize_group_name(self.get_option("group"))
            names = set(real.groups) | set([top])
            if self.get_option("default_groups"):
                separator = self.get_option("label_group_separator")
                for row in rows:
                    names.update(self._default_group_names(row, top, separator))
            return names
        scratch = InventoryData()
        for group in real.groups:
            scratch.add_group(group)
        self.inventory = scratch
        try:
            self._build(rows, dict((r["id"], "vast-%s" % r["id"]) for r in rows), fetched_at, dry=True)
        finally:
            self.inventory = real
        return set(scratch.groups) | set(real.groups)

    def _build(self, rows, names, fetched_at, dry=False):
        prefix = self.get_option("hostvars_prefix") or ""
        exclude = set(self.get_option("hostvars_exclude") or []) | _SECRET_FIELDS
        fields = self.get_option("hostvars_fields") or []
        fields = None if "*" in fields else [f for f in fields if f not in exclude]
        connect_with = self.get_option("connect_with")
        top = self.inventory.add_group(self._sanitize_group_name(self.get_option("group")))
        default_groups = self.get_option("default_groups")
        separator = self.get_option("label_group_separator")
        strict = self.get_option("strict")
        compose = self.get_option("compose")
        groups = self.get_option("groups")
        keyed_groups = self.get_option("keyed_groups")
        now = time.time()

        # the dry build (group names only) never probes SSH ports
        endpoints = ssh_endpoints_probed(rows, connect_with, 0 if dry else self.get_option("ssh_probe_timeout") or 0)
        for row in rows:
            name = names[row["id"]]
            self.inventory.add_host(name, group=top)
            if fields is None:
                hostvars = {prefix + k: v for k, v in row.items() if k not in exclude}
            else:
                hostvars = {prefix + k: row[k] for k in fields if k in row}
            hostvars.update((prefix + k, v) for k, v in computed_vars(row, fetched_at, now).items())

            endpoint = endpoints.get(row["id"])
            hostvars[prefix + "ssh_kind"] = endpoint["kind"] if endpoint else None
            hostvars[prefix + "ssh_direct_silent"] = bool(endpoint and endpoint.get("direct_silent"))
            if endpoint:
                hostvars["ansible_host"] = endpoint["host"]
                hostvars["ansible_port"] = endpoint["port"]
                hostvars["ansible_user"] = endpoint["user"]
            elif not dry:
                self.display.v(
                    "llmops.vastai.vast: no %s SSH address for instance %s (%s, status %s) yet; "
                    "ansible_host not set" % (connect_with, row["id"], name, row.get("actual_status"))
                )
            if not dry:
                for key, value in hostvars.items():
                    self.inventory.set_variable(name, key, value)

            if default_groups:
                self._add_default_groups(name, row, top, separator)

            # hostvars is what compose/groups/keyed_groups see; no need to fetch them back. API
            # values (labels, ...) are data, never templates: ansible-core < 2.19 would render a
            # label "{{ 7 * 6 }}" copied through compose unless it is marked unsafe.
            safe = wrap_var(hostvars)
            if not dry or groups or keyed_groups:
                self._set_composite_vars(compose, safe, name, strict=strict)
            self._add_host_to_composed_groups(groups, safe, name, strict=strict)
            self._add_host_to_keyed_groups(keyed_groups, safe, name, strict=strict)

    def _default_group_names(self, row, top, separator):
        wanted = ["%s_status_%s" % (top, row.get("actual_status") or "unknown")]
        if row.get("gpu_name"):
            wanted.append("%s_gpu_%s" % (top, _norm_gpu(row["gpu_name"])))
        label = row.get("label") or ""
        if separator and separator in label:
            head = label.split(separator, 1)[0]
            if head:
                wanted.append("%s_label_%s" % (top, head))
        return [self._sanitize_group_name(group.replace(" ", "_")) for group in wanted]

    def _add_default_groups(self, name, row, top, separator):
        for group in self._default_group_names(row, top, separator):
            group = self.inventory.add_group(group)
            self.inventory.add_child(group, name)

    # --- entry point --------------------------------------------------------------------------

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache=cache)
        self._read_config_data(path)

        api_url = (self.get_option("api_url") or "https://console.vast.ai").rstrip("/")
        api_key = self._api_key()
        self._numbers()
        filters = self._server_filters()

        use_cache = self.get_option("cache")
        read_cache = use_cache and cache
        write_cache = use_cache and not cache  # --flush-cache: refresh the entry
        cache_key = self._cache_key(path, api_url, api_key, filters) if use_cache else None

        payload = None
        if read_cache:
            try:
                payload = self._cache[cache_key]
                if not isinstance(payload, dict) or payload.get("format") != _CACHE_FORMAT:
                    payload = None
            except KeyError:
                payload = None
            if payload is None:
                write_cache = True
            else:
                self.display.vvv("llmops.vastai.vast: using %d cached instance rows" % len(payload["rows"]))

        if payload is None:
            fetched_at = time.time()
            payload = {"format": _CACHE_FORMAT, "fetched_at": fetched_at, "rows": self._fetch(api_url, api_key, filters)}

        # Build only after every page has arrived: an error above leaves no partial inventory.
        self._populate(payload["rows"], payload["fetched_at"])

        if write_cache:
            # written only after a fresh read (rewriting an entry just read would reset its TTL)
            self._cache[cache_key] = payload
