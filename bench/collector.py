"""Benchmark of the collector: figures, not pass/fail. `python bench/collector.py [--quick] [--json]`.

Prints a table, then one JSON line:
{"udp_lossless_lines_per_s", "tcp_lines_per_s", "live": {...}, "offline": {...}, "sketch": {...}}
(with `--stores`: {"live_requests_per_s_by_store": {...}, "details": {...}})

* UDP: a sender process (sendmmsg through ctypes, pre-generated compact lines with syslog headers)
  pushes stepped rates for a few seconds each at a collector running in its own process. With two
  CPUs or more the collector is pinned to one CPU and the sender to another, so "lossless at R" means
  R lines/s received, parsed and aggregated on one core. Loss = lines sent - requests counted;
  the socket's kernel drops are shown beside it.
* TCP: octet-counted lines as fast as one client sends them, time until all are counted.
* Live: wrk against a real HAProxy run from the haproxy.cfg `fm up` would render (the router's
  renderer), logging to the UDP collector, in front of two stand-in servers that a second HAProxy
  answers with `http-request return`; HAProxy's own request count (`stot`) against lines logged,
  and the collector's CPU (utime+stime from /proc/PID/stat over the run).
* Offline: one generated httplog file through `summarize` (in process) and through `halog -srv`
  (per-server table, the closest to ours) and `halog -pct` (percentiles), timed side by side.
* Stores (`--stores`): the live path again, with the collector writing to no store, to SQLite, to a
  real InfluxDB and to a real VictoriaMetrics (started here); each row checks that the store holds every
  logged request, and times how long the store took to hold the last window after the collector
  stopped. Beside them, the seed's approach timed: one InfluxDB point per request.
* Sketch: DDSketch p50/p90/p99 against exact numpy quantiles of 1M lognormal samples, and the time
  to merge 3,600 one-second sketches.
Loopback only; every phase is bounded in time and count.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from fridaymorning.config import Config
from fridaymorning.ingest._receive import _IoVec as IoVec
from fridaymorning.ingest._receive import _MMsgHdr as Message
from fridaymorning.ingest.framing import frame_octet_counted
from fridaymorning.ingest.summarize import summarize
from fridaymorning.models import new_sketch
from fridaymorning.platform.local import free_port as free_port_on
from fridaymorning.procfs import stat_fields
from fridaymorning.router import ServerSpec, render_haproxy_config
from fridaymorning.sketches import merge_sketches
from fridaymorning.testing import (
    admin_answer,
    answering_haproxy_config,
    compact_log_line,
    httplog_line,
    listening,
    wait_for_sync,
)

PYTHON = sys.executable
SCRIPT = str(Path(__file__).resolve())
HAPROXY = (
    shutil.which("haproxy", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"])) or "haproxy"
)
HALOG = shutil.which("halog", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"])) or "halog"


def compact_lines(count: int, second: int) -> list[bytes]:
    """Compact-format lines as HAProxy sends them: 6 servers, 2% 503, varied timers and sizes."""
    rng = random.Random(1)
    lines = []
    for index in range(count):
        status = 503 if index % 50 == 0 else 200
        tr_ms = int(rng.lognormvariate(2.5, 0.8))
        server = f"v{1 + index % 2}-{1 + index % 3}"
        ta_ms = tr_ms + rng.randint(0, 3)
        at = second + (index % 1000) / 1000
        line = compact_log_line(at, server, status, tr_ms, ta_ms, size=rng.randint(100, 900))
        lines.append(line.encode())
    return lines


# --- the collector, in its own process ------------------------------------------------------------


def serve(transport: str, cpu: int | None, expect: int, store_url: str | None = None) -> None:
    """Child mode: run a collector, print 'READY port', and on SIGTERM print its stats as JSON.

    With `store_url`, windows go to that store as in `fm up`'s collector process (ingest.store_sink).
    """
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    asyncio.run(_serve(transport, expect, store_url))


async def _serve(transport: str, expect: int, store_url: str | None = None) -> None:
    from fridaymorning.ingest.store_sink import StoreSink
    from fridaymorning.ingest.syslog import TcpCollector, UdpCollector
    from fridaymorning.registry import resolve

    store = resolve("store", store_url)(store_url) if store_url else None
    sink: Any = StoreSink(store, lateness_s=1.0) if store is not None else (lambda w: None)
    collector: Any = (UdpCollector if transport == "udp" else TcpCollector)("127.0.0.1", 0, sink)
    await collector.start()
    heartbeat = asyncio.create_task(sink.heartbeat()) if store is not None else None
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("READY", collector.address[1], flush=True)
    if expect:
        while collector.stats()["requests"] < expect and not stop.is_set():
            await asyncio.sleep(0.002)
        print("REACHED", time.time(), flush=True)
    await stop.wait()
    if heartbeat is not None:
        heartbeat.cancel()
    await collector.stop()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    stats = {**collector.stats(), "cpu_s": usage.ru_utime + usage.ru_stime}
    if store is not None:
        stats.update(await asyncio.to_thread(store_outcome, store))
    print(json.dumps(stats), flush=True)


def store_outcome(store: Any) -> dict[str, Any]:
    """After the collector stopped: how long the store took to hold everything, and what it holds."""
    started = time.monotonic()
    flushed = store.flush(120) if hasattr(store, "flush") else True
    flush_s = time.monotonic() - started
    now = int(time.time())
    stored = sum(
        window.requests for version in ("v1", "v2") for window in store.query("app", version, now - 600, now)
    )
    buffer = store.buffer_stats() if hasattr(store, "buffer_stats") else {}
    store.close()
    return {"store_flushed": flushed, "store_flush_s": round(flush_s, 3), "stored_requests": stored, **buffer}


class CollectorProcess:
    """A collector child process (see `serve`)."""

    def __init__(
        self, transport: str, cpu: int | None = None, expect: int = 0, store_url: str | None = None
    ) -> None:
        command = [PYTHON, SCRIPT, "--serve", transport, "--expect", str(expect)]
        if cpu is not None:
            command += ["--cpu", str(cpu)]
        if store_url is not None:
            command += ["--store-url", store_url]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline().split()[1])

    def wait_reached(self) -> float:
        assert self.process.stdout is not None
        return float(self.process.stdout.readline().split()[1])

    def cpu_seconds(self) -> float:
        """utime + stime so far, from /proc/PID/stat (fields 14 and 15)."""
        fields = stat_fields(self.process.pid)
        assert fields is not None, "the collector process is gone"
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def finish(self) -> dict[str, Any]:
        self.process.send_signal(signal.SIGTERM)
        output, _ = self.process.communicate(timeout=120)
        stats: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
        return stats


# --- UDP: stepped rates ----------------------------------------------------------------------------


def send_udp(port: int, rate: int, seconds: float, cpu: int | None) -> int:
    """Child mode: send `rate` lines/s for `seconds` with sendmmsg; print how many were sent."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    lines = compact_lines(4096, int(time.time()))
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.sendmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)

    buffers = [ctypes.create_string_buffer(line, len(line)) for line in lines]
    vectors = (IoVec * len(lines))()
    messages = (Message * len(lines))()
    for index, line in enumerate(lines):
        vectors[index].iov_base, vectors[index].iov_len = ctypes.addressof(buffers[index]), len(line)
        messages[index].msg_hdr.msg_iov, messages[index].msg_hdr.msg_iovlen = (
            ctypes.pointer(vectors[index]),
            1,
        )
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.connect(("127.0.0.1", port))
    total, sent, chunk = int(rate * seconds), 0, 64
    start = time.perf_counter()
    while sent < total:
        due = (time.perf_counter() - start) * rate
        if sent + chunk > due:
            time.sleep(min(0.001, (sent + chunk - due) / rate))
            continue
        offset = sent % len(lines)
        count = min(chunk, len(lines) - offset, total - sent)
        done = libc.sendmmsg(
            udp.fileno(), ctypes.addressof(messages) + offset * ctypes.sizeof(Message), count, 0
        )
        if done < 0:
            time.sleep(0.0005)  # ENOBUFS: the sender's own buffer; retry
            continue
        sent += done
    print(sent, time.perf_counter() - start, flush=True)
    return sent


