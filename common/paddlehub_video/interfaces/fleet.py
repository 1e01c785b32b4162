"""Fleet jobs on Ray Data: a list of videos -> a folder of result files, one row per video, resumable.

    python -m paddlehub_video.interfaces.fleet --module videotag_tsn_lstm --input_file list.txt --output results/

or from Python, `run_fleet(paths, "videotag_tsn_lstm", "results/")`. Ray Data runs the two stages of
`ray_adapter` (decoding in CPU actors, the model in CPU or GPU actors, sized from the cluster it
finds) and streams the result rows back to this driver, which writes them (see README, "Fleet jobs"):

- Exactly once: the driver is the only writer. Rows are written in files `part-NNNNNN.parquet`
  (or `.jsonl`), each first as a hidden temporary file in the same folder, synced, then renamed, so
  a file with a result name is always complete; a path already written is never written again.
- Resume: on start, the paths in the folder's result files are done; only the others are run.
  Temporary files left by a stopped run are deleted. SIGTERM and Ctrl-C write the rows already
  received before the driver exits.
- Faults: Ray restarts a lost actor (`max_restarts=-1`) and retries its batch (`max_task_retries=-1`),
  so a killed process or a lost node costs the batches in flight. A video that crashes its worker
  every time would be retried for ever: before each video a stage asks an `AttemptLedger` actor
  (on the driver's node) how many times it began that video; past `max_attempts` the video gets an
  error row instead of being run again.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Union

from filelock import FileLock, Timeout

from ..config import ConfigOverrides
from ..errors import PaddleHubVideoError
from ..model.postprocess import validate_threshold, validate_top_k
from ..pipeline import report_failure
from ..timeline import CONTEXTS, validate_context, validate_window
from .cli import add_input_options, add_use_gpu_option, input_paths
from .ray_adapter import (  # first of the Ray imports: it names the extra to install
    RESULTS,
    Batch,
    DecodeStage,
    ModelStage,
    ModuleRef,
    as_str_path,
    column,
    load_module,
    pa,
    ray,
    runtime_env,
    with_assigned_cpus,
)

FORMATS = ("parquet", "jsonl")
PART_PREFIX = "part-"
TEMP_PREFIX = ".part-"  # hidden, and never matched as a result file
LOCK_NAME = ".fleet.lock"
# Rows with --timeline: `timeline` and `segments` are the JSON of classify_timeline's `windows` and `segments`;
# `duration` is null for a failed video.
TIMELINES = pa.schema([("path", pa.string()), ("duration", pa.float64()), ("timeline", pa.string()),
                       ("segments", pa.string()),
                       ("error", pa.string())])
Inputs = Union[Iterable[str], "ray.data.Dataset"]
Row = dict[str, Any]


class FleetError(PaddleHubVideoError):
    """A fleet job that cannot start: the output folder, the inputs or the cluster's resources."""


class WorkerCrashed(PaddleHubVideoError):
    """A video whose stage process died `attempts` times while working on it."""

    def __init__(self, path: str, stage: str, attempts: int):
        super().__init__(f"{path}: the {stage} worker died {attempts} times while processing this video; "
                         "not tried again")


# --- poison videos: bounded attempts -----------------------------------------------------------


@ray.remote(num_cpus=0)
class AttemptLedger:
    """How many times each (stage, path) was begun and not yet ended: videos in flight only.

    A process that dies mid-video never ends it, so the count of a video that kills its worker
    grows by one per crash, whichever actor or node runs the retry.
    """

    def __init__(self) -> None:
        self.begun: dict[tuple[str, str], int] = {}

    def begin(self, stage: str, path: str) -> int:
        key = (stage, path)
        self.begun[key] = self.begun.get(key, 0) + 1
        return self.begun[key]

    def end(self, stage: str, path: str) -> None:
        self.begun.pop((stage, path), None)


def start_ledger() -> Any:
    """An AttemptLedger on this driver's node: it lives as long as the job (a lost head ends both)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return AttemptLedger.options(scheduling_strategy=here).remote()


class Attempts:
    """One stage's use of the ledger: `run(path, work, failed)` is `work(path)` unless `path` already
    killed this stage's worker `limit` times; then it is `failed(path, reason)`."""

    def __init__(self, ledger: Any, stage: str, limit: int):
        self.ledger, self.stage, self.limit = ledger, stage, limit

    def run(self, path: str, work: Callable[[str], Row], failed: Callable[[str, str], Row]) -> Row:
        begun = ray.get(self.ledger.begin.remote(self.stage, path))
        if begun > self.limit:
            result = failed(path, report_failure(path, WorkerCrashed(path, self.stage, begun - 1)))
        else:
            result = work(path)
        # Waited for: a crash on the next video must not lose this end (the count would grow).
        ray.get(self.ledger.end.remote(self.stage, path))
        return result


