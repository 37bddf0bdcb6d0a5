"""The inference node in-process with real rclpy: frames in, stamped commands out, safe swaps."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import yaml
from conftest import spin_until
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import TwistStamped
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Float32MultiArray, Int32
from std_srvs.srv import Trigger

from deepracer_nodes.core import onnx_build
from deepracer_nodes.core.spec import CAR, FRAMES, MODEL_INPUT, TOPICS
from deepracer_nodes.inference_node import PARAMETERS, InferenceNode
from deepracer_nodes.paths import share_path
from deepracer_nodes.ros_conversions import array_to_image, ns_to_stamp, stamp_to_ns

SLOW = (0.5, 1.0, 1.5)
FAST = (2.0, 2.5, 3.0)
H, W = MODEL_INPUT.height, MODEL_INPUT.width


def bright_third(third: int) -> np.ndarray:
    frame = np.full((H, W, 3), 30, np.uint8)
    frame[:, third * W // 3:(third + 1) * W // 3] = 220
    return frame


def strip_model(folder, speeds=SLOW):
    return onnx_build.write_model_folder(folder, onnx_build.brightest_strip_network(3),
                                         onnx_build.steering_sweep_metadata(3, speeds_mps=speeds))


class Rig:
    """A second node: the camera side (publishes frames) and everything that listens."""

    def __init__(self, executor, context) -> None:
        import rclpy
        self.executor = executor
        self.node = rclpy.create_node('inference_rig', context=context)
        self.commands: list[TwistStamped] = []
        self.probabilities: list[Float32MultiArray] = []
        self.indices: list[int] = []
        self.statuses: list[tuple[int, str, dict]] = []
        self.images = self.node.create_publisher(Image, TOPICS.image, qos_profile_sensor_data)
        self.node.create_subscription(TwistStamped, TOPICS.auto_cmd_vel, self.commands.append, 10)
        self.node.create_subscription(Float32MultiArray, TOPICS.probabilities,
                                      self.probabilities.append, 10)
        self.node.create_subscription(Int32, TOPICS.action_index,
                                      lambda m: self.indices.append(m.data), 10)
        self.node.create_subscription(DiagnosticArray, TOPICS.diagnostics, self._diagnostics, 10)
        self.set_parameters = self.node.create_client(SetParameters,
                                                      '/inference_node/set_parameters')
        self.reload = self.node.create_client(Trigger, '/inference_node/reload_model')
        executor.add_node(self.node)

    def _diagnostics(self, array: DiagnosticArray) -> None:
        for status in array.status:
            if status.name == 'inference_node: inference':
                values = {kv.key: kv.value for kv in status.values}
                self.statuses.append((status.level, status.message, values))

    def publish(self, frame: np.ndarray, stamp_ns: int, encoding: str | None = None) -> None:
        self.images.publish(array_to_image(frame, ns_to_stamp(stamp_ns),
                                           FRAMES.camera_optical, encoding))

    def drive(self, frame: np.ndarray, stamp_ns: int, timeout_s: float = 10.0) -> TwistStamped:
        """Publish the frame until a command with its stamp comes back (discovery may lag)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.publish(frame, stamp_ns)
            if spin_until(self.executor, lambda: self.command_for(stamp_ns), timeout_s=0.2):
                return self.command_for(stamp_ns)
        raise AssertionError(f'no command for the frame stamped {stamp_ns}')

    def command_for(self, stamp_ns: int) -> TwistStamped | None:
        for command in self.commands:
            if stamp_to_ns(command.header.stamp) == stamp_ns:
                return command
        return None

    def call(self, client, request, timeout_s: float = 20.0):
        assert client.wait_for_service(timeout_sec=timeout_s)
        future = client.call_async(request)
        assert spin_until(self.executor, future.done, timeout_s=timeout_s)
        return future.result()

    def set_model(self, value: str):
        request = SetParameters.Request(
            parameters=[Parameter('model', value=value).to_parameter_msg()])
        return self.call(self.set_parameters, request).results[0]

    def latest_status(self, condition=lambda level, message, values: True, timeout_s=5.0):
        start = len(self.statuses)
        assert spin_until(self.executor, lambda: any(
            condition(*s) for s in self.statuses[start:]), timeout_s=timeout_s)
        return next(s for s in reversed(self.statuses[start:]) if condition(*s))


