# -*- coding: utf-8 -*-
# Copyright: llmops.vastai contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Typed offer filters -> vast.ai /bundles/ query (units, spellings, operators) and back."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

# API RAM fields are MB; the official CLI converts typed GB with a factor of 1000.
MB_PER_GB = 1000.0
# GPU RAM is reported below the marketing size (a 48 GB L40S reports 46068 MiB: gpuhunt's
# test_constraints). A typed GPU size therefore means "GB x 1024 x 0.93" MiB, gpuhunt's own
# tolerance (vastai.py make_filters): 48 GB matches 46068 (ratio 0.937) while the nearest
# smaller marketed sizes stay out (40 GB = 40960 < 45711; 80 GB matches 81559 but not 48 GB).
GPU_MIB_PER_GB = 1024.0
GPU_RAM_TOLERANCE = 0.93
# cuda_max_good alone can hide Hopper offers (gpuhunt#142); dstack always sends this floor
# beside it (compute.py _make_catalog). It filters out nothing vLLM can run on (vLLM needs 7.0).
COMPUTE_CAP_FLOOR = 600

# Canonical spellings as the API returns them; input is matched case-insensitively after
# '_'/'-' become spaces, so rtx_4090, RTX-4090 and "rtx 4090" all mean "RTX 4090".
KNOWN_GPUS = [
    "A10", "A100 PCIE", "A100 SXM4", "A100X", "A40", "A800 PCIE", "B200", "GH200 SXM",
    "GTX 1080 Ti", "GTX 1660 Ti", "H100 NVL", "H100 PCIE", "H100 SXM", "H200", "H200 NVL",
    "L4", "L40", "L40S", "Q RTX 8000", "RTX 2080 Ti", "RTX 3060", "RTX 3070", "RTX 3080",
    "RTX 3080 Ti", "RTX 3090", "RTX 3090 Ti", "RTX 4060 Ti", "RTX 4070", "RTX 4070 Ti",
    "RTX 4080", "RTX 4080S", "RTX 4090", "RTX 4090D", "RTX 5060 Ti", "RTX 5070", "RTX 5070 Ti",
    "RTX 5080", "RTX 5090", "RTX 6000Ada", "RTX A2000", "RTX A4000", "RTX A4500", "RTX A5000",
    "RTX A6000", "RTX PRO 6000 WS", "Tesla P100", "Tesla T4", "Tesla V100",
]
_CANON = dict((re.sub(r"\s+", " ", n).lower(), n) for n in KNOWN_GPUS)

ORDER_BY = {
    "price": [["dph_total", "asc"]],
    "value": [["dlperf_per_dphtotal", "desc"]],
    "reliability": [["reliability", "desc"]],
    "score": [["score", "desc"]],
}

OFFER_TYPES = {"on-demand": "on-demand", "interruptible": "bid", "reserved": "reserved"}

# Rough continent groups for `regions` (country codes as in geolocation's suffix).
REGIONS = {
    "north_america": ["US", "CA", "MX"],
    "south_america": ["BR", "AR", "CL", "CO", "PE"],
    "europe": ["DE", "FR", "NL", "GB", "SE", "PL", "UA", "ES", "IT", "FI", "NO", "CZ", "RO", "BE",
               "AT", "CH", "DK", "IE", "PT", "BG", "HU", "LT", "LV", "EE", "IS", "SK", "SI", "HR", "GR"],
    "asia": ["JP", "KR", "SG", "TW", "HK", "IN", "TH", "VN", "MY", "ID", "PH", "CN", "IL", "AE", "TR"],
    "oceania": ["AU", "NZ"],
    "africa": ["ZA", "NG", "KE", "EG", "MA"],
}

