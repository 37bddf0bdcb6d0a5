"""Gazebo worlds: regenerated = committed, valid for Gazebo's own SDF parser, and every
camera, car and topic value equal to spec; the ground texture sits on the track's metres."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from deepracer_nodes.core import spec
from deepracer_nodes.sim import sdf_world, track_library
from deepracer_nodes.sim.render import Appearance, camera_mount

ROOT = Path(__file__).resolve().parent.parent
WORLDS = ROOT / 'worlds'
TRACKS = track_library.track_names()
WORLD_FILES = [WORLDS / sdf_world.world_file_name(name, flavour)
               for name in TRACKS for flavour in sdf_world.FLAVOURS]
MAX_FILE_BYTES = 2_000_000


def world_id(path: Path) -> str:
    return path.name


def load(path: Path) -> ET.Element:
    return ET.parse(path).getroot()


def flavour_of(path: Path) -> str:
    return next(f for f in sdf_world.FLAVOURS if path.name.endswith(sdf_world.world_suffix(f)))


def numbers(text: str) -> list[float]:
    return [float(v) for v in text.split()]


def car(root: ET.Element) -> ET.Element:
    return root.find(f"world/model[@name='{sdf_world.CAR_MODEL_NAME}']")


def link_pose(model: ET.Element, name: str) -> list[float]:
    pose = model.find(f"link[@name='{name}']/pose")
    return numbers(pose.text) if pose is not None else [0.0] * 6


# --- the committed files are exactly what the generator makes now ----------------------------

@pytest.fixture(scope='module')
def regenerated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp('worlds')
    sdf_world.write_worlds(out)
    return out


def test_committed_worlds_are_exactly_the_regenerated_ones(regenerated):
    committed = {p.name for p in WORLDS.iterdir() if p.name != '.gitkeep'}
    fresh = {p.name for p in regenerated.iterdir()}
    assert committed == fresh, 'run: python -m deepracer_nodes.sim.sdf_world --out worlds/'
    for name in sorted(fresh):
        if name.endswith('.png'):
            # Compare pixels: PNG bytes may differ between zlib builds for the same image.
            old = cv2.imread(str(WORLDS / name), cv2.IMREAD_UNCHANGED)
            new = cv2.imread(str(regenerated / name), cv2.IMREAD_UNCHANGED)
            assert old.shape == new.shape and np.array_equal(old, new), f'{name} drifted'
        else:
            assert (WORLDS / name).read_bytes() == (regenerated / name).read_bytes(), \
                f'{name} drifted from the generator: regenerate worlds/'


def test_command_line_writes_the_chosen_tracks(tmp_path, capsys):
    assert sdf_world.main(['--out', str(tmp_path / 'out'), '--track', 'hairpin']) == 0
    written = sorted(p.name for p in (tmp_path / 'out').iterdir())
    assert written == sorted(sdf_world.track_file_names('hairpin'))
    assert 'hairpin_harmonic.sdf' in capsys.readouterr().out


def test_every_bundled_track_has_both_flavours_and_small_files():
    for name in TRACKS:
        for file_name in sdf_world.track_file_names(name):
            path = WORLDS / file_name
            assert path.is_file(), f'{file_name} missing'
            assert path.stat().st_size <= MAX_FILE_BYTES, f'{file_name} is too big'


# --- Gazebo's own parser ---------------------------------------------------------------------

def ign_executable() -> str:
    found = shutil.which('ign')
    if found is None:
        message = ('`ign` (Gazebo SDFormat tools) is missing: apt-get install -y '
                   'libsdformat-dev ignition-tools')
        if os.environ.get('CI') == 'true':
            pytest.fail(message)
        pytest.skip(message)
    return found


def ign_check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([ign_executable(), 'sdf', '-k', str(path)], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize('path', WORLD_FILES, ids=world_id)
def test_gazebo_sdf_parser_accepts_the_world(path):
    result = ign_check(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'Valid.' in result.stdout
    assert 'Error' not in result.stdout + result.stderr


def test_gazebo_sdf_parser_rejects_a_broken_car(tmp_path):
    """The check above can fail: a joint naming a link that does not exist is refused."""
    text = (WORLDS / sdf_world.world_file_name('loop', 'harmonic')).read_text()
    broken = tmp_path / 'broken.sdf'
    broken.write_text(text.replace('<child>rear_left_wheel</child>',
                                   '<child>no_such_wheel</child>', 1))
    result = ign_check(broken)
    assert result.returncode != 0
    assert 'no_such_wheel' in result.stdout + result.stderr


# --- camera and topics from spec -------------------------------------------------------------

@pytest.mark.parametrize('path', WORLD_FILES, ids=world_id)
def test_camera_sensor_equals_spec(path):
    model = car(load(path))
    sensors = model.findall('link/sensor')
    assert len(sensors) == 1
    sensor = sensors[0]
    assert sensor.get('type') == 'camera'
    link = model.find(f"link[@name='{spec.FRAMES.camera}']")
    assert link is not None and sensor in list(link), 'the camera belongs to camera_link'
    assert float(sensor.find('update_rate').text) == spec.CAMERA.fps
    camera = sensor.find('camera')
    assert float(camera.find('horizontal_fov').text) == pytest.approx(
        spec.CAMERA.horizontal_fov_rad, abs=1e-9)
    assert int(camera.find('image/width').text) == spec.CAMERA.width
    assert int(camera.find('image/height').text) == spec.CAMERA.height
    assert sensor.find('pose') is None, 'the sensor sits at the camera_link origin'
    mount = camera_mount(spec.CAMERA)
    assert link_pose(model, spec.FRAMES.camera) == pytest.approx([*mount.xyz, *mount.rpy],
                                                                 abs=1e-9)
    joint = model.find("joint[@name='camera_joint']")
    assert (joint.get('type'), joint.find('parent').text, joint.find('child').text) == \
        ('fixed', spec.FRAMES.base, spec.FRAMES.camera)


@pytest.mark.parametrize('path', WORLD_FILES, ids=world_id)
def test_camera_publishes_spec_topics_and_frame(path):
    sensor = car(load(path)).find('link/sensor')
    if flavour_of(path) == 'harmonic':
        image_topic = sensor.find('topic').text
        # gz-sensors publishes the camera info next to the image.
        info_topic = image_topic.rpartition('/')[0] + '/camera_info'
        frame = sensor.find('gz_frame_id').text
    else:
        plugin = sensor.find('plugin')
        assert plugin.get('filename') == 'libgazebo_ros_camera.so'
        namespace = plugin.find('ros/namespace').text.rstrip('/')
        folder = f"{namespace}/{plugin.find('camera_name').text}"
        image_topic, info_topic = f'{folder}/image_raw', f'{folder}/camera_info'
        frame = plugin.find('frame_name').text
    assert image_topic == spec.TOPICS.image
    assert info_topic == spec.TOPICS.camera_info
    assert frame == spec.FRAMES.camera_optical


@pytest.mark.parametrize('path', WORLD_FILES, ids=world_id)
def test_drive_listens_on_the_servo_sim_topic(path):
    root = load(path)
    plugins = car(root).findall('plugin')
    assert len(plugins) == 1
    plugin = plugins[0]
    if flavour_of(path) == 'harmonic':
        assert plugin.get('filename') == 'gz-sim-ackermann-steering-system'
        assert plugin.find('topic').text == spec.TOPICS.sim_cmd_vel
    else:
        assert plugin.get('filename') == 'libgazebo_ros_ackermann_drive.so'
        assert plugin.find('ros/remapping').text == f'cmd_vel:={spec.TOPICS.sim_cmd_vel}'


@pytest.mark.parametrize('path', WORLD_FILES, ids=world_id)
def test_every_topic_name_in_the_world_comes_from_spec(path):
    known = set(vars(spec.TOPICS).values())
    names = [e.text for e in load(path).iter('topic')]
    names += [e.text.split(':=', 1)[1] for e in load(path).iter('remapping')]
    assert names, 'no topics found'
    assert set(names) <= known, f'topics not in spec.TOPICS: {set(names) - known}'


def test_bridge_arguments_carry_the_harmonic_topics_under_their_spec_names():
    arguments = sdf_world.bridge_arguments()
    topics = {a.split('@', 1)[0]: a for a in arguments}
    assert set(topics) == {spec.TOPICS.clock, spec.TOPICS.image, spec.TOPICS.camera_info,
                           spec.TOPICS.sim_cmd_vel}
    # Sensors and clock flow from Gazebo to ROS, the drive command the other way.
    assert topics[spec.TOPICS.image].endswith('[gz.msgs.Image')
    assert topics[spec.TOPICS.sim_cmd_vel] == \
        f'{spec.TOPICS.sim_cmd_vel}@geometry_msgs/msg/Twist]gz.msgs.Twist'
    harmonic = load(WORLDS / sdf_world.world_file_name('loop', 'harmonic'))
    for element in harmonic.iter('topic'):
        assert element.text in topics


def test_camera_topics_gazebo_cannot_publish_are_refused():
    for image, info in (('/camera/image', '/camera/camera_info'),
                        ('/camera/image_raw', '/other/camera_info'),
                        ('/image_raw', '/camera_info')):
        with pytest.raises(ValueError, match='camera_info'):
            sdf_world.camera_topic_layout(replace(spec.TOPICS, image=image, camera_info=info))
    assert sdf_world.camera_topic_layout(replace(
        spec.TOPICS, image='/car/front/image_raw', camera_info='/car/front/camera_info')) == \
        ('/car', 'front')


def test_generator_follows_spec_instead_of_repeating_it():
    """Changing the camera given to the generator changes the world's sensor."""
    other = replace(spec.CAMERA, width=320, height=240, fps=30.0, horizontal_fov_rad=1.5,
                    mount_z_m=0.2, tilt_rad=0.1)
    world = ET.Element('world')
    sdf_world.car_model(world, 'harmonic', (0.0, 0.0, 0.0), camera=other)
    sensor = world.find('model/link/sensor')
    assert (sensor.find('camera/image/width').text, sensor.find('camera/image/height').text,
            sensor.find('update_rate').text, sensor.find('camera/horizontal_fov').text) == \
        ('320', '240', '30', '1.5')
    assert numbers(world.find(f"model/link[@name='{spec.FRAMES.camera}']/pose").text) == \
        pytest.approx([other.mount_x_m, 0.0, 0.2, 0.0, 0.1, 0.0])
    with pytest.raises(ValueError, match='pinhole'):
        sdf_world.car_model(ET.Element('world'), 'harmonic', (0.0, 0.0, 0.0),
                            camera=replace(spec.CAMERA, wide_angle_k1=-0.05))
    with pytest.raises(ValueError, match='flavour'):
        sdf_world.world_suffix('fortress')


