"""Tracks of our own making, generated in code from smooth closed curves.

Each centre line is a periodic cubic B-spline through a hand-placed control polygon
(metres), so it is C2-smooth and closed by construction. It is resampled at an even
spacing and offset by half the track width along its normals to give the borders.
Dimensions follow the real DeepRacer mats: about 1.07 m between the outer edges of the
white borders, 16-60 m of centre line, no bend tighter than the car can drive and the
inner border can follow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from deepracer_nodes.core import spec
from deepracer_nodes.sim.track import Track

# 42 in between the outer edges of the white borders, as on the real mats.
TRACK_WIDTH_M = 1.066
WAYPOINT_SPACING_M = 0.2
# Tightest bend allowed on the centre line: the inner border (half a width inside)
# must keep a real radius, and the car must turn it well within its steering limit.
MIN_CENTRE_RADIUS_M = TRACK_WIDTH_M / 2.0 + 0.2
# Parts of the loop further apart along the track than this must not come close in space.
SEPARATE_PARTS_ARC_M = 4.0
# Clear floor between the borders of two separate parts of the loop.
MIN_CLEARANCE_M = 0.5


@dataclass(frozen=True)
class TrackDesign:
    """A bundled track: its control polygon (metres, anticlockwise) and what it trains."""

    name: str
    description: str
    control_points: tuple[tuple[float, float], ...]


DESIGNS: dict[str, TrackDesign] = {design.name: design for design in (
    TrackDesign(
        name='loop',
        description='Easy: a wide oval, two long straights and gentle constant bends.',
        control_points=((0, 0), (3, 0), (6, 0), (8, 0.3), (9, 2), (8, 3.7), (6, 4), (3, 4),
                        (0, 4), (-2, 3.7), (-3, 2), (-2, 0.3))),
    TrackDesign(
        name='hairpin',
        description='Medium: a long straight into a tight 180 degree hairpin, then a '
                    'right-hand kink.',
        control_points=((-2, 0), (1, 0), (4, 0), (7, 0), (9, 0), (10.4, 0.2), (11.1, 1.25),
                        (10.4, 2.3), (9, 2.5), (7, 2.5), (5.5, 2.8), (4.8, 4), (5, 6),
                        (4, 7.2), (2, 7.5), (0, 7.5), (-2, 7.2), (-3.2, 6), (-3.4, 3),
                        (-3.1, 0.8))),
    TrackDesign(
        name='s_bends',
        description='Hard: a chicane of alternating S-bends between two straights.',
        control_points=((0, 0), (3, 0), (6, 0), (9, 0), (11, 0.5), (12, 2), (11, 3.5),
                        (9.5, 3.5), (8, 2.2), (6.5, 3.5), (5, 4.8), (3.5, 3.5), (2, 2.2),
                        (0.5, 3.5), (-1, 4.5), (-2.5, 3.5), (-3, 1.8), (-2, 0.3))),
)}


def track_names() -> list[str]:
    """Names of the bundled tracks, easiest first."""
    return list(DESIGNS)


def make_track(name: str) -> Track:
    """Generate a bundled track by name ('loop', 'hairpin', 's_bends')."""
    if name not in DESIGNS:
        raise ValueError(f'unknown track {name!r}; bundled tracks: {", ".join(DESIGNS)}')
    return track_from_control_points(DESIGNS[name].control_points, name=name)


def track_from_control_points(control_points, name: str = 'track',
                              width_m: float = TRACK_WIDTH_M,
                              spacing_m: float = WAYPOINT_SPACING_M) -> Track:
    """Build a Track from a closed control polygon (K, 2) in metres.

    The centre line is the periodic cubic B-spline of the polygon. Raises ValueError when
    it bends tighter than MIN_CENTRE_RADIUS_M or comes back too close to itself.
    """
    points = np.asarray(control_points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) < 4:
        raise ValueError('control points must have shape (K, 2) with K >= 4')
    dense, tangent, curvature = _sample_bspline(points, samples_per_span=400)
    if _signed_area(dense) < 0:  # anticlockwise, so the inner border is on the left
        return track_from_control_points(points[::-1], name, width_m, spacing_m)
    tightest = 1.0 / float(np.max(np.abs(curvature)))
    if tightest < max(MIN_CENTRE_RADIUS_M, minimum_turning_radius_m()):
        raise ValueError(f'track {name!r} bends to a {tightest:.3f} m radius, tighter than '
                         f'{MIN_CENTRE_RADIUS_M:.3f} m')
    arc = np.concatenate(([0.0], np.cumsum(np.hypot(*np.diff(dense, axis=0).T))))
    closing = math.dist(dense[-1], dense[0])
    length = arc[-1] + closing
    count = max(8, int(round(length / spacing_m)))
    # Even arc spacing; the dense samples are fine enough for linear interpolation.
    targets = np.arange(count) * (length / count)
    dense_closed = np.vstack((dense, dense[:1]))
    tangent_closed = np.vstack((tangent, tangent[:1]))
    arc_closed = np.append(arc, length)
    centre = np.column_stack([np.interp(targets, arc_closed, dense_closed[:, k])
                              for k in range(2)])
    direction = np.column_stack([np.interp(targets, arc_closed, tangent_closed[:, k])
                                 for k in range(2)])
    direction /= np.hypot(*direction.T)[:, None]
    left = np.column_stack((-direction[:, 1], direction[:, 0]))
    inner = centre + left * (width_m / 2.0)
    outer = centre - left * (width_m / 2.0)
    _check_clearance(centre, length, width_m, name)
    return Track(centre, inner, outer, name=name)


def minimum_turning_radius_m(car: spec.CarGeometry = spec.CAR) -> float:
    """Radius of the rear axle's circle at full steering lock."""
    return car.wheelbase_m / math.tan(car.max_steering_rad)