def start(executor, context, **parameters) -> InferenceNode:
    overrides = [Parameter(name, value=value) for name, value in parameters.items()]
    node = InferenceNode(context=context, parameter_overrides=overrides)
    executor.add_node(node)
    return node


def assert_drives(command: TwistStamped, speed: float, steering_deg: float) -> None:
    assert command.twist.linear.x == pytest.approx(speed)
    assert command.twist.angular.z == pytest.approx(
        speed * math.tan(math.radians(steering_deg)) / CAR.wheelbase_m, abs=1e-5)


@pytest.fixture
def rig(executor, ros_context):
    return Rig(executor, ros_context)


def test_known_frames_give_stamped_commands(executor, ros_context, rig, tmp_path):
    start(executor, ros_context, model=str(strip_model(tmp_path / 'strip')))
    stamp = 1_700_000_000_123_456_789
    command = rig.drive(bright_third(0), stamp)
    assert command.header.frame_id == FRAMES.base
    assert_drives(command, SLOW[0], 30.0)  # bright on the left: turn left, positive yaw rate
    assert command.twist.angular.z > 0
    assert_drives(rig.drive(bright_third(2), stamp + 1), SLOW[2], -30.0)
    assert_drives(rig.drive(bright_third(1), stamp + 2), SLOW[1], 0.0)
    assert spin_until(executor, lambda: len(rig.indices) >= 3)
    assert rig.indices[-3:] == [0, 2, 1]
    probabilities = np.array(rig.probabilities[-1].data)
    assert probabilities.shape == (3,) and probabilities.argmax() == 1
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-4)


def test_continuous_model(executor, ros_context, rig, tmp_path):
    folder = onnx_build.write_model_folder(
        tmp_path / 'c', onnx_build.balance_network(speed_gain=4.0, speed_bias=-2.0, squash=False),
        onnx_build.continuous_metadata((-30.0, 30.0), (0.5, 2.5)))
    start(executor, ros_context, model=str(folder))
    assert_drives(rig.drive(np.full((H, W, 3), 255, np.uint8), 5), 2.5, 0.0)
    assert rig.indices == [] and rig.probabilities == []


def test_swap_to_a_good_model_changes_behaviour(executor, ros_context, rig, tmp_path):
    node = start(executor, ros_context, model=str(strip_model(tmp_path / 'slow')))
    assert_drives(rig.drive(bright_third(0), 10), SLOW[0], 30.0)
    result = rig.set_model(str(strip_model(tmp_path / 'fast', FAST)))
    assert result.successful, result.reason
    assert_drives(rig.drive(bright_third(0), 11), FAST[0], 30.0)
    assert node.get_parameter('model').value == str(tmp_path / 'fast')
    level, _, values = rig.latest_status(lambda level, m, v: v.get('model') == 'fast')
    assert 'parameter change: loaded fast' in values['last swap']


@pytest.mark.parametrize('breakage,reason', [
    ('garbage onnx', 'onnxruntime cannot load'),
    ('no metadata', 'has no model_metadata.json'),
    ('garbled metadata', 'model_metadata.json: not valid JSON'),
    ('metadata for 5 actions', 'describes a discrete action space of 5'),
    ('missing folder', 'does not exist'),
    ('unknown name', "no model named 'ghost'; looked in"),
])
def test_swap_to_a_broken_model_keeps_the_old_one(executor, ros_context, rig, tmp_path,
                                                  breakage, reason):
    good = str(strip_model(tmp_path / 'good'))
    node = start(executor, ros_context, model=good)
    assert_drives(rig.drive(bright_third(2), 20), SLOW[2], -30.0)
    broken = strip_model(tmp_path / 'broken', FAST)
    target = str(broken)
    if breakage == 'garbage onnx':
        (broken / 'model.onnx').write_bytes(b'\x00not onnx')
    elif breakage == 'no metadata':
        (broken / 'model_metadata.json').unlink()
    elif breakage == 'garbled metadata':
        (broken / 'model_metadata.json').write_text('{"action_space": [{"steer')
    elif breakage == 'metadata for 5 actions':
        (broken / 'model_metadata.json').write_text(json.dumps(
            {'action_space': [{'steering_angle': 0, 'speed': 1}] * 5}))
    elif breakage == 'missing folder':
        target = str(tmp_path / 'nowhere')
    else:
        target = 'ghost'
    result = rig.set_model(target)
    assert not result.successful
    assert reason in result.reason
    assert node.get_parameter('model').value == good
    assert_drives(rig.drive(bright_third(2), 21), SLOW[2], -30.0)  # the old model still drives
    _, message, values = rig.latest_status(lambda level, m, v: 'refused' in v['last swap'])
    assert reason in values['last swap'] and values['model'] == 'good'


