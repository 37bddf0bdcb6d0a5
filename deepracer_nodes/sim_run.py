"""`deepracer sim`: race a model in the embedded simulator, the whole stack in one command.

The simulator node, the inference node (the model) and the servo node (backend 'sim',
started through its enable service) run on real ROS 2 topics in ONE process, each node
spun by its own single-threaded executor in its own thread, all on sim time (/clock).
One process because the race runs in lockstep: every frame waits for the pipeline's
answer, so nothing can run in parallel and what counts is the latency of each hop;
within one process the middleware hands messages over without leaving it.

At the end: a results table, and in the output folder results.json, race.png (the
driven line over the track, and the reward per step with --reward-function) and
race.mp4 (camera view beside an overhead view; race.gif where MP4 cannot be written).
Exit status: 0 when every lap was completed, 1 when the race was not completed or the
pipeline failed, 2 when it could not start (bad model, track, reward file, option).
"""

from __future__ import annotations

import argparse
import datetime
import math
import sys
import time
from pathlib import Path
from typing import Any

from deepracer_nodes.core import spec

EXIT_COMPLETED, EXIT_NOT_COMPLETED, EXIT_CANNOT_START = 0, 1, 2
# Auto time limit: a car averaging less than this is not racing any more.
SLOWEST_AVERAGE_SPEED_MPS = 0.3
PROGRESS_REFRESH_S = 0.1
# The progress bar shows the real-time factor once it means something.
RTF_SETTLE_S = 0.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from deepracer_nodes.sim import track_library
    parser.add_argument('--track', default='loop',
                        help='bundled track (' + ', '.join(track_library.track_names())
                             + ') or a DeepRacer route .npy file (default: %(default)s)')
    parser.add_argument('--laps', type=int, default=3, help='laps to race (default: 3)')
    parser.add_argument('--ros-domain-id', type=int, default=None,
                        help='DDS domain of the race, to watch it with ros2 tools '
                             '(default: one of its own, so other ROS graphs on this '
                             'machine never mix with it)')
    parser.add_argument('--model', default=spec.BUNDLED_MODEL,
                        help='model folder or name (default: the bundled %(default)s)')
    parser.add_argument('--max-speed-scale', type=float, default=1.0,
                        help='throttle scale in [0, 1], the console\'s "max speed %%" '
                             '(default: 1.0)')
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument('--fast', dest='real_time_factor', action='store_const', const=0.0,
                      help='as fast as possible, in lockstep with the pipeline (default)')
    pace.add_argument('--real-time', dest='real_time_factor', action='store_const', const=1.0,
                      help='in real time: the pipeline\'s latency matters as on the car')
    pace.add_argument('--real-time-factor', dest='real_time_factor', type=float,
                      help='a multiple of real time (0 = as fast as possible)')
    parser.set_defaults(real_time_factor=0.0)
    parser.add_argument('--reversed', action='store_true', help='drive the track the other way')
    parser.add_argument('--randomise', action='store_true',
                        help='randomise colours, lighting and sensor noise (sim-to-real)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the randomisation')
    parser.add_argument('--reward-function', type=Path, default=None, metavar='FILE',
                        help='a DeepRacer reward_function(params) file, called every step; '
                             'rewards are logged and plotted, an exception stops the race')
    parser.add_argument('--output', type=Path, default=None, metavar='DIR',
                        help='results folder (default: ./results/<time>_<track>)')
    parser.add_argument('--video', action=argparse.BooleanOptionalAction, default=True,
                        help='write the race video (default: yes)')
    parser.add_argument('--time-limit', type=float, default=0.0,
                        help='sim seconds of racing before giving up; 0 = laps x track '
                             f'length / {SLOWEST_AVERAGE_SPEED_MPS} m/s')
    parser.add_argument('--timeout', type=float, default=600.0,
                        help='wall-clock seconds before giving up (default: %(default)s)')
    parser.add_argument('--no-progress', dest='progress', action='store_false',
                        help='no progress bar')


def check_arguments(args: argparse.Namespace) -> None:
    """ValueError with the reason when an option cannot work."""
    if args.laps < 1:
        raise ValueError(f'--laps must be at least 1, got {args.laps}')
    if not 0.0 <= args.max_speed_scale <= 1.0:
        raise ValueError(f'--max-speed-scale must be in [0, 1], got {args.max_speed_scale}')
    if not (math.isfinite(args.real_time_factor) and args.real_time_factor >= 0.0):
        raise ValueError(f'--real-time-factor must be >= 0, got {args.real_time_factor}')
    if not (math.isfinite(args.time_limit) and args.time_limit >= 0.0):
        raise ValueError(f'--time-limit must be >= 0, got {args.time_limit}')
    if not args.timeout > 0.0:
        raise ValueError(f'--timeout must be positive, got {args.timeout}')
    if args.reward_function is not None and not args.reward_function.is_file():
        raise ValueError(f'reward function file {args.reward_function} does not exist')


