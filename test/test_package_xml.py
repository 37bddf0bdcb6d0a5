"""package.xml declares, with its rosdep key, every module the installed package imports."""

from __future__ import annotations

import ast
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Python module -> rosdep key, for modules whose key is not the module's own name.
ROSDEP_KEYS = {
    'numpy': 'python3-numpy', 'cv2': 'python3-opencv', 'onnxruntime': 'python3-onnxruntime-pip',
    'matplotlib': 'python3-matplotlib', 'tqdm': 'python3-tqdm', 'PIL': 'python3-pil',
    'yaml': 'python3-yaml',
}
# Optional extras (setup.py), imported only by the commands that need them: training,
# building test models, converting console models, the fuzz section of `deepracer bench`.
OPTIONAL = {'torch', 'onnx', 'tensorflow', 'tf2onnx', 'hypothesis'}


def imported_top_level_modules() -> set[str]:
    modules = set()
    for path in [*ROOT.glob('deepracer_nodes/**/*.py'), *ROOT.glob('launch/*.py')]:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split('.')[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module.split('.')[0])
    return modules - set(sys.stdlib_module_names) - {'deepracer_nodes', '__future__'}


def declared(tag: str) -> set[str]:
    root = ElementTree.parse(ROOT / 'package.xml').getroot()
    return {element.text for element in root.iter(tag)}


def test_package_xml_is_format_3_ament_python():
    root = ElementTree.parse(ROOT / 'package.xml').getroot()
    assert root.get('format') == '3'
    assert root.findtext('name') == 'deepracer_nodes'
    assert root.findtext('export/build_type') == 'ament_python'


def test_every_imported_module_is_a_declared_run_dependency():
    needed = {ROSDEP_KEYS.get(m, m) for m in imported_top_level_modules() - OPTIONAL}
    missing = needed - declared('exec_depend') - declared('depend')
    assert not missing, f'package.xml lacks exec_depend for {sorted(missing)}'
