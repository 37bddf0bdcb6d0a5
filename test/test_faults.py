"""Fault injection on the real stack: camera, inference and servo as separate processes
(started through their own main(), as `ros2 launch` starts them on a car), a temporary
sysfs PWM tree polled for the duty cycles, and this process watching the topics.

Faults: the inference process killed or frozen mid-race, the camera process killed, the
camera source lost and back, inference three times slower than the camera, model swaps
back and forth under full frame rate, a model folder with a hostile metadata file, and
subscribers that stall (SIGSTOP) on the image and command topics.

The watchdog figure is measured against the LAST command: this process subscribes to
/inference/cmd_vel and notes when each command arrives; the duty files must read neutral
within watchdog_timeout (250 ms) of the last one, plus POLL_SLACK_S for this process's own
delivery and polling jitter on a loaded 2-core machine.
"""

from __future__ import annotations

import functools
import math
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import TwistStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from deepracer_nodes.core import onnx_build, spec
from deepracer_nodes.core.drive import drive_to_twist
from deepracer_nodes.core.policy import Policy
from deepracer_nodes.core.sysfs_tree import duty_ns, make_pwm_tree
from deepracer_nodes.ros_conversions import stamp_to_ns
from deepracer_nodes.ros_runtime import (
    call_set_bool, set_remote_parameter, start_node_process, wait_for)

STEERING, THROTTLE = spec.PWM.steering_channel, spec.PWM.throttle_channel
STEER_LEFT_NS, STEER_CENTRE_NS = 1_700_000, 1_450_000   # factory calibration, +30 deg / 0
THROTTLE_1MPS_NS, THROTTLE_NEUTRAL_NS = 1_381_875, 1_446_000  # see test_pipeline.py
# This process's own share of the watchdog measurement: the duty files are polled every
# millisecond and the last command reaches this process and the servo at nearly the same
# time; on 2 busy cores either can lag by a scheduling slice.
POLL_SLACK_S = 0.03
START_TIMEOUT_S = 30.0


# --- processes and a watcher in this process --------------------------------------------------

# Node processes keep their log, for the failure message.
start_node = functools.partial(start_node_process, capture_stderr=True)


def stderr_of(process: subprocess.Popen) -> str:
    if process.poll() is None:
        return '(still running)'
    return process.stderr.read().decode(errors='replace')[-3000:]


@dataclass
class Received:
    """Arrival times (time.monotonic) and header stamps (ns) of one topic's messages."""

    times: list[float] = field(default_factory=list)
    stamps: list[int] = field(default_factory=list)
    wall_ns: list[int] = field(default_factory=list)
    messages: list = field(default_factory=list)

    def count_between(self, start: float, end: float) -> int:
        return sum(1 for t in self.times if start <= t < end)


