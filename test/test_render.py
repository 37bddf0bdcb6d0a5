"""Camera renderer on real generated tracks: geometry, colours where the mat should be,
determinism, lens model and the overhead view."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from deepracer_nodes.core import spec
from deepracer_nodes.core.frame_sources import camera_intrinsics
from deepracer_nodes.sim import render, track_library
from deepracer_nodes.sim.render import (Appearance, CameraRenderer, FrameEffects,
                                        GroundTexture)


@pytest.fixture(scope='module')
def loop():
    return track_library.make_track('loop')


@pytest.fixture(scope='module')
def texture(loop):
    return GroundTexture(loop, Appearance(grain=0.0))


def project(world_xy, pose, width, height, camera=spec.CAMERA):
    """Pixel (u, v) of a floor point seen from a base_link pose, pinhole model, computed
    independently of the renderer's ray casting."""
    x, y, yaw = pose
    dx, dy = world_xy[0] - x, world_xy[1] - y
    base = np.array([math.cos(yaw) * dx + math.sin(yaw) * dy,
                     -math.sin(yaw) * dx + math.cos(yaw) * dy, 0.0])
    mount = render.camera_mount(camera)
    optical = mount.rotation_base_from_optical().T @ (base - np.array(mount.xyz))
    k = camera_intrinsics(width, height, camera).k
    return (k[0] * optical[0] / optical[2] + k[2], k[4] * optical[1] / optical[2] + k[5])


def pose_on_straight(track, arc):
    x, y = track.point_at(arc)
    return float(x), float(y), track.heading_at(arc)


def dash_middle_arc(track, look=Appearance()):
    periods = round(track.length_m / (look.dash_length_m + look.dash_gap_m))
    period = track.length_m / periods
    return period, period * look.dash_length_m / (look.dash_length_m + look.dash_gap_m) / 2


# --- camera placement ----------------------------------------------------------------------

def test_camera_mount_comes_from_spec():
    mount = render.camera_mount()
    assert mount.xyz == (spec.CAMERA.mount_x_m, spec.CAMERA.mount_y_m, spec.CAMERA.mount_z_m)
    tilt = spec.CAMERA.tilt_rad
    expected = np.array([[0, -math.sin(tilt), math.cos(tilt)],
                         [-1, 0, 0],
                         [0, -math.cos(tilt), -math.sin(tilt)]])
    # Optical x (right) is base -y; optical z (forward) points ahead and down by the tilt,
    # optical y (image down) points down and slightly back.
    np.testing.assert_allclose(mount.rotation_base_from_optical(), expected, atol=1e-12)


def test_optical_axis_meets_the_floor_where_trigonometry_says():
    points = render.ground_points(641, 481)  # odd size: a pixel sits on the optical axis
    ahead = spec.CAMERA.mount_x_m + spec.CAMERA.mount_z_m / math.tan(spec.CAMERA.tilt_rad)
    np.testing.assert_allclose(points[240, 320], [ahead, 0.0], atol=1e-5)
    # The top rows look above the horizon, the bottom row at the floor near the car.
    assert np.all(points[0] == render.NOWHERE_M)
    assert 0.1 < points[-1, 320, 0] < ahead


# --- frames --------------------------------------------------------------------------------

@pytest.mark.parametrize('width, height', [(160, 120), (640, 480), (320, 240)])
def test_frame_shape_and_type(texture, loop, width, height):
    frame = CameraRenderer(texture, width, height).render(*pose_on_straight(loop, 3.0))
    assert frame.shape == (height, width, 3) and frame.dtype == np.uint8
    assert frame.flags.c_contiguous


def test_render_into_a_given_buffer(texture, loop):
    renderer = CameraRenderer(texture, 160, 120)
    buffer = np.zeros((120, 160, 3), np.uint8)
    assert renderer.render(*pose_on_straight(loop, 3.0), out=buffer) is buffer
    assert buffer.any()
    with pytest.raises(ValueError, match='out must be'):
        renderer.render(0.0, 0.0, 0.0, out=np.zeros((120, 160), np.uint8))


