"""Where the package's installed files (launch/, config/, models/, worlds/) are.

On a car the package is built with colcon and found through the ament index;
on a laptop it is pip-installed into a virtual environment, where there is no
ament index, so the source tree or the pip data-files prefix is used instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from deepracer_nodes.core.spec import PACKAGE_NAME

_SHARE_FOLDERS = ('config', 'launch', 'models', 'worlds')


def _looks_like_share(path: Path) -> bool:
    return all((path / name).is_dir() for name in ('config', 'models'))


def share_dir() -> Path:
    """Return the folder holding config/, launch/, models/ and worlds/."""
    candidates = []
    if os.environ.get('AMENT_PREFIX_PATH'):
        try:
            from ament_index_python.packages import (
                PackageNotFoundError, get_package_share_directory)
            try:
                candidates.append(Path(get_package_share_directory(PACKAGE_NAME)))
            except PackageNotFoundError:
                pass
        except ImportError:
            pass
    # A source checkout or an editable install: the repository root.
    candidates.append(Path(__file__).resolve().parent.parent)
    # A plain pip install: setup.py's data_files land under the prefix.
    candidates.append(Path(sys.prefix) / 'share' / PACKAGE_NAME)
    for candidate in candidates:
        if _looks_like_share(candidate):
            return candidate
    raise FileNotFoundError(
        f'cannot find the {PACKAGE_NAME} share folder (looked in '
        + ', '.join(str(c) for c in candidates) + ')')


def share_path(*parts: str) -> Path:
    """Path of a file under the share folder, e.g. share_path('config', 'car.yaml')."""
    return share_dir().joinpath(*parts)


def user_models_dir() -> Path:
    """Per-user folder for imported and trained models (~/.deepracer/models)."""
    root = os.environ.get('DEEPRACER_HOME', str(Path.home() / '.deepracer'))
    return Path(root) / 'models'