def udp_step(rate: int, seconds: float, cpus: tuple[int | None, int | None]) -> dict[str, Any]:
    collector = CollectorProcess("udp", cpus[0])
    command = [PYTHON, SCRIPT, "--send-udp", str(collector.port), str(rate), str(seconds)]
    if cpus[1] is not None:
        command += ["--cpu", str(cpus[1])]
    sender = subprocess.run(command, capture_output=True, text=True, check=True)
    sent, elapsed = sender.stdout.split()
    time.sleep(1.0)  # let the collector empty its socket buffer
    stats = collector.finish()
    counted = stats["requests"]
    return {
        "rate": rate,
        "sent": int(sent),
        "achieved_rate": int(int(sent) / float(elapsed)),
        "counted": counted,
        "lost": int(sent) - counted,
        "socket_drops": stats["socket_drops"],
        "collector_cpu_s": round(stats["cpu_s"], 2),
        "cpu_us_per_line": round(1e6 * stats["cpu_s"] / max(counted, 1), 2),
    }


def bench_udp(quick: bool) -> tuple[int, list[dict[str, Any]]]:
    cpus: tuple[int | None, int | None] = (None, None)
    available = sorted(os.sched_getaffinity(0))
    if len(available) >= 2:
        cpus = (available[-1], available[0])  # collector alone on one CPU, sender on another
    rates = [100_000, 200_000, 300_000, 400_000] if not quick else [150_000, 300_000]
    steps = []
    best = 0
    for rate in rates:
        step = udp_step(rate, 2.0 if quick else 4.0, cpus)
        steps.append(step)
        if step["lost"] == 0 and step["socket_drops"] == 0:
            best = max(best, step["achieved_rate"])
    return best, steps