class FleetDecode(DecodeStage):
    """DecodeStage whose videos each get at most `max_attempts` worker deaths (see AttemptLedger)."""

    def __init__(self, module: ModuleRef, ledger: Any, max_attempts: int, config: ConfigOverrides = None):
        super().__init__(module, config)
        self.attempts = Attempts(ledger, "decode", max_attempts)

    def _decode(self, path: str) -> Row:
        return self.attempts.run(path, super()._decode, self._failed)

    @staticmethod
    def _failed(path: str, reason: str) -> Row:
        return {"path": path, "tensor": b"", "shape": [0], "dtype": "", "error": reason}


class FleetModel(ModelStage):
    """ModelStage whose videos each get at most `max_attempts` worker deaths (see AttemptLedger)."""

    def __init__(self, module: ModuleRef, ledger: Any, max_attempts: int, **options: Any):
        super().__init__(module, **options)
        self.attempts = Attempts(ledger, "model", max_attempts)

    def _answer(self, path: str, tensor: bytes, shape: list[int], dtype: str, error: str) -> Row:
        answer = super()._answer
        return self.attempts.run(path, lambda p: answer(p, tensor, shape, dtype, error), self._failed)

    @staticmethod
    def _failed(path: str, reason: str) -> Row:
        return {"path": path, "prediction": "{}", "error": reason}


class FleetTimeline:
    """One stage for timelines: each actor decodes and classifies its videos' windows (`classify_timeline`,
    one decoding pass per video), so no frames cross the object store. Attempts bounded as above."""

    def __init__(self, module: ModuleRef, ledger: Any, max_attempts: int, window: float, stride: float,
                 config: ConfigOverrides = None, use_gpu: bool = False, top_k: int | None = None,
                 threshold: float | None = None, context: str = "window"):
        self.module = with_assigned_cpus(load_module(module, config), module, config)
        self.options = {"window_seconds": window, "stride_seconds": stride, "use_gpu": use_gpu, "top_k": top_k,
                        "threshold": threshold, "context": context}
        if context == "window":  # fetch, convert, load: here, once
            self.module.predict_fn(use_gpu)
        else:
            self.module.sequence_model(use_gpu)
        self.attempts = Attempts(ledger, "timeline", max_attempts)

    def __call__(self, batch: Batch) -> pa.Table:
        rows = [self.attempts.run(as_str_path(path), self._timeline, self._failed) for path in column(batch, "path")]
        return pa.Table.from_pylist(rows, schema=TIMELINES)

    def _timeline(self, path: str) -> Row:
        [entry] = self.module.classify_timeline_stream([path], **self.options)
        windows, segments = (json.dumps(entry[key], ensure_ascii=False) for key in ("windows", "segments"))
        return {"path": path, "duration": entry["duration"], "timeline": windows, "segments": segments,
                "error": entry.get("error", "")}

    @staticmethod
    def _failed(path: str, reason: str) -> Row:
        return {"path": path, "duration": None, "timeline": "[]", "segments": "[]", "error": reason}


# --- resources ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FleetPlan:
    """How many actors of each stage, and what each asks of Ray."""

    decode_actors: int
    model_actors: int
    model_cpus: int
    model_gpus: int
    batch_size: int


