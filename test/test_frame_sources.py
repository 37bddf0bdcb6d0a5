"""Frame sources and CameraFeed on real media files written by test/media.py."""

from __future__ import annotations

import glob
import math
import time

import cv2
import media
import numpy as np
import pytest

from deepracer_nodes.core import frame_sources as fs
from deepracer_nodes.core.spec import CAMERA, MODEL_INPUT, CameraGeometry


def read_numbers(source: fs.FrameSource, count: int) -> list[int]:
    numbers = []
    for _ in range(count):
        frame = source.read()
        assert frame is not None
        numbers.append(media.frame_number(frame))
    return numbers


# --- video files ---------------------------------------------------------------------------

def test_video_plays_frames_in_order_and_loops(tmp_path):
    path = media.write_video(tmp_path, frames=5, width=96, height=64)
    source = fs.open_source(str(path), loop=True, realtime=False)
    first = source.read()
    assert first.shape == (64, 96, 3) and first.dtype == np.uint8
    assert media.frame_number(first) == 0
    assert read_numbers(source, 11) == [1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]
    assert not source.finished
    source.close()
    assert source.read() is None


def test_video_without_loop_finishes(tmp_path):
    path = media.write_video(tmp_path, frames=3, width=64, height=48)
    source = fs.open_source(str(path), loop=False, realtime=False)
    assert read_numbers(source, 3) == [0, 1, 2]
    assert source.read() is None
    assert source.finished


def test_video_plays_at_the_requested_rate_not_as_fast_as_possible(tmp_path):
    path = media.write_video(tmp_path, frames=4, width=64, height=48)
    source = fs.open_source(str(path), fps=20.0, loop=True, realtime=True)
    start = time.monotonic()
    read_numbers(source, 11)  # the first is immediate, then 10 periods of 50 ms
    elapsed = time.monotonic() - start
    assert 0.45 <= elapsed < 1.5, elapsed


def test_video_that_cannot_be_decoded_is_a_clear_error(tmp_path):
    path = tmp_path / 'broken.mp4'
    path.write_bytes(b'not a video at all' * 10)
    with pytest.raises(fs.FrameSourceError, match='cannot decode'):
        fs.open_source(str(path))
    with pytest.raises(fs.FrameSourceError, match='no such file'):
        fs.open_source(str(tmp_path / 'missing.avi'))


# --- image folders -------------------------------------------------------------------------

def test_image_folder_plays_sorted_and_loops(tmp_path):
    folder = media.write_image_folder(tmp_path, frames=4, width=80, height=60)
    (folder / 'notes.txt').write_text('not an image')
    source = fs.open_source(str(folder), realtime=False)
    assert read_numbers(source, 9) == [0, 1, 2, 3, 0, 1, 2, 3, 0]


def test_image_folder_without_loop_finishes(tmp_path):
    folder = media.write_image_folder(tmp_path, frames=2, width=80, height=60)
    source = fs.open_source(str(folder), loop=False, realtime=False)
    assert read_numbers(source, 2) == [0, 1]
    assert source.read() is None and source.finished


def test_image_folder_paces_frames(tmp_path):
    folder = media.write_image_folder(tmp_path, frames=3, width=80, height=60)
    source = fs.open_source(str(folder), fps=25.0)
    start = time.monotonic()
    read_numbers(source, 6)
    assert 0.18 <= time.monotonic() - start < 1.2


def test_empty_image_folder_is_a_clear_error(tmp_path):
    (tmp_path / 'empty').mkdir()
    with pytest.raises(fs.FrameSourceError, match='no images'):
        fs.open_source(str(tmp_path / 'empty'))


# --- synthetic pattern ---------------------------------------------------------------------

def test_synthetic_source_is_deterministic_and_moves():
    one = fs.open_source('synthetic', width=64, height=48, realtime=False)
    two = fs.open_source('synthetic', width=64, height=48, realtime=False)
    frames = [one.read() for _ in range(5)]
    for index, frame in enumerate(frames):
        assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
        np.testing.assert_array_equal(frame, two.read())
        np.testing.assert_array_equal(frame, fs.synthetic_frame(index, 64, 48))
    assert not np.array_equal(frames[0], frames[1])
    # Reopening starts the pattern over.
    one.open()
    np.testing.assert_array_equal(one.read(), frames[0])


