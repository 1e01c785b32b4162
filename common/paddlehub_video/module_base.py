"""What both hub modules share: the public API and its flow, configuration, model files, predictors.

A module class is its `@moduleinfo`, its config (configs/<NAME>.yaml) and three hooks:

- `load_bundle()`: fetch and convert its files -> a `ModelBundle` (converted models by name, labels);
- `sampling()`: a clip's frame count -> the indices of the frames the model reads (`preprocess`
  decodes those, scaled and cropped, as uint8 `[T, H, W, 3]`);
- `forward(frames, predictors)`: those frames -> the class probabilities (normalisation, layout
  and batch axes are the model's own business).

`classify`, `classify_stream`, `classify_timeline`, `postprocess` and `predict_fn` are written here
once, driven by the class's `DEFAULTS`; `hub run` and `hub serving` call them through
`hub_entry.HubEntryPoints`.
"""
from __future__ import annotations

import copy
import inspect
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np

from . import heap, progress
from .config import ConfigOverrides
from .cpus import cpus_left_idle, default_cpu_threads, default_workers, resolve_precision
from .decode.limits import DecodeLimits, applied_limits, check_video, effective_limits
from .decode.preprocess import scale_and_crop
from .decode.sampling import Window
from .decode.video import (
    FrameTimes,
    evenly_timed,
    frame_times,
    read_sampled_frames,
    read_sampled_groups,
    sampled_from_array,
    sampled_groups_from_array,
)
from .errors import VideoDecodeError
from .hub_entry import HubEntryPoints, prepare_hub_servers, with_defaults
from .inputs import FramesInput, InputLimits, Item, as_input, local_video
from .model.assets import AssetSpec, fetch_assets, read_label_file
from .model.openvino_engine import engine_problem
from .model.postprocess import top_k_predictions, validate_threshold, validate_top_k
from .model.predictor import Predictor, check_can_create, shared_predictor
from .pipeline import ParallelPipelines, VideoOutcome, VideoPipeline, load_soon, report_failure, validate_paths
from .settings import Settings, build_settings, precision_choice
from .timeline import (
    SequenceModel,
    WindowModel,
    WindowStore,
    chunk_features,
    chunks,
    failed_entry,
    fresh_inputs,
    plan,
    prefetched,
    resumed,
    sequence_windows,
    timeline_entry,
    validate_context,
    validate_window,
    window_entry,
    window_store,
)

T = TypeVar("T")


class ModelBundle(NamedTuple):
    """What a module's `load_bundle` gives: its converted models by name (prefixes) and its labels."""

    models: dict[str, Path]
    labels: list[str]


class Analysis(NamedTuple):
    """How a timeline's windows are planned (a frame count -> the frames each window keeps) and made into
    entries (`VideoModule._window_entries` or `_sequence_entries`, their model bound)."""

    sampling: Callable[[int], Sequence[int]]
    entries: Callable[..., Iterator[dict]]


class Defaults(NamedTuple):
    """A module's `classify` defaults and its `hub run` description."""

    top_k: int
    threshold: float
    description: str


