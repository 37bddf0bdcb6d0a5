"""What a simulated race leaves behind: a results JSON, a plot and a video.

- RaceRecorder collects every control step's record and the camera frames (bounded:
  past a memory budget it keeps every second frame, then every fourth, ...).
- race_results() turns them and the run's figures into one JSON-ready dict; the table
  printed at the end of `deepracer sim` comes from format_table().
- plot_race() draws the driven line (coloured by speed) over the track's borders, marks
  the off-track resets, and adds the reward per step when a reward function ran.
- write_video() puts the camera view beside an overhead view of the car and its line:
  MP4 (OpenCV 'mp4v') or, where OpenCV cannot write MP4, an animated GIF.

Plain Python (numpy, OpenCV, matplotlib with the Agg backend: no display needed).
"""

from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from deepracer_nodes.sim import render
from deepracer_nodes.sim.session import SessionState, StepRecord
from deepracer_nodes.sim.track import Track

# Camera frames kept for the video: above this many bytes every other frame is dropped.
VIDEO_MEMORY_BUDGET_BYTES = 96 * 1024 * 1024
VIDEO_HEIGHT_PX = 360
OVERHEAD_PANEL_PX = 480
TEXT_COLOUR = (255, 255, 255)


@dataclass(frozen=True)
class VideoFrame:
    """A camera frame and the step it was taken at."""

    record: StepRecord
    frame: np.ndarray


class RaceRecorder:
    """Step observer for the simulator: records, and camera frames within a memory budget.

    Called from the simulation thread; read the results once the race is over.
    """

    def __init__(self, keep_frames: bool = True,
                 budget_bytes: int = VIDEO_MEMORY_BUDGET_BYTES) -> None:
        self.keep_frames = keep_frames
        self.budget_bytes = budget_bytes
        self.records: list[StepRecord] = []
        self.frames: list[VideoFrame] = []
        self.frame_stride = 1  # every n-th camera frame is kept
        self._offered = 0
        self._bytes = 0
        self._lock = threading.Lock()

    def __call__(self, record: StepRecord | None, frame: np.ndarray) -> None:
        with self._lock:
            if record is None:  # before the green light: nothing to show yet
                return
            self.records.append(record)
            if not self.keep_frames:
                return
            self._offered += 1
            if (self._offered - 1) % self.frame_stride:
                return
            self.frames.append(VideoFrame(record, frame))
            self._bytes += frame.nbytes
            if self._bytes > self.budget_bytes and len(self.frames) > 2:
                self.frames = self.frames[::2]
                self._bytes = sum(f.frame.nbytes for f in self.frames)
                self.frame_stride *= 2


# --- the results dict ------------------------------------------------------------------------

@dataclass(frozen=True)
class RunFigures:
    """How the run went, beside the race itself.

    wall_time_s / sim_time_s: from the green light to the end of the race (so start-up,
    model loading and discovery do not count against the real-time factor).
    """

    wall_time_s: float
    sim_time_s: float
    frames: int
    render_ms_mean: float
    render_ms_p99: float
    response_timeouts: int
    grace_steps: int
    commands_received: int
    # Lockstep: wall seconds spent waiting for the pipeline's answers, and in the simulator.
    pipeline_wait_s: float = math.nan
    sim_work_s: float = math.nan

    @property
    def real_time_factor(self) -> float:
        return self.sim_time_s / self.wall_time_s if self.wall_time_s > 0 else math.nan


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def race_results(state: SessionState, records: list[StepRecord], figures: RunFigures,
                 settings: dict[str, Any], track: Track,
                 pipeline_error: str | None = None) -> dict[str, Any]:
    """Everything worth keeping about a race, JSON-ready.

    completed: the requested laps were all driven and nothing failed.
    """
    rewards = [r.reward for r in records if r.reward is not None]
    lap_times = list(state.lap_times_s)
    completed = (state.status.value == 'finished' and state.error is None
                 and pipeline_error is None)
    return {
        'completed': completed,
        'status': state.status.value,
        'track': track.name,
        'track_length_m': track.length_m,
        'track_width_m': track.width_m,
        'laps_target': state.laps_target,
        'laps_completed': state.laps_completed,
        'lap_times_s': lap_times,
        'best_lap_s': min(lap_times) if lap_times else None,
        'race_time_s': state.race_time_s,
        'off_track_count': state.off_track_count,
        'completion_percent': state.completion,
        'steps': state.steps,
        'error': state.error,
        'pipeline_error': pipeline_error,
        'settings': settings,
        'performance': {
            'real_time_factor': _finite_or_none(figures.real_time_factor),
            'wall_time_s': figures.wall_time_s, 'sim_time_s': figures.sim_time_s,
            'frames': figures.frames,
            'render_ms_per_frame': _finite_or_none(figures.render_ms_mean),
            'render_ms_p99': _finite_or_none(figures.render_ms_p99),
            'response_timeouts': figures.response_timeouts,
            'grace_steps': figures.grace_steps,
            'commands_received': figures.commands_received,
            'pipeline_ms_per_frame': _finite_or_none(
                1e3 * figures.pipeline_wait_s / max(figures.frames, 1)),
            'sim_ms_per_frame': _finite_or_none(
                1e3 * figures.sim_work_s / max(figures.frames, 1)),
        },
        'rewards': None if not rewards else {
            'total': float(np.sum(rewards)), 'mean': float(np.mean(rewards)),
            'per_step': rewards},
        'trajectory': [asdict(r) for r in records],
    }


