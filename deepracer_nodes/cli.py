"""`deepracer`: the user command. Each subcommand lives in its own module, imported on use
so `deepracer --help` stays fast and a subcommand's heavy imports cost nothing elsewhere."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module with add_arguments(parser) and run(args) -> int, one-line help)
SUBCOMMANDS = {
    'bench': ('deepracer_nodes.bench',
              'measure latency, frame rate and servo rate of the drive pipeline'),
    'calibrate': ('deepracer_nodes.calibrate_tool',
                  'calibrate steering and throttle (interactive, or show/set/import/export)'),
    'model': ('deepracer_nodes.model_tool',
              'import, validate, list and load DeepRacer models'),
    'sim': ('deepracer_nodes.sim_run',
            'race a model in the embedded simulator through the whole ROS stack'),
    'train': ('deepracer_nodes.train_cmd',
              'train a camera policy by imitation on the embedded simulator (CPU)'),
    'worlds': ('deepracer_nodes.sim.sdf_world',
               'generate the Gazebo worlds from the track definitions and spec.py'),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='deepracer', description='Drive, simulate, calibrate and benchmark a DeepRacer.')
    subparsers = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(module=module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    # Parse the command first, then let its module add its own arguments.
    known, _ = parser.parse_known_args(argv[:1] or ['--help'])
    module = importlib.import_module(known.module)
    sub = argparse.ArgumentParser(prog=f'deepracer {known.command}',
                                  description=SUBCOMMANDS[known.command][1])
    module.add_arguments(sub)
    return int(module.run(sub.parse_args(argv[1:])) or 0)


if __name__ == '__main__':
    raise SystemExit(main())
