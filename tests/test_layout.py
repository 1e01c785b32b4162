"""The package's folders are its pipeline's stages, and imports go one way between them.

Read from the source (no imports run): every `import`/`from ... import` of every module, lazy ones
inside functions included, resolved to the package module it names. A module's `__getattr__` is
left out: it holds the deprecated aliases of names that moved, imported only when an old name is used.
"""
import ast
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import paddlehub_video

PACKAGE = Path(paddlehub_video.__file__).parent
REPO = Path(__file__).resolve().parents[1]
NAME = "paddlehub_video"

# stage -> the stages (folders or top-level modules) its modules must never import
FORBIDDEN = {
    "decode": ("model", "interfaces", "module_base", "pipeline", "timeline"),
    "model": ("decode", "interfaces", "module_base", "pipeline", "timeline"),
    "progress": ("interfaces",),
    "module_base": ("interfaces",),  # hub run / hub serving reach the flow through hub_entry.py
    "pipeline": ("interfaces", "module_base"),
    "timeline": ("interfaces", "module_base"),
    "segments": ("decode", "model", "interfaces", "module_base", "pipeline", "timeline"),  # pure: windows in, spans out
    "errors": ("decode", "model", "interfaces"),
    "cpus": ("decode", "model", "interfaces"),
    "config": ("decode", "model", "interfaces"),
    # every stage reads its variables here: it stays a leaf (errors only)
    "environment": ("decode", "model", "interfaces", "module_base", "pipeline", "timeline", "settings", "config",
                    "cpus", "progress"),
    # The HTTP rules model downloads and URL inputs share: below both.
    "http_rules": ("decode", "model", "interfaces", "inputs", "module_base", "pipeline", "timeline", "settings"),
    # Items of `paths` -> local files or frames: used by the flow, never using it.
    "inputs": ("model", "interfaces", "module_base", "pipeline", "timeline"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """The package modules `path` imports (absolute names)."""
    own = module_name(path).split(".")
    package = own if path.name == "__init__.py" else own[:-1]
    found = set()
    for node in _nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # `from . import x`: x may be a module
    return {name for name in found if name == NAME or name.startswith(NAME + ".")}


def _nodes(tree: ast.AST):
    """`ast.walk`, less the bodies of module-level `__getattr__` functions."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            continue
        yield node
        yield from _nodes(node)


def stage_of(module: str) -> str:
    """`paddlehub_video.decode.video` -> `decode`; `paddlehub_video.pipeline` -> `pipeline`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_the_scan_sees_imports():
    """The checker itself: it finds the imports a module is known to make, relative and lazy ones."""
    video = imported_modules(PACKAGE / "decode" / "video.py")
    assert f"{NAME}.errors" in video and f"{NAME}.decode.packet_plan" in video
    assert f"{NAME}.interfaces.quiet" in imported_modules(PACKAGE / "interfaces" / "terminal.py")


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_one_way(source):
    stage = stage_of(module_name(source))
    forbidden = FORBIDDEN.get(stage, ())
    wrong = sorted(m for m in imported_modules(source) if stage_of(m) in forbidden)
    assert not wrong, f"{source.relative_to(PACKAGE)} ({stage}) must not import {wrong}"


def test_the_old_module_names_are_the_moved_modules():
    """`paddlehub_video.video` and friends (the names before the move) still import, as the same objects."""
    from paddlehub_video._moved import MOVED

    for old, new in MOVED.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            aliased = __import__(f"{NAME}.{old}", fromlist=["_"])
        moved = __import__(f"{NAME}.{new}", fromlist=["_"])
        assert aliased is moved, old
        assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught), old
    from paddlehub_video.assets import cache as old_cache
    from paddlehub_video.model.assets import cache

    assert old_cache is cache


def test_a_clone_works_with_pythonpath_common_alone():
    """`PYTHONPATH=common` from a clone (nothing installed): the configs come from the top-level configs/."""
    script = (
        "import sys\n"
        # this environment has the package installed (editable): take that finder away
        "sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in getattr(f, '__module__', '')]\n"
        "sys.path.insert(0, 'common')\n"
        "import paddlehub_video\n"
        "from paddlehub_video.config import load_module_config\n"
        "from paddlehub_video.model.weights import expected_parameters\n"
        "import importlib.util\n"
        "assert importlib.util.find_spec('paddlehub_video.configs') is None, 'not the clone case'\n"
        "print(load_module_config('stnet_kinetics400')['model']['num_classes'],"
        " len(expected_parameters('stnet_resnet50_kinetics400')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["400", "301"]
