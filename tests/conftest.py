"""Shared pytest configuration: fixtures live in tests/fixtures/, one file per concern.

Every test run gets its own HUB_HOME, set before anything imports paddlehub (which reads it at
import time), so no test touches ~/.paddlehub. PaddleHub's server is pointed at a closed port on
127.0.0.1: its background "update cache" requests then fail at once and never leave the machine.
"""
import os
import shutil
import tempfile
from pathlib import Path

_HUB_HOME = Path(tempfile.mkdtemp(prefix="paddlehub-video-tests-"))
(_HUB_HOME / "conf").mkdir()
(_HUB_HOME / "conf" / "config.yaml").write_text(
    "server: http://127.0.0.1:9/paddlehub\nlog:\n  enable: true\n  level: WARNING\n"
)
os.environ["HUB_HOME"] = str(_HUB_HOME)
# One thread per predictor, as before automatic thread counts: the machine's cores are shared by the
# test processes, and subprocesses (hub run) inherit it. Tests of the automatic count unset it.
os.environ.setdefault("PADDLEHUB_VIDEO_CPU_THREADS", "1")
# The fp32 results the tests check are the default's: a precision chosen in the caller's environment stays out.
os.environ.pop("PADDLEHUB_VIDEO_PRECISION", None)

pytest_plugins = [
    "tests.fixtures.videos",
    "tests.fixtures.http_server",
    "tests.fixtures.publisher",
]


def pytest_sessionfinish(session, exitstatus):
    """Remove this run's HUB_HOME (converted models and downloads: hundreds of MB)."""
    shutil.rmtree(_HUB_HOME, ignore_errors=True)