def test_synthetic_frames_are_not_aliased_to_the_cached_pattern():
    frame = fs.synthetic_frame(0, 32, 24)
    frame[:] = 0  # a consumer drawing on its frame must not change the next one
    assert fs.synthetic_frame(0, 32, 24).any()


# --- specs and cameras ---------------------------------------------------------------------

def test_make_source_understands_every_kind_of_spec(tmp_path):
    video = media.write_video(tmp_path, frames=2, width=32, height=24)
    folder = media.write_image_folder(tmp_path, frames=2, width=32, height=24)
    assert isinstance(fs.make_source('auto'), fs.AutoCamera)
    assert isinstance(fs.make_source('synthetic'), fs.SyntheticSource)
    assert isinstance(fs.make_source(str(video)), fs.VideoFileSource)
    assert isinstance(fs.make_source(str(folder)), fs.ImageFolderSource)
    camera = fs.make_source('/dev/video3', width=320, height=240, fps=30.0, mjpg=False)
    assert isinstance(camera, fs.V4L2Camera) and camera.device == '/dev/video3'
    assert (camera.width, camera.height, camera.fps, camera.mjpg) == (320, 240, 30.0, False)
    index = fs.make_source('2')
    assert isinstance(index, fs.V4L2Camera) and index.device == 2


@pytest.mark.parametrize('spec', ['', 'webcam', '/tmp/definitely/not/here.txt', '-1'])
def test_make_source_rejects_specs_that_name_nothing(spec):
    with pytest.raises(ValueError, match='is not auto'):
        fs.make_source(spec)


@pytest.mark.parametrize('options', [{'fps': 0.0}, {'width': 0}, {'height': -5}])
def test_make_source_rejects_bad_settings(options):
    with pytest.raises(ValueError):
        fs.make_source('synthetic', **options)


def test_missing_v4l2_device_is_a_clear_error():
    with pytest.raises(fs.FrameSourceError, match='/dev/video97.*no such device'):
        fs.V4L2Camera('/dev/video97').open()
    with pytest.raises(fs.FrameSourceError, match='V4L2 camera 97.*no such device /dev/video97'):
        fs.V4L2Camera(97).open()


def test_a_file_that_is_not_a_capture_device_is_a_clear_error(tmp_path):
    not_a_camera = tmp_path / 'video0'
    not_a_camera.write_bytes(b'')
    with pytest.raises(fs.FrameSourceError, match='cannot open'):
        fs.V4L2Camera(str(not_a_camera)).open()


def test_auto_reports_every_device_it_tried(tmp_path):
    not_a_camera = tmp_path / 'video0'
    not_a_camera.write_bytes(b'')
    auto = fs.AutoCamera(candidates=lambda: ['/dev/video98', str(not_a_camera)])
    with pytest.raises(fs.FrameSourceError) as error:
        auto.open()
    message = str(error.value)
    assert 'no working camera found' in message
    assert '/dev/video98' in message and str(not_a_camera) in message
    assert auto.read() is None


@pytest.mark.skipif(bool(glob.glob('/dev/video*')), reason='this machine has a camera')
def test_auto_without_any_camera_is_a_clear_error():
    assert fs.camera_candidates() == []
    with pytest.raises(fs.FrameSourceError, match=r'no working camera found \(no /dev/video'):
        fs.open_source('auto')


# --- CameraFeed ----------------------------------------------------------------------------

def test_feed_resizes_to_the_model_input(tmp_path):
    folder = media.write_image_folder(tmp_path, frames=3, width=CAMERA.width,
                                      height=CAMERA.height)
    size = (MODEL_INPUT.width, MODEL_INPUT.height)
    feed = fs.CameraFeed(fs.make_source(str(folder), realtime=False), output_size=size)
    first = feed.poll(0.0)
    assert [e.kind for e in first.events] == ['opened']
    numbers = [media.frame_number(first.frame)]
    for step in range(1, 4):
        result = feed.poll(step * 0.1)
        assert result.frame.shape == (MODEL_INPUT.height, MODEL_INPUT.width, 3)
        assert not result.events
        numbers.append(media.frame_number(result.frame))
    assert numbers == [0, 1, 2, 0]
    feed.output_size = None
    assert feed.poll(1.0).frame.shape == (CAMERA.height, CAMERA.width, 3)
    feed.output_size = (0, 0)
    assert feed.output_size is None
    with pytest.raises(ValueError, match='negative'):
        feed.output_size = (-160, 120)


