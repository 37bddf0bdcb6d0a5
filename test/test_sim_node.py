"""The simulator node alone on real rclpy, driven by a scripted Twist publisher.

The scripted track is a circle of radius 2 m, so driving it at the steering angle of a
2 m circle keeps the car on the centre line and every figure is known by hand:
  lap = 2 pi * 2 m = 12.566 m; at 2 m/s that is 6.28 s plus the speed lag's delay
  (time constant 0.25 s: the car loses 0.25 s * 2 m/s = 0.5 m at the start, 0.25 s).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import PoseStamped, Twist, TwistStamped
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from conftest import spin_until
from deepracer_nodes.core import spec
from deepracer_nodes.ros_conversions import stamp_to_ns
from deepracer_nodes.sim_node import LATCHED_QOS, SimNode

RADIUS_M = 2.0
WIDTH_M = 1.0
SPEED_MPS = 2.0
FRAME_NS = round(1e9 / spec.CAMERA.fps)
CIRCLE_STEERING = math.atan(spec.CAR.wheelbase_m / RADIUS_M)
LAP_M = 2.0 * math.pi * RADIUS_M
REWARD_KEYS = {
    'all_wheels_on_track', 'x', 'y', 'heading', 'distance_from_center', 'is_left_of_center',
    'is_reversed', 'is_offtrack', 'progress', 'steps', 'speed', 'steering_angle',
    'track_width', 'track_length', 'closest_waypoints'}  # waypoints: on the track topic


@pytest.fixture
def circle_route(tmp_path) -> Path:
    """A DeepRacer route file: a circle of RADIUS_M, anticlockwise, WIDTH_M wide."""
    angles = np.linspace(0.0, 2.0 * math.pi, 121)[:, None]
    ring = np.hstack((np.cos(angles), np.sin(angles)))
    route = np.hstack((RADIUS_M * ring, (RADIUS_M - WIDTH_M / 2) * ring,
                       (RADIUS_M + WIDTH_M / 2) * ring))
    path = tmp_path / 'circle.npy'
    np.save(path, route)
    return path


EVERY_STATE_QOS = QoSProfile(history=LATCHED_QOS.history, depth=10_000,
                             reliability=LATCHED_QOS.reliability,
                             durability=LATCHED_QOS.durability)


class ScriptedDriver:
    """Answers each camera frame with the Twist command(frame_number) gives (None = no
    answer), and records the frames, /clock values, poses and race states it sees."""

    def __init__(self, context, command, stamped: bool = False) -> None:
        self.node = rclpy.create_node('scripted_driver', context=context)
        self.command = command
        self.images: list[Image] = []
        self.infos: list[CameraInfo] = []
        self.clock_ns: list[int] = []
        self.poses: list[PoseStamped] = []
        self.states: list[dict] = []
        self.tracks: list[dict] = []
        self.twist_publisher = self.node.create_publisher(Twist, spec.TOPICS.sim_cmd_vel, 10)
        self.stamped_publisher = (self.node.create_publisher(
            TwistStamped, spec.TOPICS.auto_cmd_vel, 10) if stamped else None)
        self.node.create_subscription(Image, spec.TOPICS.image, self._on_image,
                                      qos_profile_sensor_data)
        self.node.create_subscription(CameraInfo, spec.TOPICS.camera_info, self.infos.append,
                                      qos_profile_sensor_data)
        self.node.create_subscription(Clock, spec.TOPICS.clock,
                                      lambda m: self.clock_ns.append(stamp_to_ns(m.clock)), 10)
        self.node.create_subscription(PoseStamped, spec.TOPICS.sim_pose, self.poses.append, 100)
        # Every state is kept (not only the newest, as the node's latched QoS would), so a
        # test executor slowed by a loaded machine never misses the one it looks for.
        self.node.create_subscription(String, spec.TOPICS.sim_race_state,
                                      lambda m: self.states.append(json.loads(m.data)),
                                      EVERY_STATE_QOS)
        self.node.create_subscription(String, spec.TOPICS.sim_track,
                                      lambda m: self.tracks.append(json.loads(m.data)),
                                      EVERY_STATE_QOS)

    def _on_image(self, msg: Image) -> None:
        self.images.append(msg)
        answer = self.command(len(self.images), msg)
        if answer is None:
            return
        speed, steering = answer
        twist = Twist()
        twist.linear.x = speed
        twist.angular.z = speed * math.tan(steering) / spec.CAR.wheelbase_m
        if self.stamped_publisher is not None:
            self.stamped_publisher.publish(TwistStamped(header=msg.header, twist=twist))
        self.twist_publisher.publish(twist)


def make_sim(context, **parameters) -> SimNode:
    return SimNode(context=context, parameter_overrides=[
        Parameter(name, value=value) for name, value in parameters.items()])


def circle_command(frame: int, msg: Image) -> tuple[float, float]:
    return SPEED_MPS, CIRCLE_STEERING


def test_lockstep_clock_images_and_a_circle(executor, ros_context, circle_route):
    sim = make_sim(ros_context, track=str(circle_route), laps=1)
    driver = ScriptedDriver(ros_context, circle_command)
    executor.add_node(sim)
    executor.add_node(driver.node)
    assert spin_until(executor, sim.finished.is_set, 30.0), sim.state()

    state = sim.state()
    assert state.status.value == 'finished'
    assert state.laps_completed == 1 and state.off_track_count == 0
    assert state.lap_times_s[0] == pytest.approx(LAP_M / SPEED_MPS + 0.25, abs=0.1)
    # Lockstep: one frame per answered frame, stamps exactly one frame period apart,
    # starting one period in; /clock carries the same times.
    stamps = [stamp_to_ns(image.header.stamp) for image in driver.images]
    assert stamps[0] == FRAME_NS
    assert np.all(np.diff(stamps) == FRAME_NS)
    assert sim.response_timeouts == 0
    assert set(stamps) <= set(driver.clock_ns)
    image = driver.images[-1]
    assert (image.width, image.height, image.encoding) == (
        spec.MODEL_INPUT.width, spec.MODEL_INPUT.height, 'bgr8')
    assert image.header.frame_id == spec.FRAMES.camera_optical
    assert len(image.data) == image.height * image.step == 160 * 120 * 3
    assert spin_until(executor, lambda: len(driver.infos) >= len(stamps) - 1, 2.0)
    assert driver.infos[-1].width == 160 and driver.infos[-1].k[0] > 0
    # Once the steering lag has settled, the pose lies on the 2 m circle round the origin
    # (the rear axle drives a circle of radius L / tan(delta) = RADIUS_M).
    assert spin_until(executor, lambda: len(driver.poses) >= len(stamps), 2.0)
    settled = [p for p in driver.poses if stamp_to_ns(p.header.stamp) > 1e9]
    xy = np.array([(p.pose.position.x, p.pose.position.y) for p in settled])
    centre, radius = fit_circle(xy)
    assert radius == pytest.approx(RADIUS_M, rel=0.01)
    assert np.hypot(*centre) < 0.1
    assert settled[0].header.frame_id == spec.FRAMES.odom


def fit_circle(xy: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares circle through points (K, 2): centre and radius."""
    a = np.column_stack((2 * xy, np.ones(len(xy))))
    b = np.sum(xy ** 2, axis=1)
    (cx, cy, c), *_ = np.linalg.lstsq(a, b, rcond=None)
    return np.array([cx, cy]), math.sqrt(c + cx * cx + cy * cy)


