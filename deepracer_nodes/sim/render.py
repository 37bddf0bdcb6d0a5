"""Camera images of a track as the car's front camera sees it, and top-down views.

Method: the track is drawn once as a top-down ground texture (a mip pyramid, so far
pixels sample a pre-filtered level instead of aliasing). The camera is rigidly mounted,
so the ray of each pixel meets the floor at a FIXED point of the car frame: those points
are computed once per camera and resolution (lens model included). A frame is then one
2D rigid transform of those points by the car pose (cv2.transform) and one bilinear
lookup in the texture (cv2.remap) per band of rows sharing a pyramid level. Rays above
the horizon or past the edge of the floor texture hit the room's walls (remap's
constant border), which is exactly what a uniform wall round the floor looks like.

Output is BGR uint8 HxWx3, what a real camera gives, so the same preprocessing runs on
both. Run `python -m deepracer_nodes.sim.render --help` to write sample frames.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from deepracer_nodes.core import spec
from deepracer_nodes.core.frame_sources import camera_intrinsics
from deepracer_nodes.sim.track import Track

Colour = tuple[int, int, int]  # BGR
# Sub-pixel precision of cv2 drawing calls (coordinates in 1/8 pixel).
DRAW_SHIFT_BITS = 3
MAX_TEXTURE_SIDE_PX = 4096
# Where rays that never reach the floor are sent: far outside any texture (metres),
# small enough that remap's fixed-point coordinates do not overflow.
NOWHERE_M = 1.0e4


# --- camera placement (shared with the Gazebo world generator) --------------------------

@dataclass(frozen=True)
class CameraMount:
    """Where the camera sits on the car, in base_link (REP 103/105).

    xyz: camera_link origin in base_link, metres.
    rpy: camera_link orientation in base_link (roll, pitch, yaw), radians; camera_link
        looks along its +x like base_link, pitched down by the tilt. A Gazebo camera
        sensor looks along its link's +x, so it takes this pose unchanged.
    optical_rpy: camera_optical_frame in camera_link (z forward, x right, y down).
    """

    xyz: tuple[float, float, float]
    rpy: tuple[float, float, float]
    optical_rpy: tuple[float, float, float] = (-math.pi / 2.0, 0.0, -math.pi / 2.0)

    def rotation_base_from_optical(self) -> np.ndarray:
        """3x3 rotation taking optical frame vectors into base_link."""
        return rotation_from_rpy(*self.rpy) @ rotation_from_rpy(*self.optical_rpy)


def camera_mount(camera: spec.CameraGeometry = spec.CAMERA) -> CameraMount:
    """The camera's mount on the car, from the single source of truth."""
    return CameraMount(xyz=(camera.mount_x_m, camera.mount_y_m, camera.mount_z_m),
                       rpy=(0.0, camera.tilt_rad, 0.0))


def rotation_from_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """URDF/SDF fixed-axis roll-pitch-yaw: R = Rz(yaw) @ Ry(pitch) @ Rx(roll)."""
    cr, sr, cp, sp, cy, sy = (math.cos(roll), math.sin(roll), math.cos(pitch),
                              math.sin(pitch), math.cos(yaw), math.sin(yaw))
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


