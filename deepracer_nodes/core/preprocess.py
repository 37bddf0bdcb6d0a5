"""Camera frame -> model input tensor, exactly as the DeepRacer device prepares it.

The device does: BGR frame -> cv2.resize to the model's W x H (bilinear) -> BGR2GRAY,
and feeds the RAW 0-255 values as float32 (the graph divides by 255 itself). Two
device variants are options here: an Otsu threshold of the grey image, and the top
N rows set to 0 (40 on the device) so the network ignores what is above the track.

Only single-channel (greyscale) models are driven: stereo models (2 channels) need
two cameras this stack does not have, and a 3-channel input has no DeepRacer
convention (BGR or RGB?) to follow, so both are refused with a clear message.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Sequence

import cv2
import numpy as np

# Channel counts a DeepRacer-style image input can have (grey, stereo grey, colour).
_CHANNEL_COUNTS = (1, 2, 3)


class InputSpecError(ValueError):
    """A model input whose shape we cannot map to a camera image."""


class Layout(str, Enum):
    NHWC = 'NHWC'  # TensorFlow, and so every converted DeepRacer graph
    NCHW = 'NCHW'  # PyTorch exports


@dataclass(frozen=True)
class InputSpec:
    """Name, layout and size of a model's image input."""

    name: str
    layout: Layout
    height: int
    width: int
    channels: int = 1

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """The concrete tensor shape fed to the model (batch of one)."""
        if self.layout is Layout.NHWC:
            return (1, self.height, self.width, self.channels)
        return (1, self.channels, self.height, self.width)

    @classmethod
    def from_shape(cls, name: str, shape: Sequence[Any]) -> InputSpec:
        """Detect the layout of an ONNX input shape like [1,120,160,1] or ['N',1,120,160].

        The batch dimension may be dynamic (None, a name or a non-positive number);
        height, width and channels must be fixed.
        """
        if len(shape) != 4:
            raise InputSpecError(
                f'input {name!r} has shape {list(shape)}; an image input needs 4 dimensions '
                '(NHWC [1,H,W,C] or NCHW [1,C,H,W])')
        batch, *dims = shape
        if _is_fixed(batch) and batch != 1:
            raise InputSpecError(f'input {name!r} has batch size {batch}; 1 is needed')
        if not all(_is_fixed(d) for d in dims):
            raise InputSpecError(
                f'input {name!r} has shape {list(shape)}: height, width and channels must be '
                'fixed numbers, only the batch may be dynamic')
        nhwc = dims[2] in _CHANNEL_COUNTS and dims[0] not in _CHANNEL_COUNTS
        nchw = dims[0] in _CHANNEL_COUNTS and dims[2] not in _CHANNEL_COUNTS
        if nhwc:
            return cls(name, Layout.NHWC, height=dims[0], width=dims[1], channels=dims[2])
        if nchw:
            return cls(name, Layout.NCHW, height=dims[1], width=dims[2], channels=dims[0])
        raise InputSpecError(
            f'cannot tell whether input {name!r} with shape {list(shape)} is NHWC or NCHW: '
            f'exactly one of dimension 1 and 3 must be a channel count {_CHANNEL_COUNTS}')


def _is_fixed(dim: Any) -> bool:
    return isinstance(dim, int) and not isinstance(dim, bool) and dim > 0


@dataclass(frozen=True)
class PreprocessOptions:
    """Device preprocessing variants (both off = the standard DeepRacer pipeline)."""

    threshold: bool = False  # Otsu binarisation of the grey image (0 or 255)
    mask_top_rows: int = 0   # rows at the top of the MODEL-SIZE image set to 0

    def __post_init__(self) -> None:
        if isinstance(self.mask_top_rows, bool) or not isinstance(self.mask_top_rows, int) \
                or self.mask_top_rows < 0:
            raise ValueError(f'mask_top_rows must be an integer >= 0, got {self.mask_top_rows!r}')


def check_supported(spec: InputSpec, options: PreprocessOptions) -> None:
    """Raise InputSpecError when this pipeline cannot feed the input."""
    if spec.channels != 1:
        kind = 'stereo (2 cameras)' if spec.channels == 2 else 'colour'
        raise InputSpecError(
            f'input {spec.name!r} takes {spec.channels} channels ({kind}); this stack feeds '
            'single-camera greyscale models (1 channel) only')
    if options.mask_top_rows > spec.height:
        raise InputSpecError(
            f'mask_top_rows {options.mask_top_rows} is more than the model input height '
            f'{spec.height}')


def reference_grey(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """The device's pipeline written plainly (no buffer reuse): the yardstick for tests."""
    resized = cv2.resize(frame, (width, height))
    return resized if resized.ndim == 2 else cv2.cvtColor(resized, cv2.COLOR_BGR2GRAY)


class Preprocessor:
    """Turns frames into the model's input tensor, reusing its buffers between frames.

    The returned tensor is owned by the Preprocessor and overwritten by the next call,
    so use it (run the model) before calling again; one caller at a time.
    """

    def __init__(self, spec: InputSpec, options: PreprocessOptions = PreprocessOptions()):
        check_supported(spec, options)
        self.spec = spec
        self.options = options
        self._size = (spec.width, spec.height)  # cv2 takes (width, height)
        self._grey = np.empty((spec.height, spec.width), np.uint8)
        self._resized_bgr = np.empty((spec.height, spec.width, 3), np.uint8)
        self._tensor = np.zeros(spec.shape, np.float32)
        # With one channel both layouts hold the H x W plane contiguously.
        self._plane = self._tensor.reshape(spec.height, spec.width)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """Frame: H x W x 3 BGR or H x W grey, uint8, any size -> float32 model tensor."""
        grey = self._to_grey(frame)
        if self.options.threshold:
            cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU, dst=grey)
        if self.options.mask_top_rows:
            grey[:self.options.mask_top_rows] = 0
        np.copyto(self._plane, grey, casting='unsafe')
        return self._tensor

    def _to_grey(self, frame: np.ndarray) -> np.ndarray:
        if frame.dtype != np.uint8:
            raise ValueError(f'expected a uint8 frame, got {frame.dtype}')
        if frame.ndim == 2:
            # A grey frame: only the resize of the device pipeline applies.
            cv2.resize(frame, self._size, dst=self._grey)
            return self._grey
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f'expected an HxWx3 BGR or HxW grey frame, got shape {frame.shape}')
        cv2.resize(frame, self._size, dst=self._resized_bgr)
        cv2.cvtColor(self._resized_bgr, cv2.COLOR_BGR2GRAY, dst=self._grey)
        return self._grey


def preprocess(frame: np.ndarray, spec: InputSpec,
               options: PreprocessOptions = PreprocessOptions()) -> np.ndarray:
    """One-off conversion of a frame to a fresh model tensor (allocates; see Preprocessor)."""
    return Preprocessor(spec, options)(frame).copy()