def test_reload_from_disk(executor, ros_context, rig, tmp_path):
    folder = strip_model(tmp_path / 'live')
    start(executor, ros_context, model=str(folder))
    assert_drives(rig.drive(bright_third(1), 30), SLOW[1], 0.0)
    strip_model(folder, FAST)  # retrained in place
    response = rig.call(rig.reload, Trigger.Request())
    assert response.success, response.message
    assert_drives(rig.drive(bright_third(1), 31), FAST[1], 0.0)
    (folder / 'model.onnx').write_bytes(b'half a file')
    response = rig.call(rig.reload, Trigger.Request())
    assert not response.success and 'onnxruntime cannot load' in response.message
    assert_drives(rig.drive(bright_third(1), 32), FAST[1], 0.0)


def test_starts_idle_without_a_model_then_loads_one_by_name(executor, ros_context, rig,
                                                            tmp_path):
    node = start(executor, ros_context, models_dir=str(tmp_path))
    level, message, values = rig.latest_status()
    assert 'idle' in message and values['model'] == 'none'
    rig.publish(bright_third(0), 40)
    spin_until(executor, lambda: False, timeout_s=0.5)
    assert not rig.commands
    strip_model(tmp_path / 'by_name')
    assert rig.set_model('by_name').successful
    assert node.loaded_model.policy.folder == tmp_path / 'by_name'
    assert_drives(rig.drive(bright_third(0), 41), SLOW[0], 30.0)
    assert rig.set_model('').successful  # unload: back to idle
    assert node.loaded_model is None


@pytest.mark.parametrize('metadata_text', [None, '{"action_space": 12', '{"sensor": ["LIDAR"]}'])
def test_start_with_missing_or_garbled_metadata_idles_and_says_why(
        executor, ros_context, rig, tmp_path, metadata_text):
    folder = strip_model(tmp_path / 'bad')
    if metadata_text is None:
        (folder / 'model_metadata.json').unlink()
    else:
        (folder / 'model_metadata.json').write_text(metadata_text)
    node = start(executor, ros_context, model=str(folder))
    assert node.loaded_model is None
    level, message, values = rig.latest_status()
    assert 'idle' in message and values['last swap'].startswith('failed at start: ')
    assert 'model_metadata.json' in values['last swap']
    # A good model can still be set afterwards.
    assert rig.set_model(str(strip_model(tmp_path / 'good'))).successful
    assert_drives(rig.drive(bright_third(0), 50), SLOW[0], 30.0)


def test_malformed_images_are_rejected_without_crashing(executor, ros_context, rig, tmp_path):
    start(executor, ros_context, model=str(strip_model(tmp_path / 'strip')))
    assert_drives(rig.drive(bright_third(0), 60), SLOW[0], 30.0)
    good = array_to_image(bright_third(2), ns_to_stamp(61), FRAMES.camera_optical)
    short_data = array_to_image(bright_third(2), ns_to_stamp(61), FRAMES.camera_optical)
    short_data.data = bytes(short_data.data)[:100]
    short_step = array_to_image(bright_third(2), ns_to_stamp(62), FRAMES.camera_optical)
    short_step.step = 10
    odd_encoding = array_to_image(bright_third(2), ns_to_stamp(63), FRAMES.camera_optical)
    odd_encoding.encoding = 'yuv422_yuy2'
    empty = Image(encoding='bgr8')
    for bad in (short_data, short_step, odd_encoding, empty):
        rig.images.publish(bad)
        spin_until(executor, lambda: False, timeout_s=0.1)
    assert all(rig.command_for(n) is None for n in (61, 62, 63))
    _, _, values = rig.latest_status(lambda lv, m, v: int(v['images rejected']) >= 4)
    assert good.width == W
    assert_drives(rig.drive(bright_third(2), 64), SLOW[2], -30.0)  # still driving
    grey = rig.drive(bright_third(1)[..., 0].copy(), 65)  # mono8 frames work too
    assert_drives(grey, SLOW[1], 0.0)


