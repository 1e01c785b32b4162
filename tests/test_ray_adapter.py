"""Ray Data adapter: both stages on a local Ray instance answer every video as `classify` does.

The Ray workers get HUB_HOME and the weights mirror only through `runtime_env`: Ray starts without
them, and the HUB_HOME the workers are given is a fresh one, so finding the downloads there shows
that both variables reached the actors.
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from tests.fixtures.publisher import REPO, SMALL, PublisherHost
from tests.fixtures.videos import MakeVideo

OBJECT_STORE_BYTES = 200 * 2**20


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[Any]:
    """A small local Ray: 2 CPUs, a 200 MB object store, no dashboard, worker logs kept out of the output."""
    ray = pytest.importorskip("ray")
    importlib.import_module("ray.data")  # a submodule: `ray.data` is an attribute only once imported
    with pytest.MonkeyPatch.context() as patch:  # workers inherit ray.init's environment: none of ours
        for name in [n for n in os.environ if n.startswith("PADDLEHUB_VIDEO_")]:
            patch.delenv(name)
        ray.init(
            address="local",  # a new local instance, never a cluster already running on the machine
            num_cpus=2,
            object_store_memory=OBJECT_STORE_BYTES,
            include_dashboard=False,
            log_to_driver=False,
            logging_level="WARNING",
        )
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def adapter(ray_instance: Any) -> ModuleType:
    return importlib.import_module("paddlehub_video.interfaces.ray_adapter")


@pytest.fixture(scope="module")
def actor_hub_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HUB_HOME only the workers are told about: this run's PaddleHub config (no network), its own
    downloads, and this run's conversion cache, so models converted by earlier tests are reused."""
    home, run_home = tmp_path_factory.mktemp("ray-hub-home"), Path(os.environ["HUB_HOME"])
    shutil.copytree(run_home / "conf", home / "conf")
    (run_home / "paddlehub_video" / "inference").mkdir(parents=True, exist_ok=True)
    (home / "paddlehub_video").mkdir()
    (home / "paddlehub_video" / "inference").symlink_to(run_home / "paddlehub_video" / "inference")
    return home


@pytest.fixture(scope="module")
def videos(make_video: MakeVideo, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Three small videos and, second, an .mp4 full of garbage (batches of 2 put it next to a good one)."""
    garbage = tmp_path_factory.mktemp("ray-videos") / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    good = [make_video("ray_a", 30, 64, 48), make_video("ray_b", 9, 48, 80), make_video("ray_c", 60, 96, 64)]
    return [str(good[0]), str(garbage), str(good[1]), str(good[2])]


CASES = [  # (module, class handed to the stages or None for the module directory, classify options)
    ("videotag_tsn_lstm", None, {"top_k": 7, "threshold": 0.2}),
    ("stnet_kinetics400", "StNet", {}),  # the module's own defaults: top_k 5, threshold 0.0
]
LABEL_FILES = {"videotag_tsn_lstm": "label_3396.txt", "stnet_kinetics400": "kinetics_labels.json"}


def run_stages(ray: Any, adapter: ModuleType, videos: list[str], env: dict, **kwargs: Any) -> dict[str, dict]:
    """Both stages over `videos`, as the README shows them; the result rows by path."""
    common = {"batch_format": "pyarrow", "batch_size": 2, "runtime_env": env,
              "compute": ray.data.ActorPoolStrategy(size=1)}
    model_options = {key: kwargs.pop(key) for key in ("top_k", "threshold") if key in kwargs}
    ds = ray.data.from_items([{"path": p} for p in videos])
    ds = ds.map_batches(adapter.DecodeStage, fn_constructor_kwargs=kwargs, **common)
    ds = ds.map_batches(adapter.ModelStage, fn_constructor_kwargs={**kwargs, **model_options}, **common)
    return {row["path"]: row for row in ds.take_all()}


@pytest.mark.parametrize(("name", "class_name", "options"), CASES)
def test_stages_answer_every_video_as_classify_does(
    ray_instance, adapter, publisher_host: PublisherHost, actor_hub_home, videos, monkeypatch, name, class_name,
    options,
):
    module = str(REPO / name) if class_name is None else getattr(importlib.import_module(f"{name}.module"), class_name)
    env = adapter.runtime_env(HUB_HOME=str(actor_hub_home), no_proxy="127.0.0.1,localhost", **publisher_host.env())
    config = publisher_host.config(name, **SMALL)
    rows = run_stages(ray_instance, adapter, videos, env, module=module, config=config, **options)

    assert list((actor_hub_home / "paddlehub_video").rglob(LABEL_FILES[name]))  # fetched there, from the mirror
    for key, value in publisher_host.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    expected = publisher_host.small_module(name).classify(videos, **options)

    assert sorted(rows) == sorted(videos)
    for entry in expected:
        row = rows[entry["path"]]
        assert list(json.loads(row["prediction"]).items()) == list(entry["prediction"].items())  # order, exact floats
        assert row["error"] == entry.get("error", "")
    assert rows[videos[1]]["error"] and rows[videos[1]]["prediction"] == "{}"
    assert all(rows[p]["prediction"] != "{}" and not rows[p]["error"] for p in videos if p != videos[1])


def threads_probe(ray: Any, num_cpus: int, env: dict) -> Any:
    """An actor of `num_cpus` CPUs whose `stage_threads(config)` builds a StNet ModelStage and returns the
    cpu_threads of the predictors that stage created in the actor's process (from `predictor._shared`'s
    keys), the process's PADDLEHUB_VIDEO_CPU_THREADS, and the file its paddlehub_video came from."""

    @ray.remote(num_cpus=num_cpus, runtime_env=env)
    class ThreadsProbe:  # defined in a function: pickled by value, so the workers never import tests/
        def stage_threads(self, config: dict) -> tuple[list[int], str | None, str]:
            import paddlehub_video
            from paddlehub_video.cpus import CPU_THREADS_ENV
            from paddlehub_video.interfaces.ray_adapter import ModelStage
            from paddlehub_video.model import predictor
            from stnet_kinetics400.module import StNet

            before = set(predictor._shared)
            ModelStage(StNet, config=config)
            made = [key[2] for key in predictor._shared if key not in before]  # (prefix, gpu, threads, ...)
            return made, os.environ.get(CPU_THREADS_ENV), paddlehub_video.__file__

    return ThreadsProbe.remote()


