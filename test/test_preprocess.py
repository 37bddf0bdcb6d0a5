"""Frame -> model tensor, compared with the device's OpenCV pipeline written plainly."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from deepracer_nodes.core import spec
from deepracer_nodes.core.preprocess import (
    InputSpec, InputSpecError, Layout, PreprocessOptions, Preprocessor, check_supported,
    preprocess, reference_grey)

H, W = spec.MODEL_INPUT.height, spec.MODEL_INPUT.width
NHWC = InputSpec('x', Layout.NHWC, H, W)
NCHW = InputSpec('x', Layout.NCHW, H, W)


def camera_frame(seed: int = 0) -> np.ndarray:
    """A 640x480 BGR frame with structure (gradients, a track-like band) and noise."""
    rng = np.random.default_rng(seed)
    height, width = spec.CAMERA.height, spec.CAMERA.width
    ys, xs = np.mgrid[0:height, 0:width]
    frame = np.empty((height, width, 3), np.uint8)
    frame[..., 0] = (xs * 255 // width).astype(np.uint8)
    frame[..., 1] = (ys * 255 // height).astype(np.uint8)
    frame[..., 2] = np.where(np.abs(xs - width / 2 - (ys - height) * 0.4) < 60, 230, 40)
    noise = rng.integers(-20, 21, frame.shape)
    return np.clip(frame.astype(int) + noise, 0, 255).astype(np.uint8)


def test_exactly_the_device_pipeline():
    frame = camera_frame()
    # BGR -> resize to W x H -> grey, raw 0-255 as float32, written out by hand.
    expected = cv2.cvtColor(cv2.resize(frame, (W, H)), cv2.COLOR_BGR2GRAY).astype(np.float32)
    tensor = preprocess(frame, NHWC)
    assert tensor.dtype == np.float32 and tensor.shape == (1, H, W, 1)
    np.testing.assert_array_equal(tensor[0, :, :, 0], expected)
    assert tensor.max() > 200  # raw values, not divided by 255
    np.testing.assert_array_equal(reference_grey(frame, W, H), expected)


def test_nchw_holds_the_same_plane():
    frame = camera_frame(1)
    tensor = preprocess(frame, NCHW)
    assert tensor.shape == (1, 1, H, W)
    np.testing.assert_array_equal(tensor[0, 0], preprocess(frame, NHWC)[0, :, :, 0])


def test_grey_frames_and_model_size_frames():
    frame = camera_frame(2)
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    np.testing.assert_array_equal(preprocess(grey, NHWC)[0, :, :, 0],
                                  cv2.resize(grey, (W, H)).astype(np.float32))
    small = cv2.resize(frame, (W, H))
    np.testing.assert_array_equal(preprocess(small, NHWC)[0, :, :, 0],
                                  cv2.cvtColor(small, cv2.COLOR_BGR2GRAY))


def test_strided_frame_from_a_padded_image_buffer():
    frame = camera_frame(3)
    padded = np.zeros((frame.shape[0], frame.shape[1] + 8, 3), np.uint8)
    padded[:, :frame.shape[1]] = frame
    view = padded[:, :frame.shape[1]]
    np.testing.assert_array_equal(preprocess(view, NHWC), preprocess(frame, NHWC))


def test_otsu_threshold():
    frame = camera_frame(4)
    grey = reference_grey(frame, W, H)
    _, expected = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    tensor = preprocess(frame, NHWC, PreprocessOptions(threshold=True))
    np.testing.assert_array_equal(tensor[0, :, :, 0], expected)
    assert set(np.unique(tensor)) == {0.0, 255.0}


def test_mask_top_rows():
    frame = camera_frame(5)
    tensor = preprocess(frame, NCHW, PreprocessOptions(mask_top_rows=40))
    assert not tensor[0, 0, :40].any()
    np.testing.assert_array_equal(tensor[0, 0, 40:], reference_grey(frame, W, H)[40:])


def test_buffers_are_reused_between_frames():
    preprocessor = Preprocessor(NHWC)
    first = preprocessor(camera_frame(6))
    second = preprocessor(camera_frame(7))
    assert first is second
    np.testing.assert_array_equal(second[0, :, :, 0], reference_grey(camera_frame(7), W, H))


@pytest.mark.parametrize('frame,message', [
    (np.zeros((10, 10, 3), np.float32), 'uint8'),
    (np.zeros((10, 10, 4), np.uint8), 'HxWx3'),
    (np.zeros((10,), np.uint8), 'HxWx3'),
])
def test_bad_frames(frame, message):
    with pytest.raises(ValueError, match=message):
        Preprocessor(NHWC)(frame)


@pytest.mark.parametrize('shape,layout,size', [
    ([1, 120, 160, 1], Layout.NHWC, (120, 160, 1)),
    ([1, 1, 120, 160], Layout.NCHW, (120, 160, 1)),
    (['batch', 120, 160, 1], Layout.NHWC, (120, 160, 1)),
    ([None, 2, 60, 80], Layout.NCHW, (60, 80, 2)),
    ([-1, 90, 120, 3], Layout.NHWC, (90, 120, 3)),
])
def test_layout_detection(shape, layout, size):
    detected = InputSpec.from_shape('in', shape)
    assert detected.layout is layout
    assert (detected.height, detected.width, detected.channels) == size


@pytest.mark.parametrize('shape,message', [
    ([1, 3, 120, 3], 'cannot tell'),
    ([1, 1, 1, 1], 'cannot tell'),
    ([1, 120, 160, 4], 'cannot tell'),
    ([1, 120, 160], '4 dimensions'),
    ([2, 120, 160, 1], 'batch size 2'),
    ([1, 'h', 'w', 1], 'must be fixed'),
])
def test_ambiguous_or_unusable_shapes(shape, message):
    with pytest.raises(InputSpecError, match=message):
        InputSpec.from_shape('in', shape)


def test_only_single_channel_inputs_are_fed():
    with pytest.raises(InputSpecError, match='stereo'):
        check_supported(InputSpec('x', Layout.NHWC, H, W, channels=2), PreprocessOptions())
    with pytest.raises(InputSpecError, match='colour'):
        Preprocessor(InputSpec('x', Layout.NCHW, H, W, channels=3))
    with pytest.raises(InputSpecError, match='more than the model input height'):
        Preprocessor(NHWC, PreprocessOptions(mask_top_rows=H + 1))


def test_options_are_checked():
    with pytest.raises(ValueError, match='mask_top_rows'):
        PreprocessOptions(mask_top_rows=-1)
