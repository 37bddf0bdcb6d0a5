"""DAgger imitation of the expert on random tracks, on a laptop CPU.

Round 0: the teacher drives random tracks with its steering disturbed (slow noise and
short bursts of a random steering angle) from displaced starts, so the data already
holds off-centre and badly aimed states with the teacher's way back. The network is
trained on it. Each later round the NETWORK drives (mildly disturbed) on new random
tracks, the teacher labels every frame it visits, the frames join the aggregate and
training continues on all of it: the policy learns to recover from its own mistakes,
which plain behaviour cloning never shows it (Ross et al., DAgger, 2011).

Every episode is a new random track (tracks.py) in a new randomised world
(episodes.py: mat colours, lighting, camera mount, render resolution, latency), and
every batch is augmented (augment.py): the policy has to learn the markings, not the
tracks. After each round the policy drives held-out random tracks it never trained on,
in harder conditions than the simulator's defaults (the validation set that picks the
round to export), and the bundled tracks as the simulator shows them (reported only).
Everything is seeded: the same settings and seed give the same model (on the same
number of threads).
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from deepracer_nodes.sim import track_library
from deepracer_nodes.sim.track import Track
from deepracer_nodes.train.dataset import Dataset
from deepracer_nodes.train.episodes import (
    NO_RANDOMISATION, DriveConfig, Driver, Randomisation, drive, make_world)
from deepracer_nodes.train.evaluate import TrackResult, evaluate, expert_lap_time
from deepracer_nodes.train.export import export_model
from deepracer_nodes.train.network import PolicyNet
from deepracer_nodes.train.settings import TrainSettings
from deepracer_nodes.train.tracks import random_track

LOG_FILE_NAME = 'training_log.json'
CURVE_FILE_NAME = 'training_curve.png'
# The held-out tracks are driven in harder conditions than the simulator's defaults, so
# rounds that all drive the default look perfectly still differ: a randomised look,
# camera mount jitter and 1.5 frames of latency.
VALIDATION_CONDITIONS = Randomisation(latency_s=(0.1, 0.1))


@dataclass
class RoundRecord:
    """What one round did and how the policy drove afterwards."""

    round: int
    frames_added: int
    dataset_size: int
    collect_off_track_per_km: float
    loss: float
    kl: float
    accuracy: float
    validation: list[dict] = field(default_factory=list)
    bundled: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def validation_score(self) -> tuple[float, ...]:
        """Higher is better: clean tracks, then fewer off-tracks, then more laps."""
        return (sum(r['clean'] for r in self.validation),
                -sum(r['off_track'] for r in self.validation),
                sum(r['laps'] for r in self.validation))


Progress = Callable[[str, int], None]  # (phase description, units done) -> None


class Trainer:
    """Runs the rounds; progress(desc, units) is told about every batch and episode."""

    def __init__(self, settings: TrainSettings, progress: Progress | None = None) -> None:
        self.settings = settings
        self.grid = settings.grid
        self.progress = progress or (lambda desc, units: None)
        streams = np.random.SeedSequence(settings.seed).spawn(4)
        self.track_rng, self.world_rng, self.batch_rng, validation_rng = (
            np.random.default_rng(s) for s in streams)
        torch.manual_seed(settings.seed)
        torch.set_num_threads(settings.threads)
        self.net = PolicyNet(self.grid.size)
        self.optimiser = torch.optim.AdamW(self.net.parameters(), lr=settings.learning_rate,
                                           weight_decay=settings.weight_decay)
        self.dataset = Dataset(settings.capacity)
        self.validation = [random_track(validation_rng, settings.track_ranges,
                                        name=f'validation{k}')
                           for k in range(settings.validation_tracks)]
        self.bundled = [track_library.make_track(n) for n in track_library.track_names()]
        speed = max(settings.speeds_mps)
        self._expert_times = {id(t): expert_lap_time(t, speed, settings.validation_laps)
                              for t in self.validation + self.bundled}
        self.records: list[RoundRecord] = []
        self.best_round = -1
        self._best_state: dict | None = None

    @property
    def units_per_round(self) -> int:
        return self.settings.episodes_per_round + self.settings.batches_per_round

    @property
    def total_units(self) -> int:
        s = self.settings
        return s.teacher_episodes + s.batches_per_round + s.rounds * self.units_per_round

    def run(self) -> list[RoundRecord]:
        """Round 0 and the DAgger rounds, within the time budget."""
        s = self.settings
        started = time.monotonic()
        for round_index in range(s.rounds + 1):
            round_start = time.monotonic()
            if self.records:
                elapsed = round_start - started
                if elapsed + self.records[-1].seconds * 1.1 > s.minutes * 60.0:
                    break
            self.records.append(self._round(round_index))
            self.records[-1].seconds = time.monotonic() - round_start
        return self.records

    def _round(self, round_index: int) -> RoundRecord:
        s = self.settings
        teacher_round = round_index == 0
        episodes = s.teacher_episodes if teacher_round else s.episodes_per_round
        added, off_track, distance = 0, 0, 0.0
        for _ in range(episodes):
            track = random_track(self.track_rng, s.track_ranges)
            world = make_world(track, self.world_rng, s.randomisation)
            config = DriveConfig(
                max_steps=s.steps_per_episode, max_laps=1000,
                start_offset_m=s.start_offset_m, start_heading_rad=s.start_heading_rad,
                start_speed_mps=float(self.world_rng.uniform(0.0, max(s.speeds_mps))),
                perturbation=s.teacher_perturbation if teacher_round
                else s.policy_perturbation)
            episode = drive(world, self.grid, self.world_rng, config,
                            driver=None if teacher_round else self.driver())
            added += self.dataset.add(episode, round_index)
            off_track += episode.off_track
            distance += episode.distance_m
            self.progress(f'round {round_index}: driving', 1)
        loss, kl, accuracy = self._train(round_index)
        record = RoundRecord(round=round_index, frames_added=added,
                             dataset_size=len(self.dataset),
                             collect_off_track_per_km=1000.0 * off_track / max(distance, 1.0),
                             loss=loss, kl=kl, accuracy=accuracy)
        record.validation = [r.to_dict() for r in self._evaluate(
            self.validation, VALIDATION_CONDITIONS)]
        record.bundled = [r.to_dict() for r in self._evaluate(self.bundled, NO_RANDOMISATION)]
        if self.best_round < 0 or record.validation_score >= \
                self.records[self.best_round].validation_score:
            self.best_round = round_index
            self._best_state = {k: v.clone() for k, v in self.net.state_dict().items()}
        return record

    def driver(self) -> Driver:
        """The network as a driver (argmax action, as on the car)."""
        net, grid = self.net, self.grid

        def choose(frame: np.ndarray, grey: np.ndarray) -> tuple[float, float]:
            with torch.no_grad():
                logits = net(torch.from_numpy(grey).float()[None, :, :, None])
            steering, speed = grid.action(int(logits.argmax()))
            return speed, steering
        net.eval()
        return choose

    def _train(self, round_index: int) -> tuple[float, float, float]:
        """Train on the aggregate for one round's batches, cosine-decayed learning rate.

        Returns the loss (cross-entropy with the soft labels), its excess over the labels'
        own entropy (the KL divergence: 0 = the network gives exactly the labels) and the
        accuracy (the argmax is the label's nearest action), over the round's last fifth.
        """
        s = self.settings
        self.net.train()
        losses, divergences, hits = [], [], []
        for step in range(s.batches_per_round):
            fraction = step / s.batches_per_round
            for group in self.optimiser.param_groups:
                group['lr'] = s.learning_rate * (0.05 + 0.95 * 0.5
                                                 * (1.0 + math.cos(math.pi * fraction)))
            indices = self.batch_rng.integers(0, len(self.dataset), s.batch_size)
            images, labels = self.dataset.batch(indices, self.grid, self.batch_rng,
                                                s.augmentation)
            target = torch.from_numpy(labels)
            logits = self.net(torch.from_numpy(images))
            loss = -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
            self.optimiser.zero_grad(set_to_none=True)
            loss.backward()
            self.optimiser.step()
            entropy = float(-(target * torch.log(target.clamp_min(1e-12))).sum(dim=1).mean())
            losses.append(float(loss.detach()))
            divergences.append(losses[-1] - entropy)
            hits.append(float((logits.argmax(1) == target.argmax(1)).float().mean()))
            self.progress(f'round {round_index}: training', 1)
        self.net.eval()
        tail = max(1, len(losses) // 5)  # the end of the round says where it got to
        return tuple(float(np.mean(values[-tail:])) for values in (losses, divergences, hits))

    def _evaluate(self, tracks: list[Track], conditions: Randomisation) -> list[TrackResult]:
        s = self.settings
        driver = self.driver()
        return [evaluate(driver, track, max(s.speeds_mps), s.validation_laps, seed=1000 + k,
                         randomisation=conditions, expert_time_s=self._expert_times[id(track)])
                for k, track in enumerate(tracks)]

    def best_net(self) -> PolicyNet:
        """The network of the round that drove the validation tracks best."""
        net = PolicyNet(self.grid.size)
        net.load_state_dict(self._best_state if self._best_state is not None
                            else self.net.state_dict())
        return net.eval()

    def save(self, folder: str | Path, command: str, wall_time_s: float) -> Path:
        """Export the best round's model and write the log and the training curve."""
        folder = Path(folder)
        export_model(self.best_net(), self.grid, folder)
        log = {
            'command': command,
            'wall_time_s': round(wall_time_s, 1),
            'selected_round': self.best_round,
            'rounds_run': len(self.records),
            'settings': asdict(self.settings),
            'rounds': [asdict(r) for r in self.records],
            'versions': {'python': platform.python_version(), 'torch': torch.__version__,
                         'numpy': np.__version__},
        }
        (folder / LOG_FILE_NAME).write_text(json.dumps(log, indent=1, default=str) + '\n',
                                            encoding='utf-8')
        plot_training_curve(self.records, self.best_round, folder / CURVE_FILE_NAME)
        return folder


def plot_training_curve(records: list[RoundRecord], best_round: int, path: Path) -> None:
    """Per round: how well the network fits the labels, how often it left the track
    while collecting (with disturbances), and how it drove tracks it never trained on."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rounds = [r.round for r in records]
    figure, (fit, collect, drive_axes) = plt.subplots(3, 1, figsize=(7, 8.5), sharex=True)
    fit.plot(rounds, [r.kl for r in records], 'o-', color='tab:red',
             label='KL(labels || network)')
    fit.set_ylabel('KL divergence')
    twin = fit.twinx()
    twin.plot(rounds, [r.accuracy for r in records], 's-', color='tab:blue',
              label='accuracy (nearest action)')
    twin.set_ylabel('accuracy')
    twin.set_ylim(0, 1)
    fit.legend(loc='upper left', fontsize=8)
    twin.legend(loc='lower right', fontsize=8)
    fit.set_title('Fit to the teacher\'s labels on the aggregate (end of each round)')
    collect.plot(rounds, [r.collect_off_track_per_km for r in records], 'o-', color='tab:purple')
    collect.set_ylabel('off-tracks per km')
    collect.set_title('Collection: teacher (round 0) then network driving, both disturbed')
    for name, key, style in (('held-out random tracks (harder conditions)', 'validation', 'o-'),
                             ('bundled tracks', 'bundled', 's--')):
        laps = [sum(t['laps'] for t in getattr(r, key))
                / max(1, sum(t['laps_wanted'] for t in getattr(r, key))) for r in records]
        off = [sum(t['off_track'] for t in getattr(r, key)) for r in records]
        drive_axes.plot(rounds, laps, style, label=f'{name}: fraction of laps done')
        drive_axes.plot(rounds, off, style, alpha=0.5, label=f'{name}: off-tracks')
    drive_axes.axvline(best_round, color='grey', linestyle=':', label='exported round')
    drive_axes.set_xlabel('DAgger round (0 = teacher only)')
    drive_axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    drive_axes.set_ylabel('laps done / off-tracks')
    drive_axes.legend(fontsize=7)
    drive_axes.set_title('Driving after each round (tracks never trained on)')
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
