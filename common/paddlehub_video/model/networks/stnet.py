"""StNet (ResNet-50 on 15-channel super-images + temporal blocks + temporal Xception), Kinetics-400.

Inference program built by `build_stnet_program(seg_num, image_size)`: feed `image` float32
`[B, seg_num, 15, S, S]` (upstream: seg_num 25, S 256; channel 3j+c = frame j, colour c), fetch
softmax probabilities `[B, 400]`. seg_num and S are baked into the graph by the temporal reshapes.

With `distinct_windows=True` the program runs each distinct window once through the per-window
layers (stem, res2, res3: about half the FLOPs): feed `windows` float32 `[N, 15, S, S]` (the
distinct super-images) and `window_index` int64 `[B * seg_num]` (which of them each segment is);
the res3 maps are gathered to the B * seg_num segments before the first temporal block, so what
follows, and the probabilities, are those of feeding every segment.

The module runs the same network as two programs (bit for bit the same probabilities):
`build_stnet_window_program` (stem to res3, windows independent, run one at a time to bound memory)
and `build_stnet_temporal_program` (the gather, then the rest). For `classify_timeline(...,
context="video")`, `build_stnet_sequence_program` takes the res3 maps of one sequence of any length
through the rest, giving `features` `[T, 1024]`, each position's output of the Xception head before
the max over time, the temporal convolutions padded with zeros at the sequence's ends only (a
position depends on the segments within SEQUENCE_HALO of it); `build_stnet_head_program(seg_num)` is
what follows: feed `features` `[B, seg_num, 1024]`, fetch the probabilities of the max over the
seg_num positions.

The auto-named upstream tensors (`conv3d_0/1`, `batch_norm_24/44`, `xception_*`, `fc_0`) are
created here under exactly those names.
"""

from __future__ import annotations

from typing import Any

import paddle
import paddle.nn.functional as F

from .layers import auto_bn_names, batch_norm, conv2d, fc, new_program, parameter
from .resnet import resnet_stage, stem

# What a builder returns: (main program, startup program, feed names, fetch values).
StaticProgram = tuple[Any, Any, list[str], list[Any]]
# Bump when build_stnet_program changes what it computes: converted models are cached per version.
PROGRAM_VERSION = 2
# The same for build_stnet_sequence_program and build_stnet_head_program.
SEQUENCE_VERSION = 3
SEG_NUM = 25
SEG_LEN = 5
IMAGE_SIZE = 256
NUM_CLASSES = 400
STNET_DEPTH = 50

# (conv3d name, batch_norm name, channels) of the temporal block after res3 and after res4.
TEMPORAL_BLOCKS = {3: ("conv3d_0", "batch_norm_24", 512), 4: ("conv3d_1", "batch_norm_44", 1024)}
FEATURE_SIZE = 1024
# Segments on each side a position's features depend on: one per temporal convolution of kernel 3
# on the way (the conv3d after res3 and after res4, the Xception head's two depthwise convolutions);
# every other layer sees one segment alone.
SEQUENCE_HALO = 4


def clip_shape(seg_num: int | None, *rest: int) -> list[int]:
    """`[B, seg_num, *rest]` for batches of seg_num segments, `[1, T, *rest]` for one sequence (seg_num None)."""
    return [-1, seg_num, *rest] if seg_num else [1, -1, *rest]


def temporal_block(x: Any, seg_num: int | None, channels: int, conv_name: str, bn_name: str) -> Any:
    """`[B*T, C, h, w]` -> same shape: conv3d (3,1,1) with bias -> ReLU -> BN -> + input, over time
    (over each seg_num segments, or over all of them when seg_num is None)."""
    height, width = x.shape[2], x.shape[3]
    if height < 0 or width < 0:
        raise ValueError("temporal_block needs static spatial sizes (build with a fixed image size)")
    clip = paddle.reshape(x, clip_shape(seg_num, channels, height, width))
    clip = paddle.transpose(clip, [0, 2, 1, 3, 4])  # [B, C, T, h, w]
    weight = parameter(f"{conv_name}.w_0", [channels, channels, 3, 1, 1])
    bias = parameter(f"{conv_name}.b_0", [channels], init=0.0)
    y = F.relu(F.conv3d(clip, weight, bias=bias, padding=(1, 0, 0)))
    y = batch_norm(y, auto_bn_names(bn_name), channels) + clip
    y = paddle.transpose(y, [0, 2, 1, 3, 4])
    return paddle.reshape(y, [-1, channels, height, width])


