"""The servo node in-process on a private context, driving a temporary sysfs PWM tree."""

from __future__ import annotations

import json
import math
import threading
import time

import pytest
from deepracer_nodes.core import sysfs_tree
from conftest import spin_until
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import Twist, TwistStamped
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rclpy.parameter import Parameter
from rosgraph_msgs.msg import Clock
from std_srvs.srv import SetBool

from deepracer_nodes import servo_node as servo_module
from deepracer_nodes.core import calibration as cal
from deepracer_nodes.core import drive, spec
from deepracer_nodes.ros_conversions import ns_to_stamp
from deepracer_nodes.servo_node import ServoNode

THROTTLE, STEERING = spec.PWM.throttle_channel, spec.PWM.steering_channel
STEER, MOTOR = cal.FACTORY_STEERING, cal.FACTORY_THROTTLE
NEUTRAL = (MOTOR.mid_ns, STEER.mid_ns)
# 2 m/s with the default vmax of 4 m/s: throttle 0.8 -> 1446000 - 0.8 * 135000 (polarity -1).
HALF_SPEED_THROTTLE_NS = 1_338_000
# Half the steering limit to the left: ratio 0.5 -> 1450000 + 0.5 * 250000.
HALF_LEFT_STEERING_NS = 1_575_000


class Harness:
    """A servo node plus a test node that publishes commands and calls the service."""

    def __init__(self, executor, context, tmp_path, root, **parameters) -> None:
        self.executor, self.root = executor, root
        defaults = {'pwm_root': str(root), 'calibration_file': str(tmp_path / 'cal.json')}
        overrides = [Parameter(k, value=v) for k, v in {**defaults, **parameters}.items()]
        self.node = ServoNode(context=context, parameter_overrides=overrides)
        self.writes: list[tuple[int, int, int]] = []
        if self.node.backend is not None:
            self.node.backend.on_write = lambda c, d, t: self.writes.append((c, d, t))
        import rclpy
        self.client_node = rclpy.create_node('servo_test_client', context=context)
        self.auto_pub = self.client_node.create_publisher(
            TwistStamped, spec.TOPICS.auto_cmd_vel, 10)
        self.cmd_pub = self.client_node.create_publisher(Twist, spec.TOPICS.cmd_vel, 10)
        self.enable_client = self.client_node.create_client(SetBool, spec.TOPICS.servo_enable)
        executor.add_node(self.node)
        executor.add_node(self.client_node)
        assert spin_until(executor, lambda: self.auto_pub.get_subscription_count() > 0
                          and self.cmd_pub.get_subscription_count() > 0
                          and self.enable_client.service_is_ready(), 10.0)

    def duties(self) -> tuple[int, int]:
        return (sysfs_tree.duty_ns(self.root, THROTTLE), sysfs_tree.duty_ns(self.root, STEERING))

    def set_enabled(self, on: bool) -> SetBool.Response:
        future = self.enable_client.call_async(SetBool.Request(data=on))
        assert spin_until(self.executor, future.done, 5.0)
        return future.result()

    def send(self, speed: float, steering_angle: float, stamped: bool = True) -> None:
        linear, angular = drive.drive_to_twist(speed, steering_angle)
        if stamped:
            msg = TwistStamped()
            msg.header.stamp = self.node.get_clock().now().to_msg()
            msg.header.frame_id = spec.FRAMES.base
            msg.twist.linear.x, msg.twist.angular.z = linear, angular
            self.auto_pub.publish(msg)
        else:
            msg = Twist()
            msg.linear.x, msg.angular.z = linear, angular
            self.cmd_pub.publish(msg)

    def drive_and_wait(self, speed: float, steering_angle: float, expected: tuple[int, int],
                       stamped: bool = True) -> None:
        # Best-effort commands: resend until they land, as a policy streaming at 15 Hz would.
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and self.duties() != expected:
            self.send(speed, steering_angle, stamped)
            spin_until(self.executor, lambda: self.duties() == expected, 0.05)
        assert self.duties() == expected


@pytest.fixture
def pwm_root(tmp_path):
    return sysfs_tree.make_pwm_tree(tmp_path)


@pytest.fixture
def harness(executor, ros_context, tmp_path, pwm_root):
    return Harness(executor, ros_context, tmp_path, pwm_root)


