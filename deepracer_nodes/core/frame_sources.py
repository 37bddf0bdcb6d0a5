"""Where camera frames come from: a V4L2 camera, a video file, an image folder or a pattern.

Plain Python (OpenCV, numpy), no ROS. Every source gives BGR uint8 HxWx3 frames
through the same small interface, so the camera node, tests and benchmarks run the
same code with or without hardware. CameraFeed adds what a car needs on top:
reconnection when the device disappears (reported once, retried on the caller's
clock, never by sleeping) and resizing to the size the model takes.
"""

from __future__ import annotations

import glob
import math
import os
import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from deepracer_nodes.core.spec import CAMERA, CameraGeometry

VIDEO_EXTENSIONS = ('.avi', '.mp4', '.mkv', '.mov', '.webm', '.mjpg', '.mjpeg')
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
_DEVICE_PATH = re.compile(r'^/dev/video(\d+)$')


class FrameSourceError(ValueError):
    """A source that cannot be opened, or a spec that names nothing usable."""


class FrameSource(ABC):
    """A camera or a stand-in for one: open(), read() frames, close()."""

    #: Human-readable name for logs, e.g. "V4L2 camera /dev/video0 640x480 MJPG @ 15 fps".
    description: str = 'frame source'

    @abstractmethod
    def open(self) -> None:
        """Acquire the device or file; raises FrameSourceError with the reason on failure."""

    @abstractmethod
    def read(self) -> np.ndarray | None:
        """The next frame (BGR uint8 HxWx3), or None when the source failed or is closed."""

    @abstractmethod
    def close(self) -> None:
        """Release the device or file; safe to call twice."""

    @property
    def finished(self) -> bool:
        """True once a non-looping file has played out (not a failure: nothing to retry)."""
        return False


class FramePacer:
    """Delivers frames at a fixed rate the way a camera does: waits for the next frame time.

    Scheduled on a fixed grid, so a caller that is already paced at the same rate (a
    ROS timer) never waits, and one late call does not push every later frame back.
    """

    def __init__(self, fps: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not fps > 0:
            raise ValueError(f'fps must be positive, got {fps}')
        self.period_s = 1.0 / fps
        self._clock, self._sleep = clock, sleep
        self._next_due: float | None = None

    def wait(self) -> None:
        """Block until the next frame is due."""
        now = self._clock()
        if self._next_due is not None and now < self._next_due:
            self._sleep(self._next_due - now)
            now = self._next_due
        if self._next_due is None or now - self._next_due >= self.period_s:
            self._next_due = now + self.period_s  # first frame, or too far behind: restart
        else:
            self._next_due += self.period_s

    def reset(self) -> None:
        self._next_due = None


def _check_size(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise ValueError(f'frame size must be positive, got {width}x{height}')


class V4L2Camera(FrameSource):
    """A camera through OpenCV's V4L2 backend.

    `device` is a path (/dev/video0) or an index. MJPG lets USB 2 cameras deliver
    640x480 at full rate; a one-frame driver buffer keeps frames fresh (a deeper
    buffer hands out frames that are several periods old). read() blocks until the
    camera delivers the next frame, i.e. up to one frame period.
    """

    def __init__(self, device: str | int, width: int = CAMERA.width,
                 height: int = CAMERA.height, fps: float = CAMERA.fps,
                 mjpg: bool = True, buffer_size: int = 1) -> None:
        _check_size(width, height)
        if not fps > 0:
            raise ValueError(f'fps must be positive, got {fps}')
        self.device = device
        self.width, self.height, self.fps, self.mjpg = width, height, fps, mjpg
        self.buffer_size = buffer_size
        self._capture: cv2.VideoCapture | None = None
        self.description = (f'V4L2 camera {device} {width}x{height}'
                            f'{" MJPG" if mjpg else ""} @ {fps:g} fps')

    def open(self) -> None:
        self.close()
        # V4L2 index N is /dev/videoN: checking the node first gives a clear error
        # without OpenCV's warnings, which would otherwise repeat at every retry.
        node = self.device if isinstance(self.device, str) else f'/dev/video{self.device}'
        if not os.path.exists(node):
            raise FrameSourceError(f'{self.description}: no such device {node}')
        capture = cv2.VideoCapture(self.device, cv2.CAP_V4L2)
        if not capture.isOpened():
            capture.release()
            raise FrameSourceError(
                f'{self.description}: cannot open (missing, busy, or not a capture device)')
        # FOURCC first: the driver picks the sizes and rates offered for that format.
        if self.mjpg:
            capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*'MJPG'))
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        capture.set(cv2.CAP_PROP_FPS, self.fps)
        capture.set(cv2.CAP_PROP_BUFFERSIZE, self.buffer_size)
        self._capture = capture

    def read(self) -> np.ndarray | None:
        if self._capture is None:
            return None
        ok, frame = self._capture.read()
        return frame if ok and frame is not None else None

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


