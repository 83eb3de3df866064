"""Idle threshold -> stop, measured with the real playbook on a real container host, and a
loading 64 GB model that must not be stopped before load_timeout.

A `--hosts docker` simulator rents one instance and provision.yml deploys the stack (engine
stand-in, nginx, systemd). Each round: power the instance on if needed, send one chat
completion through nginx, run idle_shutdown.yml once *before* the threshold (an AWX tick that
must keep it and print the countdown), then at the threshold (a tick right at it) and read when
its stop request reached the API (the simulator's request log): the playbook's own latency.
On a schedule every S seconds the first tick after the threshold comes p = 0..S s after it
(the schedule's phase), so threshold -> stop = p + latency; the figures are the median and the
worst over phases p = 0, 10, ..., S-10 s with the measured latencies.

Loading: the stack is restarted with the stand-in "loading 64 GB at 10 MB/s" (port refused for
6,400 s, container running), then idle_shutdown.yml runs every few seconds with idle_minutes and
boot grace far below the load time: every tick before load_timeout must keep it ("loading"),
the first one after stops it ("never became healthy in N min"). Time is scaled down (load_timeout
of --load-timeout-minutes) to keep the runtime short.

    .venv/bin/python -m tests.bench.bench_idle [--rounds N] [--idle-minutes M] [--load-timeout-minutes T]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from tests.bench import summary
from tests.helpers import images
from tests.helpers.ansible import REPO, run_playbook
from tests.helpers.vastsim import launch

PLAYBOOKS = os.path.join(REPO, "playbooks")
LABEL = "bench-idle"
SCHEDULE_S = 300



def power_on(env):
    """power_on.yml with the health wait; raises with the playbook's output when it fails."""
    res = run_playbook(os.path.join(PLAYBOOKS, "power_on.yml"), env=env, json_output=False,
                       extra_vars={"instance_label": LABEL, "health_timeout": 300})
    if res.rc != 0:
        raise RuntimeError("power_on.yml failed:\n" + res.stdout[-3000:])

def chat(base, token):
    req = urllib.request.Request(base + "/v1/chat/completions", headers={
        "Content-Type": "application/json", "Authorization": "Bearer " + token},
        data=json.dumps({"model": "qwen2.5-1.5b-instruct", "max_tokens": 4,
                         "messages": [{"role": "user", "content": "hi"}]}).encode())
    with urllib.request.urlopen(req, timeout=60) as resp:
        resp.read()
        return resp.status


