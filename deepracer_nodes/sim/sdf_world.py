"""Gazebo worlds generated from the bundled tracks and the car and camera in spec.

One track gives five files in worlds/ (flat, so setup.py installs the folder as is):

    <track>.png             the mat seen from above (render.GroundTexture, flat colours)
    <track>_ground.obj/.mtl a quad carrying that texture with explicit UVs
    <track>_harmonic.sdf    SDF 1.9 world for Gazebo Harmonic (gz-sim systems, ros_gz)
    <track>_classic.sdf     SDF 1.6 world for Gazebo Classic (gazebo_ros plugins, Humble)

Why two worlds per track rather than one world and two car models: the flavours differ
in the world itself (gz-sim needs physics/sensors/scene-broadcaster systems in the world,
Classic must not have them) as well as in the car's plugins, so one file each keeps every
world loadable as is with `gz sim FILE` or `gazebo FILE`.

Why an OBJ quad for the ground instead of a textured plane: a plane's UV layout is
whatever the renderer's plane mesh does, while the OBJ states the UV of each corner, so
texture pixels map to the track's metres exactly and a test can check it from the files.
Both Gazebos load OBJ with an .mtl diffuse map, relative to the .obj file.

Every number about the car, the camera and every topic name comes from
deepracer_nodes.core.spec; the constants below are Gazebo-only physical properties
(masses, chassis height, friction, controller gains) that nothing else in the package uses.

    python -m deepracer_nodes.sim.sdf_world --out worlds/
"""

from __future__ import annotations

import argparse
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import cv2

from deepracer_nodes.core import spec
from deepracer_nodes.sim import track_library
from deepracer_nodes.sim.render import Appearance, GroundTexture, camera_mount
from deepracer_nodes.sim.track import Track

FLAVOURS = ('harmonic', 'classic')
SDF_VERSIONS = {'harmonic': '1.9', 'classic': '1.6'}
# 5 mm texels, as the embedded simulator's camera renderer uses: the 5 cm lines are 10 px.
GROUND_METRES_PER_PX = 0.005
# Flat colours (no grain): Gazebo's lighting shades the mat, and flat PNGs stay ~0.2 MB.
GROUND_APPEARANCE = Appearance(grain=0.0)
GROUND_TEXTURE_SEED = 0

PHYSICS_STEP_S = 0.001
CAR_MODEL_NAME = 'deepracer'
TRACK_MODEL_NAME = 'track'
CAMERA_SENSOR_NAME = 'front_camera'
CAMERA_CLIP_NEAR_M = 0.02
CAMERA_CLIP_FAR_M = 50.0
# Where Gazebo Classic keeps its own media, kept on GAZEBO_RESOURCE_PATH by the launch file.
CLASSIC_DEFAULT_MEDIA = '/usr/share/gazebo-11'


@dataclass(frozen=True)
class CarBody:
    """Physical properties only Gazebo needs (spec.CAR holds the shared geometry)."""

    chassis_mass_kg: float = 1.2  # a DeepRacer weighs about 1.5 kg with battery and wheels
    chassis_height_m: float = 0.06
    ground_clearance_m: float = 0.02
    wheel_mass_kg: float = 0.05
    wheel_width_m: float = 0.025
    knuckle_mass_kg: float = 0.01
    camera_mass_kg: float = 0.01
    camera_box_m: float = 0.02
    tyre_friction: float = 1.0
    steering_effort_nm: float = 5.0
    # Gazebo Classic's Ackermann plugin drives the joints through PIDs (force control):
    # wheel speed error in rad/s -> N m per rear wheel, steering error in rad -> N m.
    classic_speed_pid: tuple[float, float, float] = (0.01, 0.0, 0.0)
    classic_steering_pid: tuple[float, float, float] = (0.05, 0.0, 0.002)


BODY = CarBody()
WHEELS = ('front_left', 'front_right', 'rear_left', 'rear_right')


# --- names and numbers shared with the launch files and tests -----------------------------

def world_suffix(flavour: str) -> str:
    """File name ending of a flavour's worlds: '<track>' + suffix."""
    _check_flavour(flavour)
    return f'_{flavour}.sdf'


def world_file_name(track_name: str, flavour: str) -> str:
    return track_name + world_suffix(flavour)


