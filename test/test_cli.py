"""`deepracer`: every subcommand is wired to a module that parses its own arguments."""

from __future__ import annotations

import subprocess
import sys

import pytest

from deepracer_nodes import cli


@pytest.mark.parametrize('command', sorted(cli.SUBCOMMANDS))
def test_each_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, '--help'])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f'usage: deepracer {command}')
    assert cli.SUBCOMMANDS[command][1] in out


def test_unknown_command_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(['fly'])
    assert exit_info.value.code == 2
    assert "invalid choice: 'fly'" in capsys.readouterr().err


def test_the_installed_command_runs():
    deepracer = [sys.executable, '-m', 'deepracer_nodes.cli']
    result = subprocess.run([*deepracer, '--help'], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for command in cli.SUBCOMMANDS:
        assert command in result.stdout