def host_sh(sim, label, script):
    inst = [i for i in sim.state()["instances"] if i["label"] == label][0]
    env = images.docker_env()
    cid = subprocess.run(["docker", "ps", "-q", "--filter", "label=llmops-vastai.vastsim.instance=%s" % inst["id"]],
                         env=env, capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run(["docker", "exec", cid, "sh", "-c", script], env=env, check=True, capture_output=True)


def loading_phase(sim, env, inv, policy, timeout_minutes, tick_s):
    """Ticks of idle_shutdown.yml against an engine loading 64 GB: (keeps before the timeout,
    stops before the timeout, seconds into the load of the stop)."""
    host_sh(sim, LABEL, "echo STANDIN_MODEL_GB=64 >> /opt/llm-stack/vllm.env && "
                        "echo STANDIN_LOAD_MBPS=10 >> /opt/llm-stack/vllm.env && systemctl restart llm-stack")
    load_start = time.time()
    pol = dict(policy, idle_shutdown_load_timeout_minutes=timeout_minutes, idle_shutdown_idle_minutes=0.1)
    keeps, early_stops, stopped_at = 0, 0, None
    while time.time() - load_start < timeout_minutes * 60 + 120:
        sim.clear_requests()
        tick = time.time() - load_start
        res = run_playbook(os.path.join(PLAYBOOKS, "idle_shutdown.yml"), env=env, inventory=inv, extra_vars=pol,
                           json_output=False, timeout=600)
        stopped = any(e["method"] == "PUT" and e.get("endpoint") == "manage" for e in sim.requests())
        line = [ln for ln in res.stdout.splitlines() if LABEL + " (id" in ln and ("KEEP" in ln or "STOP" in ln)]
        print("  loading tick at %5.0f s: %s" % (tick, (line[0].strip()[:150] if line else "rc=%d" % res.rc)), flush=True)
        if stopped:
            stopped_at = tick
            if tick < timeout_minutes * 60:
                early_stops += 1
            break
        keeps += 1
        time.sleep(max(0.0, tick_s - (time.time() - load_start - tick)))
    return keeps, early_stops, stopped_at


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--idle-minutes", type=float, default=0.5)
    ap.add_argument("--load-timeout-minutes", type=float, default=1.0)
    ap.add_argument("--tick-seconds", type=float, default=15.0)
    args = ap.parse_args(argv if argv is not None else [])
    imgs = images.ensure_images()
    tmp = tempfile.mkdtemp(prefix="bench-idle-")
    home = os.path.join(tmp, "home")
    os.makedirs(home)
    archive = images.save_archive(imgs["vllm"], os.path.join(tmp, "engine.tar.gz"))
    inv = os.path.join(tmp, "bench.vast.yml")
    with open(inv, "w") as f:
        f.write("plugin: llmops.vastai.vast\nstatuses: [running]\n")
    sim = launch(hosts="docker", speed=20, api_key="bench-" + os.urandom(12).hex())
    env = dict(sim.env, HOME=home, ANSIBLE_PRIVATE_KEY_FILE=os.path.join(home, ".ssh", "llmops_vastai_ed25519"),
               ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_PIPELINING="True",
               ANSIBLE_SSH_ARGS="-o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile=/dev/null",
               DOCKER_HOST=images.docker_env()["DOCKER_HOST"])
    # the simulator's clock runs 20x: the host-vs-API clock check is off here
    policy = {"idle_shutdown_idle_minutes": args.idle_minutes, "idle_shutdown_boot_grace_minutes": 0,
              "idle_shutdown_probe_delay": 2, "idle_shutdown_probe_timeout": 10,
              "idle_shutdown_max_clock_skew_minutes": 0}
    latencies = []
    early = []
    loading = (0, 0, None)
    try:
        res = run_playbook(os.path.join(PLAYBOOKS, "provision.yml"), env=env, json_output=False, timeout=900,
                           extra_vars={"instance_label": LABEL, "llmops_engine_image_archive": archive})
        if res.rc != 0:
            raise RuntimeError("provision.yml failed:\n" + res.stdout[-3000:])
        token = open(os.path.join(home, ".config", "llmops-vastai", "tokens", LABEL + ".token")).read().strip()
        for n in range(args.rounds):
            inst = [i for i in sim.state()["instances"] if i["label"] == LABEL][0]
            if inst["actual_status"] != "running":
                power_on(env)
                inst = [i for i in sim.state()["instances"] if i["label"] == LABEL][0]
            port = inst["ports"]["80/tcp"]
            port = port[0]["HostPort"] if isinstance(port, list) else port
            chat("http://127.0.0.1:%s" % port, token)
            threshold = time.time() + args.idle_minutes * 60
            # a tick before the threshold keeps it and says when it would stop
            sim.clear_requests()
            res = run_playbook(os.path.join(PLAYBOOKS, "idle_shutdown.yml"), env=env, inventory=inv,
                               extra_vars=policy, json_output=False, timeout=600, check=True)
            early.append(("KEEP in " in res.stdout, time.time() < threshold))
            print("round %d: tick before the threshold: %s" % (n + 1, "kept, countdown printed" if early[-1][0]
                                                                else "NOT kept with a countdown"), flush=True)
            # the access log has whole seconds: one more second so the tick is past the threshold
            time.sleep(max(0.0, threshold - time.time()) + 1.0)
            tick = time.time()
            sim.clear_requests()
            res = run_playbook(os.path.join(PLAYBOOKS, "idle_shutdown.yml"), env=env, inventory=inv,
                               extra_vars=policy, json_output=False, timeout=600)
            stops = [e["t"] for e in sim.requests() if e["method"] == "PUT" and e.get("endpoint") == "manage"]
            ok = res.rc == 0 and stops
            latencies.append(stops[0] - tick if ok else float("nan"))
            print("round %d: idle_shutdown.yml rc=%d in %.1f s; stop request %.1f s after the tick (%.1f s after "
                  "the threshold)" % (n + 1, res.rc, res.duration, latencies[-1],
                                      stops[0] - threshold if ok else float("nan")), flush=True)
            if not ok:
                print(res.stdout[-3000:])
        # the loading model: power on again, then restart the stack into a 64 GB load
        inst = [i for i in sim.state()["instances"] if i["label"] == LABEL][0]
        if inst["actual_status"] != "running":
            power_on(env)
        loading = loading_phase(sim, env, inv, policy, args.load_timeout_minutes, args.tick_seconds)
    finally:
        sim.destroy_all()
        sim.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    good = [x for x in latencies if x == x]
    if not good:
        raise RuntimeError("no round stopped the instance")
    med = statistics.median(good)
    print("idle_shutdown.yml from tick to stop request: median %.1f s over %d rounds (min %.1f, max %.1f); "
          "idle_minutes %.1f, SSH to a container host, stand-in engine" % (med, len(good), min(good), max(good),
                                                                           args.idle_minutes))
    # threshold -> stop over the schedule's phases: the first tick after the threshold comes p s later
    over_phases = sorted(p + lat for p in range(0, SCHEDULE_S, 10) for lat in good)
    phase_med, phase_worst = statistics.median(over_phases), max(over_phases)
    print("with an AWX schedule every %d s, over phases 0..%d s: threshold -> stop = %.0f s at the median, %.0f s "
          "at worst" % (SCHEDULE_S, SCHEDULE_S - 10, phase_med, phase_worst))
    print("ticks before the threshold: %d/%d kept with a countdown" % (sum(1 for k, _b in early if k), len(early)))
    keeps, early_stops, stopped_at = loading
    print("loading 64 GB (stand-in, 10 MB/s = 6,400 s load), load_timeout %.1f min, a tick every %.0f s: %d ticks "
          "kept it while loading, %d stopped it before load_timeout; stopped %s"
          % (args.load_timeout_minutes, args.tick_seconds, keeps, early_stops,
             "%.0f s into the load (\"never became healthy\")" % stopped_at if stopped_at is not None else "never"))
    summary.record("idle", "loading 64 GB: stops before load_timeout", early_stops, None, "",
                   note="%d ticks kept it while loading; stopped %s s into the load" % (
                       keeps, "%.0f" % stopped_at if stopped_at is not None else "-"))
    summary.record("idle", "idle_shutdown.yml: tick -> stop request (s)", med, None, "s",
                   note="real playbook over SSH, median of %d rounds (max %.1f s)" % (len(good), max(good)))
    summary.record("idle", "threshold -> stop, 5-min schedule, median (s)", phase_med, None, "s",
                   note="over schedule phases 0..%d s with the measured latencies; worst %.0f s"
                   % (SCHEDULE_S - 10, phase_worst))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
