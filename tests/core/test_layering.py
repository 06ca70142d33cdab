"""The three layers: the core library never imports ComfyUI and works as a sub-package of the pack."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "movingbg"
FORBIDDEN = {"comfy", "folder_paths", "nodes", "execution", "server", "comfy_extras"}


def _imports(path: Path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield 0, a.name
        elif isinstance(node, ast.ImportFrom):
            yield node.level, node.module or ""


def test_core_has_no_comfy_imports_and_only_relative_self_imports():
    bad = []
    for path in CORE.rglob("*.py"):
        for level, name in _imports(path):
            top = name.split(".")[0]
            if level == 0 and top in FORBIDDEN:
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
            if level == 0 and top == "movingbg":
                bad.append(f"{path.relative_to(ROOT)} imports {name} absolutely (use a relative import: the "
                           "package is loaded as a sub-package of the ComfyUI pack)")
    assert not bad, "\n".join(bad)


def test_every_core_module_imports_with_comfy_absent():
    code = (
        "import sys, importlib, pkgutil\n"
        f"for m in {sorted(FORBIDDEN)!r}: sys.modules[m] = None\n"
        "import movingbg\n"
        "names = [m.name for m in pkgutil.walk_packages(movingbg.__path__, 'movingbg.')]\n"
        "for n in names: importlib.import_module(n)\n"
        "print(len(names))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.strip().splitlines()[-1]) >= 10


def test_node_modules_use_relative_core_imports():
    for path in (ROOT / "nodes").glob("*.py"):
        for level, name in _imports(path):
            assert not (level == 0 and name.split(".")[0] == "movingbg"), f"{path.name}: {name}"