# --- TCP -------------------------------------------------------------------------------------------


def bench_tcp(quick: bool) -> dict[str, Any]:
    count = 300_000 if quick else 1_000_000
    lines = compact_lines(10_000, int(time.time()))
    payload = b"".join(frame_octet_counted(lines[index % len(lines)]) for index in range(count))
    collector = CollectorProcess("tcp", expect=count)
    start = time.time()
    with socket.create_connection(("127.0.0.1", collector.port)) as client:
        client.sendall(payload)
    reached = collector.wait_reached()
    stats = collector.finish()
    return {
        "lines": count,
        "counted": stats["requests"],
        "seconds": round(reached - start, 3),
        "lines_per_s": int(count / (reached - start)),
        "collector_cpu_s": round(stats["cpu_s"], 2),
    }


# --- Live: wrk through a real HAProxy ---------------------------------------------------------------


def free_port() -> int:
    return free_port_on("127.0.0.1")


def haproxy_requests(socket_path: Path) -> int:
    rows = admin_answer(socket_path, "show stat").splitlines()
    header = rows[0].lstrip("# ").split(",")
    total = 0
    for row in rows[1:]:
        values = dict(zip(header, row.split(","), strict=False))
        if values.get("pxname") == LIVE_SERVICE and values.get("svname") not in ("FRONTEND", "BACKEND"):
            total += int(values.get("stot") or 0)
    return total


# The service of the live run, named as `fm up` would route and log it.
LIVE_SERVICE = "web"


def live_config(state_dir: str, frontend_port: int) -> Config:
    """One service on `frontend_port`, as a user's fridaymorning.yaml would declare it."""
    service = {
        "name": LIVE_SERVICE,
        "frontend": f"127.0.0.1:{frontend_port}",
        "stable": "v1",
        "platform": {"command": ["app", "{port}"]},
        "rollout": {"steps": [{"weight": 50}]},
    }
    return Config.model_validate({"state_dir": state_dir, "services": [service]})


def wait_listening(ports: list[int]) -> None:
    wait_for_sync(lambda: all(map(listening, ports)), f"HAProxy listening on {ports}", timeout_s=10)