def test_starts_stopped_at_neutral_with_pulses_on(harness):
    assert harness.duties() == NEUTRAL
    assert sysfs_tree.period_ns(harness.root, THROTTLE) == spec.PWM.period_ns
    assert sysfs_tree.enabled(harness.root, THROTTLE)
    assert sysfs_tree.enabled(harness.root, STEERING)
    assert not harness.node.enabled
    assert harness.node.calibration_is_factory_default


def test_commands_are_ignored_until_enabled(harness):
    for _ in range(5):
        harness.send(2.0, 0.2)
        spin_until(harness.executor, lambda: False, 0.05)
    assert harness.duties() == NEUTRAL


def test_known_commands_give_known_duty_cycles(harness):
    assert harness.set_enabled(True).success
    half_left = spec.CAR.max_steering_rad / 2
    harness.drive_and_wait(2.0, half_left, (HALF_SPEED_THROTTLE_NS, HALF_LEFT_STEERING_NS))
    # Reverse at full speed, full right: polarity -1 sends the ESC to max.
    harness.drive_and_wait(-4.0, -1.0, (MOTOR.max_ns, STEER.min_ns))
    # Teleop's plain Twist on /cmd_vel takes the same path.
    harness.drive_and_wait(2.0, half_left, (HALF_SPEED_THROTTLE_NS, HALF_LEFT_STEERING_NS),
                           stamped=False)


def test_disable_writes_neutral_at_once(harness):
    assert harness.set_enabled(True).success
    harness.drive_and_wait(2.0, 0.3, drive_duties(2.0, 0.3))
    response = harness.set_enabled(False)
    assert response.success and 'neutral' in response.message
    # Written before the response was sent: no spinning needed to see it.
    assert harness.duties() == NEUTRAL
    harness.send(2.0, 0.3)
    spin_until(harness.executor, lambda: False, 0.2)
    assert harness.duties() == NEUTRAL


def drive_duties(speed, angle, calibration=cal.FACTORY_CALIBRATION):
    duties = drive.drive_to_duties(speed, angle, calibration)
    return (duties.throttle_ns, duties.steering_ns)


def test_watchdog_returns_to_neutral_within_the_timeout(harness):
    assert harness.set_enabled(True).success
    harness.drive_and_wait(1.0, 0.2, drive_duties(1.0, 0.2))
    last_command_write = harness.writes[-1][2]
    assert spin_until(harness.executor, lambda: harness.duties() == NEUTRAL, 2.0)
    neutral_write = harness.writes[-1][2]
    waited_s = (neutral_write - last_command_write) / 1e9
    timeout = spec.WATCHDOG_TIMEOUT_S
    # Not early (one check period of 25 ms is allowed), and not late beyond scheduling slack.
    assert timeout - timeout / 10 - 0.01 <= waited_s <= timeout + 0.1


def test_steady_commands_keep_the_watchdog_quiet(harness):
    assert harness.set_enabled(True).success
    expected = drive_duties(1.0, -0.2)
    harness.drive_and_wait(1.0, -0.2, expected)
    writes_before = len(harness.writes)
    deadline = time.monotonic() + 0.8
    while time.monotonic() < deadline:
        harness.send(1.0, -0.2)
        spin_until(harness.executor, lambda: False, 0.05)
        assert harness.duties() == expected
    assert len(harness.writes) == writes_before  # not even a neutral blip in between


def test_watchdog_timeout_is_a_parameter(executor, ros_context, tmp_path, pwm_root):
    h = Harness(executor, ros_context, tmp_path, pwm_root, watchdog_timeout=0.1)
    assert h.set_enabled(True).success
    h.drive_and_wait(1.0, 0.0, drive_duties(1.0, 0.0))
    start = h.writes[-1][2]
    assert spin_until(executor, lambda: h.duties() == NEUTRAL, 2.0)
    assert (h.writes[-1][2] - start) / 1e9 <= 0.1 + 0.1


