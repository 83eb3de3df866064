#!/usr/bin/env python3
"""vLLM engine stand-in: vLLM's OpenAI-compatible HTTP surface without a GPU or a model.

Invoked like the real image's `vllm serve`: `vllm_standin.py MODEL [--served-model-name N]
[--max-model-len N] [--api-key K] [--host H] [--port P] ...`; unknown flags are logged and ignored.
Standard library only (asyncio), so the image stays small and it runs as a plain subprocess in tests.

Environment:
  STANDIN_LOAD_SECONDS     model loading time before the port accepts connections (default 3)
  STANDIN_MODEL_GB         instead: the size of the weights to "download and load", at
  STANDIN_LOAD_MBPS        this speed in MB/s (default 100): load time = GB * 1000 / MBPS
                           (a 64 GB model at 10 MB/s loads for 6,400 s)
  STANDIN_TOKEN_DELAY      seconds between generated tokens (default 0.02)
  STANDIN_MAX_CONCURRENCY  requests generated at once; the rest count as waiting (default 8)
  STANDIN_DEFAULT_TOKENS   tokens generated when max_tokens is absent, finish "stop" (default 16)
  VLLM_API_KEY             like --api-key
"""

import asyncio
import json
import os
import signal
import socket
import sys
import time
import uuid

VERSION = "0.33.0"
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
         "november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()
FINISH_REASONS = ("stop", "length", "abort")
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           405: "Method Not Allowed", 413: "Payload Too Large", 500: "Internal Server Error"}
# Flags that take no value in vLLM (anything else unknown is assumed to take one unless the next
# token is itself a flag).
BOOL_FLAGS = {"--trust-remote-code", "--enforce-eager", "--disable-log-requests",
              "--disable-log-stats", "--enable-prefix-caching", "--enable-chunked-prefill",
              "--disable-frontend-multiprocessing", "--enable-auto-tool-choice"}


def log(msg):
    print(f"INFO {time.strftime('%m-%d %H:%M:%S')} [standin] {msg}", file=sys.stderr, flush=True)


def parse_args(argv):
    """vLLM-like argument parsing that tolerates every flag it does not know."""
    opts = {"model": None, "served_model_name": None, "max_model_len": 4096,
            "gpu_memory_utilization": 0.9, "tensor_parallel_size": 1,
            "api_key": os.environ.get("VLLM_API_KEY") or None, "host": "0.0.0.0", "port": 8000}
    known = {"--model": "model", "--served-model-name": "served_model_name",
             "--max-model-len": "max_model_len", "--gpu-memory-utilization": "gpu_memory_utilization",
             "--tensor-parallel-size": "tensor_parallel_size", "-tp": "tensor_parallel_size",
             "--api-key": "api_key", "--host": "host", "--port": "port"}
    casts = {"max_model_len": int, "gpu_memory_utilization": float,
             "tensor_parallel_size": int, "port": int}
    args = list(argv)
    if args and args[0] == "serve":  # `vllm serve MODEL` passed whole
        args.pop(0)
    positional, unknown = [], []
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("-"):
            name, eq, val = a.partition("=")
            if name in known:
                if not eq:
                    i += 1
                    val = args[i] if i < len(args) else ""
                key = known[name]
                opts[key] = casts.get(key, str)(val)
                if name == "--model":
                    log("--model is deprecated with `vllm serve`; pass the model as positional argument")
            else:
                unknown.append(a)
                if not eq and name not in BOOL_FLAGS and i + 1 < len(args) and not args[i + 1].startswith("-"):
                    i += 1
                    unknown.append(args[i])
        else:
            positional.append(a)
        i += 1
    if positional:
        opts["model"] = positional[0]
    if not opts["model"]:
        opts["model"] = "facebook/opt-125m"  # vLLM's own default model
    if not opts["served_model_name"]:
        opts["served_model_name"] = opts["model"]
    if unknown:
        log(f"ignoring unsupported arguments: {' '.join(unknown)}")
    return opts


def env_float(name, default):
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return float(default)


class Histogram:
    def __init__(self, buckets):
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, v):
        self.total += 1
        self.sum += v
        for i, b in enumerate(self.buckets):
            if v <= b:
                self.counts[i] += 1


