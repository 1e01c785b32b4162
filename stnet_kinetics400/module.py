"""stnet_kinetics400: StNet (ResNet-50 with temporal blocks) over the 400 Kinetics action classes.

The published PaddleHub v1 module, on PaddlePaddle 3: same weights, same network, same API.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import paddlehub as hub
from paddlehub.module.module import moduleinfo

from paddlehub_video.config import ConfigOverrides
from paddlehub_video.decode.preprocess import tensor_batches, to_super_images, unique_windows
from paddlehub_video.decode.sampling import sample_stnet_indices, segment_grid
from paddlehub_video.model.inference_model import Program, cached_inference_model
from paddlehub_video.model.networks.stnet import (
    PROGRAM_VERSION,
    SEG_LEN,
    SEQUENCE_HALO,
    SEQUENCE_VERSION,
    build_stnet_head_program,
    build_stnet_sequence_program,
    build_stnet_temporal_program,
    build_stnet_window_program,
)
from paddlehub_video.model.predictor import Predictor
from paddlehub_video.module_base import Defaults, ModelBundle, VideoModule
from paddlehub_video.pipeline import validate_paths
from paddlehub_video.timeline import SequenceModel

# Most segments per run of the sequence program (`context="video"` timelines), plus SEQUENCE_HALO on each
# side (at least seg_num). Its activations take ~12 MB per segment fed at 256 pixels, so 33 keep a timeline
# under the 1.5 GB `classify` keeps (64 + 8: 1.85-2.0 GB). The halo costs the sequence program (61% of the
# work) 8 / 25 more at most; the windows model runs each position once (`timeline.chunk_features`).
SEQUENCE_CHUNK = 25


@moduleinfo(
    name="stnet_kinetics400",  # a literal: `hub install` reads it from the source (AST)
    version="1.0.0",
    summary="StNet video classification on Kinetics-400 (400 action classes)",
    author="paddlepaddle",
    author_email="paddle-dev@baidu.com",
    type="video/classification",
)
class StNet(VideoModule, hub.Module):
    NAME = "stnet_kinetics400"
    DEFAULTS = Defaults(top_k=5, threshold=0.0, description="Classify actions in videos (400 Kinetics classes).")
    FIXED_SETTINGS = {"sampling": {"seglen": SEG_LEN}}  # the network stacks exactly SEG_LEN frames per segment

    def __init__(self, config: ConfigOverrides = None, **kwargs: Any):
        VideoModule.__init__(self, config)  # not super(): @moduleinfo rebuilds the class
        self._calls = threading.local()  # per thread, so concurrent calls keep their own errors
        self._sequence_models: tuple[Path, Path] | None = None  # converted on the first context="video" timeline

    @property
    def last_errors(self) -> dict[int, str]:
        """Reasons of the videos that failed in this thread's last video_classification call: {index: reason}."""
        return getattr(self._calls, "errors", {})

    @last_errors.setter
    def last_errors(self, errors: dict[int, str]) -> None:
        self._calls.errors = errors

    def load_bundle(self) -> ModelBundle:
        """Fetch weights and labels, convert the weights once: models `windows` (the layers that see one
        window alone) and `temporal` (the rest), each with the parameters of its layers."""
        size = self.settings.preprocess.crop_size
        programs = {
            "windows": Program("stnet_windows", PROGRAM_VERSION, build_stnet_window_program, {"image_size": size}),
            "temporal": Program("stnet_temporal", PROGRAM_VERSION, build_stnet_temporal_program,
                                {"seg_num": self.settings.sampling.seg_num, "image_size": size,
                                 "num_classes": self.settings.model.num_classes}),
        }
        # Every file first: a failed download or a wrong label file is reported before any conversion.
        weights_file, labels_file = self.assets("weights", "labels")
        labels = self.read_label_file(labels_file)
        weights = {self.settings.assets["weights"].network: weights_file}
        return ModelBundle({name: cached_inference_model(program, weights) for name, program in programs.items()},
                           labels)

    def sequence_model(self, use_gpu: bool) -> SequenceModel:
        """StNet over a whole video's segments (`context="video"` timelines): on chunks of SEQUENCE_CHUNK grid
        positions, the `windows` model (stem to res3, as `classify` runs it: one window per run), then the
        sequence program over the chunk; then per window the head (max over its seg_num positions, fc, softmax)."""
        # Chunks vary in length from video to video: oneDNN keeps its kernels for one input shape at a time
        # (else ~0.75 GB more per new shape, for ever). The same for the windows model, though its input
        # keeps one shape: with Paddle's default, a 120 s timeline held 2274 MiB at its end, with this 853.
        prefixes = (self.bundle().models["windows"], *self._once("_sequence_models", self._convert_sequence_models))
        windows, sequence, head = (self.predictor(prefix, use_gpu, precision=self.precision(use_gpu), onednn_shapes=1)
                                   for prefix in prefixes)
        sampling = self.settings.sampling
        return SequenceModel(
            grid=partial(segment_grid, seg_num=sampling.seg_num, seglen=sampling.seglen),
            position=lambda frames: self.window_maps(frames, windows)[0],
            features=lambda maps: sequence.run({"maps": maps})[0],
            head=lambda window: head.run({"features": window[np.newaxis]})[0][0],
            span=sampling.seg_num, halo=SEQUENCE_HALO, chunk=max(SEQUENCE_CHUNK, sampling.seg_num),
        )

    def _convert_sequence_models(self) -> tuple[Path, Path]:
        """The sequence and head programs converted from the module's weights (cached as every program is)."""
        weights = {self.settings.assets["weights"].network: self.asset("weights")}
        size = self.settings.preprocess.crop_size
        programs = (
            Program("stnet_sequence", SEQUENCE_VERSION, build_stnet_sequence_program, {"image_size": size}),
            Program("stnet_head", SEQUENCE_VERSION, build_stnet_head_program,
                    {"seg_num": self.settings.sampling.seg_num, "num_classes": self.settings.model.num_classes}),
        )
        return tuple(cached_inference_model(program, weights) for program in programs)

    def sampling(self) -> Callable[[int], list[int]]:
        """Frame count -> the indices of the `seg_num` windows of `seglen` frames (the publisher's formula)."""
        sampling = self.settings.sampling
        return partial(sample_stnet_indices, seg_num=sampling.seg_num, seglen=sampling.seglen)

    def forward(self, frames: np.ndarray, predictors: dict[str, Predictor], dedup: bool = True) -> np.ndarray:
        """Frames -> the 400 probabilities: each window's res3 maps from `windows`, one window per run,
        then every segment's through `temporal`.

        `dedup`: each distinct window (windows repeat, their seglen frames equal byte for byte, in a
        clip of fewer than seg_num frames or a still picture) runs through the per-window layers
        (stem to res3, about half the FLOPs) once, and its maps are then taken for every segment
        that is it (`window_index`); the temporal layers see all seg_num segments.

        One window per run bounds memory: a run's activations and float32 input are one window's
        (4 MB of input instead of 98), and oneDNN meets one input shape. The probabilities are bit
        for bit those of the whole network fed every segment at once (tests/test_stnet_dedup.py).
        """
        seglen = self.settings.sampling.seglen
        if dedup:
            frames, window_index = unique_windows(frames, seglen)
        else:
            window_index = np.arange(len(frames) // seglen, dtype=np.int64)
        maps = self.window_maps(frames, predictors["windows"])
        return predictors["temporal"].run({"maps": maps, "window_index": window_index})[0][0]

    def window_maps(self, frames: np.ndarray, windows: Predictor) -> np.ndarray:
        """uint8 frames of N windows `[N * seglen, crop, crop, 3]` -> their res3 maps `[N, 512, crop / 8, crop / 8]`."""
        pre, seglen = self.settings.preprocess, self.settings.sampling.seglen
        window_tensors = tensor_batches(frames, seglen, pre.mean, pre.std)  # [1, seglen, 3, crop, crop] each
        return np.concatenate([windows.run({"windows": to_super_images(tensor[0], seglen)})[0]
                               for tensor in window_tensors])

    def video_classification(
        self, data: dict, use_gpu: bool = False, top_k: int = 5, threshold: float = 0.0, **kwargs: Any
    ) -> list[dict]:
        """Classify `data["image"]` (a list of video paths): one `{label: prob}` per video, in input order,
        sorted by descending probability. A video that fails gives `{}`; its reason is logged and kept
        in `self.last_errors` ({input index: reason}).
        """
        if not isinstance(data, dict) or "image" not in data:
            raise ValueError('data must be a dict with the key "image" holding a list of video paths')
        paths = validate_paths(data["image"])
        if not paths:
            raise ValueError('data["image"] is empty: give at least one video path')
        entries = self.classify(paths, use_gpu, threshold, top_k)
        self.last_errors = {i: entry["error"] for i, entry in enumerate(entries) if "error" in entry}
        return [entry["prediction"] for entry in entries]

    def present(self, entries: list[dict]) -> list[dict]:
        """`hub run` prints what `video_classification` gives: the predictions alone."""
        return [entry["prediction"] for entry in entries]
