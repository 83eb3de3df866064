#!/usr/bin/env python3
"""Send one streamed chat completion and report when its SSE events arrive.

Usage: stream_check.py URL TOKEN MODEL MAX_TOKENS. Prints JSON: number of reads that carried
events, events, seconds to the first event and to the end. A proxy that buffers delivers
everything in one read at the end; an unbuffered one delivers the first token long before.
"""
import http.client
import json
import sys
import time
import urllib.parse


def main():
    url, token, model, max_tokens = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    body = json.dumps({"model": model, "stream": True, "max_tokens": max_tokens,
                       "messages": [{"role": "user", "content": "count"}]})
    started = time.monotonic()
    conn.request("POST", u.path, body=body, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    resp = conn.getresponse()
    reads, events, first, text = 0, 0, None, []
    while True:
        data = resp.read1(65536)  # whatever has arrived, without waiting for more
        if not data:
            break
        n = data.count(b"data: ")
        if n:
            reads += 1
            events += n
            if first is None:
                first = time.monotonic() - started
        for line in data.decode().splitlines():
            if line.startswith("data: {"):
                delta = json.loads(line[6:])["choices"]
                if delta and delta[0].get("delta", {}).get("content"):
                    text.append(delta[0]["delta"]["content"])
    total = time.monotonic() - started
    print(json.dumps({"status": resp.status, "content_type": resp.getheader("Content-Type"),
                      "reads": reads, "events": events, "first_event_s": round(first or total, 3),
                      "total_s": round(total, 3), "text": "".join(text)}))


if __name__ == "__main__":
    main()
