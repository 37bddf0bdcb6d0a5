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
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Twist, TwistStamped
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_srvs.srv import SetBool

from deepracer_nodes.ros_runtime import run_node
from deepracer_nodes.core import calibration as cal
from deepracer_nodes.core import drive, spec
from deepracer_nodes.core.pwm import PwmBackend, SimulatedPwm, SysfsPwm
from deepracer_nodes.ros_conversions import stamp_to_ns

NODE_NAME = 'servo_node'
BACKENDS = ('sysfs', 'sim')
SIM_ANGULAR_Z = ('yaw_rate', 'steering_angle')
# Commands: a short queue (the newest matters); best effort accepts both reliable and
# best-effort publishers.
COMMAND_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                         reliability=ReliabilityPolicy.BEST_EFFORT)
LATENCY_WINDOW = 1000
WATCHDOG_CHECKS_PER_TIMEOUT = 10
MAX_WATCHDOG_TIMEOUT_S = 2.0
DIAGNOSTICS_PERIOD_S = 1.0
# How often the calibration file is checked for changes made by another program.
FILE_CHECK_PERIOD_S = 1.0
DEFAULT_CALIBRATION_TIMEOUT_S = 1.0
MAX_CALIBRATION_TIMEOUT_S = 10.0
RAW_TARGET_PARAMETERS = ('calibration_mode', 'calibration_throttle', 'calibration_steering')
_CHANNEL_FIELD_TEXT = {
    'min_ns': 'duty cycle (ns) for ratio -1 (before polarity)',
    'mid_ns': 'duty cycle (ns) at neutral / centre',
    'max_ns': 'duty cycle (ns) for ratio +1 (before polarity)',
    'polarity': '1, or -1 to reverse the direction',
}
CALIBRATION_DESCRIPTIONS = {
    **{f'{channel}_{field}': f'{channel} calibration: {text}; saved to calibration_file'
       for channel in cal.CHANNELS for field, text in _CHANNEL_FIELD_TEXT.items()},
    'max_speed_mps': 'Speed (m/s) the speed->throttle curve maps to full throttle, a property '
                     'of the car; saved to calibration_file',
    'max_speed_scale': 'Throttle scale in [0, 1] ("max speed %"); saved to calibration_file',
}


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

    def samples_s(self) -> list[float]:
        """The latencies kept, oldest first, in seconds (a benchmark slices its own run)."""
        with self._lock:
            return [sample / 1e9 for sample in self._samples]

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
    """Drive commands to PWM duty cycles, with a watchdog, start/stop and live calibration."""

    def __init__(self, latency_window: int = LATENCY_WINDOW, **kwargs: Any) -> None:
        """latency_window: PWM writes kept for the latency percentiles (a benchmark keeps a
        whole run); kwargs go to Node (context=, parameter_overrides=, ...)."""
        super().__init__(NODE_NAME, **kwargs)
        self._declare_setup_parameters()
        self._backend_problem: str | None = None
        self._calibration_problem: str | None = None
        self._calibration_source = 'none'
        self.calibration_is_factory_default = False
        self._file_stamp = self._calibration_file_stamp()
        calibration = self._load_calibration()
        self.backend: PwmBackend | None = self._create_backend()
        self.outputs: drive.DriveOutputs | None = None
        self._enabled = False
        self._last_command_ns: int | None = None
        self._raw_target: drive.RawTarget | None = None
        self._raw_target_ns = 0
        self._reloading_file = False
        self.commands_received = 0  # every command taken in since start (for benchmarks)
        self._rate_window = (time.monotonic(), 0)
        self._watchdog_trips = 0
        self.latency = LatencyWindow(latency_window)
        self._start_outputs(calibration)

        self._sim_angular_z = self.get_parameter('sim_angular_z').value
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
        self.create_timer(FILE_CHECK_PERIOD_S, self._on_file_check_timer)
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
        self._declare('sim_angular_z', 'yaw_rate',
                      "What angular.z of the 'sim' backend's Twist holds: 'yaw_rate' (REP 103, "
                      "as gz-sim's AckermannSteering and the embedded simulator read it) or "
                      "'steering_angle' (rad, as Gazebo Classic's gazebo_ros_ackermann_drive "
                      'reads it)', read_only=True)
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
                      "DeepRacer's calibration.json; missing = factory defaults, corrupt = "
                      'the node refuses to drive; changes made to it are picked up',
                      read_only=True)
        self._declare('watchdog_timeout', spec.WATCHDOG_TIMEOUT_S,
                      'Seconds without a command before throttle neutral and steering '
                      f'centred (node clock), in (0, {MAX_WATCHDOG_TIMEOUT_S}]')
        self._declare('calibration_mode', 'off',
                      "'off', or drive calibration_throttle / calibration_steering directly "
                      "as 'ratio' ([-1, 1]) or 'ns' (duty cycles inside the calibrated "
                      'range), bypassing autonomy and the max-speed scale; back to neutral '
                      'when set to off or not refreshed within calibration_timeout')
        self._declare('calibration_throttle', 0.0, 'Throttle ratio or ns in calibration mode')
        self._declare('calibration_steering', 0.0, 'Steering ratio or ns in calibration mode')
        self._declare('calibration_timeout', DEFAULT_CALIBRATION_TIMEOUT_S,
                      'Seconds calibration mode holds its values without a refresh, in '
                      f'(0, {MAX_CALIBRATION_TIMEOUT_S}]')

    def _load_calibration(self) -> cal.Calibration | None:
        """The calibration file, overlaid with the calibration parameters given at start-up."""
        path = self.get_parameter('calibration_file').value
        try:
            loaded = cal.load_calibration(path)
        except cal.CalibrationError as error:
            self._set_calibration_problem(f'calibration refused, not driving: {error}')
            loaded = None
        else:
            self._note_loaded(loaded)
        base = loaded.calibration if loaded else cal.FACTORY_CALIBRATION
        values = {name: self._declare(name, default, CALIBRATION_DESCRIPTIONS[name])
                  for name, default in cal.to_flat(base).items()}
        if loaded is None:
            return None
        try:
            return cal.with_flat_changes(base, values)
        except cal.CalibrationError as error:
            self._set_calibration_problem(f'calibration refused, not driving: parameters: {error}')
            return None

    def _note_loaded(self, loaded: cal.LoadedCalibration) -> None:
        self.calibration_is_factory_default = loaded.factory_defaults
        self._calibration_source = 'factory defaults' if loaded.factory_defaults else loaded.path
        if loaded.factory_defaults:
            self.get_logger().warning(f'calibration {loaded.message}')
        else:
            self.get_logger().info(f'calibration {loaded.message}')

    def _create_backend(self) -> PwmBackend | None:
        name = self.get_parameter('backend').value
        channels = (self.get_parameter('throttle_channel').value,
                    self.get_parameter('steering_channel').value)
        try:
            if name == 'sim':
                if self.get_parameter('sim_angular_z').value not in SIM_ANGULAR_Z:
                    raise ValueError(f'sim_angular_z must be one of {SIM_ANGULAR_Z}')
                return SimulatedPwm(channels=channels)
            if name == 'sysfs':
                return SysfsPwm(root=self.get_parameter('pwm_root').value,
                                chip=self.get_parameter('pwm_chip').value, channels=channels)
            raise ValueError(f'backend must be one of {BACKENDS}, got {name!r}')
        except (ValueError, OSError, RuntimeError) as error:
            self._backend_problem = f'PWM backend unavailable, not driving: {error}'
            self.get_logger().error(self._backend_problem)
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

    def _set_calibration_problem(self, reason: str) -> None:
        self._calibration_problem = reason
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
        """Why the node refuses to drive (no PWM, corrupt calibration), or None."""
        return self._backend_problem or self._calibration_problem

    @property
    def calibration(self) -> cal.Calibration | None:
        """The calibration in force, None when there is none to drive with."""
        return self.outputs.calibration if self.outputs else None

    def go_neutral_after_error(self, what: str) -> None:
        """Neutral after an unexpected error; if even that fails, stop the pulses."""
        self.get_logger().error(f'{what}: outputs to neutral')
        self._last_command_ns = None
        self._raw_target = None
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
        self.commands_received += 1
        if not self._enabled or self.outputs is None:
            self._publish_sim_twist()  # stopped: the simulator's reply is neutral
            return
        speed, steering_angle = drive.twist_to_drive(linear_x, angular_z, spec.CAR.wheelbase_m)
        with self.outputs.lock:
            # Checked again under the lock: a stop that raced this command wins.
            if not self._enabled:
                return
            changed = self.outputs.drive(speed, steering_angle)
            now_ns = self.get_clock().now().nanoseconds
            self._last_command_ns = now_ns
        if changed and stamp_ns:
            self.latency.add(now_ns - stamp_ns)
        # A simulator steps in lockstep with the pipeline: it gets one reply per command,
        # changed or not (a real PWM only needs the changes).
        self._publish_sim_twist()

    @_fail_safe
    def _on_watchdog(self) -> None:
        if self.outputs is None:
            return
        period_ns = int(self._watchdog_period_s() * 1e9)
        if self._expired(self._last_command_ns, 'watchdog_timeout', period_ns):
            with self.outputs.lock:
                if not self._expired(self._last_command_ns, 'watchdog_timeout', period_ns):
                    return
                self._last_command_ns = None
                self._watchdog_trips += 1
                self.outputs.neutral()
            self.get_logger().warning('no command within watchdog_timeout: throttle neutral, '
                                      'steering centred', throttle_duration_sec=5.0)
            self._publish_sim_twist()
        if self._raw_target is not None and self._expired(
                self._raw_target_ns, 'calibration_timeout', period_ns):
            self.get_logger().warning('calibration mode not refreshed within '
                                      'calibration_timeout: back to neutral')
            self.set_parameters([Parameter('calibration_mode', value='off')])

    def _expired(self, since_ns: int | None, timeout_name: str, period_ns: int) -> bool:
        if since_ns is None:
            return False
        timeout_ns = int(self.get_parameter(timeout_name).value * 1e9)
        elapsed_ns = self.get_clock().now().nanoseconds - since_ns
        # Checking every period, trigger one period early so neutral lands within the
        # timeout; a clock that jumped back (a simulator reset) counts as expired too.
        return not 0 <= elapsed_ns < timeout_ns - period_ns

    @_fail_safe
    def _on_enable(self, request: SetBool.Request, response: SetBool.Response):
        if request.data:
            if self.blocked_reason is not None or self.outputs is None:
                response.success = False
                response.message = self.blocked_reason or 'no outputs'
                return response
            if self._raw_target is not None:
                response.success = False
                response.message = 'in calibration mode: set calibration_mode to off first'
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
            if self._sim_angular_z == 'steering_angle':
                msg.angular.z = steering_angle
        self._sim_publisher.publish(msg)

    # --- parameters: timeouts, live calibration, calibration mode -------------------------

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        try:
            self._check_and_apply(parameters)
        except (ValueError, cal.CalibrationError) as error:
            return SetParametersResult(successful=False, reason=str(error))
        return SetParametersResult(successful=True)

    def _check_and_apply(self, parameters: list[Parameter]) -> None:
        """Validate every change first, then save, then apply; raises ValueError to refuse."""
        changes = {p.name: p.value for p in parameters}
        for name, limit in (('watchdog_timeout', MAX_WATCHDOG_TIMEOUT_S),
                            ('calibration_timeout', MAX_CALIBRATION_TIMEOUT_S)):
            if name in changes and not 0.0 < changes[name] <= limit:
                raise ValueError(f'{name} must be in (0, {limit}] s, got {changes[name]}')
        calibration_changes = {k: v for k, v in changes.items() if k in cal.FLAT_NAMES}
        raw_changes = {k: v for k, v in changes.items() if k in RAW_TARGET_PARAMETERS}
        if calibration_changes or raw_changes:
            self._apply_calibration_changes(calibration_changes, raw_changes)
        if 'watchdog_timeout' in changes:
            self._watchdog_timer.cancel()
            self.destroy_timer(self._watchdog_timer)
            self._watchdog_timer = self.create_timer(
                changes['watchdog_timeout'] / WATCHDOG_CHECKS_PER_TIMEOUT, self._on_watchdog,
                callback_group=self._watchdog_group)

    def _apply_calibration_changes(self, calibration_changes: dict[str, Any],
                                   raw_changes: dict[str, Any]) -> None:
        leaving_calibration_mode = (not calibration_changes
                                    and raw_changes.get('calibration_mode') == 'off')
        if self.blocked_reason is not None or self.outputs is None:
            if leaving_calibration_mode:
                return  # always allowed; blocked outputs already hold neutral or are off
            raise ValueError(self.blocked_reason or 'no outputs')
        current = self.outputs.calibration
        candidate = cal.with_flat_changes(current, calibration_changes)
        target = None
        if raw_changes:
            # Only a new target is checked against the range: narrowing the range under a
            # value held clamps the output instead.
            raw = {name: raw_changes.get(name, self.get_parameter(name).value)
                   for name in RAW_TARGET_PARAMETERS}
            target = drive.raw_target(raw['calibration_mode'], raw['calibration_throttle'],
                                      raw['calibration_steering'], candidate)
        if candidate != current and not self._reloading_file:
            self._save(candidate)
        with self.outputs.lock:
            if candidate != current:
                self.outputs.set_calibration(candidate)
            if raw_changes:
                self._set_raw_target(target)
            elif self._raw_target is not None:
                self.outputs.write(drive.raw_target_duties(self._raw_target, candidate))
            elif not (self._enabled and self._last_command_ns is not None):
                self.outputs.neutral()  # stopped: hold the new neutral at once
        self._publish_sim_twist()

    def _set_raw_target(self, target: drive.RawTarget | None) -> None:
        if target is None:
            if self._raw_target is not None:
                self.get_logger().info('calibration mode off: neutral')
            self._raw_target = None
            self.outputs.neutral()
            return
        if self._raw_target is None:
            self.get_logger().info(f'calibration mode {target.mode}: autonomy stopped')
        self._enabled = False
        self._last_command_ns = None
        self._raw_target = target
        self._raw_target_ns = self.get_clock().now().nanoseconds
        self.outputs.write(drive.raw_target_duties(target, self.outputs.calibration))

    def _save(self, calibration: cal.Calibration) -> None:
        path = self.get_parameter('calibration_file').value
        cal.save_calibration(path, calibration)  # CalibrationError refuses the change
        self._file_stamp = self._calibration_file_stamp()
        self._calibration_source = path
        self.calibration_is_factory_default = False
        self.get_logger().info(f'calibration saved to {path}')

    # --- the calibration file, edited by `deepracer calibrate` or by hand ------------------

    def _calibration_file_stamp(self) -> tuple[int, int, int] | None:
        try:
            stat = os.stat(self.get_parameter('calibration_file').value)
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    @_fail_safe
    def _on_file_check_timer(self) -> None:
        stamp = self._calibration_file_stamp()
        if stamp == self._file_stamp:
            return
        self._file_stamp = stamp
        if stamp is None:
            self.get_logger().warning('calibration file removed: keeping the calibration in use')
            return
        try:
            loaded = cal.load_calibration(self.get_parameter('calibration_file').value)
        except cal.CalibrationError as error:
            self.stop()
            self._raw_target = None
            self._set_calibration_problem(f'calibration refused, not driving: {error}')
            return
        if self._calibration_problem is not None:
            self._calibration_problem = None
            if self.outputs is None:
                self._start_outputs(loaded.calibration)
            self.get_logger().info('calibration file valid again: call '
                                   f'{spec.TOPICS.servo_enable} to drive')
        self._note_loaded(loaded)
        if self.calibration != loaded.calibration:
            self._reloading_file = True
            try:
                results = self.set_parameters([Parameter(name, value=value) for name, value
                                               in cal.to_flat(loaded.calibration).items()])
            finally:
                self._reloading_file = False
            refused = [r.reason for r in results if not r.successful]
            if refused:
                raise RuntimeError(f'reloading the calibration file failed: {refused[0]}')

    # --- diagnostics ----------------------------------------------------------------------

    @_fail_safe
    def _on_diagnostics_timer(self) -> None:
        self._diagnostics_publisher.publish(self.diagnostics())
        if self._enabled is False or self._last_command_ns is None:
            self._publish_sim_twist()  # a heartbeat so a simulator started late sees neutral

    def diagnostics(self) -> DiagnosticArray:
        """The node's state as a DiagnosticArray (also published at 1 Hz)."""
        now, received = time.monotonic(), self.commands_received
        started, received_before = self._rate_window
        rate = (received - received_before) / max(now - started, 1e-9)
        self._rate_window = (now, received)
        status = DiagnosticStatus(name=f'{NODE_NAME}: drive outputs',
                                  hardware_id=self._hardware_id())
        if self.blocked_reason is not None:
            status.level, status.message = DiagnosticStatus.ERROR, self.blocked_reason
        else:
            status.level = DiagnosticStatus.OK
            state = 'driving' if self._enabled else 'stopped at neutral'
            if self._raw_target is not None:
                state = f'calibration mode ({self._raw_target.mode})'
            status.message = state + (' (factory calibration)'
                                      if self.calibration_is_factory_default else '')
        duties = self.outputs.duties if self.outputs else None
        values = {
            'enabled': self._enabled,
            'outputs_enabled': bool(self.backend and self.backend.enabled),
            'throttle_ns': duties.throttle_ns if duties else 'none',
            'steering_ns': duties.steering_ns if duties else 'none',
            'calibration_source': self._calibration_source,
            'calibration_mode': self._raw_target.mode if self._raw_target else 'off',
            'commands_per_s': f'{rate:.1f}',
            'watchdog_timeout_s': self.get_parameter('watchdog_timeout').value,
            'watchdog_trips': self._watchdog_trips,
            'pwm_writes': self.backend.write_count if self.backend else 0,
        }
        if self.outputs is not None:
            values.update(cal.to_flat(self.outputs.calibration))
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
        self._raw_target = None
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


def main(args: list[str] | None = None) -> int:
    # Single-threaded on purpose: rclpy's MultiThreadedExecutor drops most commands above
    # ~200/s here (ros2/rclpy#1223, #1452), while every callback of this node takes tens
    # of microseconds, so the watchdog timer is served between them within its period.
    return run_node(ServoNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