def depthwise_temporal_conv(x: Any, prefix: str, channels: int) -> Any:
    """Per-channel (3, 1) convolution over time with bias: `<prefix>.w_0` [C, 1, 3, 1], `<prefix>.b_0`."""
    return conv2d(x, f"{prefix}.w_0", channels, channels, (3, 1), padding=(1, 0), groups=channels,
                  bias_name=f"{prefix}.b_0")


def xception_head(x: Any, in_channels: int = 2048, out_channels: int = 1024) -> Any:
    """Temporal Xception block on `[B, C_in, T, 1]` -> `[B, C_out, T, 1]` (`xception_*` parameters)."""
    normed = batch_norm(x, auto_bn_names("xception_bn"), in_channels)
    # Branch A: separable temporal convolution twice (depthwise (3,1) then pointwise 1x1).
    a = depthwise_temporal_conv(normed, "xception_att_conv", in_channels)
    a = conv2d(a, "xception_att_2.w_0", in_channels, out_channels, 1, bias_name="xception_att_2.b_0")
    a = batch_norm(a, auto_bn_names("xception_bndw"), out_channels, act="relu")
    a = depthwise_temporal_conv(a, "xception_att1", out_channels)
    a = conv2d(a, "xception_att1_2.w_0", out_channels, out_channels, 1, bias_name="xception_att1_2.b_0")
    # Branch B: pointwise shortcut on the same normalised input.
    b = conv2d(normed, "xception_dw.w_0", in_channels, out_channels, 1, bias_name="xception_dw.b_0")
    return batch_norm(a + b, auto_bn_names("xception_bn2"), out_channels, act="relu")


def window_layers(windows: Any) -> Any:
    """The layers that see one window alone: `[N, 15, S, S]` super-images -> res3 maps `[N, 512, S/8, S/8]`."""
    return resnet_stage(resnet_stage(stem(windows, windows.shape[1]), STNET_DEPTH, 2), STNET_DEPTH, 3)


def temporal_features(maps: Any, seg_num: int | None, window_index: Any = None) -> Any:
    """res3 maps of every segment `[B * seg_num, 512, h, w]` -> `[B, 1024, seg_num, 1]`: the temporal blocks,
    res4, res5 and the Xception head, before the max over time. seg_num None: one sequence of any length
    (B = 1). With `window_index` (int64 `[B * seg_num]`), `maps` are the distinct windows', and each
    segment takes its window's."""
    if window_index is not None:
        maps = paddle.gather(maps, window_index)  # distinct windows -> every segment, before time mixes them
    x = temporal_block(maps, seg_num, *_temporal_names(3))
    x = temporal_block(resnet_stage(x, STNET_DEPTH, 4), seg_num, *_temporal_names(4))
    return temporal_head(resnet_stage(x, STNET_DEPTH, 5), seg_num)


def temporal_head(maps: Any, seg_num: int | None) -> Any:
    """res5 maps `[B*T, 2048, h, w]` -> `[B, 1024, T, 1]`: average pooling, then the Xception head over time."""
    pooled = F.adaptive_avg_pool2d(maps, 1)  # [B*T, 2048, 1, 1]
    sequence = paddle.reshape(pooled, clip_shape(seg_num, 2048, 1))
    sequence = paddle.transpose(sequence, [0, 2, 1, 3])  # [B, 2048, T, 1]
    return xception_head(sequence, out_channels=FEATURE_SIZE)


def temporal_layers(maps: Any, seg_num: int = SEG_NUM, num_classes: int = NUM_CLASSES, window_index: Any = None) -> Any:
    """res3 maps (as `temporal_features` takes them) -> softmax probabilities `[B, num_classes]`."""
    temporal = temporal_features(maps, seg_num, window_index)
    feature = paddle.max(temporal, axis=[2, 3])  # max over the whole (T, 1) extent -> [B, 1024]
    return fc(feature, "fc_0", FEATURE_SIZE, num_classes, act="softmax")


def _temporal_names(stage: int) -> tuple[int, str, str]:
    """temporal_block's (channels, conv name, bn name) after `stage`."""
    conv_name, bn_name, channels = TEMPORAL_BLOCKS[stage]
    return channels, conv_name, bn_name


