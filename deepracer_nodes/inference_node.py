"""Inference node: camera frames -> the ONNX policy -> stamped drive commands.

Subscribes to sensor_msgs/Image, runs deepracer_nodes.core.policy on each frame and
publishes geometry_msgs/TwistStamped (linear.x = speed, angular.z = speed * tan(steering)
/ wheelbase) stamped with the FRAME's stamp, so latency is measurable end to end; for
discrete models also the probabilities and the chosen action index.

Newest frame only: the image subscription keeps one message (KEEP_LAST, depth 1), so
while a frame is being processed the middleware overwrites the waiting one instead of
queueing: when inference is slower than the camera, stale frames are dropped and
latency does not grow. Dropped frames are counted from the gaps in the publisher's
sequence numbers (exact for one camera; with several publishers on the topic the count
is not meaningful).

Model swap: setting the `model` parameter (the ROS SetParameters service, which returns
the reason of a refusal to the caller) loads and checks the new model BESIDE the running
one and swaps it in with one assignment; if it fails, the parameter is refused with the
reason and the old model keeps driving. `~/reload_model` (std_srvs/Trigger) reloads the
current model from disk with the same safety.

main() spins a single-threaded executor. Measured here with camera, inference and servo
as separate processes at 30 fps: rclpy's MultiThreadedExecutor dropped over half the
frames and had a stamp-to-PWM p99 of ~45 ms, the single-threaded one dropped none with
a p99 of ~7 ms. The price: a model load holds the frame callback for the load time (2 ms
for a 1 MB model, 20-40 ms for a 23 MB DeepRacer CNN here), during which the servo keeps
the last command (its watchdog allows 250 ms) and the newest frame waits, never a queue.
"""

from __future__ import annotations

import array
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import TwistStamped
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Float32MultiArray, Int32
from std_srvs.srv import Trigger

from deepracer_nodes.ros_runtime import run_node
from deepracer_nodes.core import images
from deepracer_nodes.core.drive import drive_to_twist
from deepracer_nodes.core.policy import (
    DEFAULT_INTRA_OP_THREADS, Decision, Policy, default_search_dirs, resolve_model)
from deepracer_nodes.core.preprocess import PreprocessOptions
from deepracer_nodes.core.spec import CAR, FRAMES, TOPICS
from deepracer_nodes.ros_conversions import image_to_raw, stamp_to_ns

DIAGNOSTICS_PERIOD_S = 1.0
LOG_THROTTLE_S = 5.0
# Latency samples kept for the percentiles: ~20 s at the camera's 15 fps.
LATENCY_WINDOW = 300

# name -> (default, description); changeable while driving.
PARAMETERS = {
    'model': ('', 'model folder path, or a model name looked up in models_dir, the user '
                  'models folder, the bundled models and the DeepRacer device folder; '
                  'empty = no model, the node idles. Setting it swaps the model safely.'),
    'models_dir': ('', 'extra folder searched first for model names'),
    'threshold': (False, 'Otsu-threshold the grey image (a DeepRacer device variant)'),
    'mask_top_rows': (0, 'set this many top rows of the model-size image to 0 (40 on the '
                         'device variant)'),
    'intra_op_threads': (DEFAULT_INTRA_OP_THREADS,
                         'onnxruntime threads per inference; changing it reloads the model'),
    'publish_probabilities': (True, 'publish the probabilities and action index of discrete '
                                    'models'),
}
READ_ONLY_PARAMETERS = {
    'image_topic': (TOPICS.image, 'topic of sensor_msgs/Image'),
    'cmd_vel_topic': (TOPICS.auto_cmd_vel, 'topic of the geometry_msgs/TwistStamped command'),
    'probabilities_topic': (TOPICS.probabilities, 'topic of std_msgs/Float32MultiArray'),
    'action_index_topic': (TOPICS.action_index, 'topic of std_msgs/Int32'),
}
# Parameters whose change needs the model loaded again.
_RELOAD_PARAMETERS = ('model', 'models_dir', 'intra_op_threads')