def texture_file_name(track_name: str) -> str:
    return f'{track_name}.png'


def ground_mesh_file_name(track_name: str) -> str:
    return f'{track_name}_ground.obj'


def ground_material_file_name(track_name: str) -> str:
    return f'{track_name}_ground.mtl'


def track_file_names(track_name: str) -> list[str]:
    """Every file generated for a track."""
    return [texture_file_name(track_name), ground_mesh_file_name(track_name),
            ground_material_file_name(track_name),
            *(world_file_name(track_name, flavour) for flavour in FLAVOURS)]


def camera_topic_layout(topics: spec.Topics = spec.TOPICS) -> tuple[str, str]:
    """(ROS namespace, camera name) that make both Gazebos publish spec's camera topics.

    Neither Gazebo lets the two topics be named freely: gz-sensors publishes the info next
    to the image as <folder>/camera_info, gazebo_ros_camera publishes
    <namespace>/<camera_name>/image_raw and .../camera_info. Raises ValueError when spec's
    names do not have that shape.
    """
    folder, _, image_name = topics.image.rpartition('/')
    info_folder, _, info_name = topics.camera_info.rpartition('/')
    if image_name != 'image_raw' or info_name != 'camera_info' or folder != info_folder \
            or not folder.startswith('/') or len(folder) < 2:
        raise ValueError(f'Gazebo cameras publish <folder>/image_raw and <folder>/camera_info; '
                         f'spec has {topics.image!r} and {topics.camera_info!r}')
    namespace, _, camera_name = folder.rpartition('/')
    return namespace or '/', camera_name


def bridge_arguments(topics: spec.Topics = spec.TOPICS) -> list[str]:
    """ros_gz_bridge parameter_bridge arguments: the Harmonic world publishes and listens
    on spec's names, so each topic keeps its name ('[' = gz to ROS, ']' = ROS to gz)."""
    camera_topic_layout(topics)
    return [f'{topics.clock}@rosgraph_msgs/msg/Clock[gz.msgs.Clock',
            f'{topics.image}@sensor_msgs/msg/Image[gz.msgs.Image',
            f'{topics.camera_info}@sensor_msgs/msg/CameraInfo[gz.msgs.CameraInfo',
            f'{topics.sim_cmd_vel}@geometry_msgs/msg/Twist]gz.msgs.Twist']


def inner_wheel_lock_rad(car: spec.CarGeometry = spec.CAR) -> float:
    """Steering joint limit: the inner front wheel's angle when the bicycle-model steering
    angle (what spec.CAR.max_steering_rad limits) is at full lock. Ackermann geometry
    turns the inner wheel further than the bicycle angle, so a joint limit of exactly
    max_steering_rad would clip it and widen the car's tightest turn."""
    radius = car.wheelbase_m / math.tan(car.max_steering_rad)
    return math.atan2(car.wheelbase_m, radius - car.track_m / 2.0)


def harmonic_steering_limit_rad(car: spec.CarGeometry = spec.CAR) -> float:
    """gz-sim's AckermannSteering clamps the turning radius to wheel_base / sin(limit);
    the bicycle model's tightest radius is wheelbase / tan(max_steering). Equal when
    sin(limit) = tan(max_steering)."""
    tangent = math.tan(car.max_steering_rad)
    if not 0.0 < tangent < 1.0:
        raise ValueError('gz-sim AckermannSteering cannot express a steering limit of '
                         f'{car.max_steering_rad:.3f} rad (needs 0 < tan < 1)')
    return math.asin(tangent)


def start_pose(track: Track) -> tuple[float, float, float]:
    """base_link (rear axle centre) pose of the car at the start line: x, y, yaw."""
    x, y = track.point_at(0.0)
    return float(x), float(y), track.heading_at(0.0)


# --- the ground ------------------------------------------------------------------------------

def ground_texture(track: Track) -> GroundTexture:
    return GroundTexture(track, GROUND_APPEARANCE, GROUND_METRES_PER_PX, GROUND_TEXTURE_SEED)


