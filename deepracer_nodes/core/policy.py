"""A DeepRacer model folder (model.onnx + model_metadata.json) as a ready-to-drive policy.

Policy.load() does everything that can fail up front: it reads and checks the
metadata, opens the ONNX graph in onnxruntime (CPU), maps its input to a camera
image, checks the output size against the action space and runs one warm-up
inference, so a broken model is refused at load time with a ModelError saying why,
never mid-race. Policy.act() then turns a camera frame into a Decision.

Discrete models: the action is the argmax of the output. The DeepRacer head is a
softmax, so the output is published as the probabilities; when a graph ends in
logits instead (entries not in [0, 1] or not summing to 1), the probabilities are
the softmax of the output; the argmax is the same either way.
Continuous models: each output is clamped to [-1, 1] and rescaled linearly to the
metadata's [low, high]. Steering in a Decision is RADIANS, positive = left (REP 103).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import onnxruntime as ort

from deepracer_nodes import paths
from deepracer_nodes.core import spec
from deepracer_nodes.core.metadata import (
    METADATA_FILE_NAME, ContinuousActionSpace, DiscreteActionSpace, MetadataError,
    ModelMetadata, load_metadata)
from deepracer_nodes.core.preprocess import (
    InputSpec, InputSpecError, PreprocessOptions, Preprocessor, check_supported)

MODEL_FILE_NAME = 'model.onnx'
# Two threads without spinning: on a 2-core x86 the shallow CNN takes ~1.5 ms with 1 or 2
# threads, but on slower cores (the car's Atom, a Pi) each operator is longer and a second
# thread pays off. Spinning threads cut ~0.5 ms but burn a whole core the camera needs.
DEFAULT_INTRA_OP_THREADS = 2
_PROBABILITY_TOLERANCE = 1e-3


class ModelError(ValueError):
    """A model folder that cannot drive: the message says what is wrong and where."""


@dataclass(frozen=True)
class Decision:
    """What the policy wants for one frame."""

    steering_angle_rad: float  # positive = left
    speed_mps: float
    action_index: int | None  # discrete models only
    probabilities: np.ndarray | None  # discrete models only, float32, one per action
    inference_s: float  # onnxruntime run time alone


def session_options(intra_op_threads: int = DEFAULT_INTRA_OP_THREADS) -> ort.SessionOptions:
    """Options for a small CNN on a 2-4 core car shared with other nodes."""
    if intra_op_threads < 1:
        raise ValueError(f'intra_op_threads must be >= 1, got {intra_op_threads}')
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    # One operator at a time: the graph is a chain, parallel branches would only add threads.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle pool threads would otherwise spin between frames and steal the camera's CPU.
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    options.log_severity_level = 3  # errors only; load problems come back as ModelError
    return options


def _is_probability_vector(values: np.ndarray) -> bool:
    return bool(values.min() >= 0.0 and abs(float(values.sum()) - 1.0) <= _PROBABILITY_TOLERANCE)


def _softmax(values: np.ndarray) -> np.ndarray:
    shifted = np.exp(values - values.max())
    return (shifted / shifted.sum()).astype(np.float32)


class Policy:
    """A loaded, checked model. Build it with Policy.load(); act() is for one caller at a time."""

    def __init__(self, folder: Path, metadata: ModelMetadata, session: ort.InferenceSession,
                 input_spec: InputSpec, output_name: str, preprocessor: Preprocessor,
                 intra_op_threads: int) -> None:
        self.folder = folder
        self.metadata = metadata
        self.input_spec = input_spec
        self.output_name = output_name
        self.intra_op_threads = intra_op_threads
        self._session = session
        self._preprocessor = preprocessor
        self._output_names = [output_name]
        space = metadata.action_space
        if isinstance(space, DiscreteActionSpace):
            self._steering_rad = tuple(math.radians(a.steering_angle_deg) for a in space.actions)
            self._speed_mps = tuple(a.speed_mps for a in space.actions)

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def options(self) -> PreprocessOptions:
        return self._preprocessor.options

    @classmethod
    def load(cls, folder: str | Path, options: PreprocessOptions = PreprocessOptions(),
             intra_op_threads: int = DEFAULT_INTRA_OP_THREADS) -> Policy:
        """Load and check a model folder; raise ModelError with the reason if it cannot drive."""
        folder = Path(folder)
        model_path = _model_file(folder)
        metadata = _metadata(folder)
        if metadata.unsupported_sensors:
            names = ', '.join(s.value for s in metadata.unsupported_sensors)
            raise ModelError(
                f'{folder}: the model needs {names}; this stack drives single-camera models '
                '(FRONT_FACING_CAMERA) only')
        session = _open_session(model_path, intra_op_threads)
        input_spec = _input_spec(session, folder, options)
        output_name = _output_name(session, folder, metadata)
        policy = cls(folder, metadata, session, input_spec, output_name,
                     Preprocessor(input_spec, options), intra_op_threads)
        policy._warm_up()
        return policy

    def with_options(self, options: PreprocessOptions) -> Policy:
        """The same loaded model with other preprocessing (shares the onnxruntime session)."""
        try:
            preprocessor = Preprocessor(self.input_spec, options)
        except InputSpecError as error:
            raise ModelError(f'{self.folder}: {error}') from None
        return Policy(self.folder, self.metadata, self._session, self.input_spec,
                      self.output_name, preprocessor, self.intra_op_threads)

    def act(self, frame: np.ndarray) -> Decision:
        """Frame (H x W x 3 BGR or H x W grey uint8, any size) -> Decision.

        Raises ValueError for a frame of the wrong type and ModelError when the model
        produces something unusable (NaN, wrong size).
        """
        tensor = self._preprocessor(frame)
        start = time.perf_counter()
        try:
            output = self._session.run(self._output_names, {self.input_spec.name: tensor})[0]
        except Exception as error:  # onnxruntime raises its own (RuntimeError-like) types
            raise ModelError(f'{self.name}: inference failed: {error}') from None
        return self.decide(output, time.perf_counter() - start)

    def decide(self, output: np.ndarray, inference_s: float = 0.0) -> Decision:
        """Map one network output (any shape holding the right number of values) to a Decision."""
        values = np.asarray(output, dtype=np.float32).reshape(-1)
        space = self.metadata.action_space
        if values.size != space.output_size:
            raise ModelError(
                f'{self.name}: model output has {values.size} values, the '
                f'{space.type.value} action space needs {space.output_size}')
        if not np.isfinite(values).all():
            raise ModelError(f'{self.name}: model output is not finite: {values.tolist()}')
        if isinstance(space, ContinuousActionSpace):
            return self._decide_continuous(values, space, inference_s)
        index = int(values.argmax())
        probabilities = values.copy() if _is_probability_vector(values) else _softmax(values)
        return Decision(self._steering_rad[index], self._speed_mps[index], index, probabilities,
                        inference_s)

    @staticmethod
    def _decide_continuous(values: np.ndarray, space: ContinuousActionSpace,
                           inference_s: float) -> Decision:
        steering, speed = (min(1.0, max(-1.0, float(v))) for v in values)
        steering_deg = _rescale(steering, space.steering_angle_deg.low,
                                space.steering_angle_deg.high)
        speed_mps = _rescale(speed, space.speed_mps.low, space.speed_mps.high)
        return Decision(math.radians(steering_deg), speed_mps, None, None, inference_s)

    def _warm_up(self) -> None:
        # The first run allocates onnxruntime's buffers; doing it here keeps it off the race,
        # and a graph that loads but cannot run is refused now.
        blank = np.zeros((self.input_spec.height, self.input_spec.width, 3), np.uint8)
        self.act(blank)


def _rescale(value: float, low: float, high: float) -> float:
    """[-1, 1] -> [low, high], linearly."""
    return low + (value + 1.0) * 0.5 * (high - low)


def _model_file(folder: Path) -> Path:
    if not folder.is_dir():
        raise ModelError(f'model folder {folder} does not exist')
    model_path = folder / MODEL_FILE_NAME
    if model_path.is_file():
        return model_path
    frozen_graphs = sorted(p.name for p in folder.rglob('*.pb'))
    hint = (f' (it holds the TensorFlow graph {frozen_graphs[0]}: convert it to ONNX first, '
            'e.g. with tf2onnx)') if frozen_graphs else ''
    raise ModelError(f'{folder} has no {MODEL_FILE_NAME}{hint}')


def _metadata(folder: Path) -> ModelMetadata:
    path = folder / METADATA_FILE_NAME
    if not path.is_file():
        raise ModelError(f'{folder} has no {METADATA_FILE_NAME}: without it the outputs '
                         'of the network mean nothing')
    try:
        return load_metadata(path)
    except MetadataError as error:
        raise ModelError(str(error)) from None


def _open_session(model_path: Path, intra_op_threads: int) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(model_path), session_options(intra_op_threads),
                                    providers=['CPUExecutionProvider'])
    except Exception as error:  # onnxruntime's load errors have no common public base
        raise ModelError(f'onnxruntime cannot load {model_path}: {error}') from None


def _input_spec(session: ort.InferenceSession, folder: Path,
                options: PreprocessOptions) -> InputSpec:
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ModelError(f'{folder}: the model has {len(inputs)} inputs '
                         f'({", ".join(i.name for i in inputs)}); one camera input is needed')
    model_input = inputs[0]
    if model_input.type != 'tensor(float)':
        raise ModelError(f'{folder}: input {model_input.name!r} is {model_input.type}, '
                         'float32 is needed')
    try:
        input_spec = InputSpec.from_shape(model_input.name, model_input.shape)
        check_supported(input_spec, options)
    except InputSpecError as error:
        raise ModelError(f'{folder}: {error}') from None
    return input_spec


def _output_name(session: ort.InferenceSession, folder: Path, metadata: ModelMetadata) -> str:
    outputs = session.get_outputs()
    # DeepRacer graphs name their head '.../policy'; when a graph has several outputs, take it.
    if len(outputs) > 1:
        outputs = [o for o in outputs if o.name.split(':')[0].endswith('policy')]
        if len(outputs) != 1:
            names = ', '.join(o.name for o in session.get_outputs())
            raise ModelError(f'{folder}: cannot tell which output is the policy among {names}')
    output = outputs[0]
    size = output.shape[-1] if output.shape else None
    expected = metadata.action_space.output_size
    # A dynamic size is checked by the warm-up run instead.
    if isinstance(size, int) and size != expected:
        raise ModelError(
            f'{folder}: output {output.name!r} has {size} values but model_metadata.json '
            f'describes a {metadata.action_space_type.value} action space of {expected}')
    return output.name


def default_search_dirs(extra: Iterable[str | Path] = ()) -> list[Path]:
    """Where a bare model name is looked up, in order: extra folders, the user's models,
    the package's bundled models, the official device's models."""
    dirs = [Path(d).expanduser() for d in extra if str(d)]
    dirs.append(paths.user_models_dir())
    try:
        dirs.append(paths.share_path('models'))
    except FileNotFoundError:
        pass  # not installed with its share folder: bundled models are simply not available
    dirs.append(Path(spec.DEEPRACER_MODELS_DIR))
    return dirs


def resolve_model(name_or_path: str | Path, search_dirs: Sequence[str | Path]) -> Path:
    """A model folder from a path (used as is) or a bare name (looked up in search_dirs)."""
    text = str(name_or_path).strip()
    if not text:
        raise ModelError('no model given')
    path = Path(text).expanduser()
    if os.sep in text or '/' in text or text.startswith(('.', '~')):
        if not path.is_dir():
            raise ModelError(f'model folder {path} does not exist')
        return path
    for folder in search_dirs:
        candidate = Path(folder) / text
        if candidate.is_dir():
            return candidate
    looked = ', '.join(str(Path(d)) for d in search_dirs) or 'nowhere (no search folders)'
    raise ModelError(f'no model named {text!r}; looked in {looked}')