@pytest.mark.parametrize('output, expected', [((160, 0), (160, 120)), ((0, 60), (80, 60)),
                                              ((100, 100), (100, 100))])
def test_feed_keeps_the_aspect_ratio_when_one_side_is_zero(output, expected):
    feed = fs.CameraFeed(fs.SyntheticSource(640, 480, realtime=False), output_size=output)
    frame = feed.poll(0.0).frame
    assert (frame.shape[1], frame.shape[0]) == expected


def poll_for(feed: fs.CameraFeed, start_s: float, stop_s: float, step_s: float):
    """Poll from start_s to stop_s; return (frames received, events) in order."""
    frames, events = [], []
    for tick in range(int(round((stop_s - start_s) / step_s))):
        result = feed.poll(start_s + tick * step_s)
        events.extend(result.events)
        if result.frame is not None:
            frames.append(media.frame_number(result.frame))
    return frames, events


def test_feed_survives_an_image_folder_that_goes_away_and_comes_back(tmp_path):
    folder = media.write_image_folder(tmp_path, frames=3, width=64, height=48)
    feed = fs.CameraFeed(fs.make_source(str(folder), realtime=False),
                         reconnect_interval_s=0.5)
    before, events = poll_for(feed, 0.0, 1.0, 0.1)
    assert before == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    folder.rename(tmp_path / 'unplugged')
    during, lost_events = poll_for(feed, 1.0, 3.0, 0.1)
    assert during == [] and feed.state == fs.LOST
    (tmp_path / 'unplugged').rename(folder)
    after, back_events = poll_for(feed, 3.0, 4.0, 0.1)
    events += lost_events + back_events
    assert [e.kind for e in events] == ['opened', 'lost', 'back']
    assert 'lost images in' in events[1].message and 'retrying every 0.5 s' in events[1].message
    # Back at the first retry after the folder returned, starting the sequence over.
    assert after[:3] == [0, 1, 2] and len(after) >= 9
    assert feed.state == fs.STREAMING and feed.times_lost == 1


def test_feed_retries_on_its_interval_not_on_every_poll(tmp_path):
    folder = media.write_image_folder(tmp_path, frames=2, width=32, height=24)

    class CountingFolder(fs.ImageFolderSource):
        opens = 0

        def open(self):
            CountingFolder.opens += 1
            super().open()

    feed = fs.CameraFeed(CountingFolder(folder, realtime=False), reconnect_interval_s=1.0)
    feed.poll(0.0)
    folder.rename(tmp_path / 'gone')
    poll_for(feed, 0.1, 3.05, 0.01)  # lost at 0.1 s, retries at 1.1, 2.1 (and nothing else)
    assert CountingFolder.opens == 1 + 2


def test_feed_survives_a_video_removed_and_restored(tmp_path):
    path = media.write_video(tmp_path, frames=4, width=64, height=48)
    saved = path.read_bytes()
    feed = fs.CameraFeed(fs.make_source(str(path), realtime=False), reconnect_interval_s=0.3)
    before, events = poll_for(feed, 0.0, 0.3, 0.1)
    assert before == [0, 1, 2]
    path.unlink()  # the open file still plays to its end; the next loop fails
    during, more = poll_for(feed, 0.3, 1.0, 0.1)
    events += more
    assert during == [3] and feed.state == fs.LOST
    path.write_bytes(saved)
    after, more = poll_for(feed, 1.0, 1.5, 0.1)
    events += more
    assert [e.kind for e in events] == ['opened', 'lost', 'back']
    assert after[:2] == [0, 1]


def test_feed_waits_for_a_source_missing_at_start_and_reports_it_once(tmp_path):
    feed = fs.CameraFeed(fs.make_source(str(tmp_path / 'later.avi'), realtime=False),
                         reconnect_interval_s=0.2)
    frames, events = poll_for(feed, 0.0, 1.0, 0.05)
    assert frames == [] and feed.state == fs.CONNECTING
    assert [e.kind for e in events] == ['unavailable']
    assert 'no such file' in events[0].message
    media.write_video(tmp_path, frames=3, width=32, height=24, name='later.avi')
    frames, events = poll_for(feed, 1.0, 1.5, 0.05)
    assert frames[:3] == [0, 1, 2]
    assert [e.kind for e in events] == ['opened'] and 'after 1.0 s' in events[0].message


