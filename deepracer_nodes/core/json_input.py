"""JSON from outside (model_metadata.json, calibration.json): parsed without surprises.

json.loads on hostile text fails in more ways than JSONDecodeError: deep nesting raises
RecursionError, an integer of over 4300 digits ValueError, and an integer beyond float
range later raises OverflowError wherever it meets float(). Every such problem is a
JsonInputError here, with a message saying what is wrong, and integers are bounded.
"""

from __future__ import annotations

import json
from typing import Any

# Far beyond any value in these files (duty cycles in ns are ~1e6), far below float range.
MAX_INTEGER_DIGITS = 18


class JsonInputError(ValueError):
    """Text that is not acceptable JSON input."""


def _bounded_int(text: str) -> int:
    if len(text.lstrip('-')) > MAX_INTEGER_DIGITS:
        raise JsonInputError(f'integer {text[:24]}... has more than {MAX_INTEGER_DIGITS} digits')
    return int(text)


def parse_json(text: str) -> Any:
    """The value of a JSON text; JsonInputError says why it is refused."""
    try:
        return json.loads(text, parse_int=_bounded_int)
    except JsonInputError:
        raise
    except json.JSONDecodeError as error:
        raise JsonInputError(f'not valid JSON: {error}') from None
    except RecursionError:
        raise JsonInputError('not valid JSON: nested too deeply') from None