def camera_candidates() -> list[str | int]:
    """Devices 'auto' tries, in order: /dev/video0, /dev/video1, ...

    Under V4L2 a camera index N is the node /dev/videoN, so listing the nodes covers
    every index without opening devices that do not exist.
    """
    paths = [p for p in glob.glob('/dev/video*') if _DEVICE_PATH.match(p)]
    return sorted(paths, key=lambda p: int(_DEVICE_PATH.match(p).group(1)))


class AutoCamera(FrameSource):
    """The first V4L2 device that opens AND delivers a frame, probed again on every open().

    Probing on each open finds a camera that came back under another number after a
    USB replug, and skips the metadata nodes UVC cameras also create (they open but
    never deliver a frame).
    """

    def __init__(self, width: int = CAMERA.width, height: int = CAMERA.height,
                 fps: float = CAMERA.fps, mjpg: bool = True,
                 candidates: Callable[[], list[str | int]] = camera_candidates) -> None:
        _check_size(width, height)
        self.width, self.height, self.fps, self.mjpg = width, height, fps, mjpg
        self._candidates = candidates
        self._camera: V4L2Camera | None = None
        self._first_frame: np.ndarray | None = None
        self.description = f'first working V4L2 camera {width}x{height} @ {fps:g} fps'

    def open(self) -> None:
        self.close()
        tried = []
        for device in self._candidates():
            camera = V4L2Camera(device, self.width, self.height, self.fps, self.mjpg)
            try:
                camera.open()
            except FrameSourceError as error:
                tried.append(str(error))
                continue
            frame = camera.read()
            if frame is None:
                camera.close()
                tried.append(f'{camera.description}: opens but delivers no frame')
                continue
            self._camera, self._first_frame = camera, frame
            self.description = camera.description
            return
        reasons = ': ' + '; '.join(tried) if tried else ' (no /dev/video* device)'
        raise FrameSourceError('no working camera found' + reasons)

    def read(self) -> np.ndarray | None:
        if self._first_frame is not None:  # the probe's frame is fresh: use it
            frame, self._first_frame = self._first_frame, None
            return frame
        return self._camera.read() if self._camera is not None else None

    def close(self) -> None:
        if self._camera is not None:
            self._camera.close()
        self._camera, self._first_frame = None, None


class VideoFileSource(FrameSource):
    """Plays a video file at `fps`, looping when asked.

    The file is reopened at each loop rather than rewound, so a file that was replaced
    is picked up and a file that was removed shows up as a failure, like a camera.
    With `realtime` the source waits for each frame time (for plain loops and
    benchmarks); a caller that is already paced, like the node's timer, passes False.
    """

    def __init__(self, path: str | Path, fps: float = CAMERA.fps, loop: bool = True,
                 realtime: bool = True) -> None:
        self.path, self.loop = Path(path), loop
        self._pacer = FramePacer(fps) if realtime else None
        self._capture: cv2.VideoCapture | None = None
        self._finished = False
        self.description = f'video {self.path}{" (looping)" if loop else ""} @ {fps:g} fps'

    def _open_capture(self) -> cv2.VideoCapture:
        if not self.path.is_file():
            raise FrameSourceError(f'{self.description}: no such file')
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            capture.release()
            raise FrameSourceError(f'{self.description}: OpenCV cannot decode it')
        return capture

    def open(self) -> None:
        self.close()
        self._capture = self._open_capture()
        self._finished = False
        if self._pacer:
            self._pacer.reset()

    def read(self) -> np.ndarray | None:
        if self._capture is None:
            return None
        if self._pacer:
            self._pacer.wait()
        ok, frame = self._capture.read()
        if not ok and self.loop:
            self._capture.release()
            self._capture = None
            try:
                self._capture = self._open_capture()
            except FrameSourceError:
                return None
            ok, frame = self._capture.read()
        elif not ok:
            self._finished = True
        return frame if ok else None

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    @property
    def finished(self) -> bool:
        return self._finished


