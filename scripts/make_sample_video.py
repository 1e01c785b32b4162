"""Write a small synthetic sample video (moving shapes over a gradient) for the README demo.

Usage: python scripts/make_sample_video.py OUT.mp4 [--seconds 6] [--size 480x360] [--fps 25]
"""
import argparse
from pathlib import Path

import cv2
import numpy as np


def make_frame(index: int, width: int, height: int) -> np.ndarray:
    """One BGR frame: a colour gradient with a ball that moves and a bar that sweeps."""
    x = np.linspace(0, 255, width, dtype=np.float32)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    frame = np.stack([np.broadcast_to(x, (height, width)), np.broadcast_to(y, (height, width)),
                      np.full((height, width), (index * 3) % 256, np.float32)], axis=-1).astype(np.uint8)
    cx = int(width / 2 + width / 3 * np.cos(index / 10))
    cy = int(height / 2 + height / 3 * np.sin(index / 10))
    cv2.circle(frame, (cx, cy), height // 8, (255, 255, 255), -1)
    bar = (index * 7) % width
    cv2.rectangle(frame, (bar, 0), (bar + width // 20, height), (0, 0, 255), -1)
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--size", default="480x360")
    parser.add_argument("--fps", type=int, default=25)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(args.out), cv2.VideoWriter_fourcc(*"mp4v"), args.fps, (width, height))
    if not writer.isOpened():
        raise SystemExit(f"cannot write {args.out}: OpenCV has no mp4v encoder")
    for index in range(int(args.seconds * args.fps)):
        writer.write(make_frame(index, width, height))
    writer.release()
    print(f"wrote {args.out} ({int(args.seconds * args.fps)} frames, {width}x{height})")


if __name__ == "__main__":
    main()
