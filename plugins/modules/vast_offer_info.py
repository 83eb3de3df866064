#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: llmops.vastai contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: vast_offer_info
short_description: Search the vast.ai GPU marketplace for rentable offers
version_added: 0.1.0
description:
  - Searches vast.ai offers with typed filters (units in GB, GPU names in any spelling) and
    returns them sorted by price, value, reliability or score, with a short summary.
  - Offers are volatile; pass the result to M(llmops.vastai.vast_instance) quickly, or give
    that module the same filters as O(llmops.vastai.vast_instance#module:offer_filters).
author:
  - llmops.vastai maintainers (@llmops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - llmops.vastai.vast
  - llmops.vastai.vast.info
options:
  gpu_names:
    description:
      - GPU models to accept, for example V(RTX 4090), V(RTX_4090) or V(rtx-4090) (all the same).
    type: list
    elements: str
  min_num_gpus:
    description: Minimum number of GPUs in the offer.
    type: int
  max_num_gpus:
    description: Maximum number of GPUs in the offer.
    type: int
  min_gpu_ram_gb:
    description:
      - Minimum memory per GPU in GB as the card is marketed (V(48) for an L40S or RTX A6000).
      - vast.ai reports C(gpu_ram) in MB below that size (an L40S shows 46068), so this becomes
        C(gpu_ram >= GB x 1024 x 0.93), gpuhunt's tolerance.
    type: float
  min_total_gpu_ram_gb:
    description: Minimum memory over all GPUs of the offer, in GB (with the same tolerance as O(min_gpu_ram_gb)).
    type: float
  min_cpu_ram_gb:
    description: Minimum system memory in GB.
    type: float
  max_dph:
    description: Maximum total price in dollars per hour (C(dph_total), storage for O(allocated_storage) included).
    type: float
  min_reliability:
    description: Minimum host reliability between 0 and 1.
    type: float
  countries:
    description: Two-letter country codes of the host, for example V(US) or V(DE).
    type: list
    elements: str
  regions:
    description: Continent groups, expanded to country codes and merged with O(countries).
    type: list
    elements: str
    choices: [africa, asia, europe, north_america, oceania, south_america]
  min_cuda:
    description:
      - Minimum CUDA version the host driver supports (C(cuda_max_good)), for example V(13.0) for
        current vLLM images.
      - Also sends C(compute_cap >= 600) (C(cuda_max_good) alone hid H100/H200 offers, gpuhunt#142)
        unless O(query) sets C(compute_cap).
    type: float
  min_disk_gb:
    description: Minimum free disk on the host in GB.
    type: float
  min_inet_down:
    description: Minimum download bandwidth in Mb/s.
    type: float
  verified:
    description: Only verified hosts (V(true)), only unverified (V(false)).
    type: bool
    default: true
  datacenter:
    description: Only datacenter hosts (V(true)) or only community hosts (V(false)); any when unset.
    type: bool
  min_direct_ports:
    description: Minimum number of directly mapped ports (needed for direct SSH and service ports).
    type: int
  static_ip:
    description: Only hosts with a static IP address.
    type: bool
  vm_capable:
    description: Only hosts that can run VM instances (C(vms_enabled)).
    type: bool
  offer_type:
    description:
      - V(on-demand) (fixed price), V(interruptible) (bid, may be paused when outbid) or V(reserved).
    type: str
    default: on-demand
    choices: [on-demand, interruptible, reserved]
  exclude_machine_ids:
    description: Machines to leave out (for example those that failed before).
    type: list
    elements: int
    default: []
  query:
    description:
      - "Raw vast.ai query fields merged last into the generated query (escape hatch), for example
        C({\"compute_cap\": {\"gte\": 800}}). Units are the API's (RAM in MB)."
    type: dict
  order_by:
    description:
      - V(price) cheapest first, V(value) most DLPerf per dollar first, V(reliability) most
        reliable first, V(score) vast.ai's score first.
    type: str
    default: price
    choices: [price, reliability, score, value]
  limit:
    description: Maximum number of offers to return (1 to 1000).
    type: int
    default: 10
  allocated_storage:
    description: Disk size in GB used to price storage into C(dph_total) (greater than 0, at most 16384).
    type: float
    default: 10
"""

EXAMPLES = r"""
- name: Two cheapest verified RTX 4090 offers with 24 GB, in the US or Canada, under $0.60/h
  llmops.vastai.vast_offer_info:
    gpu_names: [RTX 4090]
    min_gpu_ram_gb: 24
    max_dph: 0.60
    countries: [US, CA]
    min_reliability: 0.98
    limit: 2
  register: found

- name: Best value among multi-GPU VM-capable hosts
  llmops.vastai.vast_offer_info:
    gpu_names: [A100_SXM4, H100-SXM]
    min_num_gpus: 2
    vm_capable: true
    order_by: value
    query:
      compute_cap: {gte: 800}

- name: Use the cheapest
  ansible.builtin.debug:
    msg: "offer {{ found.summary.cheapest.id }} at ${{ found.summary.cheapest.dph_total }}/h"
  when: found.summary.count > 0
"""

RETURN = r"""
offers:
  description:
    - Offers in the requested order, as the API returns them (RAM in MB, disk in GB,
      prices in $/h, C(storage_cost) in $/GB/month) plus C(gpu_ram_gb), C(gpu_total_ram_gb),
      C(cpu_ram_gb) and C(country). Empty when nothing matches.
  returned: always
  type: list
  elements: dict
  sample:
    - id: 1234567
      machine_id: 4321
      gpu_name: RTX 4090
      num_gpus: 1
      gpu_ram: 24564
      gpu_ram_gb: 24.6
      dph_total: 0.41
      reliability: 0.995
      geolocation: California, US
      country: US
summary:
  description: Count, cheapest offer, sort order and the query sent to the API.
  returned: always
  type: dict
  contains:
    count:
      description: Number of offers returned.
      type: int
    cheapest:
      description: The lowest C(dph_total) offer among those returned (id, gpu_name, num_gpus, dph_total), or null.
      type: dict
    order_by:
      description: The sort order used.
      type: str
    query:
      description: The JSON query sent to C(POST /api/v0/bundles/).
      type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmops.vastai.plugins.module_utils.base import VastModule, vast_argument_spec
from ansible_collections.llmops.vastai.plugins.module_utils.validation import MAX_DISK_GB
from ansible_collections.llmops.vastai.plugins.module_utils.query import (
    OFFER_FILTER_SPEC,
    build_query,
    describe_offer,
    sort_offers,
    validate_filters,
)


class VastOfferInfo(VastModule):
    def validate(self):
        errors = validate_filters(self.params)
        if self.params["allocated_storage"] <= 0:
            errors.append("allocated_storage must be greater than 0")
        elif self.params["allocated_storage"] > MAX_DISK_GB:
            errors.append("allocated_storage must be at most %d GB, not %s" % (MAX_DISK_GB, self.params["allocated_storage"]))
        return errors

    def run(self):
        query = build_query(self.params, allocated_storage=self.params["allocated_storage"])
        offers = sort_offers(self.client.search_offers(query), self.params["order_by"])
        offers = [o for o in offers if o.get("machine_id") not in set(self.params["exclude_machine_ids"])]
        offers = [describe_offer(o) for o in offers[: self.params["limit"]]]
        cheapest = min(offers, key=lambda o: o.get("dph_total") or 0) if offers else None
        self.result["offers"] = offers
        self.result["summary"] = dict(
            count=len(offers),
            cheapest=dict((k, cheapest.get(k)) for k in ("id", "machine_id", "gpu_name", "num_gpus", "dph_total"))
            if cheapest else None,
            order_by=self.params["order_by"],
            query=query,
        )


def main():
    argument_spec = vast_argument_spec()
    argument_spec.update(OFFER_FILTER_SPEC)
    argument_spec.update(allocated_storage=dict(type="float", default=10))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    VastOfferInfo(module).execute()


if __name__ == "__main__":
    main()