# --- the car ---------------------------------------------------------------------------------

@pytest.mark.parametrize('path', WORLD_FILES, ids=world_id)
def test_car_geometry_equals_spec(path):
    model = car(load(path))
    chassis = model.find(f"link[@name='{spec.FRAMES.base}']/collision/geometry/box/size")
    assert numbers(chassis.text)[:2] == pytest.approx([spec.CAR.length_m, spec.CAR.width_m])
    for wheel in sdf_world.WHEELS:
        x, y, z = link_pose(model, f'{wheel}_wheel')[:3]
        assert x == pytest.approx(spec.CAR.wheelbase_m if wheel.startswith('front') else 0.0)
        assert abs(y) == pytest.approx(spec.CAR.track_m / 2.0)
        assert (y > 0) == wheel.endswith('left')
        assert z == pytest.approx(spec.CAR.wheel_radius_m), 'wheels stand on the ground'
        radius = model.find(f"link[@name='{wheel}_wheel']/collision/geometry/cylinder/radius")
        assert float(radius.text) == pytest.approx(spec.CAR.wheel_radius_m)
        axis = model.find(f"joint[@name='{wheel}_wheel_joint']/axis/xyz")
        assert numbers(axis.text) == [0.0, 1.0, 0.0]


@pytest.mark.parametrize('path', WORLD_FILES, ids=world_id)
def test_front_wheels_steer_within_the_ackermann_lock(path):
    model = car(load(path))
    lock = sdf_world.inner_wheel_lock_rad()
    for side in ('left', 'right'):
        joint = model.find(f"joint[@name='front_{side}_steering_joint']")
        assert joint.get('type') == 'revolute'
        assert joint.find('parent').text == spec.FRAMES.base
        assert numbers(joint.find('axis/xyz').text) == [0.0, 0.0, 1.0]
        assert float(joint.find('axis/limit/lower').text) == pytest.approx(-lock, abs=1e-9)
        assert float(joint.find('axis/limit/upper').text) == pytest.approx(lock, abs=1e-9)


