"""Track geometry: DeepRacer route files and every query the reward parameters need.

A route is what the DeepRacer simulation application ships for each track: a NumPy array
of shape (N, 6) holding, per waypoint, the centre line (x, y), the inner border (x, y) and
the outer border (x, y) in metres, closed when the first row repeats as the last.

A Track keeps the loop WITHOUT the repeated closing row: waypoint i joins waypoint
(i + 1) % N. Every query is vectorised over the segments so a car pose costs tens of
microseconds. The road is the region between the two border lines, the white borders
included (REFERENCE.md); a wheel is on the track when its contact point is on the road.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from deepracer_nodes.core import spec

# Limits on outside route files: wide enough for every published DeepRacer track
# (0.7-1.1 m wide, 16-60 m long, ~60-250 waypoints), tight enough to refuse nonsense.
MIN_WAYPOINTS = 8
MAX_WAYPOINTS = 20_000
MIN_WIDTH_M = 0.2
MAX_WIDTH_M = 5.0
MIN_LENGTH_M = 2.0
MAX_LENGTH_M = 2_000.0
# Two centre points closer than this are the same point (duplicates are dropped).
SAME_POINT_M = 1e-6
# An open route is closed by joining its ends when the gap is at most this many times
# the typical waypoint spacing; a longer gap means the file is not a loop.
CLOSING_GAP_FACTOR = 4.0
# A contact point this close to a border line counts as on the border (borders are track).
ON_BORDER_TOLERANCE_M = 1e-6


@dataclass(frozen=True)
class TrackPosition:
    """Where a point lies relative to the centre line (the geometry of one query).

    segment: index i of the closest centre segment, from waypoint i to (i + 1) % N.
    arc_length_m: distance along the centre line from waypoint 0 to the closest point.
    distance_from_center_m: Euclidean distance to the centre line.
    is_left_of_center: the point lies to the left of the centre line (driving direction).
    closest_point: (x, y) of the closest point on the centre line.
    track_heading_rad: direction of the centre line there, radians in (-pi, pi].
    """

    segment: int
    arc_length_m: float
    distance_from_center_m: float
    is_left_of_center: bool
    closest_point: tuple[float, float]
    track_heading_rad: float

    def closest_waypoints(self, waypoint_count: int) -> tuple[int, int]:
        """DeepRacer's [previous, next] waypoint indices around the closest point."""
        return self.segment, (self.segment + 1) % waypoint_count


