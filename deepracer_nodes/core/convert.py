"""DeepRacer TensorFlow frozen graph (.pb) -> ONNX with tf2onnx, checked against TensorFlow.

TensorFlow and tf2onnx weigh 1.6 GB, so they are an optional extra
(`pip install 'deepracer_nodes[convert]'`) imported only inside convert_frozen_graph();
without them ConverterUnavailable says how to install them. Everything else here
(finding the DeepRacer tensors in a graph, the sample frames, the comparison) is plain
numpy + onnxruntime and is tested without TensorFlow.

The conversion is checked, not trusted: TensorFlow runs the frozen graph and onnxruntime
the converted model on the same sample frames (random noise and structured images:
black, white, gradients, stripes, a track-like picture), and the largest absolute
difference between their outputs must stay within a tolerance.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import onnxruntime as ort

from deepracer_nodes.core import spec

INSTALL_HINT = "pip install 'deepracer_nodes[convert]'  (tensorflow-cpu and tf2onnx, 1.6 GB)"
# The opset every onnxruntime the car may run (>= 1.17) loads, and which holds every
# operator a DeepRacer CNN uses (Conv, Relu, MatMul, Softmax, Tanh, Transpose, Reshape).
ONNX_OPSET = 13
# Softmax probabilities and tanh outputs lie in [-1, 1]; float32 reordering of a 6 M
# parameter CNN moves them by ~1e-6, a wrong conversion by far more than 1e-4.
DEFAULT_TOLERANCE = 1e-4
DEFAULT_SAMPLE_FRAMES = 12

# Input: main_level/agent/<main|policy>/online/network_0/<sensor>/<sensor>, where the
# algorithm's network is 'main' for PPO and 'policy' for SAC; old models use 'observation'.
_INPUT_PATTERN = re.compile(
    r'^main_level/agent/(main|policy)/online/network_0/'
    r'(FRONT_FACING_CAMERA|LEFT_CAMERA|observation)/\2$')
PPO_OUTPUT = 'main_level/agent/main/online/network_1/ppo_head_0/policy'
SAC_OUTPUT = 'main_level/agent/policy/online/network_0/sac_policy_head_0/policy'


class ConversionError(ValueError):
    """A graph that cannot be converted, or whose conversion does not match TensorFlow."""


class ConverterUnavailable(ConversionError):
    """TensorFlow or tf2onnx is not installed."""


@dataclass(frozen=True)
class GraphSignature:
    """The input and output tensors of a DeepRacer graph (TensorFlow names, without ':0')."""

    input_name: str
    output_name: str
    algorithm: str  # 'clipped_ppo' or 'sac'


def detect_signature(nodes: Iterable[tuple[str, str]]) -> GraphSignature:
    """Find DeepRacer's camera input and policy head among (node name, op type) pairs."""
    nodes = list(nodes)
    names = {name for name, _ in nodes}
    placeholders = [name for name, op in nodes if op == 'Placeholder']
    inputs = [name for name in placeholders if _INPUT_PATTERN.match(name)]
    if len(inputs) != 1:
        found = ', '.join(placeholders) or 'none'
        what = 'several DeepRacer camera inputs' if inputs else 'no DeepRacer camera input'
        raise ConversionError(
            f'{what} in the graph (placeholders: {found}); expected one named '
            'main_level/agent/main/online/network_0/FRONT_FACING_CAMERA/FRONT_FACING_CAMERA '
            "('policy' instead of 'main' for SAC)")
    network = _INPUT_PATTERN.match(inputs[0]).group(1)
    output, algorithm = (PPO_OUTPUT, 'clipped_ppo') if network == 'main' \
        else (SAC_OUTPUT, 'sac')
    if output not in names:
        heads = ', '.join(sorted(n for n in names if n.endswith('/policy'))) or 'none'
        raise ConversionError(f'the graph has the {algorithm} input {inputs[0]} but not its '
                              f'output {output} (nodes ending in /policy: {heads})')
    return GraphSignature(inputs[0], output, algorithm)


# --- sample frames and the comparison -------------------------------------------------------

