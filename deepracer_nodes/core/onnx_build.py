"""Small DeepRacer-shaped ONNX networks for tests, benchmarks and the simulator.

Every network here takes what a converted DeepRacer graph takes: one float32 image
input holding RAW 0-255 greyscale (NHWC [1, 120, 160, 1] by default, NCHW on
request) and divides by 255 itself. Three families:

- shallow_cnn(): the DeepRacer "shallow" CNN (conv 8x8/4 x32, conv 4x4/2 x64,
  conv 3x3/1 x64, dense 512, dense N + softmax, or dense 2 + tanh for a continuous
  model) with seeded random weights. Its cost is realistic: use it for benchmarks.
- brightest_strip_network(): discrete, deterministic. The image is cut into N
  vertical strips, left to right; the output is a softmax over the strips' mean
  brightness, so the chosen action is the brightest strip. With
  steering_sweep_metadata() action 0 steers fully left, action N-1 fully right:
  the car turns towards light. Tests use it to check known frames -> known actions.
- balance_network(): continuous, deterministic. Output 0 (steering) =
  steering_gain * (mean of left half - mean of right half), output 1 (speed) =
  speed_gain * mean + speed_bias (means of pixel/255), optionally through tanh.

write_model_folder() writes model.onnx and model_metadata.json the way a user's
model folder holds them. The `onnx` package is a test/dev dependency, so it is
imported only when a network is built.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from deepracer_nodes.core import spec
from deepracer_nodes.core.metadata import (
    Action, ContinuousActionSpace, DiscreteActionSpace, ModelMetadata, Range, Sensor,
    write_metadata)
from deepracer_nodes.core.preprocess import Layout

if TYPE_CHECKING:
    import onnx

MODEL_FILE_NAME = 'model.onnx'
# Tensor names of a tf2onnx-converted DeepRacer PPO graph (TensorFlow names gain ':0').
DEEPRACER_INPUT_NAME = 'main_level/agent/main/online/network_0/FRONT_FACING_CAMERA/' \
                       'FRONT_FACING_CAMERA:0'
DEEPRACER_OUTPUT_NAME = 'main_level/agent/main/online/network_1/ppo_head_0/policy:0'
# Opset 13 and IR 8 load in every onnxruntime the car may have (>= 1.17).
OPSET = 13
IR_VERSION = 8


class _GraphBuilder:
    """Collects nodes and constant tensors for one single-input, single-output graph."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.initializers: list = []

    def constant(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op: str, inputs: Sequence[str], output: str, **attributes) -> str:
        from onnx import helper
        self.nodes.append(helper.make_node(op, list(inputs), [output], name=output,
                                           **attributes))
        return output

    def model(self, input_name: str, input_shape: Sequence[int], output_name: str,
              output_size: int, graph_name: str) -> onnx.ModelProto:
        import onnx
        from onnx import TensorProto, helper
        graph = helper.make_graph(
            self.nodes, graph_name,
            [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(input_shape))],
            [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [1, output_size])],
            initializer=self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', OPSET)],
                                  producer_name='deepracer_nodes.onnx_build')
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model)
        return model


def _input_shape(layout: Layout, height: int, width: int) -> tuple[int, int, int, int]:
    layout = Layout(layout)
    return (1, height, width, 1) if layout is Layout.NHWC else (1, 1, height, width)


def _scaled_flat_input(builder: _GraphBuilder, input_name: str, height: int, width: int) -> str:
    """Input / 255 flattened to [1, H*W]; with one channel both layouts flatten alike."""
    scaled = builder.node('Div', [input_name, builder.constant('c255', np.float32(255.0))],
                          'scaled')
    shape = builder.constant('flat_shape', np.array([1, height * width], np.int64))
    return builder.node('Reshape', [scaled, shape], 'flat')


