"""A stand-in remote service, in a process of its own: python -m tests.remote_counter

It answers every POST with 200 and records when each arrived (``time.time()``);
GET returns the arrival times as JSON. Its own process keeps the test runner's
work from delaying (and so bunching up) the arrivals it measures. It prints its
port on the first line of stdout.
"""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

arrivals: list[float] = []


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        arrivals.append(time.time())
        self.send_response(200)
        self.end_headers()

    def do_GET(self) -> None:
        body = json.dumps(arrivals).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
