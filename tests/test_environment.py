"""Every PADDLEHUB_VIDEO_* variable is read, parsed and checked in paddlehub_video/environment.py only,
and README's Settings table lists each one."""
import ast
import re
from pathlib import Path

import pytest

import paddlehub_video
from paddlehub_video import environment
from paddlehub_video.errors import ConfigError

PACKAGE = Path(paddlehub_video.__file__).parent
README = Path(__file__).resolve().parents[1] / "README.md"


def _string_constants(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)}
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_no_other_module_names_a_variable_of_its_own():
    """A variable named in code outside environment.py would be read there with rules of its own."""
    pattern = re.compile(r"^PADDLEHUB_VIDEO_[A-Z_]+$")
    found = {str(path.relative_to(PACKAGE)): names
             for path in sorted(PACKAGE.rglob("*.py")) if path.name != "environment.py"
             for names in [[text for text in _string_constants(path) if pattern.match(text)]] if names}
    assert found == {}


def test_readme_settings_table_lists_every_variable():
    text = README.read_text(encoding="utf-8")
    table = text[text.index("## Settings"):text.index("## Layout")]
    missing = [name for name in environment.VARIABLES
               if name not in table and "_" + name.removeprefix(environment.PREFIX) not in table]
    assert missing == []


def test_unset_and_empty_mean_the_defaults():
    assert environment.serving({}) == environment.ServingEnvironment()
    assert environment.serving({environment.MAX_ITEMS: "  "}) == environment.ServingEnvironment()
    assert environment.downloads({}) == environment.DownloadEnvironment()
    assert environment.terminal({}) == environment.TerminalEnvironment()


def test_values_are_parsed_into_their_section(tmp_path: Path):
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "videos")
    served = environment.serving({environment.MAX_ITEMS: "3", environment.MAX_UPLOAD_MB: "0.5",
                                  environment.SERVING_DIRS: f"{link}:/srv", environment.MODULES: "a, b,",
                                  environment.WORKER_TIMEOUT_S: "90"})
    assert (served.max_items, served.max_upload_mb, served.worker_timeout_s) == (3, 0.5, 90.0)
    assert served.dirs == (str(tmp_path / "videos"), "/srv") and served.modules == ("a", "b")
    fetched = environment.downloads({environment.ASSETS: "~/models", environment.MIRROR: "https://m.example/x/"})
    assert fetched.assets_dir == Path("~/models").expanduser() and fetched.mirror == "https://m.example/x"
    assert environment.terminal({environment.PROGRESS: "0", environment.VERBOSE: "Yes"}) == \
        environment.TerminalEnvironment(progress=False, verbose=True)


@pytest.mark.parametrize(("variable", "raw", "accepted"), [
    (environment.MAX_ITEMS, "8.5", "a positive whole number"),
    (environment.MAX_FRAMES, "0", "a positive whole number"),
    (environment.MAX_UPLOAD_MB, "-1", "a positive number of megabytes"),
    (environment.IDLE_TIMEOUT_S, "inf", "a positive number of seconds"),
    (environment.TIMEOUT, "soon", "a positive number of seconds"),
    (environment.MIRROR, "ftp://m.example/", "an http:// or https:// URL"),
    (environment.PROGRESS, "maybe", "1, yes, true, on or 0, no, false, off"),
    (environment.PRECISION, "fp16", "one of fp32, bf16, auto"),
])
def test_a_bad_value_names_the_variable_the_value_and_what_it_accepts(variable: str, raw: str, accepted: str):
    readers = {environment.MIRROR: environment.downloads, environment.TIMEOUT: environment.downloads,
               environment.PROGRESS: environment.terminal,
               environment.PRECISION: environment.runtime_fallbacks}
    with pytest.raises(ConfigError, match=re.escape(f"{variable}={raw!r}: expected {accepted}")):
        readers.get(variable, environment.serving)({variable: raw})


def test_a_relative_serving_dir_is_refused():
    with pytest.raises(ConfigError, match="'videos' is not an absolute path"):
        environment.serving({environment.SERVING_DIRS: "videos"})


def test_a_module_reads_its_downloads_once_when_it_is_made(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from videotag_tsn_lstm.module import VideoTag

    monkeypatch.setenv(environment.ASSETS, str(tmp_path))
    module = VideoTag()
    monkeypatch.setenv(environment.ASSETS, str(tmp_path / "elsewhere"))
    assert module.settings.downloads.assets_dir == tmp_path