def brightest_strip_network(num_actions: int = 3, *, layout: Layout = Layout.NHWC,
                            height: int = spec.MODEL_INPUT.height,
                            width: int = spec.MODEL_INPUT.width, sharpness: float = 50.0,
                            softmax: bool = True, input_name: str = DEEPRACER_INPUT_NAME,
                            output_name: str = DEEPRACER_OUTPUT_NAME) -> onnx.ModelProto:
    """Discrete network choosing the brightest of num_actions vertical strips (0 = leftmost).

    The output is softmax(sharpness * strip means of pixel/255); with softmax=False it is
    the scaled means themselves (logits, not probabilities).
    """
    if num_actions < 1 or num_actions > width:
        raise ValueError(f'num_actions must be 1..{width}, got {num_actions}')
    strip_of_column = np.arange(width) * num_actions // width
    weights = np.zeros((height, width, num_actions), np.float32)
    for strip in range(num_actions):
        columns = strip_of_column == strip
        weights[:, columns, strip] = sharpness / (height * columns.sum())
    builder = _GraphBuilder()
    flat = _scaled_flat_input(builder, input_name, height, width)
    means = builder.node('MatMul', [flat, builder.constant(
        'strip_weights', weights.reshape(height * width, num_actions))],
        'strip_means' if softmax else output_name)
    if softmax:
        builder.node('Softmax', [means], output_name, axis=-1)
    return builder.model(input_name, _input_shape(layout, height, width), output_name,
                         num_actions, 'brightest_strip')


def balance_network(*, layout: Layout = Layout.NHWC, height: int = spec.MODEL_INPUT.height,
                    width: int = spec.MODEL_INPUT.width, steering_gain: float = 2.0,
                    speed_gain: float = 2.0, speed_bias: float = -1.0, squash: bool = True,
                    input_name: str = DEEPRACER_INPUT_NAME,
                    output_name: str = DEEPRACER_OUTPUT_NAME) -> onnx.ModelProto:
    """Continuous network: [steering_gain*(left mean - right mean), speed_gain*mean + bias].

    Means are of pixel/255 over the left/right half and the whole image; squash=True
    passes both through tanh (like a real continuous head), False leaves them unbounded
    so tests can check the clamp to [-1, 1].
    """
    half = width // 2
    weights = np.zeros((height, width, 2), np.float32)
    weights[:, :half, 0] = steering_gain / (height * half)
    weights[:, width - half:, 0] = -steering_gain / (height * half)
    weights[:, :, 1] = speed_gain / (height * width)
    builder = _GraphBuilder()
    flat = _scaled_flat_input(builder, input_name, height, width)
    mixed = builder.node('MatMul', [flat, builder.constant(
        'balance_weights', weights.reshape(height * width, 2))], 'mixed')
    bias = builder.constant('balance_bias', np.array([0.0, speed_bias], np.float32))
    biased = builder.node('Add', [mixed, bias], 'biased' if squash else output_name)
    if squash:
        builder.node('Tanh', [biased], output_name)
    return builder.model(input_name, _input_shape(layout, height, width), output_name, 2,
                         'balance')


