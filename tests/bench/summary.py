"""The one table `make bench` ends with: every benchmark's headline figures next to their
baselines. Each bench module calls record() for its headline figures (already medians over its
repeated runs) and keeps printing its own detailed table; tests.bench prints this one last.
"""
import math

ROWS = []


def record(bench, figure, ours, baseline=None, unit="", target=None, note=""):
    """One row. ``target`` is a predicate on the ratio (or on ``ours`` without a baseline) and
    its text, e.g. ``("<= 0.50", lambda r: r <= 0.5)``."""
    ROWS.append({"bench": bench, "figure": figure, "ours": ours, "baseline": baseline, "unit": unit,
                 "target": target, "note": note})


def _fmt(value, unit):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "$":
        return "$%.2f" % value
    text = "%.0f" % value if abs(value) >= 100 or float(value).is_integer() else (
        "%.2f" % value if abs(value) >= 1 else "%.3g" % value)
    return text + (" " + unit if unit else "")


def ratio(row):
    if row["baseline"] in (None, 0) or row["ours"] is None:
        return None
    return row["ours"] / row["baseline"]


def table(rows=None):
    rows = ROWS if rows is None else rows
    lines = []
    hdr = "%-10s %-58s %10s %10s %7s %-16s" % ("bench", "figure (ours vs baseline)", "ours", "baseline", "ratio",
                                                "target")
    lines += [hdr, "-" * len(hdr)]
    for r in rows:
        rt = ratio(r)
        target = ""
        if r["target"]:
            text, ok = r["target"]
            value = rt if rt is not None else r["ours"]
            target = "%s %s" % (text, "met" if value is not None and ok(value) else "NOT met")
        lines.append("%-10s %-58s %10s %10s %7s %-16s" % (
            r["bench"], r["figure"][:58], _fmt(r["ours"], r["unit"]), _fmt(r["baseline"], r["unit"]),
            "%.2fx" % rt if rt is not None else "", target))
        if r["note"]:
            lines.append("%-10s   %s" % ("", r["note"]))
    return "\n".join(lines)
