"""The camera node in-process with real rclpy: stamped images, camera info, recovery."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

import cv2
import media
import numpy as np
import pytest
import yaml
from conftest import spin_until
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from deepracer_nodes.camera_node import PARAMETERS, READ_ONLY_PARAMETERS, CameraNode
from deepracer_nodes.core import frame_sources
from deepracer_nodes.core.spec import CAMERA, FRAMES, MODEL_INPUT, TOPICS
from deepracer_nodes.core.images import to_array
from deepracer_nodes.ros_conversions import image_to_raw, stamp_to_ns

CONFIG = Path(__file__).resolve().parent.parent / 'config' / 'camera.yaml'


class Probe:
    """A second node recording what the camera node publishes, with receive times."""

    def __init__(self, executor, context) -> None:
        import rclpy
        self.node = rclpy.create_node('camera_probe', context=context)
        self.images: list[tuple[float, Image]] = []
        self.infos: list[CameraInfo] = []
        self.statuses = []
        self.node.create_subscription(
            Image, TOPICS.image, lambda m: self.images.append((time.monotonic(), m)),
            qos_profile_sensor_data)
        self.node.create_subscription(CameraInfo, TOPICS.camera_info, self.infos.append,
                                      qos_profile_sensor_data)
        self.node.create_subscription(DiagnosticArray, TOPICS.diagnostics, self._on_diagnostics,
                                      10)
        executor.add_node(self.node)

    def _on_diagnostics(self, array: DiagnosticArray) -> None:
        for status in array.status:
            if status.name == 'camera_node: camera':
                self.statuses.append({kv.key: kv.value for kv in status.values})

    def images_since(self, t: float) -> list[Image]:
        return [m for received, m in self.images if received >= t]


def start_camera(executor, context, **parameters) -> CameraNode:
    overrides = [Parameter(name, value=value) for name, value in parameters.items()]
    node = CameraNode(context=context, parameter_overrides=overrides)
    executor.add_node(node)
    return node


def test_publishes_stamped_framed_images_of_the_requested_size_at_the_requested_rate(
        executor, ros_context):
    probe = Probe(executor, ros_context)
    start_camera(executor, ros_context, source='synthetic', fps=20.0,
                 output_width=MODEL_INPUT.width, output_height=MODEL_INPUT.height)
    assert spin_until(executor, lambda: len(probe.images) >= 40, timeout_s=15.0)
    images = [m for _, m in probe.images]
    for image in images:
        assert (image.width, image.height) == (MODEL_INPUT.width, MODEL_INPUT.height)
        assert image.encoding == 'bgr8' and image.step == MODEL_INPUT.width * 3
        assert image.header.frame_id == FRAMES.camera_optical
    stamps = [stamp_to_ns(m.header.stamp) for m in images]
    assert all(b > a for a, b in zip(stamps, stamps[1:])), 'stamps must increase'
    assert abs(stamps[-1] * 1e-9 - time.time()) < 5.0, 'stamps are capture times (node clock)'
    # Rate from the capture stamps over ~2 s: 20 fps with slack for a busy 2-core machine.
    measured_fps = (len(stamps) - 1) / ((stamps[-1] - stamps[0]) * 1e-9)
    assert 14.0 <= measured_fps <= 24.0, measured_fps

    # The pixels are the synthetic pattern at capture size, resized with INTER_AREA.
    pixels = to_array(image_to_raw(images[-1]))
    candidates = (cv2.resize(frame_sources.synthetic_frame(k, CAMERA.width, CAMERA.height),
                             (MODEL_INPUT.width, MODEL_INPUT.height),
                             interpolation=cv2.INTER_AREA) for k in range(400))
    assert any(np.array_equal(pixels, c) for c in candidates)

    # Every image has a CameraInfo with the same stamp, scaled to the published size.
    assert spin_until(executor, lambda: len(probe.infos) >= len(images), timeout_s=5.0)
    info_stamps = {stamp_to_ns(i.header.stamp) for i in probe.infos}
    assert len(set(stamps) - info_stamps) <= 2  # best effort: allow a dropped message
    info = probe.infos[-1]
    assert (info.width, info.height) == (MODEL_INPUT.width, MODEL_INPUT.height)
    assert info.header.frame_id == FRAMES.camera_optical
    assert info.distortion_model == 'plumb_bob'
    expected = frame_sources.camera_intrinsics(MODEL_INPUT.width, MODEL_INPUT.height)
    np.testing.assert_allclose(info.k, expected.k)
    np.testing.assert_allclose(info.p, expected.p)
    assert math.isclose(info.k[0], CAMERA.focal_px * MODEL_INPUT.width / CAMERA.width)


def test_without_an_output_size_publishes_the_capture_size(executor, ros_context, tmp_path):
    video = media.write_video(tmp_path, frames=5, width=96, height=64)
    probe = Probe(executor, ros_context)
    start_camera(executor, ros_context, source=str(video), fps=30.0)
    assert spin_until(executor, lambda: len(probe.images) >= 8, timeout_s=10.0)
    image = probe.images[-1][1]
    assert (image.width, image.height) == (96, 64)
    numbers = [media.frame_number(to_array(image_to_raw(m))) for _, m in probe.images]
    assert set(numbers) <= set(range(5)) and len(set(numbers)) >= 3  # the video, looping


def latest_status(probe: Probe) -> dict:
    return probe.statuses[-1] if probe.statuses else {}


def test_node_keeps_running_when_the_source_fails_and_resumes_when_it_returns(
        executor, ros_context, tmp_path):
    folder = media.write_image_folder(tmp_path, frames=4, width=64, height=48)
    probe = Probe(executor, ros_context)
    node = start_camera(executor, ros_context, source=str(folder), fps=20.0,
                        reconnect_interval=0.3)
    assert spin_until(executor, lambda: len(probe.images) >= 5, timeout_s=10.0)
    assert spin_until(executor, lambda: latest_status(probe).get('state') == 'streaming',
                      timeout_s=5.0)

    folder.rename(tmp_path / 'unplugged')  # the camera goes away
    assert spin_until(executor, lambda: latest_status(probe).get('state') == 'lost',
                      timeout_s=5.0)
    quiet_from = time.monotonic() + 0.2  # let frames already in flight arrive
    spin_until(executor, lambda: False, timeout_s=1.0)
    assert probe.images_since(quiet_from) == [], 'no frames while the source is lost'

    (tmp_path / 'unplugged').rename(folder)  # and comes back
    back_from = time.monotonic()
    assert spin_until(executor, lambda: len(probe.images_since(back_from)) >= 5,
                      timeout_s=5.0), 'frames resume without restarting the node'
    assert spin_until(executor, lambda: latest_status(probe).get('state') == 'streaming',
                      timeout_s=5.0)
    status = latest_status(probe)
    assert status['times lost'] == '1'
    assert int(status['frames published']) >= 10
    assert node.context.ok()


def test_parameters_are_checked_and_applied_while_running(executor, ros_context):
    probe = Probe(executor, ros_context)
    node = start_camera(executor, ros_context, source='synthetic', width=64, height=48,
                        fps=30.0)
    assert spin_until(executor, lambda: len(probe.images) >= 3, timeout_s=10.0)

    refused = {
        'fps': 0.0, 'output_width': -32, 'source': 'webcam', 'frame_id': ' ',
        'reconnect_interval': -1.0, 'width': 0,
    }
    for name, value in refused.items():
        result = node.set_parameters([Parameter(name, value=value)])[0]
        assert not result.successful and result.reason, name
    result = node.set_parameters([Parameter('image_topic', value='/elsewhere')])[0]
    assert not result.successful  # topics are fixed at start

    results = node.set_parameters([Parameter('output_width', value=32),
                                   Parameter('output_height', value=24),
                                   Parameter('frame_id', value='front_camera'),
                                   Parameter('width', value=80), Parameter('height', value=60)])
    assert all(r.successful for r in results)
    changed_from = time.monotonic()

    def resized() -> bool:
        return any((m.width, m.height, m.header.frame_id) == (32, 24, 'front_camera')
                   for m in probe.images_since(changed_from))
    assert spin_until(executor, resized, timeout_s=5.0)
    assert probe.infos and spin_until(
        executor, lambda: (probe.infos[-1].width, probe.infos[-1].height) == (32, 24), 5.0)

    assert node.set_parameters([Parameter('fps', value=8.0)])[0].successful
    slowed_from = time.monotonic() + 0.3  # the new period starts after the current one
    assert spin_until(executor, lambda: len(probe.images_since(slowed_from)) >= 6, 10.0)
    stamps = [stamp_to_ns(m.header.stamp) * 1e-9 for m in probe.images_since(slowed_from)]
    gaps = sorted(b - a for a, b in zip(stamps, stamps[1:]))
    assert 0.09 <= gaps[len(gaps) // 2] <= 0.2, gaps  # 8 fps: 125 ms between captures


def test_a_source_that_names_nothing_stops_the_start(ros_context):
    with pytest.raises(ValueError, match='is not auto'):
        CameraNode(context=ros_context,
                   parameter_overrides=[Parameter('source', value='webcam')])


def test_a_queue_depth_below_one_stops_the_start(ros_context):
    with pytest.raises(ValueError, match='qos_depth'):
        CameraNode(context=ros_context, parameter_overrides=[
            Parameter('source', value='synthetic'), Parameter('qos_depth', value=0)])


def test_main_exits_with_an_error_for_a_bad_source():
    completed = subprocess.run(
        [sys.executable, '-m', 'deepracer_nodes.camera_node',
         '--ros-args', '-p', 'source:=webcam'],
        capture_output=True, text=True, timeout=30)
    assert completed.returncode == 1
    assert 'cannot start' in completed.stderr and 'webcam' in completed.stderr


def test_car_config_publishes_the_model_input_size(executor, ros_context):
    config = yaml.safe_load(CONFIG.read_text())['camera_node']['ros__parameters']
    assert set(config) <= set(PARAMETERS) | set(READ_ONLY_PARAMETERS)
    assert (config['output_width'], config['output_height']) == \
        (MODEL_INPUT.width, MODEL_INPUT.height)
    config['source'] = 'synthetic'  # no camera on the test machine
    probe = Probe(executor, ros_context)
    start_camera(executor, ros_context, **config)
    assert spin_until(executor, lambda: len(probe.images) >= 3, timeout_s=10.0)
    assert all((m.width, m.height) == (MODEL_INPUT.width, MODEL_INPUT.height)
               for _, m in probe.images)