def stnet(image: Any, seg_num: int = SEG_NUM, num_classes: int = NUM_CLASSES, window_index: Any = None) -> Any:
    """`[B, seg_num, 15, S, S]` super-images -> softmax probabilities `[B, num_classes]`.

    With `window_index` (int64 `[B * seg_num]`), `image` is `[N, 15, S, S]` distinct windows instead:
    segment i is window `window_index[i]`, taken after res3 (the layers that see one window alone).
    """
    channels, height, width = image.shape[-3:]
    frames = image if window_index is not None else paddle.reshape(image, [-1, channels, height, width])
    return temporal_layers(window_layers(frames), seg_num, num_classes, window_index)


def build_stnet_program(
    seg_num: int = SEG_NUM,
    image_size: int = IMAGE_SIZE,
    num_classes: int = NUM_CLASSES,
    distinct_windows: bool = False,
) -> StaticProgram:
    """Build the StNet inference program: returns (main, startup, feed names, [probabilities]).

    Feeds `["image"]`, or with `distinct_windows` `["windows", "window_index"]` (module docstring).
    """
    shape = [3 * SEG_LEN, image_size, image_size]
    with new_program() as (main, startup):
        if distinct_windows:
            feeds = ["windows", "window_index"]
            windows = paddle.static.data("windows", [-1, *shape], "float32")
            window_index = paddle.static.data("window_index", [-1], "int64")
            probabilities = stnet(windows, seg_num=seg_num, num_classes=num_classes, window_index=window_index)
        else:
            feeds = ["image"]
            image = paddle.static.data("image", [-1, seg_num, *shape], "float32")
            probabilities = stnet(image, seg_num=seg_num, num_classes=num_classes)
    return main, startup, feeds, [probabilities]


def res3_size(image_size: int) -> int:
    """Height (and width) of the res3 maps of an `image_size` input: conv1 /2, max-pool /2, res3 /2."""
    size = image_size
    for kernel, padding in ((7, 3), (3, 1), (3, 1)):
        size = (size + 2 * padding - kernel) // 2 + 1
    return size


def build_stnet_window_program(image_size: int = IMAGE_SIZE) -> StaticProgram:
    """StNet's per-window layers alone (`window_layers`): feed `windows` float32 `[N, 15, S, S]`, fetch
    the res3 maps `[N, 512, S/8, S/8]`. Windows are independent here, so they can run a few at a time."""
    with new_program() as (main, startup):
        windows = paddle.static.data("windows", [-1, 3 * SEG_LEN, image_size, image_size], "float32")
        maps = window_layers(windows)
    return main, startup, ["windows"], [maps]


def build_stnet_temporal_program(
    seg_num: int = SEG_NUM, image_size: int = IMAGE_SIZE, num_classes: int = NUM_CLASSES
) -> StaticProgram:
    """The rest of StNet (`temporal_layers`): feed `maps` float32 `[N, 512, S/8, S/8]` (the res3 maps of
    the distinct windows) and `window_index` int64 `[B * seg_num]`, fetch probabilities `[B, num_classes]`."""
    size = res3_size(image_size)
    with new_program() as (main, startup):
        maps = paddle.static.data("maps", [-1, TEMPORAL_BLOCKS[3][2], size, size], "float32")
        window_index = paddle.static.data("window_index", [-1], "int64")
        probabilities = temporal_layers(maps, seg_num, num_classes, window_index)
    return main, startup, ["maps", "window_index"], [probabilities]


def build_stnet_sequence_program(image_size: int = IMAGE_SIZE) -> StaticProgram:
    """What follows res3 over one sequence (module docstring): feed the res3 maps `maps` `[T, 512, S/8, S/8]`
    of T consecutive segments (`build_stnet_window_program` makes them), fetch `features` `[T, 1024]`."""
    size = res3_size(image_size)
    with new_program() as (main, startup):
        maps = paddle.static.data("maps", [-1, TEMPORAL_BLOCKS[3][2], size, size], "float32")
        temporal = temporal_features(maps, None)  # [1, 1024, T, 1]
        features = paddle.reshape(paddle.transpose(temporal, [0, 2, 1, 3]), [-1, FEATURE_SIZE])
    return main, startup, ["maps"], [features]


def build_stnet_head_program(seg_num: int = SEG_NUM, num_classes: int = NUM_CLASSES) -> StaticProgram:
    """What StNet does after the sequence layers: feed `features` `[B, seg_num, 1024]`, fetch the softmax
    probabilities `[B, num_classes]` of their max over the seg_num positions."""
    with new_program() as (main, startup):
        features = paddle.static.data("features", [-1, seg_num, FEATURE_SIZE], "float32")
        probabilities = fc(paddle.max(features, axis=1), "fc_0", FEATURE_SIZE, num_classes, act="softmax")
    return main, startup, ["features"], [probabilities]
