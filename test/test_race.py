"""Race rules (progress, laps, off-track resets), reward parameters and the expert driver."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deepracer_nodes.core import spec
from deepracer_nodes.sim import dynamics, track_library
from deepracer_nodes.sim.race import ExpertDriver, Pose, Race, RaceConfig

REWARD_KEYS = {
    'all_wheels_on_track', 'x', 'y', 'heading', 'distance_from_center', 'is_left_of_center',
    'is_reversed', 'is_offtrack', 'progress', 'steps', 'speed', 'steering_angle',
    'track_width', 'track_length', 'waypoints', 'closest_waypoints'}


@pytest.fixture(scope='module')
def loop():
    return track_library.make_track('loop')


def drive_centre_line(race: Race, start_arc: float, end_arc: float, speed: float,
                      t0: float = 0.0, dt: float = 1 / 15):
    """Feed poses along the centre line from one arc length to another at a speed."""
    updates = []
    steps = int(math.ceil(abs(end_arc - start_arc) / (speed * dt)))
    for k in range(1, steps + 1):
        arc = start_arc + (end_arc - start_arc) * k / steps
        pose = race.pose_at_arc(arc)
        updates.append(race.update(t0 + k * abs(end_arc - start_arc) / steps / speed,
                                   pose.x, pose.y, pose.yaw))
    return updates


def test_start_pose_puts_the_car_centre_on_the_line(loop):
    race = Race(loop)
    pose = race.start_pose()
    params = race.reward_params(0.0, 0.0)
    assert params['distance_from_center'] == pytest.approx(0.0, abs=1e-9)
    assert params['progress'] == 0.0 and params['steps'] == 0
    assert pose.yaw == pytest.approx(loop.heading_at(0.0))
    assert math.dist((params['x'], params['y']), loop.point_at(0.0)) == pytest.approx(0, abs=1e-9)


def test_laps_are_counted_with_interpolated_times(loop):
    race = Race(loop)
    speed = 2.0
    updates = drive_centre_line(race, 0.0, 2.5 * loop.length_m, speed)
    lap_times = [u.lap_time_s for u in updates if u.lap_time_s is not None]
    assert race.laps_completed == 2
    assert lap_times == pytest.approx([loop.length_m / speed] * 2, rel=1e-3)
    assert race.lap_times_s == lap_times
    assert race.progress == pytest.approx(50.0, abs=0.5)
    assert race.off_track_count == 0
    assert all(u.all_wheels_on_track for u in updates)


def test_progress_carries_across_the_start_line(loop):
    race = Race(loop, RaceConfig(start_progress=95.0))
    start = 0.95 * loop.length_m
    drive_centre_line(race, start, start + 0.10 * loop.length_m, 1.5)
    assert race.laps_completed == 0
    assert race.progress == pytest.approx(10.0, abs=0.2)
    params = race.reward_params(1.5, 0.0)
    assert params['closest_waypoints'][0] < 10  # now just past waypoint 0


def test_driving_backwards_makes_no_progress(loop):
    race = Race(loop)
    drive_centre_line(race, 0.0, -3.0, 1.0)
    assert race.progress == 0.0
    # Back the way it came: progress only counts once the car is past the start again.
    drive_centre_line(race, -3.0, 1.0, 1.0, t0=3.0)
    assert race.progress == pytest.approx(100 * 1.0 / loop.length_m, abs=0.1)
    drive_centre_line(race, 1.0, -0.9 * loop.length_m, 2.0, t0=10.0)
    assert race.laps_completed == 0  # a lap the wrong way round is no lap


def test_reversed_race(loop):
    race = Race(loop, RaceConfig(reversed=True))
    start = race.start_pose()
    # The car faces the opposite way from the forward start.
    assert abs(math.remainder(start.yaw - loop.heading_at(0.0), 2 * math.pi)) \
        == pytest.approx(math.pi, abs=1e-6)
    drive_centre_line(race, 0.0, 1.2 * race.track.length_m, 2.0)
    assert race.laps_completed == 1
    params = race.reward_params(2.0, 0.1)
    assert params['is_reversed'] is True
    assert params['waypoints'][1] == tuple(loop.waypoints[-1])


def test_off_track_resets_to_the_centre_line_with_a_penalty(loop):
    race = Race(loop)
    speed = 2.0
    drive_centre_line(race, 0.0, 4.0, speed)
    time_at_4m = 4.0 / speed
    # Jump 1.5 m to the side: no wheel on the road.
    on_line = race.pose_at_arc(4.0)
    side = loop.heading_at(4.0) - math.pi / 2
    update = race.update(time_at_4m + 0.05, on_line.x + 1.5 * math.cos(side),
                         on_line.y + 1.5 * math.sin(side), on_line.yaw)
    assert update.is_offtrack and not update.all_wheels_on_track
    assert race.off_track_count == 1
    params = race.reward_params(speed, 0.0)
    assert params['is_offtrack'] is True and params['distance_from_center'] > 1.0
    reset = update.reset_pose
    assert isinstance(reset, Pose)
    expected = race.pose_at_arc(4.0)
    assert (reset.x, reset.y, reset.yaw) == pytest.approx((expected.x, expected.y,
                                                           expected.yaw), abs=0.02)
    # From the reset the lap continues; the 2 s penalty is in its time.
    drive_centre_line(race, 4.0, loop.length_m + 0.5, speed, t0=time_at_4m + 0.05)
    assert race.laps_completed == 1
    assert race.lap_times_s[0] == pytest.approx(loop.length_m / speed + 0.05 + 2.0, rel=1e-3)


def test_some_wheels_off_is_not_off_track(loop):
    race = Race(loop)
    on_line = race.pose_at_arc(3.0)
    heading = loop.heading_at(3.0)
    # Shift right so the right wheels are past the outer border, the left ones still on.
    shift = loop.width_m / 2 + 0.01
    update = race.update(0.1, on_line.x + shift * math.sin(heading),
                         on_line.y - shift * math.cos(heading), on_line.yaw)
    assert not update.all_wheels_on_track
    assert not update.is_offtrack and update.reset_pose is None
    params = race.reward_params(1.0, 0.0)
    assert params['is_left_of_center'] is False
    assert params['distance_from_center'] == pytest.approx(shift, abs=1e-3)


def test_reward_params_match_deepracer(loop):
    race = Race(loop)
    pose = race.pose_at_arc(2.0)
    heading = loop.heading_at(2.0)
    left = 0.2
    race.update(0.5, pose.x - left * math.sin(heading), pose.y + left * math.cos(heading),
                pose.yaw)
    params = race.reward_params(1.8, math.radians(-15.0))
    assert set(params) == REWARD_KEYS
    assert params['all_wheels_on_track'] is True and params['is_offtrack'] is False
    assert params['is_left_of_center'] is True and params['is_reversed'] is False
    assert params['distance_from_center'] == pytest.approx(left, abs=1e-3)
    assert params['progress'] == pytest.approx(100 * 2.0 / loop.length_m, abs=0.05)
    assert params['heading'] == pytest.approx(math.degrees(heading))
    assert params['speed'] == 1.8
    assert params['steering_angle'] == pytest.approx(-15.0)
    assert params['steps'] == 1
    assert params['track_width'] == pytest.approx(loop.width_m)
    assert params['track_length'] == pytest.approx(loop.length_m)
    assert len(params['waypoints']) == loop.waypoint_count
    assert all(isinstance(p, tuple) and len(p) == 2 for p in params['waypoints'])
    previous, following = params['closest_waypoints']
    assert following == (previous + 1) % loop.waypoint_count
    arcs = loop.waypoint_arc_lengths
    assert arcs[previous] <= 2.0 <= (arcs[following] if following else loop.length_m)
    # Plain Python values, as a reward function written for DeepRacer expects.
    for key in ('x', 'y', 'heading', 'distance_from_center', 'progress', 'track_width'):
        assert type(params[key]) is float
    assert -180.0 < params['heading'] <= 180.0


def test_bad_updates_are_refused(loop):
    race = Race(loop)
    race.update(1.0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match='time went backwards'):
        race.update(0.5, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match='finite'):
        race.update(2.0, math.nan, 0.0, 0.0)
    with pytest.raises(ValueError, match='start_progress'):
        RaceConfig(start_progress=100.0)
    with pytest.raises(ValueError, match='penalty'):
        RaceConfig(off_track_penalty_s=-1.0)


def test_reset_starts_a_fresh_episode(loop):
    race = Race(loop)
    drive_centre_line(race, 0.0, 5.0, 2.0)
    pose = race.reset(time_s=10.0)
    assert pose == race.start_pose()
    assert race.steps == 0 and race.progress == 0.0 and race.laps_completed == 0


def run_expert(race: Race, laps: int, dt: float = 1 / spec.CAMERA.fps, limit_s: float = 200.0):
    expert = ExpertDriver(race.track)
    start = race.start_pose()
    state = dynamics.CarState(start.x, start.y, start.yaw)
    t = 0.0
    worst_offset = 0.0
    while race.laps_completed < laps and t < limit_s:
        speed, steering = expert.command(state.x, state.y, state.yaw, state.speed)
        state = dynamics.step(state, speed, steering, dt)
        t += dt
        update = race.update(t, state.x, state.y, state.yaw)
        worst_offset = max(worst_offset, race.reward_params(speed, steering)
                           ['distance_from_center'])
        assert update.all_wheels_on_track, f'wheels off at t={t:.2f} s'
    return worst_offset


@pytest.mark.parametrize('reversed_', [False, True], ids=['forward', 'reversed'])
@pytest.mark.parametrize('name', track_library.track_names())
def test_expert_completes_three_clean_laps(name, reversed_):
    race = Race(track_library.make_track(name), RaceConfig(reversed=reversed_))
    worst_offset = run_expert(race, laps=3)
    assert race.laps_completed == 3 and race.off_track_count == 0
    assert worst_offset < 0.1
    mean_speed = race.track.length_m / np.mean(race.lap_times_s)
    assert 1.0 < mean_speed <= spec.CAR.max_speed_mps


def test_expert_steers_back_towards_the_line(loop):
    expert = ExpertDriver(loop)
    pose = Race(loop).pose_at_arc(3.0)
    heading = loop.heading_at(3.0)
    # Car 0.3 m left of the line, parallel to it: steer right.
    _, steering = expert.command(pose.x - 0.3 * math.sin(heading),
                                 pose.y + 0.3 * math.cos(heading), pose.yaw, 1.0)
    assert steering < -0.05
    assert abs(steering) <= spec.CAR.max_steering_rad