class Track:
    """A closed track: centre line and both borders, with fast geometry queries.

    centre, inner, outer: arrays (N, 2) in metres, one row per waypoint, the loop NOT
    repeated at the end. Use route_from_array / load_route for outside data: this
    constructor trusts its input and only checks shapes.
    """

    def __init__(self, centre: np.ndarray, inner: np.ndarray, outer: np.ndarray,
                 name: str = 'track') -> None:
        centre, inner, outer = (np.array(a, dtype=np.float64) for a in (centre, inner, outer))
        if not (centre.ndim == 2 and centre.shape[1] == 2
                and centre.shape == inner.shape == outer.shape):
            raise ValueError('centre, inner and outer must all have shape (N, 2); got '
                             f'{centre.shape}, {inner.shape}, {outer.shape}')
        self.name = name
        self.waypoints = centre
        self.inner = inner
        self.outer = outer
        for array in (self.waypoints, self.inner, self.outer):
            array.setflags(write=False)
        self._seg_start = centre
        self._seg_vector = np.roll(centre, -1, axis=0) - centre
        self._seg_length = np.hypot(self._seg_vector[:, 0], self._seg_vector[:, 1])
        if np.any(self._seg_length < SAME_POINT_M):
            raise ValueError('centre line has repeated consecutive waypoints')
        self._seg_length_sq = self._seg_length ** 2
        self._seg_heading = np.arctan2(self._seg_vector[:, 1], self._seg_vector[:, 0])
        # Arc length at each waypoint, plus the total at the end (index N).
        self._arc = np.concatenate(([0.0], np.cumsum(self._seg_length)))
        self.length_m = float(self._arc[-1])
        widths = np.hypot(*(outer - inner).T)
        # DeepRacer hands reward functions one width per track.
        self.width_m = float(np.median(widths))
        self._border_start, self._border_end = _ring_edges(inner, outer)

    @property
    def waypoint_count(self) -> int:
        return len(self.waypoints)

    @property
    def waypoint_arc_lengths(self) -> np.ndarray:
        """Arc length (m) of each waypoint from waypoint 0, shape (N,)."""
        return self._arc[:-1]

    def __repr__(self) -> str:
        return (f'Track({self.name!r}, {self.waypoint_count} waypoints, '
                f'{self.length_m:.2f} m long, {self.width_m:.3f} m wide)')

    # --- queries -------------------------------------------------------------------------

    def locate(self, x: float, y: float) -> TrackPosition:
        """Project a point onto the centre line (closest point over all segments)."""
        dx = x - self._seg_start[:, 0]
        dy = y - self._seg_start[:, 1]
        t = (dx * self._seg_vector[:, 0] + dy * self._seg_vector[:, 1]) / self._seg_length_sq
        np.clip(t, 0.0, 1.0, out=t)
        ex = dx - t * self._seg_vector[:, 0]
        ey = dy - t * self._seg_vector[:, 1]
        i = int(np.argmin(ex * ex + ey * ey))
        ti = float(t[i])
        vx, vy = (float(v) for v in self._seg_vector[i])
        cross = vx * float(dy[i]) - vy * float(dx[i])
        return TrackPosition(
            segment=i,
            arc_length_m=float(self._arc[i] + ti * self._seg_length[i]),
            distance_from_center_m=math.hypot(float(ex[i]), float(ey[i])),
            is_left_of_center=bool(cross > 0.0),
            closest_point=(float(self._seg_start[i, 0] + ti * vx),
                           float(self._seg_start[i, 1] + ti * vy)),
            track_heading_rad=float(self._seg_heading[i]))

    def points_on_track(self, points: np.ndarray) -> np.ndarray:
        """Which points (K, 2) lie on the road, borders included; bool array (K,).

        Even-odd ray casting over the edges of both border rings: a point is on the road
        when it is inside exactly one ring, whichever of the two is the outer one.
        """
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        px = points[:, 0:1]
        py = points[:, 1:2]
        ax, ay = self._border_start[:, 0], self._border_start[:, 1]
        bx, by = self._border_end[:, 0], self._border_end[:, 1]
        straddles = (ay > py) != (by > py)
        with np.errstate(divide='ignore', invalid='ignore'):
            x_cross = ax + (py - ay) * (bx - ax) / (by - ay)
        crossings = np.count_nonzero(straddles & (px < x_cross), axis=1)
        inside = (crossings % 2) == 1
        if not inside.all():
            outside = ~inside
            inside[outside] = self._border_distance(points[outside]) <= ON_BORDER_TOLERANCE_M
        return inside

    def _border_distance(self, points: np.ndarray) -> np.ndarray:
        """Distance (K,) from each point to the nearest border edge."""
        a = self._border_start[None]
        ab = (self._border_end - self._border_start)[None]
        ap = points[:, None, :] - a
        denom = np.maximum(np.sum(ab * ab, axis=2), 1e-18)
        t = np.clip(np.sum(ap * ab, axis=2) / denom, 0.0, 1.0)
        error = ap - t[..., None] * ab
        return np.sqrt(np.min(np.sum(error * error, axis=2), axis=1))

    def point_at(self, arc_length_m: float | np.ndarray) -> np.ndarray:
        """Centre line point(s) at arc length(s), wrapped to the loop; shape (2,) or (K, 2)."""
        s = np.mod(np.asarray(arc_length_m, dtype=np.float64), self.length_m)
        i = np.clip(np.searchsorted(self._arc, s, side='right') - 1, 0, self.waypoint_count - 1)
        t = (s - self._arc[i]) / self._seg_length[i]
        return self._seg_start[i] + t[..., None] * self._seg_vector[i]

    def heading_at(self, arc_length_m: float) -> float:
        """Direction of the centre line (rad) at an arc length, blended across waypoints
        so a car reset there is not aimed along a chord."""
        s = float(np.mod(arc_length_m, self.length_m))
        i = int(np.clip(np.searchsorted(self._arc, s, side='right') - 1,
                        0, self.waypoint_count - 1))
        t = (s - self._arc[i]) / self._seg_length[i]
        # Interpolate between the mean directions at both ends of the segment.
        here, prev, nxt = (self._seg_heading[j % self.waypoint_count] for j in (i, i - 1, i + 1))
        start = here + _wrap(prev - here) / 2.0
        end = here + _wrap(nxt - here) / 2.0
        return float(_wrap(start + t * _wrap(end - start)))

    def curvature_at_waypoints(self) -> np.ndarray:
        """Signed curvature (1/m, positive turning left) at each waypoint, shape (N,)."""
        turn = _wrap(self._seg_heading - np.roll(self._seg_heading, 1))
        mean_length = (self._seg_length + np.roll(self._seg_length, 1)) / 2.0
        return turn / mean_length

    def wheel_points(self, x: float, y: float, yaw: float,
                     car: spec.CarGeometry = spec.CAR) -> np.ndarray:
        """Ground contact points (4, 2) of the wheels for a base_link pose (rear axle
        centre): rear left, rear right, front left, front right."""
        c, s = math.cos(yaw), math.sin(yaw)
        half = car.track_m / 2.0
        local = np.array([[0.0, half], [0.0, -half],
                          [car.wheelbase_m, half], [car.wheelbase_m, -half]])
        return np.column_stack((x + c * local[:, 0] - s * local[:, 1],
                                y + s * local[:, 0] + c * local[:, 1]))

    # --- conversions ---------------------------------------------------------------------

    def reversed(self) -> Track:
        """The same loop driven the other way (DeepRacer's is_reversed): waypoint order
        flipped, so progress, left/right and headings follow the new direction."""
        order = np.roll(np.arange(self.waypoint_count)[::-1], 1)  # keep waypoint 0 first
        return Track(self.waypoints[order], self.inner[order], self.outer[order],
                     name=f'{self.name}_reversed')

    def to_route_array(self) -> np.ndarray:
        """The DeepRacer route array (N + 1, 6): centre, inner, outer, closing row repeated."""
        rows = np.hstack((self.waypoints, self.inner, self.outer))
        return np.vstack((rows, rows[:1]))

    def save_route(self, path: str | os.PathLike) -> None:
        """Write the track as a DeepRacer route .npy file."""
        np.save(path, self.to_route_array(), allow_pickle=False)


