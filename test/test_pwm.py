"""PWM backends against a real directory tree shaped like /sys/class/pwm."""

from __future__ import annotations

import pytest
from deepracer_nodes.core import sysfs_tree

from deepracer_nodes.core import pwm, spec
from deepracer_nodes.core.pwm import PwmError, SimulatedPwm, SysfsPwm

THROTTLE, STEERING = spec.PWM.throttle_channel, spec.PWM.steering_channel


def test_setup_sets_the_period_and_leaves_outputs_disabled(tmp_path):
    root = sysfs_tree.make_pwm_tree(tmp_path)
    backend = SysfsPwm(root=root)
    assert backend.chip_path == root / 'pwmchip0'
    for channel in (THROTTLE, STEERING):
        assert sysfs_tree.period_ns(root, channel) == spec.PWM.period_ns
        assert not sysfs_tree.enabled(root, channel)


def test_writes_duty_cycles_in_ns(tmp_path):
    root = sysfs_tree.make_pwm_tree(tmp_path)
    backend = SysfsPwm(root=root)
    assert backend.write(THROTTLE, 1_446_000)
    assert backend.write(STEERING, 1_700_000)
    assert sysfs_tree.duty_ns(root, THROTTLE) == 1_446_000
    assert sysfs_tree.duty_ns(root, STEERING) == 1_700_000
    assert backend.last_duty(STEERING) == 1_700_000


def test_unchanged_writes_are_skipped(tmp_path):
    root = sysfs_tree.make_pwm_tree(tmp_path)
    seen = []
    backend = SysfsPwm(root=root, on_write=lambda c, d, t: seen.append((c, d)))
    assert backend.write(STEERING, 1_500_000)
    # Change the file behind the backend's back: an unchanged write must not touch it.
    (root / 'pwmchip0' / 'pwm1' / 'duty_cycle').write_text('42')
    assert not backend.write(STEERING, 1_500_000)
    assert sysfs_tree.duty_ns(root, STEERING) == 42
    assert seen == [(STEERING, 1_500_000)]
    assert backend.write_count == 1


def test_enable_requires_a_duty_cycle_first(tmp_path):
    root = sysfs_tree.make_pwm_tree(tmp_path)
    backend = SysfsPwm(root=root)
    backend.write(THROTTLE, 1_446_000)
    with pytest.raises(PwmError, match=r'before enabling them'):
        backend.enable()
    assert not sysfs_tree.enabled(root, THROTTLE)
    backend.write(STEERING, 1_450_000)
    backend.enable()
    assert sysfs_tree.enabled(root, THROTTLE) and sysfs_tree.enabled(root, STEERING)
    backend.disable()
    assert not sysfs_tree.enabled(root, THROTTLE) and not sysfs_tree.enabled(root, STEERING)


def test_auto_detect_takes_the_first_chip_with_enough_channels(tmp_path):
    # pwmchip0 has one channel only (like a backlight PWM); pwmchip2 is the servo board.
    root = sysfs_tree.make_pwm_tree(tmp_path, chip=2, extra_chips={0: 1, 10: 16})
    assert pwm.find_pwm_chip(root) == root / 'pwmchip2'
    assert SysfsPwm(root=root).chip_path == root / 'pwmchip2'


def test_explicit_chip(tmp_path):
    root = sysfs_tree.make_pwm_tree(tmp_path, chip=3)
    assert SysfsPwm(root=root, chip=3).chip_path == root / 'pwmchip3'
    with pytest.raises(PwmError, match=r'pwmchip1 does not exist \(pwm_chip=1\)'):
        SysfsPwm(root=root, chip=1)


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(PwmError, match='does not exist: no PWM support'):
        SysfsPwm(root=tmp_path / 'nothing')


def test_no_suitable_chip_is_a_clear_error(tmp_path):
    root = sysfs_tree.make_pwm_tree(tmp_path, npwm=1, exported=())
    with pytest.raises(PwmError, match=r'no pwmchip with at least 2 channels .* '
                                       r'found: pwmchip0 \(npwm=1\)'):
        SysfsPwm(root=root)


def test_export_that_never_appears_is_a_clear_error(tmp_path):
    root = sysfs_tree.make_pwm_tree(tmp_path, exported=())
    with pytest.raises(PwmError, match=r'exported channel 0 but .*pwm0 did not appear'):
        SysfsPwm(root=root, export_timeout_s=0.05)
    # The export request did reach the chip.
    assert (root / 'pwmchip0' / 'export').read_text() == '0'