def bench_live(quick: bool, store_url: str | None = None) -> dict[str, Any]:
    seconds = 5 if quick else 10
    collector = CollectorProcess("udp", store_url=store_url)
    with tempfile.TemporaryDirectory() as directory:
        frontend_port = free_port()
        config = live_config(directory, frontend_port)
        admin_socket = config.runtime_path(config.haproxy.admin_socket)
        answers = [(free_port(), "ok"), (free_port(), "ok")]
        upstream_config = Path(directory, "upstream.cfg")
        upstream_config.write_text(answering_haproxy_config(Path(directory, "upstream.sock"), answers))
        servers = [
            ServerSpec(LIVE_SERVICE, name, "127.0.0.1", port, 1)
            for name, (port, _) in zip(("v1-1", "v2-1"), answers, strict=True)
        ]
        haproxy_config = Path(directory, "haproxy.cfg")
        haproxy_config.write_text(
            render_haproxy_config(config, ("127.0.0.1", collector.port), {LIVE_SERVICE: servers})
        )
        upstream = subprocess.Popen([HAPROXY, "-f", str(upstream_config), "-db"], stdout=subprocess.DEVNULL)
        haproxy = None
        try:
            wait_listening([port for port, _ in answers])  # so no server starts DOWN
            haproxy = subprocess.Popen([HAPROXY, "-f", str(haproxy_config), "-db"], stdout=subprocess.DEVNULL)
            wait_listening([frontend_port])
            cpu_before, started = collector.cpu_seconds(), time.time()
            wrk = subprocess.run(
                ["wrk", "-t2", "-c50", f"-d{seconds}s", f"http://127.0.0.1:{frontend_port}/"],
                capture_output=True,
                text=True,
                check=True,
            )
            cpu_used, wall = collector.cpu_seconds() - cpu_before, time.time() - started
            time.sleep(1.5)  # lateness: the last lines are in transit
            requests = haproxy_requests(admin_socket)
            dropped = int(
                next(
                    line
                    for line in admin_answer(admin_socket, "show info").splitlines()
                    if line.startswith("DroppedLogs:")
                ).split(":")[1]
            )
        finally:
            for process in (haproxy, upstream):
                if process is not None:
                    process.terminate()
                    process.wait(timeout=15)
    stats = collector.finish()
    store_keys = ("stored_requests", "store_flush_s", "overflowed", "retries", "sent")
    return {
        **{key: stats[key] for key in store_keys if key in stats},
        "seconds": seconds,
        "requests": requests,
        "requests_per_s": int(requests / seconds),
        "logged": stats["requests"],
        "lost": requests - stats["requests"],
        "haproxy_dropped_logs": dropped,
        "socket_drops": stats["socket_drops"],
        "collector_cpu_pct": round(100 * cpu_used / wall, 1),
        "wrk_summary": " ".join(line.strip() for line in wrk.stdout.splitlines() if "Requests/sec" in line),
    }


# --- Live, per store: none, SQLite, InfluxDB, VictoriaMetrics ----------------------------------------


def bench_stores(quick: bool) -> dict[str, Any]:
    """The live path once per store, on fresh servers; and what one InfluxDB point per request costs."""
    from fridaymorning.testservers import influxdb_server, victoria_metrics_server

    rows = []
    with tempfile.TemporaryDirectory() as directory:
        rows.append({"store": "none", **bench_live(quick)})
        rows.append({"store": "sqlite", **bench_live(quick, f"sqlite:///{directory}/metrics.db")})
        with influxdb_server(Path(directory, "influxdb")) as influx:
            rows.append({"store": "influxdb", **bench_live(quick, f"influxdb://127.0.0.1:{influx.port}/fm")})
            per_request = bench_per_request_points(influx.url, 50_000 if quick else 200_000)
        with victoria_metrics_server(Path(directory, "victoria-metrics")) as victoria:
            url = f"victoriametrics://127.0.0.1:{victoria.port}/fm"
            rows.append({"store": "victoriametrics", **bench_live(quick, url)})
    return {"rows": rows, "per_request_points": per_request}