def plan_resources(
    resources: dict[str, float], use_gpu: bool = False, decode_actors: int | None = None,
    model_actors: int | None = None, model_cpus: int | None = None, batch_size: int = 2, timeline: bool = False,
) -> FleetPlan:
    """Actors that fit `resources` (ray.cluster_resources()): with GPUs, one model actor per GPU;
    on CPUs, 5/6 of the cluster's CPUs for the model in actors of up to 4 threads, since on a CPU a
    video's inference takes 6 (StNet, bench/bench_fleet.py) to about 20 (videotag: 300 ResNet-101
    frames) times its decoding. The decode actors (1 CPU each) get the rest. For timelines the
    model actors decode too: no decode actors, all the CPUs go to model actors. Given counts win;
    asking for more than the cluster has is an error (Ray would wait for ever)."""
    cpus, gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
    model_share = cpus if timeline else cpus - max(1, cpus // 6)
    if use_gpu:
        if gpus < 1:
            raise FleetError("--use_gpu: the Ray cluster has no GPU")
        model_actors, model_cpus = model_actors or gpus, model_cpus or 1
    else:
        model_cpus = model_cpus or max(1, min(4, model_share))
        model_actors = model_actors or max(1, model_share // model_cpus)
    decode_actors = 0 if timeline else decode_actors or max(1, cpus - model_actors * model_cpus)
    plan = FleetPlan(decode_actors, model_actors, model_cpus, 1 if use_gpu else 0, batch_size)
    wanted_cpus, wanted_gpus = decode_actors + model_actors * model_cpus, model_actors * plan.model_gpus
    if wanted_cpus > cpus or wanted_gpus > gpus:
        raise FleetError(f"the actors need {wanted_cpus} CPUs and {wanted_gpus} GPUs; the Ray cluster has "
                         f"{cpus} CPUs and {gpus} GPUs (give fewer --decode_actors / --model_actors / --model_cpus)")
    return plan


# --- the result folder -------------------------------------------------------------------------


class ResultFolder:
    """The output folder: complete result files only, written by one job at a time (a lock file)."""

    def __init__(self, folder: str | os.PathLike[str], fmt: str = "parquet"):
        if fmt not in FORMATS:
            raise FleetError(f"unknown format {fmt!r} (use one of {', '.join(FORMATS)})")
        self.folder, self.fmt = Path(folder), fmt
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FleetError(f"cannot create the output folder {self.folder}: {exc}") from exc
        if not self.folder.is_dir():
            raise FleetError(f"the output {self.folder} is not a folder")
        self.lock = FileLock(str(self.folder / LOCK_NAME))

    @contextmanager
    def locked(self) -> Iterator[ResultFolder]:
        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            raise FleetError(f"another fleet job is writing {self.folder} ({LOCK_NAME} is locked)") from None
        try:
            yield self
        finally:
            self.lock.release()

    def result_files(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir()
                      if p.name.startswith(PART_PREFIX) and p.suffix[1:] in FORMATS and p.is_file())

    def done_paths(self) -> set[str]:
        """The paths with a row in a result file (either format); a stopped run's temporary files are removed."""
        for leftover in self.folder.glob(f"{TEMP_PREFIX}*"):
            leftover.unlink()
        return {path for file in self.result_files() for path in read_paths(file)}

    def write(self, rows: pa.Table) -> Path:
        """`rows` as the next result file, atomically: a temporary file, synced, renamed."""
        numbers = [int(p.stem[len(PART_PREFIX):]) for p in self.result_files() if p.stem[len(PART_PREFIX):].isdigit()]
        name = f"{PART_PREFIX}{max(numbers, default=-1) + 1:06d}.{self.fmt}"
        temporary, final = self.folder / f".{name}.tmp", self.folder / name
        if self.fmt == "parquet":
            import pyarrow.parquet as pq  # a submodule pyarrow does not import itself

            pq.write_table(rows, temporary)
        else:
            temporary.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows.to_pylist()),
                                 encoding="utf-8")
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, final)
        directory = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a power loss
        finally:
            os.close(directory)
        return final


def read_paths(file: Path) -> list[str]:
    """The `path` column of one result file."""
    import pyarrow.parquet as pq

    try:
        if file.suffix == ".parquet":
            return pq.read_table(file, columns=["path"]).column("path").to_pylist()
        return [json.loads(line)["path"] for line in file.read_text(encoding="utf-8").splitlines()]
    except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
        raise FleetError(f"{file} is not a fleet result file ({exc}); move it out of the output folder") from exc


