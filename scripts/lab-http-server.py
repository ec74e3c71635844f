#!/usr/bin/env python3
"""A real server for the director's namespace lab.

Answers `GET /` with `{"server": NAME, "client": "PEER_IP:PEER_PORT"}` and `GET /healthz` with
`ok`. Under direct routing the peer address must be the client's own, never the director's, so
the JSON body is how the lab tests check that the director did not proxy the connection.

Usage: lab-http-server.py --name rs1 [--bind 0.0.0.0] [--port 80]
"""

import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "director-lab"

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path == "/healthz":
            body = b"ok\n"
            content_type = "text/plain"
            status = 200
        elif self.path == "/" or self.path.startswith("/?"):
            peer = "%s:%d" % (self.client_address[0], self.client_address[1])
            body = (json.dumps({"server": self.server.name, "client": peer}) + "\n").encode()
            content_type = "application/json"
            status = 200
        else:
            body = b"not found\n"
            content_type = "text/plain"
            status = 404
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):  # quiet: one line per request would flood the lab logs
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--bind", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=80)
    args = parser.parse_args()

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    server.name = args.name
    print("%s listening on %s:%d" % (args.name, args.bind, args.port), file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