def write_json(path: str | os.PathLike[str], results: dict[str, Any]) -> Path:
    path = Path(path)
    path.write_text(json.dumps(results, indent=1, allow_nan=False) + '\n')
    return path


def format_table(results: dict[str, Any]) -> str:
    """The results as a plain-text table for the terminal."""
    perf = results['performance']
    laps = results['lap_times_s']
    rows = [('track', f"{results['track']} ({results['track_length_m']:.1f} m)"),
            ('status', results['status'] + ('' if results['completed'] else '  (NOT completed)')),
            ('laps', f"{results['laps_completed']} / {results['laps_target']}")]
    rows += [(f'  lap {i}', f'{t:.2f} s') for i, t in enumerate(laps, 1)]
    if laps:
        rows.append(('best lap', f"{results['best_lap_s']:.2f} s"))
    rows += [('race time', f"{results['race_time_s']:.2f} s"),
             ('off track', f"{results['off_track_count']}"),
             ('completion', f"{results['completion_percent']:.1f} %")]
    if results['rewards']:
        rows.append(('reward total / mean', f"{results['rewards']['total']:.3f} / "
                                            f"{results['rewards']['mean']:.4f}"))
    rtf = perf['real_time_factor']
    render_ms = perf['render_ms_per_frame']
    rows += [('real-time factor', f'{rtf:.1f}x' if rtf is not None else 'n/a'),
             ('render per frame', f'{render_ms:.3f} ms' if render_ms is not None else 'n/a')]
    if perf['pipeline_ms_per_frame'] is not None:
        rows.append(('per frame: sim / pipeline', f"{perf['sim_ms_per_frame']:.2f} / "
                                                  f"{perf['pipeline_ms_per_frame']:.2f} ms"))
    rows += [('frames', f"{perf['frames']}"),
             ('pipeline timeouts', f"{perf['response_timeouts']}")]
    width = max(len(name) for name, _ in rows)
    lines = [f'{name:<{width}}  {value}' for name, value in rows]
    for problem in (results['error'], results['pipeline_error']):
        if problem:
            lines += ['', problem]
    return '\n'.join(lines)


# --- plot -------------------------------------------------------------------------------------

