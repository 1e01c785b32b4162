"""VideoTag TSN feature extractor: ResNet-101 + global average pool, one 2048-d vector per frame.

Inference program: feed `image` float32 `[B, T, 3, S, S]` (B and T dynamic, S = 224 upstream),
fetch one output `[B, T, 2048]`. No fc: the per-frame features go to the AttentionLSTM.
"""

from __future__ import annotations

from typing import Any

import paddle
import paddle.nn.functional as F

from .layers import new_program
from .resnet import resnet

FEATURE_DIM = 2048
# Bump when build_tsn_program changes what it computes: converted models are cached per version.
PROGRAM_VERSION = 1
TSN_DEPTH = 101  # Hard-coded upstream, whatever the config file says.


def tsn_features(image: Any) -> Any:
    """`[B, T, 3, H, W]` frames -> `[B, T, 2048]` ResNet-101 pooled features."""
    dims = paddle.shape(image)
    channels, height, width = image.shape[2:]
    frames = paddle.reshape(image, [-1, channels, height, width])
    maps = resnet(frames, depth=TSN_DEPTH, in_channels=3)
    pooled = F.adaptive_avg_pool2d(maps, 1)
    return paddle.reshape(pooled, [dims[0], dims[1], FEATURE_DIM])


def build_tsn_program(image_size: int = 224) -> tuple[Any, Any, list[str], list[Any]]:
    """Build the TSN inference program: returns (main, startup, ["image"], [features])."""
    with new_program() as (main, startup):
        image = paddle.static.data("image", [-1, -1, 3, image_size, image_size], "float32")
        features = tsn_features(image)
    return main, startup, ["image"], [features]
