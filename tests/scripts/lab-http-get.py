#!/usr/bin/env python3
"""The lab's HTTP client: COUNT sequential GETs of URL, each on a new TCP connection.

Prints one JSON line per request, in order:
  {"i": 0, "status": 200, "server": "rs1", "client": "192.0.2.2:40000", "body": "..."}
  {"i": 1, "error": "timed out"}
Every request has its own timeout, and the whole run a deadline after which the remaining
requests are reported as errors without being tried, so the run's time is bounded.

Usage: lab-http-get.py URL COUNT [TIMEOUT_SECONDS] [DEADLINE_SECONDS]
"""

import http.client
import json
import sys
import time
import urllib.parse


def get(url, timeout):
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        body = resp.read().decode("utf-8", "replace")
        out = {"status": resp.status, "body": body}
        try:
            doc = json.loads(body)
            if isinstance(doc, dict):
                out["server"] = doc.get("server")
                out["client"] = doc.get("client")
        except ValueError:
            pass
        return out
    finally:
        conn.close()


def main():
    url = sys.argv[1]
    count = int(sys.argv[2])
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 2.0
    deadline = time.monotonic() + (float(sys.argv[4]) if len(sys.argv) > 4 else count * timeout + 5)
    for i in range(count):
        if time.monotonic() >= deadline:
            line = {"i": i, "error": "run deadline passed before this request"}
        else:
            try:
                line = {"i": i}
                line.update(get(url, timeout))
            except Exception as e:  # noqa: BLE001 (every failure becomes one output line)
                line = {"i": i, "error": "%s: %s" % (type(e).__name__, e)}
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
