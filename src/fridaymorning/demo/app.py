"""The demo's sample service: one HTTP server whose errors and latency depend on its version.

Run it as `python -m fridaymorning.demo.app --port P --version V`. Stdlib only, so it starts fast and
needs nothing installed.

- `GET /healthz` → 200 "ok".
- Any other GET → 200 (or 500, at the version's error rate) with header `X-Version: V`, after a latency
  drawn from a lognormal distribution.

Versions (BEHAVIOURS): v1 (stable) and v2 (a good canary) never fail, with a median latency of 8 ms and a
p99 near 25 ms. v3 (a bad canary) fails ~8% of requests and is 1.5x slower. Any other version behaves like
v1, so a demo with made-up version names still works. The environment variables FM_DEMO_ERROR_RATE
(0..1, replaces the rate) and FM_DEMO_LATENCY_FACTOR (>= 0, multiplies the latency) override the table;
tests use them to make a canary that always fails, or that answers at once.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

HEALTH_PATH = "/healthz"
ERROR_RATE_VARIABLE = "FM_DEMO_ERROR_RATE"
LATENCY_FACTOR_VARIABLE = "FM_DEMO_LATENCY_FACTOR"

# z-score of the 99th percentile of a standard normal: p99 = median * exp(Z_99 * sigma) for a lognormal.
Z_99 = 2.3263


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How a version answers: the share of requests that fail with 500, and its lognormal latency."""

    error_rate: float
    median_latency_ms: float
    latency_sigma: float  # standard deviation of ln(latency)

    @property
    def p99_latency_ms(self) -> float:
        return self.median_latency_ms * math.exp(Z_99 * self.latency_sigma)

    def sample_latency_s(self, rng: random.Random) -> float:
        if self.median_latency_ms <= 0:
            return 0.0
        return rng.lognormvariate(math.log(self.median_latency_ms), self.latency_sigma) / 1000.0

    def sample_failure(self, rng: random.Random) -> bool:
        return rng.random() < self.error_rate


# sigma such that p99 / median = 25 / 8.
_SIGMA = math.log(25 / 8) / Z_99
STABLE = Behaviour(error_rate=0.0, median_latency_ms=8.0, latency_sigma=_SIGMA)
BAD = Behaviour(error_rate=0.08, median_latency_ms=8.0 * 1.5, latency_sigma=_SIGMA)
BEHAVIOURS: dict[str, Behaviour] = {"v1": STABLE, "v2": STABLE, "v3": BAD}
DEFAULT_VERSION = "v1"


def behaviour_for(version: str, environ: Mapping[str, str]) -> Behaviour:
    """The table's behaviour for `version` (v1's when unknown), with the environment's overrides applied.

    Raises ValueError naming the variable when an override is not a number in its range.
    """
    behaviour = BEHAVIOURS.get(version, BEHAVIOURS[DEFAULT_VERSION])
    error_rate = _float_override(environ, ERROR_RATE_VARIABLE, low=0.0, high=1.0)
    if error_rate is not None:
        behaviour = replace(behaviour, error_rate=error_rate)
    factor = _float_override(environ, LATENCY_FACTOR_VARIABLE, low=0.0, high=math.inf)
    if factor is not None:
        behaviour = replace(behaviour, median_latency_ms=behaviour.median_latency_ms * factor)
    return behaviour


def _float_override(environ: Mapping[str, str], name: str, *, low: float, high: float) -> float | None:
    text = environ.get(name, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a number") from None
    if not low <= value <= high:  # also refuses nan
        raise ValueError(f"{name}={text!r} is out of range [{low}, {high}]")
    return value


class DemoServer(ThreadingHTTPServer):
    """A threading HTTP server that knows its version and behaviour."""

    daemon_threads = True  # a slow request never delays shutdown
    # HAProxy opens server connections in bursts. With socketserver's default backlog of 5, a burst on a
    # busy machine overflows it, HAProxy sees a failed connection and marks the server DOWN.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], version: str, behaviour: Behaviour) -> None:
        self.version = version
        self.behaviour = behaviour
        super().__init__(address, DemoHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection the client reset (HAProxy closing an idle one) is not worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class DemoHandler(BaseHTTPRequestHandler):
    """Answers /healthz at once, and every other GET after the version's latency, sometimes with a 500."""

    server: DemoServer
    protocol_version = "HTTP/1.1"  # keep-alive, so the traffic generator reuses connections

    def do_GET(self) -> None:
        if self.path == HEALTH_PATH:
            self._reply(200, b"ok\n")
            return
        rng = random.Random()  # one per request: no shared state between handler threads
        behaviour = self.server.behaviour
        failed = behaviour.sample_failure(rng)
        _sleep(behaviour.sample_latency_s(rng))
        if failed:
            self._reply(500, f"{self.server.version} failed\n".encode())
        else:
            self._reply(200, f"hello from {self.server.version}\n".encode())

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Version", self.server.version)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: a demo at hundreds of requests per second would drown its own stderr."""


def _sleep(seconds: float) -> None:
    if seconds > 0:
        time.sleep(seconds)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fridaymorning.demo.app", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--version", required=True, help="v1 and v2 are good, v3 is bad; others behave like v1"
    )
    parser.add_argument("--host", default="127.0.0.1")
    return parser.parse_args(argv)


def serve(server: DemoServer) -> None:
    """Serve until SIGTERM or SIGINT, then close the socket; the handler raising SystemExit(0) ends
    serve_forever at once, and daemon threads do not hold the exit."""

    def request_exit(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, request_exit)
    signal.signal(signal.SIGINT, request_exit)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        behaviour = behaviour_for(args.version, os.environ)
    except ValueError as error:
        print(f"demo app: {error}", file=sys.stderr)
        return 2
    try:
        server = DemoServer((args.host, args.port), args.version, behaviour)
    except OSError as error:
        # Worded like the OS message so a supervisor can recognise a lost port race.
        print(f"demo app: cannot listen on {args.host}:{args.port}: {error.strerror}", file=sys.stderr)
        return 1
    serve(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
