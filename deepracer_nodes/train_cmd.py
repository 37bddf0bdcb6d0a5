"""`deepracer train`: train a camera policy on the embedded simulator, on a CPU.

DAgger imitation of the simulator's expert on random tracks in randomised worlds
(deepracer_nodes/train/trainer.py explains the method). Writes a DeepRacer model folder
(model.onnx + model_metadata.json, discrete action space, raw 0-255 grey NHWC input)
plus training_curve.png and training_log.json with the exact settings. The defaults
reproduce the bundled model:

    deepracer train --output models/centerline_v1
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

from deepracer_nodes import paths
from deepracer_nodes.core import spec

DEFAULT_OUTPUT = paths.user_models_dir() / f'{spec.BUNDLED_MODEL}_trained'
TORCH_HINT = ("`deepracer train` needs PyTorch's CPU build: pip install torch==2.13.0 "
              "(or pip install '.[train]'); other versions pull gigabytes of CUDA")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from deepracer_nodes.train.settings import DEFAULTS as d

    parser.add_argument('--output', type=Path, default=DEFAULT_OUTPUT,
                        help='model folder to write (default: %(default)s)')
    parser.add_argument('--seed', type=int, default=d.seed,
                        help='random seed (default: %(default)s)')
    parser.add_argument('--iterations', type=int, default=d.rounds,
                        help='DAgger rounds after the expert-only round 0 (default: %(default)s)')
    parser.add_argument('--minutes', type=float, default=d.minutes,
                        help='wall-clock budget in minutes: no round starts that would end '
                             'past it (default: %(default)s)')
    parser.add_argument('--speed', type=float, nargs='+', default=list(d.speeds_mps),
                        metavar='MPS',
                        help='speed(s) of the action space, m/s, fastest first (default: '
                             '%(default)s)')
    parser.add_argument('--steering-count', type=int, default=d.steering_count,
                        help='steering angles of the action space (odd; -30..30 degrees)')
    parser.add_argument('--teacher-episodes', type=int, default=d.teacher_episodes,
                        help='expert-driven episodes of round 0')
    parser.add_argument('--episodes', type=int, default=d.episodes_per_round,
                        help='policy-driven episodes per DAgger round (one random track each)')
    parser.add_argument('--steps', type=int, default=d.steps_per_episode,
                        help='control steps (frames) per episode')
    parser.add_argument('--batches', type=int, default=d.batches_per_round,
                        help='training batches per round')
    parser.add_argument('--batch-size', type=int, default=d.batch_size)
    parser.add_argument('--threads', type=int, default=d.threads,
                        help='PyTorch threads (the result depends on it in the last bits)')


def run(args: argparse.Namespace) -> int:
    try:
        import torch  # noqa: F401  (only to give a clear message when it is missing)
    except ImportError:
        print(TORCH_HINT, file=sys.stderr)
        return 2
    from deepracer_nodes.train.settings import DEFAULTS
    from deepracer_nodes.train.trainer import Trainer

    try:
        settings = replace(
            DEFAULTS, seed=args.seed, rounds=args.iterations, minutes=args.minutes,
            speeds_mps=tuple(args.speed), steering_count=args.steering_count,
            teacher_episodes=args.teacher_episodes, episodes_per_round=args.episodes,
            steps_per_episode=args.steps, batches_per_round=args.batches,
            batch_size=args.batch_size, threads=args.threads)
    except ValueError as error:
        print(f'deepracer train: {error}', file=sys.stderr)
        return 2
    command = canonical_command(args)
    print(command, flush=True)
    started = time.monotonic()
    trainer = Trainer(settings)
    with _progress_bar(trainer.total_units) as progress:
        trainer.progress = progress
        records = trainer.run()
    wall_time = time.monotonic() - started
    folder = trainer.save(args.output, command, wall_time)
    print(f'{len(records)} rounds in {wall_time / 60:.1f} min; exported round '
          f'{trainer.best_round} to {folder}')
    if len(records) < settings.rounds + 1:
        print(f'warning: the {settings.minutes:g} min budget stopped training after '
              f'{len(records)} of {settings.rounds + 1} rounds; the model differs from a '
              'full run', file=sys.stderr)
    print(format_results(records[trainer.best_round]))
    return 0


def canonical_command(args: argparse.Namespace) -> str:
    """The command with every setting spelled out, for the log and the README."""
    parts = ['deepracer', 'train', '--output', str(args.output), '--seed', str(args.seed),
             '--iterations', str(args.iterations), '--minutes', f'{args.minutes:g}',
             '--speed', *(f'{s:g}' for s in args.speed),
             '--steering-count', str(args.steering_count),
             '--teacher-episodes', str(args.teacher_episodes), '--episodes', str(args.episodes),
             '--steps', str(args.steps), '--batches', str(args.batches),
             '--batch-size', str(args.batch_size), '--threads', str(args.threads)]
    return shlex.join(parts)


def format_results(record) -> str:
    """A table of how the exported round drove the held-out and the bundled tracks."""
    lines = [f'{"track":<30}{"laps":>6}{"off":>5}{"lap s":>8}{"expert s":>10}{"ratio":>7}']
    for result in record.validation + record.bundled:
        mean = result['mean_lap_time_s']
        ratio = result['lap_time_ratio']
        lines.append(f'{result["track"]:<30}{result["laps"]:>3}/{result["laps_wanted"]:<2}'
                     f'{result["off_track"]:>5}{mean if mean else float("nan"):>8.2f}'
                     f'{result["expert_lap_time_s"]:>10.2f}'
                     f'{ratio if ratio else float("nan"):>7.2f}')
    return '\n'.join(lines)


class _progress_bar:
    """tqdm when it is installed (the 'sim' extra), else a line per phase."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._bar = None
        self._phase = ''

    def __enter__(self):
        try:
            from tqdm import tqdm
            self._bar = tqdm(total=self.total, unit='step', smoothing=0.05)
        except ImportError:
            self._bar = None
        return self.update

    def update(self, description: str, units: int) -> None:
        if self._bar is not None:
            if description != self._phase:
                self._bar.set_description(description)
            self._bar.update(units)
        elif description != self._phase:
            print(description, flush=True)
        self._phase = description

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()


def main(argv: list[str] | None = None) -> int:
    """`python -m deepracer_nodes.train_cmd`: the same command without the `deepracer` CLI."""
    parser = argparse.ArgumentParser(prog='deepracer train', description=__doc__.split('\n')[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == '__main__':
    raise SystemExit(main())