def test_watchdog_follows_the_simulation_clock(executor, ros_context, tmp_path, pwm_root):
    h = Harness(executor, ros_context, tmp_path, pwm_root, use_sim_time=True)
    clock_pub = h.client_node.create_publisher(Clock, spec.TOPICS.clock, 10)
    sim_ns = 1_000_000_000

    def tick(ns):
        clock_pub.publish(Clock(clock=ns_to_stamp(ns)))
        return spin_until(executor, lambda: h.node.get_clock().now().nanoseconds == ns, 2.0)

    assert spin_until(executor, lambda: clock_pub.get_subscription_count() > 0, 5.0)
    assert tick(sim_ns)
    assert h.set_enabled(True).success
    h.drive_and_wait(1.0, 0.0, drive_duties(1.0, 0.0))
    # Half a second of wall time, simulated time frozen: the command holds.
    spin_until(executor, lambda: False, 0.5)
    assert h.duties() == drive_duties(1.0, 0.0)
    # Simulated time moves past the timeout in small steps: neutral.
    for step in range(1, 31):
        tick(sim_ns + step * 10_000_000)
        if h.duties() == NEUTRAL:
            break
    assert h.duties() == NEUTRAL
    timeout = spec.WATCHDOG_TIMEOUT_S
    assert timeout - timeout / 10 - 0.01 <= step * 0.01 <= timeout + 0.02