def is_yellow(pixel):
    b, g, r = (int(c) for c in pixel)
    return r > 150 and g > 120 and b < 100


def is_white(pixel):
    channels = [int(c) for c in pixel]
    return min(channels) > 160 and max(channels) - min(channels) < 30


def is_dark(pixel):
    return max(int(c) for c in pixel) < 70


@pytest.mark.parametrize('width, height', [(160, 120), (640, 480)])
def test_mat_colours_where_the_mat_is(texture, loop, width, height):
    look = texture.appearance
    period, middle = dash_middle_arc(loop)
    # Car on the centre line, a dash centre 0.8 m ahead of base_link, on the first straight.
    pose = pose_on_straight(loop, 4 * period + middle - 0.8)
    frame = CameraRenderer(texture, width, height).render(*pose)
    heading = pose[2]
    ahead = np.array([math.cos(heading), math.sin(heading)])
    left = np.array([-math.sin(heading), math.cos(heading)])
    origin = np.array(pose[:2])
    half = loop.width_m / 2

    def pixel_at(forward, lateral):
        u, v = project(origin + forward * ahead + lateral * left, pose, width, height)
        column, row = int(round(u)), int(round(v))
        assert 0 <= column < width and 0 <= row < height, 'point out of view'
        return frame[row, column]

    assert is_yellow(pixel_at(0.8, 0.0)), pixel_at(0.8, 0.0)
    # The dash one period further on, and the gap between them (road coloured).
    assert is_yellow(pixel_at(0.8 + period, 0.0)), pixel_at(0.8 + period, 0.0)
    assert is_dark(pixel_at(0.8 + period / 2, 0.0)), pixel_at(0.8 + period / 2, 0.0)
    for side in (1, -1):
        stripe = side * (half - look.border_width_m / 2)
        assert is_white(pixel_at(1.2, stripe)), pixel_at(1.2, stripe)
        assert is_dark(pixel_at(1.0, side * half / 2)), pixel_at(1.0, side * half / 2)
        # Beyond the borders the floor.
        np.testing.assert_allclose(pixel_at(2.5, side * (half + 0.3)), look.floor, atol=3)
    # Above the horizon the wall.
    np.testing.assert_allclose(frame[0, width // 2], look.wall, atol=1)


def test_turning_the_car_moves_the_centre_line(texture, loop):
    pose = pose_on_straight(loop, 3.0)
    renderer = CameraRenderer(texture, 160, 120)
    straight = renderer.render(*pose).copy()
    turned_left = renderer.render(pose[0], pose[1], pose[2] + 0.3)

    def yellow_column(frame):
        mask = np.array([[is_yellow(p) for p in row] for row in frame[60:]])
        return np.nonzero(mask)[1].mean()

    # Aiming left puts the track (and its centre line) to the right of the image.
    assert yellow_column(turned_left) > yellow_column(straight) + 10


def test_plain_frames_are_deterministic(texture, loop):
    pose = pose_on_straight(loop, 3.0)
    a = CameraRenderer(texture, 160, 120).render(*pose)
    b = CameraRenderer(texture, 160, 120).render(*pose)
    np.testing.assert_array_equal(a, b)


def test_randomised_frames_repeat_with_the_seed(texture, loop):
    pose = pose_on_straight(loop, 3.0)

    def frames(seed):
        renderer = CameraRenderer(texture, 160, 120, effects=FrameEffects(), seed=seed)
        return [renderer.render(*pose).copy() for _ in range(3)]

    first, again, other = frames(7), frames(7), frames(8)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], first[1])  # each frame draws new light and noise
    assert not np.array_equal(first[0], other[0])
    plain = CameraRenderer(texture, 160, 120).render(*pose)
    assert 1.0 < np.abs(first[0].astype(int) - plain).mean() < 60.0


