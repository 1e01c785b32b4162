"""Preprocessing of paddlehub_video.decode.preprocess, bit-exact against a direct PIL/NumPy reference."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from paddlehub_video.decode.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    center_crop_offsets,
    frames_to_tensor,
    scale_and_crop,
    scale_short_side,
    tensor_batches,
    to_super_images,
)
from paddlehub_video.decode.sampling import sample_stnet_indices, sample_tsn_indices
from paddlehub_video.decode.video import read_sampled_frames

MEAN = np.array(IMAGENET_MEAN, dtype=np.float32).reshape(3, 1, 1)
STD = np.array(IMAGENET_STD, dtype=np.float32).reshape(3, 1, 1)


def noisy_frame(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Noise on a colour gradient: resampling and channel order both change the result."""
    rng = np.random.default_rng(seed)
    gradient = np.linspace(0, 200, width, dtype=np.float32)[None, :, None] + np.array([0, 20, 40])
    noise = rng.integers(0, 56, size=(height, width, 3))
    return (gradient + noise).clip(0, 255).astype(np.uint8)


def reference_tsn(frame: np.ndarray, crop: int) -> np.ndarray:
    """The publisher's VideoTag steps: PIL resize, float32 array, slice crop, CHW / 255, (x - mean) / std."""
    image = Image.fromarray(frame)
    w, h = image.size
    if not ((w <= h and w == 256) or (h <= w and h == 256)):
        image = image.resize((256, 341) if w < h else (341, 256), Image.BILINEAR)
    array = np.array(image).astype(np.float32)
    top, left = int(round((array.shape[0] - crop) / 2)), int(round((array.shape[1] - crop) / 2))
    array = array[top : top + crop, left : left + crop].transpose(2, 0, 1) / 255
    return (array - MEAN) / STD


def reference_stnet(frame: np.ndarray, crop: int) -> np.ndarray:
    """The publisher's StNet steps: the same resize, then PIL crop before the float conversion."""
    image = Image.fromarray(frame)
    w, h = image.size
    if not ((w <= h and w == 256) or (h <= w and h == 256)):
        image = image.resize((256, 341) if w < h else (341, 256), Image.BILINEAR)
    x, y = int(round((image.width - crop) / 2)), int(round((image.height - crop) / 2))
    image = image.crop((x, y, x + crop, y + crop))
    array = np.array(image).astype(np.float32).transpose(2, 0, 1) / 255
    return (array - MEAN) / STD


@pytest.mark.parametrize(
    "size, scaled",
    [
        ((1280, 720), (341, 256)),  # 16:9 squashed to 4:3
        ((720, 1280), (256, 341)),
        ((455, 256), (455, 256)),  # short side already 256: untouched
        ((256, 600), (256, 600)),
        ((256, 256), (256, 256)),
        ((200, 150), (341, 256)),  # upscaled
        ((300, 300), (341, 256)),  # square counts as landscape
    ],
)
def test_scale_short_side_geometry(size: tuple[int, int], scaled: tuple[int, int]) -> None:
    image = Image.fromarray(noisy_frame(*size))
    result = scale_short_side(image, 256)
    assert result.size == scaled
    if scaled == size:
        assert result is image


@pytest.mark.parametrize(
    "width, height, size, offsets",
    [
        (341, 256, 224, (58, 16)),  # 58.5 rounds to even: 58 (Python 2 gave 59)
        (256, 341, 224, (16, 58)),
        (455, 256, 224, (116, 16)),  # 115.5 -> 116
        (256, 256, 224, (16, 16)),
        (341, 256, 256, (42, 0)),  # 42.5 -> 42
        (455, 256, 256, (100, 0)),  # 99.5 -> 100
        (256, 256, 256, (0, 0)),
    ],
)
def test_center_crop_offsets(width: int, height: int, size: int, offsets: tuple[int, int]) -> None:
    assert center_crop_offsets(width, height, size) == offsets


def test_center_crop_offsets_rejects_small_images() -> None:
    with pytest.raises(ValueError):
        center_crop_offsets(200, 300, 224)


SIZES = [(1280, 720), (720, 1280), (455, 256), (200, 150)]


@pytest.mark.parametrize("size", SIZES)
def test_tsn_pipeline_bit_exact(size: tuple[int, int]) -> None:
    frames = [noisy_frame(*size, seed=s) for s in range(2)]
    crops = [scale_and_crop(f, 256, 224) for f in frames]
    assert all(c.shape == (224, 224, 3) and c.dtype == np.uint8 and c.flags.c_contiguous for c in crops)
    tensor = frames_to_tensor(crops)
    expected = np.stack([reference_tsn(f, 224) for f in frames])
    assert tensor.dtype == np.float32 and tensor.flags.c_contiguous
    assert np.array_equal(tensor, expected)