def test_hostile_input_never_leaves_the_calibrated_range(harness):
    assert harness.set_enabled(True).success
    node = harness.node
    hostile = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                        st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308,
                                         5e-324, 0.0, -0.0]))

    @settings(max_examples=300, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(linear=hostile, angular=hostile, stamped=st.booleans(),
           stamp_ns=st.integers(0, 2**62))
    def check(linear, angular, stamped, stamp_ns):
        if stamped:
            msg = TwistStamped()
            msg.header.stamp = ns_to_stamp(stamp_ns)
            msg.twist.linear.x, msg.twist.angular.z = linear, angular
            node._on_auto_cmd_vel(msg)
        else:
            msg = Twist()
            msg.linear.x, msg.angular.z = linear, angular
            node._on_cmd_vel(msg)
        throttle, steering = harness.duties()
        assert MOTOR.min_ns <= throttle <= MOTOR.max_ns
        assert STEER.min_ns <= steering <= STEER.max_ns

    check()
    assert harness.writes, 'the hostile commands must have driven the outputs'
    for channel, duty, _ in harness.writes:
        limits = MOTOR if channel == THROTTLE else STEER
        assert limits.min_ns <= duty <= limits.max_ns
    # Non-finite commands are neutral, not "the last value".
    node._on_cmd_vel(Twist())
    msg = Twist()
    msg.linear.x = math.nan
    msg.angular.z = 1.0
    node._on_cmd_vel(msg)
    assert harness.duties() == NEUTRAL


def test_exception_in_a_callback_gives_neutral(harness, monkeypatch):
    assert harness.set_enabled(True).success
    harness.drive_and_wait(2.0, 0.3, drive_duties(2.0, 0.3))

    def broken(*args):
        raise RuntimeError('boom')

    monkeypatch.setattr(servo_module.drive, 'twist_to_drive', broken)
    msg = Twist()
    msg.linear.x = 1.0
    harness.node._on_cmd_vel(msg)  # must not raise
    assert harness.duties() == NEUTRAL


def test_failing_pwm_write_gives_neutral(harness, monkeypatch):
    assert harness.set_enabled(True).success
    harness.drive_and_wait(2.0, 0.3, drive_duties(2.0, 0.3))
    backend = harness.node.backend
    real_write = backend._write_duty

    def steering_fails_off_centre(channel, duty_ns):
        if channel == STEERING and duty_ns != STEER.mid_ns:
            raise OSError(5, 'Input/output error')
        real_write(channel, duty_ns)

    monkeypatch.setattr(backend, '_write_duty', steering_fails_off_centre)
    msg = Twist()
    msg.linear.x, msg.angular.z = drive.drive_to_twist(1.0, -0.3)
    harness.node._on_cmd_vel(msg)
    assert harness.duties() == NEUTRAL


def test_when_even_neutral_fails_the_pulses_stop(harness, monkeypatch):
    assert harness.set_enabled(True).success
    harness.drive_and_wait(2.0, 0.3, drive_duties(2.0, 0.3))

    def dead(channel, duty_ns):
        raise OSError(5, 'Input/output error')

    monkeypatch.setattr(harness.node.backend, '_write_duty', dead)
    msg = Twist()
    msg.linear.x = 1.0
    harness.node._on_cmd_vel(msg)
    assert not sysfs_tree.enabled(harness.root, THROTTLE)
    assert not sysfs_tree.enabled(harness.root, STEERING)


def test_destroy_node_writes_neutral_and_stops_the_pulses(harness):
    assert harness.set_enabled(True).success
    harness.drive_and_wait(2.0, 0.3, drive_duties(2.0, 0.3))
    harness.executor.remove_node(harness.node)
    harness.node.destroy_node()
    assert harness.duties() == NEUTRAL
    assert not sysfs_tree.enabled(harness.root, THROTTLE)
    assert not sysfs_tree.enabled(harness.root, STEERING)


def test_calibration_file_is_used(executor, ros_context, tmp_path, pwm_root):
    path = tmp_path / 'cal.json'
    custom = cal.Calibration(
        steering=cal.ChannelCalibration(1_000_000, 1_500_000, 2_000_000, -1),
        throttle=cal.ChannelCalibration(1_100_000, 1_400_000, 1_900_000, 1),
        max_speed_mps=2.0, max_speed_scale=0.5)
    cal.save_calibration(path, custom)
    h = Harness(executor, ros_context, tmp_path, pwm_root)
    assert h.duties() == (1_400_000, 1_500_000)
    assert not h.node.calibration_is_factory_default
    assert h.set_enabled(True).success
    # 2 m/s = this car's vmax -> curve 1.0, scale 0.5 -> ratio 0.5 -> 1400000 + 0.5 * 500000.
    # Steering polarity -1: full left -> min.
    h.drive_and_wait(2.0, 1.0, (1_650_000, 1_000_000))


def test_corrupt_calibration_refuses_to_drive(executor, ros_context, tmp_path, pwm_root):
    path = tmp_path / 'cal.json'
    path.write_text(json.dumps({'Calibration': {
        'Servo': {'max': 1_700_000, 'mid': 1_800_000, 'min': 1_200_000, 'polarity': 1},
        'Motor': {'max': 1_603_500, 'mid': 1_446_000, 'min': 1_311_000, 'polarity': -1},
        'version': 1}}))
    # Pulses left on by an earlier run must be switched off.
    for channel in (THROTTLE, STEERING):
        (pwm_root / 'pwmchip0' / f'pwm{channel}' / 'enable').write_text('1')
    h = Harness(executor, ros_context, tmp_path, pwm_root)
    reason = h.node.blocked_reason
    assert reason == (f'calibration refused, not driving: {path}: "Calibration.Servo" '
                      '(steering): mid_ns (1800000) must be less than max_ns (1700000)')
    assert not sysfs_tree.enabled(pwm_root, THROTTLE)
    assert not sysfs_tree.enabled(pwm_root, STEERING)
    assert h.writes == []
    response = h.set_enabled(True)
    assert not response.success and response.message == reason
    h.send(2.0, 0.0)
    spin_until(executor, lambda: False, 0.2)
    assert h.writes == []
    status = h.node.diagnostics().status[0]
    assert status.level == DiagnosticStatus.ERROR and status.message == reason


def test_missing_pwm_chip_refuses_to_drive(executor, ros_context, tmp_path):
    h = Harness(executor, ros_context, tmp_path, tmp_path / 'no_pwm_here')
    assert 'PWM backend unavailable' in h.node.blocked_reason
    assert not h.set_enabled(True).success
    assert h.node.diagnostics().status[0].level == DiagnosticStatus.ERROR


def test_diagnostics_report_state_and_latency(harness):
    assert harness.set_enabled(True).success
    arrays: list[DiagnosticArray] = []
    harness.client_node.create_subscription(DiagnosticArray, spec.TOPICS.diagnostics,
                                            arrays.append, 10)
    harness.drive_and_wait(1.0, 0.1, drive_duties(1.0, 0.1))
    harness.drive_and_wait(2.0, 0.1, drive_duties(2.0, 0.1))

    def latest_with_latency():
        for array in reversed(arrays):
            values = {kv.key: kv.value for kv in array.status[0].values}
            if 'latency_p50_ms' in values:
                return array.status[0], values
        return None

    assert spin_until(harness.executor, lambda: latest_with_latency() is not None, 5.0)
    status, values = latest_with_latency()
    assert status.level == DiagnosticStatus.OK
    assert status.hardware_id == str(harness.root / 'pwmchip0')
    assert values['enabled'] == 'True' and values['outputs_enabled'] == 'True'
    assert values['calibration_source'] == 'factory defaults'
    for key in ('latency_p50_ms', 'latency_p99_ms', 'latency_max_ms'):
        assert 0.0 <= float(values[key]) < 5000.0
    assert float(values['latency_p50_ms']) <= float(values['latency_max_ms'])
    assert float(values['commands_per_s']) > 0.0
    # The same figures for an in-process benchmark: every command counted, latencies in s.
    assert harness.node.commands_received >= 2
    samples = harness.node.latency.samples_s()
    assert len(samples) >= 2 and all(0.0 <= sample < 5.0 for sample in samples)


def test_latency_window_keeps_the_newest():
    window = servo_module.LatencyWindow(size=3)
    for latency_ms in (9, 1, 2, 3):
        window.add(latency_ms * 1_000_000)
    assert window.samples_s() == pytest.approx([0.001, 0.002, 0.003])
    assert window.summary() == {'p50_ms': 2.0, 'p99_ms': 3.0, 'max_ms': 3.0, 'samples': 3.0}


def test_parameters_are_checked(harness):
    node = harness.node
    refused = node.set_parameters([Parameter('watchdog_timeout', value=0.0)])[0]
    assert not refused.successful and 'watchdog_timeout must be in' in refused.reason
    refused = node.set_parameters([Parameter('max_speed_scale', value=1.5)])[0]
    assert not refused.successful
    assert refused.reason == 'max_speed_scale must be in [0, 1], got 1.5'
    refused = node.set_parameters([Parameter('backend', value='sim')])[0]
    assert not refused.successful
    assert node.set_parameters([Parameter('max_speed_scale', value=0.5)])[0].successful
    assert harness.set_enabled(True).success
    # 4 m/s -> curve 1.0, scale 0.5 -> ratio 0.5: 1446000 - 0.5 * 135000.
    harness.drive_and_wait(4.0, 0.0, (1_378_500, STEER.mid_ns))


def test_sim_backend_publishes_the_resulting_twist(executor, ros_context, tmp_path, pwm_root):
    h = Harness(executor, ros_context, tmp_path, pwm_root, backend='sim')
    received: list[Twist] = []
    h.client_node.create_subscription(Twist, spec.TOPICS.sim_cmd_vel, received.append, 10)
    assert spin_until(executor, lambda: h.node.count_subscribers(spec.TOPICS.sim_cmd_vel) > 0)
    assert h.set_enabled(True).success
    deadline = time.monotonic() + 5.0

    def moving():
        return any(t.linear.x > 0.5 for t in received)

    while time.monotonic() < deadline and not moving():
        h.send(1.5, 0.25)
        spin_until(executor, moving, 0.05)
    twist = [t for t in received if t.linear.x > 0.5][-1]
    speed, angle = drive.twist_to_drive(twist.linear.x, twist.angular.z)
    # Through whole-ns duty cycles and back: within a few mm/s and mrad.
    assert speed == pytest.approx(1.5, abs=0.005)
    assert angle == pytest.approx(0.25, abs=0.005)
    # The sysfs tree is untouched by the simulated backend.
    assert sysfs_tree.duty_ns(pwm_root, THROTTLE) == 0
    # The watchdog brings the simulated car to a stop as well.
    assert spin_until(executor, lambda: received[-1].linear.x == 0.0, 2.0)


def test_watchdog_is_not_starved_by_busy_command_callbacks(harness):
    """A flood of commands on other threads must not stop the watchdog from running."""
    assert harness.set_enabled(True).success
    node = harness.node
    stop = threading.Event()

    def flood():
        msg = Twist()
        msg.linear.x = 1.0
        while not stop.is_set():
            node._on_cmd_vel(msg)

    harness.drive_and_wait(1.0, 0.0, drive_duties(1.0, 0.0))
    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    try:
        spin_until(harness.executor, lambda: False, 0.3)
    finally:
        stop.set()
        flooder.join(2.0)
    # The commands kept it alive; once they stop, neutral follows within the timeout.
    assert harness.duties() == drive_duties(1.0, 0.0)
    assert spin_until(harness.executor, lambda: harness.duties() == NEUTRAL, 1.0)


def test_config_file_sets_only_declared_parameters(executor, ros_context, tmp_path, pwm_root):
    import yaml
    from deepracer_nodes.paths import share_path
    content = yaml.safe_load(share_path('config', 'servo.yaml').read_text())
    parameters = content[servo_module.NODE_NAME]['ros__parameters']
    h = Harness(executor, ros_context, tmp_path, pwm_root, **parameters)
    for name, value in parameters.items():
        assert h.node.get_parameter(name).value == value


def test_process_drives_then_stops_at_neutral_on_sigint(executor, ros_context, tmp_path,
                                                        pwm_root):
    """main() as a real process: start stopped, drive when enabled, neutral and off on Ctrl-C."""
    import os
    import signal
    import subprocess
    import sys
    import rclpy
    command = [sys.executable, '-m', 'deepracer_nodes.servo_node', '--ros-args',
               '-p', f'pwm_root:={pwm_root}', '-p', f'calibration_file:={tmp_path / "c.json"}']
    process = subprocess.Popen(command, env=dict(os.environ), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        client_node = rclpy.create_node('servo_process_client', context=ros_context)
        executor.add_node(client_node)
        publisher = client_node.create_publisher(Twist, spec.TOPICS.cmd_vel, 10)
        enable = client_node.create_client(SetBool, spec.TOPICS.servo_enable)
        assert spin_until(executor, lambda: enable.service_is_ready()
                          and publisher.get_subscription_count() > 0, 30.0)
        assert sysfs_tree.enabled(pwm_root, THROTTLE)
        assert (sysfs_tree.duty_ns(pwm_root, THROTTLE),
                sysfs_tree.duty_ns(pwm_root, STEERING)) == NEUTRAL
        future = enable.call_async(SetBool.Request(data=True))
        assert spin_until(executor, future.done, 10.0) and future.result().success
        expected = drive_duties(2.0, 0.2)
        msg = Twist()
        msg.linear.x, msg.angular.z = drive.drive_to_twist(2.0, 0.2)

        def driving():
            return (sysfs_tree.duty_ns(pwm_root, THROTTLE),
                    sysfs_tree.duty_ns(pwm_root, STEERING)) == expected

        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and not driving():
            publisher.publish(msg)
            spin_until(executor, driving, 0.05)
        assert driving()
        # Keep commanding while the process is interrupted: shutdown must still end neutral.
        process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 10.0
        while process.poll() is None and time.monotonic() < deadline:
            publisher.publish(msg)
            spin_until(executor, lambda: False, 0.02)
        output = process.communicate(timeout=10.0)[0]
        assert process.returncode == 0, output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert (sysfs_tree.duty_ns(pwm_root, THROTTLE),
            sysfs_tree.duty_ns(pwm_root, STEERING)) == NEUTRAL
    assert not sysfs_tree.enabled(pwm_root, THROTTLE)
    assert not sysfs_tree.enabled(pwm_root, STEERING)


# --- stage 2: live calibration, calibration mode, the calibration file --------------------

def set_params(node, **values):
    """Set parameters atomically through the node's on-set callback; the result."""
    return node.set_parameters_atomically([Parameter(k, value=v) for k, v in values.items()])


def saved_calibration(harness) -> cal.Calibration:
    return cal.load_calibration(harness.node.get_parameter('calibration_file').value).calibration


def test_calibration_parameters_mirror_the_file(executor, ros_context, tmp_path, pwm_root):
    custom = cal.with_flat_changes(cal.FACTORY_CALIBRATION, {
        'steering_mid_ns': 1_460_000, 'throttle_polarity': 1, 'max_speed_scale': 0.7})
    cal.save_calibration(tmp_path / 'cal.json', custom)
    h = Harness(executor, ros_context, tmp_path, pwm_root)
    for name, value in cal.to_flat(custom).items():
        assert h.node.get_parameter(name).value == value
    assert h.node.calibration == custom


def test_live_calibration_change_takes_effect_and_persists(harness):
    result = set_params(harness.node, steering_mid_ns=1_470_000, throttle_mid_ns=1_440_000)
    assert result.successful, result.reason
    # Stopped: the new neutral is written at once.
    assert harness.duties() == (1_440_000, 1_470_000)
    saved = saved_calibration(harness)
    assert (saved.steering.mid_ns, saved.throttle.mid_ns) == (1_470_000, 1_440_000)
    # Written in DeepRacer's format.
    with open(harness.node.get_parameter('calibration_file').value) as handle:
        content = json.load(handle)
    assert content['Calibration']['Servo']['mid'] == 1_470_000
    assert not harness.node.calibration_is_factory_default


def test_invalid_calibration_is_refused_and_changes_nothing(harness):
    harness.node.set_parameters([Parameter('max_speed_scale', value=0.5)])
    before_file = saved_calibration(harness)
    before_duties = harness.duties()
    result = set_params(harness.node, steering_min_ns=1_500_000)
    assert not result.successful
    assert result.reason == 'steering: min_ns (1500000) must be less than mid_ns (1450000)'
    assert harness.node.get_parameter('steering_min_ns').value == STEER.min_ns
    assert saved_calibration(harness) == before_file
    assert harness.duties() == before_duties
    result = set_params(harness.node, throttle_polarity=0)
    assert result.reason == 'throttle: polarity must be 1 or -1, got 0'


def test_a_whole_range_moves_in_one_atomic_change(harness):
    result = set_params(harness.node, steering_min_ns=900_000, steering_mid_ns=1_000_000,
                        steering_max_ns=1_100_000)
    assert result.successful, result.reason
    assert harness.duties() == (MOTOR.mid_ns, 1_000_000)


def test_unsaveable_change_is_refused(harness, monkeypatch):
    def disk_full(fd):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(servo_module.cal.os, 'fsync', disk_full)
    result = set_params(harness.node, steering_mid_ns=1_470_000)
    assert not result.successful and 'cannot be written' in result.reason
    assert harness.node.calibration.steering.mid_ns == STEER.mid_ns
    assert harness.duties() == NEUTRAL


def test_ratio_mode_bypasses_speed_curve_and_scale(harness):
    node = harness.node
    assert set_params(node, max_speed_scale=0.2).successful
    result = set_params(node, calibration_mode='ratio', calibration_throttle=1.0,
                        calibration_steering=-1.0)
    assert result.successful, result.reason
    # Full ratio, no scale: polarity -1 takes the ESC to min; steering to min.
    assert harness.duties() == (MOTOR.min_ns, STEER.min_ns)
    # Autonomy is off while calibrating: commands and enabling are refused.
    harness.send(1.0, 0.3)
    spin_until(harness.executor, lambda: False, 0.1)
    assert harness.duties() == (MOTOR.min_ns, STEER.min_ns)
    response = harness.set_enabled(True)
    assert not response.success and 'calibration mode' in response.message
    assert set_params(node, calibration_mode='off').successful
    assert harness.duties() == NEUTRAL


def test_ns_mode_stays_inside_the_range_unless_widened_first(harness):
    node = harness.node
    assert set_params(node, calibration_mode='ns', calibration_throttle=1_500_000.0,
                      calibration_steering=1_650_000.0).successful
    assert harness.duties() == (1_500_000, 1_650_000)
    result = set_params(node, calibration_steering=1_750_000.0)
    assert not result.successful
    assert result.reason.startswith('calibration_steering 1750000 ns is outside the steering '
                                    'range [1200000, 1700000] ns')
    assert harness.duties() == (1_500_000, 1_650_000)
    # Widen and drive in one atomic change.
    assert set_params(node, steering_max_ns=1_760_000, calibration_steering=1_750_000.0
                      ).successful
    assert harness.duties() == (1_500_000, 1_750_000)
    assert saved_calibration(harness).steering.max_ns == 1_760_000
    # Narrowing the range below the value held clamps the output at once.
    assert set_params(node, steering_max_ns=1_600_000).successful
    assert harness.duties() == (1_500_000, 1_600_000)


def test_calibration_mode_times_out_to_neutral(executor, ros_context, tmp_path, pwm_root):
    h = Harness(executor, ros_context, tmp_path, pwm_root, calibration_timeout=0.3)
    assert set_params(h.node, calibration_mode='ratio', calibration_throttle=0.5,
                      calibration_steering=0.5).successful
    assert h.duties() != NEUTRAL
    # A refresh (the same values again) keeps it going.
    spin_until(executor, lambda: False, 0.2)
    assert set_params(h.node, calibration_mode='ratio').successful
    spin_until(executor, lambda: False, 0.2)
    assert h.duties() != NEUTRAL
    assert spin_until(executor, lambda: h.duties() == NEUTRAL, 2.0)
    assert h.node.get_parameter('calibration_mode').value == 'off'


def test_file_edits_are_picked_up_and_corrupt_files_stop_the_car(harness):
    node = harness.node
    path = node.get_parameter('calibration_file').value
    assert harness.set_enabled(True).success
    edited = cal.with_flat_changes(cal.FACTORY_CALIBRATION, {'steering_mid_ns': 1_480_000})
    cal.save_calibration(path, edited)  # as `deepracer calibrate set` would
    assert spin_until(harness.executor, lambda: node.calibration == edited, 5.0)
    assert node.get_parameter('steering_mid_ns').value == 1_480_000
    with open(path, 'w') as handle:
        handle.write('{"Calibration": {"Servo": ')
    assert spin_until(harness.executor, lambda: node.blocked_reason is not None, 5.0)
    assert node.blocked_reason.startswith(f'calibration refused, not driving: {path}: not valid')
    assert not node.enabled
    assert harness.duties() == (MOTOR.mid_ns, 1_480_000)  # neutral under the last good one
    assert not harness.set_enabled(True).success
    cal.save_calibration(path, edited)
    assert spin_until(harness.executor, lambda: node.blocked_reason is None, 5.0)
    assert harness.set_enabled(True).success


def test_corrupt_at_start_then_fixed_starts_outputs(executor, ros_context, tmp_path, pwm_root):
    path = tmp_path / 'cal.json'
    path.write_text('not json')
    h = Harness(executor, ros_context, tmp_path, pwm_root)
    assert h.node.blocked_reason is not None and h.node.outputs is None
    refused = set_params(h.node, steering_mid_ns=1_460_000)
    assert not refused.successful and 'not valid JSON' in refused.reason
    cal.save_calibration(path, cal.FACTORY_CALIBRATION)
    assert spin_until(executor, lambda: h.node.blocked_reason is None, 5.0)
    assert h.duties() == NEUTRAL and sysfs_tree.enabled(pwm_root, THROTTLE)
    assert h.set_enabled(True).success


def test_no_sequence_of_commands_and_changes_leaves_the_range(harness):
    """Property: whatever happens, every duty written lies inside the calibration in force."""
    node = harness.node
    outside: list[tuple[int, int, cal.Calibration]] = []

    def check_write(channel, duty_ns, t_ns):
        calibration = node.outputs.calibration  # written under the outputs lock
        limits = calibration.throttle if channel == THROTTLE else calibration.steering
        if not limits.min_ns <= duty_ns <= limits.max_ns:
            outside.append((channel, duty_ns, calibration))

    node.backend.on_write = check_write
    node._enabled = True
    ns = st.integers(-1_000_000, 21_000_000)
    number = st.one_of(st.floats(allow_nan=True, allow_infinity=True), ns)
    calibration_change = st.dictionaries(
        st.sampled_from([n for n in cal.FLAT_NAMES if n.endswith('_ns')]), ns, max_size=3)
    operation = st.one_of(
        st.tuples(st.just('command'), number, number),
        st.tuples(st.just('calibrate'), calibration_change),
        st.tuples(st.just('polarity'), st.sampled_from(['steering_polarity',
                                                        'throttle_polarity']),
                  st.sampled_from([1, -1, 0])),
        st.tuples(st.just('scale'), number),
        st.tuples(st.just('raw'), st.sampled_from(['off', 'ratio', 'ns']), number, number),
        st.tuples(st.just('watchdog')),
        st.tuples(st.just('enable'), st.booleans()))

    def run(op):
        kind = op[0]
        if kind == 'command':
            msg = Twist()
            msg.linear.x, msg.angular.z = float(op[1]), float(op[2])
            node._on_cmd_vel(msg)
        elif kind == 'calibrate':
            set_params(node, **op[1])
        elif kind == 'polarity':
            set_params(node, **{op[1]: op[2]})
        elif kind == 'scale':
            set_params(node, max_speed_scale=float(op[1]))
        elif kind == 'raw':
            set_params(node, calibration_mode=op[1], calibration_throttle=float(op[2]),
                       calibration_steering=float(op[3]))
        elif kind == 'watchdog':
            node._last_command_ns = 0  # long ago
            node._on_watchdog()
        else:
            if op[1] and node._raw_target is None:
                node._enabled = True
            elif not op[1]:
                node.stop()

    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow])
    @given(st.lists(operation, min_size=1, max_size=25))
    def check(operations):
        set_params(node, calibration_mode='off', **cal.to_flat(cal.FACTORY_CALIBRATION))
        for op in operations:
            run(op)
            assert not outside, outside
            throttle, steering = harness.duties()
            calibration = node.outputs.calibration
            assert calibration.throttle.min_ns <= throttle <= calibration.throttle.max_ns
            assert calibration.steering.min_ns <= steering <= calibration.steering.max_ns

    check()
    assert node.backend.write_count > 0