def _wrap(angle):
    """Angle(s) wrapped to (-pi, pi]."""
    return -np.mod(-np.asarray(angle) + math.pi, 2.0 * math.pi) + math.pi


def _ring_edges(*rings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end points of the edges of closed rings, stacked: two arrays (E, 2)."""
    starts = np.vstack(rings)
    ends = np.vstack([np.roll(r, -1, axis=0) for r in rings])
    return starts, ends


# --- route files (outside input: every check raises ValueError with the reason) ---------

def route_from_array(route: np.ndarray, name: str = 'route') -> Track:
    """Build a Track from a DeepRacer route array (N, 6), checking it thoroughly.

    Accepts closed routes (last row repeats the first) and open ones whose ends are
    about one waypoint spacing apart. Repeated consecutive waypoints are dropped.
    Raises ValueError saying what is wrong otherwise.
    """
    array = np.asarray(route)
    if array.dtype.kind not in 'iuf':
        raise ValueError(f'route {name!r}: values must be real numbers, got dtype {array.dtype}')
    if array.ndim != 2 or array.shape[1] != 6:
        raise ValueError(f'route {name!r}: shape must be (N, 6) (centre, inner, outer x/y), '
                         f'got {array.shape}')
    if array.shape[0] > MAX_WAYPOINTS + 1:
        raise ValueError(f'route {name!r}: {array.shape[0]} waypoints, at most '
                         f'{MAX_WAYPOINTS} allowed')
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        bad = int(np.argmax(~np.all(np.isfinite(array), axis=1)))
        raise ValueError(f'route {name!r}: row {bad} holds a NaN or infinite value')
    if np.max(np.abs(array), initial=0.0) > 1e5:
        raise ValueError(f'route {name!r}: coordinates beyond 100 km; not metres?')
    array = _drop_repeated_rows(array)
    if len(array) < MIN_WAYPOINTS:
        raise ValueError(f'route {name!r}: {len(array)} distinct waypoints, at least '
                         f'{MIN_WAYPOINTS} needed')
    centre, inner, outer = array[:, 0:2], array[:, 2:4], array[:, 4:6]
    _check_closable(centre, name)
    length = float(np.sum(np.hypot(*(np.roll(centre, -1, axis=0) - centre).T)))
    if not MIN_LENGTH_M <= length <= MAX_LENGTH_M:
        raise ValueError(f'route {name!r}: centre line is {length:.2f} m long, expected '
                         f'{MIN_LENGTH_M:g}..{MAX_LENGTH_M:g} m')
    _check_widths(centre, inner, outer, name)
    return Track(centre, inner, outer, name=name)


def _drop_repeated_rows(array: np.ndarray) -> np.ndarray:
    """Drop rows whose centre point repeats the previous one, and the closing row."""
    step = np.hypot(*np.diff(array[:, 0:2], axis=0).T)
    keep = np.concatenate(([True], step > SAME_POINT_M))
    array = array[keep]
    if len(array) > 1 and math.dist(array[0, 0:2], array[-1, 0:2]) <= SAME_POINT_M:
        array = array[:-1]
    return array


def _check_closable(centre: np.ndarray, name: str) -> None:
    spacing = np.hypot(*np.diff(centre, axis=0).T)
    gap = math.dist(centre[0], centre[-1])
    typical = float(np.median(spacing))
    if gap > CLOSING_GAP_FACTOR * max(typical, float(np.max(spacing)) / 2.0):
        raise ValueError(f'route {name!r}: not a closed loop: the last centre point is '
                         f'{gap:.3f} m from the first while waypoints are ~{typical:.3f} m apart')


def _check_widths(centre: np.ndarray, inner: np.ndarray, outer: np.ndarray, name: str) -> None:
    widths = np.hypot(*(outer - inner).T)
    narrowest, widest = int(np.argmin(widths)), int(np.argmax(widths))
    if widths[narrowest] < MIN_WIDTH_M:
        raise ValueError(f'route {name!r}: track is {widths[narrowest]:.3f} m wide at waypoint '
                         f'{narrowest}, at least {MIN_WIDTH_M} m expected')
    if widths[widest] > MAX_WIDTH_M:
        raise ValueError(f'route {name!r}: track is {widths[widest]:.3f} m wide at waypoint '
                         f'{widest}, at most {MAX_WIDTH_M} m expected')
    # The centre point must lie between the borders (near the middle of the cross-section).
    offset = np.hypot(*(centre - (inner + outer) / 2.0).T)
    worst = int(np.argmax(offset / widths))
    if offset[worst] > widths[worst] / 2.0:
        raise ValueError(f'route {name!r}: centre waypoint {worst} lies outside the road '
                         f'({offset[worst]:.3f} m from the middle of a '
                         f'{widths[worst]:.3f} m wide track)')


def load_route(path: str | os.PathLike, name: str | None = None) -> Track:
    """Load and check a DeepRacer route .npy file; ValueError explains any problem."""
    path = os.fspath(path)
    name = name or os.path.splitext(os.path.basename(path))[0]
    try:
        # Memory-map first so a header announcing a huge array costs nothing to refuse.
        array = np.load(path, mmap_mode='r', allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f'route file {path!r} does not exist') from None
    except Exception as error:  # noqa: BLE001 - numpy's header parser raises many types on
        # hostile input (ValueError, SyntaxError, tokenize.TokenError, ...): all mean "not a
        # valid .npy array", and a parser of outside input must say so, not crash.
        raise ValueError(f'route file {path!r} is not a valid .npy array: {error}') from None
    if not isinstance(array, np.ndarray):
        raise ValueError(f'route file {path!r} holds an archive, not a single array')
    if array.ndim != 2 or array.shape[0] > MAX_WAYPOINTS + 1:
        raise ValueError(f'route {name!r}: shape must be (N, 6) with N <= {MAX_WAYPOINTS}, '
                         f'got {array.shape}')
    try:
        loaded = np.array(array)
    except (OSError, ValueError) as error:  # truncated data behind a valid header
        raise ValueError(f'route file {path!r} is truncated or unreadable: {error}') from None
    return route_from_array(loaded, name=name)
