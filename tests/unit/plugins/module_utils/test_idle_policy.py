"""plugins/module_utils/idle_policy.py on the host side: the activity log read by time through
rotations made by the real logrotate, a 401 flood, and /metrics of a loading engine."""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from ansible_collections.llmops.vastai.plugins.module_utils import idle_policy
from tests.helpers.net import free_port

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
STANDIN = os.path.join(REPO, "tools", "engine_standin", "vllm_standin.py")
LOGROTATE = shutil.which("logrotate") or "/usr/sbin/logrotate"
needs_logrotate = pytest.mark.skipif(not os.path.exists(LOGROTATE), reason="logrotate not installed (apt-get install logrotate)")


def line(msec, status=200, uri="/v1/chat/completions", request_time=0.5):
    return json.dumps({"msec": msec, "status": status, "uri": uri, "request_time": request_time, "method": "POST"})


def write(path, lines):
    with open(path, "a") as f:
        f.write("".join(x + "\n" for x in lines))


def logrotate(tmp_path, log, options):
    conf = tmp_path / "rotate.conf"
    conf.write_text("%s {\n%s\n}\n" % (log, "\n".join(options)))
    res = subprocess.run([LOGROTATE, "-f", "-s", str(tmp_path / "state"), str(conf)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


@needs_logrotate
@pytest.mark.parametrize("options,expect", [
    (["dateext", "compress", "nodelaycompress", "rotate 5"], "-%s.gz"),        # RHEL default + compress
    (["dateext", "rotate 5"], "-%s"),                                           # dateext, uncompressed
    (["compress", "nodelaycompress", "rotate 5"], ".1.gz"),                     # numbered, compressed at once
    (["compress", "delaycompress", "rotate 5"], ".1"),                          # Debian's nginx rule
], ids=["dateext-compress", "dateext", "numbered-compress", "delaycompress"])
def test_last_request_found_after_real_logrotate(tmp_path, options, expect):
    log = tmp_path / "vllm-activity.log"
    now = time.time()
    write(log, [line(now - 900), line(now - 120)])
    logrotate(tmp_path, log, options)
    log.write_text("")  # nginx reopened: the live log is empty
    names = sorted(os.listdir(tmp_path))
    suffix = expect % time.strftime("%Y%m%d") if "%s" in expect else expect
    assert "vllm-activity.log" + suffix in names, names
    got = idle_policy.scan_activity_log(str(log))
    assert got["state"] == "ok" and got["last_end"] == pytest.approx(now - 120), got
    assert got["files"][-1] == "vllm-activity.log" + suffix


@needs_logrotate
def test_two_dated_rotations_newest_first(tmp_path):
    log = tmp_path / "a.log"
    now = time.time()
    write(log, [line(now - 7200)])
    logrotate(tmp_path, log, ["dateext", "dateformat -%Y%m%d-%s", "compress", "nodelaycompress", "rotate 5"])
    time.sleep(1.1)
    write(log, [line(now - 60)])
    logrotate(tmp_path, log, ["dateext", "dateformat -%Y%m%d-%s", "compress", "nodelaycompress", "rotate 5"])
    assert len([n for n in os.listdir(tmp_path) if n.startswith("a.log-")]) == 2
    assert idle_policy.scan_activity_log(str(log))["last_end"] == pytest.approx(now - 60)


def test_flood_of_401_after_the_last_real_request(tmp_path):
    """17 scanner requests a second for 5 min (and more) after one real request: the old probe
    read the last 5,000 lines and saw only 401s."""
    log = tmp_path / "vllm-access.log"
    now = time.time()
    write(log, [line(now - 400)] + [line(now - 300 + i / 17.0, status=401) for i in range(17 * 300 + 2000)])
    got = idle_policy.scan_activity_log(str(log))
    assert got["last_end"] == pytest.approx(now - 400) and got["ignored"] == 17 * 300 + 2000
    # the same flood spread over a rotation: still found
    os.rename(log, str(log) + ".1")
    write(log, [line(now, status=401)] * 100)
    assert idle_policy.scan_activity_log(str(log))["last_end"] == pytest.approx(now - 400)


def test_budget_exhausted_is_truncated_not_idle(tmp_path):
    log = tmp_path / "x.log"
    write(log, [line(1.0)] + [line(2.0, status=401)] * 5000)
    got = idle_policy.scan_activity_log(str(log), budget_bytes=10000)
    assert got["state"] == "truncated" and got["last_end"] is None


def test_missing_and_unreadable(tmp_path):
    assert idle_policy.scan_activity_log(str(tmp_path / "none.log"))["state"] == "missing"
    log = tmp_path / "y.log"
    log.write_text("")
    (tmp_path / "y.log.1.gz").write_bytes(b"not gzip at all")
    got = idle_policy.scan_activity_log(str(log))
    assert got["state"] == "error" and "y.log.1.gz" in got["error"]
    # a log with no counted request at all (only /health, 401s) is "ok, nothing": idle counts
    # from the stack's start
    log2 = tmp_path / "z.log"
    write(log2, [line(5.0, uri="/health"), line(6.0, status=403)])
    got = idle_policy.scan_activity_log(str(log2))
    assert got["state"] == "ok" and got["last_end"] is None


def test_rotation_names_and_order(tmp_path):
    base = tmp_path / "v.log"
    for name in ("v.log", "v.log.1", "v.log.2.gz", "v.log-20261130.gz", "v.log-20261201", "v.log.bak",
                 "v.log-old", "v.logx"):
        (tmp_path / name).write_text("")
    got = [os.path.basename(p) for p in idle_policy.rotations(str(base))]
    assert got == ["v.log", "v.log.1", "v.log.2.gz", "v.log-20261201", "v.log-20261130.gz"]


def test_gather_sees_a_loading_engine_refuse_then_answer(tmp_path):
    port = free_port()
    env = dict(os.environ, STANDIN_LOAD_SECONDS="2", STANDIN_TOKEN_DELAY="0")
    proc = subprocess.Popen([sys.executable, STANDIN, "m", "--port", str(port), "--host", "127.0.0.1"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        url = "http://127.0.0.1:%d/metrics" % port
        raw = idle_policy.gather(str(tmp_path / "none.log"), url, "llmops-no-such.service")
        assert raw["metrics_error_kind"] == "refused" and raw["metrics"] is None
        assert raw["log"]["state"] == "missing" and raw["now"] > 0 and raw["monotonic"] > 0
        json.dumps(raw)  # what the probe prints
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            raw = idle_policy.gather(str(tmp_path / "none.log"), url, "llmops-no-such.service")
            if raw["metrics_error_kind"] is None:
                break
            time.sleep(0.2)
        act = idle_policy.metrics_activity(raw["metrics"])
        assert act["in_flight"] == 0 and act["problem"] is None
    finally:
        proc.terminate()
        proc.wait(10)


def test_probe_entry_point_prints_json(tmp_path):
    path = os.path.join(REPO, "plugins", "module_utils", "idle_policy.py")
    log = tmp_path / "a.log"
    write(log, [line(123.0)])
    out = subprocess.run(["python3", path, "probe", str(log), "http://127.0.0.1:9/metrics", "x.service", ""],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    raw = json.loads(out.stdout)
    assert raw["log"]["last_end"] == 123.0 and raw["metrics_error_kind"] in ("refused", "other")


def test_uptime_mins_is_clamped_to_the_rental_start():
    # uptime_mins is documented nowhere: a session cannot begin before the rental (start_date)
    o = idle_policy.observe(None, api_now=10000.0, created_at=9400.0, uptime_mins=60)
    assert o["session_started_at"] == 9400.0  # not 6400: the instance looks younger, never older
    assert idle_policy.observe(None, api_now=10000.0, created_at=9000.0, uptime_mins=5)["session_started_at"] == 9700.0
    assert idle_policy.observe(None, api_now=10000.0, created_at=9000.0, uptime_mins=None)["session_started_at"] is None
    assert idle_policy.observe(None, api_now=10000.0, created_at=9000.0, uptime_mins=-3)["session_started_at"] is None