def test_race_state_and_track_topics(executor, ros_context, circle_route):
    sim = make_sim(ros_context, track=str(circle_route), laps=1)
    driver = ScriptedDriver(ros_context, circle_command)
    executor.add_node(sim)
    executor.add_node(driver.node)
    assert spin_until(executor, sim.finished.is_set, 30.0)
    assert spin_until(executor, lambda: driver.states and driver.states[-1]['status']
                      == 'finished' and driver.tracks, 2.0)
    racing = [s for s in driver.states if s['status'] == 'racing']
    assert racing, 'no racing states seen'
    assert set(racing[-1]['reward_params']) == REWARD_KEYS
    assert racing[-1]['progress'] > racing[0]['progress']
    final = driver.states[-1]
    assert final['laps_completed'] == 1 and len(final['lap_times_s']) == 1
    assert final['completion'] == 100.0
    track = driver.tracks[-1]
    assert track['length_m'] == pytest.approx(LAP_M, rel=1e-3)
    assert len(track['waypoints']) == 120


def test_off_track_resets_the_car_and_adds_the_penalty(executor, ros_context, circle_route):
    sim = make_sim(ros_context, track=str(circle_route), laps=1, off_track_penalty=5.0)

    def straight_until_off_track(frame: int, msg: Image) -> tuple[float, float]:
        # Straight ahead leaves the circle; once reset, follow it round.
        return SPEED_MPS, CIRCLE_STEERING if sim.state().off_track_count else 0.0

    driver = ScriptedDriver(ros_context, straight_until_off_track)
    executor.add_node(sim)
    executor.add_node(driver.node)
    assert spin_until(executor, sim.finished.is_set, 30.0), sim.state()
    state = sim.state()
    assert state.off_track_count == 1
    assert state.lap_times_s[0] > LAP_M / SPEED_MPS + 5.0
    # Put back on the centre line, stopped: right after the reset the car is within a
    # frame's travel of the 2 m circle again.
    reset_index = next(i for i, s in enumerate(driver.states) if s['off_track_count'] == 1)
    after = driver.states[reset_index + 1]
    assert math.hypot(after['x'], after['y']) == pytest.approx(RADIUS_M, abs=0.15)
    assert driver.states[reset_index]['reward_params']['is_offtrack'] is True