def test_only_the_newest_frame_is_processed(executor, ros_context, rig, tmp_path):
    node = start(executor, ros_context, model=str(strip_model(tmp_path / 'strip')))
    rig.drive(bright_third(0), 100)
    before = len(rig.commands)
    # A burst while the executor is not spinning: the node is "busy" for all of it.
    for stamp in range(101, 131):
        rig.publish(bright_third(stamp % 3), stamp)
    time.sleep(0.5)
    assert spin_until(executor, lambda: rig.command_for(130) is not None, timeout_s=5.0)
    spin_until(executor, lambda: False, timeout_s=0.3)
    processed = [stamp_to_ns(c.header.stamp) for c in rig.commands[before:]]
    assert processed[-1] == 130
    assert len(processed) <= 3, f'stale frames were processed: {processed}'
    assert node.frames_dropped >= 25


def test_diagnostics_report_model_rates_and_latency(executor, ros_context, rig, tmp_path):
    start(executor, ros_context, model=str(strip_model(tmp_path / 'strip')))
    now_ns = time.time_ns()
    rig.drive(bright_third(0), now_ns)
    for k in range(1, 20):
        rig.drive(bright_third(k % 3), time.time_ns())
    level, message, values = rig.latest_status(
        lambda lv, m, v: int(v['frames processed']) >= 20)
    assert level == DiagnosticStatus.OK and message == 'driving with strip'
    assert values['action space'] == 'discrete'
    assert values['input'].startswith('NHWC [1, 120, 160, 1]')
    for key in ('inference p50 ms', 'inference p99 ms', 'stamp to publish p50 ms',
                'stamp to publish p99 ms', 'stamp to publish max ms',
                'pipeline overhead p99 ms'):
        assert 0.0 <= float(values[key]) < 5000.0, key
    assert float(values['fps processed']) >= 0.0
    # Not asserted to be 0: best-effort transport may lose a frame on a busy machine, and
    # the drop counter rightly counts it (test_only_the_newest_frame_is_processed checks it).
    assert int(values['frames dropped']) >= 0


def test_preprocessing_parameters_apply_to_the_running_model(executor, ros_context, rig,
                                                             tmp_path):
    node = start(executor, ros_context, model=str(strip_model(tmp_path / 'strip')))
    assert_drives(rig.drive(bright_third(2), 70), SLOW[2], -30.0)
    request = SetParameters.Request(parameters=[
        Parameter('mask_top_rows', value=H).to_parameter_msg()])
    assert rig.call(rig.set_parameters, request).results[0].successful
    # Everything masked: the strips tie and the first action wins.
    assert_drives(rig.drive(bright_third(2), 71), SLOW[0], 30.0)
    request = SetParameters.Request(parameters=[
        Parameter('mask_top_rows', value=H + 1).to_parameter_msg()])
    result = rig.call(rig.set_parameters, request).results[0]
    assert not result.successful and 'more than the model input height' in result.reason
    assert node.get_parameter('mask_top_rows').value == H
    request = SetParameters.Request(parameters=[
        Parameter('intra_op_threads', value=0).to_parameter_msg()])
    result = rig.call(rig.set_parameters, request).results[0]
    assert not result.successful and 'intra_op_threads' in result.reason


def test_config_file_matches_the_declared_parameters():
    config = yaml.safe_load(share_path('config', 'inference.yaml').read_text())
    parameters = config['inference_node']['ros__parameters']
    assert set(parameters) <= set(PARAMETERS)
    for name, value in parameters.items():
        assert type(value) is type(PARAMETERS[name][0]), name