def test_feed_reports_the_end_of_a_non_looping_file_once(tmp_path):
    path = media.write_video(tmp_path, frames=2, width=32, height=24)
    feed = fs.CameraFeed(fs.make_source(str(path), loop=False, realtime=False))
    frames, events = poll_for(feed, 0.0, 3.0, 0.1)
    assert frames == [0, 1]
    assert [e.kind for e in events] == ['opened', 'ended'] and feed.state == fs.ENDED


def test_feed_treats_driver_errors_as_a_lost_source():
    class FlakyDriver(fs.SyntheticSource):
        """The pattern, but OpenCV raises on the third read and on the first reopen."""

        reads = opens = 0

        def open(self):
            FlakyDriver.opens += 1
            if FlakyDriver.opens == 2:
                raise cv2.error('VIDIOC_STREAMON: No such device')
            super().open()

        def read(self):
            FlakyDriver.reads += 1
            if FlakyDriver.reads == 3:
                raise cv2.error('select() timeout')
            return super().read()

    feed = fs.CameraFeed(FlakyDriver(32, 24, realtime=False), reconnect_interval_s=1.0)
    got, events = [], []
    for tick in range(40):
        result = feed.poll(tick * 0.1)
        got.append(result.frame is not None)
        events += [e.kind for e in result.events]
    assert events == ['opened', 'lost', 'back']
    assert got[:2] == [True, True] and not any(got[2:22]) and all(got[22:])


def test_feed_rejects_a_non_positive_reconnect_interval():
    with pytest.raises(ValueError, match='reconnect interval'):
        fs.CameraFeed(fs.SyntheticSource(), reconnect_interval_s=0.0)


# --- pacing --------------------------------------------------------------------------------

class FakeTime:
    """A manual clock for the pacer: sleeping advances it."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 9))
        self.now += seconds


def test_pacer_keeps_a_fixed_grid():
    fake = FakeTime()
    pacer = fs.FramePacer(10.0, clock=fake.clock, sleep=fake.sleep)
    pacer.wait()            # first frame at once
    pacer.wait()            # waits a whole period
    assert fake.slept == [0.1] and math.isclose(fake.now, 100.1)
    fake.now += 0.13        # a late caller (due at 100.2) ...
    pacer.wait()
    assert fake.slept == [0.1]
    pacer.wait()            # ... does not push the next frame back: due at 100.3
    assert math.isclose(fake.now, 100.3)
    fake.now += 5.0         # far behind: start over instead of bursting to catch up
    pacer.wait()
    pacer.wait()
    assert math.isclose(fake.slept[-1], 0.1)


def test_pacer_rejects_a_non_positive_rate():
    with pytest.raises(ValueError):
        fs.FramePacer(0.0)


# --- CameraInfo numbers --------------------------------------------------------------------

def test_intrinsics_at_the_spec_size_follow_the_field_of_view():
    info = fs.camera_intrinsics(CAMERA.width, CAMERA.height)
    fx, cx, fy, cy = info.k[0], info.k[2], info.k[4], info.k[5]
    assert math.isclose(2 * math.atan(CAMERA.width / 2 / fx), CAMERA.horizontal_fov_rad)
    assert math.isclose(fx, fy)
    assert (cx, cy) == ((CAMERA.width - 1) / 2, (CAMERA.height - 1) / 2)
    assert info.p == (fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0)
    assert info.r == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    assert info.distortion_model == 'plumb_bob' and info.d == (0.0,) * 5


def test_intrinsics_scale_with_the_output_size():
    full = fs.camera_intrinsics(CAMERA.width, CAMERA.height)
    small = fs.camera_intrinsics(MODEL_INPUT.width, MODEL_INPUT.height)
    assert (small.width, small.height) == (MODEL_INPUT.width, MODEL_INPUT.height)
    assert math.isclose(small.k[0], full.k[0] * MODEL_INPUT.width / CAMERA.width)
    assert math.isclose(small.k[4], full.k[4] * MODEL_INPUT.height / CAMERA.height)
    # The field of view is a property of the lens, not of the resolution.
    assert math.isclose(2 * math.atan(MODEL_INPUT.width / 2 / small.k[0]),
                        CAMERA.horizontal_fov_rad)


def test_wide_angle_lens_uses_the_equidistant_model():
    info = fs.camera_intrinsics(160, 120, CameraGeometry(wide_angle_k1=-0.05))
    assert info.distortion_model == 'equidistant' and info.d == (-0.05, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        fs.camera_intrinsics(0, 120)