@pytest.mark.parametrize("size", SIZES)
def test_stnet_pipeline_bit_exact(size: tuple[int, int]) -> None:
    frame = noisy_frame(*size, seed=3)
    tensor = frames_to_tensor([scale_and_crop(frame, 256, 256)])
    assert tensor.shape == (1, 3, 256, 256)
    assert np.array_equal(tensor[0], reference_stnet(frame, 256))


def test_frames_to_tensor_custom_mean_std() -> None:
    frames = [noisy_frame(8, 6, seed=s) for s in range(3)]
    mean, std = (0.5, 0.25, 0.0), (0.5, 2.0, 1.0)
    got = frames_to_tensor(frames, mean, std)
    x = np.stack(frames).astype(np.float32).transpose(0, 3, 1, 2) / 255
    expected = (x - np.float32(mean).reshape(3, 1, 1)) / np.float32(std).reshape(3, 1, 1)
    assert got.shape == (3, 3, 6, 8) and np.array_equal(got, expected)


@pytest.mark.parametrize("batch_size", [1, 3, 7, 50])
def test_tensor_batches_equal_one_tensor(batch_size: int) -> None:
    frames = np.stack([noisy_frame(8, 6, seed=s) for s in range(7)])
    batches = list(tensor_batches(frames, batch_size))
    sizes = [min(batch_size, 7 - start) for start in range(0, 7, batch_size)]
    assert [b.shape for b in batches] == [(1, n, 3, 6, 8) for n in sizes]
    assert all(b.dtype == np.float32 for b in batches)
    assert np.array_equal(np.concatenate(batches, axis=1)[0], frames_to_tensor(frames))



@pytest.mark.parametrize("batch_size", [2, 3, 50])
def test_padded_tensor_batches_all_have_one_shape(batch_size: int) -> None:
    """`pad=True`: the last batch is filled with copies of its last frame; the rest is unchanged."""
    frames = np.stack([noisy_frame(8, 6, seed=s) for s in range(7)])
    batches = list(tensor_batches(frames, batch_size, pad=True))
    assert [b.shape for b in batches] == [(1, batch_size, 3, 6, 8)] * -(-7 // batch_size)
    joined = np.concatenate(batches, axis=1)[0]
    expected = frames_to_tensor(frames)
    assert np.array_equal(joined[:7], expected)
    assert all(np.array_equal(copy, expected[-1]) for copy in joined[7:])


def test_super_image_layout() -> None:
    seg_num, seglen = 4, 5
    tensor = np.random.default_rng(0).random((seg_num * seglen, 3, 6, 7), dtype=np.float32)
    supers = to_super_images(tensor, seglen)
    assert supers.shape == (seg_num, 3 * seglen, 6, 7)
    for t in range(seg_num):
        for j in range(seglen):
            for c in range(3):
                assert np.array_equal(supers[t, 3 * j + c], tensor[t * seglen + j, c])


@pytest.mark.parametrize("shape, seglen", [((12, 3, 4, 4), 5), ((10, 1, 4, 4), 5), ((10, 3, 4, 4), 0)])
def test_super_image_rejects_bad_shapes(shape: tuple[int, ...], seglen: int) -> None:
    with pytest.raises(ValueError):
        to_super_images(np.zeros(shape, np.float32), seglen)


def test_decoder_with_transform_end_to_end(portrait_video: Path) -> None:
    """Decoder + scale_and_crop + frames_to_tensor equal the reference applied to every decoded frame."""
    tsn = partial(sample_tsn_indices, seg_num=8)
    raw = read_sampled_frames(portrait_video, tsn, np.copy)
    crops = read_sampled_frames(portrait_video, tsn, partial(scale_and_crop, short_size=256, crop_size=224))
    assert np.array_equal(frames_to_tensor(crops), np.stack([reference_tsn(f, 224) for f in raw]))

    stnet = partial(sample_stnet_indices, seg_num=3, seglen=5)
    crops = read_sampled_frames(portrait_video, stnet, partial(scale_and_crop, short_size=256, crop_size=256))
    supers = to_super_images(frames_to_tensor(crops), 5)
    assert supers.shape == (3, 15, 256, 256)