def ground_extent(texture: GroundTexture) -> tuple[float, float, float, float]:
    """World rectangle (x_min, y_min, x_max, y_max) covered exactly by the texture's pixels
    (pixel (0, 0) is the top-left corner at (x_min, y_max), image up = world +y)."""
    height, width = texture.levels[0].shape[:2]
    res = texture.metres_per_px
    return (texture.x_min, texture.y_max - height * res,
            texture.x_min + width * res, texture.y_max)


def ground_obj(texture: GroundTexture, track_name: str) -> str:
    """A horizontal quad over the ground extent with its texture coordinates (OBJ: v = 0
    at the image's bottom row)."""
    x0, y0, x1, y1 = ground_extent(texture)
    lines = [f'# Ground of track {track_name}: generated by deepracer_nodes.sim.sdf_world',
             f'mtllib {ground_material_file_name(track_name)}',
             f'o {track_name}_ground']
    lines += [f'v {_num(x)} {_num(y)} 0' for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))]
    lines += ['vt 0 0', 'vt 1 0', 'vt 1 1', 'vt 0 1', 'vn 0 0 1',
              f'usemtl {track_name}_mat', 's off', 'f 1/1/1 2/2/1 3/3/1 4/4/1']
    return '\n'.join(lines) + '\n'


def ground_mtl(track_name: str) -> str:
    """Material with the texture as diffuse map, lit like a matt mat."""
    return '\n'.join([f'# Material of track {track_name}: generated by '
                      'deepracer_nodes.sim.sdf_world',
                      f'newmtl {track_name}_mat', 'Ka 1 1 1', 'Kd 1 1 1', 'Ks 0 0 0',
                      'Ns 1', 'd 1', 'illum 1', f'map_Kd {texture_file_name(track_name)}']) + '\n'


def ground_model(parent: ET.Element, texture: GroundTexture, track_name: str,
                 flavour: str) -> ET.Element:
    x0, y0, x1, y1 = ground_extent(texture)
    model = _sub(parent, 'model', name=TRACK_MODEL_NAME)
    _sub(model, 'static', 'true')
    link = _sub(model, 'link', name='ground')
    collision = _sub(link, 'collision', name='floor')
    plane = _sub(_sub(collision, 'geometry'), 'plane')
    _sub(plane, 'normal', '0 0 1')
    _sub(plane, 'size', f'{_num(x1 - x0)} {_num(y1 - y0)}')
    _sub(collision, 'pose', _pose(((x0 + x1) / 2, (y0 + y1) / 2, 0.0), (0.0, 0.0, 0.0)))
    visual = _sub(link, 'visual', name='mat')
    # Harmonic resolves a relative URI against the world file; Classic searches
    # GAZEBO_RESOURCE_PATH, which the launch file extends with the worlds folder.
    uri = ground_mesh_file_name(track_name)
    _sub(_sub(_sub(visual, 'geometry'), 'mesh'), 'uri',
         uri if flavour == 'harmonic' else f'file://{uri}')
    return model


# --- the car ---------------------------------------------------------------------------------

def wheel_centre(wheel: str, car: spec.CarGeometry = spec.CAR) -> tuple[float, float, float]:
    """Wheel centre in base_link (rear axle centre on the ground)."""
    x = car.wheelbase_m if wheel.startswith('front') else 0.0
    y = car.track_m / 2.0 if wheel.endswith('left') else -car.track_m / 2.0
    return x, y, car.wheel_radius_m


def car_model(parent: ET.Element, flavour: str, pose: tuple[float, float, float],
              car: spec.CarGeometry = spec.CAR,
              camera: spec.CameraGeometry = spec.CAMERA) -> ET.Element:
    """The car: chassis (base_link), four wheels, steered front knuckles, camera link,
    camera sensor and the Ackermann drive listening on spec.TOPICS.sim_cmd_vel."""
    x, y, yaw = pose
    model = _sub(parent, 'model', name=CAR_MODEL_NAME)
    _sub(model, 'pose', _pose((x, y, 0.0), (0.0, 0.0, yaw)))
    _chassis_link(model, car)
    for wheel in WHEELS:
        _wheel(model, wheel, car)
    _camera_link(model, flavour, camera)
    _drive_plugin(model, flavour, car)
    return model