def test_exports_missing_channels_and_waits_for_them(tmp_path):
    root = sysfs_tree.make_pwm_tree(tmp_path, exported=())
    with sysfs_tree.ExportResponder(root / 'pwmchip0') as kernel:
        backend = SysfsPwm(root=root, export_timeout_s=2.0)
    assert kernel.exported == [THROTTLE, STEERING]
    backend.write(STEERING, 1_450_000)
    assert sysfs_tree.duty_ns(root, STEERING) == 1_450_000
    assert sysfs_tree.period_ns(root, STEERING) == spec.PWM.period_ns


def test_channel_beyond_npwm_is_refused(tmp_path):
    root = sysfs_tree.make_pwm_tree(tmp_path, npwm=2, exported=())
    with pytest.raises(PwmError, match='has 2 channels, cannot use channel 4'):
        SysfsPwm(root=root, chip=0, channels=(0, 4))


def test_period_shorter_than_an_old_duty_cycle_is_still_set(tmp_path):
    root = sysfs_tree.make_pwm_tree(tmp_path)
    (root / 'pwmchip0' / 'pwm0' / 'duty_cycle').write_text('30000000')
    SysfsPwm(root=root)
    assert sysfs_tree.period_ns(root, THROTTLE) == spec.PWM.period_ns
    assert sysfs_tree.duty_ns(root, THROTTLE) == 0


def test_duty_beyond_the_period_is_refused(tmp_path):
    root = sysfs_tree.make_pwm_tree(tmp_path)
    backend = SysfsPwm(root=root)
    with pytest.raises(PwmError, match='outside the period'):
        backend.write(THROTTLE, spec.PWM.period_ns + 1)
    assert backend.last_duty(THROTTLE) is None


def test_write_failure_is_a_pwm_error_and_keeps_no_false_state(tmp_path):
    root = sysfs_tree.make_pwm_tree(tmp_path)
    duty_file = root / 'pwmchip0' / 'pwm1' / 'duty_cycle'
    duty_file.unlink()
    duty_file.symlink_to('/dev/full')  # every write fails with ENOSPC, like a dead device
    backend = SysfsPwm(root=root)
    with pytest.raises(PwmError, match='cannot write 1450000 to .*duty_cycle: No space'):
        backend.write(STEERING, 1_450_000)
    assert backend.last_duty(STEERING) is None


def test_unopenable_duty_file_is_a_clear_error(tmp_path):
    root = sysfs_tree.make_pwm_tree(tmp_path)
    duty_file = root / 'pwmchip0' / 'pwm1' / 'duty_cycle'
    duty_file.unlink()
    duty_file.mkdir()
    with pytest.raises(PwmError, match=r'cannot open .*pwm1/duty_cycle'):
        SysfsPwm(root=root)


def test_shorter_value_replaces_a_longer_one(tmp_path):
    root = sysfs_tree.make_pwm_tree(tmp_path)
    backend = SysfsPwm(root=root)
    backend.write(STEERING, 1_450_000)
    backend.write(STEERING, 999_999)
    assert sysfs_tree.duty_ns(root, STEERING) == 999_999
    backend.write(STEERING, 1_000_001)
    assert sysfs_tree.duty_ns(root, STEERING) == 1_000_001


def test_closed_backend_refuses_writes(tmp_path):
    root = sysfs_tree.make_pwm_tree(tmp_path)
    backend = SysfsPwm(root=root)
    backend.close()
    with pytest.raises(PwmError, match='closed'):
        backend.write(STEERING, 1_450_000)


def test_unknown_channel_is_refused():
    backend = SimulatedPwm()
    with pytest.raises(PwmError, match='channel 7 is not one of'):
        backend.write(7, 1_500_000)


def test_simulated_backend_records_and_reports():
    seen = []
    backend = SimulatedPwm(on_write=lambda c, d, t: seen.append((c, d, t)))
    assert backend.write(THROTTLE, 1_400_000)
    assert not backend.write(THROTTLE, 1_400_000)
    assert backend.last_duty(THROTTLE) == 1_400_000
    assert [(c, d) for c, d, _ in seen] == [(THROTTLE, 1_400_000)]
    assert seen[0][2] > 0
    backend.write(STEERING, 1_450_000)
    backend.enable()
    assert backend.enabled
    backend.disable()
    assert not backend.enabled


def test_duplicate_channels_are_refused():
    with pytest.raises(ValueError, match='distinct'):
        SimulatedPwm(channels=(1, 1))
