"""The vLLM engine stand-in's HTTP surface, run as a plain subprocess (fast, no Docker)."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from tests.helpers.net import free_port

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
APP = os.path.join(REPO, "tools", "engine_standin", "vllm_standin.py")
KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}


class Standin:
    def __init__(self, args, env=None, load=0.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        e = dict(os.environ, STANDIN_LOAD_SECONDS=str(load), STANDIN_TOKEN_DELAY="0.02")
        e.pop("VLLM_API_KEY", None)
        e.update(env or {})
        self.proc = subprocess.Popen([sys.executable, APP, *args, "--host", "127.0.0.1",
                                      "--port", str(self.port)], env=e,
                                     stderr=subprocess.PIPE, text=True)

    def wait_ready(self, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            assert self.proc.poll() is None, self.proc.stderr.read()
            time.sleep(0.05)
        raise TimeoutError("stand-in did not come up")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.stderr.read()

    def metrics(self):
        text = requests.get(self.url + "/metrics", timeout=5).text
        out = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                key = s.name + ("{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())
                                               if k != "model_name") + "}" if len(s.labels) > 1 else "")
                out[key] = (s.value, s.labels)
        return out


@pytest.fixture
def standin_factory():
    started = []

    def make(args=("org/some-model", "--served-model-name", "served", "--api-key", KEY), **kw):
        s = Standin(list(args), **kw)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


@pytest.fixture
def standin(standin_factory):
    s = standin_factory()
    s.wait_ready()
    return s


def test_nothing_listens_during_load_then_health_200(standin_factory):
    s = standin_factory(load=1.5)
    t0 = time.monotonic()
    time.sleep(0.3)
    with pytest.raises(requests.ConnectionError):
        requests.get(s.url + "/health", timeout=1)
    s.wait_ready()
    assert time.monotonic() - t0 >= 1.4
    r = requests.get(s.url + "/health", timeout=2)
    assert r.status_code == 200 and r.content == b""


def test_auth_only_on_v1(standin):
    assert requests.get(standin.url + "/v1/models", timeout=5).status_code == 401
    r = requests.get(standin.url + "/v1/models", headers={"Authorization": "Bearer wrong"}, timeout=5)
    assert r.status_code == 401 and r.json() == {"error": "Unauthorized"}
    r = requests.post(standin.url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]},
                      timeout=5)
    assert r.status_code == 401
    # Like vLLM: health, metrics and version are not protected by --api-key.
    for path in ("/health", "/metrics", "/version"):
        assert requests.get(standin.url + path, timeout=5).status_code == 200, path
    assert requests.get(standin.url + "/version", timeout=5).json()["version"] == "0.33.0"
    assert requests.get(standin.url + "/nope", timeout=5).status_code == 404


def test_models_lists_served_name(standin):
    r = requests.get(standin.url + "/v1/models", headers=AUTH, timeout=5)
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    [m] = body["data"]
    assert (m["id"], m["root"], m["object"], m["max_model_len"]) == ("served", "org/some-model", "model", 4096)


def test_api_key_from_env_and_flags_tolerated(standin_factory):
    s = standin_factory(["--model", "m1", "--max-model-len", "64", "--enforce-eager",
                         "--some-future-flag", "7", "--gpu-memory-utilization", "0.5",
                         "--tensor-parallel-size", "2"], env={"VLLM_API_KEY": "envkey"})
    s.wait_ready()
    assert requests.get(s.url + "/v1/models", timeout=5).status_code == 401
    r = requests.get(s.url + "/v1/models", headers={"Authorization": "Bearer envkey"}, timeout=5)
    assert r.json()["data"][0]["id"] == "m1" and r.json()["data"][0]["max_model_len"] == 64
    # prompt + max_tokens beyond --max-model-len is refused like vLLM does.
    r = requests.post(s.url + "/v1/completions", headers={"Authorization": "Bearer envkey"},
                      json={"prompt": "a b c", "max_tokens": 100}, timeout=5)
    assert r.status_code == 400 and "maximum context length" in r.json()["message"]
    err = s.stop()
    assert "--some-future-flag 7" in err and "--enforce-eager" in err


def test_no_key_means_open(standin_factory):
    s = standin_factory(["m"])
    s.wait_ready()
    assert requests.get(s.url + "/v1/models", timeout=5).status_code == 200


def test_chat_completion_shape_and_usage(standin):
    r = requests.post(standin.url + "/v1/chat/completions", headers=AUTH, timeout=10,
                      json={"model": "served", "messages": [{"role": "user", "content": "say four words"}],
                            "max_tokens": 4})
    assert r.status_code == 200
    b = r.json()
    assert b["object"] == "chat.completion" and b["id"].startswith("chatcmpl-") and b["model"] == "served"
    [c] = b["choices"]
    assert c["message"]["role"] == "assistant"
    assert c["message"]["content"] == "alpha bravo charlie delta"
    assert c["finish_reason"] == "length"
    assert b["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    # Without max_tokens: the default length and a natural stop.
    r = requests.post(standin.url + "/v1/completions", headers=AUTH, timeout=10,
                      json={"model": "served", "prompt": "hello"})
    c = r.json()["choices"][0]
    assert r.json()["object"] == "text_completion"
    assert c["finish_reason"] == "stop" and len(c["text"].split()) == 16


def test_errors_are_openai_shaped(standin):
    r = requests.post(standin.url + "/v1/chat/completions", headers=AUTH, timeout=5,
                      json={"model": "other", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 404 and r.json()["type"] == "NotFoundError"
    r = requests.post(standin.url + "/v1/chat/completions", headers=AUTH, data=b"{not json", timeout=5)
    assert r.status_code == 400 and r.json()["object"] == "error"
    r = requests.get(standin.url + "/v1/chat/completions", headers=AUTH, timeout=5)
    assert r.status_code == 405


def sse_events(resp):
    """(arrival time, payload) for every SSE data event of a streamed response."""
    out = []
    for line in resp.iter_lines(chunk_size=1):
        if line.startswith(b"data: "):
            out.append((time.monotonic(), line[6:].decode()))
    return out


@pytest.mark.parametrize("chat", [True, False])
def test_streaming_arrives_in_chunks(standin, chat):
    path = "/v1/chat/completions" if chat else "/v1/completions"
    body = {"model": "served", "stream": True, "max_tokens": 25, "stream_options": {"include_usage": True}}
    body.update({"messages": [{"role": "user", "content": "hi"}]} if chat else {"prompt": "hi"})
    t0 = time.monotonic()
    with requests.post(standin.url + path, headers=AUTH, json=body, stream=True, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers.get("transfer-encoding") == "chunked"
        events = sse_events(r)
    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(p) for _, p in events[:-1]]
    usage = chunks.pop()
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 25
    if chat:
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        assert chunks[0]["object"] == "chat.completion.chunk"
    else:
        text = "".join(c["choices"][0]["text"] for c in chunks)
    assert len(text.split()) == 25 and text.startswith("alpha bravo")
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    # 25 tokens at 0.02 s: the first token arrives well before the last, i.e. really streamed.
    token_times = [t for t, _ in events[:-2]]
    assert token_times[-1] - token_times[1] >= 0.3
    assert token_times[1] - t0 < 1.0


def test_chunked_request_body(standin):
    # nginx with proxy_request_buffering off forwards bodies chunked.
    body = json.dumps({"prompt": "x y", "max_tokens": 2}).encode()
    r = requests.post(standin.url + "/v1/completions", headers=AUTH, data=iter([body[:5], body[5:]]), timeout=5)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2


def test_metrics_reflect_in_flight_and_totals(standin_factory):
    s = standin_factory(env={"STANDIN_MAX_CONCURRENCY": "2"})
    s.wait_ready()
    m = s.metrics()
    assert m["vllm:num_requests_running"][0] == 0
    assert m["vllm:num_requests_running"][1]["model_name"] == "served"
    assert m["vllm:request_success_total{finished_reason=stop}"][0] == 0

    def long_stream():
        with requests.post(s.url + "/v1/completions", headers=AUTH, stream=True, timeout=30,
                           json={"prompt": "one two", "max_tokens": 100, "stream": True}) as r:
            for _ in r.iter_content(1024):
                pass

    threads = [threading.Thread(target=long_stream) for _ in range(3)]
    for t in threads:
        t.start()
    # 100 tokens × 0.02 s = 2 s per stream: two run, the third waits for a slot.
    deadline = time.monotonic() + 1.8
    while True:
        m = s.metrics()
        seen = (m["vllm:num_requests_running"][0], m["vllm:num_requests_waiting"][0])
        if seen == (2, 1) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert seen == (2, 1)
    for t in threads:
        t.join(15)
    m = s.metrics()
    assert m["vllm:num_requests_running"][0] == 0 and m["vllm:num_requests_waiting"][0] == 0
    assert m["vllm:request_success_total{finished_reason=length}"][0] == 3
    assert m["vllm:generation_tokens_total"][0] == 300
    assert m["vllm:prompt_tokens_total"][0] == 6
    assert m["vllm:e2e_request_latency_seconds_count"][0] == 3
    assert m["vllm:e2e_request_latency_seconds_bucket{le=+Inf}"][0] == 3
    # The waiting request waited about one stream's length.
    assert m["vllm:request_queue_time_seconds_sum"][0] >= 1.0


def test_client_disconnect_counts_as_abort(standin):
    r = requests.post(standin.url + "/v1/chat/completions", headers=AUTH, stream=True, timeout=10,
                      json={"messages": [{"role": "user", "content": "x"}], "max_tokens": 500, "stream": True})
    next(r.iter_lines())
    assert standin.metrics()["vllm:num_requests_running"][0] == 1
    r.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        m = standin.metrics()
        if m["vllm:request_success_total{finished_reason=abort}"][0] == 1:
            break
        time.sleep(0.1)
    assert m["vllm:request_success_total{finished_reason=abort}"][0] == 1
    assert m["vllm:num_requests_running"][0] == 0


@pytest.mark.parametrize("load", [0.0, 30.0])
def test_sigterm_stops_fast(standin_factory, load):
    s = standin_factory(load=load)
    if load == 0:
        s.wait_ready()
    else:
        time.sleep(0.5)  # in the middle of "loading"
    t0 = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    s.proc.wait(5)
    assert time.monotonic() - t0 < 2


def test_loading_refuses_every_path_on_a_bound_port_then_accepts(standin_factory):
    """Like vLLM while it loads: the port is bound (nobody else can take it) but refuses every
    connection, /metrics included; the load time follows STANDIN_MODEL_GB / STANDIN_LOAD_MBPS."""
    import errno
    import socket
    s = standin_factory(env={"STANDIN_MODEL_GB": "0.25", "STANDIN_LOAD_MBPS": "100"}, load=0)  # 2.5 s
    t0 = time.monotonic()
    time.sleep(0.5)
    for path in ("/metrics", "/health", "/v1/models"):
        with pytest.raises(requests.ConnectionError):
            requests.get(s.url + path, timeout=1)
    with socket.socket() as other:
        with pytest.raises(OSError) as exc:
            other.bind(("127.0.0.1", s.port))
        assert exc.value.errno == errno.EADDRINUSE
    with socket.socket() as raw:
        assert raw.connect_ex(("127.0.0.1", s.port)) == errno.ECONNREFUSED
    s.wait_ready(timeout=15)
    assert time.monotonic() - t0 >= 2.4
    text = requests.get(s.url + "/metrics", timeout=5).text
    assert "vllm:num_requests_running" in text and "vllm:num_requests_waiting" in text
    log = s.stop()
    assert "Loading weights took 2.5" in log and "Completed" in log
