#!/usr/bin/env python3
"""The lab's keep-alive client: ONE TCP connection to URL, one GET on it per line read from stdin.

It connects at start and prints `{"connected": "LOCAL_IP:LOCAL_PORT"}`; then for each stdin line it
sends a GET on that same connection and prints one JSON line:
  {"i": 0, "status": 200, "server": "rs1", "client": "192.0.2.2:40000", "port": 80, "body": "..."}
  {"i": 1, "error": "RemoteDisconnected: ..."}
It never reconnects: once the connection is gone every further request is an error, so a test
sees a broken flow instead of a silently new one. It exits at end of stdin.

Usage: lab-http-keepalive.py URL [--timeout S] [--source ADDR]
"""

import argparse
import http.client
import json
import sys
import urllib.parse


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
    parser.add_argument("url")
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--source", help="local address to connect from")
    args = parser.parse_args()
    parts = urllib.parse.urlsplit(args.url)
    path = parts.path or "/"
    conn = http.client.HTTPConnection(
        parts.hostname,
        parts.port or 80,
        timeout=args.timeout,
        source_address=(args.source, 0) if args.source else None,
    )
    try:
        conn.connect()
        local = conn.sock.getsockname()
        print(json.dumps({"connected": "%s:%d" % (local[0], local[1])}), flush=True)
    except Exception as e:  # noqa: BLE001
        print(json.dumps({"connected": None, "error": "%s: %s" % (type(e).__name__, e)}), flush=True)
        return
    conn.auto_open = 0  # a closed connection must fail the next request, not be replaced
    for i, _ in enumerate(sys.stdin):
        line = {"i": i}
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            line.update(describe(resp.status, resp.read().decode("utf-8", "replace")))
        except Exception as e:  # noqa: BLE001 (every failure becomes one output line)
            line["error"] = "%s: %s" % (type(e).__name__, e)
        print(json.dumps(line), flush=True)
    conn.close()


if __name__ == "__main__":
    main()
