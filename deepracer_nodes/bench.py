"""`deepracer bench`: what the stack holds, measured in one run, written as a table and JSON.

The nodes run as they do on a car, as separate processes started through their own
main(): a camera process (synthetic source at the requested rate, resized to the model's
input at the source) -> an inference process (the ONNX policy) -> the servo node, which
runs in this process (on the single-threaded executor of its main()) so its own
measurement of every write is read directly, writing duty cycles into a temporary sysfs
PWM tree. Measured:

- end-to-end latency, image header stamp -> PWM duty cycle written (the servo node's own
  measurement at each write), p50 / p99 / max;
- raw onnxruntime latency of the same model in the same run: session.run alone on the
  same frames at the same rate, measured just before the pipeline starts, and the
  pipeline's overhead over it;
- frames published (counted on the camera_info topic) vs processed (commands the servo
  received) vs dropped (the inference node keeps only the newest frame);
- the highest frame rate the pipeline sustains (at most 2 % dropped, latency flat);
- the servo node's command rate (commands in, duty cycles written, per second);
- model load time (Policy.load) and model swap through the inference node's `model`
  parameter while frames flow: the parameter call, the first command from the new model,
  and commands lost (commands seen vs frames the node reports processed);
- the embedded simulator's real-time factor in a `deepracer sim` race (lockstep, as fast
  as the whole ROS pipeline answers), through sim_run's own module API;
- fuzzing: every parser of outside input (deepracer_nodes.fuzz) on --fuzz-examples
  generated inputs each: accepted, rejected with a clear error, crashes, out of range.

Each of the rates 15, 30 and 60 fps gets its own raw-onnxruntime measurement right before
its pipeline run, so every end-to-end/raw ratio compares figures of the same minute.

The model is a DeepRacer-shaped "shallow" CNN with continuous outputs (so nearly every
frame changes the duty cycle and is measured) unless --model names one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from deepracer_nodes.ros_runtime import (
    isolate_dds_domain, ros_graph, set_remote_parameter, start_node_process, stop_processes,
    wait_for)

# A frame rate is sustained when at most this share of frames is dropped and the latency
# stays flat (p99 within this factor of p50).
SUSTAINED_MAX_DROP = 0.02
SUSTAINED_MAX_P99_OVER_P50 = 2.0
BENCH_LATENCY_WINDOW = 1_000_000


@dataclass(frozen=True)
class Percentiles:
    """p50, p99 and max of a set of samples, in milliseconds."""

    p50_ms: float
    p99_ms: float
    max_ms: float
    samples: int

    @classmethod
    def of(cls, seconds: list[float] | np.ndarray) -> Percentiles:
        values = np.asarray(seconds, dtype=float) * 1e3
        if values.size == 0:
            return cls(math.nan, math.nan, math.nan, 0)
        p50, p99 = np.percentile(values, [50, 99])
        return cls(float(p50), float(p99), float(values.max()), int(values.size))


@dataclass(frozen=True)
class PipelineRun:
    """Figures of one run of the whole pipeline at one frame rate."""

    fps: float
    duration_s: float
    frames_published: int
    frames_processed: int
    frames_dropped: int
    end_to_end: Percentiles
    onnxruntime: Percentiles

    @property
    def drop_ratio(self) -> float:
        return self.frames_dropped / max(self.frames_published, 1)

    @property
    def overhead_p99_ms(self) -> float:
        """How much the pipeline adds over raw onnxruntime inference, at p99."""
        return self.end_to_end.p99_ms - self.onnxruntime.p99_ms

    @property
    def sustained(self) -> bool:
        latency_flat = self.end_to_end.p99_ms <= SUSTAINED_MAX_P99_OVER_P50 * max(
            self.end_to_end.p50_ms, self.onnxruntime.p99_ms)
        return self.drop_ratio <= SUSTAINED_MAX_DROP and latency_flat

    def as_dict(self) -> dict:
        return {**asdict(self), 'drop_ratio': self.drop_ratio,
                'overhead_p99_ms': self.overhead_p99_ms, 'sustained': self.sustained,
                'ratio_p50': self.end_to_end.p50_ms / self.onnxruntime.p50_ms,
                'ratio_p99': self.end_to_end.p99_ms / self.onnxruntime.p99_ms}


def build_benchmark_model(folder: Path) -> Path:
    """A DeepRacer 'shallow' CNN (random weights, continuous actions) in a model folder."""
    from deepracer_nodes.core import onnx_build
    model = onnx_build.shallow_cnn(2, continuous=True)
    onnx_build.write_model_folder(folder, model, onnx_build.continuous_metadata())
    return folder


def raw_onnxruntime(model: Path, fps: float, duration_s: float) -> Percentiles:
    """session.run alone (no ROS, no preprocessing) on synthetic frames at the given rate."""
    from deepracer_nodes.core import spec
    from deepracer_nodes.core.frame_sources import SyntheticSource
    from deepracer_nodes.core.policy import Policy

    policy = Policy.load(model)
    source = SyntheticSource(spec.MODEL_INPUT.width, spec.MODEL_INPUT.height, realtime=False)
    source.open()
    samples, period = [], 1.0 / fps
    next_frame = time.perf_counter()
    for _ in range(max(1, round(fps * duration_s))):
        samples.append(policy.act(source.read()).inference_s)
        next_frame += period
        time.sleep(max(0.0, next_frame - time.perf_counter()))
    source.close()
    return Percentiles.of(samples)


class ServoInThisProcess:
    """The servo node (sysfs tree in workdir) on a single-threaded executor thread, as its
    main() runs it, plus a counter of the frames the camera published."""

    def __init__(self, context, workdir: Path) -> None:
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.parameter import Parameter
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo

        from deepracer_nodes.core import spec
        from deepracer_nodes.core.sysfs_tree import make_pwm_tree
        from deepracer_nodes.servo_node import ServoNode

        self.frames_published = 0
        pwm_root = make_pwm_tree(workdir)
        self.node = ServoNode(context=context, latency_window=BENCH_LATENCY_WINDOW,
                              parameter_overrides=[
                                  Parameter('pwm_root', value=str(pwm_root)),
                                  Parameter('calibration_file',
                                            value=str(workdir / 'no-calibration.json'))])
        # camera_info is small and published with every image: counting it costs nothing.
        self.node.create_subscription(CameraInfo, spec.TOPICS.camera_info, self._count,
                                      qos_profile_sensor_data)
        self._executor = SingleThreadedExecutor(context=context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._executor.spin, daemon=True)
        self._thread.start()

    def _count(self, _msg) -> None:
        self.frames_published += 1

    def counters(self) -> tuple[int, int, int]:
        """(frames published, commands received, latency samples so far)."""
        return (self.frames_published, self.node.commands_received,
                len(self.node.latency.samples_s()))

    def enable(self, timeout_s: float = 10.0) -> None:
        """Start the car through its start/stop service, as a user would."""
        from std_srvs.srv import SetBool

        from deepracer_nodes.core import spec

        client = self.node.create_client(SetBool, spec.TOPICS.servo_enable)
        if not client.wait_for_service(timeout_sec=timeout_s):
            raise RuntimeError('the servo node did not offer its enable service')
        response = client.call(SetBool.Request(data=True), timeout_sec=timeout_s)
        if response is None or not response.success:
            raise RuntimeError(f'could not enable the servo node: {response}')
        self.node.destroy_client(client)

    def close(self) -> None:
        self._executor.remove_node(self.node)
        self.node.destroy_node()
        self._executor.shutdown(timeout_sec=2.0)
        self._thread.join(timeout=2.0)


def run_pipeline(model: Path, fps: float, duration_s: float, workdir: Path, raw: Percentiles,
                 warmup_s: float = 2.0, start_timeout_s: float = 30.0) -> PipelineRun:
    """Camera and inference processes -> servo (this process) for duration_s at fps."""
    from deepracer_nodes.core import spec

    workdir.mkdir(parents=True, exist_ok=True)
    with ros_graph() as context:
        servo = ServoInThisProcess(context, workdir)
        processes = [
            start_node_process('inference_node', model=model),
            start_node_process('camera_node', source='synthetic', fps=float(fps),
                               output_width=spec.MODEL_INPUT.width,
                               output_height=spec.MODEL_INPUT.height)]
        try:
            servo.enable()
            _wait_until(lambda: servo.counters()[1] > 0, start_timeout_s,
                        'no command reached the servo node')
            time.sleep(warmup_s)
            before = servo.counters()
            time.sleep(duration_s)
            after = servo.counters()
            e2e = servo.node.latency.samples_s()[before[2]:after[2]]
        finally:
            stop_processes(processes)
            servo.close()
    published, processed = after[0] - before[0], after[1] - before[1]
    return PipelineRun(fps=fps, duration_s=duration_s, frames_published=published,
                       frames_processed=processed,
                       frames_dropped=max(0, published - processed),
                       end_to_end=Percentiles.of(e2e), onnxruntime=raw)


def _wait_until(condition: Callable[[], bool], timeout_s: float, failure: str) -> None:
    if wait_for(condition, timeout_s, step_s=0.05) is None:
        raise RuntimeError(failure)


def servo_command_rate(workdir: Path, duration_s: float = 5.0) -> dict:
    """Commands/s the servo node takes in and turns into duty cycles (sysfs tree)."""
    import rclpy
    from geometry_msgs.msg import TwistStamped

    from deepracer_nodes.core import spec

    with ros_graph() as context:
        servo = ServoInThisProcess(context, workdir)
        try:
            servo.enable()
            publisher_node = rclpy.create_node('bench_commands', context=context)
            publisher = publisher_node.create_publisher(
                TwistStamped, spec.TOPICS.auto_cmd_vel, 10)
            time.sleep(0.5)  # discovery
            _, received_before, written_before = servo.counters()
            sent, started = 0, time.perf_counter()
            message = TwistStamped()
            while time.perf_counter() - started < duration_s:
                # Alternating commands, so each one changes both duty cycles.
                message.twist.linear.x = 1.0 + 0.5 * (sent % 2)
                message.twist.angular.z = 2.0 * (-1) ** sent
                message.header.stamp = servo.node.get_clock().now().to_msg()
                publisher.publish(message)
                sent += 1
                time.sleep(0.001)
            time.sleep(0.2)
            elapsed = time.perf_counter() - started
            _, received, written = servo.counters()
            publisher_node.destroy_node()
        finally:
            servo.close()
    return {'sent_per_s': sent / elapsed,
            'received_per_s': (received - received_before) / elapsed,
            'written_per_s': (written - written_before) / elapsed}


# Raw onnxruntime is measured for at most this long per rate (its spread settles quickly).
RAW_MAX_S = 10.0
SECTIONS = ('sweep', 'servo', 'swap', 'sim', 'fuzz')


def describe_run(run: PipelineRun) -> str:
    return (f'  {run.fps:6.0f} fps: processed {run.frames_processed}/{run.frames_published}, '
            f'e2e p50 {run.end_to_end.p50_ms:.2f} ms p99 {run.end_to_end.p99_ms:.2f} ms, '
            f'raw p50 {run.onnxruntime.p50_ms:.2f} ms'
            f' -> {"sustained" if run.sustained else "not sustained"}')


def pipeline_at_rates(model: Path, rates: list[float], duration_s: float, workdir: Path,
                      report: Callable[[str], None]) -> list[PipelineRun]:
    """At each rate: raw onnxruntime at that rate, then the whole pipeline at that rate."""
    runs = []
    for fps in rates:
        raw = raw_onnxruntime(model, fps, min(duration_s, RAW_MAX_S))
        runs.append(run_pipeline(model, fps, duration_s, workdir / f'rate-{fps:g}', raw))
        report(describe_run(runs[-1]))
    return runs


def highest_sustained_fps(model: Path, workdir: Path, measured: list[PipelineRun],
                          rates: list[float], seconds_each: float,
                          report: Callable[[str], None]) -> tuple[float, list[PipelineRun]]:
    """The highest rate kept: from the runs already measured, then, when the fastest of
    them was sustained, stepping up above it until the pipeline no longer keeps up."""
    best = max((run.fps for run in measured if run.sustained), default=0.0)
    runs: list[PipelineRun] = []
    if not measured or not max(measured, key=lambda run: run.fps).sustained:
        return best, runs
    for fps in sorted(rate for rate in rates if rate > best):
        raw = raw_onnxruntime(model, fps, min(seconds_each, 3.0))
        run = run_pipeline(model, fps, seconds_each, workdir / f'sweep-{fps:g}', raw,
                           warmup_s=1.0)
        runs.append(run)
        report(describe_run(run))
        if not run.sustained:
            break
        best = fps
    return best, runs


# --- model load and swap -------------------------------------------------------------------

# Disjoint speed ranges, so each command says which model computed it.
SWAP_SPEED_RANGES = {'A': (0.5, 1.0), 'B': (1.5, 2.0)}


class CommandWatcher:
    """Commands (arrival time, speed) and the inference node's diagnostics, in this process."""

    def __init__(self, context) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import TwistStamped
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        from deepracer_nodes.core import spec

        self.lock = threading.Lock()
        self.commands: list[tuple[float, float]] = []
        self.processed: tuple[float, int] | None = None  # (arrival, frames processed)
        self.node = rclpy.create_node('bench_watcher', context=context)
        reliable = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(TwistStamped, spec.TOPICS.auto_cmd_vel,
                                      self._on_command, reliable)
        self.node.create_subscription(DiagnosticArray, spec.TOPICS.diagnostics,
                                      self._on_diagnostics, reliable)
        self._executor = SingleThreadedExecutor(context=context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._executor.spin, daemon=True)
        self._thread.start()

    def _on_command(self, msg) -> None:
        with self.lock:
            self.commands.append((time.perf_counter(), msg.twist.linear.x))

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith('inference_node'):
                values = {kv.key: kv.value for kv in status.values}
                with self.lock:
                    self.processed = (time.perf_counter(), int(values['frames processed']))

    def first_command_in(self, speed_range: tuple[float, float], after: float) -> float | None:
        with self.lock:
            for arrival, speed in self.commands:
                if arrival > after and speed_range[0] <= speed <= speed_range[1]:
                    return arrival
        return None

    def set_model(self, folder: Path, timeout_s: float = 30.0) -> None:
        ok, reason = set_remote_parameter(self.node, 'inference_node', 'model', str(folder),
                                          timeout_s)
        if not ok:
            raise RuntimeError(f'model swap refused: {reason}')

    def close(self) -> None:
        self._executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        self._thread.join(timeout=2.0)


