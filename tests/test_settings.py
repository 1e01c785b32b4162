"""Settings: built and checked once when a module is made, one precedence, frozen, per-call choices apart."""
import dataclasses
from pathlib import Path

import pytest
import yaml

from paddlehub_video.config import CONFIG_ENV
from paddlehub_video.cpus import CPU_THREADS_ENV, WORKERS_ENV
from paddlehub_video.errors import ConfigError
from paddlehub_video.settings import build_settings
from stnet_kinetics400.module import StNet
from videotag_tsn_lstm.module import VideoTag

VIDEOTAG = "videotag_tsn_lstm"
NO_ENV: dict = {}


@pytest.fixture(autouse=True)
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (CONFIG_ENV, CPU_THREADS_ENV, WORKERS_ENV):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"limit": {"max_frames": 10}}, r"unknown setting 'limit'; did you mean 'limits'"),
    ({"runtime": {"cpu_thread": 4}}, r"unknown setting 'runtime.cpu_thread'; did you mean 'runtime.cpu_threads'"),
    ({"sampling": {"segnum": 8}}, r"'sampling.segnum'; did you mean 'sampling.seg_num'"),
    ({"assets": {"labels": {"urll": "http://x/l.txt"}}}, r"'assets.labels.urll'; did you mean 'assets.labels.url'"),
    ({"nothing_like_it": 1}, r"unknown setting 'nothing_like_it' \(valid here: sampling, "),
])
def test_an_unknown_key_names_itself_and_the_closest_valid_one(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_settings(VIDEOTAG, overrides, environ=NO_ENV)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"runtime": {"cpu_threads": "4"}}, r"runtime.cpu_threads must be a positive integer, got '4'"),
    ({"runtime": {"cpu_threads": 0}}, r"runtime.cpu_threads must be a positive integer, got 0"),
    ({"runtime": {"workers": True}}, r"runtime.workers must be a positive integer, got True"),
    ({"runtime": {"use_onednn": "yes"}}, r"runtime.use_onednn must be true or false"),
    ({"runtime": {"decode_ahead": "auto"}}, r"runtime.decode_ahead must be true or false, got 'auto'"),
    ({"limits": {"max_pixels": -1}}, r"limits.max_pixels must be a positive integer"),
    ({"preprocess": {"mean": [0.5, 0.5]}}, r"preprocess.mean must be a list of 3 numbers"),
    ({"preprocess": {"std": [0.2, 0.0, 0.2]}}, r"preprocess.std must be 3 positive numbers"),
    ({"sampling": {"seg_num": 2.5}}, r"sampling.seg_num must be a positive integer"),
    ({"runtime": [1, 2]}, r"runtime must be a mapping"),
    ({"assets": {"labels": {"url": ""}}}, r"assets.labels.url must be a non-empty string"),
])
def test_a_wrong_type_or_range_names_the_key_and_what_it_accepts(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_settings(VIDEOTAG, overrides, environ=NO_ENV)


def test_wrong_values_fail_when_the_module_is_made_not_at_first_use():
    with pytest.raises(ConfigError, match="runtime.cpu_threads"):
        VideoTag(config={"runtime": {"cpu_threads": -2}})


def test_precedence_yaml_then_config_file_then_overrides_then_environment(tmp_path: Path, monkeypatch):
    defaults = build_settings(VIDEOTAG, environ=NO_ENV)
    assert defaults.sampling.seg_num == 300 and defaults.runtime.cpu_threads is None  # configs/ YAML

    env_file = tmp_path / "overrides.yaml"
    env_file.write_text(yaml.safe_dump({VIDEOTAG: {"sampling": {"seg_num": 8}, "runtime": {"workers": 3}}}))
    with_file = {CONFIG_ENV: str(env_file)}
    from_file = build_settings(VIDEOTAG, environ=with_file)
    assert (from_file.sampling.seg_num, from_file.runtime.workers) == (8, 3)  # the file beats the YAML
    monkeypatch.setenv(CONFIG_ENV, str(env_file))
    assert build_settings(VIDEOTAG).sampling.seg_num == 8  # by default, the process's environment

    caller = build_settings(VIDEOTAG, {"sampling": {"seg_num": 4}}, environ=with_file)
    assert (caller.sampling.seg_num, caller.runtime.workers) == (4, 3)  # the caller beats the file

    environ = {**with_file, CPU_THREADS_ENV: "2", WORKERS_ENV: "5"}
    fallback = build_settings(VIDEOTAG, environ=environ)
    assert (fallback.runtime.cpu_threads, fallback.runtime.workers) == (2, 3)  # env only where still null
    explicit = build_settings(VIDEOTAG, {"runtime": {"cpu_threads": 1}}, environ=environ)
    assert explicit.runtime.cpu_threads == 1  # an explicit setting beats the environment


def test_a_bad_environment_value_names_the_variable():
    with pytest.raises(ConfigError, match=f"{CPU_THREADS_ENV}='many': expected a positive whole number"):
        build_settings(VIDEOTAG, environ={CPU_THREADS_ENV: "many"})
    with pytest.raises(ConfigError, match=f"{WORKERS_ENV}='0': expected a positive whole number"):
        build_settings(VIDEOTAG, environ={WORKERS_ENV: "0"})


def test_the_environment_is_read_when_the_module_is_made(monkeypatch):
    monkeypatch.setenv(CPU_THREADS_ENV, "3")
    module = VideoTag()
    monkeypatch.setenv(CPU_THREADS_ENV, "1")
    assert module.settings.runtime.cpu_threads == 3


def test_a_value_the_network_fixes_is_refused():
    with pytest.raises(ConfigError, match="sampling.seglen must be 5"):
        StNet(config={"sampling": {"seglen": 4}})


def test_settings_are_frozen_and_config_is_a_copy():
    module = VideoTag(config={"runtime": {"workers": 1}})
    with pytest.raises(dataclasses.FrozenInstanceError):
        module.settings.runtime.workers = 2  # type: ignore[misc]
    module.config["runtime"]["workers"] = 2  # the old dict view: a copy, changes nothing
    assert module.settings.runtime.workers == 1 and module.workers() == 1
    assert module.config["preprocess"]["mean"] == [0.485, 0.456, 0.406]


def test_per_call_workers_do_not_leak_into_settings_or_later_calls():
    module = VideoTag(config={"runtime": {"workers": 1}})
    assert module.workers(workers=2) == 2  # what one call asks for
    assert module.workers() == 1 and module.settings.runtime.workers == 1
    assert module.workers(use_gpu=True, workers=3) == 1  # a GPU runs one video at a time


def test_each_stage_gets_its_own_section():
    settings = build_settings("stnet_kinetics400", environ=NO_ENV)
    assert (settings.sampling.seg_num, settings.sampling.seglen) == (25, 5)
    assert settings.limits.decode_limits().active is False
    assert settings.assets["weights"].network == "stnet_resnet50_kinetics400"
