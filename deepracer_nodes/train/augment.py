"""Photometric and mirror augmentation of greyscale model inputs (numpy only).

The renderer already varies the mat, light and camera per episode; these per-sample
changes come on top at every epoch, so the network sees each recorded frame in many
lights: a brightness/contrast/gamma curve, sensor noise, blur, and soft shadows (half
planes darkened across the image, as a person or a lamp casts on a real mat).

Mirroring is exact for this camera (mounted on the car's centre line): the mirrored
image is what the car sees on the mirrored track, where the expert steers the opposite
way, so it doubles the data and removes any left/right bias of the tracks.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the per-sample changes; probabilities are per sample."""

    mirror_probability: float = 0.5
    gain: tuple[float, float] = (0.6, 1.4)
    bias: tuple[float, float] = (-35.0, 35.0)
    gamma: tuple[float, float] = (0.7, 1.4)
    noise_probability: float = 0.5
    noise_sigma: tuple[float, float] = (2.0, 10.0)
    blur_probability: float = 0.2
    shadow_probability: float = 0.3
    shadow_darkening: tuple[float, float] = (0.45, 0.85)


NO_AUGMENTATION = Augmentation(mirror_probability=0.0, gain=(1.0, 1.0), bias=(0.0, 0.0),
                               gamma=(1.0, 1.0), noise_probability=0.0, blur_probability=0.0,
                               shadow_probability=0.0)

_LEVELS = np.arange(256, dtype=np.float32) / 255.0


def augment(frames: np.ndarray, rng: np.random.Generator,
            augmentation: Augmentation = Augmentation()) -> tuple[np.ndarray, np.ndarray]:
    """Augment a batch of grey frames (N, H, W) uint8.

    Returns (float32 images (N, H, W) in 0-255, raw as the model takes them, and a bool
    array (N,) saying which were mirrored: their labels must be mirrored too).
    """
    if frames.ndim != 3 or frames.dtype != np.uint8:
        raise ValueError(f'frames must be (N, H, W) uint8, got {frames.shape} {frames.dtype}')
    a = augmentation
    count = len(frames)
    mirrored = rng.random(count) < a.mirror_probability
    out = np.empty(frames.shape, np.float32)
    gains = rng.uniform(*a.gain, count)
    biases = rng.uniform(*a.bias, count)
    gammas = rng.uniform(*a.gamma, count)
    blurred = rng.random(count) < a.blur_probability
    for i in range(count):
        # One 256-entry curve per sample: gamma, then contrast about mid-grey, then light.
        curve = 255.0 * _LEVELS ** gammas[i]
        curve = np.clip((curve - 128.0) * gains[i] + 128.0 + biases[i], 0.0, 255.0)
        image = frames[i, :, ::-1] if mirrored[i] else frames[i]
        if blurred[i]:
            image = cv2.GaussianBlur(image, (3, 3), 0)
        out[i] = curve[image]
    _add_shadows(out, rng, a)
    _add_noise(out, rng, a)
    np.clip(out, 0.0, 255.0, out=out)
    return out, mirrored


def _add_shadows(images: np.ndarray, rng: np.random.Generator, a: Augmentation) -> None:
    count, height, width = images.shape
    shaded = np.flatnonzero(rng.random(count) < a.shadow_probability)
    if not len(shaded):
        return
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in shaded:
        angle = rng.uniform(0, 2 * np.pi)
        # A half plane through a random point, with a soft edge a few pixels wide.
        px, py = rng.uniform(0, width), rng.uniform(0, height)
        distance = (xs - px) * np.cos(angle) + (ys - py) * np.sin(angle)
        softness = rng.uniform(1.0, 8.0)
        inside = 1.0 / (1.0 + np.exp(-distance / softness))
        darkening = rng.uniform(*a.shadow_darkening)
        images[i] *= 1.0 - (1.0 - darkening) * inside


def _add_noise(images: np.ndarray, rng: np.random.Generator, a: Augmentation) -> None:
    noisy = np.flatnonzero(rng.random(len(images)) < a.noise_probability)
    if not len(noisy):
        return
    sigma = rng.uniform(*a.noise_sigma, len(noisy)).astype(np.float32)
    noise = rng.standard_normal((len(noisy),) + images.shape[1:], dtype=np.float32)
    images[noisy] += noise * sigma[:, None, None]