def model_load_and_swap(workdir: Path, swaps: int, fps: float = 30.0,
                        loads: int = 5) -> dict:
    """Policy.load time, then swaps A <-> B through the `model` parameter while the camera
    runs at fps: reply time, time to the first command of the new model, commands lost."""
    from deepracer_nodes.core import onnx_build, spec
    from deepracer_nodes.core.policy import Policy

    models = {}
    for seed, (name, speeds) in enumerate(SWAP_SPEED_RANGES.items()):
        models[name] = onnx_build.write_model_folder(
            workdir / f'swap_{name}', onnx_build.shallow_cnn(2, continuous=True, seed=seed),
            onnx_build.continuous_metadata(speed_mps=speeds))
    load_s = []
    for _ in range(loads):
        started = time.perf_counter()
        Policy.load(models['A'])
        load_s.append(time.perf_counter() - started)
    reply_s, first_command_s = [], []
    with ros_graph() as context:
        watcher = CommandWatcher(context)
        processes = [start_node_process('inference_node', model=models['A'])]
        try:
            # The camera starts once this process hears the inference node, so every
            # command it publishes is seen here and the counts compare exactly.
            _wait_until(lambda: watcher.processed is not None, 60.0,
                        'no diagnostics from the inference node')
            time.sleep(0.5)
            processes.append(start_node_process(
                'camera_node', source='synthetic', fps=float(fps),
                output_width=spec.MODEL_INPUT.width, output_height=spec.MODEL_INPUT.height))
            _wait_until(lambda: watcher.first_command_in(SWAP_SPEED_RANGES['A'], 0.0), 60.0,
                        'no command from the first model')
            for index in range(swaps):
                name = 'B' if index % 2 == 0 else 'A'
                started = time.perf_counter()
                watcher.set_model(models[name])
                reply_s.append(time.perf_counter() - started)
                _wait_until(lambda: watcher.first_command_in(SWAP_SPEED_RANGES[name], started),
                            10.0, f'no command from model {name} after the swap')
                first_command_s.append(
                    watcher.first_command_in(SWAP_SPEED_RANGES[name], started) - started)
                time.sleep(0.3)
            stop_processes(processes[1:])  # the camera: no more frames
            stopped = time.perf_counter() + 0.3
            _wait_until(lambda: watcher.processed[0] > stopped, 5.0,
                        'no diagnostics from the inference node after the camera stopped')
        finally:
            stop_processes(processes)
            watcher.close()
    seen, processed = len(watcher.commands), watcher.processed[1]
    return {'load': asdict(Percentiles.of(load_s)), 'swaps': swaps, 'fps': fps,
            'swap_reply': asdict(Percentiles.of(reply_s)),
            'first_command_from_new_model': asdict(Percentiles.of(first_command_s)),
            'commands_seen': seen, 'frames_processed': processed,
            'commands_lost': processed - seen,
            'model_size_mb': (models['A'] / 'model.onnx').stat().st_size / 1e6}


