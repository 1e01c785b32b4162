"""Benchmark: the same folder through `hub run` and through the fleet command on a local Ray.

Usage (from the repository root; needs the `ray` extra):

    python bench/bench_fleet.py                       # StNet, 6 clips (a few minutes on 2 cores)
    python bench/bench_fleet.py --module videotag_tsn_lstm --videos 3

Both commands run as a user runs them (a subprocess from the repository root, start-up included),
over a folder of links to one generated 300-frame 640x360 clip, with real-size networks and seeded
random weights (common_setup.prepare_environment), each over 1 clip and over N clips, so that
`(t_N - t_1) / (N - 1)` is the time per clip without the start-up (Ray's own start included in t_1).

- videos/hour of each, and the fleet's over hub run's (the overhead as a ratio);
- peak RSS (VmHWM) of each Ray actor process of the fleet run, sampled every 0.2 s by this process
  (VmHWM only grows, so the last sample is the peak up to 0.2 s before the actor ended);
- per-stage figures for the cost model: one clip through DecodeStage and ModelStage in this process,
  1 thread, warm: seconds per video of each;
- object store traffic per video: the bytes of one video's row between the stages (DecodeStage's
  output: the preprocessed frames), and of its result row; each is written once and read once
  (across the network when the two actors are on different nodes).

Results are printed and written to bench/results/fleet.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from bench_machine import hub_run_seconds, video_folder
from common_setup import REPO, RESULTS_DIR, load_average, load_module, machine_info, prepare_environment, timed

RESULTS = RESULTS_DIR / "fleet.json"
FLEET = [sys.executable, "-m", "paddlehub_video.interfaces.fleet"]
STAGES = ("FleetDecode", "FleetModel")


class ActorMemory:
    """Peak VmHWM (MiB) of every process whose command line names a fleet stage, while running."""

    def __init__(self) -> None:
        self.peaks: dict[int, tuple[str, float]] = {}
        self.titles: dict[int, str] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> ActorMemory:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()

    def _watch(self) -> None:
        import psutil

        while not self.stop.wait(0.2):
            for proc in psutil.process_iter(["pid", "cmdline"]):
                title = " ".join(proc.info["cmdline"] or ())
                stage = next((s for s in STAGES if s in title), None)
                if stage:
                    self.titles[proc.info["pid"]] = title[:120]
                    peak = vm_hwm_mib(proc.info["pid"])
                    if peak:
                        self.peaks[proc.info["pid"]] = (stage, max(peak, self.peaks.get(proc.info["pid"], ("", 0))[1]))

    def by_stage(self) -> dict[str, list[float]]:
        found: dict[str, list[float]] = {stage: [] for stage in STAGES}
        for stage, peak in self.peaks.values():
            found[stage].append(round(peak))
        return found


def vm_hwm_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return 0.0


def fleet_seconds(module: str, folder: Path, work: Path) -> tuple[float, dict, dict[str, list]]:
    """Wall time of the fleet command over `folder` into a fresh output folder (a local Ray of all
    cores, started by the command), its summary, and the peak RSS of its actors."""
    output = work / f"fleet_{folder.name}"
    subprocess.run(["rm", "-rf", str(output)], check=True)
    command = [*FLEET, "--module", str(REPO / module), "--input_path", str(folder), "--output", str(output)]
    env = {k: v for k, v in os.environ.items() if k != "PADDLEHUB_VIDEO_CPU_THREADS"}
    with ActorMemory() as memory:
        proc, seconds = timed(lambda: subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True))
    if proc.returncode != 0:
        raise RuntimeError(f"fleet failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads(next(line for line in proc.stdout.splitlines()[::-1] if line.startswith("{")))
    return seconds, summary, {**memory.by_stage(), "titles": sorted(set(memory.titles.values()))}


def stage_figures(module: str, clip: Path) -> dict[str, float]:
    """One clip through each stage in this process, 1 thread, warm (the second call timed): seconds
    per video of each, and the bytes of its row between the stages and out of the model stage."""
    from paddlehub_video.interfaces.ray_adapter import DecodeStage, ModelStage

    batch = {"path": [str(clip)]}
    decode = DecodeStage(REPO / module)
    model = ModelStage(REPO / module, config={"runtime": {"cpu_threads": 1}})
    decoded, results = decode(batch), model(decode(batch))
    decode_s = timed(lambda: decode(batch))[1]
    model_s = timed(lambda: model(decoded))[1]
    return {"decode_seconds": decode_s, "model_seconds_1_thread": model_s, "decoded_row_bytes": decoded.nbytes,
            "result_row_bytes": results.nbytes}


def bench(module: str, videos: int, work: Path) -> dict:
    load_module(module).bundle()  # converted once beforehand, for both commands
    one, many = video_folder(work, 1), video_folder(work, videos)
    runs = {}
    for name, folder in (("1", one), (str(videos), many)):
        # hub run first for one clip, the fleet first for N: a load that rises or falls meanwhile (the
        # machine may be shared) then favours neither
        if name == "1":
            hub_s, hub_peak = hub_run_seconds(module, folder, work)
        fleet_s, summary, actors = fleet_seconds(module, folder, work)
        if name != "1":
            hub_s, hub_peak = hub_run_seconds(module, folder, work)
        runs[name] = {"hub_run_seconds": hub_s, "hub_run_peak_mib": hub_peak, "fleet_seconds": fleet_s,
                      "fleet_summary": summary, "actor_peak_mib": actors, "load_average": load_average()}
        print(f"  {name} clip(s): hub run {hub_s:.1f} s (peak {hub_peak:.0f} MiB), fleet {fleet_s:.1f} s, "
              f"actors {[actors[stage] for stage in STAGES]}", file=sys.stderr, flush=True)
    per_video = {key: (runs[str(videos)][key] - runs["1"][key]) / max(1, videos - 1)
                 for key in ("hub_run_seconds", "fleet_seconds")}
    return {
        "module": module, "videos": videos, "runs": runs,
        "videos_per_hour": {"hub_run": 3600 * videos / runs[str(videos)]["hub_run_seconds"],
                            "fleet": 3600 * videos / runs[str(videos)]["fleet_seconds"]},
        "later_seconds_per_video": per_video,
        "start_up_seconds": {"hub_run": runs["1"]["hub_run_seconds"] - per_video["hub_run_seconds"],
                             "fleet": runs["1"]["fleet_seconds"] - per_video["fleet_seconds"]},
        "stages": stage_figures(module, next(many.iterdir()).resolve()),
    }


def print_table(r: dict) -> None:
    vph, later, start = r["videos_per_hour"], r["later_seconds_per_video"], r["start_up_seconds"]
    runs, n = r["runs"], str(r["videos"])
    actors = runs[n]["actor_peak_mib"]
    stages = r["stages"]
    rows = [
        (f"{r['module']}, {r['videos']} clips, videos/hour", f"hub run {vph['hub_run']:.0f}, fleet {vph['fleet']:.0f}: "
         f"fleet / hub run = {vph['fleet'] / vph['hub_run']:.2f}"),
        ("seconds per clip after the first",
         f"hub run {later['hub_run_seconds']:.2f}, fleet {later['fleet_seconds']:.2f}"),
        ("start-up (t_1 - one clip)",
         f"hub run {start['hub_run']:.1f} s, fleet {start['fleet']:.1f} s (Ray's start included)"),
        ("peak RSS", f"hub run {runs[n]['hub_run_peak_mib']:.0f} MiB; fleet decode actors {actors['FleetDecode']} MiB, "
         f"model actors {actors['FleetModel']} MiB"),
        ("per-stage, 1 core, warm", f"decode {stages['decode_seconds']:.2f} s, model "
         f"{stages['model_seconds_1_thread']:.2f} s per video"),
        ("object store per video", f"{stages['decoded_row_bytes'] / 2**20:.1f} MiB between the stages (written once, "
         f"read once), {stages['result_row_bytes']} B result row"),
    ]
    width = max(len(a) for a, _ in rows)
    for a, b in rows:
        print(f"{a:<{width}}  {b}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--module", default="stnet_kinetics400", choices=("stnet_kinetics400", "videotag_tsn_lstm"))
    parser.add_argument("--videos", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        work = Path(tmp)
        prepare_environment(work)
        result = {"machine": machine_info(), **bench(args.module, args.videos, work)}
    result["machine"]["load_average_end"] = load_average()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print_table(result)


if __name__ == "__main__":
    main()