class ImageFolderSource(FrameSource):
    """Plays the images of a folder in name order at `fps`, looping when asked.

    Each image is read from disk when it is due, so a folder that disappears is a
    failure, as a camera being unplugged would be.
    """

    def __init__(self, folder: str | Path, fps: float = CAMERA.fps, loop: bool = True,
                 realtime: bool = True) -> None:
        self.folder, self.loop = Path(folder), loop
        self._pacer = FramePacer(fps) if realtime else None
        self._files: list[Path] = []
        self._next = 0
        self._finished = False
        self.description = f'images in {self.folder}{" (looping)" if loop else ""} @ {fps:g} fps'

    def open(self) -> None:
        if not self.folder.is_dir():
            raise FrameSourceError(f'{self.description}: no such folder')
        files = sorted(p for p in self.folder.iterdir()
                       if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not files:
            raise FrameSourceError(
                f'{self.description}: no images ({", ".join(IMAGE_EXTENSIONS)})')
        self._files, self._next, self._finished = files, 0, False
        if self._pacer:
            self._pacer.reset()

    def read(self) -> np.ndarray | None:
        if not self._files or self._finished:
            return None
        if self._next >= len(self._files):
            if not self.loop:
                self._finished = True
                return None
            self._next = 0
        if self._pacer:
            self._pacer.wait()
        frame = cv2.imread(str(self._files[self._next]), cv2.IMREAD_COLOR)
        self._next += 1
        return frame

    def close(self) -> None:
        self._files = []

    @property
    def finished(self) -> bool:
        return self._finished


def synthetic_frame(index: int, width: int = CAMERA.width,
                    height: int = CAMERA.height) -> np.ndarray:
    """Frame `index` of the synthetic pattern: colour bars scrolling 4 px per frame.

    A pure function of (index, width, height), so a test can recompute any frame.
    """
    _check_size(width, height)
    return np.roll(_synthetic_base(width, height), 4 * index, axis=1)


_BASES: dict[tuple[int, int], np.ndarray] = {}


def _synthetic_base(width: int, height: int) -> np.ndarray:
    # Cached: a frame is then one np.roll (a copy), cheap enough for benchmarks.
    key = (width, height)
    if key not in _BASES:
        columns = np.arange(width)
        bars = np.array([[255, 255, 255], [0, 255, 255], [255, 255, 0], [0, 255, 0],
                         [255, 0, 255], [0, 0, 255], [255, 0, 0], [0, 0, 0]], np.uint8)
        row = bars[(columns * len(bars)) // width]
        base = np.repeat(row[np.newaxis], height, axis=0)
        # A vertical ramp in the lower half, so the pattern is not constant along rows.
        ramp = np.linspace(0, 255, height - height // 2).astype(np.uint8)
        base[height // 2:, :, 1] = ramp[:, np.newaxis]
        base.setflags(write=False)
        _BASES[key] = base
    return _BASES[key]


class SyntheticSource(FrameSource):
    """A scrolling test pattern (see synthetic_frame): deterministic, needs no files."""

    def __init__(self, width: int = CAMERA.width, height: int = CAMERA.height,
                 fps: float = CAMERA.fps, realtime: bool = True) -> None:
        _check_size(width, height)
        self.width, self.height = width, height
        self._pacer = FramePacer(fps) if realtime else None
        self._index: int | None = None
        self.description = f'synthetic pattern {width}x{height} @ {fps:g} fps'

    def open(self) -> None:
        self._index = 0
        if self._pacer:
            self._pacer.reset()

    def read(self) -> np.ndarray | None:
        if self._index is None:
            return None
        if self._pacer:
            self._pacer.wait()
        frame = synthetic_frame(self._index, self.width, self.height)
        self._index += 1
        return frame

    def close(self) -> None:
        self._index = None


def make_source(spec: str, width: int = CAMERA.width, height: int = CAMERA.height,
                fps: float = CAMERA.fps, mjpg: bool = True, loop: bool = True,
                realtime: bool = True) -> FrameSource:
    """Build (without opening) the source a spec names.

    spec: 'auto' (first working camera), '/dev/videoN', an integer index, 'synthetic',
    a video file or a folder of images. width/height/fps are what a camera is asked
    for and the synthetic pattern's size; files keep their own size and play at fps.
    Raises ValueError when the spec names nothing usable.
    """
    _check_size(width, height)
    if not fps > 0:
        raise ValueError(f'fps must be positive, got {fps}')
    text = spec.strip()
    if text == 'auto':
        return AutoCamera(width, height, fps, mjpg)
    if text == 'synthetic':
        return SyntheticSource(width, height, fps, realtime)
    if text.isdigit():
        return V4L2Camera(int(text), width, height, fps, mjpg)
    if text.startswith('/dev/'):
        return V4L2Camera(text, width, height, fps, mjpg)
    path = Path(text).expanduser()
    if text and path.is_dir():
        return ImageFolderSource(path, fps, loop, realtime)
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return VideoFileSource(path, fps, loop, realtime)
    raise ValueError(
        f'source {spec!r} is not auto, synthetic, /dev/videoN, a camera index, an existing '
        f'folder of images or a video file ({", ".join(VIDEO_EXTENSIONS)})')


def open_source(spec: str, **options) -> FrameSource:
    """make_source(spec, **options), opened; raises FrameSourceError when it cannot open."""
    source = make_source(spec, **options)
    source.open()
    return source


@dataclass(frozen=True)
class FeedEvent:
    """Something the owner of a CameraFeed should log once."""

    kind: str  # 'opened', 'unavailable', 'lost', 'back', 'ended'
    message: str


STREAMING, CONNECTING, LOST, ENDED = 'streaming', 'connecting', 'lost', 'ended'


@dataclass
class FeedResult:
    """What one poll of a CameraFeed produced: maybe a frame, maybe events to log."""

    frame: np.ndarray | None = None
    events: list[FeedEvent] = field(default_factory=list)
    # What stamp_clock returned right after the frame was read: its capture time.
    stamp: Any = None


class CameraFeed:
    """A source kept alive: opened on demand, reopened after failures, frames resized.

    poll(now_s) is called by the owner at its frame rate with a monotonic time in
    seconds. While the source is down, opening is retried every reconnect_interval_s
    of that clock; losing it and getting it back are each reported once, as events.
    """

    def __init__(self, source: FrameSource, output_size: tuple[int, int] | None = None,
                 reconnect_interval_s: float = 1.0) -> None:
        if not reconnect_interval_s > 0:
            raise ValueError(f'reconnect interval must be positive, got {reconnect_interval_s}')
        self.source = source
        self.output_size = output_size
        self.reconnect_interval_s = reconnect_interval_s
        self.state = CONNECTING
        self.times_lost = 0
        self._next_attempt_s = -math.inf
        # When the source went down (or the first open failed), for the 'back' message.
        self._down_since_s: float | None = None

    @property
    def output_size(self) -> tuple[int, int] | None:
        """(width, height) frames are resized to, or None to keep the capture size.

        A 0 on one side keeps the capture's aspect ratio, e.g. (160, 0) on 640x480 frames
        gives 160x120; (0, 0) is the same as None.
        """
        return self._output_size

    @output_size.setter
    def output_size(self, size: tuple[int, int] | None) -> None:
        if size is not None:
            width, height = size
            if width < 0 or height < 0:
                raise ValueError(f'output size must not be negative, got {width}x{height}')
            if width == height == 0:
                size = None
        self._output_size = size

    def poll(self, now_s: float, stamp_clock: Callable[[], Any] | None = None) -> FeedResult:
        """Read one frame, reopening the source first if it is down and a retry is due.

        stamp_clock, when given, is called right after the read returns (before the
        resize), so result.stamp is the capture time on the caller's clock.
        """
        result = FeedResult()
        if self.state == ENDED:
            return result
        if self.state != STREAMING and not self._try_open(now_s, result):
            return result
        try:
            frame = self.source.read()
        except (cv2.error, OSError):
            frame = None  # a driver error is a lost camera, never a crashed node
        if stamp_clock is not None:
            result.stamp = stamp_clock()
        if frame is None:
            self._on_failure(now_s, result)
            return result
        result.frame = self._resize(frame)
        return result

    def close(self) -> None:
        self.source.close()

    def _try_open(self, now_s: float, result: FeedResult) -> bool:
        if now_s < self._next_attempt_s:
            return False
        try:
            self.source.open()
        except (FrameSourceError, cv2.error, OSError) as error:
            self._next_attempt_s = now_s + self.reconnect_interval_s
            if self.state == CONNECTING and self._down_since_s is None:
                self._down_since_s = now_s
                result.events.append(FeedEvent(
                    'unavailable', f'{error}; retrying every {self.reconnect_interval_s:g} s'))
            return False
        waited = '' if self._down_since_s is None else \
            f' after {now_s - self._down_since_s:.1f} s'
        if self.state == LOST:
            result.events.append(FeedEvent('back', f'{self.source.description} is back{waited}'))
        else:
            result.events.append(FeedEvent(
                'opened', f'streaming from {self.source.description}{waited}'))
        self.state, self._down_since_s = STREAMING, None
        return True

    def _on_failure(self, now_s: float, result: FeedResult) -> None:
        self.source.close()
        if self.source.finished:
            self.state = ENDED
            result.events.append(FeedEvent('ended', f'{self.source.description} has ended'))
            return
        if self.state == STREAMING:
            self.times_lost += 1
            self._down_since_s = now_s
            result.events.append(FeedEvent(
                'lost', f'lost {self.source.description}; retrying every '
                        f'{self.reconnect_interval_s:g} s'))
        self.state = LOST
        self._next_attempt_s = now_s + self.reconnect_interval_s

    def _resize(self, frame: np.ndarray) -> np.ndarray:
        if self._output_size is None:
            return frame
        frame_height, frame_width = frame.shape[:2]
        width, height = self._output_size
        if not width:
            width = max(1, round(height * frame_width / frame_height))
        elif not height:
            height = max(1, round(width * frame_height / frame_width))
        if (width, height) == (frame_width, frame_height):
            return frame
        # INTER_AREA averages the source pixels: no aliasing when shrinking 640x480 to 160x120.
        return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class CameraIntrinsics:
    """The numbers of a sensor_msgs/CameraInfo, for one image size."""

    width: int
    height: int
    distortion_model: str
    d: tuple[float, ...]
    k: tuple[float, ...]  # 3x3 row-major
    r: tuple[float, ...]  # 3x3 row-major, identity for a monocular camera
    p: tuple[float, ...]  # 3x4 row-major


def camera_intrinsics(width: int, height: int,
                      geometry: CameraGeometry = CAMERA) -> CameraIntrinsics:
    """Pinhole intrinsics of the spec camera scaled to an image of width x height.

    The focal length comes from the horizontal field of view at the spec resolution
    and scales with each axis; the principal point is the image centre (pixel centres
    at integers, as OpenCV counts). A non-zero wide_angle_k1 selects the equidistant
    (fisheye) model, whose coefficients do not depend on the resolution.
    """
    _check_size(width, height)
    fx = geometry.focal_px * width / geometry.width
    fy = geometry.focal_px * height / geometry.height
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    if geometry.wide_angle_k1:
        model, d = 'equidistant', (geometry.wide_angle_k1, 0.0, 0.0, 0.0)
    else:
        model, d = 'plumb_bob', (0.0, 0.0, 0.0, 0.0, 0.0)
    return CameraIntrinsics(
        width=width, height=height, distortion_model=model, d=d,
        k=(fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0),
        r=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
        p=(fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0))