# --- the simulator ---------------------------------------------------------------------------

def simulator_real_time_factor(workdir: Path, laps: int) -> dict:
    """A `deepracer sim` race through sim_run's module API (bundled model, lockstep: as fast
    as the whole ROS pipeline answers); its own figures from results.json."""
    import contextlib
    import io

    from deepracer_nodes import sim_run

    parser = argparse.ArgumentParser()
    sim_run.add_arguments(parser)
    output = workdir / 'sim'
    args = parser.parse_args(['--laps', str(laps), '--no-video', '--no-progress',
                              '--output', str(output)])
    table = io.StringIO()
    with contextlib.redirect_stdout(table):
        status = sim_run.run(args)
    results = json.loads((output / 'results.json').read_text())
    performance = results.get('performance', {})
    return {'exit_status': status, 'completed': results.get('completed'),
            'track': results.get('track'), 'laps': results.get('laps_completed'),
            'race_time_s': results.get('race_time_s'), **performance}


# --- fuzzing ---------------------------------------------------------------------------------

def fuzzing(examples: int, report: Callable[[str], None]) -> list[dict]:
    """Every parser of outside input on `examples` generated inputs (deepracer_nodes.fuzz)."""
    from deepracer_nodes import fuzz

    try:
        import hypothesis  # noqa: F401 - the generator of every fuzz target
    except ImportError:
        report("  fuzzing needs hypothesis: pip install 'deepracer_nodes[test]' (skipped)")
        return []
    results = []
    for name in fuzz.TARGETS:
        outcome = fuzz.run_target(name, examples)
        results.append(outcome.as_dict())
        if not outcome.available:
            report(f'  {name:14} not available in this tree')
            continue
        report(f'  {name:14} {outcome.examples} inputs: {outcome.accepted} accepted, '
               f'{outcome.rejected} rejected, {outcome.crashes} crashes, '
               f'{outcome.out_of_range} out of range ({outcome.seconds:.0f} s)')
        for failure in outcome.failures:
            report(f'      {failure[:160]}')
    return results


