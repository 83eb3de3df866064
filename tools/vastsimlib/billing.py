"""Billing as a ledger derived from each instance's history.

An instance keeps the intervals during which its GPU was billable (actual_status running or
frozen) and its storage interval (creation → destroy, stopped included). Any charge over any
window is the overlap of those intervals with the window, so charges, invoices, the ledger and
the credit always agree with each other.
"""

BILLABLE_GPU = ("running", "frozen")


def overlap(a, b, lo, hi):
    return max(0.0, min(b, hi) - max(a, lo))


def gpu_seconds(inst, lo, hi, now):
    total = 0.0
    for a, b in inst.gpu_intervals:
        total += overlap(a, now if b is None else b, lo, hi)
    return total


def storage_seconds(inst, lo, hi, now):
    end = inst.destroyed_at if inst.destroyed_at is not None else now
    return overlap(inst.created_at, end, lo, hi)


def storage_rate(inst):
    """$/h for the instance's disk: storage_cost is $/GB/month, a month being 720 h."""
    return inst.offer["storage_cost"] * float(inst.disk) / 720.0


def instance_cost(inst, lo, hi, now):
    g = gpu_seconds(inst, lo, hi, now)
    s = storage_seconds(inst, lo, hi, now)
    gpu = inst.gpu_rate * g / 3600.0
    disk = storage_rate(inst) * s / 3600.0
    return {"gpu": gpu, "storage": disk, "total": gpu + disk, "running_seconds": g, "storage_seconds": s}


def total_spent(instances, now):
    return sum(instance_cost(i, float("-inf"), now, now)["total"] for i in instances)


def ledger(sim):
    now = sim.clock.now()
    out = {}
    total = 0.0
    for inst in sim.all_instances():
        c = instance_cost(inst, float("-inf"), now, now)
        total += c["total"]
        out[str(inst.id)] = {"gpu": round(c["gpu"], 9), "storage": round(c["storage"], 9),
                             "total": round(c["total"], 9), "running_seconds": round(c["running_seconds"], 3),
                             "label": inst.label, "destroyed": inst.destroyed_at is not None,
                             "gpu_dph": inst.gpu_rate, "storage_dph": round(storage_rate(inst), 6)}
    return {"credit": round(sim.credit(), 9), "total": round(total, 9), "now": now, "instances": out}


def _hours_text(seconds, rate):
    return f"{seconds / 3600.0:.3f} hours at ${rate:.3f}/hour"


def charge_rows(sim, lo, hi, types=None):
    """Rows for GET /api/v0/charges/: one per instance with a cost in [lo, hi]."""
    now = sim.clock.now()
    rows = []
    if types and "instance" not in types:
        return rows
    for inst in sim.all_instances():
        c = instance_cost(inst, lo, hi, now)
        if c["storage_seconds"] <= 0 and c["running_seconds"] <= 0:
            continue
        start = max(inst.created_at, lo)
        end = min(inst.destroyed_at if inst.destroyed_at is not None else now, hi)
        items = []
        if c["running_seconds"] > 0:
            items.append({"type": "gpu", "description": _hours_text(c["running_seconds"], inst.gpu_rate),
                          "amount": round(c["gpu"], 9), "quantity": round(c["running_seconds"] / 3600.0, 6),
                          "rate": inst.gpu_rate})
        srate = storage_rate(inst)
        items.append({"type": "disk", "description": _hours_text(c["storage_seconds"], srate),
                      "amount": round(c["storage"], 9), "quantity": round(c["storage_seconds"] / 3600.0, 6),
                      "rate": round(srate, 6)})
        rows.append({"start": start, "end": end, "type": "instance", "source": f"instance-{inst.id}",
                     "description": f"Instance {inst.id} ({inst.offer['num_gpus']}x {inst.offer['gpu_name']})",
                     "amount": round(c["total"], 6),
                     "metadata": {"template_id": None, "label": inst.label, "endpoint_id": None,
                                  "workergroup_id": None, "instance_id": inst.id},
                     "items": items})
    return rows
