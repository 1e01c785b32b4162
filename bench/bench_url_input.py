"""Benchmark: a URL input against the same file on disk (and in memory): time and bytes read.

Usage (from the repository root): python bench/bench_url_input.py [--seconds 60] [--repeats 3]

A generated camera-like H.264 clip (640x360, 30 fps) is read by StNet's `preprocess` (its 125
sampled frames decoded, scaled and cropped: everything but the network) as a local path, as its
bytes in memory, and as a URL served on 127.0.0.1 by a server that honours range requests and by
one that does not. Bytes read: what the process read (`/proc/self/io` rchar: every read of the
process in that time, the decoders' several passes over the file included) and, for a URL, the
body bytes the server sent. The network is
loopback, so the URL's extra time is the copy into a temporary file and its deletion, not a real
network's. Random weights in the publisher's format; nothing is downloaded from outside.
Writes bench/results/url_input.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from common_setup import RESULTS_DIR, cached_video, load_average, load_module, prepare_environment

RESULTS = RESULTS_DIR / "url_input.json"


class CountingServer:
    """Serves one file at /clip.mp4 on 127.0.0.1, with or without range requests; counts body bytes sent."""

    def __init__(self, data: bytes, ranges: bool):
        self.data, self.ranges, self.sent, self.requests = data, ranges, 0, 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/clip.mp4"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.requests += 1
                start, end = 0, len(server.data)
                asked = self.headers.get("Range", "")
                if server.ranges and asked.startswith("bytes="):
                    first, _, last = asked[6:].partition("-")
                    start, end = int(first), min(int(last) + 1 if last else end, end)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(server.data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(end - start))
                if server.ranges:
                    self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                self.wfile.write(server.data[start:end])
                server.sent += end - start

        return Handler

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def read_chars() -> int:
    """Bytes this process has read through read() calls so far (/proc/self/io rchar)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


def measure(read, item, repeats: int, served=None) -> dict:
    """Median seconds of `read(item)` over `repeats`; bytes the process read (rchar: the file and its
    temporary copy, the socket) and, for a URL, bytes the server sent, in the last one."""
    seconds, read_bytes, sent = [], 0, 0
    for _ in range(repeats):
        before, sent_before = read_chars(), served.sent if served else 0
        start = time.perf_counter()
        frames = read(item)
        seconds.append(time.perf_counter() - start)
        read_bytes, sent = read_chars() - before, (served.sent if served else 0) - sent_before
    return {"seconds": statistics.median(seconds), "process_read_bytes": read_bytes, "server_sent_bytes": sent,
            "frames": len(frames)}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def bench_url_input(seconds: float, repeats: int) -> dict:
    """Each way of giving the clip to StNet's `preprocess`: median seconds and bytes read (environment prepared)."""
    clip = cached_video("scene", seconds, 640, 360, codec="h264")[0]
    data = clip.read_bytes()
    stnet = load_module("stnet_kinetics400")
    results = {"cpu": cpu_name(), "load_average": load_average(), "clip": clip.name, "file_bytes": len(data),
               "repeats": repeats, "runs": {}}
    results["runs"]["local file"] = measure(stnet.preprocess, str(clip), repeats)
    results["runs"]["bytes in memory"] = measure(stnet.preprocess, data, repeats)
    for name, ranges in (("URL, range server", True), ("URL, no-range server", False)):
        server = CountingServer(data, ranges)
        try:
            run = measure(stnet.preprocess, server.url, repeats, served=server)
            run["requests_per_read"] = server.requests / repeats
            results["runs"][name] = run
        finally:
            server.close()
    local = results["runs"]["local file"]["seconds"]
    for run in results["runs"].values():
        run["time_vs_local_file"] = run["seconds"] / local
    results["load_average_end"] = load_average()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    prepare_environment(Path(tempfile.mkdtemp(prefix="paddlehub-video-bench-")))
    results = bench_url_input(args.seconds, args.repeats)
    print(f"{results['cpu']}; {results['clip']}, {results['file_bytes'] / 2**20:.1f} MiB; StNet preprocess "
          f"(125 frames), median of {args.repeats}")
    for name, run in results["runs"].items():
        print(f"  {name:22s} {run['seconds']:6.2f} s ({run['time_vs_local_file']:.2f}x), process read "
              f"{run['process_read_bytes'] / 2**20:5.1f} MiB, server sent {run['server_sent_bytes'] / 2**20:5.1f} MiB")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