# Argument spec shared by vast_offer_info (top level) and vast_instance (offer_filters).
OFFER_FILTER_SPEC = dict(
    gpu_names=dict(type="list", elements="str"),
    min_num_gpus=dict(type="int"),
    max_num_gpus=dict(type="int"),
    min_gpu_ram_gb=dict(type="float"),
    min_total_gpu_ram_gb=dict(type="float"),
    min_cpu_ram_gb=dict(type="float"),
    max_dph=dict(type="float"),
    min_reliability=dict(type="float"),
    countries=dict(type="list", elements="str"),
    regions=dict(type="list", elements="str", choices=sorted(REGIONS)),
    min_cuda=dict(type="float"),
    min_disk_gb=dict(type="float"),
    min_inet_down=dict(type="float"),
    verified=dict(type="bool", default=True),
    datacenter=dict(type="bool"),
    min_direct_ports=dict(type="int"),
    static_ip=dict(type="bool"),
    vm_capable=dict(type="bool"),
    offer_type=dict(type="str", default="on-demand", choices=sorted(OFFER_TYPES)),
    exclude_machine_ids=dict(type="list", elements="int", default=[]),
    query=dict(type="dict"),
    order_by=dict(type="str", default="price", choices=sorted(ORDER_BY)),
    limit=dict(type="int", default=10),
)


def normalize_gpu_name(name):
    text = re.sub(r"[_\-]+", " ", str(name)).strip()
    text = re.sub(r"\s+", " ", text)
    return _CANON.get(text.lower(), text)


def validate_filters(f):
    """Problems with the filter values (a list of messages); checked before any API call."""
    errors = []
    for key in ("min_num_gpus", "max_num_gpus"):
        if f.get(key) is not None and f[key] < 1:
            errors.append("%s must be >= 1" % key)
    if f.get("min_num_gpus") and f.get("max_num_gpus") and f["min_num_gpus"] > f["max_num_gpus"]:
        errors.append("min_num_gpus (%s) is greater than max_num_gpus (%s)" % (f["min_num_gpus"], f["max_num_gpus"]))
    for key in ("min_gpu_ram_gb", "min_total_gpu_ram_gb", "min_cpu_ram_gb", "min_disk_gb", "min_inet_down", "min_cuda"):
        if f.get(key) is not None and f[key] < 0:
            errors.append("%s must not be negative" % key)
    if f.get("max_dph") is not None and f["max_dph"] <= 0:
        errors.append("max_dph must be greater than 0")
    if f.get("min_reliability") is not None and not 0 <= f["min_reliability"] <= 1:
        errors.append("min_reliability must be between 0 and 1 (e.g. 0.98)")
    for c in f.get("countries") or []:
        if not re.match(r"^[A-Za-z]{2}$", c):
            errors.append("countries takes two-letter country codes, not %r" % c)
    if f.get("limit") is not None and not 1 <= f["limit"] <= 1000:
        errors.append("limit must be between 1 and 1000")
    if not (f.get("gpu_names") is None or all(n and str(n).strip() for n in f["gpu_names"])):
        errors.append("gpu_names must not contain empty names")
    return errors


def gpu_ram_mib(gb):
    """Lowest reported per-GPU MiB that still counts as ``gb`` marketing gigabytes."""
    return round(float(gb) * GPU_MIB_PER_GB * GPU_RAM_TOLERANCE, 1)


def required_direct_ports(ports=None, runtype=None, vm=False):
    """How many direct ports an instance needs so everything asked for is reachable.

    Without a direct port range the API gives an instance no ``ports`` mapping (dstack filters
    ``direct_port_count >= 1`` for its one port; SkyPilot: only the gateway's ssh_port and
    ssh_port+1 are forwarded otherwise). Every published port needs one, and direct SSH (runtype
    with ``ssh_direc``, or a VM, which is reached on its own port 22) one more.
    """
    count = len(set(str(p).rsplit(":", 1)[-1].split("/")[0].strip() for p in (ports or []) if str(p).strip()))
    if vm or "direc" in (runtype or ""):
        count += 1
    return count


