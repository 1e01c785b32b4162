"""stnet_kinetics400: StNet (ResNet-50 with temporal blocks) over the 400 Kinetics action classes.

The published PaddleHub v1 module, on PaddlePaddle 3: same weights, same network, same API.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import paddlehub as hub
from paddlehub.module.module import moduleinfo, runnable, serving

from paddlehub_video.cli import build_parser, run_batch
from paddlehub_video.config import ConfigOverrides
from paddlehub_video.inference_model import cached_inference_model
from paddlehub_video.module_base import VideoModule
from paddlehub_video.networks.stnet import build_stnet_program
from paddlehub_video.pipeline import VideoOutcome, VideoPipeline, validate_paths
from paddlehub_video.postprocess import (
    result_entry,
    top_k_predictions,
    validate_threshold,
    validate_top_k,
)
from paddlehub_video.preprocess import frames_to_tensor, scale_and_crop, to_super_images
from paddlehub_video.serving import classify_request
from paddlehub_video.video import sample_stnet_indices

NAME = "stnet_kinetics400"
logger = logging.getLogger("paddlehub_video")


@moduleinfo(
    name="stnet_kinetics400",  # a literal: `hub install` reads it from the source (AST)
    version="1.0.0",
    summary="StNet video classification on Kinetics-400 (400 action classes)",
    author="paddlepaddle",
    author_email="paddle-dev@baidu.com",
    type="video/classification",
)
class StNet(VideoModule, hub.Module):
    NAME = NAME

    def __init__(self, config: ConfigOverrides = None, **kwargs: Any):
        VideoModule.__init__(self, config)  # not super(): @moduleinfo rebuilds the class
        self._calls = threading.local()  # per thread, so concurrent calls keep their own errors

    @property
    def last_errors(self) -> dict[int, str]:
        """Reasons of the videos that failed in this thread's last video_classification call: {index: reason}."""
        return getattr(self._calls, "errors", {})

    @last_errors.setter
    def last_errors(self, errors: dict[int, str]) -> None:
        self._calls.errors = errors

    def _load_models(self) -> tuple[Path, list[str]]:
        """Fetch weights and labels, convert the weights once; (stnet model, labels)."""
        return self._load_once(self._fetch_and_convert)

    def _fetch_and_convert(self) -> tuple[Path, list[str]]:
        sampling = self.config["sampling"]
        build = partial(
            build_stnet_program,
            seg_num=sampling["seg_num"],
            image_size=self.config["preprocess"]["crop_size"],
            num_classes=self.config["model"]["num_classes"],
        )
        weights = self.config["assets"]["weights"]
        # Every file first: a failed download or a wrong label file is reported before any conversion.
        weights_file, labels_file = self.assets("weights", "labels")
        labels = self.read_label_file(labels_file)
        model = cached_inference_model(
            f"stnet_seg{sampling['seg_num']}", self.config["program_version"], build,
            {weights["network"]: weights_file},
        )
        return model, labels

    def preprocess(self, path: str) -> np.ndarray:
        """One video -> its super-images `[1, seg_num, 3*seglen, crop, crop]` float32 (what `predict_fn` takes)."""
        pre, sampling = self.config["preprocess"], self.config["sampling"]
        frames = self.read_frames(
            path,
            partial(sample_stnet_indices, seg_num=sampling["seg_num"], seglen=sampling["seglen"]),
            partial(scale_and_crop, short_size=pre["short_size"], crop_size=pre["crop_size"]),
        )
        return to_super_images(frames_to_tensor(frames, pre["mean"], pre["std"]), sampling["seglen"])[np.newaxis]

    def _outcomes(self, paths: list[str], use_gpu: bool) -> list[VideoOutcome]:
        return list(self._outcome_stream(paths, use_gpu))

    def _outcome_stream(self, paths: list[str], use_gpu: bool) -> Iterator[VideoOutcome]:
        return VideoPipeline(self.preprocess, self.predict_fn(use_gpu)).run(paths)

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
        top_k, threshold = validate_top_k(top_k), validate_threshold(threshold)
        labels = self._load_models()[1]
        outcomes = self._outcomes(paths, use_gpu)
        self.last_errors = {i: o.error for i, o in enumerate(outcomes) if o.error is not None}
        return [
            {} if o.error is not None else top_k_predictions(o.output, labels, top_k, threshold) for o in outcomes
        ]

    def classify(self, paths: list[str], use_gpu: bool = False, threshold: float = 0.0, top_k: int = 5) -> list[dict]:
        """videotag-style results: `[{'path': p, 'prediction': {label: prob}}]`, failures with an 'error'."""
        return list(self.classify_stream(paths, use_gpu, threshold, top_k))

    def classify_stream(
        self, paths: list[str], use_gpu: bool = False, threshold: float = 0.0, top_k: int = 5
    ) -> Iterator[dict]:
        """`classify`, one entry at a time in input order, each as soon as its video is done."""
        paths = validate_paths(paths)  # checked here, at the call, not at the first next()
        top_k, threshold = validate_top_k(top_k), validate_threshold(threshold)
        if not paths:
            return iter(())
        labels = self._load_models()[1]
        outcomes = self._outcome_stream(paths, use_gpu)
        return (result_entry(o.path, o.output, o.error, labels, top_k, threshold) for o in outcomes)

    @serving
    def serving_method(self, paths: list[str] | None = None, videos: list | None = None, **options: Any) -> list[dict]:
        """`hub serving`: `classify` of server `paths` and/or base64 `videos` (see paddlehub_video.serving)."""
        return classify_request(self.classify, paths, videos, options)

    @runnable
    def run_cmd(self, argvs: list[str]) -> list[dict] | dict:
        """`hub run stnet_kinetics400 --input_path V|folder|'glob' --input_file list.txt [--output r.jsonl]`."""
        parser = build_parser(NAME, "Classify actions in videos (400 Kinetics classes).", top_k=5, threshold=0.0)
        args = parser.parse_args(argvs)
        return run_batch(
            NAME, parser, args,
            lambda paths: self.classify_stream(paths, args.use_gpu, args.threshold, args.top_k),
            labels=lambda: self.labels,
            present=lambda entries: [entry["prediction"] for entry in entries],  # what video_classification gives
        )

    # With `preprocess` and `predict_fn`: the public stages of `classify`, for callers that run decoding
    # and inference apart (paddlehub_video.ray_adapter).

    def predict_fn(self, use_gpu: bool = False) -> Callable[[np.ndarray], np.ndarray]:
        """The model as a function tensor -> 400 probabilities; fetches and loads it now, once per process."""
        predictor = self.predictor(self._load_models()[0], use_gpu)
        return lambda video: predictor.run({"image": video})[0][0]

    def postprocess(self, probs: np.ndarray, top_k: int = 5, threshold: float = 0.0) -> dict[str, float]:
        """Probabilities -> `classify`'s `prediction`: the top_k labels with prob >= threshold, descending."""
        labels = self._load_models()[1]
        return top_k_predictions(probs, labels, validate_top_k(top_k), validate_threshold(threshold))
