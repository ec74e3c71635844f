#!/usr/bin/env python3
"""A real server for the director's namespace lab.

Answers `GET /` with `{"server": NAME, "client": "PEER_IP:PEER_PORT", "port": LOCAL_PORT}` and
`GET /healthz` with `ok`, on every port it is given. Under direct routing the peer address must
be the client's own, never the director's, so the JSON body is how the lab tests check that the
director did not proxy the connection; the local port tells which port of a service group the
connection came in on. HTTP/1.1 keep-alive is honoured, so one client connection can carry many
requests.

With `--bind ::` each port is one dual-stack socket: IPv6 clients are reported as
`[ADDRESS]:PORT`, IPv4 clients as themselves (not as ::ffff:-mapped addresses).

Usage: lab-http-server.py --name rs1 [--bind 0.0.0.0|::] [--port 80] [--port 443 ...]
"""

import argparse
import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def describe_peer(host, port):
    """`ip:port` for IPv4 (also when it reached a dual-stack socket), `[ip]:port` for IPv6."""
    if host.startswith("::ffff:") and "." in host:
        host = host[len("::ffff:"):]
    if ":" in host:
        return "[%s]:%d" % (host, port)
    return "%s:%d" % (host, port)


class DualStackHTTPServer(ThreadingHTTPServer):
    """Listens on an IPv6 address, and on IPv4 too when that address is `::`."""

    address_family = socket.AF_INET6

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "director-lab"

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path == "/healthz":
            body = b"ok\n"
            content_type = "text/plain"
            status = 200
        elif self.path == "/" or self.path.startswith("/?"):
            peer = describe_peer(self.client_address[0], self.client_address[1])
            local_port = self.connection.getsockname()[1]
            doc = {"server": self.server.name, "client": peer, "port": local_port}
            body = (json.dumps(doc) + "\n").encode()
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
    parser.add_argument("--port", type=int, action="append", help="repeatable; default 80")
    args = parser.parse_args()
    ports = args.port or [80]

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.allow_reuse_address = True
    server_class = DualStackHTTPServer if ":" in args.bind else ThreadingHTTPServer
    servers = []
    for port in ports:
        server = server_class((args.bind, port), Handler)
        server.name = args.name
        servers.append(server)
    # Every port but the first is served by its own thread; the first by the main thread.
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    listening = ", ".join("%s:%d" % (args.bind, p) for p in ports)
    print("%s listening on %s" % (args.name, listening), file=sys.stderr, flush=True)
    try:
        servers[0].serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