class Engine:
    """Request accounting and token generation shared by every connection."""

    def __init__(self, opts):
        self.opts = opts
        self.model = opts["served_model_name"]
        self.token_delay = env_float("STANDIN_TOKEN_DELAY", 0.02)
        self.max_concurrency = max(1, int(env_float("STANDIN_MAX_CONCURRENCY", 8)))
        self.default_tokens = max(1, int(env_float("STANDIN_DEFAULT_TOKENS", 16)))
        self.slots = asyncio.Semaphore(self.max_concurrency)
        self.running = 0
        self.waiting = 0
        self.success = {r: 0 for r in FINISH_REASONS}
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.e2e = Histogram(LATENCY_BUCKETS)
        self.ttft = Histogram(LATENCY_BUCKETS)
        self.queue_time = Histogram(LATENCY_BUCKETS)
        self.started = time.time()

    def token(self, i):
        return WORDS[i % len(WORDS)]

    def metrics(self):
        lbl = 'model_name="%s"' % self.model.replace("\\", "\\\\").replace('"', '\\"')
        out = []

        def metric(name, typ, help_, samples):
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {typ}")
            out.extend(samples)

        metric("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.",
               [f"vllm:num_requests_running{{{lbl}}} {float(self.running)}"])
        metric("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.",
               [f"vllm:num_requests_waiting{{{lbl}}} {float(self.waiting)}"])
        metric("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.",
               [f"vllm:kv_cache_usage_perc{{{lbl}}} {min(1.0, self.running / self.max_concurrency)}"])
        metric("vllm:request_success", "counter", "Count of successfully processed requests.",
               [f'vllm:request_success_total{{{lbl},finished_reason="{r}"}} {float(n)}'
                for r, n in self.success.items()])
        metric("vllm:prompt_tokens", "counter", "Number of prefill tokens processed.",
               [f"vllm:prompt_tokens_total{{{lbl}}} {float(self.prompt_tokens)}"])
        metric("vllm:generation_tokens", "counter", "Number of generation tokens processed.",
               [f"vllm:generation_tokens_total{{{lbl}}} {float(self.generation_tokens)}"])
        metric("vllm:num_preemptions", "counter", "Cumulative number of preemption from the engine.",
               [f"vllm:num_preemptions_total{{{lbl}}} 0.0"])
        for name, h, help_ in (("vllm:e2e_request_latency_seconds", self.e2e, "Histogram of e2e request latency in seconds."),
                               ("vllm:time_to_first_token_seconds", self.ttft, "Histogram of time to first token in seconds."),
                               ("vllm:request_queue_time_seconds", self.queue_time, "Histogram of time spent in WAITING phase for request.")):
            samples = [f'{name}_bucket{{{lbl},le="{b}"}} {float(c)}' for b, c in zip(h.buckets, h.counts)]
            samples.append(f'{name}_bucket{{{lbl},le="+Inf"}} {float(h.total)}')
            samples.append(f"{name}_count{{{lbl}}} {float(h.total)}")
            samples.append(f"{name}_sum{{{lbl}}} {h.sum}")
            metric(name, "histogram", help_, samples)
        return "\n".join(out) + "\n"


class HttpError(Exception):
    def __init__(self, status, body):
        super().__init__(status)
        self.status = status
        self.body = body


def openai_error(status, message, type_="BadRequestError"):
    return HttpError(status, {"object": "error", "message": message, "type": type_,
                              "param": None, "code": status})


def count_prompt_tokens(value):
    if isinstance(value, str):
        return max(1, len(value.split()))
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return len(value)
        return sum(count_prompt_tokens(v) for v in value)
    if isinstance(value, dict):  # chat message or content part
        return count_prompt_tokens(value.get("content") or value.get("text") or "")
    return 0


