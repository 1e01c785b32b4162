"""`hub run` / `hub install` of both modules, as a user types them, in subprocesses.

Every command runs PaddleHub's own console entry point (`paddlehub.commands.utils:execute`, what
the `hub` script calls) with this interpreter, the run's HUB_HOME, downloads sent to the simulated
publisher host and small configs through $PADDLEHUB_VIDEO_CONFIG (8 TSN frames, 4 StNet segments).

`test_install_then_run_...` is also the smoke test of each supported Python (scripts/smoke_python.sh):
with $PADDLEHUB_VIDEO_SMOKE_RESULT it writes its API results there as JSON; with
$PADDLEHUB_VIDEO_SMOKE_REFERENCE it checks them against such a file (the main interpreter's) to 1e-5.
"""
from __future__ import annotations

import json
import math
import os
import platform
import shutil
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.fixtures.hub_cli import TRACEBACK, describe, hub_home_config, printed_result, run_hub
from tests.fixtures.publisher import KINETICS_LABELS, VIDEOTAG_LABELS
from tests.fixtures.videos import MakeVideo

REPO = Path(__file__).resolve().parents[1]
MODULE_NAMES = ("videotag_tsn_lstm", "stnet_kinetics400")
CLOSED_URL = "http://127.0.0.1:9"  # discard port: nothing listens, connections are refused at once








def check_prediction(prediction: dict, labels: list[str], max_size: int) -> None:
    """A non-empty {label: probability} dict of known labels, descending, at most `max_size` long."""
    assert isinstance(prediction, dict) and 0 < len(prediction) <= max_size, prediction
    assert set(prediction) <= set(labels), prediction
    probs = list(prediction.values())
    assert all(isinstance(p, float) and 0.0 <= p <= 1.0 for p in probs), prediction
    assert probs == sorted(probs, reverse=True), prediction


def same_prediction(a: dict, b: dict) -> bool:
    """Same labels in the same order with probabilities equal to float32 precision."""
    return list(a) == list(b) and all(math.isclose(a[k], b[k], rel_tol=1e-4, abs_tol=1e-6) for k in a)




def same_result_as_reference(result: dict, reference: dict, tolerance: float = 1e-5) -> list[str]:
    """How `result` differs from `reference` (both {module: [{label: probability}, ...]}): labels, or
    probabilities by more than `tolerance`. Empty when they agree."""
    differences = []
    for module in ("videotag", "stnet"):
        if len(result[module]) != len(reference[module]):
            differences.append(f"{module}: {len(result[module])} results != {len(reference[module])}")
        for index, (got, want) in enumerate(zip(result[module], reference[module], strict=True)):
            if set(got) != set(want):
                differences.append(f"{module}[{index}]: labels {sorted(got)} != {sorted(want)}")
                continue
            differences += [f"{module}[{index}][{label!r}]: {got[label]} != {want[label]}"
                            for label in want if abs(got[label] - want[label]) > tolerance]
    return differences


def module_source_files() -> set[str]:
    """Files of the two module folders in the repository, build caches aside."""
    return {
        str(path.relative_to(REPO))
        for name in MODULE_NAMES
        for path in (REPO / name).rglob("*")
        if "__pycache__" not in path.parts
    }


