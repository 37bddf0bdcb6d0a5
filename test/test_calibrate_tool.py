"""`deepracer calibrate`: the file commands, and the interactive tool driven through its input
against a real servo node writing a temporary sysfs PWM tree."""

from __future__ import annotations

import argparse
import io
import json
import os
import threading
import time
from types import SimpleNamespace

import pytest
from deepracer_nodes.core import sysfs_tree
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter

from deepracer_nodes import calibrate_tool as tool
from deepracer_nodes.core import calibration as cal
from deepracer_nodes.core import spec
from deepracer_nodes.servo_node import ServoNode

THROTTLE, STEERING = spec.PWM.throttle_channel, spec.PWM.steering_channel
STEER, MOTOR = cal.FACTORY_STEERING, cal.FACTORY_THROTTLE
DEEPRACER_FILE = {'Calibration': {
    'Servo': {'max': 1_650_000, 'mid': 1_430_000, 'min': 1_180_000, 'polarity': -1},
    'Motor': {'max': 1_600_000, 'mid': 1_450_000, 'min': 1_300_000, 'polarity': -1},
    'version': 1}}


def cli(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog='deepracer calibrate')
    tool.add_arguments(parser)
    out, err = io.StringIO(), io.StringIO()
    code = tool.run(parser.parse_args(list(argv)), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


# --- file commands ------------------------------------------------------------------------

def test_show_missing_file_is_factory_defaults(tmp_path):
    code, out, _ = cli('--file', str(tmp_path / 'c.json'), 'show')
    assert code == 0
    assert 'factory defaults, file not found' in out
    assert 'steering (Servo): min 1200000  mid 1450000  max 1700000 ns  polarity +1' in out
    assert 'throttle (Motor): min 1311000  mid 1446000  max 1603500 ns  polarity -1' in out


def test_set_writes_a_validated_deepracer_file(tmp_path):
    path = tmp_path / 'c.json'
    code, out, err = cli('--file', str(path), 'set', 'steering', '--min', '1100000',
                         '--mid', '1400000', '--max', '1750000', '--reverse')
    assert code == 0, err
    content = json.loads(path.read_text())
    assert content['Calibration']['Servo'] == {'max': 1_750_000, 'mid': 1_400_000,
                                               'min': 1_100_000, 'polarity': -1}
    assert content['Calibration']['Motor']['mid'] == MOTOR.mid_ns
    code, _, _ = cli('--file', str(path), 'set', 'steering', '--no-reverse')
    assert json.loads(path.read_text())['Calibration']['Servo']['polarity'] == 1
    code, out, _ = cli('--file', str(path), 'set', 'speed', '--max-speed-mps', '3.5',
                       '--max-speed-scale', '0.6')
    assert code == 0
    assert cal.load_calibration(path).calibration.max_speed_mps == 3.5
    assert 'max_speed_scale 0.6' in out


def test_set_refuses_invalid_values_and_keeps_the_file(tmp_path):
    path = tmp_path / 'c.json'
    cal.save_calibration(path, cal.FACTORY_CALIBRATION)
    before = path.read_text()
    code, out, err = cli('--file', str(path), 'set', 'throttle', '--mid', '1700000')
    assert code == 1 and out == ''
    assert err == ('deepracer calibrate set: throttle: mid_ns (1700000) must be less than '
                   'max_ns (1603500)\n')
    assert path.read_text() == before
    code, _, err = cli('--file', str(path), 'set', 'speed', '--max-speed-scale', '2')
    assert code == 1 and 'max_speed_scale must be in [0, 1], got 2.0' in err
    code, _, err = cli('--file', str(path), 'set', 'steering')
    assert code == 1 and 'nothing to set' in err
    code, _, err = cli('--file', str(path), 'set', 'speed', '--min', '5')
    assert code == 1 and 'set speed takes' in err


def test_show_and_set_report_a_corrupt_file(tmp_path):
    path = tmp_path / 'c.json'
    path.write_text('{"Calibration": {}}')
    code, _, err = cli('--file', str(path), 'show')
    assert code == 1
    assert err == f'deepracer calibrate show: {path}: missing "Calibration.Servo" (steering)\n'
    code, _, err = cli('--file', str(path), 'set', 'steering', '--mid', '1450000')
    assert code == 1 and 'missing "Calibration.Servo"' in err
    code, _, _ = cli('--file', str(path), 'reset')
    assert code == 0
    assert cal.load_calibration(path).calibration == cal.FACTORY_CALIBRATION


def test_import_deepracer_file_keeps_our_speed_settings(tmp_path):
    path = tmp_path / 'c.json'
    cal.save_calibration(path, cal.Calibration(max_speed_mps=3.0, max_speed_scale=0.5))
    source = tmp_path / 'from_car.json'
    source.write_text(json.dumps(DEEPRACER_FILE))
    code, out, err = cli('--file', str(path), 'import', str(source))
    assert code == 0, err
    imported = cal.load_calibration(path).calibration
    assert cal.to_json_dict(imported)['Calibration'] == DEEPRACER_FILE['Calibration']
    assert (imported.max_speed_mps, imported.max_speed_scale) == (3.0, 0.5)


def test_import_refuses_a_bad_file(tmp_path):
    path = tmp_path / 'c.json'
    source = tmp_path / 'bad.json'
    broken = json.loads(json.dumps(DEEPRACER_FILE))
    broken['Calibration']['Motor']['min'] = 1_500_000
    source.write_text(json.dumps(broken))
    code, _, err = cli('--file', str(path), 'import', str(source))
    assert code == 1
    assert err == (f'deepracer calibrate import: {source}: "Calibration.Motor" (throttle): '
                   'min_ns (1500000) must be less than mid_ns (1450000)\n')
    assert not path.exists()
    code, _, err = cli('--file', str(path), 'import', str(tmp_path / 'nothing.json'))
    assert code == 1 and 'cannot be imported' in err


def test_export_round_trips_deepracers_format(tmp_path):
    path = tmp_path / 'c.json'
    source = tmp_path / 'from_car.json'
    source.write_text(json.dumps(DEEPRACER_FILE))
    assert cli('--file', str(path), 'import', str(source))[0] == 0
    code, out, _ = cli('--file', str(path), 'export', '-')
    assert code == 0
    assert json.loads(out)['Calibration'] == DEEPRACER_FILE['Calibration']
    destination = tmp_path / 'for_the_official_car.json'
    code, _, _ = cli('--file', str(path), 'export', str(destination), '--deepracer-only')
    assert code == 0
    assert json.loads(destination.read_text()) == DEEPRACER_FILE


# --- interactive, through a real servo node -----------------------------------------------

@pytest.fixture
def servo(ros_context, tmp_path):
    root = sysfs_tree.make_pwm_tree(tmp_path)
    path = tmp_path / 'calibration.json'
    node = ServoNode(context=ros_context, parameter_overrides=[
        Parameter('pwm_root', value=str(root)), Parameter('calibration_file', value=str(path))])
    writes: list[tuple[int, int, int]] = []
    node.backend.on_write = lambda c, d, t: writes.append((c, d, t))
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    yield SimpleNamespace(node=node, root=root, path=path, writes=writes)
    executor.shutdown(timeout_sec=2.0)
    thread.join(timeout=2.0)
    node.destroy_node()


def interactive(context, keys, arm_seconds: float = 0.05) -> tuple[int, str]:
    args = argparse.Namespace(node='servo_node', arm_seconds=arm_seconds, timeout=5.0)
    out = io.StringIO()
    keys_in = io.StringIO(keys) if isinstance(keys, str) else keys
    code = tool.cmd_interactive(args, out, keys_in=keys_in, context=context)
    return code, out.getvalue()


def duties(servo) -> tuple[int, int]:
    return sysfs_tree.duty_ns(servo.root, THROTTLE), sysfs_tree.duty_ns(servo.root, STEERING)


def written(servo, channel: int) -> list[int]:
    return [duty for c, duty, _ in servo.writes if c == channel]


def test_nudge_throttle_set_max_and_keep(ros_context, servo):
    code, out = interactive(ros_context, 't' + 'D' * 3 + 'd' + 'x' + 'w' + 'q')
    assert code == 0, out
    expected = MOTOR.mid_ns + 3 * tool.COARSE_STEP_NS + tool.FINE_STEP_NS
    # The ESC was driven through every step while the wheels turned.
    throttle_writes = written(servo, THROTTLE)
    for step in (MOTOR.mid_ns + 10_000, MOTOR.mid_ns + 20_000, MOTOR.mid_ns + 30_000, expected):
        assert step in throttle_writes
    assert f'max set to {expected} ns' in out
    saved = cal.load_calibration(servo.path).calibration
    assert saved.throttle.max_ns == expected
    assert saved.steering == STEER
    assert servo.node.calibration.throttle.max_ns == expected
    # Leaving calibration mode: neutral, autonomy still stopped.
    assert 'calibration mode off: outputs at neutral' in out
    assert duties(servo) == (MOTOR.mid_ns, STEER.mid_ns)
    assert servo.node.get_parameter('calibration_mode').value == 'off'
    assert not servo.node.enabled


def test_nudging_past_the_end_widens_the_range(ros_context, servo):
    steps_past_max = (STEER.max_ns - STEER.mid_ns) // tool.COARSE_STEP_NS + 1
    # Arrow up: a coarse step.
    code, out = interactive(ros_context, 's' + '\x1b[A' * steps_past_max + 'x' + 'w' + 'q')
    assert code == 0, out
    widened = STEER.mid_ns + steps_past_max * tool.COARSE_STEP_NS
    assert 'range widened' in out
    assert widened in written(servo, STEERING)
    assert cal.load_calibration(servo.path).calibration.steering.max_ns == widened


def test_quit_without_keeping_undoes_the_changes(ros_context, servo):
    code, out = interactive(ros_context, 'a' * 5 + 'n' + 'r' + 'q')
    assert code == 0, out
    assert 'direction reversed' in out
    assert 'changes undone' in out
    assert cal.load_calibration(servo.path).calibration == cal.FACTORY_CALIBRATION
    assert servo.node.calibration == cal.FACTORY_CALIBRATION
    assert duties(servo) == (MOTOR.mid_ns, STEER.mid_ns)


def test_end_of_input_also_undoes_and_returns_to_neutral(ros_context, servo):
    code, out = interactive(ros_context, 'tDDDx')
    assert code == 0
    assert cal.load_calibration(servo.path).calibration == cal.FACTORY_CALIBRATION
    assert duties(servo) == (MOTOR.mid_ns, STEER.mid_ns)


def test_invalid_setting_shows_the_nodes_reason(ros_context, servo):
    code, out = interactive(ros_context, 'n' + 'ax' + 'q')
    assert 'refused: steering: min_ns (1450000) must be less than mid_ns (1450000)' in out
    assert 'refused: steering: mid_ns (1450000) must be less than max_ns (1449000)' in out
    assert servo.node.calibration == cal.FACTORY_CALIBRATION


def test_nudges_stay_inside_the_hard_envelope(ros_context, servo):
    code, out = interactive(ros_context, 'A' * 100 + 'w' + 'q')
    assert f'is outside {tool.HARD_MIN_NS}..{tool.HARD_MAX_NS} ns: refused' in out
    assert min(written(servo, STEERING)) >= tool.HARD_MIN_NS


def test_esc_is_armed_at_neutral_before_it_moves(ros_context, servo):
    started = time.time_ns()
    code, out = interactive(ros_context, 'tD' + 'q', arm_seconds=0.5)
    assert 'arming the ESC at neutral for 0.5 s' in out
    first_move = next(t for c, duty, t in servo.writes
                      if c == THROTTLE and duty != MOTOR.mid_ns)
    assert (first_move - started) / 1e9 >= 0.5


def test_idle_session_keeps_calibration_mode_alive(ros_context, servo):
    """Nothing typed for longer than the node's calibration timeout: the value holds."""
    read_fd, write_fd = os.pipe()
    keys_in = os.fdopen(read_fd, 'r')
    result: dict[str, object] = {}
    session = threading.Thread(target=lambda: result.update(
        zip(('code', 'out'), interactive(ros_context, keys_in))), daemon=True)
    session.start()
    os.write(write_fd, b'DDD')
    target = STEER.mid_ns + 3 * tool.COARSE_STEP_NS
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and duties(servo)[1] != target:
        time.sleep(0.02)
    assert duties(servo)[1] == target
    time.sleep(servo.node.get_parameter('calibration_timeout').value * 1.5)
    assert duties(servo)[1] == target
    assert servo.node.get_parameter('calibration_mode').value == 'ns'
    os.write(write_fd, b'q')
    os.close(write_fd)
    session.join(timeout=10.0)
    assert result.get('code') == 0
    assert duties(servo) == (MOTOR.mid_ns, STEER.mid_ns)


def test_a_dead_tool_leaves_the_car_at_neutral(ros_context, servo):
    """The tool vanishes mid-nudge (no quit, no refresh): the node's own timeout acts."""
    client = tool.ServoCalibrationClient(context=ros_context)
    try:
        client.wait_ready()
        assert client.set(calibration_mode='ns', calibration_throttle=1_500_000.0,
                          calibration_steering=1_500_000.0) is None
        assert duties(servo) == (1_500_000, 1_500_000)
    finally:
        client.close()
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and duties(servo) != (MOTOR.mid_ns, STEER.mid_ns):
        time.sleep(0.05)
    assert duties(servo) == (MOTOR.mid_ns, STEER.mid_ns)


def test_no_servo_node_is_a_clear_error(ros_context):
    args = argparse.Namespace(node='no_such_servo_node', arm_seconds=0.0, timeout=0.3,
                              calibrate_command='interactive')
    err = io.StringIO()
    # run() builds its own ROS context, as `deepracer calibrate` does.
    code = tool.run(args, out=io.StringIO(), err=err)
    assert code == 1
    assert 'no servo node at /no_such_servo_node' in err.getvalue()
