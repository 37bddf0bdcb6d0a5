"""JSON from outside: every way json.loads can fail is one clear JsonInputError."""

import pytest

from deepracer_nodes.core.json_input import JsonInputError, parse_json


@pytest.mark.parametrize('text, reason', [
    ('{"a": ', 'not valid JSON: Expecting value'),
    ('[' * 100_000 + ']' * 100_000, 'nested too deeply'),
    ('{"x": ' + '9' * 5000 + '}', 'more than 18 digits'),
    ('{"x": -' + '9' * 19 + '}', 'more than 18 digits'),
])
def test_refused_with_the_reason(text, reason):
    with pytest.raises(JsonInputError, match=reason):
        parse_json(text)


def test_ordinary_values_parse():
    assert parse_json('{"Servo": {"mid": 1450000, "polarity": -1}, "s": 0.5}') == \
        {'Servo': {'mid': 1450000, 'polarity': -1}, 's': 0.5}
    assert parse_json('-' + '9' * 18) == -int('9' * 18)
