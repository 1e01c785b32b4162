"""Frame preprocessing, bit-exact with the publisher: PIL resize, Python-3-rounded centre crop, ImageNet norm.

The decoder applies `scale_and_crop` to each sampled frame as it is decoded, so only uint8 crops are
held; `frames_to_tensor` builds the float32 network input from them, and `tensor_batches` does so a
few frames at a time, so that a long sequence is never held in float32 as a whole (4x its uint8 size).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

import numpy as np
from PIL import Image

from .. import progress

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def scale_short_side(image: Image.Image, short_size: int = 256) -> Image.Image:
    """Publisher's "group_scale": keep if the short side is `short_size`, else force 4:3 with PIL bilinear."""
    width, height = image.size
    if (width <= height and width == short_size) or (height <= width and height == short_size):
        return image
    # Fixed 4:3 geometry whatever the source aspect ratio (a 16:9 frame is squashed): what the
    # weights were trained and evaluated with. PIL's bilinear is anti-aliased, unlike cv2's.
    long_size = int(short_size * 4 / 3)
    size = (short_size, long_size) if width < height else (long_size, short_size)
    return image.resize(size, Image.BILINEAR)


def center_crop_offsets(width: int, height: int, size: int) -> tuple[int, int]:
    """(x, y) of a centred `size` square; Python 3 banker's rounding, as the publisher (341 -> 58)."""
    if width < size or height < size:
        raise ValueError(f"cannot crop {size}x{size} from a {width}x{height} image")
    return int(round((width - size) / 2)), int(round((height - size) / 2))


def scale_and_crop(frame: np.ndarray, short_size: int = 256, crop_size: int = 224) -> np.ndarray:
    """RGB uint8 HWC frame -> scale_short_side -> centre crop -> contiguous uint8 [crop, crop, 3]."""
    scaled = np.asarray(scale_short_side(Image.fromarray(frame), short_size))
    x, y = center_crop_offsets(scaled.shape[1], scaled.shape[0], crop_size)
    # Cropping uint8 equals the publisher's crop after float conversion; the copy frees the
    # full scaled image instead of keeping it alive behind a view.
    return np.ascontiguousarray(scaled[y : y + crop_size, x : x + crop_size])


def frames_to_tensor(
    frames: Sequence[np.ndarray],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """Stack RGB uint8 HWC frames into float32 [N, 3, H, W]: x / 255, then (x - mean) / std per channel."""
    # The publisher's float32 order of operations (divide by 255, subtract, divide), so the
    # rounding of every element matches it exactly.
    tensor = np.stack(frames).transpose(0, 3, 1, 2).astype(np.float32, order="C")
    tensor /= np.float32(255)
    tensor -= np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    tensor /= np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    return tensor


def tensor_batches(
    frames: np.ndarray,
    batch_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    pad: bool = False,
) -> Iterator[np.ndarray]:
    """`frames_to_tensor` of each run of `batch_size` frames of uint8 `[N, H, W, 3]`, as `[1, b, 3, H, W]`.

    `pad`: a last batch of fewer frames is filled up to `batch_size` with copies of its last frame, so
    that every batch has the same shape (the caller drops what the copies give). Each batch is
    reported to `progress.current()` as done when the next one is asked for.
    """
    report = progress.current()
    for start in range(0, len(frames), batch_size):
        batch = frames[start : start + batch_size]
        if pad and len(batch) < batch_size:
            batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - len(batch), axis=0)])
        yield frames_to_tensor(batch, mean, std)[np.newaxis]
        report.network(min(start + batch_size, len(frames)), len(frames))


def to_super_images(tensor: np.ndarray, seglen: int) -> np.ndarray:
    """StNet super-images: [T*L, 3, H, W] -> [T, 3L, H, W]; channel 3j + c = frame j of a window, colour c."""
    frames, channels, height, width = tensor.shape
    if channels != 3 or seglen < 1 or frames % seglen:
        raise ValueError(f"cannot group a {tuple(tensor.shape)} tensor into windows of {seglen} RGB frames")
    return tensor.reshape(frames // seglen, 3 * seglen, height, width)


def unique_frames(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(unique, inverse)` with `unique[inverse]` equal to `frames`, first occurrences in order.

    A clip shorter than the sample count is sampled cyclically (150 frames give each frame twice):
    a network that treats frames independently need only see each distinct frame once. Frames are
    matched by a digest, then compared in full, so equal means equal byte for byte. Any array works,
    its items taken along the first axis (`unique_windows` passes windows of frames).
    """
    first_of: dict[bytes, list[int]] = {}
    keep: list[int] = []
    inverse = np.empty(len(frames), dtype=np.int64)
    for i, frame in enumerate(frames):
        candidates = first_of.setdefault(hashlib.blake2b(frame.tobytes(), digest_size=16).digest(), [])
        slot = next((k for k in candidates if np.array_equal(frames[keep[k]], frame)), None)
        if slot is None:
            slot = len(keep)
            keep.append(i)
            candidates.append(slot)
        inverse[i] = slot
    if len(keep) == len(frames):  # all distinct: no 45 MB copy
        return frames, inverse
    return frames[keep], inverse


def unique_windows(frames: np.ndarray, seglen: int) -> tuple[np.ndarray, np.ndarray]:
    """StNet's windows of `seglen` frames each (`[T*L, H, W, 3]`), each distinct one once: `(frames of the
    distinct windows [N*L, H, W, 3], inverse [T])`, window t being distinct window `inverse[t]`.

    A window repeats when its frames repeat byte for byte in the same order: in a clip of N < seg_num
    frames (window i + N takes the indices of window i), or a still picture.
    """
    if seglen < 1 or len(frames) % seglen:
        raise ValueError(f"cannot group {len(frames)} frames into windows of {seglen}")
    unique, inverse = unique_frames(frames.reshape(len(frames) // seglen, seglen, *frames.shape[1:]))
    return unique.reshape(-1, *frames.shape[1:]), inverse
