"""A small web service, the example's stand-in for yours: `python3 app.py --port N`.

fridaymorning starts one process per instance with the port it chose, and FM_VERSION set to the
release's name (here the commit's short SHA).
"""

from __future__ import annotations

import argparse
import os
import random
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# The share of requests answered with 500: a fault that unit tests do not see and a canary does.
FAILURE_RATE = 0.0
VERSION = os.environ.get("FM_VERSION", "dev")


def greeting(version: str) -> str:
    return f"hello from {version}\n"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self.answer(200, "ok\n")
        elif random.random() < FAILURE_RATE:
            self.answer(500, "internal error\n")
        else:
            self.answer(200, greeting(VERSION))

    def answer(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("X-Version", VERSION)  # which release answered, for people and load tests
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass  # HAProxy logs every request already


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    arguments = parser.parse_args()
    ThreadingHTTPServer((arguments.host, arguments.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