def read_results(folder: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Every row of a fleet output folder (both formats), in file order."""
    import pyarrow.parquet as pq

    rows = []
    for file in ResultFolder(folder).result_files():
        if file.suffix == ".parquet":
            rows += pq.read_table(file).to_pylist()
        else:
            rows += [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines()]
    return rows


# --- the job -----------------------------------------------------------------------------------


@dataclass
class FleetSummary:
    """What one run did: videos asked for, skipped (already in the output), written this run, failed."""

    output: str
    videos: int
    skipped: int
    written: int
    failed: int
    files: int
    plan: dict[str, int] | None = None


def unique(paths: Iterable[str]) -> list[str]:
    """Each path once, first occurrence kept."""
    return list(dict.fromkeys(os.fspath(p) for p in paths))


def dataset_paths(inputs: Inputs) -> list[str]:
    """Paths from a Ray Dataset with a `path` column, or any iterable of paths."""
    if isinstance(inputs, ray.data.Dataset):
        return [str(row["path"]) for row in inputs.select_columns(["path"]).iter_rows()]
    return [os.fspath(p) for p in inputs]


def build_dataset(
    paths: list[str], module: ModuleRef, plan: FleetPlan, ledger: Any, *, config: ConfigOverrides = None,
    use_gpu: bool = False, top_k: int | None = None, threshold: float | None = None, max_attempts: int = 3,
    window: tuple[float, float] | None = None, context: str = "window",
) -> ray.data.Dataset:
    """paths -> DecodeStage actors -> ModelStage actors: rows {path, prediction, error}; with `window`
    (seconds, stride), paths -> FleetTimeline actors: rows {path, duration, timeline, segments, error}."""
    env = runtime_env()
    retries = {"max_restarts": -1, "max_task_retries": -1}  # Ray Data's defaults, stated: the ledger bounds them
    common = {"batch_format": "pyarrow", "batch_size": plan.batch_size, "runtime_env": env, **retries}
    model_kwargs = {"module": module, "config": config, "ledger": ledger, "max_attempts": max_attempts,
                    "use_gpu": use_gpu, "top_k": top_k, "threshold": threshold}
    model_resources = {"compute": ray.data.ActorPoolStrategy(size=plan.model_actors), "num_cpus": plan.model_cpus,
                       "num_gpus": plan.model_gpus}
    ds = ray.data.from_items([{"path": p} for p in paths])
    if window:
        timeline_kwargs = {**model_kwargs, "window": window[0], "stride": window[1], "context": context}
        return ds.map_batches(FleetTimeline, fn_constructor_kwargs=timeline_kwargs, **model_resources, **common)
    ds = ds.map_batches(
        FleetDecode, fn_constructor_kwargs={"module": module, "config": config, "ledger": ledger,
                                            "max_attempts": max_attempts},
        compute=ray.data.ActorPoolStrategy(size=plan.decode_actors), num_cpus=1, **common)
    return ds.map_batches(FleetModel, fn_constructor_kwargs=model_kwargs, **model_resources, **common)


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt (as Ctrl-C does), so the rows received are written first.
    Only in the main thread: Python delivers signals there, and refuses handlers set elsewhere."""
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_fleet(
    inputs: Inputs, module: ModuleRef, output: str | os.PathLike[str], *, config: ConfigOverrides = None,
    use_gpu: bool = False, top_k: int | None = None, threshold: float | None = None, fmt: str = "parquet",
    decode_actors: int | None = None, model_actors: int | None = None, model_cpus: int | None = None,
    batch_size: int = 2, rows_per_file: int = 1000, flush_seconds: float = 60.0, max_attempts: int = 3,
    timeline: float | None = None, stride: float | None = None, timeline_context: str = "window",
) -> FleetSummary:
    """Classify every path of `inputs` not yet in `output` on the Ray cluster this process is connected
    to (`ray.init` first; a local one is started otherwise), writing one row per video there.

    Rows are written once `rows_per_file` have arrived or `flush_seconds` after the last file, and at
    the end; a run stopped by Ctrl-C or SIGTERM writes what it has, then raises KeyboardInterrupt.
    `timeline` (window seconds, `stride` seconds): rows of `classify_timeline` instead of `classify`, in
    `timeline_context` (its `context`).
    """
    top_k = None if top_k is None else validate_top_k(top_k)
    threshold = None if threshold is None else validate_threshold(threshold)
    window = None if timeline is None else validate_window(timeline, stride)
    if window and validate_context(timeline_context) != "window":  # a module without it refuses it here, not per video
        load_module(module, config).classify_timeline_stream([], *window, context=timeline_context)
    folder = ResultFolder(output, fmt)
    with folder.locked(), stop_on_sigterm():
        if not ray.is_initialized():
            ray.init(runtime_env=runtime_env())
        paths = unique(dataset_paths(inputs))
        done = folder.done_paths()
        todo = [p for p in paths if p not in done]
        summary = FleetSummary(str(folder.folder), len(paths), len(paths) - len(todo), 0, 0, 0)
        if not todo:
            return summary
        plan = plan_resources(ray.cluster_resources(), use_gpu, decode_actors, model_actors, model_cpus, batch_size,
                              timeline=window is not None)
        summary.plan = asdict(plan)
        ds = build_dataset(todo, module, plan, start_ledger(), config=config, use_gpu=use_gpu, top_k=top_k,
                           threshold=threshold, max_attempts=max_attempts, window=window, context=timeline_context)
        write_stream(ds, folder, done, summary, rows_per_file, flush_seconds, TIMELINES if window else RESULTS)
    return summary


def write_stream(ds: ray.data.Dataset, folder: ResultFolder, done: set[str], summary: FleetSummary,
                 rows_per_file: int, flush_seconds: float, schema: pa.Schema = RESULTS) -> None:
    """Rows of `ds` as they arrive -> result files; a path in `done` (or already written) is dropped."""
    pending: list[dict[str, str]] = []
    last_write = time.monotonic()

    def flush() -> None:
        nonlocal last_write
        if pending:
            folder.write(pa.Table.from_pylist(pending, schema=schema))
            summary.written += len(pending)
            summary.failed += sum(1 for row in pending if row["error"])
            summary.files += 1
            done.update(row["path"] for row in pending)
            pending.clear()
        last_write = time.monotonic()

    try:
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            for row in batch.select(schema.names).to_pylist():
                if row["path"] not in done:  # a batch retried after its rows came back answers them again
                    done.add(row["path"])
                    pending.append(row)
            if len(pending) >= rows_per_file or time.monotonic() - last_write >= flush_seconds:
                flush()
    finally:  # also on Ctrl-C / SIGTERM: the rows received are complete answers
        flush()


# --- the command -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m paddlehub_video.interfaces.fleet",
        description="Classify many videos on a Ray cluster into a folder of result files (resumable).")
    parser.add_argument("--module", required=True,
                        help="a hub-installed module name (videotag_tsn_lstm, stnet_kinetics400) or a module directory")
    add_input_options(parser)
    parser.add_argument("--output", required=True, help="the result folder (created; every node's paths are "
                        "read by the workers, the rows are written by this driver)")
    parser.add_argument("--format", choices=FORMATS, default="parquet", dest="fmt")
    parser.add_argument("--address", help="the Ray cluster to join (e.g. auto); default: RAY_ADDRESS, else a "
                        "local Ray on this machine")
    add_use_gpu_option(parser, "model actors on GPUs, one per GPU")
    parser.add_argument("--top_k", type=int)
    parser.add_argument("--threshold", type=float)
    parser.add_argument("--decode_actors", type=int)
    parser.add_argument("--model_actors", type=int)
    parser.add_argument("--model_cpus", type=int, help="CPUs (and predictor threads) per model actor")
    parser.add_argument("--batch_size", type=int, default=2, help="videos per batch between the stages")
    parser.add_argument("--rows_per_file", type=int, default=1000)
    parser.add_argument("--flush_seconds", type=float, default=60.0)
    parser.add_argument("--timeline", type=float, metavar="SECONDS",
                        help="rows of classify_timeline (windows of SECONDS) instead of classify")
    parser.add_argument("--stride", type=float, metavar="SECONDS", help="with --timeline: a window every SECONDS")
    parser.add_argument("--timeline-context", choices=CONTEXTS, default="window", dest="timeline_context",
                        help="with --timeline: 'video' runs StNet once over each whole video (README Timeline)")
    parser.add_argument("--max_attempts", type=int, default=3,
                        help="worker deaths a video may cause in a stage before it gets an error row")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 all written, 1 some videos failed (their rows say why), 2 usage, 130 stopped."""
    parser = build_parser()
    args = parser.parse_args(argv)
    paths = input_paths(parser, args)
    options = {key: getattr(args, key) for key in (
        "use_gpu", "top_k", "threshold", "fmt", "decode_actors", "model_actors", "model_cpus", "batch_size",
        "rows_per_file", "flush_seconds", "max_attempts", "timeline", "stride", "timeline_context")}
    if args.address:
        ray.init(address=args.address, runtime_env=runtime_env())
    try:
        summary = run_fleet(paths, args.module, args.output, **options)
    except KeyboardInterrupt:
        print("stopped: the rows received are written; run the same command again to go on", file=sys.stderr)
        return 130
    except (FleetError, ValueError) as exc:
        print(f"fleet: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(summary)))
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