@dataclass(frozen=True)
class LoadedModel:
    """The running policy and what was asked for, swapped as one reference."""

    requested: str
    policy: Policy


class FrameStatistics:
    """Per-frame counters and latency windows, shared by the frame and diagnostics threads."""

    def __init__(self, window: int = LATENCY_WINDOW) -> None:
        self.lock = threading.Lock()
        self.processed = 0
        self.dropped = 0
        self.rejected_images = 0
        self.inference_errors = 0
        self.unstamped = 0
        self.inference_s: deque[float] = deque(maxlen=window)
        self.stamp_to_publish_s: deque[float] = deque(maxlen=window)
        self.overhead_s: deque[float] = deque(maxlen=window)
        self.last_sequence: int | None = None

    def count_sequence(self, sequence: int | None) -> None:
        # Each gap in the publisher's numbering is a frame the depth-1 queue overwrote.
        if sequence is None:
            return
        if self.last_sequence is not None and sequence > self.last_sequence + 1:
            self.dropped += sequence - self.last_sequence - 1
        self.last_sequence = sequence

    def inference_samples_s(self) -> list[float]:
        """The raw onnxruntime times (session.run) of the frames in the window, oldest first."""
        with self.lock:
            return list(self.inference_s)


def _percentiles_ms(samples: deque[float], *quantiles: float) -> list[str]:
    if not samples:
        return ['n/a'] * len(quantiles)
    values = np.percentile(np.fromiter(samples, float), quantiles) * 1e3
    return [f'{v:.2f}' for v in values]