def test_first_frame_waits_for_the_pipeline_then_timeouts_never_hang(executor, ros_context,
                                                                     circle_route):
    sim = make_sim(ros_context, track=str(circle_route), response_timeout=0.1)
    answering = {'on': False}

    def command(frame: int, msg: Image):
        return (SPEED_MPS, CIRCLE_STEERING) if answering['on'] else None

    driver = ScriptedDriver(ros_context, command)
    executor.add_node(sim)
    executor.add_node(driver.node)
    # Nobody answers yet: the first frame is offered again and sim time stands still.
    assert spin_until(executor, lambda: len(driver.images) >= 3, 5.0)
    assert {stamp_to_ns(i.header.stamp) for i in driver.images} == {FRAME_NS}
    assert sim.response_timeouts == 0
    answering['on'] = True
    assert spin_until(executor, lambda: sim.state().time_s > 1.0, 5.0)
    # The pipeline stalls: every frame times out, the car goes on with the last command.
    answering['on'] = False
    timeouts, time_s = sim.response_timeouts, sim.state().time_s
    assert spin_until(executor, lambda: sim.response_timeouts >= timeouts + 3, 5.0)
    assert sim.state().time_s > time_s
    assert sim.state().speed_mps > 1.0


def test_stamped_commands_must_carry_the_frame_stamp(executor, ros_context, circle_route):
    sim = make_sim(ros_context, track=str(circle_route), response_timeout=0.5,
                   reply_grace=0.02)
    mode = {'stamp_offset_ns': 0, 'twist': True}
    driver = ScriptedDriver(ros_context, circle_command, stamped=True)

    def answer(frame: int, msg: Image):
        stamp_ns = stamp_to_ns(msg.header.stamp) + mode['stamp_offset_ns']
        twist = Twist()
        twist.linear.x = SPEED_MPS
        stamped = TwistStamped(twist=twist)
        stamped.header.stamp.sec, stamped.header.stamp.nanosec = divmod(stamp_ns, 10 ** 9)
        driver.stamped_publisher.publish(stamped)
        if mode['twist']:
            driver.twist_publisher.publish(twist)
        return None

    driver.command = answer
    executor.add_node(sim)
    executor.add_node(driver.node)
    assert spin_until(executor, lambda: sim.state().time_s > 1.0, 10.0)
    assert sim.response_timeouts == 0
    # An answer carrying another frame's stamp does not count: the frame times out.
    mode['stamp_offset_ns'] = -FRAME_NS
    assert spin_until(executor, lambda: sim.response_timeouts >= 2, 10.0)
    # The right stamp without a Twist (a servo publishing changes only): after the grace.
    mode.update(stamp_offset_ns=0, twist=False)
    grace = sim.grace_steps
    assert spin_until(executor, lambda: sim.grace_steps >= grace + 5, 5.0)


