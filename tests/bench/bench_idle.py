"""Idle threshold -> stop, measured with the real playbook on a real container host.

A `--hosts docker` simulator rents one instance and provision.yml deploys the stack (engine
stand-in, nginx, systemd). Each round: power the instance on if needed, send one chat
completion through nginx, wait until the idle threshold (idle_minutes after that request's
end), run playbooks/idle_shutdown.yml at once (an AWX tick right at the threshold) and read
when its stop request reached the API (the simulator's request log). That is the playbook's
own latency; on a schedule every S seconds the tick itself comes a uniform 0..S s after the
threshold, so threshold -> stop is S/2 + latency at the median and S + latency at worst.
Figures only, no assertions.

    .venv/bin/python -m tests.bench.bench_idle [--rounds N] [--idle-minutes M]
"""
import argparse
import json
import os
import shutil
import statistics
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


def chat(base, token):
    req = urllib.request.Request(base + "/v1/chat/completions", headers={
        "Content-Type": "application/json", "Authorization": "Bearer " + token},
        data=json.dumps({"model": "qwen2.5-1.5b-instruct", "max_tokens": 4,
                         "messages": [{"role": "user", "content": "hi"}]}).encode())
    with urllib.request.urlopen(req, timeout=60) as resp:
        resp.read()
        return resp.status


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--idle-minutes", type=float, default=0.5)
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
    policy = {"idle_shutdown_idle_minutes": args.idle_minutes, "idle_shutdown_boot_grace_minutes": 0,
              "idle_shutdown_probe_delay": 2, "idle_shutdown_probe_timeout": 10}
    latencies = []
    try:
        res = run_playbook(os.path.join(PLAYBOOKS, "provision.yml"), env=env, json_output=False, timeout=900,
                           extra_vars={"instance_label": LABEL, "llmops_engine_image_archive": archive})
        if res.rc != 0:
            raise RuntimeError("provision.yml failed:\n" + res.stdout[-3000:])
        token = open(os.path.join(home, ".config", "llmops-vastai", "tokens", LABEL + ".token")).read().strip()
        for n in range(args.rounds):
            inst = [i for i in sim.state()["instances"] if i["label"] == LABEL][0]
            if inst["actual_status"] != "running":
                res = run_playbook(os.path.join(PLAYBOOKS, "power_on.yml"), env=env, json_output=False,
                                   extra_vars={"instance_label": LABEL, "health_timeout": 300})
                if res.rc != 0:
                    raise RuntimeError("power_on.yml failed:\n" + res.stdout[-3000:])
                inst = [i for i in sim.state()["instances"] if i["label"] == LABEL][0]
            port = inst["ports"]["80/tcp"]
            port = port[0]["HostPort"] if isinstance(port, list) else port
            chat("http://127.0.0.1:%s" % port, token)
            threshold = time.time() + args.idle_minutes * 60
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
    print("with an AWX schedule every %d s: threshold -> stop = %.0f s at the median, %.0f s at worst"
          % (SCHEDULE_S, SCHEDULE_S / 2 + med, SCHEDULE_S + max(good)))
    summary.record("idle", "idle_shutdown.yml: tick -> stop request (s)", med, None, "s",
                   note="real playbook over SSH, median of %d rounds (max %.1f s)" % (len(good), max(good)))
    summary.record("idle", "threshold -> stop, 5-min schedule, median (s)", SCHEDULE_S / 2 + med, None, "s",
                   note="half a schedule period + the measured playbook latency; worst %.0f s"
                   % (SCHEDULE_S + max(good)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