def default_output(track: str) -> Path:
    stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
    return Path('results') / f'{stamp}_{Path(track).stem}'


def resolve_model_folder(model: str) -> Path:
    """The model folder the inference node will load; ValueError (ModelError) when none."""
    from deepracer_nodes.core.policy import default_search_dirs, resolve_model
    folder = resolve_model(model, default_search_dirs())
    return folder.resolve()


class Stack:
    """The three nodes of a simulated race on a private ROS graph, one thread each."""

    def __init__(self, context, args: argparse.Namespace, model: Path, output: Path,
                 time_limit_s: float) -> None:
        from rclpy.parameter import Parameter

        from deepracer_nodes.core import calibration as cal
        from deepracer_nodes.inference_node import InferenceNode
        from deepracer_nodes.ros_runtime import NodeThreads, call_set_bool
        from deepracer_nodes.servo_node import ServoNode
        from deepracer_nodes.sim_node import SimNode

        sim_time = Parameter('use_sim_time', value=True)
        # The simulated car's own calibration file: factory values and the chosen scale,
        # so a real car's calibration is never read or written by a simulation.
        calibration_file = output / 'sim_calibration.json'
        cal.save_calibration(calibration_file, cal.FACTORY_CALIBRATION.with_changes(
            max_speed_scale=args.max_speed_scale))
        self.threads = NodeThreads(context, single_threaded=True)
        try:
            self.servo = ServoNode(context=context, parameter_overrides=[
                sim_time, Parameter('backend', value='sim'),
                Parameter('calibration_file', value=str(calibration_file))])
            self.threads.spin(self.servo)
            self.inference = InferenceNode(context=context, parameter_overrides=[
                sim_time, Parameter('model', value=str(model)),
                # Nobody listens to them here; each message costs the lockstep loop.
                Parameter('publish_probabilities', value=False)])
            if self.inference.loaded_model is None:
                raise ValueError(f'the inference node could not load the model {model} '
                                 '(its error is in the log above)')
            self.threads.spin(self.inference)
            call_set_bool(context, spec.TOPICS.servo_enable, True)
            parameters = {
                'track': args.track, 'laps': args.laps, 'time_limit': time_limit_s,
                'real_time_factor': float(args.real_time_factor),
                'reversed': args.reversed, 'randomise': args.randomise, 'seed': args.seed,
                'reward_function': str(args.reward_function or '')}
            self.sim = SimNode(context=context, parameter_overrides=[
                Parameter(name, value=value) for name, value in parameters.items()])
        except BaseException:
            self.threads.stop()
            raise

    def start(self) -> None:
        self.threads.spin(self.sim)

    def stop(self) -> None:
        self.threads.stop()


def _progress_bar(enabled: bool, laps: int):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=100.0 * laps, unit='%', file=sys.stderr, mininterval=0.2,
                bar_format='{l_bar}{bar}| {n:.0f}/{total:.0f} % [{elapsed}<{remaining}{postfix}]',
                desc='race')


def wait_for_race(stack: Stack, args: argparse.Namespace) -> tuple[str | None, float, float]:
    """Follow the race until it ends, the wall-clock timeout passes or Ctrl-C.

    Returns (problem or None, wall seconds, sim seconds) of the racing part: from the green
    light (first moving command) to the end.
    """
    sim = stack.sim
    bar = _progress_bar(args.progress, args.laps)
    started = time.monotonic()
    green: tuple[float, float] | None = None  # (wall, sim) at the green light
    problem = None
    try:
        while not sim.finished.wait(PROGRESS_REFRESH_S):
            state = sim.state()
            if green is None and state.status.value != 'ready':
                green = (time.monotonic(), state.time_s - state.race_time_s)
            if bar is not None:
                _show(bar, state, green)
            if time.monotonic() - started > args.timeout:
                problem = (f'gave up after {args.timeout:g} s of wall-clock time at '
                           f'{state.completion:.1f} % of the race')
                break
    except KeyboardInterrupt:
        problem = 'interrupted (Ctrl-C)'
    ended = time.monotonic()
    state = sim.state()
    if bar is not None:
        _show(bar, state, green)
        bar.close()
    if green is None:
        return problem or 'the car never started', 0.0, 0.0
    if sim.response_timeouts and problem is None and not state.lap_times_s:
        problem = f'the pipeline did not answer {sim.response_timeouts} frames'
    wall = ended - green[0]
    return problem, wall, state.race_time_s


