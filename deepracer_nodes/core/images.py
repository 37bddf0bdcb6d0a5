"""Raw image buffers <-> numpy arrays, without cv_bridge (not installable everywhere).

Works on the fields of a sensor_msgs/Image (height, width, encoding, step,
is_bigendian, data) so it can check a message from the network before trusting
it, and never imports rclpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# encoding -> (channels, numpy dtype)
ENCODINGS = {
    'bgr8': (3, np.uint8),
    'rgb8': (3, np.uint8),
    'bgra8': (4, np.uint8),
    'rgba8': (4, np.uint8),
    'mono8': (1, np.uint8),
    '8UC1': (1, np.uint8),
    '8UC3': (3, np.uint8),
    'mono16': (1, np.uint16),
}
MAX_SIDE_PX = 8192


class ImageFormatError(ValueError):
    """An image buffer whose fields do not describe its data."""


@dataclass(frozen=True)
class RawImage:
    """The fields of a sensor_msgs/Image that describe its pixels."""

    height: int
    width: int
    encoding: str
    step: int
    data: bytes
    is_bigendian: bool = False


def to_array(image: RawImage) -> np.ndarray:
    """Return an HxWxC (or HxW for one channel) view of the image, checking every field.

    Raises ImageFormatError with the reason when the fields and data disagree.
    """
    if image.encoding not in ENCODINGS:
        raise ImageFormatError(
            f'unsupported encoding {image.encoding!r} (supported: {", ".join(ENCODINGS)})')
    channels, dtype = ENCODINGS[image.encoding]
    height, width, step = int(image.height), int(image.width), int(image.step)
    if not (0 < height <= MAX_SIDE_PX and 0 < width <= MAX_SIDE_PX):
        raise ImageFormatError(f'image size {width}x{height} is outside 1..{MAX_SIDE_PX} px')
    row_bytes = width * channels * np.dtype(dtype).itemsize
    if step < row_bytes:
        raise ImageFormatError(
            f'step {step} is shorter than a row of {width} {image.encoding} pixels ({row_bytes})')
    if len(image.data) < step * height:
        raise ImageFormatError(
            f'data holds {len(image.data)} bytes, {step}x{height} = {step * height} expected')
    buffer = np.frombuffer(image.data, dtype=np.uint8, count=step * height)
    rows = buffer.reshape(height, step)[:, :row_bytes]
    pixels = rows.view(np.dtype(dtype).newbyteorder('>' if image.is_bigendian else '<'))
    shape = (height, width) if channels == 1 else (height, width, channels)
    return pixels.reshape(shape)


def to_bgr(image: RawImage) -> np.ndarray:
    """Return the image as 8-bit BGR, converting from any supported encoding."""
    pixels = to_array(image)
    encoding = image.encoding
    if pixels.dtype != np.uint8:
        pixels = (pixels >> 8).astype(np.uint8)
    if pixels.ndim == 2:
        return cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_GRAY2BGR)
    conversions = {'rgb8': cv2.COLOR_RGB2BGR, 'bgra8': cv2.COLOR_BGRA2BGR,
                   'rgba8': cv2.COLOR_RGBA2BGR}
    if encoding in conversions:
        return cv2.cvtColor(np.ascontiguousarray(pixels), conversions[encoding])
    return pixels


def to_grey(image: RawImage) -> np.ndarray:
    """Return the image as 8-bit greyscale HxW, the way OpenCV turns BGR into grey."""
    pixels = to_array(image)
    if pixels.ndim == 2:
        return pixels if pixels.dtype == np.uint8 else (pixels >> 8).astype(np.uint8)
    return cv2.cvtColor(to_bgr(image), cv2.COLOR_BGR2GRAY)


def from_array(pixels: np.ndarray, encoding: str | None = None) -> RawImage:
    """Pack an HxW (mono8) or HxWx3 (bgr8 by default) uint8 array into image fields."""
    if pixels.dtype != np.uint8:
        raise ImageFormatError(f'expected uint8 pixels, got {pixels.dtype}')
    if pixels.ndim == 2:
        encoding = encoding or 'mono8'
    elif pixels.ndim == 3 and pixels.shape[2] in (3, 4):
        encoding = encoding or ('bgr8' if pixels.shape[2] == 3 else 'bgra8')
    else:
        raise ImageFormatError(f'expected HxW or HxWx3 pixels, got shape {pixels.shape}')
    if ENCODINGS.get(encoding, (None,))[0] != (1 if pixels.ndim == 2 else pixels.shape[2]):
        raise ImageFormatError(f'encoding {encoding!r} does not fit shape {pixels.shape}')
    pixels = np.ascontiguousarray(pixels)
    height, width = pixels.shape[:2]
    return RawImage(height=height, width=width, encoding=encoding,
                    step=pixels.strides[0], data=pixels.tobytes())
