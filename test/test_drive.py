"""Speed -> throttle curve, steering ratio, Twist <-> (speed, steering), duties."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deepracer_nodes.core import drive, spec
from deepracer_nodes.core.calibration import FACTORY_CALIBRATION, Calibration

VMAX = 4.0
hostile = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                    st.integers(-10**30, 10**30))


@pytest.mark.parametrize('speed, expected', [
    (0.0, 0.0), (VMAX, 1.0), (VMAX / 2, 0.8), (-VMAX / 2, -0.8), (-VMAX, -1.0),
    # 1 m/s of 4: a*v^2 + b*v = -1.2/16 + 2.2/4 = 0.475
    (1.0, 0.475),
    # Beyond vmax the parabola would fall again: clamped to full throttle instead.
    (2 * VMAX, 1.0), (1e9, 1.0), (-1e9, -1.0)])
def test_throttle_curve_is_deepracers(speed, expected):
    assert drive.throttle_from_speed(speed, VMAX) == pytest.approx(expected)


def test_scale_multiplies_the_curve():
    assert drive.throttle_from_speed(VMAX / 2, VMAX, 0.5) == pytest.approx(0.4)
    assert drive.throttle_from_speed(VMAX, VMAX, 0.0) == 0.0


def test_same_speed_same_throttle_whatever_the_action_space():
    # vmax is a car property: 2 m/s asks for the same throttle from every model.
    assert drive.throttle_from_speed(2.0, spec.CAR.max_speed_mps) == pytest.approx(0.8)


@given(speed=hostile, vmax=hostile, scale=hostile)
def test_throttle_always_in_unit_range(speed, vmax, scale):
    throttle = drive.throttle_from_speed(speed, vmax, scale)
    assert math.isfinite(throttle) and -1.0 <= throttle <= 1.0


@given(a=st.floats(0.0, VMAX), b=st.floats(0.0, VMAX))
def test_throttle_is_monotonic_in_speed(a, b):
    low, high = sorted((a, b))
    assert drive.throttle_from_speed(low, VMAX) <= drive.throttle_from_speed(high, VMAX)


@pytest.mark.parametrize('value', [math.nan, math.inf, -math.inf])
def test_non_finite_speed_is_neutral(value):
    assert drive.throttle_from_speed(value, VMAX) == 0.0


@given(speed=st.floats(-VMAX * drive.SATURATION_FRACTION, VMAX * drive.SATURATION_FRACTION),
       scale=st.floats(0.05, 1.0))
def test_speed_from_throttle_inverts_the_curve(speed, scale):
    throttle = drive.throttle_from_speed(speed, VMAX, scale)
    assert drive.speed_from_throttle(throttle, VMAX, scale) == pytest.approx(speed, abs=1e-6)


def test_full_throttle_reads_back_as_five_sixths_of_vmax():
    assert drive.speed_from_throttle(1.0, VMAX) == pytest.approx(VMAX * 5 / 6)
    assert drive.speed_from_throttle(-1.0, VMAX) == pytest.approx(-VMAX * 5 / 6)
    assert drive.speed_from_throttle(0.5, VMAX, 0.0) == 0.0


def test_steering_ratio():
    limit = spec.CAR.max_steering_rad
    assert drive.steering_ratio(limit / 2) == pytest.approx(0.5)
    assert drive.steering_ratio(-limit) == pytest.approx(-1.0)
    assert drive.steering_ratio(10.0) == 1.0
    assert drive.steering_ratio(math.nan) == 0.0
    assert drive.steering_angle_from_ratio(0.5) == pytest.approx(limit / 2)


def test_twist_to_drive_inverts_the_bicycle_model():
    wheelbase = spec.CAR.wheelbase_m
    angle = 0.3
    for speed in (1.5, -1.5):
        linear, angular = drive.drive_to_twist(speed, angle)
        assert angular == pytest.approx(speed * math.tan(angle) / wheelbase)
        assert drive.twist_to_drive(linear, angular) == pytest.approx((speed, angle))


def test_positive_yaw_rate_forward_is_a_left_turn():
    speed, angle = drive.twist_to_drive(1.0, 0.5)
    assert angle > 0.0 and drive.steering_ratio(angle) > 0.0


def test_zero_speed_means_straight_steering():
    assert drive.twist_to_drive(0.0, 1.0) == (0.0, 0.0)
    assert drive.twist_to_drive(1e-6, 1.0) == (1e-6, 0.0)


@given(linear=hostile, angular=hostile)
def test_twist_to_drive_is_always_finite(linear, angular):
    speed, angle = drive.twist_to_drive(linear, angular)
    assert math.isfinite(speed) and math.isfinite(angle)
    assert abs(angle) <= math.pi / 2


def test_drive_to_duties_known_commands():
    duties = drive.drive_to_duties(VMAX / 2, spec.CAR.max_steering_rad, FACTORY_CALIBRATION)
    # Throttle 0.8 with polarity -1: 1446000 - 0.8 * (1446000 - 1311000) = 1338000
    assert duties == drive.Duties(throttle_ns=1_338_000, steering_ns=1_700_000)
    assert drive.drive_to_duties(0.0, 0.0, FACTORY_CALIBRATION) == drive.neutral_duties(
        FACTORY_CALIBRATION) == drive.Duties(1_446_000, 1_450_000)
    half = Calibration(max_speed_scale=0.5)
    assert drive.drive_to_duties(VMAX, 0.0, half).throttle_ns == 1_446_000 - 67_500


@given(speed=hostile, angle=hostile)
def test_duties_always_inside_the_calibration(speed, angle):
    duties = drive.drive_to_duties(speed, angle, FACTORY_CALIBRATION)
    for channel, duty in ((FACTORY_CALIBRATION.throttle, duties.throttle_ns),
                          (FACTORY_CALIBRATION.steering, duties.steering_ns)):
        assert channel.min_ns <= duty <= channel.max_ns


def test_duties_to_drive_round_trip():
    duties = drive.drive_to_duties(1.0, -0.2, FACTORY_CALIBRATION)
    speed, angle = drive.duties_to_drive(duties, FACTORY_CALIBRATION)
    # Whole-ns duty cycles: the round trip is good to a few tenths of a mm/s and a mrad.
    assert speed == pytest.approx(1.0, abs=1e-3)
    assert angle == pytest.approx(-0.2, abs=1e-3)


def test_raw_targets_are_validated():
    calibration = FACTORY_CALIBRATION
    assert drive.raw_target('off', 5.0, 5.0, calibration) is None
    ratio = drive.raw_target('ratio', 1.0, -0.5, calibration)
    assert drive.raw_target_duties(ratio, calibration) == drive.Duties(1_311_000, 1_325_000)
    ns = drive.raw_target('ns', 1_500_000, 1_700_000, calibration)
    assert drive.raw_target_duties(ns, calibration) == drive.Duties(1_500_000, 1_700_000)
    for args, message in [
            (('fast', 0.0, 0.0), "calibration_mode must be one of ('off', 'ratio', 'ns')"),
            (('ratio', 1.5, 0.0), 'calibration_throttle must be a ratio in [-1, 1], got 1.5'),
            (('ratio', 0.0, math.nan), 'calibration_steering must be a finite number'),
            (('ns', 1_446_000, 1_800_000),
             'calibration_steering 1800000 ns is outside the steering range '
             '[1200000, 1700000] ns: widen the range first')]:
        with pytest.raises(ValueError) as raised:
            drive.raw_target(*args, calibration)
        assert str(raised.value).startswith(message)


def test_max_speed_scale_slows_the_car_the_duties_describe():
    """Half the throttle of 2 m/s: the car follows the curve from that throttle, not 2 m/s."""
    half = replace(FACTORY_CALIBRATION, max_speed_scale=0.5)
    speed, _ = drive.duties_to_drive(drive.drive_to_duties(2.0, 0.0, half), half)
    expected = drive.speed_from_throttle(0.5 * drive.throttle_from_speed(2.0, VMAX), VMAX)
    assert speed == pytest.approx(expected, abs=0.01)
    assert speed < 1.5
