"""VideoTag AttentionLSTM classifier (bidirectional peephole LSTM + attention pooling), one video per run.

Inference program built by `build_attention_lstm_program()`:
- feed `rgb`: float32 `[T, 2048]`, the T per-frame TSN features of ONE video (T = 300 upstream,
  any T >= 1 works). It is a LoD input: the legacy LSTM kernel reads the sequence boundaries
  from its LoD and raises "Only support one level sequence now" without one.
  With a Paddle Inference predictor, call `handle.set_lod([[0, T]])` on the `rgb` input handle
  after `copy_from_cpu` on EVERY run (reshape/copy resets it).
  With `paddle.static.Executor`, feed a tensor made by `lod_tensor(features)` and pass
  `return_numpy=False` (then `np.array(...)` the result).
- fetches, in this order: sigmoid probabilities `[1, num_classes]`, then the attention-pooled
  vector `[1, 2 * lstm_size]` (= `[1, 1024]`: the video's embedding, the fc head's input). Under PIR
  the outputs are named `fetch_name_0`, `fetch_name_1`; a predictor returns them in that order.
Softmax attention and sum pooling run over all T rows, so never batch several videos in one feed.
Export with `paddle.static.save_inference_model(prefix, feed_values(main, ["rgb"]), fetches, exe,
program=main)` (`feed_values` from `.layers`).

LoD caveat: the LoD must reach the LSTM through the ops before it. With oneDNN on (the Config
default), a bias-free `matmul + tanh` fusion drops it; the graph here (fc WITH bias + tanh, then
plain matmul) keeps it, and tests/test_networks.py checks the predictor with oneDNN on and off.

The LSTM is fluid's `dynamic_lstm` (kernel `paddle._C_ops.lstm`): gate blocks ordered c~, i, f, o;
weight `[D, 4D]`; bias `[1, 7D]` = 4D gate biases then peepholes w_ic, w_fc, w_oc; the output
gate peeps at the NEW cell. Fluid's inference dropout (`downgrade_in_infer`) scales by 0.5.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import paddle
import paddle.nn.functional as F

from .layers import fc, new_program, parameter

# Bump when build_attention_lstm_program changes what it computes (converted models are cached per
# version). 2: it also fetches the attention-pooled vector.
PROGRAM_VERSION = 2
FEATURE_DIM = 2048
EMBEDDING_SIZE = 1024
LSTM_SIZE = 512
NUM_CLASSES = 3396
DROPOUT_KEEP = 0.5  # fluid dropout p=0.5 in `downgrade_in_infer` mode multiplies by 1 - p at inference


def peephole_lstm(projection: Any, prefix: str, hidden_size: int, is_reverse: bool = False) -> Any:
    """Fluid `dynamic_lstm` on a LoD `[T, 4D]` projection; returns the hidden states `[T, D]`.

    Creates `<prefix>.w_0` `[D, 4D]` and `<prefix>.b_0` `[1, 7D]`; h and c start at zero.
    """
    weight = parameter(f"{prefix}.w_0", [hidden_size, 4 * hidden_size])
    bias = parameter(f"{prefix}.b_0", [1, 7 * hidden_size], init=0.0)
    # Positional arguments: input, h0, c0, weight, bias, use_peepholes, is_reverse, is_test,
    # gate_activation, cell_activation, candidate_activation.
    hidden, _cell = paddle._C_ops.lstm(
        projection, None, None, weight, bias, True, is_reverse, True, "sigmoid", "tanh", "tanh"
    )
    return hidden


def attention_pooled(
    features: Any, feature_dim: int = FEATURE_DIM, embedding_size: int = EMBEDDING_SIZE, lstm_size: int = LSTM_SIZE
) -> Any:
    """LoD `[T, feature_dim]` features of one video -> attention-pooled LSTM states `[1, 2 * lstm_size]`."""
    embedded = fc(features, "rgb_fc", feature_dim, embedding_size, act="tanh")
    forward_in = fc(embedded, "rgb_fc_forward", embedding_size, 4 * lstm_size, bias=False)
    forward = peephole_lstm(forward_in, "rgb_lstm_forward", lstm_size)
    backward_in = fc(embedded, "rgb_fc_backward", embedding_size, 4 * lstm_size, bias=False)
    backward = peephole_lstm(backward_in, "rgb_lstm_backward", lstm_size, is_reverse=True)

    states = paddle.concat([forward, backward], axis=1) * DROPOUT_KEEP
    # One sequence per run, so fluid's sequence_softmax / sequence_pool(sum) are plain axis-0 ops.
    scores = fc(states, "rgb_weight", 2 * lstm_size, 1, bias=False)
    weights = F.softmax(scores, axis=0)
    return paddle.sum(states * weights, axis=0, keepdim=True)


def tag_head(pooled: Any, num_classes: int = NUM_CLASSES, lstm_size: int = LSTM_SIZE) -> Any:
    """Attention-pooled vector `[1, 2 * lstm_size]` -> sigmoid probabilities `[1, num_classes]`."""
    hidden = fc(pooled, "fc1", 2 * lstm_size, 8192, act="relu")
    hidden = fc(hidden, "fc2", 8192, 4096, act="tanh")
    logits = fc(hidden, "output", 4096, num_classes)
    return F.sigmoid(logits)


def build_attention_lstm_program(
    num_classes: int = NUM_CLASSES, feature_dim: int = FEATURE_DIM
) -> tuple[Any, Any, list[str], list[Any]]:
    """Build the AttentionLSTM inference program: (main, startup, ["rgb"], [probabilities, pooled])."""
    with new_program() as (main, startup):
        rgb = paddle.static.data("rgb", [-1, feature_dim], "float32", lod_level=1)
        pooled = attention_pooled(rgb, feature_dim=feature_dim)
        probabilities = tag_head(pooled, num_classes=num_classes)
    # Probabilities first: callers that read output 0 keep getting them.
    return main, startup, ["rgb"], [probabilities, pooled]


def lod_tensor(features: np.ndarray) -> Any:
    """Wrap a `[T, D]` array as a one-sequence LoD tensor for `paddle.static.Executor` feeds."""
    tensor = paddle.base.core.DenseTensor()
    tensor.set(np.ascontiguousarray(features, dtype=np.float32), paddle.CPUPlace())
    tensor.set_recursive_sequence_lengths([[int(features.shape[0])]])
    return tensor