def sample_frames(shape: Sequence[int], count: int = DEFAULT_SAMPLE_FRAMES,
                  seed: int = 0) -> list[np.ndarray]:
    """count float32 frames of the NHWC shape [1, H, W, C] holding raw 0-255 values.

    The first frames are structured (black, white, horizontal and vertical gradients,
    stripes, a bright track-like band), the rest uniform noise.
    """
    if len(shape) != 4 or shape[0] != 1 or any(int(d) < 1 for d in shape):
        raise ValueError(f'shape must be [1, H, W, C] with positive sizes, got {list(shape)}')
    _, height, width, channels = (int(d) for d in shape)
    rows = np.linspace(0.0, 255.0, height, dtype=np.float32)[:, None]
    columns = np.linspace(0.0, 255.0, width, dtype=np.float32)[None, :]
    track = np.full((height, width), 40.0, np.float32)
    for row in range(height):
        # A band narrowing towards the horizon, bent to one side, with white borders.
        centre = width / 2 + (height - row) * 0.4
        half = 5 + row * 0.5
        left, right = int(max(0, centre - half)), int(min(width, centre + half))
        track[row, left:right] = 90.0
        track[row, left:min(width, left + 2)] = 250.0
        track[row, max(0, right - 2):right] = 250.0
    structured = [np.zeros((height, width), np.float32),
                  np.full((height, width), 255.0, np.float32),
                  np.broadcast_to(rows, (height, width)),
                  np.broadcast_to(columns, (height, width)),
                  np.where((np.arange(width) // 8) % 2 == 0, 255.0, 0.0).astype(np.float32)
                  * np.ones((height, 1), np.float32),
                  track]
    rng = np.random.default_rng(seed)
    frames = []
    for index in range(count):
        if index < len(structured):
            image = np.repeat(structured[index][:, :, None], channels, axis=2)
        else:
            image = rng.uniform(0.0, 255.0, (height, width, channels)).astype(np.float32)
        frames.append(np.ascontiguousarray(image[None], np.float32))
    return frames


def onnx_runner(onnx_path: str | Path, output_name: str | None = None
                ) -> tuple[Callable[[np.ndarray], np.ndarray], list]:
    """A function frame -> output running the ONNX model, and the model's input shape."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options, providers=['CPUExecutionProvider'])
    model_input = session.get_inputs()[0]
    outputs = [output_name] if output_name else [session.get_outputs()[0].name]

    def run(frame: np.ndarray) -> np.ndarray:
        return session.run(outputs, {model_input.name: frame})[0]
    return run, list(model_input.shape)


def max_abs_difference(reference: Callable[[np.ndarray], np.ndarray],
                       candidate: Callable[[np.ndarray], np.ndarray],
                       frames: Sequence[np.ndarray]) -> float:
    """Largest |reference(f) - candidate(f)| over all frames and outputs (inf on a mismatch
    of shape or a non-finite value)."""
    worst = 0.0
    for frame in frames:
        expected = np.asarray(reference(frame), np.float64)
        actual = np.asarray(candidate(frame), np.float64)
        if expected.size != actual.size:
            return float('inf')
        difference = np.abs(expected.reshape(-1) - actual.reshape(-1))
        if not np.isfinite(difference).all():
            return float('inf')
        worst = max(worst, float(difference.max(initial=0.0)))
    return worst


def concrete_shape(shape: Sequence[object]) -> list[int]:
    """An input shape with its dynamic dimensions (None, names, -1) set: batch 1, and the
    DeepRacer model input size for height and width."""
    fallback = [1, spec.MODEL_INPUT.height, spec.MODEL_INPUT.width, 1]
    if len(shape) != 4:
        return fallback
    return [d if isinstance(d, int) and d > 0 else fallback[i] for i, d in enumerate(shape)]


# --- the conversion -------------------------------------------------------------------------

@dataclass(frozen=True)
class ConversionReport:
    signature: GraphSignature
    opset: int
    max_abs_diff: float
    frames_compared: int
    tolerance: float
    seconds: float
    versions: dict = field(default_factory=dict)  # tensorflow, tf2onnx, onnx, onnxruntime


def _import_converter():
    try:
        import tensorflow as tf
        import tf2onnx
    except ImportError as error:
        raise ConverterUnavailable(
            f'converting a TensorFlow model (.pb) needs TensorFlow and tf2onnx, which are not '
            f'installed ({error.name or error}). Install them with: {INSTALL_HINT}; '
            'or import a model that already holds model.onnx') from None
    return tf, tf2onnx


def _read_graph_def(tf, pb_path: Path):
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(pb_path.read_bytes())
    except Exception as error:  # protobuf's DecodeError, or OSError
        raise ConversionError(f'{pb_path.name} is not a TensorFlow frozen graph: {error}') \
            from None
    if not graph_def.node:
        raise ConversionError(f'{pb_path.name} holds an empty TensorFlow graph')
    return graph_def


def _tensorflow_runner(tf, graph_def, signature: GraphSignature):
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name='')
    session = tf.compat.v1.Session(graph=graph)
    input_tensor = graph.get_tensor_by_name(signature.input_name + ':0')
    output_tensor = graph.get_tensor_by_name(signature.output_name + ':0')

    def run(frame: np.ndarray) -> np.ndarray:
        return session.run(output_tensor, {input_tensor: frame})
    return run, session


def convert_frozen_graph(pb_path: str | Path, onnx_path: str | Path,
                         tolerance: float = DEFAULT_TOLERANCE,
                         frame_count: int = DEFAULT_SAMPLE_FRAMES,
                         opset: int = ONNX_OPSET) -> ConversionReport:
    """Convert a DeepRacer frozen graph to onnx_path and check it against TensorFlow.

    Raises ConverterUnavailable without TensorFlow/tf2onnx, ConversionError when the graph
    is not a DeepRacer graph, the conversion fails or the outputs differ by more than
    tolerance (onnx_path is then removed).
    """
    pb_path, onnx_path = Path(pb_path), Path(onnx_path)
    tf, tf2onnx = _import_converter()
    start = time.perf_counter()
    graph_def = _read_graph_def(tf, pb_path)
    signature = detect_signature((node.name, node.op) for node in graph_def.node)
    try:
        tf2onnx.convert.from_graph_def(
            graph_def, input_names=[signature.input_name + ':0'],
            output_names=[signature.output_name + ':0'], opset=opset,
            output_path=str(onnx_path))
    except Exception as error:  # tf2onnx raises many types for unsupported graphs
        onnx_path.unlink(missing_ok=True)
        raise ConversionError(f'tf2onnx could not convert {pb_path.name}: '
                              f'{type(error).__name__}: {error}') from None
    try:
        candidate, input_shape = onnx_runner(onnx_path)
        frames = sample_frames(concrete_shape(input_shape), frame_count)
        reference, session = _tensorflow_runner(tf, graph_def, signature)
        try:
            difference = max_abs_difference(reference, candidate, frames)
        finally:
            session.close()
        if not difference <= tolerance:
            raise ConversionError(
                f'the converted model differs from TensorFlow by up to {difference:.3g} on '
                f'{len(frames)} sample frames (tolerance {tolerance:g}); not kept')
    except BaseException as error:
        onnx_path.unlink(missing_ok=True)
        if isinstance(error, Exception) and not isinstance(error, ConversionError):
            # onnxruntime refusing tf2onnx's output, or TensorFlow failing to run the graph.
            raise ConversionError(f'cannot compare the converted model with TensorFlow: '
                                  f'{type(error).__name__}: {error}') from None
        raise
    return ConversionReport(signature, opset, difference, len(frames), tolerance,
                            time.perf_counter() - start, converter_versions())


def converter_versions() -> dict:
    """Versions of the conversion tools loaded in this process (none imported here)."""
    versions = {'onnxruntime': ort.__version__}
    for module_name in ('tensorflow', 'tf2onnx', 'onnx'):
        module = sys.modules.get(module_name)
        if module is not None:
            versions[module_name] = getattr(module, '__version__', 'unknown')
    return versions