def _chassis_link(model: ET.Element, car: spec.CarGeometry) -> None:
    link = _sub(model, 'link', name=spec.FRAMES.base)
    size = (car.length_m, car.width_m, BODY.chassis_height_m)
    # Centred between the axles, as the embedded simulator's overhead view draws it.
    centre = (car.wheelbase_m / 2.0, 0.0, BODY.ground_clearance_m + size[2] / 2.0)
    _inertial(link, BODY.chassis_mass_kg, centre, _box_inertia(BODY.chassis_mass_kg, size))
    for tag in ('collision', 'visual'):
        element = _sub(link, tag, name=f'chassis_{tag}')
        _sub(element, 'pose', _pose(centre, (0.0, 0.0, 0.0)))
        _sub(_sub(_sub(element, 'geometry'), 'box'), 'size', _vec(size))
        if tag == 'visual':
            _colour(element, (0.1, 0.1, 0.12))


def _wheel(model: ET.Element, wheel: str, car: spec.CarGeometry) -> None:
    centre = wheel_centre(wheel, car)
    parent = spec.FRAMES.base
    if wheel.startswith('front'):
        knuckle = _sub(model, 'link', name=f'{wheel}_knuckle')
        _sub(knuckle, 'pose', _pose(centre, (0.0, 0.0, 0.0)))
        small = BODY.wheel_width_m / 2.0
        _inertial(knuckle, BODY.knuckle_mass_kg, (0.0, 0.0, 0.0),
                  _box_inertia(BODY.knuckle_mass_kg, (small, small, small)))
        lock = inner_wheel_lock_rad(car)
        _joint(model, f'{wheel}_steering_joint', 'revolute', parent, knuckle.get('name'),
               (0.0, 0.0, 1.0), (-lock, lock), BODY.steering_effort_nm)
        parent = knuckle.get('name')
    link = _sub(model, 'link', name=f'{wheel}_wheel')
    _sub(link, 'pose', _pose(centre, (0.0, 0.0, 0.0)))
    mass, radius, width = BODY.wheel_mass_kg, car.wheel_radius_m, BODY.wheel_width_m
    axial = mass * radius ** 2 / 2.0
    across = mass * (3 * radius ** 2 + width ** 2) / 12.0
    _inertial(link, mass, (0.0, 0.0, 0.0), (across, axial, across))
    # Link frames stay aligned with base_link (the joint axis is +y, forward roll is
    # positive); only the cylinder, whose axis is its own z, is turned onto y.
    on_side = (-math.pi / 2.0, 0.0, 0.0)
    for tag in ('collision', 'visual'):
        element = _sub(link, tag, name=f'{wheel}_{tag}')
        _sub(element, 'pose', _pose((0.0, 0.0, 0.0), on_side))
        cylinder = _sub(_sub(element, 'geometry'), 'cylinder')
        _sub(cylinder, 'radius', _num(radius))
        _sub(cylinder, 'length', _num(width))
        if tag == 'collision':
            _friction(element)
        else:
            _colour(element, (0.05, 0.05, 0.05))
    _joint(model, f'{wheel}_wheel_joint', 'revolute', parent, link.get('name'),
           (0.0, 1.0, 0.0), None, None)


