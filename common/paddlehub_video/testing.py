"""Seeded random weights in the publisher's exact file format (fluid.save pickles, gzip tars).

For tests and benchmarks: every network's parameters with well-conditioned random values,
reproducible from a seed, written as the publisher's files are, so that the module loads, checks
and converts them as it would the real ones. They say nothing about accuracy.
"""
from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from .model.weights import expected_parameters

# numpy 2 pickles arrays through `numpy._core`; fluid 1.8 files name `numpy.core` (numpy 1.x).
# In protocol 2 the global is the text line pair below, so the old name can be written exactly.
_NEW_GLOBAL = b"cnumpy._core.multiarray\n_reconstruct\n"
_OLD_GLOBAL = b"cnumpy.core.multiarray\n_reconstruct\n"


def random_parameter(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A well-conditioned value for one parameter, chosen by its role in the network."""
    if name.endswith("_branch2c_scale"):  # small last-BN scale keeps deep residual sums bounded
        value = rng.normal(0.2, 0.02, shape)
    elif name.endswith(("_variance", ".w_2")) and len(shape) == 1:
        value = rng.uniform(0.5, 1.5, shape)
    elif name.endswith(("_scale", ".w_0")) and len(shape) == 1:
        value = rng.normal(1.0, 0.1, shape)
    elif name.endswith(("_offset", "_mean", ".w_1", ".b_0")) and len(shape) == 1:
        value = rng.normal(0.0, 0.05, shape)
    elif name == "fc_0.w_0":  # StNet's classifier sees large max-pooled features: keep softmax soft
        value = rng.normal(0.0, 0.1 / np.sqrt(shape[0]), shape)
    elif "lstm" in name:  # recurrent weights and peepholes: small so the gates do not saturate
        value = rng.normal(0.0, 0.02, shape)
    elif len(shape) >= 3:  # conv kernels: He-normal over the fan-in
        fan_in = int(np.prod(shape[1:]))
        value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    else:  # fc [in, out] (and bias rows): Xavier-like
        value = rng.normal(0.0, np.sqrt(1.0 / shape[0]), shape)
    return value.astype(np.float32)


def make_state(network: str, seed: int) -> dict[str, np.ndarray]:
    """Random weights for every parameter of `network`, reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    return {name: random_parameter(name, shape, rng) for name, shape in expected_parameters(network).items()}


def pdparams_bytes(state: dict[str, np.ndarray]) -> bytes:
    """Serialise like fluid.save: a protocol-2 pickle of {name: ndarray}."""
    return pickle.dumps(state, protocol=2).replace(_NEW_GLOBAL, _OLD_GLOBAL)


def write_pdparams(state: dict[str, np.ndarray], path: Path) -> Path:
    """`pdparams_bytes(state)` written to `path` (its folder made if needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pdparams_bytes(state))
    return path


def write_weights_tar(path: Path, members: dict[str, bytes]) -> Path:
    """A gzip-compressed tar (named .tar, as the publisher's) holding `members` by path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
