#!/usr/bin/env python3
"""The lab's HTTP client: sequential GETs, each on a new TCP connection.

Request i goes to URLS[i % len(URLS)] (so two URLs alternate). Prints one JSON line per request,
in order, as soon as it is answered:
  {"i": 0, "t": 0.004, "url": "...", "status": 200, "server": "rs1", "client": "192.0.2.2:40000",
   "port": 80, "body": "..."}
  {"i": 1, "t": 2.01, "url": "...", "error": "timeout: timed out"}
Every request has its own timeout, and the whole run a deadline after which the remaining
requests are reported as errors without being tried, so the run's time is bounded.

With --until-eof it is a load generator: it keeps going until its stdin reaches end of file (the
caller closes it to stop it), still bounded by --count and --deadline, and reports nothing for
requests it never started.

Usage: lab-http-get.py URL [URL ...] [--count N] [--timeout S] [--deadline S] [--source ADDR]
                       [--until-eof]
"""

import argparse
import http.client
import json
import sys
import threading
import time
import urllib.parse


def get(url, timeout, source):
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(
        parts.hostname,
        parts.port or 80,
        timeout=timeout,
        source_address=(source, 0) if source else None,
    )
    try:
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        body = resp.read().decode("utf-8", "replace")
        return describe(resp.status, body)
    finally:
        conn.close()


def describe(status, body):
    out = {"status": status, "body": body}
    try:
        doc = json.loads(body)
        if isinstance(doc, dict):
            out["server"] = doc.get("server")
            out["client"] = doc.get("client")
            out["port"] = doc.get("port")
    except ValueError:
        pass
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("urls", nargs="+")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--deadline", type=float, help="seconds; default count * timeout + 5")
    parser.add_argument("--source", help="local address to connect from")
    parser.add_argument("--until-eof", action="store_true", help="stop when stdin closes")
    args = parser.parse_args()

    start = time.monotonic()
    deadline = start + (args.deadline if args.deadline else args.count * args.timeout + 5)
    stop = threading.Event()
    if args.until_eof:

        def watch_stdin():
            sys.stdin.buffer.read()  # returns at end of file
            stop.set()

        threading.Thread(target=watch_stdin, daemon=True).start()

    for i in range(args.count):
        if stop.is_set():
            break
        url = args.urls[i % len(args.urls)]
        line = {"i": i, "t": round(time.monotonic() - start, 4), "url": url}
        if time.monotonic() >= deadline:
            if args.until_eof:
                break
            line["error"] = "run deadline passed before this request"
        else:
            try:
                line.update(get(url, args.timeout, args.source))
            except Exception as e:  # noqa: BLE001 (every failure becomes one output line)
                line["error"] = "%s: %s" % (type(e).__name__, e)
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
