"""Kinematic bicycle model: circle radius, actuator lags, limits, step size independence."""

from __future__ import annotations

import math

import pytest

from deepracer_nodes.core import spec
from deepracer_nodes.sim import dynamics
from deepracer_nodes.sim.dynamics import CarState


def drive(state: CarState, speed: float, steering: float, dt: float, duration: float):
    positions = []
    for _ in range(int(round(duration / dt))):
        state = dynamics.step(state, speed, steering, dt)
        positions.append((state.x, state.y))
    return state, positions


@pytest.mark.parametrize('steering', [0.1, 0.3, -spec.CAR.max_steering_rad])
@pytest.mark.parametrize('dt', [0.01, 1 / 15, 0.1])
def test_constant_steering_drives_a_circle(steering, dt):
    speed = 1.5
    start = CarState(x=1.0, y=-2.0, yaw=0.7, speed=speed, steering=steering)
    radius = spec.CAR.wheelbase_m / math.tan(abs(steering))
    side = math.copysign(1.0, steering)  # centre on the left for a left turn
    centre = (start.x - side * radius * math.sin(start.yaw),
              start.y + side * radius * math.cos(start.yaw))
    end, positions = drive(start, speed, steering, dt, duration=6.0)
    for x, y in positions:
        assert math.dist((x, y), centre) == pytest.approx(radius, abs=1e-9)
    assert dynamics.turning_radius(steering) == pytest.approx(radius)
    # The heading turned by distance / radius.
    turned = math.remainder(end.yaw - start.yaw, 2 * math.pi)
    expected = math.remainder(side * speed * 6.0 / radius, 2 * math.pi)
    assert turned == pytest.approx(expected, abs=1e-9)


def test_speed_follows_a_first_order_lag():
    tau = spec.CAR.speed_time_constant_s
    state, _ = drive(CarState(), 2.0, 0.0, 0.01, duration=tau)
    assert state.speed == pytest.approx(2.0 * (1 - math.exp(-1)), rel=1e-9)
    # Distance is the exact integral of the lagged speed.
    assert state.x == pytest.approx(2.0 * (tau - tau * (1 - math.exp(-1))), rel=1e-9)
    assert state.y == 0.0 and state.yaw == 0.0


def test_steering_follows_a_first_order_lag():
    tau = spec.CAR.steering_time_constant_s
    state = dynamics.step(CarState(), 0.0, 0.4, tau)
    assert state.steering == pytest.approx(0.4 * (1 - math.exp(-1)), rel=1e-9)
    assert (state.x, state.y, state.yaw) == (0.0, 0.0, 0.0)  # no speed, no motion


def test_commands_are_clamped_to_the_car_limits():
    state, _ = drive(CarState(), 100.0, 3.0, 0.1, duration=5.0)
    assert state.speed == pytest.approx(spec.CAR.max_speed_mps)
    assert state.steering == pytest.approx(spec.CAR.max_steering_rad)
    state, _ = drive(CarState(), -100.0, -3.0, 0.1, duration=5.0)
    assert state.speed == pytest.approx(-spec.CAR.max_speed_mps)
    assert state.steering == pytest.approx(-spec.CAR.max_steering_rad)


def test_result_does_not_depend_on_the_step_size():
    commands = [(1.0, 0.3), (2.5, -0.2), (0.5, 0.5), (3.0, 0.0), (-0.5, 0.4)]
    coarse = fine = CarState(speed=0.5)
    for speed, steering in commands:
        coarse, _ = drive(coarse, speed, steering, 0.1, duration=0.6)
        fine, _ = drive(fine, speed, steering, 0.001, duration=0.6)
    assert math.dist((coarse.x, coarse.y), (fine.x, fine.y)) < 1e-3
    assert coarse.yaw == pytest.approx(fine.yaw, abs=1e-3)
    assert coarse.speed == pytest.approx(fine.speed, abs=1e-9)
    assert coarse.steering == pytest.approx(fine.steering, abs=1e-9)


def test_reversing_with_left_steering_turns_clockwise():
    start = CarState(speed=-1.0, steering=0.3)
    end = dynamics.step(start, -1.0, 0.3, 0.1)
    assert end.x < 0.0
    assert end.yaw < 0.0
    assert end.yaw_rate == pytest.approx(dynamics.yaw_rate(-1.0, 0.3))


def test_yaw_stays_wrapped():
    state, _ = drive(CarState(speed=2.0, steering=0.5), 2.0, 0.5, 0.1, duration=30.0)
    assert -math.pi < state.yaw <= math.pi


def test_state_is_immutable_and_input_untouched():
    start = CarState(speed=1.0)
    dynamics.step(start, 2.0, 0.1, 0.1)
    assert start == CarState(speed=1.0)
    with pytest.raises(AttributeError):
        start.x = 3.0


@pytest.mark.parametrize('speed, steering, dt', [
    (math.nan, 0.0, 0.1), (1.0, math.inf, 0.1), (1.0, 0.0, 0.0), (1.0, 0.0, -0.1),
    (1.0, 0.0, 2.0), (1.0, 0.0, math.nan),
])
def test_bad_inputs_raise_value_error(speed, steering, dt):
    with pytest.raises(ValueError):
        dynamics.step(CarState(), speed, steering, dt)