def pixel_rays(width: int, height: int,
               camera: spec.CameraGeometry = spec.CAMERA) -> tuple[np.ndarray, np.ndarray]:
    """Unit ray of every pixel centre in the optical frame, (H, W, 3), and a validity
    mask (H, W): False where the wide-angle lens model maps no ray to the pixel.

    Uses the same intrinsics the camera node publishes in CameraInfo (pinhole when
    wide_angle_k1 is 0, equidistant fisheye theta_d = theta (1 + k1 theta^2) otherwise).
    """
    intrinsics = camera_intrinsics(width, height, camera)
    fx, _, cx, _, fy, cy = intrinsics.k[:6]
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    a, b = (u - cx) / fx, (v - cy) / fy
    if intrinsics.distortion_model != 'equidistant':
        rays = np.dstack((a, b, np.ones_like(a)))
        return rays / np.linalg.norm(rays, axis=2, keepdims=True), np.ones(a.shape, bool)
    k1 = intrinsics.d[0]
    theta_d = np.hypot(a, b)
    theta = theta_d.copy()
    for _ in range(20):  # Newton on theta (1 + k1 theta^2) = theta_d
        theta -= (theta * (1 + k1 * theta ** 2) - theta_d) / (1 + 3 * k1 * theta ** 2)
    valid = (np.abs(theta * (1 + k1 * theta ** 2) - theta_d) < 1e-6) & (theta >= 0) \
        & (theta < math.pi) & (1 + 3 * k1 * theta ** 2 > 0)
    with np.errstate(invalid='ignore', divide='ignore'):
        scale = np.where(theta_d > 1e-12, np.sin(theta) / theta_d, 1.0)
    rays = np.dstack((a * scale, b * scale, np.cos(theta)))
    return rays, valid


def ground_points(width: int, height: int, camera: spec.CameraGeometry = spec.CAMERA,
                  max_range_m: float = 30.0) -> np.ndarray:
    """Where each pixel's ray meets the floor, in base_link: (H, W, 2) float32 metres.

    Rays that point above the horizon, miss the lens, or meet the floor further than
    max_range_m from the camera get NOWHERE_M (they see the wall colour).
    """
    rays, valid = pixel_rays(width, height, camera)
    mount = camera_mount(camera)
    base_rays = rays @ mount.rotation_base_from_optical().T
    down = -base_rays[..., 2]
    with np.errstate(divide='ignore', invalid='ignore'):
        distance = np.where(down > 1e-9, mount.xyz[2] / down, np.inf)
    hits = valid & np.isfinite(distance) & (distance <= max_range_m)
    points = np.full((height, width, 2), NOWHERE_M, dtype=np.float64)
    for axis in (0, 1):
        points[..., axis] = np.where(hits, mount.xyz[axis] + distance * base_rays[..., axis],
                                     NOWHERE_M)
    return points.astype(np.float32)


# --- what the mat looks like -------------------------------------------------------------

@dataclass(frozen=True)
class Appearance:
    """Colours (BGR) and markings of the mat, floor and walls."""

    road: Colour = (38, 38, 40)
    border: Colour = (235, 235, 235)
    centre_line: Colour = (20, 200, 240)
    floor: Colour = (70, 120, 70)
    wall: Colour = (190, 180, 170)
    border_width_m: float = 0.0508  # 2 in stripes, inside the border lines
    centre_line_width_m: float = 0.0508
    dash_length_m: float = 0.25
    dash_gap_m: float = 0.25
    start_line: bool = True
    # Amplitude (0-255 scale) of the fine grain of mat and floor; 0 = flat colours.
    grain: float = 4.0
    # How far the floor extends past the track before the walls, metres.
    floor_margin_m: float = 1.5


# Floors the randomiser picks from: green carpet, grey concrete, light wood, blue carpet.
FLOOR_PALETTE: tuple[Colour, ...] = ((70, 120, 70), (120, 120, 118), (110, 150, 180),
                                     (120, 80, 50))


def random_appearance(rng: np.random.Generator, base: Appearance = Appearance()) -> Appearance:
    """A plausible variation of the mat for sim-to-real training (seeded)."""
    def jitter(colour: Colour, spread: float) -> Colour:
        gain = rng.uniform(0.8, 1.2)
        return tuple(int(np.clip(c * gain + rng.uniform(-spread, spread), 0, 255))
                     for c in colour)
    return replace(
        base,
        road=jitter(base.road, 12), border=jitter(base.border, 15),
        centre_line=jitter(base.centre_line, 20),
        floor=jitter(FLOOR_PALETTE[int(rng.integers(len(FLOOR_PALETTE)))], 20),
        wall=jitter(base.wall, 50),
        grain=float(rng.uniform(0.0, 2.0 * base.grain)),
        floor_margin_m=float(rng.uniform(0.5, 3.0)))


