"""Benchmark: latency nginx (health_proxy's rendered config) adds in front of the engine.

The engine stand-in (tools/engine_standin, a python process) and the host's nginx with the
role's config (work dir via -c; pid, logs and temp paths inside it) run on loopback; wrk loads
`/health` and a streamed chat completion, directly and through nginx, side by side. Prints
throughput, p50/p99 and errors (medians of interleaved rounds); no timed assertions.

    .venv/bin/python -m tests.bench.bench_proxy [--duration S] [--connections N]
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

from tests.bench import summary
from tests.unit.roles import render
from tests.helpers.net import free_port

TOKEN = "bench-token-0123456789abcdef"
STREAM_BODY = ('{"model":"qwen-test","stream":true,"max_tokens":8,'
               '"messages":[{"role":"user","content":"hi"}]}')
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def parse_wrk(out):
    def lat(pct):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        return float(m.group(1)) * UNITS[m.group(2)] if m else float("nan")

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": float(rps.group(1)) if rps else 0.0, "requests": int(total.group(1)) if total else 0,
            "p50": lat(50), "p99": lat(99),
            "errors": (sum(map(int, sock.groups())) if sock else 0) + (int(non2xx.group(1)) if non2xx else 0)}


def run_wrk(url, duration, connections, script=None):
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "10s"]
    if script:
        cmd += ["-s", script]
    res = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=duration + 60)
    if res.returncode != 0:
        raise RuntimeError(f"wrk failed: {res.stderr}")
    return parse_wrk(res.stdout)


def median_of(results):
    """Median of each wrk figure over rounds; errors are summed."""
    out = {k: statistics.median(r[k] for r in results) for k in ("rps", "requests", "p50", "p99")}
    out["errors"] = sum(r["errors"] for r in results)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="direct/nginx pairs per row (medians)")
    args = ap.parse_args(argv if argv is not None else [])
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} missing: run tools/setup-host.sh")

    work = tempfile.mkdtemp(prefix="bench-proxy-")
    engine, listen = free_port(), free_port()
    conf = render.render_proxy(work, TOKEN, upstream_port=engine, listen=listen)
    # Same role config, with as many workers as cores (the Debian default is `auto`).
    with open(conf) as f:
        text = f.read().replace("worker_processes 1;", "worker_processes auto;")
    with open(conf, "w") as f:
        f.write(text)
    lua = os.path.join(work, "stream.lua")
    with open(lua, "w") as f:
        f.write(f'wrk.method = "POST"\nwrk.body = \'{STREAM_BODY}\'\n'
                f'wrk.headers["Content-Type"] = "application/json"\n'
                f'wrk.headers["Authorization"] = "Bearer {TOKEN}"\n')

    print(f"nginx {subprocess.run(['nginx', '-v'], capture_output=True, text=True).stderr.strip()}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start; "
          f"wrk -t2 -c{args.connections} (or -c4) -d{args.duration}s per run, median of {args.rounds} "
          f"interleaved direct/nginx rounds")
    print("stream: 8 tokens per request, STANDIN_TOKEN_DELAY=0.001 s; engine: python stand-in (asyncio)")
    rows = []
    with render.standin(engine, token_delay=0.001, extra_env={"STANDIN_MAX_CONCURRENCY": "1024"}), \
            render.nginx(conf):
        # Saturating load (CPU-bound on a small host: wrk, nginx and the engine share the cores),
        # then a light load (4 connections) that shows the per-request cost of the extra hop.
        for name, path, script, conns in (("/health", "/health", None, args.connections),
                                          ("stream chat", "/v1/chat/completions", lua, args.connections),
                                          ("/health c4", "/health", None, 4),
                                          ("stream c4", "/v1/chat/completions", lua, 4)):
            run_wrk(f"http://127.0.0.1:{listen}{path}", 2, conns, script)  # warm-up
            pairs = [(run_wrk(f"http://127.0.0.1:{engine}{path}", args.duration, conns, script),
                      run_wrk(f"http://127.0.0.1:{listen}{path}", args.duration, conns, script))
                     for _ in range(args.rounds)]
            rows.append((name, median_of([d for d, _ in pairs]), median_of([p for _, p in pairs])))
    with open(os.path.join(work, "vllm-access.log")) as f:
        logged = sum(1 for _ in f)
    shutil.rmtree(work, ignore_errors=True)

    hdr = f"{'target':<12} {'via':<7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}"
    print(hdr)
    print("-" * len(hdr))
    for name, d, p in rows:
        for via, r in (("direct", d), ("nginx", p)):
            print(f"{name:<12} {via:<7} {r['rps']:>9.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['errors']:>7}")
        print(f"{name:<12} {'added':<7} {p['rps'] - d['rps']:>+9.0f} {p['p50'] - d['p50']:>+8.2f} "
              f"{p['p99'] - d['p99']:>+8.2f}")
    print(f"/v1 access log lines written during the stream runs: {logged}")
    for name, d, p in rows:
        summary.record("proxy", f"{name}: req/s through nginx vs direct", p["rps"], d["rps"],
                       note=f"p50 {p['p50']:.2f} ms vs {d['p50']:.2f} ms, p99 {p['p99']:.2f} vs {d['p99']:.2f}; "
                            f"errors {p['errors']} vs {d['errors']}")
    print(f"load average {os.getloadavg()[0]:.1f} at end")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