@pytest.fixture(scope="module")
def videos(make_video: MakeVideo, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two different short videos; `spaced` has spaces in its folder and file names."""
    folder = tmp_path_factory.mktemp("hub-cli-videos") / "my videos"
    folder.mkdir()
    spaced = folder / "my clip 1.mp4"
    shutil.copyfile(make_video("hub_cli_a", 60, 64, 48), spaced)
    other = folder / "other.mp4"
    shutil.copyfile(make_video("hub_cli_b", 40, 48, 80), other)
    return {"spaced": spaced, "other": other}


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory that holds no module folder."""
    return tmp_path_factory.mktemp("hub-cli-cwd")


def test_run_from_repository_root_where_a_module_folder_shadows_the_name(hub_env, videos):
    # PaddleHub 2.4 loads ./videotag_tsn_lstm with Module.load, which returns the class: the run
    # entry must create the instance itself instead of failing with "'property' object is not callable".
    assert (REPO / "videotag_tsn_lstm" / "module.py").is_file()
    video = str(videos["spaced"])
    proc = run_hub(["run", "videotag_tsn_lstm", "--input_path", video, "--use_gpu", "False",
                    "--threshold", "0", "--top_k", "5"], cwd=REPO, env=hub_env)
    assert "not callable" not in proc.stderr, describe(proc)
    result = printed_result(proc)
    assert len(result) == 1, result
    assert result[0]["path"] == video and "error" not in result[0], result
    check_prediction(result[0]["prediction"], VIDEOTAG_LABELS, max_size=5)


def test_usage_error_without_input_exits_quickly(hub_env):
    started = time.monotonic()
    proc = run_hub(["run", "videotag_tsn_lstm", "--use_gpu", "False"], cwd=REPO, env=hub_env, timeout=60)
    elapsed = time.monotonic() - started
    assert proc.returncode == 2, describe(proc)
    assert "usage: hub run videotag_tsn_lstm" in proc.stderr, describe(proc)
    assert "--input_path" in proc.stderr.split("error:", 1)[-1], describe(proc)
    assert TRACEBACK not in proc.stderr, describe(proc)
    assert elapsed < 60


@pytest.mark.parametrize("module,option,value", [
    ("videotag_tsn_lstm", "--top_k", "0"),
    ("stnet_kinetics400", "--threshold", "2"),
])  # every bad value in process: tests/test_pipeline_cli.py
def test_a_bad_argument_is_a_usage_error_exit_2_with_one_error_line(hub_env, videos, module, option, value):
    proc = run_hub(["run", module, "--input_path", str(videos["spaced"]), option, value],
                   cwd=REPO, env=hub_env, timeout=120)
    assert proc.returncode == 2, describe(proc)
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, describe(proc)
    assert errors[0].startswith(f"hub run {module}: error: argument {option}: "), describe(proc)
    assert errors[0].endswith(f"got {value!r}"), describe(proc)
    assert TRACEBACK not in proc.stderr, describe(proc)
    assert "[{" not in proc.stdout, describe(proc)


def test_list_labels_prints_id_tab_name_in_utf8_without_fetching_or_converting_weights(
        hub_env, publisher_host, tmp_path):
    hub_home = tmp_path / "hub home"  # empty: nothing downloaded or converted yet
    hub_home_config(hub_home)
    requests_before = len(publisher_host.server.requests)
    # An ASCII-only stdout encoding: the Chinese labels are written in UTF-8 all the same.
    env = {**hub_env, "HUB_HOME": str(hub_home), "PYTHONIOENCODING": "ascii"}
    proc = run_hub(["run", "videotag_tsn_lstm", "--list_labels"], cwd=REPO, env=env)
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout == "".join(f"{index}\t{name}\n" for index, name in enumerate(VIDEOTAG_LABELS)), describe(proc)
    fetched = {request.path for request in publisher_host.server.requests[requests_before:]}
    assert fetched == {"label_3396.txt"}, fetched  # the label file only: no weights
    cache = hub_home / "paddlehub_video"
    assert not (cache / "inference").exists(), sorted(cache.rglob("*"))  # nothing converted


def test_labels_property_and_list_labels_in_process_read_the_label_file_only(mirror, capsysbinary):
    stnet = mirror.small_module("stnet_kinetics400")
    requests_before = len(mirror.server.requests)
    labels = stnet.labels
    assert labels == KINETICS_LABELS and labels is not stnet.labels  # a new list each time
    with pytest.raises(SystemExit) as info:
        stnet.run_cmd(["--list_labels"])
    assert info.value.code == 0
    expected = "".join(f"{index}\t{name}\n" for index, name in enumerate(KINETICS_LABELS))
    assert capsysbinary.readouterr().out == expected.encode("utf-8")
    assert stnet._bundle is None  # the networks were not loaded (nor converted)
    assert {request.path for request in mirror.server.requests[requests_before:]} <= {"kinetics_labels.json"}


def test_stnet_input_file_and_input_path_in_order(hub_env, videos, tmp_path):
    missing = tmp_path / "no such video.mp4"
    list_file = tmp_path / "list.txt"
    list_file.write_text(
        f"# videos to classify\n\n{videos['spaced']}\n   \n{missing}\n  # indented comment\n{videos['other']}\n\n",
        encoding="utf-8",
    )
    # --input_path comes first, then the listed videos in file order.
    proc = run_hub(["run", "stnet_kinetics400", "--input_path", str(videos["other"]), "--input_file", str(list_file),
                    "--use_gpu", "False", "--top_k", "3", "--batch_size", "1"], cwd=REPO, env=hub_env)
    result = printed_result(proc, status=1)  # one video failed: the others are printed, the status says so
    # Not the published single-video call: each result carries its path, as classify's entries do.
    assert [entry["path"] for entry in result] == [str(videos["other"]), str(videos["spaced"]), str(missing),
                                                   str(videos["other"])], result
    for index in (0, 1, 3):
        check_prediction(result[index]["prediction"], KINETICS_LABELS, max_size=3)
    # the missing video keeps its place, with an empty result and its reason
    assert result[2] == {"path": str(missing), "prediction": {}, "error": f"{missing}: file not found"}, result
    assert same_prediction(result[0]["prediction"], result[3]["prediction"]), result  # the same video twice
    assert not same_prediction(result[1]["prediction"], result[3]["prediction"]), result  # two different videos
    assert f"hub run stnet_kinetics400: error: {missing}: file not found" in proc.stderr, describe(proc)
    assert "1 of 4 videos failed" in proc.stderr, describe(proc)
    assert TRACEBACK not in proc.stderr, describe(proc)


def test_published_single_video_call_prints_what_the_api_prints_byte_for_byte(hub_env, videos):
    # `hub run M --input_path V` (PaddleHub's own call) prints print(<the published API's result>), nothing else;
    # two paths after --input_path are both classified, each printed result with its path.
    video, other = str(videos["spaced"]), str(videos["other"])
    script = textwrap.dedent("""
        import sys
        import paddlehub as hub
        tag = hub.Module(directory=sys.argv[1] + "/videotag_tsn_lstm")
        stnet = hub.Module(directory=sys.argv[1] + "/stnet_kinetics400")
        print(tag.classify([sys.argv[2]]))
        print(stnet.video_classification({"image": [sys.argv[2]]}))
        print(stnet.classify(sys.argv[2:], top_k=5))
    """)
    api = run_hub([str(REPO), video, other], cwd=REPO, env=hub_env, command=[sys.executable, "-c", script])
    assert api.returncode == 0, describe(api)
    tag_line, stnet_line, stnet_entries = api.stdout.splitlines()[-3:]
    proc = run_hub(["run", "videotag_tsn_lstm", "--input_path", video], cwd=REPO, env=hub_env)
    assert proc.returncode == 0 and proc.stdout == tag_line + "\n", describe(proc)
    proc = run_hub(["run", "stnet_kinetics400", "--input_path", video, "--use_gpu", "False"], cwd=REPO, env=hub_env)
    assert proc.returncode == 0 and proc.stdout == stnet_line + "\n", describe(proc)
    assert "'path'" not in proc.stdout, describe(proc)  # the published StNet result: predictions alone
    proc = run_hub(["run", "stnet_kinetics400", "--input_path", video, other], cwd=REPO, env=hub_env)
    assert proc.returncode == 0 and proc.stdout == stnet_entries + "\n", describe(proc)
    assert [entry["path"] for entry in printed_result(proc)] == [video, other], describe(proc)


def test_install_then_run_both_and_load_by_name_from_another_directory(hub_env, videos, elsewhere):
    hub_home = Path(hub_env["HUB_HOME"])
    before = module_source_files()
    proc = run_hub(["install", str(REPO / "videotag_tsn_lstm"), str(REPO / "stnet_kinetics400")],
                   cwd=elsewhere, env=hub_env)
    assert proc.returncode == 0, describe(proc)
    for name in MODULE_NAMES:
        assert (hub_home / "modules" / name / "module.py").is_file(), describe(proc)
    assert module_source_files() == before  # installing copies; it writes nothing into the repository

    local = elsewhere / "clip two.mp4"  # a relative path with a space, resolved against the cwd
    shutil.copyfile(videos["spaced"], local)
    proc = run_hub(["run", "videotag_tsn_lstm", "--input_path", local.name, "--threshold", "0", "--top_k", "3"],
                   cwd=elsewhere, env=hub_env)
    result = printed_result(proc)
    assert len(result) == 1 and result[0]["path"] == local.name, result
    assert "error" not in result[0], result
    check_prediction(result[0]["prediction"], VIDEOTAG_LABELS, max_size=3)
    proc = run_hub(["run", "stnet_kinetics400", "--input_path", local.name, "--top_k", "3"], cwd=elsewhere, env=hub_env)
    stnet_result = printed_result(proc)
    assert len(stnet_result) == 1, stnet_result
    check_prediction(stnet_result[0], KINETICS_LABELS, max_size=3)

    script = textwrap.dedent("""
        import json, sys
        import paddlehub as hub
        tag = hub.Module(name="videotag_tsn_lstm")
        stnet = hub.Module(name="stnet_kinetics400")
        print("RESULT " + json.dumps({
            "dirs": [str(tag.directory), str(stnet.directory)],
            "videotag": tag.classify([sys.argv[1]], threshold=0.0, top_k=3),
            "stnet": stnet.video_classification({"image": [sys.argv[1]]}, top_k=3),
        }, ensure_ascii=False))
    """)
    proc = run_hub([str(local)], cwd=elsewhere, env=hub_env, command=[sys.executable, "-c", script])
    assert proc.returncode == 0, describe(proc)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, describe(proc)
    api = json.loads(lines[-1][len("RESULT "):])
    for name, directory in zip(MODULE_NAMES, api["dirs"], strict=True):
        assert Path(directory).resolve() == (hub_home / "modules" / name).resolve(), api["dirs"]
    assert api["videotag"][0]["path"] == str(local)
    assert same_prediction(api["videotag"][0]["prediction"], result[0]["prediction"]), (api, result)
    assert len(api["stnet"]) == 1, api
    check_prediction(api["stnet"][0], KINETICS_LABELS, max_size=3)
    assert same_prediction(api["stnet"][0], stnet_result[0]), (api, stnet_result)

    # The smoke run of another Python compares these numbers with the main interpreter's.
    mine = {"python": platform.python_version(), "videotag": [api["videotag"][0]["prediction"]],
            "stnet": api["stnet"]}
    if os.environ.get("PADDLEHUB_VIDEO_SMOKE_RESULT"):
        Path(os.environ["PADDLEHUB_VIDEO_SMOKE_RESULT"]).write_text(json.dumps(mine, ensure_ascii=False), "utf-8")
    if os.environ.get("PADDLEHUB_VIDEO_SMOKE_REFERENCE"):
        reference = json.loads(Path(os.environ["PADDLEHUB_VIDEO_SMOKE_REFERENCE"]).read_text("utf-8"))
        differences = same_result_as_reference(mine, reference)
        assert not differences, (f"Python {mine['python']} differs from Python {reference['python']}:\n"
                                 + "\n".join(differences))


def test_use_gpu_true_on_cpu_build_is_one_error_line_naming_cuda(hub_env, videos):
    import paddle

    if paddle.is_compiled_with_cuda():
        pytest.skip("this Paddle build has CUDA: --use_gpu True is expected to work here")
    proc = run_hub(["run", "videotag_tsn_lstm", "--input_path", str(videos["spaced"]), "--use_gpu", "True"],
                   cwd=REPO, env=hub_env)
    assert proc.returncode == 1, describe(proc)
    assert "hub run videotag_tsn_lstm: error:" in proc.stderr, describe(proc)
    assert "use_gpu=True" in proc.stderr and "CUDA" in proc.stderr, describe(proc)
    assert "use_gpu=False" in proc.stderr, describe(proc)  # and says how to get on
    assert TRACEBACK not in proc.stderr, describe(proc)
    assert "[{" not in proc.stdout, describe(proc)  # no result printed


def test_unreachable_mirror_is_one_error_line_naming_the_url_and_the_ways_out(hub_env, videos, tmp_path):
    # An empty HUB_HOME (nothing cached) and the mirror on a closed port: every download fails.
    hub_home = tmp_path / "hub home"
    hub_home_config(hub_home)
    env = {**hub_env, "HUB_HOME": str(hub_home), "PADDLEHUB_VIDEO_MIRROR": CLOSED_URL,
           "PADDLEHUB_VIDEO_TIMEOUT": "5"}
    proc = run_hub(["run", "videotag_tsn_lstm", "--input_path", str(videos["spaced"])], cwd=REPO, env=env)
    assert proc.returncode == 1, describe(proc)
    assert "hub run videotag_tsn_lstm: error:" in proc.stderr, describe(proc)
    assert f"could not download {CLOSED_URL}/video_tag_tsn.tar" in proc.stderr, describe(proc)
    assert "PADDLEHUB_VIDEO_ASSETS" in proc.stderr and "PADDLEHUB_VIDEO_MIRROR" in proc.stderr, describe(proc)
    assert TRACEBACK not in proc.stderr, describe(proc)
    assert "[{" not in proc.stdout, describe(proc)
