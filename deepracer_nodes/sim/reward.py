"""A user's DeepRacer reward function: loaded from a file, called every step, checked.

A reward file is what a user pastes into the DeepRacer console: a Python module defining
``reward_function(params) -> float``, where params is the dict the simulation builds each
step (sim.race.Race.reward_params). Here it is loaded from a path under a private module
name (never put in sys.modules, so two files called reward.py cannot collide and nothing
else can import it by accident), then called once per control step.

Errors are never swallowed: a file that cannot be loaded, a function that raises, or a
return value that is not a finite number raises RewardFunctionError whose message names
the file and the step and whose `details` holds the user's traceback. What to do with it
is the caller's decision (the simulator stops the race: see sim_node).
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import numbers
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FUNCTION_NAME = 'reward_function'


class RewardFunctionError(ValueError):
    """The reward function could not be loaded, raised, or returned a bad value.

    details: the traceback of the user's code (empty when there is none, e.g. a bad
    return value), formatted for printing.
    """

    def __init__(self, message: str, details: str = '') -> None:
        super().__init__(message)
        self.details = details

    def report(self) -> str:
        """Message and traceback, ready to print or log."""
        return f'{self}\n{self.details}'.rstrip()


def _user_traceback(error: BaseException, path: Path) -> str:
    """The traceback from the first frame in the user's file on (our frames add nothing)."""
    frames = traceback.extract_tb(error.__traceback__)
    user = [i for i, frame in enumerate(frames) if Path(frame.filename) == path]
    start = user[0] if user else 0
    lines = ['Traceback (most recent call last):\n']
    lines += traceback.format_list(frames[start:])
    lines += traceback.format_exception_only(type(error), error)
    return ''.join(lines)


def check_reward(value: Any) -> float:
    """The reward as a float; RewardFunctionError unless it is a finite real number.

    bool is refused although Python counts it as an int: returning True/False is almost
    always a forgotten number, and DeepRacer's float() would hide it as 1.0/0.0.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise RewardFunctionError(
            f'{FUNCTION_NAME} must return a finite int or float, got {value!r} '
            f'({type(value).__name__})')
    reward = float(value)
    if not math.isfinite(reward):
        raise RewardFunctionError(
            f'{FUNCTION_NAME} must return a finite int or float, got {reward}')
    return reward


@dataclass
class RewardFunction:
    """A loaded reward function; call it with the params of one step.

    path: the file it came from. function: the user's reward_function.
    rewards: every reward returned so far, in step order.
    """

    path: Path
    function: Callable[[dict[str, Any]], Any]
    rewards: list[float] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RewardFunction:
        """Execute the file as a private module and take its reward_function."""
        path = Path(path).expanduser().resolve()
        if not path.is_file():
            raise RewardFunctionError(f'reward function file {path} does not exist')
        # A private, unique name: the file's own name may shadow a real module.
        digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
        spec = importlib.util.spec_from_file_location(f'deepracer_user_reward_{digest}', path)
        if spec is None or spec.loader is None:
            raise RewardFunctionError(f'{path} cannot be loaded as a Python file')
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as error:  # noqa: BLE001 - any error in user code is reported
            raise RewardFunctionError(f'loading {path} failed: {error!r}',
                                      _user_traceback(error, path)) from error
        function = getattr(module, FUNCTION_NAME, None)
        if not callable(function):
            raise RewardFunctionError(f'{path} defines no function {FUNCTION_NAME}(params)')
        return cls(path=path, function=function)

    def __call__(self, params: dict[str, Any]) -> float:
        """The reward for one step's params; raises RewardFunctionError (step included)."""
        step = params.get('steps', len(self.rewards) + 1)
        try:
            value = self.function(params)
        except Exception as error:  # noqa: BLE001 - any error in user code is reported
            raise RewardFunctionError(
                f'{FUNCTION_NAME} in {self.path} raised {error!r} at step {step}',
                _user_traceback(error, self.path)) from error
        try:
            reward = check_reward(value)
        except RewardFunctionError as error:
            raise RewardFunctionError(f'{error} (in {self.path}, step {step})') from None
        self.rewards.append(reward)
        return reward