@dataclass(frozen=True)
class FrameEffects:
    """Per-frame photometric randomisation (seeded): brightness and contrast drift as
    under changing light, plus sensor noise. Zero ranges switch an effect off."""

    contrast_range: tuple[float, float] = (0.75, 1.25)
    brightness_range: tuple[float, float] = (-25.0, 25.0)
    noise_sigma: float = 4.0


class GroundTexture:
    """The track drawn top-down on the floor, as a mip pyramid of BGR images.

    metres_per_px is the finest level's resolution (coarsened automatically so no side
    exceeds MAX_TEXTURE_SIDE_PX). World (x, y) maps to level-0 pixel
    ((x - x_min) / res - 0.5, (y_max - y) / res - 0.5): image up is world +y.
    """

    def __init__(self, track: Track, appearance: Appearance = Appearance(),
                 metres_per_px: float = 0.005, seed: int = 0) -> None:
        if not metres_per_px > 0:
            raise ValueError(f'metres_per_px must be positive, got {metres_per_px}')
        self.track = track
        self.appearance = appearance
        corners = np.vstack((track.inner, track.outer))
        margin = appearance.floor_margin_m
        self.x_min, self.y_min = corners.min(axis=0) - margin
        self.x_max, self.y_max = corners.max(axis=0) + margin
        span = max(self.x_max - self.x_min, self.y_max - self.y_min)
        self.metres_per_px = max(metres_per_px, span / MAX_TEXTURE_SIDE_PX)
        base = _draw_track(self, np.random.default_rng(seed))
        self.levels = [base]
        while min(self.levels[-1].shape[:2]) > 8:
            self.levels.append(cv2.pyrDown(self.levels[-1]))

    def world_to_pixel(self, points: np.ndarray, level: int = 0) -> np.ndarray:
        """Texture pixel coordinates (K, 2) of world points (K, 2) at a pyramid level."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        u = (points[:, 0] - self.x_min) / self.metres_per_px
        v = (self.y_max - points[:, 1]) / self.metres_per_px
        return np.column_stack((u, v)) / 2.0 ** level - 0.5

    def pose_to_pixel_affine(self, x: float, y: float, yaw: float, level: int) -> np.ndarray:
        """2x3 affine taking base_link points (metres) to texture pixels at a level."""
        scale = 1.0 / (self.metres_per_px * 2.0 ** level)
        c, s = math.cos(yaw), math.sin(yaw)
        return np.array([[c * scale, -s * scale, (x - self.x_min) * scale - 0.5],
                         [-s * scale, -c * scale, (self.y_max - y) * scale - 0.5]])


def _draw_track(texture: GroundTexture, rng: np.random.Generator) -> np.ndarray:
    """Floor, road, white borders, dashed yellow centre line and start line, anti-aliased."""
    look, track = texture.appearance, texture.track
    width = int(math.ceil((texture.x_max - texture.x_min) / texture.metres_per_px))
    height = int(math.ceil((texture.y_max - texture.y_min) / texture.metres_per_px))
    image = np.empty((height, width, 3), np.uint8)
    image[:] = look.floor
    scale = 2 ** DRAW_SHIFT_BITS

    def pixels(points: np.ndarray) -> np.ndarray:
        return np.round(texture.world_to_pixel(points) * scale).astype(np.int32)

    def fill(ring: np.ndarray, colour: Colour) -> None:
        cv2.fillPoly(image, [pixels(ring)], colour, cv2.LINE_AA, DRAW_SHIFT_BITS)

    # Painter's order from the outermost ring inwards; which border line encloses the
    # other depends on the file's direction, so decide by area.
    first, second = track.inner, track.outer
    if abs(_ring_area(first)) > abs(_ring_area(second)):
        first, second = second, first
    inside_first = _shrink_towards(first, track.waypoints, look.border_width_m)
    inside_second = _shrink_towards(second, track.waypoints, look.border_width_m)
    fill(second, look.border)
    fill(inside_second, look.road)
    fill(inside_first, look.border)
    fill(first, look.floor)
    dashes = _dash_polylines(track, look.dash_length_m, look.dash_gap_m)
    thickness = max(1, int(round(look.centre_line_width_m / texture.metres_per_px)))
    cv2.polylines(image, [pixels(d) for d in dashes], False, look.centre_line, thickness,
                  cv2.LINE_AA, DRAW_SHIFT_BITS)
    if look.start_line:
        across = np.vstack((inside_first[0], inside_second[0]))
        cv2.polylines(image, [pixels(across)], False, look.border, thickness, cv2.LINE_AA,
                      DRAW_SHIFT_BITS)
    if look.grain > 0:
        _add_grain(image, rng, look.grain)
    return image


def _add_grain(image: np.ndarray, rng: np.random.Generator, sigma: float,
               tile_px: int = 509) -> None:
    """Add fine grey grain in place. A tile of noise repeated over the image costs a few
    milliseconds where noise for every texel would cost a second; at a few metres per
    tile the repetition is invisible under the markings."""
    noise = np.rint(rng.normal(0.0, sigma, size=(tile_px, tile_px, 1)))
    height, width = image.shape[:2]
    reps = (-(-height // tile_px), -(-width // tile_px), 3)

    def tiled(part: np.ndarray) -> np.ndarray:
        return np.tile(np.clip(part, 0, 255).astype(np.uint8), reps)[:height, :width]

    cv2.add(image, tiled(noise), image)  # saturating, like light on a real mat
    cv2.subtract(image, tiled(-noise), image)


def _ring_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _shrink_towards(border: np.ndarray, centre: np.ndarray, distance: float) -> np.ndarray:
    """The border line moved `distance` towards the centre line, waypoint by waypoint."""
    towards = centre - border
    length = np.maximum(np.hypot(towards[:, 0], towards[:, 1]), 1e-9)
    step = np.minimum(distance, length * 0.9)
    return border + towards * (step / length)[:, None]


def _dash_polylines(track: Track, dash_m: float, gap_m: float) -> list[np.ndarray]:
    """Centre line dashes as polylines, a whole number of dash periods round the loop."""
    periods = max(1, int(round(track.length_m / (dash_m + gap_m))))
    period = track.length_m / periods
    dash = period * dash_m / (dash_m + gap_m)
    samples = max(2, int(math.ceil(dash / 0.05)) + 1)
    starts = np.arange(periods) * period
    arcs = starts[:, None] + np.linspace(0.0, dash, samples)[None, :]
    points = track.point_at(arcs.ravel()).reshape(periods, samples, 2)
    return list(points)


# --- the car's camera -----------------------------------------------------------------------

@dataclass
class _Band:
    rows: slice
    level: int
    points: np.ndarray = field(repr=False)  # (rows, W, 2) float32, base_link metres


class CameraRenderer:
    """Front camera frames of a track from the car's base_link pose.

    width x height: output resolution (the spec camera's intrinsics scaled to it).
    effects: per-frame randomisation, drawn from a numpy Generator seeded with `seed`.
    """

    def __init__(self, texture: GroundTexture, width: int = spec.CAMERA.width,
                 height: int = spec.CAMERA.height,
                 camera: spec.CameraGeometry = spec.CAMERA,
                 effects: FrameEffects | None = None, seed: int = 0,
                 max_range_m: float = 30.0) -> None:
        self.texture = texture
        self.width, self.height = int(width), int(height)
        self.camera = camera
        self.effects = effects
        self.rng = np.random.default_rng(seed)
        points = ground_points(self.width, self.height, camera, max_range_m)
        self._bands = _level_bands(points, texture.metres_per_px, len(texture.levels) - 1)
        self._wall = tuple(float(c) for c in texture.appearance.wall)
        self._noise = _noise_bank(self.rng, self.height, self.width,
                                  effects.noise_sigma if effects else 0.0)

    def render(self, x: float, y: float, yaw: float, out: np.ndarray | None = None) -> np.ndarray:
        """The camera image (H, W, 3) BGR uint8 for the car's base_link pose (m, m, rad)."""
        if out is None:
            out = np.empty((self.height, self.width, 3), np.uint8)
        elif out.shape != (self.height, self.width, 3) or out.dtype != np.uint8:
            raise ValueError(f'out must be a ({self.height}, {self.width}, 3) uint8 array')
        for band in self._bands:
            affine = self.texture.pose_to_pixel_affine(x, y, yaw, band.level)
            maps = cv2.transform(band.points, affine)
            cv2.remap(self.texture.levels[band.level], maps, None, cv2.INTER_LINEAR,
                      dst=out[band.rows], borderMode=cv2.BORDER_CONSTANT,
                      borderValue=self._wall)
        if self.effects is not None:
            self._apply_effects(out)
        return out

    def _apply_effects(self, image: np.ndarray) -> None:
        effects = self.effects
        gain = self.rng.uniform(*effects.contrast_range)
        bias = self.rng.uniform(*effects.brightness_range)
        # Contrast about mid-grey, then brightness: saturating like a real sensor.
        cv2.convertScaleAbs(image, image, alpha=gain, beta=bias + 128.0 * (1.0 - gain))
        if self._noise:
            above, below = self._noise[int(self.rng.integers(len(self._noise)))]
            cv2.add(image, above, image)
            cv2.subtract(image, below, image)


def _level_bands(points: np.ndarray, metres_per_px: float, max_level: int) -> list[_Band]:
    """Group image rows by the pyramid level matching their ground footprint."""
    on_floor = points[..., 0] < NOWHERE_M / 2
    du = np.zeros(points.shape[:2])
    dv = np.zeros(points.shape[:2])
    du[:, :-1] = np.linalg.norm(np.diff(points, axis=1), axis=2)
    du[:, -1] = du[:, -2] if points.shape[1] > 1 else 0.0
    dv[:-1] = np.linalg.norm(np.diff(points, axis=0), axis=2)
    dv[-1] = dv[-2] if points.shape[0] > 1 else 0.0
    # Geometric mean of both footprints: the max would blur across the image to avoid
    # aliasing along the depth direction; this balances the two.
    footprint = np.sqrt(du * dv)
    levels = np.zeros(points.shape[0], dtype=int)
    for row in range(points.shape[0]):
        usable = on_floor[row] & (footprint[row] < NOWHERE_M / 4)
        if usable.any():
            size = float(np.median(footprint[row][usable]))
            levels[row] = int(np.clip(math.floor(math.log2(max(size, 1e-9) / metres_per_px)
                                                 + 0.5), 0, max_level))
    bands = []
    start = 0
    for row in range(1, len(levels) + 1):
        if row == len(levels) or levels[row] != levels[start]:
            bands.append(_Band(slice(start, row), int(levels[start]),
                               np.ascontiguousarray(points[start:row])))
            start = row
    return bands


def _noise_bank(rng: np.random.Generator, height: int, width: int, sigma: float,
                frames: int = 8) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pre-drawn sensor noise frames, split into what to add and what to subtract so the
    per-frame cost is two saturating uint8 operations."""
    if sigma <= 0:
        return []
    bank = []
    for _ in range(frames):
        noise = np.rint(rng.normal(0.0, sigma, size=(height, width, 3)))
        bank.append((np.clip(noise, 0, 255).astype(np.uint8),
                     np.clip(-noise, 0, 255).astype(np.uint8)))
    return bank


# --- top-down views for plots and videos --------------------------------------------------

def render_overhead(texture: GroundTexture, max_side_px: int = 800,
                    path: np.ndarray | None = None,
                    car_pose: tuple[float, float, float] | None = None,
                    car: spec.CarGeometry = spec.CAR) -> np.ndarray:
    """Top-down BGR image of the track, with the driven line (K, 2) in red and the car
    (base_link pose x, y, yaw) as a blue box with a white nose, scaled to max_side_px."""
    base = texture.levels[0]
    scale = min(1.0, max_side_px / max(base.shape[:2]))
    image = cv2.resize(base, (max(1, round(base.shape[1] * scale)),
                              max(1, round(base.shape[0] * scale))),
                       interpolation=cv2.INTER_AREA)
    shift = 2 ** DRAW_SHIFT_BITS

    def pixels(points: np.ndarray) -> np.ndarray:
        return np.round((texture.world_to_pixel(points) + 0.5) * scale * shift
                        - 0.5 * shift).astype(np.int32)

    if path is not None and len(path) > 1:
        cv2.polylines(image, [pixels(np.asarray(path))], False, (40, 40, 230), 2,
                      cv2.LINE_AA, DRAW_SHIFT_BITS)
    if car_pose is not None:
        x, y, yaw = car_pose
        rear = (car.length_m - car.wheelbase_m) / 2.0
        outline = np.array([[-rear, -car.width_m / 2], [car.wheelbase_m + rear, -car.width_m / 2],
                            [car.wheelbase_m + rear, car.width_m / 2], [-rear, car.width_m / 2]])
        c, s = math.cos(yaw), math.sin(yaw)
        world = outline @ np.array([[c, s], [-s, c]]) + (x, y)
        cv2.fillPoly(image, [pixels(world)], (200, 90, 30), cv2.LINE_AA, DRAW_SHIFT_BITS)
        nose = world[1:3].mean(axis=0)
        cv2.circle(image, tuple(int(v) for v in pixels(nose[None])[0]),
                   max(2, int(3 * shift * scale)), (255, 255, 255), -1, cv2.LINE_AA,
                   DRAW_SHIFT_BITS)
    return image


# --- sample frames and timings from the command line ---------------------------------------

def main(argv: list[str] | None = None) -> int:
    """Write sample camera frames and an overhead view, and print render timings."""
    from deepracer_nodes.sim import track_library

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument('--track', default='hairpin', choices=track_library.track_names())
    parser.add_argument('--output', default='/tmp/deepracer_sim', help='file name prefix')
    parser.add_argument('--progress', type=float, default=0.0, help='metres along the track')
    parser.add_argument('--randomise', action='store_true')
    parser.add_argument('--wide-angle-k1', type=float, default=None,
                        help='use the fisheye lens model with this k1')
    args = parser.parse_args(argv)
    track = track_library.make_track(args.track)
    rng = np.random.default_rng(1)
    look = random_appearance(rng) if args.randomise else Appearance()
    texture = GroundTexture(track, look)
    x, y = track.point_at(args.progress)
    yaw = track.heading_at(args.progress)
    camera = spec.CAMERA
    if args.wide_angle_k1 is not None:
        camera = replace(camera, wide_angle_k1=args.wide_angle_k1)
    effects = FrameEffects() if args.randomise else None
    for width, height in ((spec.MODEL_INPUT.width, spec.MODEL_INPUT.height),
                          (camera.width, camera.height)):
        renderer = CameraRenderer(texture, width, height, camera, effects=effects)
        frame = renderer.render(x, y, yaw)
        start = time.perf_counter()
        repeats = 200
        for k in range(repeats):
            renderer.render(x, y, yaw + 1e-3 * k, out=frame)
        elapsed = (time.perf_counter() - start) / repeats
        renderer.render(x, y, yaw, out=frame)
        name = f'{args.output}_{args.track}_{width}x{height}.png'
        cv2.imwrite(name, frame)
        print(f'{width}x{height}: {elapsed * 1e3:.2f} ms/frame -> {name}')
    overhead = render_overhead(texture, car_pose=(x, y, yaw))
    cv2.imwrite(f'{args.output}_{args.track}_overhead.png', overhead)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
