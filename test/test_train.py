"""`deepracer train` and the bundled model.

Without PyTorch (as in CI): random tracks, the action space and its labels, augmentation,
the dataset, the drive loop (teacher, latency, perturbations), and the bundled model
itself: format, size, and 3 clean laps of every bundled track in the ROS-free loop
(render -> Policy.act -> dynamics -> race). With PyTorch: the network, the ONNX export
checked by the car's own Policy.load, and a tiny seeded training run end to end.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace

import numpy as np
import pytest

from deepracer_nodes import paths, train_cmd
from deepracer_nodes.core import spec
from deepracer_nodes.core.metadata import (
    DiscreteActionSpace, Sensor, metadata_to_dict, parse_metadata)
from deepracer_nodes.core.onnx_build import DEEPRACER_INPUT_NAME, DEEPRACER_OUTPUT_NAME
from deepracer_nodes.core.policy import MODEL_FILE_NAME, Policy
from deepracer_nodes.core.preprocess import Layout
from deepracer_nodes.sim import dynamics, track_library
from deepracer_nodes.train import tracks
from deepracer_nodes.train.actions import ActionGrid
from deepracer_nodes.train.augment import NO_AUGMENTATION, augment
from deepracer_nodes.train.dataset import Dataset
from deepracer_nodes.train.episodes import (
    NO_RANDOMISATION, DriveConfig, Perturbation, Randomisation, _Actuation, drive, make_world)
from deepracer_nodes.train.evaluate import evaluate, expert_lap_time, policy_driver
from deepracer_nodes.train.settings import DEFAULTS

BUNDLED_FOLDER = paths.share_path('models', spec.BUNDLED_MODEL)
MAX_MODEL_BYTES = 2 * 1024 * 1024
LAP_TIME_RATIO_LIMIT = 1.5


# --- random tracks -------------------------------------------------------------------------

@pytest.fixture(scope='module')
def random_tracks():
    rng = np.random.default_rng(3)
    return [tracks.random_track(rng, name=f'r{k}') for k in range(12)]


def test_random_tracks_are_drivable_deepracer_sized_loops(random_tracks):
    ranges = tracks.TrackRanges()
    for track in random_tracks:
        assert ranges.length_m[0] <= track.length_m <= ranges.length_m[1]
        widths = np.hypot(*(track.outer - track.inner).T)
        wander = 1.0 + tracks.MAX_WIDTH_WANDER
        assert ranges.width_m[0] / wander <= widths.min() <= widths.max() \
            <= ranges.width_m[1] * wander
        # Radius of the centre line over ~1 m (the waypoints themselves wobble a little):
        # the inner border must keep a real radius in the tightest bend.
        spacing = track.length_m / track.waypoint_count
        span = max(1, int(round(0.5 / spacing)))
        points = track.waypoints
        before, after = np.roll(points, span, axis=0), np.roll(points, -span, axis=0)
        a, b = points - before, after - points
        turn = np.abs(np.arctan2(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0], np.sum(a * b, axis=1)))
        radius = np.hypot(*a.T) / np.maximum(turn, 1e-9)
        assert radius.min() > widths.max() / 2.0 + 0.02, track


def test_random_tracks_cover_every_family_and_both_directions(random_tracks):
    names = [t.name for t in random_tracks]
    for family in tracks.FAMILIES:
        assert any(f'_{family}' in name for name in names), family
    assert any(name.endswith('_reversed') for name in names)
    assert not all(name.endswith('_reversed') for name in names)


def test_random_tracks_are_reproducible_from_the_seed():
    first = tracks.random_track(np.random.default_rng(11))
    again = tracks.random_track(np.random.default_rng(11))
    other = tracks.random_track(np.random.default_rng(12))
    assert np.array_equal(first.waypoints, again.waypoints)
    assert first.waypoints.shape != other.waypoints.shape \
        or not np.allclose(first.waypoints, other.waypoints)


def test_polyomino_outline_corners_and_refused_shapes():
    l_shape = {(0, 0), (1, 0), (0, 1)}
    corners = tracks._outline(l_shape)
    assert len(corners) == 6
    x, y = corners[:, 0].astype(float), corners[:, 1].astype(float)
    area = 0.5 * np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)
    assert area == pytest.approx(3.0)  # three unit cells, anticlockwise
    assert tracks._outline({(0, 0), (1, 1)}) is None  # touching only at a corner
    ring = {(x, y) for x in range(3) for y in range(3)} - {(1, 1)}
    assert tracks._outline(ring) is None  # a hole


def test_track_ranges_refuse_nonsense():
    with pytest.raises(ValueError):
        tracks.TrackRanges(length_m=(30.0, 20.0))
    with pytest.raises(ValueError):
        tracks.TrackRanges(width_m=(0.0, 1.0))


# --- action space and labels ---------------------------------------------------------------

def test_soft_labels_average_to_the_expert_angle_and_peak_at_the_nearest():
    grid = ActionGrid(steering_count=11, speeds_mps=(2.0,))
    angles = np.radians([-30.0, -13.0, 0.0, 4.0, 29.0])
    labels = grid.soft_labels(angles)
    assert labels.shape == (5, 11)
    assert labels.sum(axis=1) == pytest.approx(np.ones(5))
    assert labels @ grid.steering_rad == pytest.approx(angles, abs=1e-6)
    nearest = np.argmin(np.abs(grid.steering_rad[None] - angles[:, None]), axis=1)
    assert np.array_equal(labels.argmax(axis=1), nearest)
    # Beyond the fan: all on the extreme action.
    assert grid.soft_labels(np.radians([50.0, -45.0])).argmax(axis=1).tolist() == [0, 10]


def test_two_speed_grid_labels_the_speed_row_and_mirrors_within_it():
    grid = ActionGrid(steering_count=5, speeds_mps=(3.0, 1.5))
    labels = grid.soft_labels(np.radians([15.0, 15.0]), speed_index=np.array([0, 1]))
    assert labels[0, :5].sum() == pytest.approx(1.0) and labels[0, 5:].sum() == 0
    assert labels[1, 5:].sum() == pytest.approx(1.0) and labels[1, :5].sum() == 0
    mirror = grid.mirrored_indices()
    for index in range(grid.size):
        steering, speed = grid.action(index)
        assert grid.action(mirror[index]) == pytest.approx((-steering, speed))


def test_metadata_is_a_deepracer_discrete_camera_action_space():
    grid = ActionGrid(steering_count=7, speeds_mps=(2.5, 1.2))
    metadata = parse_metadata(metadata_to_dict(grid.metadata()))
    space = metadata.action_space
    assert isinstance(space, DiscreteActionSpace) and len(space.actions) == 14
    assert metadata.sensors == (Sensor.FRONT_FACING_CAMERA,)
    assert space.actions[0].steering_angle_deg == pytest.approx(30.0)  # left first
    assert space.actions[6].steering_angle_deg == pytest.approx(-30.0)
    assert [a.speed_mps for a in space.actions] == [2.5] * 7 + [1.2] * 7
    for index, action in enumerate(space.actions):
        steering, speed = grid.action(index)
        assert math.radians(action.steering_angle_deg) == pytest.approx(steering)
        assert action.speed_mps == speed


@pytest.mark.parametrize('kwargs', [dict(steering_count=4), dict(steering_count=1),
                                    dict(max_steering_deg=45.0), dict(speeds_mps=()),
                                    dict(speeds_mps=(1.0, 2.0)), dict(speeds_mps=(9.0,))])
def test_action_grid_refuses_bad_spaces(kwargs):
    with pytest.raises(ValueError):
        ActionGrid(**kwargs)


def test_soft_labels_refuse_non_finite_angles():
    with pytest.raises(ValueError):
        ActionGrid().soft_labels(np.array([0.1, np.nan]))


# --- augmentation and dataset --------------------------------------------------------------

def test_augmentation_keeps_shape_range_and_is_seeded():
    frames = np.random.default_rng(0).integers(0, 256, (16, 120, 160), dtype=np.uint8)
    images, mirrored = augment(frames, np.random.default_rng(5))
    again, mirrored_again = augment(frames, np.random.default_rng(5))
    assert images.shape == frames.shape and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 255.0
    assert np.array_equal(images, again) and np.array_equal(mirrored, mirrored_again)
    assert not np.allclose(images, frames)


def test_mirroring_flips_the_image_exactly():
    frames = np.random.default_rng(1).integers(0, 256, (4, 120, 160), dtype=np.uint8)
    images, mirrored = augment(frames, np.random.default_rng(0),
                               replace(NO_AUGMENTATION, mirror_probability=1.0))
    assert mirrored.all()
    assert np.array_equal(images, frames[:, :, ::-1].astype(np.float32))
    plain, mirrored = augment(frames, np.random.default_rng(0), NO_AUGMENTATION)
    assert not mirrored.any() and np.array_equal(plain, frames.astype(np.float32))


def test_augment_refuses_wrong_input():
    with pytest.raises(ValueError):
        augment(np.zeros((2, 120, 160), np.float32), np.random.default_rng(0))


def _fake_episode(frames: np.ndarray, steering: np.ndarray):
    from deepracer_nodes.train.episodes import Episode
    return Episode(frames=frames, steering_rad=steering.astype(np.float32),
                   speed_index=np.zeros(len(frames), np.int64), laps=0, off_track=0,
                   lap_times_s=[], steps=len(frames), distance_m=0.0, path=np.zeros((0, 2)))


def test_dataset_batches_mirror_labels_with_images():
    grid = ActionGrid()
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (6, 120, 160), dtype=np.uint8)
    steering = np.radians([10.0, -20.0, 3.0, 0.0, 25.0, -7.0])
    dataset = Dataset(capacity=5)
    assert dataset.add(_fake_episode(frames, steering), round_index=0) == 5  # what fits
    assert len(dataset) == 5 and dataset.capacity == 5
    indices = np.array([0, 1, 4])
    images, labels = dataset.batch(indices, grid, rng,
                                   replace(NO_AUGMENTATION, mirror_probability=1.0))
    assert images.shape == (3, 120, 160, 1)
    assert np.array_equal(images[..., 0], frames[indices][:, :, ::-1])
    assert labels @ grid.steering_rad == pytest.approx(-steering[indices], abs=1e-6)
    with pytest.raises(IndexError):
        dataset.batch(np.array([5]), grid, rng)


# --- the drive loop ------------------------------------------------------------------------

def test_teacher_drives_clean_laps_and_labels_every_frame():
    track = track_library.make_track('s_bends')
    rng = np.random.default_rng(0)
    world = make_world(track, rng, NO_RANDOMISATION)
    episode = drive(world, ActionGrid(speeds_mps=(2.0,)), rng,
                    DriveConfig(max_steps=2000, max_laps=1, start_progress=0.0))
    assert episode.laps == 1 and episode.off_track == 0
    assert episode.frames.shape == (episode.steps, 120, 160)
    assert episode.frames.dtype == np.uint8
    assert episode.steering_rad.shape == (episode.steps,)
    assert np.all(np.abs(episode.steering_rad) <= spec.CAR.max_steering_rad + 1e-9)
    assert expert_lap_time(track, 2.0, laps=1) > 0


def test_perturbations_push_the_car_off_its_line():
    track = track_library.make_track('loop')

    def widest_excursion(perturbation: Perturbation) -> float:
        rng = np.random.default_rng(4)
        world = make_world(track, rng, NO_RANDOMISATION)
        episode = drive(world, ActionGrid(), rng,
                        DriveConfig(max_steps=300, start_progress=0.0,
                                    perturbation=perturbation, record=False))
        return max(track.locate(x, y).distance_from_center_m for x, y in episode.path)

    calm = widest_excursion(Perturbation())
    disturbed = widest_excursion(Perturbation(noise_rad=0.1, burst_rate_hz=1.0))
    assert disturbed > calm + 0.1


def test_randomised_worlds_differ_and_render_model_inputs():
    track = track_library.make_track('loop')
    rng = np.random.default_rng(2)
    frames = []
    for _ in range(3):
        world = make_world(track, rng, Randomisation())
        episode = drive(world, ActionGrid(), rng, DriveConfig(max_steps=3, start_progress=0.0))
        frames.append(episode.frames[0].astype(float))
    assert all(f.shape == (120, 160) for f in frames)
    assert np.abs(frames[0] - frames[1]).mean() > 1.0


def test_latency_delays_the_command_by_exactly_the_latency():
    start = dynamics.CarState(speed=1.0)
    dt, latency = 1 / 15, 0.03
    actuation = _Actuation(latency, 1.0, 0.0)
    actuation.command(0.0, 1.0, 0.3)
    delayed = actuation.advance(start, 0.0, dt)
    by_hand = dynamics.step(dynamics.step(start, 1.0, 0.0, latency), 1.0, 0.3, dt - latency)
    assert (delayed.x, delayed.y, delayed.yaw) == pytest.approx((by_hand.x, by_hand.y,
                                                                 by_hand.yaw))
    instant = _Actuation(0.0, 1.0, 0.0)
    instant.command(0.0, 1.0, 0.3)
    assert instant.advance(start, 0.0, dt) == dynamics.step(start, 1.0, 0.3, dt)


def test_drive_needs_a_grid_to_label():
    world = make_world(track_library.make_track('loop'), np.random.default_rng(0),
                       NO_RANDOMISATION)
    with pytest.raises(ValueError):
        drive(world, None, np.random.default_rng(0))


# --- the command -----------------------------------------------------------------------------

def test_command_line_defaults_are_the_bundled_settings():
    parser = argparse.ArgumentParser()
    train_cmd.add_arguments(parser)
    args = parser.parse_args([])
    assert args.seed == DEFAULTS.seed and args.iterations == DEFAULTS.rounds
    assert tuple(args.speed) == DEFAULTS.speeds_mps
    command = train_cmd.canonical_command(parser.parse_args(['--output', 'out']))
    assert command.startswith('deepracer train --output out --seed ')


# --- the bundled model -------------------------------------------------------------------------

@pytest.fixture(scope='module')
def bundled() -> Policy:
    return Policy.load(BUNDLED_FOLDER)


def test_bundled_model_is_small_and_in_deepracer_format(bundled):
    assert (BUNDLED_FOLDER / MODEL_FILE_NAME).stat().st_size < MAX_MODEL_BYTES
    space = bundled.metadata.action_space
    assert isinstance(space, DiscreteActionSpace) and len(space.actions) >= 3
    assert bundled.metadata.sensors == (Sensor.FRONT_FACING_CAMERA,)
    assert max(a.steering_angle_deg for a in space.actions) <= 30.0
    assert bundled.input_spec.name == DEEPRACER_INPUT_NAME
    assert bundled.input_spec.layout is Layout.NHWC
    assert bundled.input_spec.shape == (1, 120, 160, 1)
    assert bundled.output_name == DEEPRACER_OUTPUT_NAME
    decision = bundled.act(np.full((120, 160, 3), 40, np.uint8))
    assert decision.probabilities.sum() == pytest.approx(1.0, abs=1e-4)


def test_bundled_model_was_made_by_the_default_command():
    log = json.loads((BUNDLED_FOLDER / 'training_log.json').read_text())
    parser = argparse.ArgumentParser()
    train_cmd.add_arguments(parser)
    expected = train_cmd.canonical_command(parser.parse_args(
        ['--output', f'models/{spec.BUNDLED_MODEL}']))
    assert log['command'] == expected
    assert log['rounds_run'] == DEFAULTS.rounds + 1


@pytest.mark.parametrize('name', track_library.track_names())
def test_bundled_model_drives_three_clean_laps(bundled, name):
    track = track_library.make_track(name)
    speed = bundled.metadata.action_space.max_speed_mps
    result = evaluate(policy_driver(bundled), track, speed, laps=3)
    assert result.laps == 3, result
    assert result.off_track == 0, result
    assert result.lap_time_ratio <= LAP_TIME_RATIO_LIMIT, result


# --- with PyTorch ------------------------------------------------------------------------------

def test_export_is_checked_by_the_cars_policy_loader(tmp_path):
    torch = pytest.importorskip('torch')
    from deepracer_nodes.train.export import export_model
    from deepracer_nodes.train.network import PolicyNet

    torch.manual_seed(0)
    grid = ActionGrid(steering_count=5, speeds_mps=(2.0, 1.0))
    net = PolicyNet(grid.size)
    folder = export_model(net, grid, tmp_path / 'model')
    policy = Policy.load(folder)
    assert policy.input_spec.shape == (1, 120, 160, 1)
    assert policy.input_spec.name == DEEPRACER_INPUT_NAME
    frame = np.random.default_rng(0).integers(0, 256, (120, 160), dtype=np.uint8)
    with torch.no_grad():
        expected = torch.softmax(net.eval()(torch.from_numpy(frame).float()[None, :, :, None]),
                                 dim=-1).numpy()[0]
    assert policy.act(frame).probabilities == pytest.approx(expected, abs=1e-4)
    assert (folder / MODEL_FILE_NAME).stat().st_size < MAX_MODEL_BYTES


def test_tiny_training_run_writes_a_model_log_and_curve_reproducibly(tmp_path):
    pytest.importorskip('torch')
    from deepracer_nodes.train.trainer import Trainer

    settings = replace(DEFAULTS, rounds=1, teacher_episodes=2, episodes_per_round=1,
                       steps_per_episode=40, batches_per_round=3, batch_size=8,
                       validation_tracks=1, validation_laps=1, threads=1)
    outputs = []
    for run in range(2):
        units = []
        trainer = Trainer(settings, progress=lambda desc, n: units.append(n))
        records = trainer.run()
        assert [r.round for r in records] == [0, 1]
        assert sum(units) == trainer.total_units
        folder = trainer.save(tmp_path / f'run{run}', 'deepracer train (test)', 1.0)
        outputs.append((folder / MODEL_FILE_NAME).read_bytes())
    log = json.loads((folder / 'training_log.json').read_text())
    assert log['settings']['rounds'] == 1 and log['command'] == 'deepracer train (test)'
    assert len(log['rounds']) == 2 and 0 <= log['selected_round'] <= 1
    assert (folder / 'training_curve.png').stat().st_size > 1000
    Policy.load(folder)
    assert outputs[0] == outputs[1]  # same seed, same model
