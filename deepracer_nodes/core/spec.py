"""The single source of truth for car geometry, camera geometry, topic names and defaults.

Nodes, launch files, the Gazebo world generator and the embedded simulator all
read these values; nothing else in the package may repeat them. Units follow
REP 103 (metres, radians, seconds; positive steering turns left).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class CarGeometry:
    """A 1/18 scale DeepRacer car."""

    wheelbase_m: float = 0.164
    track_m: float = 0.159
    wheel_radius_m: float = 0.03
    length_m: float = 0.32
    width_m: float = 0.20
    max_steering_rad: float = math.radians(30.0)
    # Top speed the DeepRacer simulator allows; the speed->throttle curve's default vmax.
    max_speed_mps: float = 4.0
    # First-order actuator lags, so a simulated policy cannot rely on instant response.
    speed_time_constant_s: float = 0.25
    steering_time_constant_s: float = 0.08


@dataclass(frozen=True)
class CameraGeometry:
    """The front camera: sensor resolution, lens and mount on the car (base_link frame)."""

    width: int = 640
    height: int = 480
    fps: float = 15.0
    horizontal_fov_rad: float = 1.13
    # Mount position relative to base_link (rear axle centre on the ground), metres.
    mount_x_m: float = 0.12
    mount_y_m: float = 0.0
    mount_z_m: float = 0.11
    # Downward tilt of the optical axis, radians (positive looks down).
    tilt_rad: float = 0.25
    # Radial distortion of the optional wide-angle lens (equidistant fisheye), 0 = pinhole.
    wide_angle_k1: float = 0.0

    @property
    def focal_px(self) -> float:
        """Pinhole focal length in pixels for the horizontal field of view."""
        return (self.width / 2.0) / math.tan(self.horizontal_fov_rad / 2.0)


@dataclass(frozen=True)
class ModelInput:
    """What a DeepRacer model takes: greyscale, raw 0-255, NHWC [1, 120, 160, 1]."""

    width: int = 160
    height: int = 120


@dataclass(frozen=True)
class Topics:
    """Topic and service names of the command contract (documented in the README)."""

    image: str = '/camera/image_raw'
    camera_info: str = '/camera/camera_info'
    # Policy output: TwistStamped, stamp = the stamp of the frame it was computed from.
    auto_cmd_vel: str = '/inference/cmd_vel'
    probabilities: str = '/inference/probabilities'
    action_index: str = '/inference/action_index'
    # Teleop / Nav2 / Gazebo Ackermann convention: Twist in m/s and rad/s.
    cmd_vel: str = '/cmd_vel'
    # What the servo node's simulated PWM backend sends to a simulator.
    sim_cmd_vel: str = '/sim/cmd_vel'
    # The embedded simulator's ground truth and race state (see deepracer_nodes/sim_node.py).
    sim_pose: str = '/sim/pose'
    sim_race_state: str = '/sim/race_state'
    sim_track: str = '/sim/track'
    servo_enable: str = '/servo/enable'
    clock: str = '/clock'
    diagnostics: str = '/diagnostics'


@dataclass(frozen=True)
class Frames:
    """REP 105 frame ids."""

    base: str = 'base_link'
    camera: str = 'camera_link'
    camera_optical: str = 'camera_optical_frame'
    odom: str = 'odom'


@dataclass(frozen=True)
class PwmLayout:
    """Linux sysfs PWM as the DeepRacer wires it: ESC on channel 0, steering on 1, 50 Hz."""

    sysfs_root: str = '/sys/class/pwm'
    throttle_channel: int = 0
    steering_channel: int = 1
    period_ns: int = 20_000_000


CAR = CarGeometry()
CAMERA = CameraGeometry()
MODEL_INPUT = ModelInput()
TOPICS = Topics()
FRAMES = Frames()
PWM = PwmLayout()

PACKAGE_NAME = 'deepracer_nodes'
# Where the official device keeps its calibration (REFERENCE.md); read and written as is.
DEEPRACER_CALIBRATION_FILE = '/opt/aws/deepracer/calibration.json'
# Where the official device keeps models; searched after our own models folder.
DEEPRACER_MODELS_DIR = '/opt/aws/deepracer/artifacts'
WATCHDOG_TIMEOUT_S = 0.25
# The model shipped in models/<name>/ and driven by `make sim` and the car launch file.
BUNDLED_MODEL = 'centerline_v1'