def _camera_link(model: ET.Element, flavour: str, camera: spec.CameraGeometry) -> None:
    if camera.wide_angle_k1 != 0.0:
        raise ValueError('the Gazebo worlds model the pinhole camera only; spec.CAMERA has a '
                         f'wide-angle k1 of {camera.wide_angle_k1}')
    mount = camera_mount(camera)
    link = _sub(model, 'link', name=spec.FRAMES.camera)
    _sub(link, 'pose', _pose(mount.xyz, mount.rpy))
    side = BODY.camera_box_m
    _inertial(link, BODY.camera_mass_kg, (0.0, 0.0, 0.0),
              _box_inertia(BODY.camera_mass_kg, (side, side, side)))
    visual = _sub(link, 'visual', name='camera_visual')
    _sub(_sub(_sub(visual, 'geometry'), 'box'), 'size', _vec((side, side, side)))
    _colour(visual, (0.2, 0.2, 0.2))
    _joint(model, 'camera_joint', 'fixed', spec.FRAMES.base, spec.FRAMES.camera, None, None,
           None)
    # A Gazebo camera looks along its link's +x, which is how camera_link is defined.
    sensor = _sub(link, 'sensor', name=CAMERA_SENSOR_NAME, type='camera')
    _sub(sensor, 'always_on', 'true')
    _sub(sensor, 'update_rate', _num(camera.fps))
    if flavour == 'harmonic':
        _sub(sensor, 'topic', spec.TOPICS.image)
        # Read by gz-sensors (Harmonic) as the image and camera_info header frame_id.
        _sub(sensor, 'gz_frame_id', spec.FRAMES.camera_optical)
    cam = _sub(sensor, 'camera', name=CAMERA_SENSOR_NAME)
    _sub(cam, 'horizontal_fov', _num(camera.horizontal_fov_rad))
    image = _sub(cam, 'image')
    _sub(image, 'width', str(camera.width))
    _sub(image, 'height', str(camera.height))
    _sub(image, 'format', 'R8G8B8')
    clip = _sub(cam, 'clip')
    _sub(clip, 'near', _num(CAMERA_CLIP_NEAR_M))
    _sub(clip, 'far', _num(CAMERA_CLIP_FAR_M))
    if flavour == 'classic':
        namespace, camera_name = camera_topic_layout()
        plugin = _sub(sensor, 'plugin', name='camera_driver', filename='libgazebo_ros_camera.so')
        _sub(_sub(plugin, 'ros'), 'namespace', namespace)
        _sub(plugin, 'camera_name', camera_name)
        _sub(plugin, 'frame_name', spec.FRAMES.camera_optical)


def _drive_plugin(model: ET.Element, flavour: str, car: spec.CarGeometry) -> None:
    if flavour == 'harmonic':
        _harmonic_drive(model, car)
    else:
        _classic_drive(model, car)


def _harmonic_drive(model: ET.Element, car: spec.CarGeometry) -> None:
    """gz-sim AckermannSteering: Twist (linear.x m/s, angular.z yaw rate) on the topic,
    rear wheel speeds and steering joint angles from the bicycle model."""
    plugin = _sub(model, 'plugin', filename='gz-sim-ackermann-steering-system',
                  name='gz::sim::systems::AckermannSteering')
    for side in ('left', 'right'):
        _sub(plugin, f'{side}_joint', f'rear_{side}_wheel_joint')
    for side in ('left', 'right'):
        _sub(plugin, f'{side}_steering_joint', f'front_{side}_steering_joint')
    _sub(plugin, 'wheel_separation', _num(car.track_m))
    # The steering axes pass through the wheel centres, so the kingpins are a track apart.
    _sub(plugin, 'kingpin_width', _num(car.track_m))
    _sub(plugin, 'wheel_base', _num(car.wheelbase_m))
    _sub(plugin, 'wheel_radius', _num(car.wheel_radius_m))
    _sub(plugin, 'steering_limit', _num(harmonic_steering_limit_rad(car)))
    # The steering joints move at gain x error: a first-order lag of 1 / gain seconds.
    _sub(plugin, 'steer_p_gain', _num(1.0 / car.steering_time_constant_s))
    _sub(plugin, 'min_velocity', _num(-car.max_speed_mps))
    _sub(plugin, 'max_velocity', _num(car.max_speed_mps))
    # The speed lag's steepest slope (from rest towards top speed) as acceleration limit.
    accel = car.max_speed_mps / car.speed_time_constant_s
    _sub(plugin, 'min_acceleration', _num(-accel))
    _sub(plugin, 'max_acceleration', _num(accel))
    _sub(plugin, 'topic', spec.TOPICS.sim_cmd_vel)
    _sub(plugin, 'frame_id', spec.FRAMES.odom)
    _sub(plugin, 'child_frame_id', spec.FRAMES.base)


