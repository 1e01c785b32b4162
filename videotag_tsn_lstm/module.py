"""videotag_tsn_lstm: 3396 Chinese short-video tags from TSN (ResNet-101) features and an AttentionLSTM.

The published PaddleHub module, on PaddlePaddle 3: same weights, same numbers, same results format.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import paddlehub as hub
from paddlehub.module.module import moduleinfo, runnable

from paddlehub_video.cli import build_parser, input_paths, run_reporting_errors
from paddlehub_video.inference_model import cached_inference_model
from paddlehub_video.module_base import VideoModule
from paddlehub_video.networks.attention_lstm import build_attention_lstm_program
from paddlehub_video.networks.tsn import build_tsn_program
from paddlehub_video.pipeline import VideoPipeline, validate_paths
from paddlehub_video.postprocess import read_labels, result_entry, top_k_predictions, validate_threshold, validate_top_k
from paddlehub_video.preprocess import frames_to_tensor, scale_and_crop
from paddlehub_video.video import read_sampled_frames, sample_tsn_indices

NAME = "videotag_tsn_lstm"


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
        tsn_weights, lstm_weights = self.asset("tsn_weights"), self.asset("lstm_weights")
        labels = read_labels(self.asset("labels"), expected_count=self.config["model"]["num_classes"])
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

    def _read_video(self, path: str) -> np.ndarray:
        """path -> normalised frames `[1, seg_num, 3, crop, crop]` float32."""
        pre = self.config["preprocess"]
        frames = read_sampled_frames(
            path,
            partial(sample_tsn_indices, seg_num=self.config["sampling"]["seg_num"]),
            partial(scale_and_crop, short_size=pre["short_size"], crop_size=pre["crop_size"]),
        )
        return frames_to_tensor(frames, pre["mean"], pre["std"])[np.newaxis]

    def _predict(self, use_gpu: bool):
        tsn_model, lstm_model, _ = self._load_models()
        tsn = self.predictor(tsn_model, use_gpu)
        lstm = self.predictor(lstm_model, use_gpu, use_onednn=False)
        chunk = self.config["runtime"]["frames_per_batch"]

        def predict(video: np.ndarray) -> np.ndarray:
            # Frames are independent in the extractor, so chunking bounds memory without changing results.
            features = np.concatenate(
                [tsn.run({"image": video[:, i : i + chunk]})[0] for i in range(0, video.shape[1], chunk)], axis=1
            )[0]
            return lstm.run({"rgb": features}, lod={"rgb": [[0, features.shape[0]]]})[0][0]

        return predict

    def classify(self, paths: list[str], use_gpu: bool = False, threshold: float = 0.5, top_k: int = 10) -> list[dict]:
        """Tag each video: `[{'path': p, 'prediction': {label: prob, ...}}, ...]`, in input order.

        `top_k` most probable tags, then those with prob >= `threshold`, descending. A video that
        cannot be classified gets `{'path': p, 'prediction': {}, 'error': reason}`.
        """
        paths = validate_paths(paths)
        top_k, threshold = validate_top_k(top_k), validate_threshold(threshold)
        if not paths:
            return []
        labels = self._load_models()[2]
        outcomes = VideoPipeline(self._read_video, self._predict(use_gpu)).run(paths)
        return [result_entry(o.path, o.output, o.error, labels, top_k, threshold) for o in outcomes]

    @runnable
    def run_cmd(self, argvs: list[str]) -> list[dict]:
        """`hub run videotag_tsn_lstm --input_path 1.mp4 [--use_gpu False] [--top_k 10] [--threshold 0.5]`."""
        parser = build_parser(NAME, "Tag short videos with 3396 Chinese labels.", top_k=10, threshold=0.5)
        args = parser.parse_args(argvs)
        paths = input_paths(parser, args)
        return run_reporting_errors(
            NAME,
            lambda: self.classify(paths, args.use_gpu, args.threshold, args.top_k),
            lambda results: [entry["error"] for entry in results if "error" in entry],
        )

    # Public stages of `classify`, for callers that run decoding and inference apart (paddlehub_video.ray_adapter).

    def preprocess(self, path: str) -> np.ndarray:
        """One video -> the float32 tensor `classify` feeds the model; raises if the video cannot be read."""
        return self._read_video(path)

    def predict_fn(self, use_gpu: bool = False) -> Callable[[np.ndarray], np.ndarray]:
        """The model as a function tensor -> 3396 probabilities; fetches and loads it now, once per process."""
        return self._predict(use_gpu)

    def postprocess(self, probs: np.ndarray, top_k: int = 10, threshold: float = 0.5) -> dict[str, float]:
        """Probabilities -> `classify`'s `prediction`: the top_k labels with prob >= threshold, descending."""
        labels = self._load_models()[2]
        return top_k_predictions(probs, labels, validate_top_k(top_k), validate_threshold(threshold))
