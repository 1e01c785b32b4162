"""The package's modules before they moved into stage folders, kept importable under their old names.

`import paddlehub_video.video` (or `from paddlehub_video import video`, or `python -m
paddlehub_video.samples`) gives the very module object now at `paddlehub_video.decode.video`, with a
DeprecationWarning: patching the old name patches the module the library uses.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings

MOVED = {
    "video": "decode.video",
    "packet_plan": "decode.packet_plan",
    "bitstream": "decode.bitstream",
    "av_sequential": "decode.av_sequential",
    "limits": "decode.limits",
    "sampling": "decode.sampling",
    "preprocess": "decode.preprocess",
    "assets": "model.assets",
    "weights": "model.weights",
    "inference_model": "model.inference_model",
    "predictor": "model.predictor",
    "networks": "model.networks",
    "postprocess": "model.postprocess",
    "cli": "interfaces.cli",
    "serving": "interfaces.serving",
    "report": "interfaces.report",
    "results_file": "interfaces.results_file",
    "quiet": "interfaces.quiet",
    "ray_adapter": "interfaces.ray_adapter",
    "samples": "interfaces.samples",
}
PACKAGE = __name__.rpartition(".")[0]


def new_name(old: str) -> str | None:
    """`paddlehub_video.assets.cache` -> `paddlehub_video.model.assets.cache`; None for a name that did not move."""
    head, _, rest = old.removeprefix(PACKAGE + ".").partition(".")
    if not old.startswith(PACKAGE + ".") or head not in MOVED:
        return None
    return f"{PACKAGE}.{MOVED[head]}" + (f".{rest}" if rest else "")


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec):
        warnings.warn(f"{spec.name} moved to {self.target}; import it from there", DeprecationWarning, stacklevel=2)
        return importlib.import_module(self.target)

    def exec_module(self, module) -> None:
        """Nothing to run: the module is the one already imported under its new name."""

    def get_code(self, fullname: str):
        """For `python -m <old name>`: code that runs the new module as __main__ (in its own package)."""
        return compile(f"import runpy\nrunpy.run_module({self.target!r}, run_name='__main__', alter_sys=True)",
                       f"<{fullname}, moved to {self.target}>", "exec")


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path=None, target=None):
        moved_to = new_name(fullname)
        if moved_to is None:
            return None
        is_package = importlib.util.find_spec(moved_to).submodule_search_locations is not None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(moved_to), is_package=is_package)


def install() -> None:
    """Put the old names' finder first (before the path finder would load a second copy of a module)."""
    if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())
