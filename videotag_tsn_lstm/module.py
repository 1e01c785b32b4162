"""videotag_tsn_lstm: 3396 Chinese short-video tags from TSN (ResNet-101) features and an AttentionLSTM.

The published PaddleHub module, on PaddlePaddle 3: same weights, same numbers, same results format.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import numpy as np
import paddlehub as hub
from paddlehub.module.module import moduleinfo

from paddlehub_video.decode.preprocess import tensor_batches, unique_frames
from paddlehub_video.decode.sampling import sample_tsn_indices
from paddlehub_video.model.inference_model import Program, cached_inference_model
from paddlehub_video.model.networks import attention_lstm, tsn
from paddlehub_video.model.predictor import Predictor
from paddlehub_video.module_base import Defaults, ModelBundle, VideoModule
from paddlehub_video.pipeline import VideoOutcome, validate_paths
from paddlehub_video.timeline import FrameFeatures


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
    NAME = "videotag_tsn_lstm"
    DEFAULTS = Defaults(top_k=10, threshold=0.5, description="Tag short videos with 3396 Chinese labels.")
    WITHOUT_ONEDNN = ("lstm",)

    def load_bundle(self) -> ModelBundle:
        """Fetch weights and labels, convert the weights once: models `tsn` and `lstm`."""
        assets = self.settings.assets
        # Every file first: a failed download or a wrong label file is reported before any conversion.
        tsn_weights, lstm_weights, labels_file = self.assets("tsn_weights", "lstm_weights", "labels")
        labels = self.read_label_file(labels_file)
        tsn_program = Program("videotag_tsn", tsn.PROGRAM_VERSION, tsn.build_tsn_program,
                              {"image_size": self.settings.preprocess.crop_size})
        lstm_program = Program("videotag_attention_lstm", attention_lstm.PROGRAM_VERSION,
                               attention_lstm.build_attention_lstm_program,
                               {"num_classes": self.settings.model.num_classes})
        models = {
            "tsn": cached_inference_model(tsn_program, {assets["tsn_weights"].network: tsn_weights}),
            "lstm": cached_inference_model(lstm_program, {assets["lstm_weights"].network: lstm_weights}),
        }
        return ModelBundle(models, labels)

    def sampling(self) -> Callable[[int], list[int]]:
        """Frame count -> the indices of the `seg_num` TSN frames (the publisher's formula)."""
        return partial(sample_tsn_indices, seg_num=self.settings.sampling.seg_num)

    def forward(self, frames: np.ndarray, predictors: dict[str, Predictor]) -> np.ndarray:
        """Frames -> the 3396 tag probabilities."""
        return self.run_networks(frames, predictors).probabilities

    def run_networks(
        self, frames: np.ndarray, predictors: dict[str, Predictor], dedup: bool = True
    ) -> VideoTagOutputs:
        """Frames -> their VideoTagOutputs: the one inference path of classify and extract_features.

        `dedup`: TSN sees each distinct frame once (a clip shorter than seg_num is sampled
        cyclically); its features are then copied to every place the frame was sampled.
        """
        features = self.frame_features(frames, predictors["tsn"], dedup)
        probabilities, pooled = self.attention_lstm(features, predictors["lstm"])
        return VideoTagOutputs(features, probabilities, pooled)

    def frame_features(self, frames: np.ndarray, tsn: Predictor, dedup: bool = True) -> np.ndarray:
        """Frames -> TSN features `[len(frames), 2048]`, each distinct frame (byte for byte) through TSN once."""
        unique, inverse = unique_frames(frames) if dedup else (frames, np.arange(len(frames)))
        return self.tsn_features(unique, tsn)[inverse]

    def attention_lstm(self, features: np.ndarray, lstm: Predictor) -> tuple[np.ndarray, np.ndarray]:
        """TSN features `[T, 2048]` -> (the probabilities `[num_classes]`, the pooled vector `[1024]`)."""
        # The program's fetch order (networks/attention_lstm.py): probabilities, then the pooled vector.
        probabilities, pooled = lstm.run({"rgb": features}, lod={"rgb": [[0, features.shape[0]]]})
        return probabilities[0], pooled[0]

    def timeline_model(self, predictors: dict[str, Predictor]) -> FrameFeatures:
        """TSN sees each frame alone: each distinct frame of a timeline goes through it once, whatever the
        windows' overlap; the AttentionLSTM runs per window on its features (`timeline.FrameFeatures`)."""
        return FrameFeatures(partial(self.frame_features, tsn=predictors["tsn"]),
                             lambda features: self.attention_lstm(features, predictors["lstm"])[0])

    def tsn_features(self, frames: np.ndarray, tsn: Predictor) -> np.ndarray:
        """Frames -> TSN features `[len(frames), 2048]`."""
        pre = self.settings.preprocess
        # Frames are independent in the extractor, so running a few at a time (or each distinct
        # frame once) bounds memory and time without changing results. Every run gets the same
        # shape (the last batch padded): oneDNN keeps a reordered copy of the 170 MB of weights for
        # each input shape it meets, and a last batch of one frame cost 170 MiB more at the peak.
        batches = tensor_batches(frames, self.settings.runtime.frames_per_batch, pre.mean, pre.std, pad=True)
        features = np.concatenate([tsn.run({"image": batch})[0] for batch in batches], axis=1)[0]
        return features[: len(frames)]

    def extract_features(self, paths: list[str], use_gpu: bool = False) -> list[dict]:
        """Features of each video for your own classifier or search, in input order.

        `[{'path': p, 'tsn_features': [seg_num, 2048] float32, 'pooled_feature': [1024] float32}, ...]`;
        a video that cannot be read gets `{'path': p, 'error': reason}`, the reason classify gives.
        """
        paths = validate_paths(paths)
        if not paths:
            return []
        return [features_entry(o) for o in self.outcomes(paths, use_gpu, self.run_networks)]