def test_random_appearance_is_seeded_and_plausible():
    a = render.random_appearance(np.random.default_rng(3))
    b = render.random_appearance(np.random.default_rng(3))
    c = render.random_appearance(np.random.default_rng(4))
    assert a == b and a != c
    for look in (a, c):
        assert max(look.road) < min(look.border)  # dark road, light borders
        assert look.centre_line[2] > look.centre_line[0]  # still yellow: red over blue


def test_randomised_texture_renders(loop):
    look = render.random_appearance(np.random.default_rng(5))
    texture = GroundTexture(loop, look, metres_per_px=0.02, seed=5)
    frame = CameraRenderer(texture, 160, 120).render(*pose_on_straight(loop, 3.0))
    np.testing.assert_allclose(frame[0, 80], look.wall, atol=1)


def test_wide_angle_lens_sees_more_and_bends_the_horizon(texture, loop):
    wide = replace(spec.CAMERA, wide_angle_k1=-0.05, horizontal_fov_rad=2.0)
    rays, valid = render.pixel_rays(160, 120, wide)
    assert valid.mean() > 0.95
    np.testing.assert_allclose(np.linalg.norm(rays[valid], axis=1), 1.0, atol=1e-9)
    # The horizontal field of view is wider than the pinhole's.
    edge_angle = math.atan2(-rays[60, 0, 0], rays[60, 0, 2])
    assert abs(edge_angle) > spec.CAMERA.horizontal_fov_rad / 2
    points = render.ground_points(160, 120, wide)
    on_floor = points[..., 0] < render.NOWHERE_M
    top_floor_row = np.argmax(on_floor, axis=0)
    # Straight horizon for a pinhole; a fisheye shows it curved (higher in the middle).
    assert top_floor_row[80] < top_floor_row[5]
    frame = CameraRenderer(texture, 160, 120, wide).render(*pose_on_straight(loop, 3.0))
    assert frame.shape == (120, 160, 3)


def test_overhead_view_shows_car_and_path(texture, loop):
    pose = pose_on_straight(loop, 3.0)
    path = loop.point_at(np.linspace(0, 3.0, 30))
    image = render.render_overhead(texture, 600, path=path, car_pose=pose)
    assert max(image.shape[:2]) == 600 and image.dtype == np.uint8
    scale = 600 / max(texture.levels[0].shape[:2])
    nose = np.array(pose[:2]) + 0.1 * np.array([math.cos(pose[2]), math.sin(pose[2])])
    u, v = (texture.world_to_pixel(nose[None])[0] + 0.5) * scale - 0.5
    b, g, r = image[int(round(v)), int(round(u))]
    assert b > 150 and r < 100  # the blue car body


def test_sample_frames_command(tmp_path, capsys):
    assert render.main(['--track', 'loop', '--output', str(tmp_path / 'frame')]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ['frame_loop_160x120.png', 'frame_loop_640x480.png',
                       'frame_loop_overhead.png']
    assert 'ms/frame' in capsys.readouterr().out


def test_bad_texture_resolution(loop):
    with pytest.raises(ValueError, match='metres_per_px'):
        GroundTexture(loop, metres_per_px=0.0)


def test_clockwise_route_with_swapped_borders_renders_the_same_mat(loop):
    """Outside files may list the loop clockwise and call either border 'inner'."""
    from deepracer_nodes.sim.track import Track

    swapped = Track(loop.waypoints[::-1], loop.outer[::-1], loop.inner[::-1])
    look = Appearance(grain=0.0, start_line=False)
    a = GroundTexture(loop, look, metres_per_px=0.02).levels[0]
    swapped_texture = GroundTexture(swapped, look, metres_per_px=0.02)
    b = swapped_texture.levels[0]
    # Same road, borders and floor; only the dash phase may differ.
    differing = (np.abs(a.astype(int) - b).max(axis=2) > 40).mean()
    assert differing < 0.01
    infield = swapped_texture.world_to_pixel(np.array([[3.0, 2.0]]))[0].round().astype(int)
    np.testing.assert_array_equal(b[infield[1], infield[0]], look.floor)