def test_real_time_mode_follows_the_wall_clock(executor, ros_context, circle_route):
    import time
    sim = make_sim(ros_context, track=str(circle_route), real_time_factor=1.0)
    executor.add_node(sim)
    assert spin_until(executor, lambda: sim.frames_published > 0, 5.0)
    started_wall, started_sim = time.monotonic(), sim.state().time_s
    spin_until(executor, lambda: False, 1.0)
    elapsed_sim = sim.state().time_s - started_sim
    elapsed_wall = time.monotonic() - started_wall
    assert 0.6 * elapsed_wall < elapsed_sim < 1.2 * elapsed_wall


def test_restart_service_puts_the_car_back(executor, ros_context, circle_route):
    sim = make_sim(ros_context, track=str(circle_route), laps=1)
    driver = ScriptedDriver(ros_context, circle_command)
    executor.add_node(sim)
    executor.add_node(driver.node)
    assert spin_until(executor, sim.finished.is_set, 30.0)
    client = driver.node.create_client(Trigger, f'/{sim.get_name()}/restart')
    assert spin_until(executor, client.service_is_ready, 5.0)
    future = client.call_async(Trigger.Request())
    assert spin_until(executor, future.done, 5.0) and future.result().success
    driver.node.destroy_client(client)
    assert not sim.finished.is_set()
    assert spin_until(executor, sim.finished.is_set, 30.0)
    assert sim.state().laps_completed == 1


@pytest.mark.parametrize('parameters, message', [
    ({'track': 'no_such_track'}, 'neither a bundled track'),
    ({'physics_rate': 20.0}, 'whole multiple'),
    ({'laps': -1}, 'laps'),
    ({'real_time_factor': -1.0}, 'real_time_factor'),
    ({'image_width': 0}, 'image size'),
    ({'reward_function': '/no/such/reward.py'}, 'does not exist'),
])
def test_bad_settings_are_refused_with_the_reason(ros_context, parameters, message):
    with pytest.raises(ValueError, match=message):
        make_sim(ros_context, **parameters)


# --- the ROS-free session under the node ------------------------------------------------------

def test_race_clock_starts_at_the_first_moving_command(circle_route):
    from deepracer_nodes.sim.session import RaceSession, SessionConfig, Status
    from deepracer_nodes.sim.track import load_route
    session = RaceSession(load_route(circle_route), config=SessionConfig(laps=1))
    for _ in range(30):  # a car not yet enabled: stopped, time runs, no race yet
        assert session.advance() is None
    assert session.status is Status.READY and session.state().race_time_s == 0.0
    assert session.time_ns == 31 * FRAME_NS
    session.set_command(SPEED_MPS, CIRCLE_STEERING)
    while not session.status.final:
        session.advance()
    assert session.status is Status.FINISHED
    # Timed from the green light, not from the start of the simulation.
    assert session.state().lap_times_s[0] == pytest.approx(LAP_M / SPEED_MPS + 0.25, abs=0.1)


def test_physics_ticks_land_on_the_frame_grid(circle_route):
    from deepracer_nodes.sim.session import RaceSession, SessionConfig
    from deepracer_nodes.sim.track import load_route
    session = RaceSession(load_route(circle_route),
                          config=SessionConfig(camera_fps=15.0, physics_rate=60.0))
    session.set_command(SPEED_MPS, CIRCLE_STEERING)
    frames_due = [session.tick() for _ in range(4 * 150)]
    assert frames_due == [False, False, False, True] * 150
    assert session.time_ns == 151 * FRAME_NS  # exact after 150 frames (10 s): no drift


@pytest.mark.parametrize('settings, message', [
    ({'camera_fps': 0.0}, 'camera_fps'),
    ({'physics_rate': 10.0}, 'whole multiple'),
    ({'physics_rate': 22.5}, 'whole multiple'),
    ({'laps': 1.5}, 'laps'),
    ({'time_limit_s': -1.0}, 'time_limit_s'),
])
def test_session_settings_are_checked(settings, message):
    from deepracer_nodes.sim.session import SessionConfig
    with pytest.raises(ValueError, match=message):
        SessionConfig(**settings)