def _he_normal(rng: np.random.Generator, shape: Sequence[int], fan_in: int) -> np.ndarray:
    return (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(np.float32)


def shallow_cnn(num_outputs: int = 5, *, continuous: bool = False,
                layout: Layout = Layout.NHWC, height: int = spec.MODEL_INPUT.height,
                width: int = spec.MODEL_INPUT.width, seed: int = 0,
                input_name: str = DEEPRACER_INPUT_NAME,
                output_name: str = DEEPRACER_OUTPUT_NAME) -> onnx.ModelProto:
    """The DeepRacer shallow CNN with seeded random (He-normal) weights.

    Discrete: num_outputs actions through a softmax. continuous=True: 2 outputs through
    tanh (num_outputs is ignored). About 6 M parameters (24 MB) at 160 x 120, like a
    real model.
    """
    if continuous:
        num_outputs = 2
    rng = np.random.default_rng(seed)
    builder = _GraphBuilder()
    tensor = input_name
    if Layout(layout) is Layout.NHWC:
        # ONNX convolutions are NCHW, so converted TensorFlow graphs transpose first too.
        tensor = builder.node('Transpose', [tensor], 'to_nchw', perm=[0, 3, 1, 2])
    tensor = builder.node('Div', [tensor, builder.constant('c255', np.float32(255.0))],
                          'scaled')
    channels, out_h, out_w = 1, height, width
    for index, (filters, kernel, stride) in enumerate(((32, 8, 4), (64, 4, 2), (64, 3, 1))):
        fan_in = channels * kernel * kernel
        weight = builder.constant(f'conv{index}_w',
                                  _he_normal(rng, (filters, channels, kernel, kernel), fan_in))
        bias = builder.constant(f'conv{index}_b', np.zeros(filters, np.float32))
        tensor = builder.node('Conv', [tensor, weight, bias], f'conv{index}',
                              kernel_shape=[kernel, kernel], strides=[stride, stride])
        tensor = builder.node('Relu', [tensor], f'conv{index}_relu')
        channels = filters
        out_h, out_w = (out_h - kernel) // stride + 1, (out_w - kernel) // stride + 1
        if out_h < 1 or out_w < 1:
            raise ValueError(f'input {width}x{height} is too small for the shallow CNN')
    tensor = builder.node('Flatten', [tensor], 'flatten', axis=1)
    flat_size = channels * out_h * out_w
    for index, (size_in, size_out) in enumerate(((flat_size, 512), (512, num_outputs))):
        weight = builder.constant(f'dense{index}_w',
                                  _he_normal(rng, (size_in, size_out), size_in))
        bias = builder.constant(f'dense{index}_b', np.zeros(size_out, np.float32))
        last = index == 1
        tensor = builder.node('Gemm', [tensor, weight, bias],
                              f'dense{index}' if not last else 'head')
        if not last:
            tensor = builder.node('Relu', [tensor], f'dense{index}_relu')
    builder.node('Tanh' if continuous else 'Softmax', [tensor], output_name,
                 **({} if continuous else {'axis': -1}))
    return builder.model(input_name, _input_shape(layout, height, width), output_name,
                         num_outputs, 'deepracer_shallow')


# --- metadata to go with the networks --------------------------------------------------------

def steering_sweep_metadata(num_actions: int = 3, *, max_steering_deg: float = 30.0,
                            speeds_mps: float | Sequence[float] = 1.0,
                            sensor: Sensor = Sensor.FRONT_FACING_CAMERA) -> ModelMetadata:
    """Discrete metadata: action 0 steers max_steering_deg LEFT, the last one as far right.

    speeds_mps is one speed for all actions or one per action.
    """
    if num_actions < 1:
        raise ValueError(f'num_actions must be >= 1, got {num_actions}')
    speeds = [float(speeds_mps)] * num_actions if isinstance(speeds_mps, (int, float)) \
        else [float(s) for s in speeds_mps]
    if len(speeds) != num_actions:
        raise ValueError(f'{len(speeds)} speeds given for {num_actions} actions')
    steps = np.linspace(max_steering_deg, -max_steering_deg, num_actions) if num_actions > 1 \
        else np.zeros(1)
    actions = tuple(Action(float(angle), speed) for angle, speed in zip(steps, speeds))
    return ModelMetadata(action_space=DiscreteActionSpace(actions), sensors=(sensor,),
                         neural_network='DEEP_CONVOLUTIONAL_NETWORK_SHALLOW', version='5')


def continuous_metadata(steering_deg: tuple[float, float] = (-30.0, 30.0),
                        speed_mps: tuple[float, float] = (0.5, 2.0),
                        sensor: Sensor = Sensor.FRONT_FACING_CAMERA) -> ModelMetadata:
    """Continuous metadata with the given (low, high) ranges."""
    space = ContinuousActionSpace(Range(*map(float, steering_deg)), Range(*map(float, speed_mps)))
    return ModelMetadata(action_space=space, sensors=(sensor,),
                         neural_network='DEEP_CONVOLUTIONAL_NETWORK_SHALLOW', version='5')


def write_model_folder(folder: str | Path, model: onnx.ModelProto | bytes,
                       metadata: ModelMetadata) -> Path:
    """Write folder/model.onnx and folder/model_metadata.json (creating folder); return it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = model if isinstance(model, bytes) else model.SerializeToString()
    (folder / MODEL_FILE_NAME).write_bytes(data)
    write_metadata(folder, metadata)
    return folder