def _classic_drive(model: ET.Element, car: spec.CarGeometry) -> None:
    """gazebo_ros_ackermann_drive: joint torques from PIDs. It reads angular.z as the
    STEERING ANGLE (rad), not a yaw rate; see the Classic launch file."""
    plugin = _sub(model, 'plugin', name='ackermann_drive',
                  filename='libgazebo_ros_ackermann_drive.so')
    _sub(_sub(plugin, 'ros'), 'remapping', f'cmd_vel:={spec.TOPICS.sim_cmd_vel}')
    _sub(plugin, 'update_rate', _num(1.0 / PHYSICS_STEP_S))
    for wheel in WHEELS:
        _sub(plugin, f'{wheel}_joint', f'{wheel}_wheel_joint')
    for side in ('left', 'right'):
        _sub(plugin, f'{side}_steering_joint', f'front_{side}_steering_joint')
    _sub(plugin, 'max_steer', _num(car.max_steering_rad))
    _sub(plugin, 'max_speed', _num(car.max_speed_mps))
    for side in ('left', 'right'):
        _sub(plugin, f'{side}_steering_pid_gain', _vec(BODY.classic_steering_pid))
        _sub(plugin, f'{side}_steering_i_range', '0 0')
    _sub(plugin, 'linear_velocity_pid_gain', _vec(BODY.classic_speed_pid))
    _sub(plugin, 'linear_velocity_i_range', '0 0')
    _sub(plugin, 'publish_odom', 'false')
    _sub(plugin, 'publish_odom_tf', 'false')
    _sub(plugin, 'publish_wheel_tf', 'false')
    _sub(plugin, 'odometry_frame', spec.FRAMES.odom)
    _sub(plugin, 'robot_base_frame', spec.FRAMES.base)


# --- the world -------------------------------------------------------------------------------

def world_sdf(track: Track, texture: GroundTexture, flavour: str) -> str:
    """The whole world file of a flavour as text."""
    _check_flavour(flavour)
    root = ET.Element('sdf', version=SDF_VERSIONS[flavour])
    world = _sub(root, 'world', name=f'deepracer_{track.name}')
    physics = _sub(world, 'physics', name='1ms',
                   type='ignored' if flavour == 'harmonic' else 'ode')
    _sub(physics, 'max_step_size', _num(PHYSICS_STEP_S))
    _sub(physics, 'real_time_factor', '1')
    if flavour == 'harmonic':
        _harmonic_systems(world)
    else:
        _sub(physics, 'real_time_update_rate', _num(1.0 / PHYSICS_STEP_S))
    _sub(world, 'gravity', '0 0 -9.81')
    scene = _sub(world, 'scene')
    _sub(scene, 'ambient', '0.6 0.6 0.6 1')
    _sub(scene, 'background', _vec(_rgb(GROUND_APPEARANCE.wall)) + ' 1')
    _sub(scene, 'shadows', 'false')
    _sun(world)
    ground_model(world, texture, track.name, flavour)
    car_model(world, flavour, start_pose(track))
    ET.indent(root, space='  ')
    comment = (f'<!-- Track {track.name!r} for Gazebo {flavour.capitalize()}: generated by '
               'deepracer_nodes.sim.sdf_world from the track and deepracer_nodes/core/spec.py; '
               'do not edit, regenerate. -->')
    return ('<?xml version="1.0"?>\n' + comment + '\n'
            + ET.tostring(root, encoding='unicode') + '\n')


def _harmonic_systems(world: ET.Element) -> None:
    for library, name in (('physics', 'Physics'), ('user-commands', 'UserCommands'),
                          ('scene-broadcaster', 'SceneBroadcaster')):
        _sub(world, 'plugin', filename=f'gz-sim-{library}-system',
             name=f'gz::sim::systems::{name}')
    sensors = _sub(world, 'plugin', filename='gz-sim-sensors-system',
                   name='gz::sim::systems::Sensors')
    _sub(sensors, 'render_engine', 'ogre2')


def _sun(world: ET.Element) -> None:
    light = _sub(world, 'light', name='sun', type='directional')
    _sub(light, 'cast_shadows', 'false')
    _sub(light, 'pose', '0 0 10 0 0 0')
    _sub(light, 'diffuse', '0.8 0.8 0.8 1')
    _sub(light, 'specular', '0.1 0.1 0.1 1')
    _sub(light, 'direction', '-0.3 0.2 -1')


# --- files -----------------------------------------------------------------------------------

