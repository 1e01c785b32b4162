"""`hub serving start --use_multiprocess` under load: K concurrent clients, a bounded number of requests.

    python bench/bench_serving.py [--modules videotag_tsn_lstm stnet_kinetics400] [--workers 1 2]
                                  [--clients 4] [--requests 8] [--no-kill]

For each module and worker count, the server is started on 127.0.0.1 (the module installed with
`hub install`, seeded random weights in the publisher's format: common_setup.prepare_environment),
waited for until every worker says /ready, warmed by one request whose answer is the reference,
then `--clients` threads send `--requests` requests in all (one base64 video each: a generated
2-second 640x360 camera-like H.264 clip). Printed per run: requests answered correctly (the
reference prediction) / sent, throughput (videos per minute over the load phase), p50/p95/p99
latency, peak RSS and PSS of all server processes together (sampled every 0.2 s; RSS counts the
pages the workers share with the master once per process, PSS splits them), and errors by kind.
With the largest worker count the run is repeated with one worker SIGKILLed while it answers a
request, halfway through: what was lost is printed (only that request, answered with an error).
Everything is written to bench/results/serving.json.
"""
from __future__ import annotations

import argparse
import base64
import http.client
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common_setup import REPO, RESULTS_DIR, cached_video, load_average, prepare_environment  # noqa: E402

HUB = [sys.executable, "-c", "import sys; from paddlehub.commands.utils import execute; sys.exit(execute())"]
# `hub serving --use_multiprocess` binds gunicorn to 0.0.0.0 (no option): pinned to 127.0.0.1 here.
HUB_SERVE = [sys.executable, "-c", "import sys; from paddlehub.serving import http_server as h; "
             "load = h.StandaloneApplication.load_config; h.StandaloneApplication.load_config = lambda self: "
             "(load(self), self.cfg.set('bind', [b.replace('0.0.0.0', '127.0.0.1') for b in self.cfg.bind])); "
             "from paddlehub.commands.utils import execute; sys.exit(execute())"]
START_TIMEOUT_S = 600
REQUEST_TIMEOUT_S = 600


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`hub serving start -m MODULE --use_multiprocess --workers N` on 127.0.0.1, in its own process group."""

    def __init__(self, module: str, workers: int, work: Path):
        self.port = free_port()
        self.log = work / f"server_{module}_{workers}.log"
        env = {k: v for k, v in os.environ.items() if k != "PADDLEHUB_VIDEO_CPU_THREADS"}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [*HUB_SERVE, "serving", "start", "-m", module, "-p", str(self.port), "--use_multiprocess",
                 "--workers", str(workers)], cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        self.workers = workers

    def processes(self) -> list[psutil.Process]:
        master = psutil.Process(self.proc.pid)
        return [master, *master.children(recursive=True)]

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT_S)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def wait_ready(self) -> float:
        """Seconds until every worker answered /ready with 200."""
        started, ready = time.monotonic(), set()
        while len(ready) < self.workers:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            if time.monotonic() - started > START_TIMEOUT_S:
                raise RuntimeError(f"not ready after {START_TIMEOUT_S} s:\n{self.log.read_text()[-3000:]}")
            try:
                status, raw = self.request("GET", "/ready")
                if status == 200:
                    ready.add(json.loads(raw)["pid"])
            except OSError:
                pass
            time.sleep(0.1)
        return time.monotonic() - started

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=60)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue


class MemorySampler(threading.Thread):
    """Peak of the summed RSS and PSS of a server's processes, sampled every 0.2 s."""

    def __init__(self, server: Server):
        super().__init__(daemon=True)
        self.server, self.peak_rss, self.peak_pss = server, 0.0, 0.0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.2):
            rss = pss = 0
            for process in self.server.processes():
                try:
                    info = process.memory_full_info()
                except psutil.Error:
                    continue
                rss, pss = rss + info.rss, pss + info.pss
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss / 2**20), max(self.peak_pss, pss / 2**20)


def same_prediction(entry: dict, reference: dict) -> bool:
    got, want = entry.get("prediction") or {}, reference["prediction"]
    return "error" not in entry and list(got) == list(want) and all(
        math.isclose(got[k], want[k], rel_tol=1e-4, abs_tol=1e-6) for k in want)


def error_kind(exc: BaseException) -> str:
    return type(exc).__name__


