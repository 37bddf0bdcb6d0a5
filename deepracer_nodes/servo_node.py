"""Servo/motor node: drive commands -> PWM duty cycles for the steering servo and the ESC.

Commands come from the policy (TwistStamped on spec.TOPICS.auto_cmd_vel) and from
teleop / Nav2 (Twist on spec.TOPICS.cmd_vel); the newest command wins. Each goes
through core.drive (Twist -> speed and steering angle -> DeepRacer's speed curve
and steering ratio) and core.calibration (ratio -> duty cycle in ns, clamped into
the calibrated range) to a core.pwm backend: Linux sysfs on a car, or a recorder
whose duty cycles are turned back into a Twist on spec.TOPICS.sim_cmd_vel for a
simulator, so a simulated car takes the very same path as a real one.

Safety: the car starts stopped at neutral (spec.TOPICS.servo_enable starts it); a
watchdog on the node clock returns to neutral within watchdog_timeout of the last
command; any exception in a callback writes neutral; destroy_node writes neutral
and disables the outputs; a corrupt calibration keeps the outputs disabled.

Benchmarks observe writes through ``node.backend.on_write = fn(channel, duty_ns, t_ns)``
(see core.pwm), with t_ns on the time.time_ns() clock.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Twist, TwistStamped
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_srvs.srv import SetBool

from deepracer_nodes.core import calibration as cal
from deepracer_nodes.core import drive, spec
from deepracer_nodes.core.pwm import PwmBackend, SimulatedPwm, SysfsPwm
from deepracer_nodes.ros_conversions import stamp_to_ns

NODE_NAME = 'servo_node'
BACKENDS = ('sysfs', 'sim')
# Commands: a short queue (the newest matters); best effort accepts both reliable and
# best-effort publishers.
COMMAND_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                         reliability=ReliabilityPolicy.BEST_EFFORT)
LATENCY_WINDOW = 1000
WATCHDOG_CHECKS_PER_TIMEOUT = 10
MAX_WATCHDOG_TIMEOUT_S = 2.0
DIAGNOSTICS_PERIOD_S = 1.0


def _percentile(sorted_values: list[int], fraction: float) -> int:
    index = min(len(sorted_values) - 1, max(0, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


class LatencyWindow:
    """Command -> PWM latencies (ns) over the last N writes: p50, p99, max."""

    def __init__(self, size: int = LATENCY_WINDOW) -> None:
        self._samples: deque[int] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, latency_ns: int) -> None:
        with self._lock:
            self._samples.append(latency_ns)

    def summary(self) -> dict[str, float] | None:
        """{'p50_ms', 'p99_ms', 'max_ms', 'samples'} or None without samples."""
        with self._lock:
            values = sorted(self._samples)
        if not values:
            return None
        return {'p50_ms': _percentile(values, 0.50) / 1e6,
                'p99_ms': _percentile(values, 0.99) / 1e6,
                'max_ms': values[-1] / 1e6, 'samples': float(len(values))}


def _fail_safe(callback: Callable[..., Any]) -> Callable[..., Any]:
    """Any exception in a callback: neutral outputs and an error in the log, never a crash."""
    @functools.wraps(callback)
    def guarded(self: ServoNode, *args: Any) -> Any:
        try:
            return callback(self, *args)
        except Exception as error:  # noqa: BLE001 - a callback must never take the car down
            self.go_neutral_after_error(f'{callback.__name__}: {error!r}')
            if args and isinstance(args[-1], SetBool.Response):
                response = args[-1]
                response.success, response.message = False, f'error: {error}'
                return response
            return None
    return guarded


class ServoNode(Node):
    """Drive commands to PWM duty cycles, with a watchdog and a start/stop service."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._declare_setup_parameters()
        self._blocked_reason: str | None = None
        self._calibration_source = 'none'
        self.calibration_is_factory_default = False
        calibration = self._load_calibration()
        self.backend: PwmBackend | None = self._create_backend()
        self.outputs: drive.DriveOutputs | None = None
        self._enabled = False
        self._last_command_ns: int | None = None
        self._commands_received = 0
        self._rate_window_start = time.monotonic()
        self._watchdog_trips = 0
        self.latency = LatencyWindow()
        self._start_outputs(calibration)

        self._sim_publisher = (self.create_publisher(Twist, spec.TOPICS.sim_cmd_vel, 1)
                               if isinstance(self.backend, SimulatedPwm) else None)
        self._diagnostics_publisher = self.create_publisher(
            DiagnosticArray, spec.TOPICS.diagnostics, 10)
        self.create_subscription(TwistStamped, spec.TOPICS.auto_cmd_vel,
                                 self._on_auto_cmd_vel, COMMAND_QOS)
        self.create_subscription(Twist, spec.TOPICS.cmd_vel, self._on_cmd_vel, COMMAND_QOS)
        self.create_service(SetBool, spec.TOPICS.servo_enable, self._on_enable)
        # Its own group: composed in a multi-threaded executor, busy callbacks cannot block it.
        self._watchdog_group = MutuallyExclusiveCallbackGroup()
        self._watchdog_timer = self._create_watchdog_timer()
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._on_diagnostics_timer)
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # --- set-up ---------------------------------------------------------------------------

    def _declare(self, name: str, default: Any, description: str,
                 read_only: bool = False) -> Any:
        descriptor = ParameterDescriptor(description=description, read_only=read_only)
        return self.declare_parameter(name, default, descriptor).value

    def _declare_setup_parameters(self) -> None:
        self._declare('backend', 'sysfs',
                      "PWM backend: 'sysfs' (the car's /sys/class/pwm) or 'sim' (publishes "
                      f'the resulting Twist on {spec.TOPICS.sim_cmd_vel})', read_only=True)
        self._declare('pwm_root', spec.PWM.sysfs_root,
                      'Folder holding the pwmchipN folders', read_only=True)
        self._declare('pwm_chip', -1,
                      'pwmchip number; -1 takes the first chip with enough channels',
                      read_only=True)
        self._declare('throttle_channel', spec.PWM.throttle_channel,
                      'PWM channel of the ESC', read_only=True)
        self._declare('steering_channel', spec.PWM.steering_channel,
                      'PWM channel of the steering servo', read_only=True)
        self._declare('calibration_file', spec.DEEPRACER_CALIBRATION_FILE,
                      "DeepRacer's calibration.json; missing = factory defaults, "
                      'corrupt = the node refuses to drive', read_only=True)
        self._declare('watchdog_timeout', spec.WATCHDOG_TIMEOUT_S,
                      'Seconds without a command before throttle neutral and steering '
                      f'centred (node clock), in (0, {MAX_WATCHDOG_TIMEOUT_S}]')

    def _load_calibration(self) -> cal.Calibration | None:
        """The calibration file, then speed-curve parameters whose defaults come from it."""
        path = self.get_parameter('calibration_file').value
        try:
            loaded = cal.load_calibration(path)
        except cal.CalibrationError as error:
            self._block(f'calibration refused, not driving: {error}')
            loaded = None
        else:
            self.calibration_is_factory_default = loaded.factory_defaults
            self._calibration_source = 'factory defaults' if loaded.factory_defaults else path
            log = self.get_logger().warning if loaded.factory_defaults else self.get_logger().info
            log(f'calibration {loaded.message}')
        base = loaded.calibration if loaded else cal.FACTORY_CALIBRATION
        scale = self._declare('max_speed_scale', base.max_speed_scale,
                              'Throttle scale in [0, 1] ("max speed %"); default from the '
                              'calibration file')
        vmax = self._declare('max_speed_mps', base.max_speed_mps,
                             'Speed (m/s) the speed->throttle curve maps to full throttle; '
                             'a property of the car; default from the calibration file')
        if loaded is None:
            return None
        try:
            return base.with_changes(max_speed_scale=scale, max_speed_mps=vmax)
        except cal.CalibrationError as error:
            self._block(f'calibration refused, not driving: parameter {error}')
            return None

    def _create_backend(self) -> PwmBackend | None:
        name = self.get_parameter('backend').value
        channels = (self.get_parameter('throttle_channel').value,
                    self.get_parameter('steering_channel').value)
        try:
            if name == 'sim':
                return SimulatedPwm(channels=channels)
            if name == 'sysfs':
                return SysfsPwm(root=self.get_parameter('pwm_root').value,
                                chip=self.get_parameter('pwm_chip').value, channels=channels)
            raise ValueError(f'backend must be one of {BACKENDS}, got {name!r}')
        except (ValueError, OSError, RuntimeError) as error:
            self._block(f'PWM backend unavailable, not driving: {error}')
            return None

    def _start_outputs(self, calibration: cal.Calibration | None) -> None:
        """Neutral and pulses on (an ESC arms at neutral), or outputs off when blocked."""
        if self.backend is None:
            return
        if calibration is None:
            self.backend.disable()
            return
        self.outputs = drive.DriveOutputs(
            self.backend, calibration, self.get_parameter('throttle_channel').value,
            self.get_parameter('steering_channel').value)
        self.outputs.neutral()
        self.backend.enable()
        self.get_logger().info('outputs at neutral; call %s to start driving'
                               % spec.TOPICS.servo_enable)

    def _block(self, reason: str) -> None:
        self._blocked_reason = reason
        self.get_logger().error(reason)

    def _create_watchdog_timer(self):
        period = self._watchdog_period_s()
        return self.create_timer(period, self._on_watchdog, callback_group=self._watchdog_group)

    def _watchdog_period_s(self) -> float:
        return self.get_parameter('watchdog_timeout').value / WATCHDOG_CHECKS_PER_TIMEOUT

    # --- state ----------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self._enabled

    @property
    def blocked_reason(self) -> str | None:
        """Why the node refuses to drive (corrupt calibration, no PWM), or None."""
        return self._blocked_reason

    def go_neutral_after_error(self, what: str) -> None:
        """Neutral after an unexpected error; if even that fails, stop the pulses."""
        self.get_logger().error(f'{what}: outputs to neutral')
        self._last_command_ns = None
        if self.outputs is None:
            return
        try:
            self.outputs.neutral()
        except Exception as error:  # noqa: BLE001 - last resort below
            self.get_logger().error(f'neutral failed ({error!r}): disabling the outputs')
            try:
                self.outputs.backend.disable()
            except Exception as disable_error:  # noqa: BLE001
                self.get_logger().fatal(f'cannot disable the outputs: {disable_error!r}')
        self._publish_sim_twist()

    # --- commands -------------------------------------------------------------------------

    @_fail_safe
    def _on_auto_cmd_vel(self, msg: TwistStamped) -> None:
        self._command(msg.twist.linear.x, msg.twist.angular.z, stamp_to_ns(msg.header.stamp))

    @_fail_safe
    def _on_cmd_vel(self, msg: Twist) -> None:
        self._command(msg.linear.x, msg.angular.z, None)

    def _command(self, linear_x: float, angular_z: float, stamp_ns: int | None) -> None:
        self._commands_received += 1
        if not self._enabled or self.outputs is None:
            return
        speed, steering_angle = drive.twist_to_drive(linear_x, angular_z, spec.CAR.wheelbase_m)
        with self.outputs.lock:
            # Checked again under the lock: a stop that raced this command wins.
            if not self._enabled:
                return
            changed = self.outputs.drive(speed, steering_angle)
            now_ns = self.get_clock().now().nanoseconds
            self._last_command_ns = now_ns
        if changed:
            if stamp_ns:
                self.latency.add(now_ns - stamp_ns)
            self._publish_sim_twist()

    @_fail_safe
    def _on_watchdog(self) -> None:
        if self.outputs is None or self._last_command_ns is None:
            return
        timeout_ns = int(self.get_parameter('watchdog_timeout').value * 1e9)
        period_ns = int(self._watchdog_period_s() * 1e9)
        with self.outputs.lock:
            last = self._last_command_ns
            if last is None:
                return
            elapsed_ns = self.get_clock().now().nanoseconds - last
            # Checking every period, trigger one period early so neutral lands within the
            # timeout; a clock that jumped back (a simulator reset) counts as expired too.
            if 0 <= elapsed_ns < timeout_ns - period_ns:
                return
            self._last_command_ns = None
            self._watchdog_trips += 1
            self.outputs.neutral()
        self.get_logger().warning(
            f'no command for {elapsed_ns / 1e9:.3f} s: throttle neutral, steering centred',
            throttle_duration_sec=5.0)
        self._publish_sim_twist()

    @_fail_safe
    def _on_enable(self, request: SetBool.Request, response: SetBool.Response):
        if request.data:
            if self._blocked_reason is not None or self.outputs is None:
                response.success = False
                response.message = self._blocked_reason or 'no outputs'
                return response
            self._enabled = True
            response.success, response.message = True, 'driving enabled'
        else:
            self.stop()
            response.success, response.message = True, 'stopped: outputs at neutral'
        self.get_logger().info(response.message)
        return response

    def stop(self) -> None:
        """Ignore commands from now on and write neutral at once."""
        self._enabled = False
        if self.outputs is None:
            return
        with self.outputs.lock:
            self._last_command_ns = None
            self.outputs.neutral()
        self._publish_sim_twist()

    def _publish_sim_twist(self) -> None:
        if self._sim_publisher is None:
            return
        msg = Twist()
        duties = self.outputs.duties if self.outputs else None
        if duties is not None:
            speed, steering_angle = drive.duties_to_drive(duties, self.outputs.calibration)
            msg.linear.x, msg.angular.z = drive.drive_to_twist(speed, steering_angle,
                                                               spec.CAR.wheelbase_m)
        self._sim_publisher.publish(msg)

    # --- parameters -----------------------------------------------------------------------

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        changes = {p.name: p.value for p in parameters}
        timeout = changes.get('watchdog_timeout')
        if timeout is not None and not 0.0 < timeout <= MAX_WATCHDOG_TIMEOUT_S:
            return SetParametersResult(
                successful=False,
                reason=f'watchdog_timeout must be in (0, {MAX_WATCHDOG_TIMEOUT_S}] s, '
                       f'got {timeout}')
        speed_changes = {k: v for k, v in changes.items()
                         if k in ('max_speed_scale', 'max_speed_mps')}
        if speed_changes:
            if self.outputs is None:
                return SetParametersResult(
                    successful=False, reason=self._blocked_reason or 'no outputs')
            try:
                calibration = self.outputs.calibration.with_changes(**speed_changes)
            except cal.CalibrationError as error:
                return SetParametersResult(successful=False, reason=str(error))
            # The speed curve applies from the next command on; the ranges are unchanged.
            self.outputs.set_calibration(calibration)
        if timeout is not None:
            self._watchdog_timer.cancel()
            self.destroy_timer(self._watchdog_timer)
            self._watchdog_timer = self.create_timer(
                timeout / WATCHDOG_CHECKS_PER_TIMEOUT, self._on_watchdog,
                callback_group=self._watchdog_group)
        return SetParametersResult(successful=True)

    # --- diagnostics ----------------------------------------------------------------------

    @_fail_safe
    def _on_diagnostics_timer(self) -> None:
        self._diagnostics_publisher.publish(self.diagnostics())
        if self._enabled is False or self._last_command_ns is None:
            self._publish_sim_twist()  # a heartbeat so a simulator started late sees neutral

    def diagnostics(self) -> DiagnosticArray:
        """The node's state as a DiagnosticArray (also published at 1 Hz)."""
        now = time.monotonic()
        rate = self._commands_received / max(now - self._rate_window_start, 1e-9)
        self._commands_received, self._rate_window_start = 0, now
        status = DiagnosticStatus(name=f'{NODE_NAME}: drive outputs',
                                  hardware_id=self._hardware_id())
        if self._blocked_reason is not None:
            status.level, status.message = DiagnosticStatus.ERROR, self._blocked_reason
        else:
            status.level = DiagnosticStatus.OK
            status.message = ('driving' if self._enabled else 'stopped at neutral') + (
                ' (factory calibration)' if self.calibration_is_factory_default else '')
        duties = self.outputs.duties if self.outputs else None
        values = {
            'enabled': self._enabled,
            'outputs_enabled': bool(self.backend and self.backend.enabled),
            'throttle_ns': duties.throttle_ns if duties else 'none',
            'steering_ns': duties.steering_ns if duties else 'none',
            'calibration_source': self._calibration_source,
            'commands_per_s': f'{rate:.1f}',
            'watchdog_timeout_s': self.get_parameter('watchdog_timeout').value,
            'watchdog_trips': self._watchdog_trips,
            'pwm_writes': self.backend.write_count if self.backend else 0,
        }
        if self.outputs is not None:
            values['max_speed_scale'] = self.outputs.calibration.max_speed_scale
            values['max_speed_mps'] = self.outputs.calibration.max_speed_mps
        for key, value in (self.latency.summary() or {}).items():
            values[f'latency_{key}'] = f'{value:.3f}' if key != 'samples' else int(value)
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        return array

    def _hardware_id(self) -> str:
        if isinstance(self.backend, SysfsPwm):
            return str(self.backend.chip_path)
        return self.get_parameter('backend').value

    # --- shutdown -------------------------------------------------------------------------

    def destroy_node(self) -> None:
        """Neutral, then the pulses off, before the node goes away."""
        self._enabled = False
        try:
            if self.outputs is not None:
                with self.outputs.lock:
                    self._last_command_ns = None
                    self.outputs.neutral()
                    self._publish_sim_twist()
            if self.backend is not None:
                self.backend.disable()
                self.backend.close()
        except Exception as error:  # noqa: BLE001 - still destroy the node
            self.get_logger().error(f'shutdown: could not write neutral: {error!r}')
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    node = None
    try:
        node = ServoNode()
        # Single-threaded on purpose: rclpy's MultiThreadedExecutor drops most commands above
        # ~200/s here (ros2/rclpy#1223, #1452), while every callback of this node takes tens
        # of microseconds, so the watchdog timer is served between them within its period.
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
