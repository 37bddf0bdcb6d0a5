"""Small real media for tests: an MJPG video and a folder of PNGs whose frames are numbered.

Frame i has its top-left quadrant at grey level marker_level(i), which survives MJPG
compression and resizing, so a test can tell which frame it got with frame_number().
The rest of the frame holds a moving square, so frames are images, not flat fills.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

MARKER_BASE = 20
MARKER_STEP = 12
MAX_FRAMES = (255 - MARKER_BASE) // MARKER_STEP


def marker_level(index: int) -> int:
    """Grey level of the top-left quadrant of frame `index`."""
    if not 0 <= index <= MAX_FRAMES:
        raise ValueError(f'frame index must be in 0..{MAX_FRAMES}, got {index}')
    return MARKER_BASE + MARKER_STEP * index


def numbered_frame(index: int, width: int, height: int) -> np.ndarray:
    """A BGR frame whose top-left quadrant encodes `index` (see frame_number)."""
    frame = np.full((height, width, 3), 40, np.uint8)
    frame[:height // 2, :width // 2] = marker_level(index)
    side = max(2, min(width, height) // 6)
    x = width // 2 + (index * side // 2) % max(1, width // 2 - side)
    cv2.rectangle(frame, (x, height - 2 * side), (x + side, height - side), (0, 200, 255), -1)
    return frame


def frame_number(frame: np.ndarray) -> int:
    """The index numbered_frame encoded in `frame` (any size, after compression)."""
    height, width = frame.shape[:2]
    # The centre of the marker quadrant, away from the edges JPEG blurs.
    level = float(frame[height // 8:3 * height // 8, width // 8:3 * width // 8].mean())
    return round((level - MARKER_BASE) / MARKER_STEP)


def write_video(folder: Path, frames: int = 10, width: int = 320, height: int = 240,
                fps: float = 15.0, name: str = 'clip.avi') -> Path:
    """An MJPG AVI of `frames` numbered frames; returns its path."""
    path = Path(folder) / name
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f'OpenCV cannot write an MJPG video to {path}')
    try:
        for index in range(frames):
            writer.write(numbered_frame(index, width, height))
    finally:
        writer.release()
    return path


def write_image_folder(folder: Path, frames: int = 6, width: int = 320, height: int = 240,
                       name: str = 'images') -> Path:
    """A folder of numbered PNGs (frame_000.png, ...); returns the folder."""
    target = Path(folder) / name
    target.mkdir(parents=True, exist_ok=True)
    for index in range(frames):
        if not cv2.imwrite(str(target / f'frame_{index:03d}.png'),
                           numbered_frame(index, width, height)):
            raise RuntimeError(f'OpenCV cannot write PNGs to {target}')
    return target