def track_files(track: Track) -> dict[str, bytes]:
    """File name -> content of every file of a track's worlds."""
    texture = ground_texture(track)
    ok, png = cv2.imencode('.png', texture.levels[0], [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise ValueError(f'could not encode the ground texture of {track.name!r}')
    files = {texture_file_name(track.name): png.tobytes(),
             ground_mesh_file_name(track.name): ground_obj(texture, track.name).encode(),
             ground_material_file_name(track.name): ground_mtl(track.name).encode()}
    for flavour in FLAVOURS:
        files[world_file_name(track.name, flavour)] = world_sdf(track, texture,
                                                                flavour).encode()
    return files


def write_worlds(out_dir: str | Path, track_names: list[str] | None = None) -> list[Path]:
    """Generate the worlds of bundled tracks (all by default) into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in track_names or track_library.track_names():
        for file_name, content in track_files(track_library.make_track(name)).items():
            path = out / file_name
            path.write_bytes(content)
            written.append(path)
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--out', default='worlds', help='output folder (default: worlds)')
    parser.add_argument('--track', action='append', choices=track_library.track_names(),
                        help='track to generate (repeatable; default: every bundled track)')


def run(args: argparse.Namespace) -> int:
    for path in write_worlds(args.out, args.track):
        print(f'{path} ({path.stat().st_size / 1e3:.0f} kB)')
    return 0


def main(argv: list[str] | None = None) -> int:
    """Generate the Gazebo worlds of the bundled tracks."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


# --- small XML helpers -----------------------------------------------------------------------

def _check_flavour(flavour: str) -> None:
    if flavour not in FLAVOURS:
        raise ValueError(f'unknown Gazebo flavour {flavour!r}; one of {", ".join(FLAVOURS)}')


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrib)
    if text is not None:
        element.text = text
    return element


def _num(value: float) -> str:
    """Fixed 9-decimal text without trailing zeros: stable across runs, exact to 1 nm."""
    text = f'{float(value):.9f}'.rstrip('0').rstrip('.')
    return '0' if text in ('-0', '') else text


def _vec(values) -> str:
    return ' '.join(_num(v) for v in values)


def _pose(xyz, rpy) -> str:
    return _vec((*xyz, *rpy))


def _rgb(bgr: tuple[int, int, int]) -> tuple[float, float, float]:
    return bgr[2] / 255.0, bgr[1] / 255.0, bgr[0] / 255.0


def _colour(visual: ET.Element, rgb: tuple[float, float, float]) -> None:
    material = _sub(visual, 'material')
    for tag in ('ambient', 'diffuse'):
        _sub(material, tag, _vec(rgb) + ' 1')


def _friction(collision: ET.Element) -> None:
    ode = _sub(_sub(_sub(collision, 'surface'), 'friction'), 'ode')
    _sub(ode, 'mu', _num(BODY.tyre_friction))
    _sub(ode, 'mu2', _num(BODY.tyre_friction))


def _box_inertia(mass: float, size) -> tuple[float, float, float]:
    x, y, z = size
    return (mass * (y * y + z * z) / 12.0, mass * (x * x + z * z) / 12.0,
            mass * (x * x + y * y) / 12.0)


def _inertial(link: ET.Element, mass: float, centre, diagonal) -> None:
    inertial = _sub(link, 'inertial')
    _sub(inertial, 'pose', _pose(centre, (0.0, 0.0, 0.0)))
    _sub(inertial, 'mass', _num(mass))
    inertia = _sub(inertial, 'inertia')
    for name, value in zip(('ixx', 'iyy', 'izz'), diagonal):
        _sub(inertia, name, _num(value))
    for name in ('ixy', 'ixz', 'iyz'):
        _sub(inertia, name, '0')


def _joint(model: ET.Element, name: str, kind: str, parent: str, child: str,
           axis: tuple[float, float, float] | None,
           limits: tuple[float, float] | None, effort: float | None) -> None:
    joint = _sub(model, 'joint', name=name, type=kind)
    _sub(joint, 'parent', parent)
    _sub(joint, 'child', child)
    if axis is None:
        return
    axis_element = _sub(joint, 'axis')
    _sub(axis_element, 'xyz', _vec(axis))
    if limits is not None:
        limit = _sub(axis_element, 'limit')
        _sub(limit, 'lower', _num(limits[0]))
        _sub(limit, 'upper', _num(limits[1]))
        _sub(limit, 'effort', _num(effort))


if __name__ == '__main__':
    raise SystemExit(main())
