"""Embedded simulator node: a DeepRacer on a track, seen by its camera, under race rules.

A thin shell over deepracer_nodes.sim (RaceSession: car dynamics with actuator lags, race
rules, reward function; CameraRenderer: the front camera). It talks to the drive nodes
exactly as the car and Gazebo do:

- publishes the camera like the camera node: sensor_msgs/Image (bgr8, sensor-data QoS,
  frame_id spec.FRAMES.camera_optical, stamp = sim time) on spec.TOPICS.image and
  sensor_msgs/CameraInfo on spec.TOPICS.camera_info;
- takes geometry_msgs/Twist on `cmd_vel_topic` (default spec.TOPICS.sim_cmd_vel, where the
  servo node's 'sim' backend publishes), Gazebo's Ackermann convention: linear.x m/s,
  angular.z rad/s, steering = atan(angular.z * wheelbase / linear.x);
- publishes /clock (rosgraph_msgs/Clock): run every other node with use_sim_time=true;
- publishes the ground truth base_link pose (geometry_msgs/PoseStamped, frame
  spec.FRAMES.odom) on spec.TOPICS.sim_pose at every physics tick;
- publishes the race state at every control step on spec.TOPICS.sim_race_state as a
  std_msgs/String holding JSON (transient local, so a late subscriber gets the latest):
  status ('ready' until the car is first told to move, 'racing', then 'finished',
  'time_limit' or 'failed'), time_s, race_time_s, lap, laps_completed, laps_target,
  progress (0-100), completion (0-100 of the race), lap_times_s, off_track_count, steps,
  x, y, yaw, speed_mps, steering_rad, reward, error, and reward_params: DeepRacer's
  reward function params for the step WITHOUT 'waypoints' (they never change: see below);
- publishes the track once on spec.TOPICS.sim_track (String JSON, transient local): name,
  length_m, width_m, reversed, waypoints, inner, outer.

Stepping, with real_time_factor = 0 (the default): lockstep, as fast as the pipeline
answers. The node publishes the frame of sim time t and waits for the answer to it: a
Twist on cmd_vel. When a policy publishes stamped commands (anything publishing on
spec.TOPICS.auto_cmd_vel), the answer must follow the stamped command carrying t, so a
late reply to an older frame is never taken for this one; if the stamped command came
but no Twist follows within `reply_grace` (a servo that only publishes changes), the
last command stands. Then the physics run to t + 1/camera_fps and the next frame goes
out. A frame unanswered for `response_timeout` (wall clock) is reported and the car
goes on with the last command, so a stalled pipeline never hangs the simulation; until
the very first answer, sim time waits and the first frame is offered again instead.
With real_time_factor > 0 a wall-clock timer steps the physics at that multiple of real
time and the newest command is used, whatever the pipeline does.

All timers of this node run on the steady clock, so use_sim_time makes no difference
to it; its stamps are its own sim time.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, Twist, TwistStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from deepracer_nodes.ros_runtime import run_node
from deepracer_nodes.core import drive, spec
from deepracer_nodes.core.frame_sources import camera_intrinsics
from deepracer_nodes.ros_conversions import array_to_image, ns_to_stamp, stamp_to_ns
from deepracer_nodes.sim import render, track_library
from deepracer_nodes.sim.race import DEFAULT_OFF_TRACK_PENALTY_S, RaceConfig
from deepracer_nodes.sim.reward import RewardFunction
from deepracer_nodes.sim.session import RaceSession, SessionConfig, SessionState, StepRecord
from deepracer_nodes.sim.track import Track, load_route

NODE_NAME = 'sim_node'
DIAGNOSTICS_PERIOD_S = 1.0
LOG_THROTTLE_S = 5.0
RENDER_WINDOW = 1000
# Commands: best effort accepts reliable and best-effort publishers alike.
COMMAND_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                         reliability=ReliabilityPolicy.BEST_EFFORT)
LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)

# name -> (default, description); all fixed at start (the world is built from them).
PARAMETERS: dict[str, tuple[Any, str]] = {
    'track': ('loop', 'bundled track name (' + ', '.join(track_library.track_names())
                      + ') or the path of a DeepRacer route .npy file'),
    'reversed': (False, 'drive the track the other way round (DeepRacer is_reversed)'),
    'start_progress': (0.0, 'where the car starts, percent of the lap in [0, 100)'),
    'laps': (0, 'laps to finish the race, then the state is "finished" and the simulation '
                'stops; 0 = race on forever'),
    'time_limit': (0.0, 'sim seconds of racing before the state becomes "time_limit" and the '
                        'simulation stops; 0 = no limit'),
    'off_track_penalty': (DEFAULT_OFF_TRACK_PENALTY_S,
                          'seconds added to the lap time each time no wheel is on the track '
                          '(the car is then put back on the centre line)'),
    'image_width': (spec.MODEL_INPUT.width,
                    'camera image width (px); the model input size by default, as the car '
                    f'resizes at the source; {spec.CAMERA.width} for full frames (large '
                    'best-effort images can lose fragments in Fast DDS)'),
    'image_height': (spec.MODEL_INPUT.height, 'camera image height (px)'),
    'camera_fps': (spec.CAMERA.fps, 'camera frames (control steps) per second of sim time'),
    'physics_rate': (spec.CAMERA.fps,
                     'physics ticks, /clock and pose messages per second of sim time, a whole '
                     'multiple of camera_fps (the actuator lags are integrated exactly inside '
                     'each tick, so a higher rate only makes the clock finer)'),
    'real_time_factor': (0.0, '0 = lockstep: each frame waits for the answer of the drive '
                              'pipeline, as fast as it answers; 1 = real time (for teleop or '
                              'anything that does not answer every frame); 2 = twice as '
                              'fast as real time, ...'),
    'response_timeout': (1.0, 'lockstep: wall-clock seconds to wait for the answer to a frame '
                              'before going on with the last command'),
    'reply_grace': (0.05, 'lockstep: wall-clock seconds to wait for the Twist after the '
                          'stamped command answering a frame was seen'),
    'wide_angle_k1': (spec.CAMERA.wide_angle_k1,
                      'radial coefficient of a wide-angle (equidistant fisheye) lens; 0 = the '
                      'pinhole camera of the DeepRacer simulator'),
    'randomise': (False, 'randomise colours, lighting and sensor noise (sim-to-real)'),
    'seed': (0, 'seed of the randomisation'),
    'reward_function': ('', 'path of a DeepRacer reward function file to call every step; '
                            'an exception in it stops the race with its traceback'),
    'cmd_vel_topic': (spec.TOPICS.sim_cmd_vel, 'topic of the geometry_msgs/Twist driving the '
                                               'car (the servo node\'s sim backend)'),
    'stamped_cmd_topic': (spec.TOPICS.auto_cmd_vel,
                          'topic of the policy\'s TwistStamped, watched for the stamps of the '
                          'frames it answers'),
    'image_topic': (spec.TOPICS.image, 'topic of the camera sensor_msgs/Image'),
    'camera_info_topic': (spec.TOPICS.camera_info, 'topic of sensor_msgs/CameraInfo'),
}


def load_track(name_or_path: str) -> Track:
    """A bundled track by name, or a DeepRacer route file; ValueError explains a miss."""
    text = name_or_path.strip()
    if text in track_library.track_names():
        return track_library.make_track(text)
    if text.endswith('.npy') or Path(text).expanduser().exists():
        return load_route(Path(text).expanduser())
    raise ValueError(f'track {text!r} is neither a bundled track ('
                     f'{", ".join(track_library.track_names())}) nor a .npy route file')


class SimNode(Node):
    """The simulated car, its camera, the clock and the race, in lockstep or real time."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(
                description=description + ' (set at start only)', read_only=True))
        value = self._value
        self.session = self._create_session()
        self.renderer = self._create_renderer()
        self.real_time_factor = value('real_time_factor')
        self.response_timeout_s = value('response_timeout')
        self.reply_grace_s = value('reply_grace')
        for name in ('real_time_factor', 'response_timeout', 'reply_grace'):
            if not (math.isfinite(value(name)) and value(name) >= 0.0):
                raise ValueError(f'{name} must be a finite number >= 0, got {value(name)}')
        if self.response_timeout_s <= 0.0:
            raise ValueError('response_timeout must be positive')

        # Observers (benchmarks, `deepracer sim`): fn(record, frame) after each control step.
        self.step_observers: list[Callable[[StepRecord | None, np.ndarray], None]] = []
        self.finished = threading.Event()
        self.frames_published = 0
        self.commands_received = 0
        self.response_timeouts = 0
        self.grace_steps = 0
        self.render_s: deque[float] = deque(maxlen=RENDER_WINDOW)
        self.render_total_s = 0.0
        # Where lockstep time goes: waiting for the pipeline's answers vs this node's work
        # (physics, rules, rendering, publishing), wall seconds summed over the run.
        self.pipeline_wait_total_s = 0.0
        self.sim_work_total_s = 0.0
        self._frame_out_at: float | None = None
        self._lock = threading.Lock()  # guards the snapshot read by other threads
        self._snapshot = self.session.state()
        self._diag = (time.monotonic(), 0, self.session.time_ns)
        # Lockstep bookkeeping: the stamp of the frame awaiting its answer, or None.
        self._awaiting_ns: int | None = None
        self._stamped_seen = False
        self._expect_stamped = False
        self._pipeline_alive = False

        group = MutuallyExclusiveCallbackGroup()  # one thread of control for the world
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._clock_publisher = self.create_publisher(ClockMsg, spec.TOPICS.clock,
                                                      QoSProfile(depth=1))
        sensor_qos = QoSProfile(history=qos_profile_sensor_data.history,
                                depth=qos_profile_sensor_data.depth,
                                reliability=qos_profile_sensor_data.reliability,
                                durability=qos_profile_sensor_data.durability)
        self._image_publisher = self.create_publisher(Image, value('image_topic'), sensor_qos)
        self._info_publisher = self.create_publisher(CameraInfo, value('camera_info_topic'),
                                                     sensor_qos)
        self._pose_publisher = self.create_publisher(PoseStamped, spec.TOPICS.sim_pose, 10)
        self._state_publisher = self.create_publisher(String, spec.TOPICS.sim_race_state,
                                                      LATCHED_QOS)
        self._track_publisher = self.create_publisher(String, spec.TOPICS.sim_track,
                                                      LATCHED_QOS)
        self._diagnostics_publisher = self.create_publisher(
            DiagnosticArray, spec.TOPICS.diagnostics, 10)
        # Stamped commands first: when both are ready together, the stamp is seen first.
        self._stamped_topic = value('stamped_cmd_topic')
        self.create_subscription(TwistStamped, self._stamped_topic, self._on_stamped_command,
                                 COMMAND_QOS, callback_group=group)
        self.create_subscription(Twist, value('cmd_vel_topic'), self._on_cmd_vel, COMMAND_QOS,
                                 callback_group=group)
        self.create_service(Trigger, '~/restart', self._on_restart, callback_group=group)
        self._camera_info = self._make_camera_info()
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics,
                          callback_group=group, clock=steady)
        self._timeout_timer = self.create_timer(self.response_timeout_s, self._on_timeout,
                                                callback_group=group, clock=steady,
                                                autostart=False)
        self._grace_timer = self.create_timer(max(self.reply_grace_s, 1e-4), self._on_grace,
                                              callback_group=group, clock=steady,
                                              autostart=False)
        self._tick_timer = None
        self._publish_track()
        if self.real_time_factor > 0.0:
            period = self.session.tick_period_ns / 1e9 / self.real_time_factor
            self._tick_timer = self.create_timer(period, self._on_tick, callback_group=group,
                                                 clock=steady)
        # The first frame goes out from a callback, once the executor spins this node.
        self._start_timer = self.create_timer(0.0, self._on_start, callback_group=group,
                                              clock=steady)
        mode = ('lockstep, as fast as the pipeline answers' if self.real_time_factor == 0
                else f'{self.real_time_factor:g}x real time')
        self.get_logger().info(
            f'track {self.session.track.name} ({self.session.track.length_m:.2f} m), camera '
            f'{self.renderer.width}x{self.renderer.height} at '
            f'{self.session.config.camera_fps:g} fps, {mode}')

    # --- set-up ---------------------------------------------------------------------------

    def _value(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _create_session(self) -> RaceSession:
        value = self._value
        track = load_track(value('track'))
        race_config = RaceConfig(reversed=value('reversed'),
                                 start_progress=value('start_progress'),
                                 off_track_penalty_s=value('off_track_penalty'))
        config = SessionConfig(camera_fps=value('camera_fps'), physics_rate=value('physics_rate'),
                               laps=value('laps'), time_limit_s=value('time_limit'))
        path = value('reward_function').strip()
        reward = RewardFunction.load(path) if path else None
        return RaceSession(track, race_config, config, reward)

    def _camera(self) -> spec.CameraGeometry:
        k1 = self._value('wide_angle_k1')
        if not math.isfinite(k1):
            raise ValueError(f'wide_angle_k1 must be finite, got {k1}')
        return replace(spec.CAMERA, wide_angle_k1=k1)

    def _create_renderer(self) -> render.CameraRenderer:
        width, height = self._value('image_width'), self._value('image_height')
        if not (0 < width <= 4096 and 0 < height <= 4096):
            raise ValueError(f'image size must be within 1..4096 px, got {width}x{height}')
        seed = self._value('seed')
        rng = np.random.default_rng(seed)
        randomise = self._value('randomise')
        appearance = render.random_appearance(rng) if randomise else render.Appearance()
        texture = render.GroundTexture(self.session.track, appearance, seed=seed)
        effects = render.FrameEffects() if randomise else None
        return render.CameraRenderer(texture, width, height, self._camera(), effects=effects,
                                     seed=seed)

    def _make_camera_info(self) -> CameraInfo:
        numbers = camera_intrinsics(self.renderer.width, self.renderer.height, self._camera())
        info = CameraInfo(width=numbers.width, height=numbers.height,
                          distortion_model=numbers.distortion_model)
        info.d, info.k, info.r, info.p = (list(numbers.d), list(numbers.k), list(numbers.r),
                                          list(numbers.p))
        info.header.frame_id = spec.FRAMES.camera_optical
        return info

    def _publish_track(self) -> None:
        track = self.session.track
        self._track_publisher.publish(String(data=json.dumps({
            'name': track.name, 'length_m': track.length_m, 'width_m': track.width_m,
            'reversed': self.session.race.config.reversed,
            'waypoints': track.waypoints.tolist(), 'inner': track.inner.tolist(),
            'outer': track.outer.tolist()})))

    # --- state for other threads ----------------------------------------------------------

    def state(self) -> SessionState:
        """The latest race state (thread-safe snapshot)."""
        with self._lock:
            return self._snapshot

    # --- stepping -------------------------------------------------------------------------

    def _on_start(self) -> None:
        self._start_timer.cancel()
        self._publish_tick()
        self._publish_frame()

    def _on_tick(self) -> None:
        """Real-time mode: one physics tick per timer period, with the newest command."""
        if self.session.status.final:
            return
        frame_due = self.session.tick()
        self._publish_tick()
        if frame_due:
            self._publish_frame()

    def _step_to_next_frame(self) -> None:
        """Lockstep: the physics through one control period, then the next frame."""
        while not self.session.status.final:
            frame_due = self.session.tick()
            self._publish_tick()
            if frame_due:
                break
        self._publish_frame()

    def _publish_tick(self) -> None:
        now_ns = self.session.time_ns
        stamp = ns_to_stamp(now_ns)
        self._clock_publisher.publish(ClockMsg(clock=stamp))
        if not self._pose_publisher.get_subscription_count():
            return  # nobody listens: spare the lockstep loop the work
        car = self.session.car
        pose = PoseStamped()
        pose.header.stamp = stamp
        pose.header.frame_id = spec.FRAMES.odom
        pose.pose.position.x, pose.pose.position.y = car.x, car.y
        pose.pose.orientation.z = math.sin(car.yaw / 2.0)
        pose.pose.orientation.w = math.cos(car.yaw / 2.0)
        self._pose_publisher.publish(pose)

    def _publish_frame(self) -> None:
        """Camera frame, camera info and race state at the current sim time."""
        session = self.session
        car = session.car
        started = time.perf_counter()
        frame = self.renderer.render(car.x, car.y, car.yaw)
        elapsed = time.perf_counter() - started
        self.render_s.append(elapsed)
        self.render_total_s += elapsed
        stamp = ns_to_stamp(session.time_ns)
        final = session.status.final
        if not final:
            image = array_to_image(frame, stamp, spec.FRAMES.camera_optical, 'bgr8')
            self._camera_info.header.stamp = stamp
            self._expect_stamped = self.count_publishers(self._stamped_topic) > 0
            self._awaiting_ns = session.time_ns if self.real_time_factor == 0.0 else None
            self._stamped_seen = False
            if self._awaiting_ns is not None:
                self._timeout_timer.reset()
            self._image_publisher.publish(image)
            self._info_publisher.publish(self._camera_info)
            self.frames_published += 1
        state = session.state()
        with self._lock:
            self._snapshot = state
        if final or self._state_publisher.get_subscription_count():
            self._publish_state(state)
        for observer in self.step_observers:
            observer(session.last_record, frame)
        if final:
            self._stop(state)

    def _publish_state(self, state: SessionState) -> None:
        message = state.as_dict()
        if state.status.value != 'ready':
            params = self.session.reward_params()
            params.pop('waypoints')  # constant: on the track topic
            message['reward_params'] = params
        self._state_publisher.publish(String(data=json.dumps(message)))

    def _stop(self, state: SessionState) -> None:
        self._awaiting_ns = None
        self._timeout_timer.cancel()
        self._grace_timer.cancel()
        if self._tick_timer is not None:
            self._tick_timer.cancel()
        if state.error:
            self.get_logger().error(f'race stopped: {state.error}')
        else:
            laps = ', '.join(f'{t:.2f}' for t in state.lap_times_s) or 'none'
            self.get_logger().info(f'race {state.status.value}: laps {laps} s, off track '
                                   f'{state.off_track_count}x')
        self.finished.set()

    # --- commands -------------------------------------------------------------------------

    def _on_cmd_vel(self, msg: Twist) -> None:
        speed, steering = drive.twist_to_drive(msg.linear.x, msg.angular.z, spec.CAR.wheelbase_m)
        self.session.set_command(speed, steering)  # twist_to_drive gives finite values
        self.commands_received += 1
        if self._awaiting_ns is not None and (self._stamped_seen or not self._expect_stamped):
            self._answered()

    def _on_stamped_command(self, msg: TwistStamped) -> None:
        if self._awaiting_ns is None or stamp_to_ns(msg.header.stamp) != self._awaiting_ns:
            return
        self._stamped_seen = True
        self._grace_timer.reset()  # the Twist that follows it normally comes first

    def _answered(self) -> None:
        started = time.perf_counter()
        if self._frame_out_at is not None and self._pipeline_alive:
            self.pipeline_wait_total_s += started - self._frame_out_at
        self._awaiting_ns = None
        self._pipeline_alive = True
        self._timeout_timer.cancel()
        self._grace_timer.cancel()
        self._step_to_next_frame()
        self._frame_out_at = time.perf_counter()
        self.sim_work_total_s += self._frame_out_at - started

    def _on_grace(self) -> None:
        self._grace_timer.cancel()
        if self._awaiting_ns is not None and self._stamped_seen:
            self.grace_steps += 1
            self._answered()

    def _on_timeout(self) -> None:
        if self._awaiting_ns is None:
            self._timeout_timer.cancel()
            return
        if not self._pipeline_alive:
            # Nothing has answered yet (nodes starting, discovery): offer the frame again.
            self.get_logger().info('waiting for the drive pipeline to answer the first frame',
                                   throttle_duration_sec=LOG_THROTTLE_S)
            self._publish_frame()
            return
        self.response_timeouts += 1
        self.get_logger().warning(
            f'no answer to the frame of t={self._awaiting_ns / 1e9:.3f} s within '
            f'{self.response_timeout_s:g} s: going on with the last command '
            f'({self.response_timeouts} so far)', throttle_duration_sec=LOG_THROTTLE_S)
        self._answered()

    def _on_restart(self, request: Trigger.Request, response: Trigger.Response):
        self.session.restart()
        self.finished.clear()
        response.success, response.message = True, 'race restarted at the start line'
        self.get_logger().info(response.message)
        if self._tick_timer is not None:
            self._tick_timer.reset()
        elif self._awaiting_ns is None:
            self._publish_frame()
        return response

    # --- diagnostics ----------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        before, frames_before, sim_before = self._diag
        self._diag = (now, self.frames_published, self.session.time_ns)
        wall = max(now - before, 1e-9)
        state = self.session.state()
        render_ms = (1e3 * float(np.mean(self.render_s))) if self.render_s else math.nan
        status = DiagnosticStatus(name=f'{NODE_NAME}: simulation', hardware_id='embedded')
        status.level = DiagnosticStatus.ERROR if state.error else DiagnosticStatus.OK
        status.message = state.status.value
        values = {
            'track': self.session.track.name, 'sim time s': f'{state.time_s:.3f}',
            'real time factor': f'{(self.session.time_ns - sim_before) / 1e9 / wall:.2f}',
            'frames per s': f'{(self.frames_published - frames_before) / wall:.1f}',
            'render ms per frame': f'{render_ms:.3f}', 'laps completed': state.laps_completed,
            'progress': f'{state.progress:.1f}', 'off track': state.off_track_count,
            'commands received': self.commands_received,
            'response timeouts': self.response_timeouts, 'grace steps': self.grace_steps,
            'mode': 'lockstep' if self.real_time_factor == 0 else
                    f'{self.real_time_factor:g}x real time'}
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = ns_to_stamp(self.session.time_ns)
        self._diagnostics_publisher.publish(array)


def main(args: list[str] | None = None) -> int:
    # Single-threaded: every callback belongs to one mutually exclusive group anyway.
    return run_node(SimNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