def test_ackermann_lock_gives_the_bicycle_models_tightest_turn():
    car_ = spec.CAR
    bicycle_radius = car_.wheelbase_m / math.tan(car_.max_steering_rad)
    inner = sdf_world.inner_wheel_lock_rad()
    # The inner wheel at its lock points at the same turning centre as the bicycle.
    inner_radius = bicycle_radius - car_.track_m / 2.0
    assert car_.wheelbase_m / math.tan(inner) == pytest.approx(inner_radius)
    assert inner > car_.max_steering_rad
    limit = sdf_world.harmonic_steering_limit_rad()
    assert car_.wheelbase_m / math.sin(limit) == pytest.approx(bicycle_radius)
    with pytest.raises(ValueError):
        sdf_world.harmonic_steering_limit_rad(replace(car_, max_steering_rad=math.radians(50)))


@pytest.mark.parametrize('path', WORLD_FILES, ids=world_id)
def test_drive_plugin_names_real_joints_and_spec_dimensions(path):
    model = car(load(path))
    plugin = model.find('plugin')
    joints = {j.get('name') for j in model.findall('joint')}
    named = [e.text for e in plugin if e.tag.endswith('_joint')]
    assert len(named) >= 4 and set(named) <= joints
    if flavour_of(path) == 'harmonic':
        expected = {'wheel_base': spec.CAR.wheelbase_m, 'wheel_separation': spec.CAR.track_m,
                    'wheel_radius': spec.CAR.wheel_radius_m,
                    'max_velocity': spec.CAR.max_speed_mps,
                    'steering_limit': sdf_world.harmonic_steering_limit_rad(),
                    'steer_p_gain': 1.0 / spec.CAR.steering_time_constant_s}
    else:
        # Classic measures wheel base, separation and radius from the joints and wheels.
        expected = {'max_steer': spec.CAR.max_steering_rad,
                    'max_speed': spec.CAR.max_speed_mps}
    for name, value in expected.items():
        assert float(plugin.find(name).text) == pytest.approx(value, abs=1e-9), name


