"""Random closed tracks for training and held-out evaluation.

A policy that only ever saw the three bundled tracks would learn them by heart; one
that is to drive real DeepRacer mats it never saw must see many shapes. Each random
track is a control polygon of one of three families, scaled to a random length and
turned into a Track by the bundled tracks' own B-spline builder, which refuses bends
tighter than the car and the inner border can take and parts of the loop that come
too close. A refused candidate is simply drawn again.

- blob: points at random angles and radii round a centre, stretched and rotated:
  smooth irregular loops with bends of every radius, some concave.
- circuit: the outline of a random polyomino with rows and columns of random sizes:
  long straights, right-angle corners and hairpins (the re:Invent-like shapes).
- chicane: a stretched oval whose one or both long sides wave: S-bends between
  straights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from deepracer_nodes.sim.track import Track
from deepracer_nodes.sim.track_library import MIN_CENTRE_RADIUS_M, track_from_control_points

FAMILIES = ('blob', 'circuit', 'chicane')
# A polygon refused at one length is tried again this much larger.
GROWTH_PER_RETRY = 1.12
# Floor left between the inner border of the tightest bend and the bend's centre.
MIN_INNER_BORDER_RADIUS_M = 0.08
# Imperfections of real route files (see _shrunk).
MAX_WIDTH_WANDER = 0.08
MAX_WAYPOINT_JITTER_M = 0.015


@dataclass(frozen=True)
class TrackRanges:
    """What random tracks may look like. DeepRacer's tracks are 16-60 m of centre line,
    0.66-1.07 m wide (narrow ones bend as tight as ~0.5 m), with waypoints every
    0.1-0.5 m; the ranges go a little beyond so none of it is a surprise."""

    length_m: tuple[float, float] = (16.0, 60.0)
    width_m: tuple[float, float] = (0.6, 1.2)
    waypoint_spacing_m: tuple[float, float] = (0.1, 0.5)
    max_attempts: int = 500

    def __post_init__(self) -> None:
        for name in ('length_m', 'width_m', 'waypoint_spacing_m'):
            low, high = getattr(self, name)
            if not 0.0 < low <= high:
                raise ValueError(f'{name} must be a range 0 < low <= high, got {(low, high)}')
        if self.max_attempts < 1:
            raise ValueError(f'max_attempts must be >= 1, got {self.max_attempts}')


def random_track(rng: np.random.Generator, ranges: TrackRanges = TrackRanges(),
                 name: str = 'random') -> Track:
    """A random closed track, driven in a random direction (seeded by rng).

    The family is drawn first and kept, so families that are refused more often are not
    under-represented. A polygon too tight at its drawn length is tried again larger,
    which makes bends near the tightest allowed radius common, as on real mats.
    The bundled tracks' builder refuses bends under MIN_CENTRE_RADIUS_M (made for a
    1.07 m wide track), so a narrower track is built larger (at 1/shrink of its size,
    width included, which keeps the builder's clearance checks meaningful) and scaled
    down: its bends get as tight as its width allows.
    Raises RuntimeError if no valid track was drawn in ranges.max_attempts tries (which
    only happens with ranges far outside DeepRacer's).
    """
    family = FAMILIES[int(rng.integers(len(FAMILIES)))]
    low, high = ranges.length_m
    for _ in range(ranges.max_attempts):
        polygon = _POLYGONS[family](rng)
        width = float(rng.uniform(*ranges.width_m))
        tightest_shrink = min(1.0, (width / 2.0 + MIN_INNER_BORDER_RADIUS_M)
                              / MIN_CENTRE_RADIUS_M)
        shrink = float(rng.uniform(tightest_shrink, 1.0))
        spacing = float(rng.uniform(*ranges.waypoint_spacing_m))
        # Short tracks are the common case on real mats (16-35 m): favour them.
        target = low + (high - low) * float(rng.uniform(0.0, 1.0)) ** 1.5
        while target <= high:
            try:
                large = track_from_control_points(
                    _place(polygon, target / shrink, rng), name=f'{name}_{family}',
                    width_m=width / shrink, spacing_m=spacing / shrink)
            except ValueError:
                target *= GROWTH_PER_RETRY
                continue
            track = _shrunk(large, shrink, width, rng)
            if low <= track.length_m <= high:
                return track.reversed() if rng.random() < 0.5 else track
            break
    raise RuntimeError(f'no valid random {family} track in {ranges.max_attempts} attempts')


def _shrunk(track: Track, factor: float, width_m: float, rng: np.random.Generator) -> Track:
    """The track scaled by factor, with borders about width_m apart.

    Real route files are not perfect offsets of a smooth curve: their width wanders
    along the track and their waypoints wobble by a centimetre or two. Both are drawn
    here (a smooth periodic width profile, up to +/-8 %, and a lateral jitter of the
    waypoints, up to 1.5 cm), so the network never relies on perfect lines.
    """
    count = track.waypoint_count
    across = track.inner - track.outer  # towards the inner (left) border
    across = across / np.hypot(*across.T)[:, None]
    phase = np.arange(count) * (2.0 * math.pi / count)
    wander = sum(rng.normal() * np.sin(k * phase + rng.uniform(0, 2 * math.pi))
                 for k in range(1, 7))
    wander = wander / max(float(np.max(np.abs(wander))), 1e-9)
    half_width = width_m / 2.0 * (1.0 + rng.uniform(0.0, MAX_WIDTH_WANDER) * wander)
    jitter = rng.normal(0.0, rng.uniform(0.0, MAX_WAYPOINT_JITTER_M), count)
    centre = track.waypoints * factor + across * jitter[:, None]
    return Track(centre, centre + across * half_width[:, None],
                 centre - across * half_width[:, None], name=track.name)


def _place(polygon: np.ndarray, target_length_m: float, rng: np.random.Generator) -> np.ndarray:
    """Scale a unit-size polygon to about the target centre length and rotate it."""
    perimeter = float(np.sum(np.hypot(*(np.roll(polygon, -1, axis=0) - polygon).T)))
    angle = rng.uniform(0.0, 2.0 * math.pi)
    rotation = np.array([[math.cos(angle), -math.sin(angle)],
                         [math.sin(angle), math.cos(angle)]])
    # The approximating B-spline runs inside its polygon, so aim a little long.
    return polygon * (1.05 * target_length_m / perimeter) @ rotation.T


def _blob(rng: np.random.Generator) -> np.ndarray:
    count = int(rng.integers(5, 13))
    # Jittered angles keep points in order round the centre (a simple polygon).
    angles = (np.arange(count) + rng.uniform(-0.35, 0.35, count)) * (2.0 * math.pi / count)
    radii = rng.uniform(0.45, 1.0, count)
    points = np.column_stack((radii * np.cos(angles), radii * np.sin(angles)))
    return points * np.array([rng.uniform(1.0, 2.2), 1.0])


def _circuit(rng: np.random.Generator) -> np.ndarray:
    """The outline of a random polyomino (a few grid cells joined by their sides), with
    columns and rows of random sizes: straights, right-angle corners and, where the
    outline turns back round a missing cell, hairpins."""
    while True:
        cells = _random_polyomino(rng, int(rng.integers(1, 8)))
        corners = _outline(cells)
        if corners is not None:
            break
    columns = np.concatenate(([0.0], np.cumsum(rng.uniform(0.7, 1.4, 16))))
    rows = np.concatenate(([0.0], np.cumsum(rng.uniform(0.7, 1.4, 16))))
    corners = np.column_stack((columns[corners[:, 0]], rows[corners[:, 1]]))
    return _filleted(corners, rng.uniform(0.5, 0.95, len(corners)))


def _filleted(corners: np.ndarray, roundness: np.ndarray, spacing: float = 0.1) -> np.ndarray:
    """Points along a closed polyline whose corners are replaced by circular arcs.

    roundness (K,) in (0, 1]: each corner's arc radius as a fraction of the largest the
    shorter of its two sides allows (half its length), so neighbouring arcs never meet.
    """
    before, after = np.roll(corners, 1, axis=0), np.roll(corners, -1, axis=0)
    side = np.hypot(*(after - corners).T)  # side k runs from corner k to corner k + 1
    radius = roundness * np.minimum(side, np.roll(side, 1)) / 2.0
    points = []
    for k, vertex in enumerate(corners):
        incoming = (vertex - before[k]) / np.linalg.norm(vertex - before[k])
        outgoing = (after[k] - vertex) / np.linalg.norm(after[k] - vertex)
        r = radius[k]
        centre = vertex - incoming * r + outgoing * r
        first = math.atan2(*(vertex - incoming * r - centre)[::-1])
        sweep = math.remainder(math.atan2(*(vertex + outgoing * r - centre)[::-1]) - first,
                               2.0 * math.pi)
        angles = first + sweep * np.linspace(0.0, 1.0, 7)
        points.append(centre + r * np.column_stack((np.cos(angles), np.sin(angles))))
        # The straight on to the next corner's arc, without its end points.
        start = vertex + outgoing * r
        end = after[k] - outgoing * radius[(k + 1) % len(corners)]
        steps = int(float(np.linalg.norm(end - start)) // spacing)
        if steps > 1:
            points.append(start + (np.arange(1, steps) / steps)[:, None] * (end - start))
    return np.vstack(points)


def _random_polyomino(rng: np.random.Generator, size: int) -> set[tuple[int, int]]:
    """`size` grid cells grown from one cell by adding random side neighbours (x, y >= 0)."""
    cells = {(8, 8)}
    while len(cells) < size:
        frontier = sorted({(x + dx, y + dy) for x, y in cells
                           for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1))} - cells)
        cells.add(frontier[int(rng.integers(len(frontier)))])
    return cells


def _outline(cells: set[tuple[int, int]]) -> np.ndarray | None:
    """Corner vertices (K, 2) of a polyomino's outline, anticlockwise; None when the
    outline is not one simple loop (a hole, or cells touching only at a corner)."""
    following: dict[tuple[int, int], tuple[int, int]] = {}
    for x, y in cells:
        for neighbour, start, end in (((x, y - 1), (x, y), (x + 1, y)),
                                      ((x + 1, y), (x + 1, y), (x + 1, y + 1)),
                                      ((x, y + 1), (x + 1, y + 1), (x, y + 1)),
                                      ((x - 1, y), (x, y + 1), (x, y))):
            if neighbour not in cells:
                if start in following:
                    return None
                following[start] = end
    first = min(following)
    loop = [first]
    while following[loop[-1]] != first:
        loop.append(following[loop[-1]])
    if len(loop) != len(following):
        return None
    vertices = np.array(loop)
    before, after = np.roll(vertices, 1, axis=0), np.roll(vertices, -1, axis=0)
    # Keep only real corners (where the direction changes).
    incoming, outgoing = vertices - before, after - vertices
    turning = incoming[:, 0] * outgoing[:, 1] - incoming[:, 1] * outgoing[:, 0] != 0
    return vertices[turning]


def _chicane(rng: np.random.Generator) -> np.ndarray:
    """A stadium whose straights wave with a random number of S-bends."""
    length, radius = rng.uniform(2.0, 4.0), 0.5
    count_straight = 24
    waves = [int(rng.integers(0, 4)) for _ in range(2)]
    amplitude = [rng.uniform(0.1, 0.3) for _ in range(2)]
    points = []
    for side, sign in ((0, -1.0), (1, 1.0)):
        x = np.linspace(-length / 2, length / 2, count_straight, endpoint=False)
        t = np.linspace(0.0, 1.0, count_straight, endpoint=False)
        wave = amplitude[side] * np.sin(math.pi * waves[side] * t) ** 1 * (waves[side] > 0)
        y = sign * (radius + wave)
        if side == 1:
            x = -x
        points.append(np.column_stack((x, y)))
        arc = np.linspace(0.0, math.pi, 8, endpoint=False)[1:]
        centre_x = length / 2 if side == 0 else -length / 2
        turn = (-math.pi / 2 if side == 0 else math.pi / 2) + arc
        points.append(np.column_stack((centre_x + radius * np.cos(turn),
                                       radius * np.sin(turn))))
    return np.vstack(points)


_POLYGONS = {'blob': _blob, 'circuit': _circuit, 'chicane': _chicane}