class Watcher:
    """Subscribes to the pipeline's topics in this process, on its own executor thread."""

    def __init__(self, context, keep_images: bool = False) -> None:
        self.node = rclpy.create_node('fault_watcher', context=context)
        self.lock = threading.Lock()
        self.commands, self.infos, self.images = Received(), Received(), Received()
        self.diagnostics: dict[str, dict[str, str]] = {}
        self.diagnostics_at: dict[str, float] = {}
        self._keep_images = keep_images
        reliable = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(TwistStamped, spec.TOPICS.auto_cmd_vel,
                                      self._on_command, reliable)
        self.node.create_subscription(CameraInfo, spec.TOPICS.camera_info, self._on_info,
                                      qos_profile_sensor_data)
        self.node.create_subscription(DiagnosticArray, spec.TOPICS.diagnostics,
                                      self._on_diagnostics, reliable)
        if keep_images:
            self.node.create_subscription(Image, spec.TOPICS.image, self._on_image,
                                          QoSProfile(depth=1000,
                                                     reliability=ReliabilityPolicy.BEST_EFFORT))
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _note(self, received: Received, stamp, message=None) -> None:
        now, wall = time.monotonic(), time.time_ns()
        with self.lock:
            received.times.append(now)
            received.wall_ns.append(wall)
            received.stamps.append(stamp_to_ns(stamp))
            if message is not None:
                received.messages.append(message)

    def _on_command(self, msg: TwistStamped) -> None:
        self._note(self.commands, msg.header.stamp, (msg.twist.linear.x, msg.twist.angular.z))

    def _on_info(self, msg: CameraInfo) -> None:
        self._note(self.infos, msg.header.stamp)

    def _on_image(self, msg: Image) -> None:
        grey = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width, 3)[..., 1]
        left = float(grey[:, :msg.width // 3].mean()) > float(grey[:, -msg.width // 3:].mean())
        self._note(self.images, msg.header.stamp, 'left' if left else 'right')

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            with self.lock:
                self.diagnostics[status.name] = {kv.key: kv.value for kv in status.values}
                self.diagnostics_at[status.name] = time.monotonic()

    def last_command_time(self) -> float | None:
        with self.lock:
            return self.commands.times[-1] if self.commands.times else None

    def set_parameter(self, node_name: str, name: str, value: str,
                      timeout_s: float = 10.0) -> tuple[bool, str]:
        """SetParameters on another process's node, as `ros2 param set` does."""
        return set_remote_parameter(self.node, node_name, name, value, timeout_s)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        self.thread.join(timeout=2.0)


@pytest.fixture
def watcher(ros_context):
    created: list[Watcher] = []

    def make(**kwargs) -> Watcher:
        created.append(Watcher(ros_context, **kwargs))
        return created[-1]
    yield make
    for item in created:
        item.close()


def bright_frame_folder(folder: Path, thirds: tuple[int, ...] = (0,)) -> Path:
    """One 640x480 frame per entry of thirds, that third (0 left, 2 right) bright."""
    folder.mkdir(parents=True)
    for index, third in enumerate(thirds):
        frame = np.full((480, 640, 3), 30, np.uint8)
        frame[:, third * 640 // 3:(third + 1) * 640 // 3] = 230
        cv2.imwrite(str(folder / f'frame{index:02d}.png'), frame)
    return folder


def brightest_model(folder: Path, actions: int = 3, steering_deg: float = 30.0,
                    speed: float = 1.0) -> Path:
    return onnx_build.write_model_folder(
        folder, onnx_build.brightest_strip_network(actions),
        onnx_build.steering_sweep_metadata(actions, max_steering_deg=steering_deg,
                                           speeds_mps=speed))


@dataclass
class Stack:
    root: Path
    servo: subprocess.Popen
    inference: subprocess.Popen
    camera: subprocess.Popen
    model: Path


def drive_stack(tmp_path: Path, processes: list, watcher: Watcher, context,
                camera_folder: Path | None = None, fps: float = 30.0) -> Stack:
    """Servo, inference (brightest-third model) and camera (left frame) processes, the car
    enabled and driving left at 1 m/s."""
    root = make_pwm_tree(tmp_path)
    model = brightest_model(tmp_path / 'model')
    folder = camera_folder or bright_frame_folder(tmp_path / 'frames')
    servo = start_node('servo_node', pwm_root=root,
                       calibration_file=tmp_path / 'calibration.json')
    inference = start_node('inference_node', model=model)
    camera = start_node('camera_node', source=folder, fps=float(fps), output_width=160,
                        output_height=120, reconnect_interval=0.2)
    processes.extend([servo, inference, camera])
    call_set_bool(context, spec.TOPICS.servo_enable, True, timeout_s=START_TIMEOUT_S)
    driving = wait_for(lambda: duty_ns(root, STEERING) == STEER_LEFT_NS, START_TIMEOUT_S)
    assert driving is not None, [stderr_of(p) for p in processes]
    assert duty_ns(root, THROTTLE) == THROTTLE_1MPS_NS
    assert wait_for(lambda: len(watcher.commands.times) > 10, 10.0) is not None
    return Stack(root, servo, inference, camera, model)


@dataclass(frozen=True)
class Neutralised:
    since_last_command_s: float
    since_fault_s: float
    driving_samples: int


def measure_neutral(stack: Stack, watcher: Watcher, fault, timeout_s: float = 3.0,
                    hold_s: float = 0.5) -> Neutralised:
    """Apply the fault, poll the duty files every millisecond until both are neutral, and
    check they stay there; the time is taken from the last command this process saw."""
    fault_at = time.monotonic()
    fault()
    driving = 0
    neutral_at = None
    while time.monotonic() - fault_at < timeout_s:
        throttle, steering = duty_ns(stack.root, THROTTLE), duty_ns(stack.root, STEERING)
        if (throttle, steering) == (THROTTLE_NEUTRAL_NS, STEER_CENTRE_NS):
            neutral_at = time.monotonic()
            break
        # The channels are written one after the other, so a poll between the two writes
        # sees one neutral and the other not yet: each channel holds its drive or neutral
        # value, never anything else.
        assert throttle in (THROTTLE_1MPS_NS, THROTTLE_NEUTRAL_NS) and \
            steering in (STEER_LEFT_NS, STEER_CENTRE_NS), \
            f'unexpected duty cycles {throttle}, {steering} before neutral'
        driving += 1
        time.sleep(0.001)
    assert neutral_at is not None, f'not neutral {timeout_s} s after the fault'
    last_command = watcher.last_command_time()
    held_until = time.monotonic() + hold_s
    while time.monotonic() < held_until:
        assert (duty_ns(stack.root, THROTTLE), duty_ns(stack.root, STEERING)) == \
            (THROTTLE_NEUTRAL_NS, STEER_CENTRE_NS), 'left neutral without a command'
        time.sleep(0.01)
    assert watcher.last_command_time() == last_command, 'commands went on after the fault'
    return Neutralised(neutral_at - last_command, neutral_at - fault_at, driving)


def assert_within_watchdog(result: Neutralised) -> None:
    assert 0 < result.since_last_command_s <= spec.WATCHDOG_TIMEOUT_S + POLL_SLACK_S, result
    # The servo's watchdog fires one check period (timeout / 10) early at the soonest.
    assert result.since_last_command_s >= spec.WATCHDOG_TIMEOUT_S * 0.9 - POLL_SLACK_S, result


# --- the watchdog under process faults -----------------------------------------------------------

def test_watchdog_neutral_within_limit_when_inference_is_killed_three_times(
        tmp_path, processes, watcher, ros_context):
    watch = watcher()
    stack = drive_stack(tmp_path, processes, watch, ros_context)
    results = []
    for attempt in range(3):
        results.append(measure_neutral(stack, watch, stack.inference.kill))
        stack.inference.wait(timeout=5)
        # A new inference process: the car drives again without restarting the servo.
        stack.inference = start_node('inference_node', model=stack.model)
        processes.append(stack.inference)
        assert wait_for(lambda: duty_ns(stack.root, STEERING) == STEER_LEFT_NS,
                        START_TIMEOUT_S) is not None, stderr_of(stack.inference)
    print('inference killed: neutral after last command (s):',
          [round(r.since_last_command_s, 4) for r in results])
    for result in results:
        assert_within_watchdog(result)
    assert stack.servo.poll() is None and stack.camera.poll() is None


def test_watchdog_neutral_within_limit_when_inference_freezes(tmp_path, processes, watcher,
                                                              ros_context):
    watch = watcher()
    stack = drive_stack(tmp_path, processes, watch, ros_context)
    result = measure_neutral(stack, watch, lambda: stack.inference.send_signal(signal.SIGSTOP))
    print(f'inference frozen: neutral {result.since_last_command_s:.4f} s after last command')
    assert_within_watchdog(result)
    stack.inference.send_signal(signal.SIGCONT)
    assert wait_for(lambda: duty_ns(stack.root, STEERING) == STEER_LEFT_NS, 10.0) is not None


def test_watchdog_neutral_within_limit_when_the_camera_process_dies(tmp_path, processes,
                                                                    watcher, ros_context):
    watch = watcher()
    stack = drive_stack(tmp_path, processes, watch, ros_context)
    result = measure_neutral(stack, watch, stack.camera.kill)
    print(f'camera killed: neutral {result.since_last_command_s:.4f} s after last command')
    assert_within_watchdog(result)
    assert stack.servo.poll() is None and stack.inference.poll() is None


def test_camera_source_lost_and_back_resumes_without_a_restart(tmp_path, processes, watcher,
                                                               ros_context):
    watch = watcher()
    folder = bright_frame_folder(tmp_path / 'frames')
    stack = drive_stack(tmp_path, processes, watch, ros_context, camera_folder=folder)
    away = folder.with_name('frames.away')
    result = measure_neutral(stack, watch, lambda: folder.rename(away))
    print(f'camera source lost: neutral {result.since_last_command_s:.4f} s after last command')
    assert_within_watchdog(result)
    time.sleep(1.0)
    lost_since = time.monotonic()
    time.sleep(0.5)
    assert watch.infos.count_between(lost_since, time.monotonic()) == 0, 'frames without a source'

    away.rename(folder)
    back_at = time.monotonic()
    resumed = wait_for(lambda: watch.infos.count_between(back_at, math.inf) > 0, 5.0)
    assert resumed is not None, 'frames did not resume'
    assert wait_for(lambda: duty_ns(stack.root, STEERING) == STEER_LEFT_NS, 5.0) is not None
    time.sleep(2.0)
    rate = watch.infos.count_between(time.monotonic() - 1.5, time.monotonic()) / 1.5
    print(f'camera source back: frames after {resumed:.2f} s, then {rate:.1f} fps')
    assert rate >= 30.0 * 0.8
    assert all(p.poll() is None for p in (stack.servo, stack.inference, stack.camera)), \
        'no process may have been restarted or died'


# --- inference slower than the camera ----------------------------------------------------------

def heavy_network(size: int, matmuls: int):
    """A continuous model doing real work: `matmuls` products of size x size matrices built
    from the image (nothing for onnxruntime to fold away), then a tanh head."""
    rng = np.random.default_rng(0)
    builder = onnx_build._GraphBuilder()
    input_name, output_name = onnx_build.DEEPRACER_INPUT_NAME, onnx_build.DEEPRACER_OUTPUT_NAME
    height, width = spec.MODEL_INPUT.height, spec.MODEL_INPUT.width
    flat = onnx_build._scaled_flat_input(builder, input_name, height, width)
    vector = builder.node('MatMul', [flat, builder.constant(
        'spread', (rng.standard_normal((height * width, size)) * 1e-3).astype(np.float32))],
        'vector')
    tensor = builder.node('Mul', [builder.constant(
        'basis', (rng.standard_normal((size, size)) / size).astype(np.float32)), vector],
        'matrix')
    for index in range(matmuls):
        tensor = builder.node('MatMul', [tensor, builder.constant(
            f'work{index}', (rng.standard_normal((size, size)) / math.sqrt(size))
            .astype(np.float32))], f'work{index}_out')
    mean = builder.node('ReduceMean', [tensor], 'mean', axes=[0], keepdims=1)
    head = builder.node('MatMul', [mean, builder.constant(
        'head_w', (rng.standard_normal((size, 2)) * 1e-2).astype(np.float32))], 'head')
    builder.node('Tanh', [head], output_name)
    return builder.model(input_name, (1, height, width, 1), output_name, 2, 'heavy')


def slow_model(folder: Path, at_least_s: float) -> tuple[Path, float]:
    """A model whose inference (one thread) takes at least at_least_s here; (folder, time)."""
    matmuls = 1
    while True:
        onnx_build.write_model_folder(folder, heavy_network(768, matmuls),
                                      onnx_build.continuous_metadata())
        policy = Policy.load(folder, intra_op_threads=1)
        frame = np.zeros((spec.MODEL_INPUT.height, spec.MODEL_INPUT.width, 3), np.uint8)
        seconds = float(np.median([policy.act(frame).inference_s for _ in range(7)]))
        if seconds >= at_least_s or matmuls >= 16:
            return folder, seconds
        matmuls = max(matmuls + 1, math.ceil(matmuls * at_least_s / seconds))


def test_slow_inference_drops_stale_frames_and_latency_stays_flat(
        tmp_path, processes, watcher, ros_context):
    fps = 30.0
    model, inference_s = slow_model(tmp_path / 'slow', at_least_s=3.0 / fps)
    watch = watcher()
    processes.append(start_node('inference_node', model=model, intra_op_threads=1))
    processes.append(start_node('camera_node', source='synthetic', fps=fps,
                                output_width=160, output_height=120))
    assert wait_for(lambda: len(watch.commands.times) > 5, START_TIMEOUT_S) is not None, \
        [stderr_of(p) for p in processes]
    time.sleep(1.0)
    start = time.monotonic()
    time.sleep(15.0)
    end = time.monotonic()
    with watch.lock:
        picked = [(t, (wall - stamp) * 1e-9) for t, wall, stamp in zip(
            watch.commands.times, watch.commands.wall_ns, watch.commands.stamps)
            if start <= t < end]
        published = watch.infos.count_between(start, end)
    latency = np.array([value for _, value in picked])
    p50, p99 = np.percentile(latency, [50, 99])
    third = len(latency) // 3
    first, last = latency[:third].mean(), latency[-third:].mean()
    processed = len(latency)
    print(f'slow inference {inference_s * 1e3:.0f} ms at {fps:g} fps: {published} frames, '
          f'{processed} processed, {published - processed} dropped; stamp->command p50 '
          f'{p50 * 1e3:.0f} ms p99 {p99 * 1e3:.0f} ms max {latency.max() * 1e3:.0f} ms; '
          f'first third {first * 1e3:.0f} ms, last third {last * 1e3:.0f} ms')
    assert published >= 0.8 * fps * (end - start), 'the camera must keep its rate'
    assert processed < 0.6 * published, 'inference at 1/3 of the rate must drop frames'
    assert p99 <= 2.0 * p50, 'latency must stay flat'
    # No queue: a frame waits at most one inference before its own, whatever the run time.
    assert latency.max() <= 3.0 * inference_s + 0.1
    assert last <= first * 1.25 + 0.01, 'latency grew over the run: something queues'


# --- model swaps under full frame rate ---------------------------------------------------------

def test_model_swaps_under_full_frame_rate_lose_no_command_and_never_mix(
        tmp_path, processes, watcher, ros_context):
    fps = 30.0
    folder = bright_frame_folder(tmp_path / 'frames', thirds=(0, 2))
    models = {'A': brightest_model(tmp_path / 'A', 3, 30.0, 1.0),
              'B': brightest_model(tmp_path / 'B', 5, 20.0, 2.0)}
    expected = {  # (model, frame) -> (linear.x, angular.z); left frames steer left
        (name, frame): drive_to_twist(speed, math.radians(angle if frame == 'left' else -angle),
                                      spec.CAR.wheelbase_m)
        for name, speed, angle in (('A', 1.0, 30.0), ('B', 2.0, 20.0))
        for frame in ('left', 'right')}
    watch = watcher(keep_images=True)
    inference = start_node('inference_node', model=models['A'])
    processes.append(inference)
    # Frames only once this process hears the inference node, so it sees every command.
    assert wait_for(lambda: 'inference_node: inference' in watch.diagnostics_at,
                    START_TIMEOUT_S) is not None, stderr_of(inference)
    time.sleep(0.5)
    camera = start_node('camera_node', source=folder, fps=fps, output_width=160,
                        output_height=120)
    processes.append(camera)
    assert wait_for(lambda: len(watch.commands.times) > 5, START_TIMEOUT_S) is not None, \
        [stderr_of(p) for p in processes]

    swaps, first_command_s = 20, []
    for index in range(swaps):
        name = 'B' if index % 2 == 0 else 'A'
        ok, reason = watch.set_parameter('inference_node', 'model', str(models[name]))
        assert ok, reason
        swapped_at = time.monotonic()
        outputs = {expected[(name, 'left')], expected[(name, 'right')]}

        def new_model_answered() -> bool:
            with watch.lock:
                return any(t > swapped_at and command in outputs for t, command in
                           zip(watch.commands.times, watch.commands.messages))
        waited = wait_for(new_model_answered, 5.0, step_s=0.001)
        assert waited is not None, f'no command from model {name} after swap {index}'
        first_command_s.append(waited)
        time.sleep(0.25)

    camera.send_signal(signal.SIGINT)
    camera.wait(timeout=10)
    time.sleep(0.5)
    stopped_at = time.monotonic()
    name = 'inference_node: inference'
    assert wait_for(lambda: watch.diagnostics_at.get(name, 0.0) > stopped_at, 5.0) is not None
    diagnostics = watch.diagnostics[name]
    processed = int(diagnostics['frames processed'])
    with watch.lock:
        commands = list(zip(watch.commands.stamps, watch.commands.messages))
        frames = dict(zip(watch.images.stamps, watch.images.messages))
    matched = mismatched = 0
    valid = set(expected.values())
    for stamp, command in commands:
        assert command in valid, f'a command no model gives: {command}'
        frame = frames.get(stamp)
        if frame is None:
            continue  # this process missed that image (best effort); the command is valid
        if command in (expected[('A', frame)], expected[('B', frame)]):
            matched += 1
        else:
            mismatched += 1
    print(f'{swaps} swaps at {fps:g} fps: {len(commands)} commands = {processed} frames '
          f'processed, {matched} checked against their frame, {mismatched} wrong; first '
          f'command from the new model after {np.median(first_command_s) * 1e3:.0f} ms '
          f'(median), {max(first_command_s) * 1e3:.0f} ms (max)')
    assert mismatched == 0
    assert matched >= 0.95 * len(commands)
    assert len(commands) == processed, 'every processed frame must give one command'
    assert int(diagnostics['inference errors']) == 0
    assert inference.poll() is None


def test_a_hostile_model_folder_is_refused_and_the_old_model_keeps_driving(
        tmp_path, processes, watcher, ros_context):
    watch = watcher()
    good = brightest_model(tmp_path / 'good')
    hostile = brightest_model(tmp_path / 'hostile')
    (hostile / 'model_metadata.json').write_text('[' * 100_000)
    folder = bright_frame_folder(tmp_path / 'frames')
    inference = start_node('inference_node', model=good)
    processes.extend([inference, start_node('camera_node', source=folder, fps=30.0,
                                            output_width=160, output_height=120)])
    assert wait_for(lambda: len(watch.commands.times) > 5, START_TIMEOUT_S) is not None
    ok, reason = watch.set_parameter('inference_node', 'model', str(hostile))
    time.sleep(1.0)
    assert inference.poll() is None, 'the inference node died: ' + stderr_of(inference)
    assert not ok and 'model_metadata.json' in reason, reason
    before = len(watch.commands.times)
    assert wait_for(lambda: len(watch.commands.times) > before + 10, 5.0) is not None


# --- stalled subscribers -----------------------------------------------------------------------

STALLING_SUBSCRIBER = '''
import sys, rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from geometry_msgs.msg import TwistStamped
from sensor_msgs.msg import Image
rclpy.init()
node = rclpy.create_node('stalling_subscriber')
node.create_subscription(Image, sys.argv[1], lambda m: None,
                         QoSProfile(depth=1000, reliability=ReliabilityPolicy.BEST_EFFORT))
node.create_subscription(TwistStamped, sys.argv[2], lambda m: None,
                         QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
print('ready', flush=True)
rclpy.spin(node)
'''


def test_a_stalled_subscriber_slows_neither_camera_nor_inference(tmp_path, processes, watcher,
                                                                 ros_context):
    fps = 30.0
    watch = watcher()
    stack = drive_stack(tmp_path, processes, watch, ros_context, fps=fps)
    stalled = subprocess.Popen([sys.executable, '-c', STALLING_SUBSCRIBER, spec.TOPICS.image,
                                spec.TOPICS.auto_cmd_vel], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    processes.append(stalled)
    assert stalled.stdout.readline().strip() == b'ready', stderr_of(stalled)
    time.sleep(2.0)  # matched with both publishers

    def rates(seconds: float) -> tuple[float, float]:
        start = time.monotonic()
        time.sleep(seconds)
        end = time.monotonic()
        return (watch.infos.count_between(start, end) / (end - start),
                watch.commands.count_between(start, end) / (end - start))

    before = rates(4.0)
    stalled.send_signal(signal.SIGSTOP)
    during = rates(8.0)
    print(f'stalled subscriber: camera {before[0]:.1f} -> {during[0]:.1f} fps, commands '
          f'{before[1]:.1f} -> {during[1]:.1f} per s')
    assert during[0] >= 0.9 * before[0] and during[0] >= 0.8 * fps
    assert during[1] >= 0.9 * before[1] and during[1] >= 0.8 * fps
    assert duty_ns(stack.root, STEERING) == STEER_LEFT_NS, 'the car must still be driving'