@pytest.fixture(scope="module")
def probe_env(adapter, publisher_host: PublisherHost, actor_hub_home) -> dict:
    """The stages' runtime_env without this run's PADDLEHUB_VIDEO_CPU_THREADS (conftest pins 1): threads automatic."""
    env = adapter.runtime_env(HUB_HOME=str(actor_hub_home), no_proxy="127.0.0.1,localhost", **publisher_host.env())
    env["env_vars"].pop("PADDLEHUB_VIDEO_CPU_THREADS", None)
    return env


def stage_threads(ray: Any, num_cpus: int, env: dict, config: dict) -> list[int]:
    """The threads of the predictors that a ModelStage with `config` made in a fresh actor of `num_cpus` CPUs."""
    probe = threads_probe(ray, num_cpus, env)
    try:
        made, pinned, package = ray.get(probe.stage_threads.remote(config), timeout=600)
    finally:
        ray.kill(probe)  # frees its CPUs for the next actor (the instance has 2)
    assert pinned is None  # the automatic count is what is tested
    assert package == importlib.import_module("paddlehub_video").__file__  # the actor runs this checkout's code
    return made


@pytest.mark.parametrize("num_cpus", [1, 2])
def test_model_stage_threads_are_the_cpus_ray_assigned(ray_instance, probe_env, publisher_host, num_cpus):
    # Ray leaves the actor the node's affinity mask: without with_assigned_cpus both cases would get
    # the node's usable CPUs, which differ from at least one of 1 and 2.
    config = publisher_host.config("stnet_kinetics400", **SMALL)
    # StNet: two predictors (the windows model and the temporal one), each with the actor's CPUs.
    assert stage_threads(ray_instance, num_cpus, probe_env, config) == [num_cpus, num_cpus]


def test_model_stage_config_cpu_threads_wins_over_ray(ray_instance, probe_env, publisher_host):
    config = publisher_host.config("stnet_kinetics400", **SMALL, runtime={"cpu_threads": 1})
    assert stage_threads(ray_instance, 2, probe_env, config) == [1, 1]


def test_importing_paddlehub_video_never_imports_ray():
    code = (
        "import importlib, pkgutil, sys, paddlehub_video as p\n"
        "names = [m.name for m in pkgutil.walk_packages(p.__path__, 'paddlehub_video.')]\n"
        "ray_modules = {'paddlehub_video.interfaces.ray_adapter', 'paddlehub_video.interfaces.fleet'}\n"
        "[importlib.import_module(n) for n in names if n not in ray_modules]\n"
        "assert 'ray' not in sys.modules, [n for n in sys.modules if n.startswith('ray')]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_adapter_without_ray_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what a missing package looks like to `import ray`
    monkeypatch.delitem(sys.modules, "paddlehub_video.interfaces.ray_adapter", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'paddlehub-video\[ray\]'"):
        importlib.import_module("paddlehub_video.interfaces.ray_adapter")