class Connection:
    """One HTTP/1.1 keep-alive connection."""

    def __init__(self, engine, reader, writer):
        self.engine = engine
        self.reader = reader
        self.writer = writer

    async def read_body(self, headers):
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readline()).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while (await self.reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readline()
            return b"".join(parts)
        n = int(headers.get("content-length", "0") or 0)
        if n > 64 * 1024 * 1024:
            raise HttpError(413, {"detail": "request too large"})
        return await self.reader.readexactly(n) if n else b""

    async def serve(self):
        try:
            while True:
                line = await self.reader.readline()
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    continue
                try:
                    method, target, version = line.decode("latin-1").split()
                except ValueError:
                    return
                headers = {}
                while True:
                    h = await self.reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                body = await self.read_body(headers)
                keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
                keep = keep or headers.get("connection", "").lower() == "keep-alive"
                keep = await self.dispatch(method, target.split("?", 1)[0], headers, body, keep)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            try:
                self.writer.close()
            except Exception:  # noqa: BLE001 - the peer may already be gone
                pass

    async def respond(self, status, body=b"", ctype="application/json", keep=True, head=False):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        hdr = (f"HTTP/1.1 {status} {REASONS.get(status, 'OK')}\r\n"
               f"date: {time.strftime('%a, %d %b %Y %H:%M:%S GMT', time.gmtime())}\r\n"
               f"server: uvicorn\r\ncontent-length: {len(body)}\r\ncontent-type: {ctype}\r\n"
               f"connection: {'keep-alive' if keep else 'close'}\r\n\r\n")
        self.writer.write(hdr.encode() + (b"" if head else body))
        await self.writer.drain()
        return keep

    async def dispatch(self, method, path, headers, body, keep):
        eng = self.engine
        try:
            if path.startswith("/v1/") or path == "/v1":
                key = eng.opts["api_key"]
                if key and headers.get("authorization", "") != f"Bearer {key}":
                    raise HttpError(401, {"error": "Unauthorized"})
            head = method == "HEAD"
            if path in ("/health", "/ping") and method in ("GET", "HEAD", "POST"):
                return await self.respond(200, b"", keep=keep, head=head)
            if path == "/version" and method in ("GET", "HEAD"):
                return await self.respond(200, {"version": VERSION}, keep=keep, head=head)
            if path == "/load" and method == "GET":
                return await self.respond(200, {"server_load": eng.running + eng.waiting}, keep=keep)
            if path == "/metrics" and method in ("GET", "HEAD"):
                return await self.respond(200, eng.metrics(), "text/plain; version=0.0.4; charset=utf-8",
                                          keep=keep, head=head)
            if path == "/v1/models" and method in ("GET", "HEAD"):
                return await self.respond(200, self.models(), keep=keep, head=head)
            if path in ("/v1/chat/completions", "/v1/completions"):
                if method != "POST":
                    raise HttpError(405, {"detail": "Method Not Allowed"})
                return await self.generate(path.endswith("chat/completions"), body, keep)
            raise HttpError(404, {"detail": "Not Found"})
        except HttpError as e:
            return await self.respond(e.status, e.body, keep=keep)

    def models(self):
        eng = self.engine
        mid = eng.model
        return {"object": "list", "data": [{
            "id": mid, "object": "model", "created": int(eng.started), "owned_by": "vllm",
            "root": eng.opts["model"], "parent": None, "max_model_len": eng.opts["max_model_len"],
            "permission": [{"id": "modelperm-" + uuid.uuid4().hex, "object": "model_permission",
                            "created": int(eng.started), "allow_create_engine": False,
                            "allow_sampling": True, "allow_logprobs": True,
                            "allow_search_indices": False, "allow_view": True,
                            "allow_fine_tuning": False, "organization": "*", "group": None,
                            "is_blocking": False}]}]}

    async def generate(self, chat, body, keep):
        eng = self.engine
        try:
            req = json.loads(body or b"{}")
            if not isinstance(req, dict):
                raise ValueError("body is not an object")
        except ValueError as e:
            raise openai_error(400, f"invalid JSON body: {e}")
        model = req.get("model") or eng.model
        if model not in (eng.model, eng.opts["model"]):
            raise openai_error(404, f"The model `{model}` does not exist.", "NotFoundError")
        if chat:
            msgs = req.get("messages")
            if not isinstance(msgs, list) or not msgs:
                raise openai_error(400, "messages must be a non-empty list")
            prompt_tokens = count_prompt_tokens(msgs)
        else:
            if "prompt" not in req:
                raise openai_error(400, "prompt is required")
            prompt_tokens = count_prompt_tokens(req["prompt"])
        max_tokens = req.get("max_completion_tokens", req.get("max_tokens"))
        if max_tokens is not None:
            if not isinstance(max_tokens, int) or max_tokens < 1:
                raise openai_error(400, "max_tokens must be at least 1")
            n_tokens, finish = max_tokens, "length"
        else:
            n_tokens, finish = eng.default_tokens, "stop"
        if prompt_tokens + n_tokens > eng.opts["max_model_len"]:
            raise openai_error(400, (f"This model's maximum context length is {eng.opts['max_model_len']} "
                                     f"tokens. However, you requested {prompt_tokens + n_tokens} tokens."))
        stream = bool(req.get("stream"))
        include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        created = int(time.time())
        obj = "chat.completion" if chat else "text_completion"
        t0 = time.monotonic()

        eng.waiting += 1
        try:
            await eng.slots.acquire()
        finally:
            eng.waiting -= 1
        eng.queue_time.observe(time.monotonic() - t0)
        eng.running += 1
        eng.prompt_tokens += prompt_tokens
        outcome = "abort"
        try:
            if stream:
                await self.stream(chat, rid, created, model, prompt_tokens, n_tokens, finish,
                                  include_usage, t0)
                outcome = finish
                return keep
            words = []
            for i in range(n_tokens):
                if eng.token_delay:
                    await asyncio.sleep(eng.token_delay)
                if i == 0:
                    eng.ttft.observe(time.monotonic() - t0)
                words.append(eng.token(i))
                eng.generation_tokens += 1
            text = " ".join(words)
            choice = ({"index": 0, "message": {"role": "assistant", "content": text, "tool_calls": []},
                       "logprobs": None, "finish_reason": finish, "stop_reason": None} if chat else
                      {"index": 0, "text": text, "logprobs": None, "finish_reason": finish,
                       "stop_reason": None})
            resp = {"id": rid, "object": obj, "created": created, "model": model,
                    "choices": [choice],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": n_tokens,
                              "total_tokens": prompt_tokens + n_tokens}}
            outcome = finish
            return await self.respond(200, resp, keep=keep)
        finally:
            eng.running -= 1
            eng.slots.release()
            eng.success[outcome] += 1
            eng.e2e.observe(time.monotonic() - t0)

    async def stream(self, chat, rid, created, model, prompt_tokens, n_tokens, finish, include_usage, t0):
        eng = self.engine
        obj = "chat.completion.chunk" if chat else "text_completion"
        self.writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
                          b"server: uvicorn\r\ntransfer-encoding: chunked\r\n\r\n")

        async def send(payload):
            data = payload if isinstance(payload, bytes) else f"data: {json.dumps(payload)}\n\n".encode()
            self.writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            await self.writer.drain()

        def chunk(delta_or_text, fin=None):
            if chat:
                ch = {"index": 0, "delta": delta_or_text, "logprobs": None, "finish_reason": fin}
            else:
                ch = {"index": 0, "text": delta_or_text, "logprobs": None, "finish_reason": fin,
                      "stop_reason": None}
            return {"id": rid, "object": obj, "created": created, "model": model, "choices": [ch]}

        if chat:
            await send(chunk({"role": "assistant", "content": ""}))
        for i in range(n_tokens):
            if eng.token_delay:
                await asyncio.sleep(eng.token_delay)
            if i == 0:
                eng.ttft.observe(time.monotonic() - t0)
            word = (" " if i else "") + eng.token(i)
            await send(chunk({"content": word} if chat else word))
            eng.generation_tokens += 1
        await send(chunk({} if chat else "", finish))
        if include_usage:
            await send({"id": rid, "object": obj, "created": created, "model": model, "choices": [],
                        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": n_tokens,
                                  "total_tokens": prompt_tokens + n_tokens}})
        await send(b"data: [DONE]\n\n")
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()