def plot_race(path: str | os.PathLike[str], track: Track, records: list[StepRecord],
              title: str = '') -> Path:
    """PNG of the driven line over the track (and the reward per step, when there is one)."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt

    rewards = [r.reward for r in records if r.reward is not None]
    columns = 2 if rewards else 1
    figure, axes = plt.subplots(1, columns, figsize=(7 * columns, 6), squeeze=False)
    ax = axes[0][0]
    for border in (track.inner, track.outer):
        ring = np.vstack((border, border[:1]))
        ax.plot(ring[:, 0], ring[:, 1], color='0.3', linewidth=1.2)
    centre = np.vstack((track.waypoints, track.waypoints[:1]))
    ax.plot(centre[:, 0], centre[:, 1], color='goldenrod', linewidth=0.8, linestyle='--')
    ax.plot(*track.waypoints[0], marker='s', color='k', markersize=6, label='start')
    if records:
        xy = np.array([(r.x, r.y) for r in records])
        speed = np.array([r.speed_mps for r in records])
        points = ax.scatter(xy[:, 0], xy[:, 1], c=speed, s=6, cmap='viridis', zorder=3)
        figure.colorbar(points, ax=ax, label='speed (m/s)', shrink=0.8)
        off = np.array([(r.x, r.y) for r in records if r.is_offtrack]).reshape(-1, 2)
        if len(off):
            ax.plot(off[:, 0], off[:, 1], 'rx', markersize=9, mew=2,
                    label=f'off track ({len(off)})')
    ax.set_aspect('equal')
    ax.set_xlabel('x (m)')
    ax.set_ylabel('y (m)')
    ax.legend(loc='upper right', fontsize=8)
    ax.set_title(title or f'{track.name}: driven line')
    if rewards:
        ax2 = axes[0][1]
        steps = [r for r in records if r.reward is not None]
        times = [r.time_s - records[0].time_s for r in steps]
        ax2.plot(times, rewards, linewidth=1.0, label='reward per step')
        ax2.set_xlabel('race time (s)')
        ax2.set_ylabel('reward')
        ax2.set_title(f'reward: total {sum(rewards):.2f}, mean {np.mean(rewards):.3f}')
        for lap in (r for r in records if r.lap_time_s is not None):
            ax2.axvline(lap.time_s - records[0].time_s, color='0.6', linestyle=':')
        ax2.grid(alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


# --- video ------------------------------------------------------------------------------------

def _overhead_texture(track: Track, appearance: render.Appearance) -> render.GroundTexture:
    """A ground texture about OVERHEAD_PANEL_PX on its longer side (cheap to draw on)."""
    corners = np.vstack((track.inner, track.outer))
    span = float(np.max(corners.max(axis=0) - corners.min(axis=0))) \
        + 2.0 * appearance.floor_margin_m
    return render.GroundTexture(track, appearance, metres_per_px=span / OVERHEAD_PANEL_PX)


def _label(image: np.ndarray, lines: list[str]) -> None:
    """White text on a darkened box in the top left corner, readable on any background."""
    font, scale, line_px = cv2.FONT_HERSHEY_SIMPLEX, 0.5, 20
    width = max(cv2.getTextSize(text, font, scale, 1)[0][0] for text in lines)
    box = image[:line_px * len(lines) + 8, :width + 12]
    box[:] = box // 3
    for i, text in enumerate(lines):
        cv2.putText(image, text, (6, 18 + line_px * i), font, scale, TEXT_COLOUR, 1,
                    cv2.LINE_AA)


def video_frames(track: Track, frames: list[VideoFrame], laps_target: int,
                 appearance: render.Appearance = render.Appearance()):
    """Yield BGR images: the camera (scaled to VIDEO_HEIGHT_PX) beside the overhead view."""
    texture = _overhead_texture(track, appearance)
    path: list[tuple[float, float]] = []
    for item in frames:
        record = item.record
        camera = cv2.resize(item.frame, (round(item.frame.shape[1] * VIDEO_HEIGHT_PX
                                               / item.frame.shape[0]), VIDEO_HEIGHT_PX),
                            interpolation=cv2.INTER_LINEAR)
        path.append((record.x, record.y))
        overhead = render.render_overhead(texture, OVERHEAD_PANEL_PX,
                                          path=np.array(path) if len(path) > 1 else None,
                                          car_pose=(record.x, record.y, record.yaw))
        scale = VIDEO_HEIGHT_PX / overhead.shape[0]
        overhead = cv2.resize(overhead, (round(overhead.shape[1] * scale), VIDEO_HEIGHT_PX),
                              interpolation=cv2.INTER_AREA)
        _label(camera, [f't {record.time_s:6.2f} s', f'{record.speed_mps:4.2f} m/s',
                        f'steer {math.degrees(record.steering_rad):+5.1f} deg'])
        _label(overhead, [f'lap {min(record.lap + 1, max(laps_target, 1))}'
                          f'/{laps_target or "-"}  {record.progress:5.1f} %'])
        image = np.hstack((camera, overhead))
        # Even sizes: most MP4 decoders refuse odd ones.
        yield image[:image.shape[0] // 2 * 2, :image.shape[1] // 2 * 2]


def write_video(path: str | os.PathLike[str], track: Track, frames: list[VideoFrame],
                fps: float, laps_target: int = 0,
                appearance: render.Appearance = render.Appearance()) -> Path:
    """Write the race video: MP4 when the path ends in .mp4 and OpenCV can encode it,
    otherwise a GIF beside it. Returns the path written."""
    if not frames:
        raise ValueError('no frames to write a video of')
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f'fps must be positive, got {fps}')
    path = Path(path)
    images = video_frames(track, frames, laps_target, appearance)
    first = next(images)
    if path.suffix.lower() == '.mp4':
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), fps,
                                 (first.shape[1], first.shape[0]))
        if writer.isOpened():
            try:
                writer.write(first)
                for image in images:
                    writer.write(image)
            finally:
                writer.release()
            if path.is_file() and path.stat().st_size > 0:
                return path
        path = path.with_suffix('.gif')
    return _write_gif(path, [first, *images], fps)


def _write_gif(path: Path, images: list[np.ndarray], fps: float) -> Path:
    from PIL import Image as PilImage

    # GIFs play at most ~50 fps and grow fast: at most 15 fps, half size.
    stride = max(1, round(fps / 15.0))
    pictures = [PilImage.fromarray(cv2.cvtColor(cv2.resize(im, None, fx=0.5, fy=0.5),
                                                cv2.COLOR_BGR2RGB))
                for im in images[::stride]]
    pictures[0].save(path, save_all=True, append_images=pictures[1:], loop=0,
                     duration=round(1000.0 * stride / fps))
    return path