@pytest.mark.parametrize('name', TRACKS)
def test_car_starts_on_the_start_line_with_every_wheel_on_the_road(name):
    track = track_library.make_track(name)
    for flavour in sdf_world.FLAVOURS:
        model = car(load(WORLDS / sdf_world.world_file_name(name, flavour)))
        x, y, z, roll, pitch, yaw = numbers(model.find('pose').text)
        assert (x, y, yaw) == pytest.approx(sdf_world.start_pose(track), abs=1e-6)
        assert (z, roll, pitch) == (0.0, 0.0, 0.0)
        assert track.points_on_track(track.wheel_points(x, y, yaw)).all()


# --- the ground: texture pixels on the track's metres ------------------------------------------

def ground_sampler(name: str):
    """World (K, 2) -> BGR (K, 3) read through the committed OBJ's corners and UVs."""
    obj = (WORLDS / sdf_world.ground_mesh_file_name(name)).read_text().splitlines()
    vertices = np.array([numbers(line[2:])[:2] for line in obj if line.startswith('v ')])
    uvs = np.array([numbers(line[3:]) for line in obj if line.startswith('vt ')])
    faces = [line for line in obj if line.startswith('f ')]
    assert len(vertices) == len(uvs) == 4 and len(faces) == 1
    assert np.ptp(vertices[:, 0]) > 0 and np.ptp(vertices[:, 1]) > 0
    mtl = (WORLDS / sdf_world.ground_material_file_name(name)).read_text()
    texture_name = next(line.split()[1] for line in mtl.splitlines()
                        if line.startswith('map_Kd'))
    image = cv2.imread(str(WORLDS / texture_name))
    height, width = image.shape[:2]
    # Affine map world -> uv from three corners (an axis-aligned quad is affine).
    src = np.column_stack((vertices[:3], np.ones(3)))
    world_to_uv = np.linalg.solve(src, uvs[:3])
    assert np.allclose(np.column_stack((vertices, np.ones(4))) @ world_to_uv, uvs)

    def sample(points: np.ndarray) -> np.ndarray:
        uv = np.column_stack((points, np.ones(len(points)))) @ world_to_uv
        cols = np.floor(uv[:, 0] * width).astype(int)
        rows = np.floor((1.0 - uv[:, 1]) * height).astype(int)  # OBJ v = 0 at the bottom
        assert (cols >= 0).all() and (cols < width).all()
        assert (rows >= 0).all() and (rows < height).all()
        return image[rows, cols].astype(int)
    return sample