class VideoModule(HubEntryPoints):
    """Base of the module classes: `NAME` picks configs/<NAME>.yaml, overridable per instance.
    What PaddleHub needs of the class (`hub run`, `hub serving`, its method wrapper) is `HubEntryPoints`'."""

    NAME = ""
    DEFAULTS = Defaults(top_k=5, threshold=0.0, description="")
    # Settings a converted program fixes ({section: {key: value}}), checked when the module is made.
    FIXED_SETTINGS: dict[str, dict[str, Any]] = {}
    # Models whose predictor never uses oneDNN, whatever runtime.use_onednn says, and runs fp32.
    WITHOUT_ONEDNN: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any):
        """Give a class with its own `DEFAULTS` its own `classify`, `classify_stream`, `classify_timeline`
        and `postprocess` defaults: real ones, that `inspect.signature` and `help()` show."""
        super().__init_subclass__(**kwargs)
        if "DEFAULTS" in cls.__dict__:
            options = {"top_k": cls.DEFAULTS.top_k, "threshold": cls.DEFAULTS.threshold}
            for name in ("classify", "classify_stream", "classify_timeline", "postprocess"):
                setattr(cls, name, with_defaults(getattr(VideoModule, name), **options))

    def __init__(self, config: ConfigOverrides = None, **kwargs: Any):
        self.settings: Settings = build_settings(self.NAME, config, self.FIXED_SETTINGS)
        heap.configure_malloc()  # before the decoders' and predictors' threads exist
        self._bundle: ModelBundle | None = None  # what `load_bundle` made, once
        self._label_list: list[str] | None = None  # the label file alone, for `postprocess` before any load
        self._once_lock = threading.Lock()
        self._loaded_for: set[tuple[bool, int]] = set()  # (use_gpu, workers) whose predictors exist
        prepare_hub_servers()

    @property
    def config(self) -> dict[str, Any]:
        """The resolved settings as plain data (`settings.as_dict()`): a copy, changing it changes nothing."""
        return self.settings.as_dict()

    # ------------------------------------------------------------ the hooks of a module class

    def load_bundle(self) -> ModelBundle:
        """Fetch the module's files and convert its networks (called once per object, by `bundle`)."""
        raise NotImplementedError

    def forward(self, frames: np.ndarray, predictors: dict[str, Predictor]) -> np.ndarray:
        """`preprocess`'s frames -> the class probabilities `[num_classes]`, with the predictors of `bundle`."""
        raise NotImplementedError

    def sampling(self) -> Callable[[int], Sequence[int]]:
        """Frame count of a clip -> the indices of the frames `preprocess` takes from it (timelines sample each
        window with it)."""
        raise NotImplementedError

    def preprocess(self, path: Item) -> np.ndarray:
        """One video (any item `inputs.as_input` takes) -> the frames `sampling()` picks, scaled and
        cropped: `[T, H, W, 3]` uint8 (what `predict_fn` takes)."""
        return self.read_clip(path, self.sampling())

    # ------------------------------------------------------------ files, models, predictors

    def _once(self, attribute: str, make: Callable[[], T]) -> T:
        """`make()` on first use, kept in `attribute`: once per object, even when threads start together."""
        value = getattr(self, attribute)
        if value is None:
            with self._once_lock:
                if getattr(self, attribute) is None:
                    setattr(self, attribute, make())
                value = getattr(self, attribute)
        return value

    def bundle(self) -> ModelBundle:
        """The fetched, converted models and the labels: `load_bundle()` on first use, then its result."""
        return self._once("_bundle", self.load_bundle)

    def class_names(self) -> list[str]:
        """The labels `postprocess` uses: the loaded bundle's, else the label file alone (no conversion)."""
        if self._bundle is not None:
            return self._bundle.labels
        return self._once("_label_list", lambda: self.labels)

    @property
    def module_dir(self) -> Path:
        """The installed module directory (PaddleHub sets `directory`), else the source folder."""
        directory = getattr(self, "directory", None)
        return Path(directory) if directory else Path(inspect.getfile(type(self))).parent

    def asset(self, key: str) -> Path:
        """Local path of the asset `key` of the config's `assets`, fetched on first use."""
        return self.assets(key)[0]

    def assets(self, *keys: str) -> list[Path]:
        """Local paths of the assets `keys`; all are looked for first, so one error names every missing file."""
        specs = [AssetSpec.from_dict(key, self.settings.assets[key].as_manifest()) for key in keys]
        return fetch_assets(specs, module_dir=self.module_dir, owner=self.NAME, downloads=self.settings.downloads)

    @property
    def labels(self) -> list[str]:
        """The class names, index = class id (`hub run <module> --list_labels` prints them).

        Reads the label file only (fetched on first use, a small file): no weights are fetched or
        converted. A new list on each access.
        """
        return self.read_label_file(self.asset("labels"))

    def read_label_file(self, path: Path) -> list[str]:
        """The class names in the fetched label file `path`; a downloaded file that fails the check is deleted."""
        return read_label_file(path, self.settings.model.num_classes)

    def predictor(
        self, model_prefix: Path, use_gpu: bool, use_onednn: bool | None = None, worker: int = 0,
        workers: int | None = None, precision: str = "fp32", onednn_shapes: int = 0,
    ) -> Predictor:
        """The process-wide predictor of a converted model, on CPU or GPU as asked for this call;
        `worker` k > 0 gets a clone of worker 0's (the weights shared, its own activations); the CPU
        threads are shared among the call's `workers` (None: `runtime.workers`); `precision` as
        `precision()` resolved it; `onednn_shapes` as `predictor.shared_predictor` takes it."""
        runtime = self.settings.runtime
        onednn = runtime.use_onednn if use_onednn is None else use_onednn
        threads = default_cpu_threads(runtime.cpu_threads, self.workers(use_gpu, workers))
        return shared_predictor(model_prefix, bool(use_gpu), threads, onednn, worker, precision, onednn_shapes)

    def predictors(self, use_gpu: bool, worker: int = 0, workers: int | None = None) -> dict[str, Predictor]:
        """A predictor for each model of `bundle()`, by the same names; fetches and converts on first use.
        The models of `WITHOUT_ONEDNN` (the LSTM) run fp32 whatever `runtime.precision` says."""
        precision = self.precision(use_gpu)
        return {
            name: self.predictor(prefix, use_gpu, False, worker, workers, "fp32") if name in self.WITHOUT_ONEDNN
            else self.predictor(prefix, use_gpu, None, worker, workers, precision)
            for name, prefix in self.bundle().models.items()
        }

    def with_precision(self, precision: str | None) -> VideoModule:
        """This module, or a copy of it (same models, same labels) whose `runtime.precision` is `precision`:
        `hub run --precision` chooses for one run without changing this object's settings."""
        if precision is None or precision == self.settings.runtime.precision:
            return self
        precision_choice("precision", precision)
        twin = copy.copy(self)
        twin.settings = replace(self.settings, runtime=replace(self.settings.runtime, precision=precision))
        twin._once_lock = threading.Lock()
        twin._loaded_for = set()
        return twin

    def precision(self, use_gpu: bool = False) -> str:
        """What `runtime.precision` runs here: `fp32` or `bf16` (`cpus.resolve_precision`: a DeviceError
        for bf16 where the CPU or the environment cannot run it)."""
        requested = self.settings.runtime.precision or "fp32"
        problem = engine_problem() if requested != "fp32" and not use_gpu else None
        return resolve_precision(requested, bool(use_gpu), engine_problem=problem)

    def workers(self, use_gpu: bool = False, workers: int | None = None) -> int:
        """Videos run at once: this call's `workers`, else `runtime.workers` (null: automatic); one on a GPU."""
        return 1 if use_gpu else default_workers(self.settings.runtime.workers if workers is None else workers)

    def decode_ahead(self, use_gpu: bool, workers: int) -> bool:
        """Whether each worker decodes its next video while it infers the current one: `runtime.decode_ahead`,
        else (null) on a GPU, or where the predictors' threads leave a CPU idle. Where they take every CPU,
        the decode would only share their CPUs and add its buffers to the network's peak: +100-340 MiB
        with two 60 s 1080p videos in one videotag call, over the 1.5 GB (README Limits)."""
        if self.settings.runtime.decode_ahead is not None:
            return self.settings.runtime.decode_ahead
        if use_gpu:
            return True
        return cpus_left_idle(default_cpu_threads(self.settings.runtime.cpu_threads, workers), workers) > 0

    # ------------------------------------------------------------ decoding

    def decode_limits(self) -> DecodeLimits:
        """The config's `limits`, made stricter by any the caller applied (`limits.applied_limits`)."""
        return effective_limits(self.settings.limits.decode_limits())

    def read_frames(
        self, path: Item | os.PathLike[str], sample_indices: Callable[[int], Sequence[int]],
        transform: Callable[[np.ndarray], T],
    ) -> list[T]:
        """`video.read_sampled_frames` of any item `inputs.as_input` takes (frames: sampled as they are),
        after checking the video against `decode_limits()` (if any).

        The limits stay applied while it decodes: its pixel limit then holds for every frame.
        """
        item = as_input(path)
        if isinstance(item, FramesInput):
            return sampled_from_array(item.frames, item.name, sample_indices, transform)
        limits = self.decode_limits()
        with self.local_video(item) as local:
            check_video(local, limits)
            with applied_limits(limits):
                return read_sampled_frames(local, sample_indices, transform)

    def local_video(self, item: Item) -> AbstractContextManager[str]:
        """`inputs.local_video` of `item` within `limits.max_input_bytes` and the downloads' timeouts."""
        downloads = self.settings.downloads
        limits = InputLimits(self.settings.limits.max_input_bytes, timeout_s=downloads.timeout_s,
                             deadline_s=downloads.deadline_s)
        return local_video(item, limits)

    def crop(self) -> Callable[[np.ndarray], np.ndarray]:
        """An RGB frame -> scaled and centre-cropped as the config says (uint8)."""
        pre = self.settings.preprocess
        return partial(scale_and_crop, short_size=pre.short_size, crop_size=pre.crop_size)

    def read_clip(self, path: Item | os.PathLike[str], sample_indices: Callable[[int], Sequence[int]]) -> np.ndarray:
        """The frames `sample_indices` picks, scaled and centre-cropped as the config says: uint8 `[T, H, W, 3]`."""
        # Kept as uint8 until the network runs: 300 crops are 45 MB, their float32 tensor 180 MB.
        clip = np.stack(self.read_frames(path, sample_indices, self.crop()))
        heap.release_free_memory()  # the decoders' buffers, before the network's activations come
        return clip

    # ------------------------------------------------------------ the public API

    def predict_fn(self, use_gpu: bool = False) -> Callable[[np.ndarray], np.ndarray]:
        """The model as a function `preprocess`'s frames -> probabilities; loads it now, once per process."""
        predictors = self.predictors(use_gpu)
        return lambda frames: self.forward(frames, predictors)

    def postprocess(
        self, probs: np.ndarray, top_k: int = DEFAULTS.top_k, threshold: float = DEFAULTS.threshold
    ) -> dict[str, float]:
        """Probabilities -> `classify`'s `prediction`: the top_k labels with prob >= threshold, descending."""
        top_k, threshold = self._options(top_k, threshold)
        return top_k_predictions(probs, self.class_names(), top_k, threshold)

    def outcomes(
        self, paths: list[str], use_gpu: bool, model: Callable[[np.ndarray, dict[str, Predictor]], T] | None = None,
        workers: int | None = None,
    ) -> Iterator[VideoOutcome[T]]:
        """`preprocess` then `model` (default: `forward`) of each video, the next one decoding meanwhile
        where `decode_ahead` says so: outcomes in input order. With several `workers` (None:
        `runtime.workers`), each runs its own videos on its own predictors."""
        model = model or self.forward
        planned = self.workers(use_gpu, workers)  # the predictors' threads are shared among these
        count = min(planned, len(paths))
        # On the first call, each worker's first video decodes while the models are fetched and loaded
        # (seconds): a failure there still fails this call, and the decoded frames are dropped.
        ready = (use_gpu, count) in self._loaded_for
        if not ready:
            check_can_create(use_gpu)  # no GPU, or a forked child that cannot make one: before any decoding
            self.precision(use_gpu)  # bf16 that cannot run here: before any decoding too
        firsts = None if ready else [load_soon(self.preprocess, path) for path in paths[:count]]
        ahead = self.decode_ahead(use_gpu, planned)
        pipelines = [
            VideoPipeline(self.preprocess, partial(model, predictors=self.predictors(use_gpu, worker, planned)), ahead)
            for worker in range(count)
        ]
        self._loaded_for.add((use_gpu, count))
        if count == 1:
            return pipelines[0].run(paths, firsts[0] if firsts else None)
        return ParallelPipelines(pipelines).run(paths, firsts)

    def classify(
        self, paths: list[str], use_gpu: bool = False,
        threshold: float = DEFAULTS.threshold, top_k: int = DEFAULTS.top_k, workers: int | None = None,
    ) -> list[dict]:
        """Classify each video: `[{'path': p, 'prediction': {label: prob, ...}}, ...]`, in input order.

        `top_k` most probable labels, then those with prob >= `threshold`, descending (defaults: the
        module's `DEFAULTS`). A video that cannot be classified gets
        `{'path': p, 'prediction': {}, 'error': reason}`. `workers`: videos run at once for this call
        (None: the settings' `runtime.workers`).
        """
        return list(self.classify_stream(paths, use_gpu, threshold, top_k, workers))

    def classify_stream(
        self, paths: list[str], use_gpu: bool = False,
        threshold: float = DEFAULTS.threshold, top_k: int = DEFAULTS.top_k, workers: int | None = None,
    ) -> Iterator[dict]:
        """`classify`, one entry at a time in input order, each as soon as its video is done."""
        paths = validate_paths(paths)  # checked here, at the call, not at the first next()
        top_k, threshold = self._options(top_k, threshold)
        if not paths:
            return iter(())
        # fetches and converts now, so a missing file fails the call
        outcomes = self.outcomes(paths, use_gpu, workers=workers)
        return (self._entry(outcome, top_k, threshold) for outcome in outcomes)

    def _entry(self, outcome: VideoOutcome[np.ndarray], top_k: int, threshold: float) -> dict:
        """One video's `classify` entry; a failed video gets an empty prediction and its error."""
        if outcome.error is not None:
            return {"path": outcome.path, "prediction": {}, "error": outcome.error}
        return {"path": outcome.path, "prediction": self.postprocess(outcome.output, top_k, threshold)}

    def classify_timeline(
        self, paths: list[str], window_seconds: float = 60.0, stride_seconds: float | None = None,
        use_gpu: bool = False, threshold: float = DEFAULTS.threshold, top_k: int = DEFAULTS.top_k,
        context: str = "window",
    ) -> list[dict]:
        """Tags over time: `[{'path': p, 'duration': s, 'windows': [{'start': s, 'end': s, 'prediction': {...}}]}]`.

        Windows of `window_seconds` every `stride_seconds` (default: side by side; overlapping when
        shorter), by the frames' timestamps; each classified as `classify` classifies a whole clip,
        so one window covering a short video gives its `classify` prediction. In input order; a
        video that cannot be read gets `{'path': p, 'duration': None, 'windows': [], 'error': reason}`.

        `context`: `"window"` (default) classifies each window on its own, bit for bit as `classify`;
        `"video"` (StNet only) runs the network once over the whole video, each window seeing its
        neighbours at its ends: faster with overlapping windows, not bit for bit (README, Timeline).
        """
        return list(self.classify_timeline_stream(paths, window_seconds, stride_seconds, use_gpu, threshold, top_k,
                                                  context))

    def classify_timeline_stream(
        self, paths: list[str], window_seconds: float = 60.0, stride_seconds: float | None = None,
        use_gpu: bool = False, threshold: float | None = None, top_k: int | None = None, context: str = "window",
    ) -> Iterator[dict]:
        """`classify_timeline`, one entry at a time in input order (`None` options: the module's defaults)."""
        paths = validate_paths(paths)
        window, stride = validate_window(window_seconds, stride_seconds)
        top_k, threshold = self._options(
            self.DEFAULTS.top_k if top_k is None else top_k, self.DEFAULTS.threshold if threshold is None else threshold
        )
        whole_video = self._whole_video(context)
        if not paths:
            return iter(())
        options = {"module": self.NAME, "window": window, "stride": stride, "top_k": top_k, "threshold": threshold}
        if whole_video:  # in the options (and so in a windows file): windows of one context never resume the other
            options["context"] = "video"
        # fetches and converts now, so a missing file fails the call
        analyse = self._sequence_analysis(use_gpu) if whole_video else self._window_analysis(use_gpu)
        return (self._timeline_of(path, options, analyse) for path in paths)

    def _whole_video(self, context: object) -> bool:
        """Whether `context` (validated) asks for the whole-video analysis, which this module must have."""
        if validate_context(context) == "window":
            return False
        if type(self).sequence_model is VideoModule.sequence_model:
            raise ValueError(f"context='video' is for StNet; {self.NAME} has no whole-video analysis (its "
                             f"timeline already runs each distinct frame through its CNN once, bit for bit "
                             f"as classify): use context='window'")
        return True

    def sequence_model(self, use_gpu: bool) -> SequenceModel:
        """The network run once over a whole video for `context="video"` timelines (fetched and converted
        on first use); a module without one refuses that context."""
        raise NotImplementedError

    def timeline_model(self, predictors: dict[str, Predictor]) -> WindowModel:
        """How a timeline's windows go through the network, one video's windows in order: `forward` of each
        window's frames, unless a module reuses work across windows (`timeline.FrameFeatures`)."""
        return WindowModel(partial(self.forward, predictors=predictors))

    def _window_analysis(self, use_gpu: bool) -> Analysis:
        """`context="window"`: each window sampled and classified on its own (`_window_entries`)."""
        predictors = self.predictors(use_gpu)
        return Analysis(self.sampling(), partial(self._window_entries, predictors=predictors))

    def _sequence_analysis(self, use_gpu: bool) -> Analysis:
        """`context="video"`: the windows' first and last frames planned, then `_sequence_entries`."""
        model = self.sequence_model(use_gpu)
        return Analysis(lambda count: (0, count - 1), partial(self._sequence_entries, model=model))

    def _timeline_of(self, path: Item, options: dict, analyse: Analysis) -> dict:
        """One video's timeline entry: one decoding pass, the next windows decoding while the network runs;
        a local file's windows finished by an earlier run (`timeline.window_store()`) are taken as they are."""
        report = progress.current()
        item = as_input(path)
        name = str(item)
        store = window_store() if isinstance(item, str) else WindowStore()  # only a file is known again
        try:
            with self._timed_frames(item) as (times, groups):
                windows = plan(name, times.times, times.duration, options["window"], options["stride"],
                               analyse.sampling, self.settings.timeline.window_limit())
                found = resumed(store.finished(name, options), windows)
                todo = analyse.entries(name, windows, len(found), options, groups=groups, store=store,
                                       frame_count=len(times.times))
                found += todo
            return timeline_entry(name, times.duration, found)
        except Exception as exc:  # one bad video must not cost the others their results
            return failed_entry(name, report_failure(item, exc))
        finally:
            report.finished(name)

    @contextmanager
    def _timed_frames(self, item: Item) -> Iterator[tuple[FrameTimes, Callable[..., Iterator[list]]]]:
        """`item`'s frame times, and `read_sampled_groups` of it (groups, transform) while the block runs."""
        if isinstance(item, FramesInput):
            if item.fps is None:
                raise VideoDecodeError(item.name, "frames without a frame rate have no timeline: give "
                                                  "Frames(array, fps)")
            yield evenly_timed(len(item.frames), item.fps), partial(sampled_groups_from_array, item.frames, item.name)
            return
        limits = self.decode_limits()
        with self.local_video(item) as local:
            check_video(local, limits)
            with applied_limits(limits):  # the pixel limit holds for every frame decoded
                yield frame_times(local), partial(read_sampled_groups, local)

    def _window_entries(
        self, path: str, windows: list[Window], start: int, options: dict, predictors: dict[str, Predictor],
        groups: Callable[..., Iterator[list]], store: WindowStore, frame_count: int,
    ) -> Iterator[dict]:
        """The entries of `windows[start:]` (their frames from `groups`), each put in `store` as it is finished."""
        model = self.timeline_model(predictors)
        todo = windows[start:]
        clips = (np.stack(frames) for frames in groups([w.indices for w in todo], self.crop()))

        def probabilities() -> Iterator[np.ndarray]:
            for position, (window, frames) in enumerate(zip(todo, prefetched(clips), strict=True)):
                yield model(window.indices, frames)
                model.keep_from(min(todo[position + 1].indices) if position + 1 < len(todo) else None)

        return self._finish_windows(path, windows, start, options, store, probabilities())

    def _sequence_entries(
        self, path: str, windows: list[Window], start: int, options: dict, model: SequenceModel,
        groups: Callable[..., Iterator[list]], store: WindowStore, frame_count: int,
    ) -> Iterator[dict]:
        """`context="video"`: the entries of `windows[start:]` (each planned as its first and last frame), from
        the rows of the grid positions nearest each window (`SequenceModel`), the chunks' frames from `groups`."""
        if start == len(windows):  # every window finished earlier (a run stopped before writing the video's entry)
            return self._finish_windows(path, windows, start, options, store, iter(()))
        grid = model.grid(frame_count, max(last - first + 1 for first, last in (w.indices for w in windows)))
        starts = [grid.nearest(w.indices[0], model.span) for w in windows[start:]]
        planned = chunks(starts[0], starts[-1] + model.span, grid.count, model.chunk, model.halo) if starts else []
        frames = prefetched(groups([grid.indices(fresh) for fresh in fresh_inputs(planned)], self.crop()))
        rows = sequence_windows(starts, model.span, planned, chunk_features(planned, frames, model, grid.seglen))
        return self._finish_windows(path, windows, start, options, store, (model.head(r) for r in rows))

    def _finish_windows(self, path: str, windows: list[Window], start: int, options: dict, store: WindowStore,
                        probabilities: Iterator[np.ndarray]) -> Iterator[dict]:
        """The entries of `windows[start:]` from their `probabilities`, each put in `store` as it is finished."""
        report = progress.current()
        report.windows(path, start, len(windows))
        for position, (window, found) in enumerate(zip(windows[start:], probabilities, strict=True)):
            entry = window_entry(window, self.postprocess(found, options["top_k"], options["threshold"]))
            store.add(path, options, entry)
            report.windows(path, start + position + 1, len(windows))
            yield entry

    @staticmethod
    def _options(top_k: object, threshold: object) -> tuple[int, float]:
        """Validated `top_k` and `threshold`."""
        return validate_top_k(top_k), validate_threshold(threshold)