class InferenceNode(Node):
    """Drives with the newest camera frame through the loaded model."""

    def __init__(self, latency_window: int = LATENCY_WINDOW, **kwargs) -> None:
        """latency_window: frames kept for the percentiles (a benchmark keeps a whole run)."""
        super().__init__('inference_node', **kwargs)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        for name, (default, description) in READ_ONLY_PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(
                description=description + ' (set at start only)', read_only=True))
        self._stats = FrameStatistics(latency_window)
        self._swap_lock = threading.Lock()  # one load at a time (parameter vs reload service)
        self._loaded: LoadedModel | None = None
        self._last_swap = 'none yet'
        self._publish_probabilities = bool(self.get_parameter('publish_probabilities').value)
        self._diag_processed, self._diag_time = 0, time.monotonic()

        self._cmd_publisher = self.create_publisher(
            TwistStamped, self.get_parameter('cmd_vel_topic').value, 10)
        self._probabilities_publisher = self.create_publisher(
            Float32MultiArray, self.get_parameter('probabilities_topic').value, 10)
        self._index_publisher = self.create_publisher(
            Int32, self.get_parameter('action_index_topic').value, 10)
        self._diagnostics_publisher = self.create_publisher(
            DiagnosticArray, TOPICS.diagnostics, 10)

        self._load_initial_model()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_service(Trigger, '~/reload_model', self._on_reload)
        # Depth 1: a frame waiting while the previous one is processed is replaced, not queued.
        newest_only = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                                 reliability=qos_profile_sensor_data.reliability,
                                 durability=qos_profile_sensor_data.durability)
        self._image_subscription = self.create_subscription(
            Image, self.get_parameter('image_topic').value, self._on_image, newest_only,
            callback_group=MutuallyExclusiveCallbackGroup())
        self._diagnostics_timer = self.create_timer(
            DIAGNOSTICS_PERIOD_S, self._publish_diagnostics,
            callback_group=MutuallyExclusiveCallbackGroup())

    # --- models -------------------------------------------------------------------------

    def _load_model(self, requested: str, models_dir: str, options: PreprocessOptions,
                    threads: int) -> LoadedModel | None:
        """Load and check a model (None for an empty request); raises ModelError."""
        if not requested.strip():
            return None
        folder = resolve_model(requested, default_search_dirs([models_dir] if models_dir else []))
        return LoadedModel(requested, Policy.load(folder, options, threads))

    def _settings(self, changes: dict) -> tuple[str, str, PreprocessOptions, int]:
        def value(name):
            return changes[name] if name in changes else self.get_parameter(name).value
        threads = value('intra_op_threads')
        if threads < 1:
            raise ValueError(f'intra_op_threads must be >= 1, got {threads}')
        options = PreprocessOptions(threshold=value('threshold'),
                                    mask_top_rows=value('mask_top_rows'))
        return value('model'), value('models_dir'), options, threads

    def _load_initial_model(self) -> None:
        try:
            self._swap(self._load_model(*self._settings({})), 'start')
        except ValueError as error:
            # Idle rather than die: /diagnostics shows the reason and a good model can be set.
            self._last_swap = f'failed at start: {error}'
            self.get_logger().error(f'no model loaded, idling: {error}')

    def _swap(self, loaded: LoadedModel | None, why: str) -> None:
        self._loaded = loaded  # the one assignment the frame callback sees
        if loaded is None:
            self._last_swap = f'{why}: no model (parameter model is empty), idling'
            self.get_logger().warning(self._last_swap)
        else:
            policy = loaded.policy
            self._last_swap = f'{why}: loaded {policy.name} from {policy.folder}'
            self.get_logger().info(self._last_swap)

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        changes = {p.name: p.value for p in parameters if p.name in PARAMETERS}
        if not changes:
            return SetParametersResult(successful=True)
        with self._swap_lock:
            try:
                requested, models_dir, options, threads = self._settings(changes)
                if any(name in changes for name in _RELOAD_PARAMETERS):
                    loaded = self._load_model(requested, models_dir, options, threads)
                elif self._loaded is not None and options != self._loaded.policy.options:
                    loaded = LoadedModel(self._loaded.requested,
                                         self._loaded.policy.with_options(options))
                else:
                    loaded = self._loaded
            except ValueError as error:  # ModelError, MetadataError and bad values
                self._last_swap = f'refused {changes}: {error}'
                self.get_logger().error(self._last_swap)
                return SetParametersResult(successful=False, reason=str(error))
            if loaded is not self._loaded:
                self._swap(loaded, 'parameter change')
            self._publish_probabilities = bool(changes.get('publish_probabilities',
                                                           self._publish_probabilities))
        return SetParametersResult(successful=True)

    def _on_reload(self, request: Trigger.Request, response: Trigger.Response):
        with self._swap_lock:
            try:
                loaded = self._load_model(*self._settings({}))
            except ValueError as error:
                self._last_swap = f'reload refused: {error}'
                self.get_logger().error(self._last_swap)
                response.success, response.message = False, str(error)
                return response
            self._swap(loaded, 'reload')
        response.success, response.message = True, self._last_swap
        return response

    # --- frames -------------------------------------------------------------------------

    def _on_image(self, msg: Image, info: dict) -> None:
        started = time.perf_counter()
        loaded = self._loaded  # read once: a swap never splits a frame between two models
        with self._stats.lock:
            self._stats.count_sequence(info.get('publication_sequence_number'))
        if loaded is None:
            self.get_logger().warning('no model loaded: frames are ignored',
                                      throttle_duration_sec=LOG_THROTTLE_S)
            return
        try:
            frame = self._frame(msg)
        except images.ImageFormatError as error:
            with self._stats.lock:
                self._stats.rejected_images += 1
            self.get_logger().warning(f'image rejected: {error}',
                                      throttle_duration_sec=LOG_THROTTLE_S)
            return
        try:
            decision = loaded.policy.act(frame)
        except ValueError as error:
            with self._stats.lock:
                self._stats.inference_errors += 1
            self.get_logger().error(f'inference failed: {error}',
                                    throttle_duration_sec=LOG_THROTTLE_S)
            return
        self._publish(msg, decision)
        self._record(msg, decision, time.perf_counter() - started)

    @staticmethod
    def _frame(msg: Image) -> np.ndarray:
        raw = image_to_raw(msg)
        # Grey frames go to the model as they are; colour ones as BGR (no copy for bgr8).
        return images.to_grey(raw) if raw.encoding in ('mono8', '8UC1', 'mono16') \
            else images.to_bgr(raw)

    def _publish(self, image: Image, decision: Decision) -> None:
        command = TwistStamped()
        command.header.stamp = image.header.stamp
        command.header.frame_id = FRAMES.base
        command.twist.linear.x, command.twist.angular.z = drive_to_twist(
            decision.speed_mps, decision.steering_angle_rad, CAR.wheelbase_m)
        self._cmd_publisher.publish(command)
        if decision.action_index is not None and self._publish_probabilities:
            self._probabilities_publisher.publish(
                Float32MultiArray(data=array.array('f', decision.probabilities.tobytes())))
            self._index_publisher.publish(Int32(data=decision.action_index))

    def _record(self, image: Image, decision: Decision, processing_s: float) -> None:
        stamp_ns = stamp_to_ns(image.header.stamp)
        now_ns = self.get_clock().now().nanoseconds
        with self._stats.lock:
            self._stats.processed += 1
            self._stats.inference_s.append(decision.inference_s)
            self._stats.overhead_s.append(processing_s - decision.inference_s)
            if stamp_ns == 0:
                self._stats.unstamped += 1  # e.g. the official camera node: no latency to measure
            else:
                self._stats.stamp_to_publish_s.append((now_ns - stamp_ns) * 1e-9)

    # --- diagnostics --------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        stats = self._stats
        with stats.lock:
            fps = (stats.processed - self._diag_processed) / max(now - self._diag_time, 1e-6)
            self._diag_processed, self._diag_time = stats.processed, now
            inference = _percentiles_ms(stats.inference_s, 50, 99)
            overhead = _percentiles_ms(stats.overhead_s, 50, 99)
            latency = _percentiles_ms(stats.stamp_to_publish_s, 50, 99, 100)
            counters = {'frames processed': stats.processed, 'frames dropped': stats.dropped,
                        'images rejected': stats.rejected_images,
                        'inference errors': stats.inference_errors,
                        'unstamped frames': stats.unstamped}
        loaded = self._loaded
        if loaded is None:
            level, message = DiagnosticStatus.WARN, 'idle: no model loaded'
            model = {'model': 'none'}
        else:
            policy = loaded.policy
            level, message = DiagnosticStatus.OK, f'driving with {policy.name}'
            spec_ = policy.input_spec
            model = {'model': policy.name, 'model path': str(Path(policy.folder).resolve()),
                     'action space': policy.metadata.action_space_type.value,
                     'training algorithm': policy.metadata.training_algorithm.value,
                     'input': f'{spec_.layout.value} {list(spec_.shape)} {spec_.name}',
                     'intra op threads': str(policy.intra_op_threads)}
        values = {**model, 'fps processed': f'{fps:.2f}',
                  'inference p50 ms': inference[0], 'inference p99 ms': inference[1],
                  'pipeline overhead p50 ms': overhead[0],
                  'pipeline overhead p99 ms': overhead[1],
                  'stamp to publish p50 ms': latency[0], 'stamp to publish p99 ms': latency[1],
                  'stamp to publish max ms': latency[2],
                  **{k: str(v) for k, v in counters.items()}, 'last swap': self._last_swap}
        status = DiagnosticStatus(level=level, name=f'{self.get_name()}: inference',
                                  message=message, hardware_id='onnxruntime-cpu')
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        diagnostics = DiagnosticArray(status=[status])
        diagnostics.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_publisher.publish(diagnostics)

    @property
    def loaded_model(self) -> LoadedModel | None:
        """The model driving now (None when idle)."""
        return self._loaded

    @property
    def statistics(self) -> FrameStatistics:
        """Frame counters and latency windows (read them under statistics.lock)."""
        return self._stats

    @property
    def frames_dropped(self) -> int:
        with self._stats.lock:
            return self._stats.dropped


def main(args: list[str] | None = None) -> int:
    # Single-threaded: see the module docstring (measured drops and latency).
    return run_node(InferenceNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
