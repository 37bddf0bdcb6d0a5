"""The whole drive stack on real ROS 2: camera (image folder) -> inference (a small ONNX model
built here) -> servo (duty cycles written into a temporary sysfs tree).

The model picks the brightest third of the image: left third -> action 0 = 30 deg left,
right third -> action 2 = 30 deg right, both at 1 m/s. With the factory calibration
(REFERENCE.md) and the default speed curve (vmax 4 m/s, scale 1) the duty cycles are
known by hand:
  steering +30 deg -> ratio +1 -> Servo max  = 1 700 000 ns
  steering -30 deg -> ratio -1 -> Servo min  = 1 200 000 ns
  1 m/s -> throttle -1.2/16 + 2.2/4 = 0.475, Motor polarity -1
        -> 1 446 000 - 0.475 * (1 446 000 - 1 311 000) = 1 381 875 ns
  neutral: steering 1 450 000, throttle 1 446 000.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
from rclpy.parameter import Parameter
from std_srvs.srv import SetBool

from conftest import spin_until
from deepracer_nodes.camera_node import CameraNode
from deepracer_nodes.core import onnx_build, spec
from deepracer_nodes.inference_node import InferenceNode
from deepracer_nodes.ros_runtime import start_node_process, wait_for
from deepracer_nodes.servo_node import ServoNode
from deepracer_nodes.core.sysfs_tree import make_pwm_tree, read_value

STEER_LEFT_NS, STEER_RIGHT_NS, STEER_CENTRE_NS = 1_700_000, 1_200_000, 1_450_000
THROTTLE_1MPS_NS, THROTTLE_NEUTRAL_NS = 1_381_875, 1_446_000
STEERING, THROTTLE = spec.PWM.steering_channel, spec.PWM.throttle_channel


def bright_third_folder(folder: Path, third: int) -> Path:
    """A folder with one 640x480 frame whose `third` (0 left, 2 right) is bright."""
    folder.mkdir(parents=True)
    frame = np.full((480, 640, 3), 30, np.uint8)
    frame[:, third * 640 // 3:(third + 1) * 640 // 3] = 230
    cv2.imwrite(str(folder / 'frame.png'), frame)
    return folder


@pytest.fixture
def stack_files(tmp_path):
    model = onnx_build.write_model_folder(
        tmp_path / 'brightest', onnx_build.brightest_strip_network(3),
        onnx_build.steering_sweep_metadata(3, speeds_mps=1.0))
    return {'model': model, 'pwm_root': make_pwm_tree(tmp_path),
            'left': bright_third_folder(tmp_path / 'left', 0),
            'right': bright_third_folder(tmp_path / 'right', 2),
            'calibration': tmp_path / 'calibration.json'}


def duty(root: Path, channel: int) -> int:
    return int(read_value(root, channel, 'duty_cycle'))


def call_enable(node, executor, enable: bool) -> SetBool.Response:
    client = node.create_client(SetBool, spec.TOPICS.servo_enable)
    assert spin_until(executor, client.service_is_ready, 10.0), 'no enable service'
    future = client.call_async(SetBool.Request(data=enable))
    assert spin_until(executor, future.done, 10.0)
    node.destroy_client(client)
    return future.result()


def test_known_frames_give_known_duty_cycles(executor, ros_context, stack_files):
    root = stack_files['pwm_root']
    servo = ServoNode(context=ros_context, parameter_overrides=[
        Parameter('pwm_root', value=str(root)),
        Parameter('calibration_file', value=str(stack_files['calibration']))])
    inference = InferenceNode(context=ros_context, parameter_overrides=[
        Parameter('model', value=str(stack_files['model']))])
    camera = CameraNode(context=ros_context, parameter_overrides=[
        Parameter('source', value=str(stack_files['left'])), Parameter('fps', value=30.0),
        Parameter('output_width', value=160), Parameter('output_height', value=120)])
    for node in (servo, inference, camera):
        executor.add_node(node)

    # Stopped at start: frames flow, but the outputs stay at neutral.
    assert spin_until(executor, lambda: inference.statistics.processed >= 5)
    assert duty(root, STEERING) == STEER_CENTRE_NS
    assert duty(root, THROTTLE) == THROTTLE_NEUTRAL_NS

    assert call_enable(servo, executor, True).success
    assert spin_until(executor, lambda: duty(root, STEERING) == STEER_LEFT_NS)
    assert duty(root, THROTTLE) == THROTTLE_1MPS_NS

    camera.set_parameters([Parameter('source', value=str(stack_files['right']))])
    assert spin_until(executor, lambda: duty(root, STEERING) == STEER_RIGHT_NS)
    assert duty(root, THROTTLE) == THROTTLE_1MPS_NS

    # Stop: neutral at once, and it stays there while frames keep coming.
    assert call_enable(servo, executor, False).success
    assert duty(root, STEERING) == STEER_CENTRE_NS
    assert duty(root, THROTTLE) == THROTTLE_NEUTRAL_NS
    processed = inference.statistics.processed
    assert spin_until(executor, lambda: inference.statistics.processed >= processed + 5)
    assert duty(root, THROTTLE) == THROTTLE_NEUTRAL_NS


# --- the same stack as separate processes, as `ros2 launch` runs it on a car ------------------

def test_separate_processes_drive_and_watchdog_neutralises_a_killed_pipeline(
        executor, ros_context, stack_files, processes):
    root = stack_files['pwm_root']
    processes.append(start_node_process('servo_node', capture_stderr=True, pwm_root=root,
                                        calibration_file=stack_files['calibration']))
    processes.append(start_node_process('inference_node', model=stack_files['model']))
    processes.append(start_node_process('camera_node', source=stack_files['left'], fps=15.0,
                                        output_width=160, output_height=120))
    servo, inference, camera = processes

    client_node = rclpy.create_node('pipeline_test_client', context=ros_context)
    executor.add_node(client_node)
    assert call_enable(client_node, executor, True).success
    assert wait_for(lambda: duty(root, STEERING) == STEER_LEFT_NS, 30.0) is not None, \
        servo.stderr.read1().decode() if servo.poll() is not None else 'no command reached PWM'
    assert duty(root, THROTTLE) == THROTTLE_1MPS_NS

    # The policy dies mid-race: the servo's watchdog (250 ms after the last command, which
    # came at most one frame before the kill) must bring the car to neutral.
    inference.kill()
    elapsed = wait_for(lambda: (duty(root, THROTTLE), duty(root, STEERING)) ==
                       (THROTTLE_NEUTRAL_NS, STEER_CENTRE_NS), 5.0)
    assert elapsed is not None, 'the outputs never returned to neutral'
    assert elapsed <= spec.WATCHDOG_TIMEOUT_S + 0.15, f'neutral after {elapsed:.3f} s'
    assert servo.poll() is None and camera.poll() is None, 'the other nodes must keep running'
