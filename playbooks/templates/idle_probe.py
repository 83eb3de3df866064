"""Read-only activity probe run on the instance by idle_shutdown.yml (ansible.builtin.script).

Prints one JSON object with the raw material; all parsing and the decision happen on the
controller (plugins/filter/idle.py), so the host needs only the Python standard library.
Arguments: ACCESS_LOG METRICS_URL UNIT TAIL_LINES
"""
import json
import subprocess
import sys
import time
import urllib.request
from collections import deque


def tail(paths, n):
    lines = deque(maxlen=n)
    for path in paths:  # rotated file first, so the newest lines end up last
        try:
            with open(path, "r", encoding="utf-8", errors="replace") as fh:
                lines.extend(fh)
        except OSError:
            pass
    return "".join(lines)


def unit_started_at(unit):
    # ActiveEnterTimestamp in microseconds since the epoch; 0/empty when never active.
    try:
        out = subprocess.run(["systemctl", "show", "-p", "ActiveEnterTimestampMonotonic", "-p", "ActiveState",
                              "--timestamp=unix", "-p", "ActiveEnterTimestamp", unit],
                             capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    value = props.get("ActiveEnterTimestamp", "").lstrip("@").strip()
    try:
        started = float(value) if value else None
    except ValueError:
        started = None
    return started, props.get("ActiveState")


def main():
    access_log, metrics_url, unit, tail_lines = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    result = {"now": time.time()}
    result["log"] = tail([access_log + ".1", access_log], tail_lines)
    result["stack_started_at"], result["stack_state"] = unit_started_at(unit)
    try:
        with urllib.request.urlopen(metrics_url, timeout=10) as resp:
            result["metrics"] = resp.read().decode("utf-8", "replace")
            result["metrics_error"] = None
    except Exception as exc:  # engine down or loading: reported, decided on the controller
        result["metrics"] = None
        result["metrics_error"] = "%s: %s" % (type(exc).__name__, exc)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
