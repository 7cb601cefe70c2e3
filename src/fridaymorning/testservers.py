"""Real monitoring servers for integration tests and benchmarks: InfluxDB 1.x, VictoriaMetrics and
Prometheus, each started from Debian's package on a loopback port with its data in a directory the
caller owns, and stopped (SIGTERM, then SIGKILL) when the `with` block ends.

None of these servers starts by itself after `apt-get install`, so whoever needs one starts it here.
A missing binary raises `MissingServerError`, whose message is the install command; tests turn it into a
failure, never a skip.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

READY_DEADLINE_S = 120.0
STOP_DEADLINE_S = 20.0


class MissingServerError(RuntimeError):
    """The server's program is not installed; the message says how to install it."""


@dataclass(frozen=True, slots=True)
class RunningServer:
    """A server this module started: its base URL (http://127.0.0.1:PORT), its port and its process."""

    name: str
    url: str
    port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's own output, for failure messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def instant_query(self, promql: str) -> list[Any]:
        """The result vector of a PromQL instant query (`/api/v1/query`: Prometheus, VictoriaMetrics)."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=30) as answer:
            result: list[Any] = json.load(answer)["data"]["result"]
        return result


def loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _binary(name: str, package: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path is None:
        raise MissingServerError(
            f"'{name}' is not installed. Install it with: sudo apt-get install -y {package}"
        )
    return path


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return 200 <= int(response.status) < 300
    except (OSError, urllib.error.URLError):
        return False


@contextlib.contextmanager
def _running(
    name: str, argv: Sequence[str], port: int, data_dir: Path, ready_path: str
) -> Iterator[RunningServer]:
    log_path = data_dir / f"{name}.log"
    with log_path.open("ab") as log:  # a server started again on the same data keeps its earlier log
        process = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = RunningServer(name, f"http://127.0.0.1:{port}", port, data_dir, log_path, process)
    try:
        deadline = time.monotonic() + READY_DEADLINE_S
        while not _http_ok(server.url + ready_path):
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode} at start:\n{server.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready within {READY_DEADLINE_S:g} s:\n{server.log_tail()}")
            time.sleep(0.1)
        yield server
    finally:
        stop(server)


def stop(server: RunningServer) -> None:
    """Stop a server started here (SIGTERM, then SIGKILL): its data stays for a restart on its port."""
    process = server.process
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def influxdb_config(data_dir: Path, http_port: int, rpc_port: int) -> str:
    """An influxd 1.x configuration that keeps everything under `data_dir` and listens on loopback only."""
    return f"""\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{data_dir / "meta"}"

[data]
  dir = "{data_dir / "data"}"
  wal-dir = "{data_dir / "wal"}"
  query-log-enabled = false

[http]
  bind-address = "127.0.0.1:{http_port}"
  log-enabled = false

[monitor]
  store-enabled = false

[continuous_queries]
  enabled = false
"""


@contextlib.contextmanager
def influxdb_server(data_dir: Path, port: int | None = None) -> Iterator[RunningServer]:
    """InfluxDB 1.x (`influxd run`) on a free loopback port. Create databases through its /query API.

    Pass the `port` and `data_dir` of a server that was stopped to start it again as it was.
    """
    binary = _binary("influxd", "influxdb")
    data_dir.mkdir(parents=True, exist_ok=True)
    port, rpc_port = port or loopback_port(), loopback_port()
    config = data_dir / "influxdb.conf"
    config.write_text(influxdb_config(data_dir, port, rpc_port))
    with _running("influxd", [binary, "run", "-config", str(config)], port, data_dir, "/ping") as server:
        yield server


@contextlib.contextmanager
def victoria_metrics_server(
    data_dir: Path, latency_offset: str | None = "1s", port: int | None = None
) -> Iterator[RunningServer]:
    """VictoriaMetrics single-node on a free loopback port (or `port`, to start a stopped one again).

    Its instant queries hide the newest 30 s unless it runs with `-search.latencyOffset`; pass
    `latency_offset=None` to start it with that default, as an unconfigured server would run.
    """
    binary = _binary("victoria-metrics", "victoria-metrics")
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or loopback_port()
    argv = [
        binary,
        f"-storageDataPath={data_dir / 'storage'}",
        f"-httpListenAddr=127.0.0.1:{port}",
        "-loggerLevel=WARN",
    ]
    if latency_offset is not None:
        argv.append(f"-search.latencyOffset={latency_offset}")
    with _running("victoria-metrics", argv, port, data_dir, "/health") as server:
        yield server


def prometheus_config(targets: Sequence[str], scrape_interval_s: float, metrics_path: str) -> str:
    """A Prometheus configuration with one job that scrapes `targets` (HOST:PORT) every interval."""
    target_list = ", ".join(f'"{target}"' for target in targets)
    interval = f"{int(scrape_interval_s * 1000)}ms"
    return f"""\
global:
  scrape_interval: {interval}
  evaluation_interval: {interval}
scrape_configs:
  - job_name: fridaymorning
    metrics_path: {metrics_path}
    static_configs:
      - targets: [{target_list}]
"""


@contextlib.contextmanager
def prometheus_server(
    data_dir: Path,
    targets: Sequence[str],
    scrape_interval_s: float = 1.0,
    metrics_path: str = "/metrics",
) -> Iterator[RunningServer]:
    """Prometheus 2.x on a free loopback port, scraping `targets` (HOST:PORT) every `scrape_interval_s`."""
    binary = _binary("prometheus", "prometheus")
    data_dir.mkdir(parents=True, exist_ok=True)
    port = loopback_port()
    config = data_dir / "prometheus.yml"
    config.write_text(prometheus_config(targets, scrape_interval_s, metrics_path))
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={data_dir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    with _running("prometheus", argv, port, data_dir, "/-/ready") as server:
        yield server