class Load:
    """`clients` threads sending `requests` requests in all; outcomes, latencies, errors by kind."""

    def __init__(self, server: Server, module: str, body: bytes, reference: dict, requests: int, clients: int):
        self.server, self.path, self.body, self.reference = server, f"/predict/{module}", body, reference
        self.requests, self.clients = requests, clients
        self.lock = threading.Lock()
        self.sent = 0
        self.answered = 0
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.halfway = threading.Event()

    def _next(self) -> bool:
        with self.lock:
            if self.sent >= self.requests:
                return False
            self.sent += 1
            if self.sent > self.requests // 2:
                self.halfway.set()
            return True

    def _one(self) -> None:
        started = time.monotonic()
        try:
            status, raw = self.server.request("POST", self.path, self.body)
        except Exception as exc:  # the bench counts every way a request can fail
            kind = error_kind(exc)
        else:
            answer = json.loads(raw) if status == 200 else {}
            if status != 200:
                kind = f"HTTP {status}"
            elif answer.get("status") != "000":
                kind = f"status {answer.get('status')}: {str(answer.get('msg'))[:80]}"
            elif not same_prediction(answer["results"][0], self.reference):
                kind = "wrong answer"
            else:
                kind = None
        with self.lock:
            if kind is None:
                self.answered += 1
                self.latencies.append(time.monotonic() - started)
            else:
                self.errors[kind] += 1

    def _client(self) -> None:
        while self._next():
            self._one()

    def run(self) -> float:
        """Send everything; the wall time of the load phase."""
        threads = [threading.Thread(target=self._client) for _ in range(self.clients)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.monotonic() - started


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def busy_worker(server: Server) -> psutil.Process | None:
    """A worker holding an established client connection (in the middle of a request)."""
    for worker in psutil.Process(server.proc.pid).children():
        try:
            if any(c.status == psutil.CONN_ESTABLISHED and c.laddr.port == server.port
                   for c in worker.net_connections("tcp")):
                return worker
        except psutil.Error:
            continue
    return None


def kill_a_busy_worker(server: Server, load: Load) -> dict:
    """Halfway through the load, SIGKILL a worker that is answering a request."""
    load.halfway.wait()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        worker = busy_worker(server)
        if worker is not None:
            worker.send_signal(signal.SIGKILL)
            return {"killed_pid": worker.pid, "at_request": load.sent}
        time.sleep(0.02)
    return {"killed_pid": None}


def bench_run(module: str, workers: int, clients: int, requests: int, body: bytes, work: Path,
              kill: bool = False) -> dict:
    server = Server(module, workers, work)
    sampler = MemorySampler(server)
    try:
        sampler.start()
        ready_s = server.wait_ready()
        status, raw = server.request("POST", f"/predict/{module}", body)  # warm-up: the reference answer
        reference = json.loads(raw)["results"][0]
        if status != 200 or "error" in reference:
            raise RuntimeError(f"warm-up request failed: {status} {raw[:500]!r}")
        load = Load(server, module, body, reference, requests, clients)
        killer = None
        if kill:
            killed: dict = {}
            killer = threading.Thread(target=lambda: killed.update(kill_a_busy_worker(server, load)), daemon=True)
            killer.start()
        seconds = load.run()
        if killer is not None:
            killer.join(timeout=5)
        log = server.log.read_text(errors="replace")
    finally:
        sampler.stopped.set()
        server.stop()
    row = {
        "module": module, "workers": workers, "clients": clients, "sent": load.sent, "answered": load.answered,
        "ready_s": round(ready_s, 1), "load_s": round(seconds, 1),
        "videos_per_min": round(load.answered / seconds * 60, 1),
        "p50_s": round(percentile(load.latencies, 50), 2), "p95_s": round(percentile(load.latencies, 95), 2),
        "p99_s": round(percentile(load.latencies, 99), 2),
        "peak_rss_mib": round(sampler.peak_rss), "peak_pss_mib": round(sampler.peak_pss),
        "errors": dict(load.errors), "worker_timeouts": log.count("WORKER TIMEOUT"),
    }
    if kill:
        row["kill"] = killed
    return row


def install(modules: list[str], work: Path) -> None:
    proc = subprocess.run([*HUB, "install", *(str(REPO / m) for m in modules)], cwd=work, capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"hub install failed:\n{proc.stderr[-3000:]}")


def table(rows: list[dict]) -> str:
    lines = ["| module | workers | clients | answered / sent | videos/min | p50 / p95 / p99 s | peak RSS / PSS MiB "
             "(all processes) | errors |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        errors = ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "none"
        if "kill" in r:
            errors = f"worker {r['kill'].get('killed_pid')} SIGKILLed mid-request: {errors}"
        lines.append(f"| {r['module']} | {r['workers']} | {r['clients']} | {r['answered']} / {r['sent']} | "
                     f"{r['videos_per_min']} | {r['p50_s']} / {r['p95_s']} / {r['p99_s']} | "
                     f"{r['peak_rss_mib']} / {r['peak_pss_mib']} | {errors} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modules", nargs="+", default=["videotag_tsn_lstm", "stnet_kinetics400"])
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=8, help="requests per run (one video each)")
    parser.add_argument("--no-kill", action="store_true", help="skip the run with a worker killed")
    args = parser.parse_args()
    work = RESULTS_DIR / "serving_work"
    work.mkdir(parents=True, exist_ok=True)
    prepare_environment(work)
    install(args.modules, work)
    clip = cached_video("scene", 2, 640, 360, codec="h264")[0]
    body = json.dumps({"videos": [{"name": clip.name, "data": base64.b64encode(clip.read_bytes()).decode()}]}).encode()
    rows, started = [], time.monotonic()
    result: dict[str, Any] = {"load_average_start": load_average(), "cpus": len(os.sched_getaffinity(0)),
                              "clip": clip.name}
    for module in args.modules:
        for workers in args.workers:
            rows.append(bench_run(module, workers, args.clients, args.requests, body, work))
            print(json.dumps(rows[-1]), flush=True)
        if not args.no_kill:
            rows.append(bench_run(module, max(args.workers), args.clients, args.requests, body, work, kill=True))
            print(json.dumps(rows[-1]), flush=True)
    result.update(rows=rows, load_average_end=load_average(), seconds=round(time.monotonic() - started))
    (RESULTS_DIR / "serving.json").write_text(json.dumps(result, indent=2))
    print(table(rows))
    print(f"{result['cpus']} CPUs, load average {result['load_average_start']} -> {result['load_average_end']}, "
          f"{result['seconds']} s")


if __name__ == "__main__":
    main()