def build_query(f, allocated_storage=None, direct_ports=0):
    """The /bundles/ JSON body for the typed filters ``f`` (keys of OFFER_FILTER_SPEC).

    ``direct_ports``: direct ports the create needs (``required_direct_ports``); the query then
    asks for at least that many even if ``min_direct_ports`` is lower or unset.
    """
    q = {"rentable": {"eq": True}, "rented": {"eq": False}}
    if f.get("verified") is not None:
        q["verified"] = {"eq": bool(f["verified"])}
    if f.get("gpu_names"):
        q["gpu_name"] = {"in": [normalize_gpu_name(n) for n in f["gpu_names"]]}
    ng = {}
    if f.get("min_num_gpus") is not None:
        ng["gte"] = f["min_num_gpus"]
    if f.get("max_num_gpus") is not None:
        ng["lte"] = f["max_num_gpus"]
    if ng:
        q["num_gpus"] = ng
    if f.get("min_gpu_ram_gb") is not None:
        q["gpu_ram"] = {"gte": gpu_ram_mib(f["min_gpu_ram_gb"])}
    if f.get("min_total_gpu_ram_gb") is not None:
        q["gpu_total_ram"] = {"gte": gpu_ram_mib(f["min_total_gpu_ram_gb"])}
    if f.get("min_cpu_ram_gb") is not None:
        q["cpu_ram"] = {"gte": f["min_cpu_ram_gb"] * MB_PER_GB}
    if f.get("max_dph") is not None:
        q["dph_total"] = {"lte": f["max_dph"]}
    if f.get("min_reliability") is not None:
        q["reliability"] = {"gte": f["min_reliability"]}
    countries = [c.upper() for c in (f.get("countries") or [])]
    for region in f.get("regions") or []:
        countries.extend(REGIONS[region])
    if countries:
        q["geolocation"] = {"in": sorted(set(countries))}
    if f.get("min_cuda") is not None:
        q["cuda_max_good"] = {"gte": f["min_cuda"]}
        q["compute_cap"] = {"gte": COMPUTE_CAP_FLOOR}  # gpuhunt#142; a raw query's own wins below
    if f.get("min_disk_gb") is not None:
        q["disk_space"] = {"gte": f["min_disk_gb"]}
    if f.get("min_inet_down") is not None:
        q["inet_down"] = {"gte": f["min_inet_down"]}
    if f.get("datacenter") is not None:
        q["datacenter"] = {"eq": bool(f["datacenter"])}
    want_ports = max(int(f.get("min_direct_ports") or 0), int(direct_ports or 0))
    if f.get("min_direct_ports") is not None or want_ports:
        q["direct_port_count"] = {"gte": want_ports}
    if f.get("static_ip") is not None:
        q["static_ip"] = {"eq": bool(f["static_ip"])}
    if f.get("vm_capable") is not None:
        q["vms_enabled"] = {"eq": bool(f["vm_capable"])}
    if f.get("exclude_machine_ids"):
        q["machine_id"] = {"notin": list(f["exclude_machine_ids"])}
    q["type"] = OFFER_TYPES[f.get("offer_type") or "on-demand"]
    q["order"] = ORDER_BY[f.get("order_by") or "price"]
    q["limit"] = int(f.get("limit") or 10)
    if allocated_storage is not None:
        q["allocated_storage"] = float(allocated_storage)
    # The raw escape hatch wins: it is merged last, field by field.
    for key, value in (f.get("query") or {}).items():
        q[key] = value
    return q


def _num(v, default=0.0):
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


def sort_offers(offers, order_by):
    """Stable client-side re-sort so the pick does not depend on server tie-breaking."""
    field, direction = ORDER_BY.get(order_by or "price")[0]
    rev = direction == "desc"
    return sorted(offers, key=lambda o: (_num(o.get(field)), -_num(o.get("id"))) if rev
                  else (_num(o.get(field)), _num(o.get("id"))), reverse=rev)


def describe_offer(o):
    """An offer with unit-explicit extras (GB next to the API's MB, country code)."""
    out = dict(o)
    for src, dst in (("gpu_ram", "gpu_ram_gb"), ("gpu_total_ram", "gpu_total_ram_gb"), ("cpu_ram", "cpu_ram_gb")):
        if o.get(src) is not None:
            out[dst] = round(_num(o[src]) / MB_PER_GB, 1)
    geo = o.get("geolocation") or ""
    out["country"] = geo[-2:] if len(geo) >= 2 else None
    return out
