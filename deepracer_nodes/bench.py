"""`deepracer bench`: the drive pipeline's latency, frame rate and servo rate, with figures.

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
- the servo node's command rate (commands in, duty cycles written, per second).

The model is a DeepRacer-shaped "shallow" CNN with continuous outputs (so nearly every
frame changes the duty cycle and is measured) unless --model names one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from deepracer_nodes.ros_runtime import ros_graph

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


def start_node_process(module: str, **parameters) -> subprocess.Popen:
    """`python -m deepracer_nodes.<module> --ros-args -p name:=value ...`, its main()."""
    args = [sys.executable, '-m', f'deepracer_nodes.{module}', '--ros-args']
    for name, value in parameters.items():
        args += ['-p', f'{name}:={value}']
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_processes(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


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
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(failure)
        time.sleep(0.05)


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


def highest_sustained_fps(model: Path, workdir: Path, rates: list[float], seconds_each: float,
                          report: Callable[[str], None]) -> tuple[float, list[PipelineRun]]:
    """Step up the frame rate until the pipeline no longer keeps up; return the last kept."""
    best, runs = 0.0, []
    for fps in rates:
        raw = raw_onnxruntime(model, fps, min(seconds_each, 3.0))
        run = run_pipeline(model, fps, seconds_each, workdir / f'sweep-{fps:g}', raw,
                           warmup_s=1.0)
        runs.append(run)
        report(f'  {fps:6.0f} fps: processed {run.frames_processed}/{run.frames_published}, '
               f'e2e p50 {run.end_to_end.p50_ms:.2f} ms p99 {run.end_to_end.p99_ms:.2f} ms'
               f' -> {"sustained" if run.sustained else "not sustained"}')
        if not run.sustained:
            break
        best = fps
    return best, runs


def format_table(main: PipelineRun, best_fps: float, servo_rate: dict) -> str:
    """The figures as a plain-text table."""
    e2e, raw = main.end_to_end, main.onnxruntime
    rows = [
        ('frame rate (camera)', f'{main.fps:g} fps for {main.duration_s:g} s'),
        ('frames published / processed / dropped',
         f'{main.frames_published} / {main.frames_processed} / {main.frames_dropped}'),
        ('end-to-end stamp -> PWM p50 / p99 / max',
         f'{e2e.p50_ms:.2f} / {e2e.p99_ms:.2f} / {e2e.max_ms:.2f} ms ({e2e.samples} writes)'),
        ('raw onnxruntime p50 / p99 / max',
         f'{raw.p50_ms:.2f} / {raw.p99_ms:.2f} / {raw.max_ms:.2f} ms'),
        ('end-to-end / raw  at p50 / p99',
         f'{e2e.p50_ms / raw.p50_ms:.2f} / {e2e.p99_ms / raw.p99_ms:.2f}'),
        ('pipeline overhead at p99 (target <= 3 ms)', f'{main.overhead_p99_ms:.2f} ms'),
        ('highest sustained frame rate', f'{best_fps:g} fps'),
        ('servo node commands in / duty writes',
         f'{servo_rate["received_per_s"]:.0f} / {servo_rate["written_per_s"]:.0f} per s'
         ' (target >= 200)'),
    ]
    width = max(len(name) for name, _ in rows)
    return '\n'.join(f'{name:<{width}}  {value}' for name, value in rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--fps', type=float, default=30.0, help='camera rate of the main run')
    parser.add_argument('--duration', type=float, default=30.0,
                        help='seconds of the main run (after a warm-up)')
    parser.add_argument('--model', type=Path, default=None,
                        help='model folder to drive with (default: a DeepRacer-shaped CNN)')
    parser.add_argument('--sweep', type=float, nargs='*',
                        default=[30, 60, 90, 120, 180, 240, 320],
                        help='frame rates tried for the highest sustained rate')
    parser.add_argument('--sweep-seconds', type=float, default=5.0)
    parser.add_argument('--json', type=Path, default=None, help='also write the figures here')


def isolate_dds_domain() -> int:
    """A DDS domain of this run's own (inherited by the node processes), so another ROS
    graph on this machine (a car stack, a simulation) neither feeds nor loads the measure."""
    domain = 1 + os.getpid() % 100
    os.environ['ROS_DOMAIN_ID'] = str(domain)
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    return domain


def run(args: argparse.Namespace) -> int:
    print(f'ROS domain {isolate_dds_domain()} (private to this run)')
    with tempfile.TemporaryDirectory(prefix='deepracer-bench-') as tmp:
        workdir = Path(tmp)
        model = args.model or build_benchmark_model(workdir / 'bench_model')
        print(f'model: {model}')
        print(f'raw onnxruntime: {args.fps:g} fps for {args.duration:g} s ...', flush=True)
        raw = raw_onnxruntime(model, args.fps, args.duration)
        print(f'pipeline: {args.fps:g} fps for {args.duration:g} s ...', flush=True)
        main = run_pipeline(model, args.fps, args.duration, workdir / 'main', raw)
        print('highest sustained frame rate:', flush=True)
        best, sweep = highest_sustained_fps(model, workdir, list(args.sweep),
                                            args.sweep_seconds, lambda s: print(s, flush=True))
        print('servo command rate ...', flush=True)
        rate = servo_command_rate(workdir / 'servo-rate')
    print()
    print(format_table(main, best, rate))
    if args.json:
        figures = {'main': main.as_dict(), 'highest_sustained_fps': best,
                   'sweep': [r.as_dict() for r in sweep], 'servo': rate}
        args.json.write_text(json.dumps(figures, indent=2))
        print(f'\nfigures written to {args.json}')
    return 0
