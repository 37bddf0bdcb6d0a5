"""Write a trained network as a DeepRacer model folder: model.onnx + model_metadata.json.

The graph takes DeepRacer's input exactly: NHWC float32 [1, 120, 160, 1] of RAW 0-255
grey under the PPO graph's input name, and ends in a softmax under the PPO head's
output name, so anything that drives a converted DeepRacer model drives this one.
The folder is then loaded back with the car's own Policy.load and must give the same
probabilities as PyTorch, or the export is refused.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch

from deepracer_nodes.core.metadata import write_metadata
from deepracer_nodes.core.onnx_build import DEEPRACER_INPUT_NAME, DEEPRACER_OUTPUT_NAME
from deepracer_nodes.core.policy import MODEL_FILE_NAME, Policy
from deepracer_nodes.train.actions import ActionGrid
from deepracer_nodes.train.network import ExportedPolicy, PolicyNet

# Opset 17 runs on every onnxruntime the car may have (1.14 and later).
OPSET = 17
# Largest difference between PyTorch's and onnxruntime's probabilities we accept.
MAX_PROBABILITY_ERROR = 1e-4


def onnx_bytes(net: PolicyNet) -> bytes:
    """The serialised ONNX graph of the network (eval mode: batch norm folded)."""
    model = ExportedPolicy(net).eval()
    example = torch.zeros(1, net.height, net.width, 1)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of one needing onnxscript;
        # it still writes exactly the plain, static graph we want.
        warnings.simplefilter('ignore')
        torch.onnx.export(model, (example,), buffer, input_names=[DEEPRACER_INPUT_NAME],
                          output_names=[DEEPRACER_OUTPUT_NAME], opset_version=OPSET,
                          do_constant_folding=True, dynamo=False)
    return buffer.getvalue()


def export_model(net: PolicyNet, grid: ActionGrid, folder: str | Path) -> Path:
    """Write folder/model.onnx and folder/model_metadata.json and check them with
    Policy.load; returns the folder. Raises ValueError when the check fails."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    was_training = net.training
    net.eval()
    try:
        (folder / MODEL_FILE_NAME).write_bytes(onnx_bytes(net))
        write_metadata(folder, grid.metadata())
        _check_against_torch(net, folder)
    finally:
        net.train(was_training)
    return folder


def _check_against_torch(net: PolicyNet, folder: Path) -> None:
    policy = Policy.load(folder)
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (net.height, net.width), dtype=np.uint8)
    decision = policy.act(grey)
    with torch.no_grad():
        expected = torch.softmax(net(torch.from_numpy(grey[None, :, :, None].astype(
            np.float32))), dim=-1).numpy()[0]
    error = float(np.max(np.abs(decision.probabilities - expected)))
    if error > MAX_PROBABILITY_ERROR:
        raise ValueError(f'exported model disagrees with PyTorch by {error:.2e} '
                         f'(limit {MAX_PROBABILITY_ERROR:.0e})')