# --- report ------------------------------------------------------------------------------------

def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    lines = ['  '.join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
             for row in [headers, *rows]]
    lines.insert(1, '  '.join('-' * width for width in widths))
    return '\n'.join(lines)


def _ms(p: dict | Percentiles, keys=('p50_ms', 'p99_ms', 'max_ms')) -> str:
    values = asdict(p) if isinstance(p, Percentiles) else p
    return ' / '.join(f'{values[k]:.2f}' for k in keys)


def format_table(figures: dict) -> str:
    """The figures as plain-text tables, one per section."""
    parts = []
    rows = []
    for run in figures['rates']:
        e2e, raw = run['end_to_end'], run['onnxruntime']
        rows.append([f'{run["fps"]:g}',
                     f'{run["frames_published"]} / {run["frames_processed"]} / '
                     f'{run["frames_dropped"]}',
                     _ms(e2e), _ms(raw), f'{run["ratio_p50"]:.2f} / {run["ratio_p99"]:.2f}',
                     f'{run["overhead_p99_ms"]:.2f}', 'yes' if run['sustained'] else 'no'])
    parts.append('Pipeline: camera -> inference -> servo PWM, separate processes\n' + _table(
        ['fps', 'published / processed / dropped', 'stamp->PWM p50 / p99 / max ms',
         'raw onnxruntime p50 / p99 / max ms', 'e2e/raw p50 / p99', 'overhead p99 ms',
         'sustained'], rows))
    summary = [['highest sustained frame rate', f'{figures["highest_sustained_fps"]:g} fps']]
    if 'servo' in figures:
        servo = figures['servo']
        summary.append(['servo node commands in / duty writes',
                        f'{servo["received_per_s"]:.0f} / {servo["written_per_s"]:.0f} per s'])
    if 'model' in figures:
        model = figures['model']
        summary += [
            ['model load (Policy.load, p50 / max)',
             f'{model["load"]["p50_ms"]:.1f} / {model["load"]["max_ms"]:.1f} ms '
             f'({model["model_size_mb"]:.0f} MB)'],
            [f'model swap at {model["fps"]:g} fps: reply p50 / max',
             f'{model["swap_reply"]["p50_ms"]:.1f} / {model["swap_reply"]["max_ms"]:.1f} ms'],
            ['  first command from the new model p50 / max',
             f'{model["first_command_from_new_model"]["p50_ms"]:.1f} / '
             f'{model["first_command_from_new_model"]["max_ms"]:.1f} ms'],
            ['  swaps, commands seen / frames processed / lost',
             f'{model["swaps"]}, {model["commands_seen"]} / {model["frames_processed"]} / '
             f'{model["commands_lost"]}']]
    if 'simulator' in figures:
        sim = figures['simulator']
        summary += [['simulator real-time factor (lockstep)',
                     f'{sim.get("real_time_factor", math.nan):.1f}x on {sim.get("track")} '
                     f'({sim.get("laps")} laps, {sim.get("race_time_s", math.nan):.1f} s sim '
                     f'in {sim.get("wall_time_s", math.nan):.1f} s)'],
                    ['  render / sim / pipeline per frame',
                     f'{sim.get("render_ms_per_frame", math.nan):.2f} / '
                     f'{sim.get("sim_ms_per_frame", math.nan):.2f} / '
                     f'{sim.get("pipeline_ms_per_frame", math.nan):.2f} ms']]
    parts.append(_table(['figure', 'value'], summary))
    if 'fuzzing' in figures:
        rows = [[f['target'], str(f['examples']), str(f['accepted']), str(f['rejected']),
                 str(f['crashes']), str(f['out_of_range']), str(f['unclear_errors']),
                 f'{f["seconds"]:.0f}'] if f['available'] else
                [f['target'], 'not available', '', '', '', '', '', '']
                for f in figures['fuzzing']]
        parts.append('Fuzzing (hypothesis), per parser of outside input\n' + _table(
            ['parser', 'inputs', 'accepted', 'rejected (clear error)', 'crashes',
             'out of range', 'unclear errors', 's'], rows))
    parts.append(f'bench took {figures["seconds"]:.0f} s on {figures["machine"]["cpus"]} cores '
                 f'(load average {figures["machine"]["load_average"]:.1f} at start)')
    return '\n\n'.join(parts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--rates', type=float, nargs='+', default=[15.0, 30.0, 60.0],
                        help='camera rates measured in full (default: %(default)s)')
    parser.add_argument('--duration', type=float, default=20.0,
                        help='seconds of pipeline at each rate, after a warm-up')
    parser.add_argument('--model', type=Path, default=None,
                        help='model folder to drive with (default: a DeepRacer-shaped CNN)')
    parser.add_argument('--sweep', type=float, nargs='*',
                        default=[90, 120, 180, 240, 320],
                        help='rates tried above the measured ones for the highest sustained')
    parser.add_argument('--sweep-seconds', type=float, default=5.0)
    parser.add_argument('--swaps', type=int, default=10,
                        help='model swaps under a 30 fps camera (default: %(default)s)')
    parser.add_argument('--sim-laps', type=int, default=3,
                        help='laps of the simulator race (default: %(default)s)')
    parser.add_argument('--fuzz-examples', type=int, default=10_000,
                        help='generated inputs per parser (default: %(default)s)')
    parser.add_argument('--skip', nargs='*', default=[], choices=SECTIONS,
                        help='sections to leave out')
    parser.add_argument('--json', type=Path, default=None, help='also write the figures here')


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    print(f'ROS domain {isolate_dds_domain()} (private to this run)')
    say = lambda text: print(text, flush=True)  # noqa: E731
    figures: dict = {'machine': {'cpus': os.cpu_count(), 'load_average': os.getloadavg()[0]}}
    with tempfile.TemporaryDirectory(prefix='deepracer-bench-') as tmp:
        workdir = Path(tmp)
        model = args.model or build_benchmark_model(workdir / 'bench_model')
        say(f'model: {model}')
        say(f'pipeline at {", ".join(f"{r:g}" for r in args.rates)} fps, {args.duration:g} s '
            'each (raw onnxruntime first at each rate):')
        runs = pipeline_at_rates(model, list(args.rates), args.duration, workdir, say)
        figures['rates'] = [r.as_dict() for r in runs]
        best, sweep = max((r.fps for r in runs if r.sustained), default=0.0), []
        if 'sweep' not in args.skip:
            say('highest sustained frame rate:')
            best, sweep = highest_sustained_fps(model, workdir, runs, list(args.sweep),
                                                args.sweep_seconds, say)
        figures['highest_sustained_fps'] = best
        figures['sweep'] = [r.as_dict() for r in sweep]
        if 'servo' not in args.skip:
            say('servo command rate ...')
            figures['servo'] = servo_command_rate(workdir / 'servo-rate')
        if 'swap' not in args.skip:
            say(f'model load and {args.swaps} swaps at 30 fps ...')
            figures['model'] = model_load_and_swap(workdir, args.swaps)
        if 'sim' not in args.skip:
            say(f'simulator: {args.sim_laps} laps of deepracer sim ...')
            figures['simulator'] = simulator_real_time_factor(workdir, args.sim_laps)
        if 'fuzz' not in args.skip:
            say(f'fuzzing, {args.fuzz_examples} inputs per parser:')
            figures['fuzzing'] = fuzzing(args.fuzz_examples, say)
    figures['seconds'] = time.perf_counter() - started
    print()
    print(format_table(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))
        print(f'\nfigures written to {args.json}')
    return 0
