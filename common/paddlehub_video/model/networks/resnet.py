"""Bottleneck ResNet-50/101 backbone with the publisher's parameter names (static graph, NCHW).

Names: `conv1_weights` + `bn_conv1_*` for the stem, `<block>_branch2{a,b,c}_weights` and the
projection `<block>_branch1_weights` with `bn<block without "res">_<branch>_*` batch norms.
Block names are `res<stage><letter>`, except res4 of ResNet-101, which is `res4a, res4b1..res4b22`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import paddle.nn.functional as F

from .layers import batch_norm, conv2d, resnet_bn_names

STAGE_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
STAGE_FILTERS = (64, 128, 256, 512)
EXPANSION = 4

# Called as after_stage(stage, x) with stage in 2..5 and x the stage output; returns the new x.
StageHook = Callable[[int, Any], Any] | None


def conv_bn(
    x: Any,
    name: str,
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    act: str | None = None,
) -> Any:
    """Conv without bias (`<name>_weights`) then inference BN (`bn<...>_*`), as in the publisher's ResNet."""
    y = conv2d(x, f"{name}_weights", in_channels, out_channels, kernel_size, stride=stride)
    bn_prefix = "bn_" + name if name == "conv1" else "bn" + name[len("res") :]
    return batch_norm(y, resnet_bn_names(bn_prefix), out_channels, act=act)


def stem(x: Any, in_channels: int = 3) -> Any:
    """conv1 7x7/2 (64 ch) + bn_conv1 + ReLU + max-pool 3x3/2 pad 1."""
    y = conv_bn(x, "conv1", in_channels, 64, 7, stride=2, act="relu")
    return F.max_pool2d(y, kernel_size=3, stride=2, padding=1)


def bottleneck(x: Any, name: str, in_channels: int, filters: int, stride: int) -> Any:
    """1x1 -> 3x3 (carries the stride) -> 1x1 (x4) bottleneck; projection shortcut when shapes change."""
    out_channels = filters * EXPANSION
    y = conv_bn(x, f"{name}_branch2a", in_channels, filters, 1, act="relu")
    y = conv_bn(y, f"{name}_branch2b", filters, filters, 3, stride=stride, act="relu")
    y = conv_bn(y, f"{name}_branch2c", filters, out_channels, 1)
    if in_channels != out_channels or stride != 1:
        shortcut = conv_bn(x, f"{name}_branch1", in_channels, out_channels, 1, stride=stride)
    else:
        shortcut = x
    return F.relu(y + shortcut)


def block_names(depth: int, stage: int) -> list[str]:
    """Publisher's block names of one stage (2..5), e.g. res4a, res4b1, ... for ResNet-101."""
    count = STAGE_DEPTHS[depth][stage - 2]
    if depth >= 101 and stage == 4:
        return [f"res{stage}a"] + [f"res{stage}b{i}" for i in range(1, count)]
    return [f"res{stage}{chr(ord('a') + i)}" for i in range(count)]


def stage_in_channels(stage: int) -> int:
    """Input channels of the first block of a stage (2..5)."""
    return 64 if stage == 2 else STAGE_FILTERS[stage - 3] * EXPANSION


def resnet_stage(x: Any, depth: int, stage: int) -> Any:
    """Run all bottlenecks of one stage (2..5); the first block downsamples except in res2."""
    filters = STAGE_FILTERS[stage - 2]
    in_channels = stage_in_channels(stage)
    for i, name in enumerate(block_names(depth, stage)):
        stride = 2 if i == 0 and stage != 2 else 1
        x = bottleneck(x, name, in_channels, filters, stride)
        in_channels = filters * EXPANSION
    return x


def resnet(x: Any, depth: int = 50, in_channels: int = 3, after_stage: StageHook = None) -> Any:
    """Stem + res2..res5 on NCHW input; returns the res5 map `[N, 2048, h, w]` (no pooling, no fc).

    `after_stage(stage, x)`, if given, is applied to each stage output (StNet inserts its temporal
    blocks after res3 and res4 this way).
    """
    if depth not in STAGE_DEPTHS:
        raise ValueError(f"unsupported ResNet depth {depth}; expected one of {sorted(STAGE_DEPTHS)}")
    x = stem(x, in_channels)
    for stage in (2, 3, 4, 5):
        x = resnet_stage(x, depth, stage)
        if after_stage is not None:
            x = after_stage(stage, x)
    return x