def _show(bar, state, green) -> None:
    bar.n = min(bar.total, state.completion * bar.total / 100.0)
    lap = min(state.laps_completed + 1, state.laps_target)
    rtf = ''
    if green is not None and time.monotonic() - green[0] > RTF_SETTLE_S:
        rtf = f'{state.race_time_s / (time.monotonic() - green[0]):.1f}x'
    bar.set_postfix_str(f'lap {lap}/{state.laps_target} off-track {state.off_track_count} '
                        f'{rtf}', refresh=False)
    bar.refresh()


def run(args: argparse.Namespace) -> int:
    from deepracer_nodes.core.policy import ModelError
    from deepracer_nodes.ros_runtime import isolate_dds_domain, ros_graph
    from deepracer_nodes.sim import results as sim_results
    from deepracer_nodes.sim_node import load_track

    try:
        check_arguments(args)
        model = resolve_model_folder(args.model)
        track = load_track(args.track)
        # A race of its own: another simulation or a car stack on this machine must
        # neither drive this car nor be driven by it.
        domain = isolate_dds_domain(args.ros_domain_id)
    except (ValueError, ModelError) as error:
        print(f'deepracer sim: {error}', file=sys.stderr)
        return EXIT_CANNOT_START
    time_limit = args.time_limit or args.laps * track.length_m / SLOWEST_AVERAGE_SPEED_MPS
    output = args.output or default_output(args.track)
    output.mkdir(parents=True, exist_ok=True)
    print(f'racing {args.model} ({model}) on {track.name}: {args.laps} laps, '
          + ('as fast as possible' if args.real_time_factor == 0
             else f'{args.real_time_factor:g}x real time')
          + f', ROS domain {domain} on this host', file=sys.stderr)
    recorder = sim_results.RaceRecorder(keep_frames=args.video)
    with ros_graph() as context:
        try:
            stack = Stack(context, args, model, output, time_limit)
        except (ValueError, RuntimeError) as error:
            report = error.report() if hasattr(error, 'report') else str(error)
            print(f'deepracer sim: cannot start: {report}', file=sys.stderr)
            return EXIT_CANNOT_START
        stack.sim.step_observers.append(recorder)
        try:
            stack.start()
            problem, wall_s, sim_s = wait_for_race(stack, args)
        finally:
            stack.stop()
    sim = stack.sim
    lockstep = args.real_time_factor == 0.0
    figures = sim_results.RunFigures(
        wall_time_s=wall_s, sim_time_s=sim_s, frames=sim.frames_published,
        render_ms_mean=1e3 * sim.render_total_s / max(sim.frames_published, 1),
        render_ms_p99=_p99_ms(list(sim.render_s)), response_timeouts=sim.response_timeouts,
        grace_steps=sim.grace_steps, commands_received=sim.commands_received,
        # Measured in lockstep only: in real time the timer sets the pace.
        pipeline_wait_s=sim.pipeline_wait_total_s if lockstep else math.nan,
        sim_work_s=sim.sim_work_total_s if lockstep else math.nan)
    results = sim_results.race_results(sim.state(), recorder.records, figures,
                                       _settings(args, model, time_limit), sim.session.track,
                                       pipeline_error=problem)
    results['files'] = _write_files(output, results, recorder, sim, args)
    print()
    print(sim_results.format_table(results))
    print(f'\nresults in {output}/: ' + ', '.join(Path(p).name for p in results['files'].values()))
    return EXIT_COMPLETED if results['completed'] else EXIT_NOT_COMPLETED


def _p99_ms(samples_s: list[float]) -> float:
    if not samples_s:
        return math.nan
    ordered = sorted(samples_s)
    return 1e3 * ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


def _settings(args: argparse.Namespace, model: Path, time_limit: float) -> dict[str, Any]:
    return {'model': str(model), 'track': args.track, 'laps': args.laps,
            'max_speed_scale': args.max_speed_scale,
            'real_time_factor': args.real_time_factor, 'reversed': args.reversed,
            'randomise': args.randomise, 'seed': args.seed, 'time_limit_s': time_limit,
            'reward_function': str(args.reward_function) if args.reward_function else None}


def _write_files(output: Path, results: dict[str, Any], recorder, sim,
                 args: argparse.Namespace) -> dict[str, str]:
    from deepracer_nodes.sim import results as sim_results

    files: dict[str, str] = {}
    track = sim.session.track
    files['plot'] = str(sim_results.plot_race(output / 'race.png', track, recorder.records))
    if args.video and recorder.frames:
        fps = sim.session.config.camera_fps / recorder.frame_stride
        files['video'] = str(sim_results.write_video(
            output / 'race.mp4', track, recorder.frames, fps, args.laps,
            sim.renderer.texture.appearance))
    files['results'] = str(output / 'results.json')
    sim_results.write_json(output / 'results.json', {**results, 'files': files})
    return files
