"""Static-graph building blocks shared by the TSN, AttentionLSTM and StNet builders.

Every parameter is created under its exact legacy (fluid) name so that the publisher's weight
files load by name. Under PIR, `paddle.static.nn.conv2d`/`batch_norm` refuse PIR values, so the
layers below are `paddle.nn.functional` ops applied to parameters created here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import paddle
import paddle.nn.functional as F
from paddle import ParamAttr

IntOrPair = int | Sequence[int]

BN_EPSILON = 1e-5


class BatchNormNames(NamedTuple):
    """The four tensor names of one inference batch norm."""

    scale: str
    offset: str
    mean: str
    variance: str


def resnet_bn_names(prefix: str) -> BatchNormNames:
    """Names used by the publisher's ResNets: `<prefix>_scale/_offset/_mean/_variance`."""
    return BatchNormNames(f"{prefix}_scale", f"{prefix}_offset", f"{prefix}_mean", f"{prefix}_variance")


def auto_bn_names(prefix: str) -> BatchNormNames:
    """Names fluid gave an auto-named batch norm: `.w_0` scale, `.b_0` offset, `.w_1` mean, `.w_2` var."""
    return BatchNormNames(f"{prefix}.w_0", f"{prefix}.b_0", f"{prefix}.w_1", f"{prefix}.w_2")


@contextmanager
def static_mode() -> Iterator[None]:
    """Static mode in the calling thread; the caller's mode comes back on exit.

    Paddle keeps the mode per thread, and `paddle.enable_static()` only switches a thread whose
    dynamic mode it entered itself (the main thread, at import): in any other thread it does
    nothing, so a module first used from a worker thread could not build its programs. Clearing
    the thread's dygraph tracer, which is what static mode is, works in every thread.
    """
    with paddle.base.framework._dygraph_guard(None):
        yield


@contextmanager
def new_program() -> Iterator[tuple[Any, Any]]:
    """Yield a fresh (main, startup) pair as the default programs, in static mode, with fresh names.

    The unique-name guard keeps repeated builds in one process from drifting to `fc1.w_1` etc.
    """
    with static_mode():
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup), paddle.utils.unique_name.guard():
            yield main, startup


def parameter(name: str, shape: Sequence[int], init: float | None = None, trainable: bool = True) -> Any:
    """Create a float32 parameter called exactly `name` in the default main program.

    `init` gives a constant initializer; otherwise Paddle's default (Xavier for weights) applies.
    Real weights are loaded afterwards, the initializer only matters for shape-only runs.
    """
    initializer = None if init is None else paddle.nn.initializer.Constant(init)
    attr = ParamAttr(name=name, initializer=initializer, trainable=trainable)
    return paddle.static.create_parameter(list(shape), "float32", name=name, attr=attr)


def _pair(value: IntOrPair) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    first, second = value
    return int(first), int(second)


def conv2d(
    x: Any,
    weight_name: str,
    in_channels: int,
    out_channels: int,
    kernel_size: IntOrPair,
    stride: IntOrPair = 1,
    padding: IntOrPair | None = None,
    groups: int = 1,
    bias_name: str | None = None,
) -> Any:
    """2-D convolution (NCHW) with weight `[out, in/groups, kh, kw]`; padding defaults to (k-1)//2."""
    kh, kw = _pair(kernel_size)
    if padding is None:
        padding = ((kh - 1) // 2, (kw - 1) // 2)
    weight = parameter(weight_name, [out_channels, in_channels // groups, kh, kw])
    bias = None if bias_name is None else parameter(bias_name, [out_channels], init=0.0)
    return F.conv2d(x, weight, bias=bias, stride=_pair(stride), padding=_pair(padding), groups=groups)


def batch_norm(x: Any, names: BatchNormNames, channels: int, act: str | None = None) -> Any:
    """Inference batch norm over axis 1 (moving statistics, epsilon 1e-5), optionally followed by ReLU."""
    # Parameters are created in the order fluid created them: scale, offset, mean, variance.
    # Neutral initial values keep shape-only runs (no weights loaded) free of NaNs.
    scale = parameter(names.scale, [channels], init=1.0)
    offset = parameter(names.offset, [channels], init=0.0)
    mean = parameter(names.mean, [channels], init=0.0, trainable=False)
    variance = parameter(names.variance, [channels], init=1.0, trainable=False)
    y = F.batch_norm(x, mean, variance, weight=scale, bias=offset, training=False, epsilon=BN_EPSILON)
    return _activate(y, act)


def fc(x: Any, prefix: str, in_features: int, out_features: int, bias: bool = True, act: str | None = None) -> Any:
    """Fully connected layer on a 2-D input: `x @ <prefix>.w_0 [in, out] + <prefix>.b_0 [out]`."""
    weight = parameter(f"{prefix}.w_0", [in_features, out_features])
    y = paddle.matmul(x, weight)
    if bias:
        y = y + parameter(f"{prefix}.b_0", [out_features], init=0.0)
    return _activate(y, act)


def _activate(x: Any, act: str | None) -> Any:
    if act is None:
        return x
    if act == "relu":
        return F.relu(x)
    if act == "tanh":
        return paddle.tanh(x)
    if act == "sigmoid":
        return F.sigmoid(x)
    if act == "softmax":
        return F.softmax(x, axis=-1)
    raise ValueError(f"unknown activation {act!r}")


def feed_values(program: Any, names: Sequence[str]) -> list[Any]:
    """The data Values of `program` called `names`, in that order (for `save_inference_model`)."""
    found = {op.attrs()["name"]: op.result(0) for op in program.global_block().ops if op.name() == "pd_op.data"}
    missing = [name for name in names if name not in found]
    if missing:
        raise KeyError(f"program has no feed called {missing}")
    return [found[name] for name in names]