def bench_per_request_points(influx_url: str, count: int) -> dict[str, Any]:
    """The seed's approach, one InfluxDB point per request, timed: `count` points in batches of 5,000."""
    import httpx

    rng = random.Random(2)
    base_ns = (int(time.time()) - 300) * 1_000_000_000
    lines = [
        f"request,backend=app,server=v{1 + n % 2}-1 status={503 if n % 50 == 0 else 200}i,"
        f"tr={int(rng.lognormvariate(2.5, 0.8))}i,bytes={rng.randint(100, 900)}i {base_ns + n * 1000}"
        for n in range(count)
    ]
    with httpx.Client(base_url=influx_url, timeout=60) as client:
        client.post("/query", params={"q": "CREATE DATABASE perrequest"}).raise_for_status()
        started = time.perf_counter()
        for first in range(0, count, 5000):
            body = "\n".join(lines[first : first + 5000]).encode()
            client.post("/write", params={"db": "perrequest"}, content=body).raise_for_status()
        seconds = time.perf_counter() - started
    return {
        "points": count,
        "seconds": round(seconds, 2),
        "points_per_s": int(count / seconds),
        "bytes_per_point": round(sum(map(len, lines)) / count, 1),
    }


def stores_summary(stores: dict[str, Any]) -> str:
    columns = ("store", "requests_per_s", "requests", "logged", "stored_requests", "lost")
    columns += ("collector_cpu_pct",)
    text = [" ".join(f"{name:>17}" for name in (*columns, "store_flush_s"))]
    for row in stores["rows"]:
        text.append(" ".join(f"{row.get(name, '-')!s:>17}" for name in (*columns, "store_flush_s")))
    per_request = stores["per_request_points"]
    text.append(
        f"One InfluxDB point per request: {per_request['points']} points in {per_request['seconds']} s = "
        f"{per_request['points_per_s']} points/s, "
        f"{per_request['bytes_per_point']} bytes of line protocol each"
    )
    return "\n".join(text)


# --- Offline: summarize against halog ---------------------------------------------------------------


def write_httplog(path: Path, count: int) -> None:
    rng = random.Random(7)
    servers = ("v1-1", "v1-2", "v2-1")
    with path.open("w") as out:
        for index in range(count):
            second = index * 60 // count
            tr_ms = int(rng.lognormvariate(3, 0.8))
            status, termination = (503, "SH--") if index % 40 == 0 else (200, "----")
            line = httplog_line(
                client=f"127.0.0.1:{40000 + index % 20000}",
                date=f"[26/Nov/2026:12:38:{second:02d}.{index % 1000:03d}]",
                frontend="fe",
                target=f"be/{servers[index % 3]}",
                timers=f"0/0/0/{tr_ms}/{tr_ms + rng.randint(0, 5)}",
                status=status,
                size=100 + index % 700,
                termination=termination,
                counts="2/1/0/0/0",
                tail=f' 0/0 "GET /item/{index % 1000} HTTP/1.1"',
            )
            out.write(f"Nov 26 12:38:{second:02d} lb1 haproxy[6027]: {line}\n")


def time_halog(mode: str, path: Path) -> float:
    best = float("inf")
    for _ in range(3):
        with path.open("rb") as stream:
            start = time.perf_counter()
            subprocess.run(
                [HALOG, mode], stdin=stream, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
            )
            best = min(best, time.perf_counter() - start)
    return best


def bench_offline(quick: bool) -> dict[str, Any]:
    count = 200_000 if quick else 1_000_000
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory, "httplog.log")
        write_httplog(path, count)
        halog_srv, halog_pct = time_halog("-srv", path), time_halog("-pct", path)
        start, cpu_start = time.perf_counter(), time.process_time()
        with path.open(encoding="utf-8", errors="replace") as stream:
            summary = summarize(stream)
        fm_s, fm_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {
        "lines": count,
        "requests": summary["requests"],
        "fm_s": round(fm_s, 3),
        "fm_cpu_s": round(fm_cpu, 3),
        "halog_s": round(halog_srv, 3),
        "halog_mode": "-srv",
        "halog_pct_s": round(halog_pct, 3),
        "ratio": round(fm_s / halog_srv, 1),
        "ratio_vs_pct": round(fm_s / halog_pct, 1),
    }


def offline_summary(offline: dict[str, Any]) -> str:
    return (
        f"Offline ({offline['lines']} httplog lines): fm {offline['fm_s']} s (cpu {offline['fm_cpu_s']} s), "
        f"halog -srv {offline['halog_s']} s (×{offline['ratio']}), halog -pct {offline['halog_pct_s']} s "
        f"(×{offline['ratio_vs_pct']})"
    )