def near(colours: np.ndarray, colour, tolerance: int = 12) -> np.ndarray:
    return np.all(np.abs(colours - np.array(colour)) <= tolerance, axis=1)


def between(colours: np.ndarray, first, second, tolerance: float = 12.0) -> np.ndarray:
    """Colours on the segment between two colours: anti-aliased edges of a marking."""
    a, b = np.array(first, float), np.array(second, float)
    t = np.clip((colours - a) @ (b - a) / ((b - a) @ (b - a)), 0.0, 1.0)
    return np.linalg.norm(colours - (a + t[:, None] * (b - a)), axis=1) <= tolerance


@pytest.mark.parametrize('name', TRACKS)
def test_ground_texture_lies_on_the_tracks_metres(name):
    track = track_library.make_track(name)
    look = sdf_world.GROUND_APPEARANCE
    assert look == replace(Appearance(), grain=0.0)
    sample = ground_sampler(name)
    arcs = np.linspace(0.0, track.length_m, 400, endpoint=False)
    centre = track.point_at(arcs)
    on_centre = sample(centre)
    # Road, dashed yellow line (and the blend at a dash's ends), or the start line.
    road_or_line = between(on_centre, look.road, look.centre_line) \
        | between(on_centre, look.road, look.border)
    assert road_or_line.all()
    assert near(on_centre, look.centre_line).mean() > 0.3, 'the dashed yellow centre line'
    # Halfway between centre and border: road; just inside each border line: white.
    normals = np.array([[-math.sin(h), math.cos(h)] for h in map(track.heading_at, arcs)])
    half = track.width_m / 2.0
    for sign in (1.0, -1.0):
        assert near(sample(centre + sign * normals * half / 2.0), look.road).mean() > 0.95
        border = sample(centre + sign * normals * (half - look.border_width_m / 2.0))
        assert near(border, look.border).mean() > 0.95
        assert near(sample(centre + sign * normals * (half + 0.15)), look.floor).mean() > 0.95
