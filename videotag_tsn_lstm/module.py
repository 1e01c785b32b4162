"""videotag_tsn_lstm: 3396 Chinese short-video tags from TSN (ResNet-101) features and an AttentionLSTM.

The published PaddleHub module, on PaddlePaddle 3: same weights, same numbers, same results format.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import paddlehub as hub
from paddlehub.module.module import moduleinfo, runnable, serving

from paddlehub_video.cli import build_parser, run_batch
from paddlehub_video.inference_model import cached_inference_model
from paddlehub_video.module_base import VideoModule
from paddlehub_video.networks.attention_lstm import build_attention_lstm_program
from paddlehub_video.networks.tsn import build_tsn_program
from paddlehub_video.pipeline import VideoOutcome, VideoPipeline, validate_paths
from paddlehub_video.postprocess import result_entry, top_k_predictions, validate_threshold, validate_top_k
from paddlehub_video.preprocess import scale_and_crop, tensor_batches
from paddlehub_video.serving import classify_request
from paddlehub_video.video import sample_tsn_indices

NAME = "videotag_tsn_lstm"


# A NamedTuple, not a @dataclass: PaddleHub reads this file's class decorators as calls (`.func`) and
# fails on a bare decorator.
class VideoTagOutputs(NamedTuple):
    """What one TSN run and one AttentionLSTM run give for a video."""

    tsn_features: np.ndarray  # [seg_num, 2048] float32
    probabilities: np.ndarray  # [num_classes] float32
    pooled_feature: np.ndarray  # [1024] float32, the attention-pooled LSTM states (the fc head's input)


def features_entry(outcome: VideoOutcome[VideoTagOutputs]) -> dict:
    """One `extract_features` result: the two feature arrays, or the reason the video failed."""
    if outcome.error is not None:
        return {"path": outcome.path, "error": outcome.error}
    return {
        "path": outcome.path,
        "tsn_features": outcome.output.tsn_features,
        "pooled_feature": outcome.output.pooled_feature,
    }


@moduleinfo(
    name="videotag_tsn_lstm",  # a literal: `hub install` reads it from the source (AST)
    version="1.0.0",
    summary="videotag_tsn_lstm is a video classification model, using TSN for feature extraction "
    "and AttentionLSTM for classification",
    author="paddlepaddle",
    author_email="paddle-dev@baidu.com",
    type="video/classification",
)
class VideoTag(VideoModule, hub.Module):
    NAME = NAME

    def _load_models(self) -> tuple[Path, Path, list[str]]:
        """Fetch weights and labels, convert the weights once; (tsn model, lstm model, labels)."""
        return self._load_once(self._fetch_and_convert)

    def _fetch_and_convert(self) -> tuple[Path, Path, list[str]]:
        version = self.config["program_version"]
        assets = self.config["assets"]
        # Every file first: a failed download or a wrong label file is reported before any conversion.
        tsn_weights, lstm_weights, labels_file = self.assets("tsn_weights", "lstm_weights", "labels")
        labels = self.read_label_file(labels_file)
        tsn = cached_inference_model(
            "videotag_tsn",
            version,
            partial(build_tsn_program, image_size=self.config["preprocess"]["crop_size"]),
            {assets["tsn_weights"]["network"]: tsn_weights},
        )
        lstm = cached_inference_model(
            "videotag_attention_lstm",
            version,
            partial(build_attention_lstm_program, num_classes=self.config["model"]["num_classes"]),
            {assets["lstm_weights"]["network"]: lstm_weights},
        )
        return tsn, lstm, labels

    def preprocess(self, path: str) -> np.ndarray:
        """One video -> its sampled, cropped frames `[seg_num, crop, crop, 3]` uint8 (what `predict_fn` takes)."""
        pre = self.config["preprocess"]
        frames = self.read_frames(
            path,
            partial(sample_tsn_indices, seg_num=self.config["sampling"]["seg_num"]),
            partial(scale_and_crop, short_size=pre["short_size"], crop_size=pre["crop_size"]),
        )
        # Kept as uint8 until the network runs: 300 crops are 45 MB, their float32 tensor 180 MB.
        return np.stack(frames)

    def _networks(self, use_gpu: bool) -> Callable[[np.ndarray], VideoTagOutputs]:
        """sampled frames -> their VideoTagOutputs, the one inference path of classify and extract_features."""
        tsn_model, lstm_model, _ = self._load_models()
        tsn = self.predictor(tsn_model, use_gpu)
        lstm = self.predictor(lstm_model, use_gpu, use_onednn=False)
        chunk, pre = self.config["runtime"]["frames_per_batch"], self.config["preprocess"]

        def run(frames: np.ndarray) -> VideoTagOutputs:
            # Frames are independent in the extractor, so running a few at a time bounds memory
            # without changing results.
            batches = tensor_batches(frames, chunk, pre["mean"], pre["std"])
            features = np.concatenate([tsn.run({"image": batch})[0] for batch in batches], axis=1)[0]
            # The program's fetch order (networks/attention_lstm.py): probabilities, then the pooled vector.
            probabilities, pooled = lstm.run({"rgb": features}, lod={"rgb": [[0, features.shape[0]]]})
            return VideoTagOutputs(features, probabilities[0], pooled[0])

        return run

    def predict_fn(self, use_gpu: bool = False) -> Callable[[np.ndarray], np.ndarray]:
        """The model as a function sampled frames -> 3396 probabilities; fetches and loads it now, once per process."""
        networks = self._networks(use_gpu)
        return lambda video: networks(video).probabilities

    def classify(self, paths: list[str], use_gpu: bool = False, threshold: float = 0.5, top_k: int = 10) -> list[dict]:
        """Tag each video: `[{'path': p, 'prediction': {label: prob, ...}}, ...]`, in input order.

        `top_k` most probable tags, then those with prob >= `threshold`, descending. A video that
        cannot be classified gets `{'path': p, 'prediction': {}, 'error': reason}`.
        """
        return list(self.classify_stream(paths, use_gpu, threshold, top_k))

    def classify_stream(
        self, paths: list[str], use_gpu: bool = False, threshold: float = 0.5, top_k: int = 10
    ) -> Iterator[dict]:
        """`classify`, one entry at a time in input order, each as soon as its video is done."""
        paths = validate_paths(paths)  # checked here, at the call, not at the first next()
        top_k, threshold = validate_top_k(top_k), validate_threshold(threshold)
        if not paths:
            return iter(())
        labels = self._load_models()[2]
        outcomes = VideoPipeline(self.preprocess, self.predict_fn(use_gpu)).run(paths)
        return (result_entry(o.path, o.output, o.error, labels, top_k, threshold) for o in outcomes)

    def extract_features(self, paths: list[str], use_gpu: bool = False) -> list[dict]:
        """Features of each video for your own classifier or search, in input order.

        `[{'path': p, 'tsn_features': [seg_num, 2048] float32, 'pooled_feature': [1024] float32}, ...]`;
        a video that cannot be read gets `{'path': p, 'error': reason}`, the reason classify gives.
        """
        paths = validate_paths(paths)
        if not paths:
            return []
        return [features_entry(o) for o in VideoPipeline(self.preprocess, self._networks(use_gpu)).run(paths)]

    @serving
    def serving_method(self, paths: list[str] | None = None, videos: list | None = None, **options: Any) -> list[dict]:
        """`hub serving`: `classify` of server `paths` and/or base64 `videos` (see paddlehub_video.serving)."""
        return classify_request(self.classify, paths, videos, options)

    @runnable
    def run_cmd(self, argvs: list[str]) -> list[dict] | dict:
        """`hub run videotag_tsn_lstm --input_path 1.mp4|folder|'glob' [--output r.jsonl] [--top_k 10]`."""
        parser = build_parser(NAME, "Tag short videos with 3396 Chinese labels.", top_k=10, threshold=0.5)
        args = parser.parse_args(argvs)
        return run_batch(NAME, parser, args, lambda paths: self.classify_stream(
            paths, args.use_gpu, args.threshold, args.top_k), labels=lambda: self.labels)

    # With `preprocess` and `predict_fn`: the public stages of `classify`, for callers that run decoding
    # and inference apart (paddlehub_video.ray_adapter).

    def postprocess(self, probs: np.ndarray, top_k: int = 10, threshold: float = 0.5) -> dict[str, float]:
        """Probabilities -> `classify`'s `prediction`: the top_k labels with prob >= threshold, descending."""
        labels = self._load_models()[2]
        return top_k_predictions(probs, labels, validate_top_k(top_k), validate_threshold(threshold))