def offline_keys(offline: dict[str, Any]) -> dict[str, Any]:
    return {key: offline[key] for key in ("fm_s", "halog_s", "ratio")}


# --- Sketch -------------------------------------------------------------------------------------------


def bench_sketch() -> dict[str, Any]:
    rng = np.random.default_rng(3)
    samples = rng.lognormal(mean=3.0, sigma=1.0, size=1_000_000)
    sketch = new_sketch()
    for value in samples.tolist():
        sketch.add(value)
    errors = {}
    for name, quantile in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        exact = float(np.quantile(samples, quantile, method="lower"))
        estimate = sketch.get_quantile_value(quantile)
        assert estimate is not None
        errors[name] = abs(estimate - exact) / exact
    seconds = []
    for _ in range(3600):
        one = new_sketch()
        for value in rng.lognormal(3.0, 1.0, size=50).tolist():
            one.add(value)
        seconds.append(one)
    start = time.perf_counter()
    merge_sketches(seconds)
    merge_ms = 1000 * (time.perf_counter() - start)
    return {
        "max_rel_err": round(max(errors.values()), 5),
        "rel_err": {name: round(error, 5) for name, error in errors.items()},
        "merge_3600_ms": round(merge_ms, 1),
    }


# --- main -----------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller and shorter (under a minute)")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument(
        "--offline-only",
        action="store_true",
        help="run only the offline comparison with halog (its JSON line holds only the offline keys)",
    )
    parser.add_argument(
        "--stores",
        action="store_true",
        help="run only the live path once per store (none, SQLite, InfluxDB, VictoriaMetrics)",
    )
    parser.add_argument("--serve", choices=("udp", "tcp"), help=argparse.SUPPRESS)
    parser.add_argument("--store-url", help=argparse.SUPPRESS)
    parser.add_argument("--send-udp", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--expect", type=int, default=0, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve:
        serve(options.serve, options.cpu, options.expect, options.store_url)
        return
    if options.send_udp:
        port, rate, seconds = options.send_udp
        send_udp(int(port), int(rate), float(seconds), options.cpu)
        return
    say = (lambda *_: None) if options.json else print
    if options.stores:
        stores = bench_stores(options.quick)
        say(stores_summary(stores))
        live = {row["store"]: row["requests_per_s"] for row in stores["rows"]}
        print(json.dumps({"live_requests_per_s_by_store": live, "details": {"stores": stores}}))
        return
    if options.offline_only:
        offline = bench_offline(options.quick)
        say(offline_summary(offline))
        print(json.dumps({"offline": offline_keys(offline), "details": {"offline": offline}}))
        return
    udp_best, udp_steps = bench_udp(options.quick)
    columns = ("rate", "achieved_rate", "sent", "counted", "lost", "socket_drops", "collector_cpu_s")
    say(" ".join(f"{name:>15}" for name in (*columns, "cpu_us_per_line")))
    for step in udp_steps:
        say(" ".join(f"{step[name]!s:>15}" for name in (*columns, "cpu_us_per_line")))
    tcp = bench_tcp(options.quick)
    say(f"TCP: {tcp['counted']}/{tcp['lines']} lines in {tcp['seconds']} s = {tcp['lines_per_s']} lines/s")
    live = bench_live(options.quick)
    say(
        f"Live: {live['requests']} requests ({live['requests_per_s']}/s), logged {live['logged']}, "
        f"lost {live['lost']}, collector CPU {live['collector_cpu_pct']}%"
    )
    offline = bench_offline(options.quick)
    say(offline_summary(offline))
    sketch = bench_sketch()
    say(
        f"Sketch: max rel err {sketch['max_rel_err']} {sketch['rel_err']}, "
        f"merge 3600 in {sketch['merge_3600_ms']} ms"
    )
    result = {
        "udp_lossless_lines_per_s": udp_best,
        "tcp_lines_per_s": tcp["lines_per_s"],
        "live": {key: live[key] for key in ("requests", "logged", "lost", "collector_cpu_pct")},
        "offline": offline_keys(offline),
        "sketch": {key: sketch[key] for key in ("max_rel_err", "merge_3600_ms")},
        "details": {"udp_steps": udp_steps, "tcp": tcp, "live": live, "offline": offline, "sketch": sketch},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
