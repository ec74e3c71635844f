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

With --source-port every request connects from that one port, as a client reusing its source
port does; a request waits (within its timeout) for the previous connection from the port to
finish closing.

Usage: lab-http-get.py URL [URL ...] [--count N] [--timeout S] [--deadline S] [--source ADDR]
                       [--source-port PORT] [--until-eof]
"""

import argparse
import errno
import http.client
import json
import socket
import sys
import threading
import time
import urllib.parse


class FixedPortConnection(http.client.HTTPConnection):
    """An HTTP connection from one fixed local port, reused request after request."""

    def __init__(self, host, port, timeout, source, source_port):
        super().__init__(host, port, timeout=timeout)
        self.local = (source or "", source_port)

    def connect(self):
        deadline = time.monotonic() + self.timeout
        while True:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.settimeout(self.timeout)
            try:
                sock.bind(self.local)
                sock.connect((self.host, self.port))
                self.sock = sock
                return
            except OSError as e:
                sock.close()
                # The previous connection from this port is still closing (LAST_ACK): its
                # 4-tuple is taken until the server's last ACK arrives.
                busy = e.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL)
                if not busy or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)


def get(url, timeout, source, source_port):
    parts = urllib.parse.urlsplit(url)
    if source_port:
        conn = FixedPortConnection(parts.hostname, parts.port or 80, timeout, source, source_port)
    else:
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
    parser.add_argument("--source-port", type=int, help="local port every request connects from")
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
                line.update(get(url, args.timeout, args.source, args.source_port))
            except Exception as e:  # noqa: BLE001 (every failure becomes one output line)
                line["error"] = "%s: %s" % (type(e).__name__, e)
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
