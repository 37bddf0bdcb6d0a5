"""Track geometry on hand-computed poses, bundled tracks, and hostile route files."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from deepracer_nodes.core import spec
from deepracer_nodes.sim import track_library
from deepracer_nodes.sim.track import Track, load_route, route_from_array


def rectangle_route(width: float = 1.0, spacing: float = 0.5) -> np.ndarray:
    """Closed (N+1, 6) route: centre on the rectangle (0,0)-(10,6), anticlockwise,
    inner border width/2 inside, outer width/2 outside (sharp mitred corners)."""
    corners = np.array([[0, 0], [10, 0], [10, 6], [0, 6]], dtype=float)
    diagonal = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=float) * width / 2
    rows = []
    for k in range(4):
        a, b = corners[k], corners[(k + 1) % 4]
        direction = (b - a) / np.linalg.norm(b - a)
        left = np.array([-direction[1], direction[0]]) * width / 2
        steps = int(round(np.linalg.norm(b - a) / spacing))
        for t in np.arange(steps) / steps:
            centre = a + t * (b - a)
            inward = diagonal[k] if t == 0 else left  # corners offset along the diagonal
            rows.append(np.concatenate((centre, centre + inward, centre - inward)))
    rows.append(rows[0])
    return np.array(rows)


@pytest.fixture(scope='module')
def rectangle() -> Track:
    return route_from_array(rectangle_route(), name='rectangle')


# --- hand-computed geometry ----------------------------------------------------------------

def test_rectangle_size(rectangle):
    assert rectangle.waypoint_count == 64
    assert rectangle.length_m == pytest.approx(32.0)
    assert rectangle.width_m == pytest.approx(1.0)


def test_locate_on_bottom_edge(rectangle):
    position = rectangle.locate(3.1, 0.2)
    assert position.arc_length_m == pytest.approx(3.1)
    assert position.distance_from_center_m == pytest.approx(0.2)
    assert position.is_left_of_center is True
    assert position.closest_point == pytest.approx((3.1, 0.0))
    assert position.track_heading_rad == pytest.approx(0.0)
    assert position.closest_waypoints(rectangle.waypoint_count) == (6, 7)


def test_locate_right_of_centre_on_top_edge(rectangle):
    # Top edge runs from (10, 6) to (0, 6): heading pi, so +y is on the right.
    position = rectangle.locate(4.0, 6.3)
    assert position.arc_length_m == pytest.approx(10 + 6 + 6.0)
    assert position.distance_from_center_m == pytest.approx(0.3)
    assert not position.is_left_of_center
    assert abs(position.track_heading_rad) == pytest.approx(math.pi)


def test_locate_just_before_the_start_line(rectangle):
    # Last segment runs down the left edge from (0, 0.5) to (0, 0).
    position = rectangle.locate(-0.1, 0.3)
    assert position.arc_length_m == pytest.approx(32.0 - 0.3)
    assert position.closest_waypoints(64) == (63, 0)
    assert not position.is_left_of_center  # west of a southbound line is its right


def test_points_on_track_borders_included(rectangle):
    points = np.array([
        [5.0, 0.0],     # on the centre line
        [5.0, 0.49],    # just inside the inner border
        [5.0, 0.5],     # exactly on the inner border: borders are track
        [5.0, -0.5],    # exactly on the outer border
        [5.0, 0.51],    # infield
        [5.0, -0.51],   # outside
        [5.0, 3.0],     # middle of the infield
        [10.45, 6.45],  # outer corner region, on the road
        [10.6, 6.6],    # beyond the outer corner
    ])
    expected = [True, True, True, True, False, False, False, True, False]
    assert rectangle.points_on_track(points).tolist() == expected


def test_wheel_points_follow_car_geometry(rectangle):
    wheels = rectangle.wheel_points(2.0, 0.0, math.pi / 2)
    half = spec.CAR.track_m / 2
    expected = [[2 - half, 0], [2 + half, 0],
                [2 - half, spec.CAR.wheelbase_m], [2 + half, spec.CAR.wheelbase_m]]
    np.testing.assert_allclose(wheels, expected, atol=1e-12)


def test_point_and_heading_at_arc_length(rectangle):
    np.testing.assert_allclose(rectangle.point_at(12.0), [10.0, 2.0])
    np.testing.assert_allclose(rectangle.point_at(32.0 + 3.0), [3.0, 0.0])  # wraps
    assert rectangle.heading_at(12.0) == pytest.approx(math.pi / 2)
    # At the corner waypoint the heading is the mean of both segments.
    assert rectangle.heading_at(10.0) == pytest.approx(math.pi / 4)


def test_reversed_track_measures_the_other_way(rectangle):
    backwards = rectangle.reversed()
    position = backwards.locate(3.0, 0.2)
    assert position.arc_length_m == pytest.approx(32.0 - 3.0)
    assert not position.is_left_of_center
    assert position.track_heading_rad == pytest.approx(math.pi)
    np.testing.assert_allclose(backwards.waypoints[0], rectangle.waypoints[0])


@settings(max_examples=200, deadline=None)
@given(x=st.floats(-2, 12), y=st.floats(-2, 8))
def test_locate_agrees_with_dense_sampling(rectangle, x, y):
    dense = rectangle.point_at(np.linspace(0, rectangle.length_m, 6401))
    brute = np.min(np.hypot(dense[:, 0] - x, dense[:, 1] - y))
    assert rectangle.locate(x, y).distance_from_center_m == pytest.approx(brute, abs=3e-3)


# --- bundled tracks ------------------------------------------------------------------------

@pytest.mark.parametrize('name', track_library.track_names())
def test_bundled_track_dimensions(name):
    track = track_library.make_track(name)
    assert 16.0 <= track.length_m <= 60.0
    assert track.width_m == pytest.approx(1.066, abs=0.01)
    tightest = 1.0 / np.max(np.abs(track.curvature_at_waypoints()))
    assert tightest >= track_library.minimum_turning_radius_m()
    assert tightest >= track.width_m / 2  # the inner border keeps a real radius
    # The whole centre line is on the road, the infield point off it.
    assert track.points_on_track(track.waypoints).all()


def test_bundled_tracks_differ_in_difficulty():
    tightest = {name: 1.0 / np.max(np.abs(track_library.make_track(name)
                                          .curvature_at_waypoints()))
                for name in track_library.track_names()}
    assert set(tightest) >= {'loop', 'hairpin', 's_bends'}
    assert tightest['loop'] > tightest['s_bends'] and tightest['loop'] > tightest['hairpin']


def test_unknown_track_name():
    with pytest.raises(ValueError, match='unknown track'):
        track_library.make_track('monaco')


def test_too_tight_design_is_refused():
    tiny_square = [(0, 0), (1, 0), (1, 1), (0, 1)]
    with pytest.raises(ValueError, match='radius'):
        track_library.track_from_control_points(tiny_square)


@pytest.mark.parametrize('name', track_library.track_names())
def test_route_file_round_trip(name, tmp_path):
    track = track_library.make_track(name)
    path = tmp_path / f'{name}.npy'
    track.save_route(path)
    raw = np.load(path)
    assert raw.shape == (track.waypoint_count + 1, 6)
    np.testing.assert_array_equal(raw[0], raw[-1])
    loaded = load_route(path)
    assert loaded.name == name
    np.testing.assert_array_equal(loaded.waypoints, track.waypoints)
    np.testing.assert_array_equal(loaded.inner, track.inner)
    np.testing.assert_array_equal(loaded.outer, track.outer)
    assert loaded.length_m == pytest.approx(track.length_m)


def test_open_route_with_small_gap_is_closed(rectangle):
    open_route = rectangle_route()[:-1]
    track = route_from_array(open_route)
    assert track.length_m == pytest.approx(32.0)


def test_repeated_waypoints_are_dropped():
    route = rectangle_route()
    doubled = np.insert(route, 5, route[5], axis=0)
    assert route_from_array(doubled).waypoint_count == 64


# --- hostile route data --------------------------------------------------------------------

def _with(route: np.ndarray, row: int, column: int, value: float) -> np.ndarray:
    route = route.copy()
    route[row, column] = value
    return route


@pytest.mark.parametrize('route, message', [
    (np.zeros((10, 4)), r'shape must be \(N, 6\)'),
    (np.zeros((10, 6, 1)), r'shape must be \(N, 6\)'),
    (np.zeros(6), r'shape must be \(N, 6\)'),
    (np.array([['a'] * 6] * 10), 'real numbers'),
    (np.ones((10, 6), dtype=complex), 'real numbers'),
    (np.ones((10, 6), dtype=bool), 'real numbers'),
    (_with(rectangle_route(), 7, 2, np.nan), 'row 7 holds a NaN'),
    (_with(rectangle_route(), 3, 5, np.inf), 'row 3 holds a NaN or infinite'),
    (rectangle_route()[:5], 'distinct waypoints'),
    (np.zeros((100, 6)), 'distinct waypoints'),
    (rectangle_route()[:40], 'not a closed loop'),
    (rectangle_route() * 1e6, 'beyond 100 km'),
    (rectangle_route(width=0.05), 'at least 0.2 m'),
    (rectangle_route(width=8.0), 'at most 5.0 m'),
    (rectangle_route(spacing=0.01) * 0.01, 'centre line is 0.32 m long'),
    (np.zeros((30_000, 6)), 'at most 20000'),
])
def test_bad_route_arrays_are_refused(route, message):
    with pytest.raises(ValueError, match=message):
        route_from_array(route)


def test_centre_outside_the_road_is_refused():
    route = rectangle_route()
    route[10, 0:2] += (0.0, 0.9)  # centre waypoint 10 moved past the inner border
    with pytest.raises(ValueError, match='centre waypoint 10 lies outside the road'):
        route_from_array(route)


def test_hostile_files_are_refused(tmp_path):
    cases = {
        'missing.npy': None,
        'empty.npy': b'',
        'garbage.npy': b'this is not numpy at all' * 10,
    }
    for file_name, content in cases.items():
        if content is not None:
            (tmp_path / file_name).write_bytes(content)
    pickled = tmp_path / 'pickled.npy'
    np.save(pickled, np.array([{'x': 1}], dtype=object), allow_pickle=True)
    archive = tmp_path / 'archive.npy'
    with open(archive, 'wb') as handle:
        np.savez(handle, route=rectangle_route())
    truncated = tmp_path / 'truncated.npy'
    np.save(truncated, rectangle_route())
    truncated.write_bytes(truncated.read_bytes()[:-100])
    huge_header = tmp_path / 'huge.npy'
    np.save(huge_header, np.zeros((2, 6)))
    header = huge_header.read_bytes().replace(b"(2, 6)", b"(9999999999, 6)".ljust(6))
    huge_header.write_bytes(header)
    for path in [*(tmp_path / name for name in cases), pickled, archive, truncated,
                 huge_header]:
        with pytest.raises(ValueError, match='route'):
            load_route(path)


@settings(max_examples=300, deadline=None)
@given(hnp.arrays(dtype=st.sampled_from([np.float64, np.float32, np.int32]),
                  shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=40)))
def test_fuzzed_arrays_give_a_track_or_value_error(array):
    try:
        track = route_from_array(array)
    except ValueError:
        return
    assert np.isfinite(track.length_m) and track.width_m > 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzzed_files_give_value_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp('fuzz') / 'route.npy'
    path.write_bytes(b'\x93NUMPY' + data if data[:1] == b'\x01' else data)
    with pytest.raises(ValueError):
        load_route(path)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-0.3, 0.3), min_size=65 * 6, max_size=65 * 6))
def test_jittered_real_routes_never_crash(jitter):
    route = rectangle_route() + np.reshape(jitter, (65, 6))
    try:
        track = route_from_array(route)
    except ValueError:
        return
    track.locate(5.0, 0.0)
    track.points_on_track(np.array([[5.0, 0.0], [5.0, 3.0]]))