def _sample_bspline(points: np.ndarray, samples_per_span: int):
    """Points, unit tangents and signed curvature of the periodic uniform cubic B-spline."""
    u = np.linspace(0.0, 1.0, samples_per_span, endpoint=False)
    basis = np.stack([(1 - u) ** 3, 3 * u ** 3 - 6 * u ** 2 + 4,
                      -3 * u ** 3 + 3 * u ** 2 + 3 * u + 1, u ** 3], axis=1) / 6.0
    first = np.stack([-(1 - u) ** 2, 3 * u ** 2 - 4 * u,
                      -3 * u ** 2 + 2 * u + 1, u ** 2], axis=1) / 2.0
    second = np.stack([1 - u, 3 * u - 2, 1 - 3 * u, u], axis=1)
    count = len(points)
    spans = [points[[(j - 1) % count, j, (j + 1) % count, (j + 2) % count]]
             for j in range(count)]
    position = np.vstack([basis @ span for span in spans])
    velocity = np.vstack([first @ span for span in spans])
    acceleration = np.vstack([second @ span for span in spans])
    speed = np.hypot(*velocity.T)
    if np.any(speed < 1e-9):
        raise ValueError('control polygon has a cusp (repeated control points)')
    cross = velocity[:, 0] * acceleration[:, 1] - velocity[:, 1] * acceleration[:, 0]
    return position, velocity / speed[:, None], cross / speed ** 3


def _signed_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _check_clearance(centre: np.ndarray, length: float, width_m: float, name: str) -> None:
    """Separate parts of the loop must leave floor between their borders."""
    arc = np.arange(len(centre)) * (length / len(centre))
    along = np.abs(arc[:, None] - arc[None, :])
    along = np.minimum(along, length - along)
    apart = np.hypot(centre[:, None, 0] - centre[None, :, 0],
                     centre[:, None, 1] - centre[None, :, 1])
    separate = along > SEPARATE_PARTS_ARC_M
    if np.any(separate):
        closest = float(np.min(apart[separate]))
        if closest < width_m + MIN_CLEARANCE_M:
            raise ValueError(f'track {name!r} passes within {closest:.2f} m of itself '
                             f'(centre to centre), {width_m + MIN_CLEARANCE_M:.2f} m needed')