def load_seconds():
    """How long the stand-in "loads its model" (STANDIN_MODEL_GB at STANDIN_LOAD_MBPS, or STANDIN_LOAD_SECONDS)."""
    gb = env_float("STANDIN_MODEL_GB", 0)
    if gb > 0:
        return gb * 1000.0 / max(env_float("STANDIN_LOAD_MBPS", 100), 0.001)
    return env_float("STANDIN_LOAD_SECONDS", 3)


def bound_socket(host, port):
    """Bind the port at once but listen only after loading, as vLLM does (its api_server binds
    the socket before building the engine): while the model loads the port is taken and every
    connection to it, /health and /metrics included, is refused."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


async def main(argv):
    opts = parse_args(argv)
    load = load_seconds()
    log(f"vLLM API server version {VERSION} (stand-in)")
    log(f"model={opts['model']} served_model_name={opts['served_model_name']} "
        f"max_model_len={opts['max_model_len']} gpu_memory_utilization={opts['gpu_memory_utilization']} "
        f"tensor_parallel_size={opts['tensor_parallel_size']} api_key={'set' if opts['api_key'] else 'unset'}")
    sock = bound_socket(opts["host"], opts["port"])
    if load > 0:
        # Like vLLM: nothing accepts connections until the "model" is loaded.
        log(f"loading model weights (stand-in, {load:g} s)")
        started = time.monotonic()
        step = max(load / 10.0, 0.05)
        while time.monotonic() - started < load:
            await asyncio.sleep(min(step, load - (time.monotonic() - started)))
            done = min(100.0, 100.0 * (time.monotonic() - started) / load)
            if done < 100.0:
                log(f"Loading safetensors checkpoint shards: {done:.0f}% Completed")
        log(f"Loading weights took {time.monotonic() - started:.2f} seconds")
    engine = Engine(opts)
    server = await asyncio.start_server(lambda r, w: Connection(engine, r, w).serve(), sock=sock, backlog=1024)
    log(f"Starting vLLM API server on http://{opts['host']}:{opts['port']}")
    log("Application startup complete.")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    log("Shutting down")


if __name__ == "__main__":
    # As PID 1 in a container, SIGTERM would be ignored without a handler; exit at once also while
    # "loading" (before the event loop's handlers exist).
    for _sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(_sig, lambda *_: sys.exit(0))
    try:
        asyncio.run(main(sys.argv[1:]))
    except (KeyboardInterrupt, SystemExit):
        pass
