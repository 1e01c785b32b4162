"""The command line shared by both modules' `hub run`: input options, the device switch, --list_labels.

Exit status: 0 success; 1 a video or the model failed (no weights, no GPU); 2 a usage error (a bad
argument, no input, an --output file that is not a results file).

Output: results on stdout only. On stderr, when it is a terminal (or with --progress), a bar of
videos showing each video's stage (decode, network: frames done / total) and a line while a model
is converted; each failed video once, as an `error:` line; native libraries' lines (OpenCV,
FFmpeg, Paddle's glog) only with --verbose (see quiet.py).
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, TypeVar

from .. import environment
from ..cpus import PRECISIONS
from ..decode.video import VIDEO_EXTENSIONS
from ..errors import ConfigError, PaddleHubVideoError
from ..inputs import as_input
from ..model.postprocess import validate_threshold, validate_top_k
from ..progress import reporting
from ..timeline import CONTEXTS, MIN_SECONDS, keeping_windows, validate_window
from .output_files import OutputFileError, Refused, refuse_roles, target_of
from .quiet import PROGRESS_ENV, VERBOSE_ENV, quiet_decoders, routed_logging, terminal_stream
from .report import RunInfo, check_report_target, write_report
from .results_file import LEFT_AS_IT_WAS, ResultsFile, ResultsFileError, WindowsFile, windows_path
from .terminal import TerminalProgress

T = TypeVar("T")
# What a folder given as --input_path is searched for (compared in lower case).
GLOB_CHARACTERS = re.compile(r"[*?[]")
ClassifyStream = Callable[[list[str]], Iterable[dict]]


def parse_bool(text: str) -> bool:
    """--use_gpu: the words a PADDLEHUB_VIDEO_* switch takes (True/False in any case, 1/0, yes/no, on/off; the
    published modules read a Python literal: True, False, 1, 0), else a usage error that lists them."""
    try:
        return environment.flag("--use_gpu", text.strip())
    except ConfigError:
        raise argparse.ArgumentTypeError(f"expected True or False (or 1/0, yes/no, on/off), got {text!r}") from None


def top_k_option(text: str) -> int:
    """--top_k: a positive integer, else a usage error."""
    try:
        return validate_top_k(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None


def threshold_option(text: str) -> float:
    """--threshold: a number in [0, 1], else a usage error."""
    try:
        return validate_threshold(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None


def seconds_option(text: str) -> float:
    """--timeline / --stride: a number of seconds of at least timeline.MIN_SECONDS, else a usage error."""
    try:
        return validate_window(float(text), None)[0]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds of at least {MIN_SECONDS:g} (no video frame "
                                         f"is shorter), got {text!r}") from None


def workers_option(text: str) -> int:
    """--workers: a positive integer, else a usage error."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


class RunParser(argparse.ArgumentParser):
    """`hub run`'s parser: a video named without --input_path (as other tools take it) gets a hint."""

    def parse_args(self, args: Sequence[str] | None = None,
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            bare = any(not argument.startswith("-") for argument in extra)
            hint = " (videos go after --input_path: --input_path a.mp4 b.mp4 videos/)" if bare else ""
            self.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
        return parsed


def add_input_options(parser: argparse.ArgumentParser) -> None:
    """--input_path (any number of videos, folders, patterns) and --input_file; `input_paths` reads them."""
    inputs = parser.add_argument_group("input (at least one)")
    inputs.add_argument(
        "--input_path", type=str, nargs="+", action="extend", metavar="PATH",
        help="a video file, a folder (its videos, recursively) or a quoted glob pattern such as 'videos/**/*.mp4'; "
        "several, after one --input_path or each after its own, are all classified",
    )
    inputs.add_argument("--input_file", type=str, help="a text file listing videos, one path per line")


def add_use_gpu_option(parser: argparse.ArgumentParser, what: str) -> None:
    """--use_gpu [True|False], `what` it does when True. Alone it means True, as `hub serving start --use_gpu` takes
    it; with a word, as the published modules took it (`parse_bool`)."""
    parser.add_argument("--use_gpu", type=parse_bool, nargs="?", const=True, default=False, metavar="True|False",
                        help=f"{what} (also 1/0, yes/no, on/off, any case; alone: True; default False)")


def build_parser(module_name: str, description: str, top_k: int, threshold: float) -> argparse.ArgumentParser:
    """`hub run <module_name>` options: --input_path / --input_file, --output, --use_gpu, --top_k, --threshold,
    --timeline / --stride, --list_labels."""
    parser = RunParser(prog=f"hub run {module_name}", description=description)
    add_input_options(parser)
    parser.add_argument(
        "--output", type=str,
        help="write one JSON line per video to this file as each one finishes; run again to resume",
    )
    add_use_gpu_option(parser, "True to run on GPU 0")
    # PaddleHub's own `hub run` offered --batch_size for video modules; accepted so old scripts keep
    # working. Videos always go through one at a time (the next one decodes meanwhile).
    parser.add_argument("--batch_size", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--top_k", type=top_k_option, default=top_k, help=f"labels kept per video (default {top_k})")
    parser.add_argument("--threshold", type=threshold_option, default=threshold,
                        help=f"minimum probability kept, 0 to 1 (default {threshold})")
    parser.add_argument("--timeline", type=seconds_option, metavar="SECONDS",
                        help="tags over time: classify windows of this many seconds (classify_timeline)")
    parser.add_argument("--stride", type=seconds_option, metavar="SECONDS",
                        help="with --timeline: seconds from one window's start to the next (default: the window)")
    parser.add_argument("--timeline-context", choices=CONTEXTS, default=None, dest="timeline_context",
                        help="with --timeline: 'window' (default) classifies each window on its own, as classify; "
                        "'video' (StNet) runs the network once over the whole video, windows seeing their "
                        "neighbours: faster with overlapping windows, not bit for bit (README Timeline)")
    parser.add_argument("--report", type=str, metavar="FILE",
                        help="also write a self-contained HTML report (thumbnails, tags, timelines, failures)")
    parser.add_argument("--workers", type=workers_option, default=None,
                        help="videos run at once, each worker with its own predictor sharing the weights "
                        "(default: runtime.workers, automatic; see README Speed)")
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="the networks' arithmetic for this run: fp32, bf16 (a CPU with avx512_bf16 or "
                        "amx_bf16, and OpenVINO), auto (bf16 where it can run) (default: runtime.precision)")
    parser.add_argument("--list_labels", action="store_true",
                        help="print the labels (class id, a tab, the name; one per line) and exit")
    parser.add_argument("--progress", action="store_true",
                        help=f"show progress on stderr even when it is not a terminal (or set {PROGRESS_ENV}=1; "
                        "0 hides it on a terminal)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help=f"also log each failure's details and the decoders' and Paddle's own messages "
                        f"(or set {VERBOSE_ENV}=1)")
    return parser


def read_path_list(list_file: str | Path) -> list[str]:
    """Video paths from a list file: one per line, blank lines and `#` comments skipped, spaces kept.

    UTF-8, and a name that is not (as `find` lists a Latin-1 or GBK one) is taken as `os.fsdecode` takes it."""
    text = Path(list_file).read_text(encoding="utf-8", errors="surrogateescape")
    lines = (line.rstrip("\r") for line in text.split("\n"))
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def path_order(path: str) -> list[str]:
    """Sort key: folder by folder, so `a b/x.mp4` and `a/x.mp4` keep the tree's order."""
    return path.split(os.sep)


def videos_in_folder(folder: str) -> list[str]:
    """The video files under `folder`, recursively, sorted; hidden files and folders are skipped."""
    found = []
    for root, folders, files in os.walk(folder):
        folders[:] = [name for name in folders if not name.startswith(".")]
        found += [os.path.join(root, name) for name in files
                  if not name.startswith(".") and os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS]
    return sorted(found, key=path_order)


def expand_input_path(text: str) -> list[str]:
    """--input_path: a folder's videos, a glob's files, else the path as given (checked when it is read).

    Raises ValueError when a folder holds no video or a pattern matches no file.
    """
    if os.path.isdir(text):
        found = videos_in_folder(text)
        if not found:
            raise ValueError(f"no video file in the folder {text} (looked for {' '.join(VIDEO_EXTENSIONS)})")
        return found
    # An existing file is a file, whatever its name: `x*.mp4` is a legal file name. A URL's `?` is no pattern.
    if os.path.exists(text) or not GLOB_CHARACTERS.search(text) or not isinstance(as_input(text), str):
        return [text]
    found = sorted((path for path in glob.glob(text, recursive=True) if os.path.isfile(path)), key=path_order)
    if not found:
        raise ValueError(f"the pattern {text!r} matches no file")
    return found


def input_paths(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The videos named by every --input_path (in order), then --input_file's; a usage error if there are none."""
    paths = []
    for text in args.input_path or []:
        if not text:
            parser.error("--input_path: an empty path names no video")
        try:
            paths += expand_input_path(text)
        except ValueError as exc:
            parser.error(f"--input_path: {exc}")
    if args.input_file:
        try:
            paths += read_path_list(args.input_file)
        except (OSError, UnicodeDecodeError) as exc:
            parser.error(f"cannot read --input_file {args.input_file}: {exc}")
    if not paths:
        parser.error("give a video with --input_path, or a list of videos with --input_file")
    return paths


def published_call(args: argparse.Namespace, paths: list[str]) -> bool:
    """Whether the command line is the published modules' call: one --input_path naming one file as given (not a
    folder, a pattern, several paths or a list file). Only that call prints the module's published result."""
    return not args.input_file and len(paths) == 1 and args.input_path == paths


@contextlib.contextmanager
def fatal_errors(module_name: str) -> Iterator[None]:
    """A fatal error (no weights, no GPU, a bad configuration) becomes one line on stderr and exit status 1.

    PaddleHub's CLI would let the exception through as a traceback.
    """
    try:
        yield
    except (PaddleHubVideoError, ValueError) as exc:
        print(f"hub run {module_name}: error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def finish(module_name: str, printed: T, reasons: Sequence[str], count: int) -> T:
    """End a job: return `printed` for PaddleHub to print, or with failures print it, list them, exit 1."""
    if not reasons:
        return printed
    print(printed, flush=True)  # what PaddleHub's `hub run` prints on success
    for reason in reasons:
        print(f"hub run {module_name}: error: {reason}", file=sys.stderr)
    print(f"hub run {module_name}: {len(reasons)} of {count} videos failed", file=sys.stderr, flush=True)
    raise SystemExit(1)


def shows_progress(args: argparse.Namespace, stream: IO[str]) -> bool:
    """--progress or $PADDLEHUB_VIDEO_PROGRESS=1: yes; $PADDLEHUB_VIDEO_PROGRESS=0: no; else when `stream` is a tty."""
    if getattr(args, "progress", False):
        return True
    chosen = environment.terminal().progress
    return stream.isatty() if chosen is None else chosen


@contextlib.contextmanager
def command_output(module_name: str, args: argparse.Namespace) -> Iterator[TerminalProgress]:
    """What `hub run` prints on stderr meanwhile: progress (if shown), our log lines, no native noise
    unless verbose. The library reports to the returned display (progress.current())."""
    verbose = bool(getattr(args, "verbose", False)) or environment.terminal().verbose
    with terminal_stream() as stream, routed_logging(stream, module_name, verbose), \
            contextlib.nullcontext() if verbose else quiet_decoders():
        display = TerminalProgress(stream, module_name, show=shows_progress(args, stream), quiet=not verbose)
        with reporting(display):
            yield display


def with_progress(entries: Iterable[T], total: int, display: TerminalProgress) -> Iterator[T]:
    """`entries` as they come, counted on the display's bar of videos when it shows progress."""
    if not display.show or total == 0:  # nothing to do (all done in an earlier run): no bar
        yield from entries
        return
    with display.videos(total) as bar:
        for entry in entries:
            bar.update(1)
            yield entry


def errors_of(entries: Iterable[dict]) -> list[str]:
    """The reasons of the failed result entries."""
    return [entry["error"] for entry in entries if "error" in entry]


def print_labels(module_name: str, labels: Callable[[], list[str]]) -> None:
    """--list_labels: `id<TAB>name` lines on stdout in UTF-8 (whatever the locale), then exit 0.

    Exits rather than returns: PaddleHub's `hub run` would print the returned value after them.
    """
    with fatal_errors(module_name):
        names = labels()
    sys.stdout.flush()
    try:
        sys.stdout.buffer.write("".join(f"{index}\t{name}\n" for index, name in enumerate(names)).encode("utf-8"))
        sys.stdout.buffer.flush()
    except BrokenPipeError:  # `| head` read what it wanted; Python's own flush at exit must not complain
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    raise SystemExit(0)


def run_batch(module_name: str, parser: argparse.ArgumentParser, args: argparse.Namespace,
              classify_stream: ClassifyStream, labels: Callable[[], list[str]],
              present: Callable[[list[dict]], object] = list) -> object:
    """`hub run`: classify the videos of the input options, with --output into a results file.

    `classify_stream(paths)` yields classify-style entries in order, each as its video finishes;
    `labels()` is the module's label list (for --list_labels); `present(entries)` is what is
    printed without --output for the published single-video call (the module's published result).
    Any other input (a folder, a pattern, several paths, a list file) prints the entries themselves,
    each with its path, so that every result can be matched to its file.
    """
    if args.list_labels:
        print_labels(module_name, labels)
    for option in ("stride", "timeline_context"):
        if getattr(args, option, None) is not None and getattr(args, "timeline", None) is None:
            parser.error(f"--{option.replace('_', '-')} needs --timeline")
    paths = input_paths(parser, args)
    report = Report(getattr(args, "report", None), input_files(args, paths), args.output, run_options(args))
    report.check(parser)
    with command_output(module_name, args) as display:
        if args.output:
            timeline = getattr(args, "timeline", None) is not None
            return run_into_file(module_name, parser, args.output, paths, classify_stream, display, timeline,
                                 report)
        with fatal_errors(module_name):
            entries = list(with_progress(classify_stream(paths), len(paths), display))
            report.write(module_name, entries)
    printed = present(entries) if published_call(args, paths) else list(entries)
    return finish(module_name, printed, errors_of(entries), len(entries))


Roles = list[tuple[str, list[str]]]


def input_files(args: argparse.Namespace, paths: list[str]) -> Roles:
    """The files a run reads, which no file it writes may be: (role, paths), as `output_files.refuse_roles`
    takes them."""
    files = [("an input video of this run", paths)]
    if args.input_file:
        files.append(("the --input_file list", [args.input_file]))
    return files


def run_options(args: argparse.Namespace) -> dict:
    """The options the report's summary names: threshold, top_k, and a timeline's window and stride."""
    return {"threshold": getattr(args, "threshold", None), "top_k": getattr(args, "top_k", None),
            "window": getattr(args, "timeline", None),
            "stride": getattr(args, "stride", None)}


class Report:
    """--report FILE (`path`; None: no report): checked before any video is classified, written (atomically)
    when they are done. It must not be any of `inputs` ((role, paths)) nor the `output` results file.
    `options`: what its summary says of the run (`run_options`)."""

    def __init__(self, path: str | None, inputs: Roles, output: str | None = None, options: dict | None = None):
        self.path, self.inputs, self.options = path, inputs, options or {}
        self.never = inputs + ([("the --output results file", [output])] if output else [])

    def check(self, parser: argparse.ArgumentParser) -> None:
        """A usage error when the report could not be written there (so nothing is classified for nothing)."""
        if self.path is None:
            return
        try:
            check_report_target(self.path, self.never)
        except (OSError, Refused) as exc:
            parser.error(f"--report {self.path}: refused: {exc}; the file was left as it was (name a new file, "
                         "or a report written by --report)")

    def write(self, module_name: str, entries: list[dict]) -> None:
        """The HTML report of `entries`; a failure is the run's (exit status 1)."""
        if self.path is None:
            return
        try:
            write_report(entries, self.path, title=module_name, never=self.never,
                         about=RunInfo(module=module_name, **self.options))
        except (OSError, Refused) as exc:
            raise OutputFileError(f"cannot write the report {self.path}: {exc}") from exc


def run_into_file(module_name: str, parser: argparse.ArgumentParser, output: str, paths: list[str],
                  classify_stream: ClassifyStream, display: TerminalProgress, timeline: bool,
                  report: Report) -> dict:
    """--output: append each video's entry as it finishes, skip those answered before; return a summary.

    `timeline`: the entries are timelines, and so must be those of an existing file. `report`: an
    HTML report of every entry the file then holds (earlier runs' too)."""
    try:
        refuse_roles(target_of(output), report.inputs)
        results = ResultsFile(output, timeline)
    except Refused as exc:
        parser.error(f"--output {output}: refused: {exc}; {LEFT_AS_IT_WAS}")
    except (OSError, ResultsFileError) as exc:
        parser.error(f"--output {output}: {exc}")
    unique = list(dict.fromkeys(paths))  # the file holds one answer per path
    todo = [path for path in unique if path not in results.done]
    windows = open_windows_file(parser, output, results.done, report) if timeline else None
    failed: list[str] = []
    with results, windows or contextlib.nullcontext(), \
            keeping_windows(windows) if windows else contextlib.nullcontext(), fatal_errors(module_name):
        try:
            for entry in with_progress(classify_stream(todo), len(todo), display):
                results.append(entry)
                if windows:
                    windows.forget(entry["path"])
                failed += errors_of([entry])
        except KeyboardInterrupt:
            kept = f", and the finished windows of the video in progress in {windows.path}" if windows else ""
            print(f"hub run {module_name}: interrupted; the finished videos are in {output}{kept}: "
                  "run the same command again to go on", file=sys.stderr)
            raise SystemExit(130) from None
        report.write(module_name, results.entries() if report.path else [])
    summary = {"output": output, "videos": len(unique), "skipped": len(unique) - len(todo),
               "classified": len(todo) - len(failed), "failed": len(failed)}
    return finish(module_name, summary, failed, len(todo))


def open_windows_file(parser: argparse.ArgumentParser, output: str, answered: set[str], report: Report) -> WindowsFile:
    """The `<output>.windows` file of a --timeline run (results_file.WindowsFile); a usage error if refused."""
    path = windows_path(output)
    try:
        refuse_roles(Path(os.path.realpath(path)), report.never)
        return WindowsFile(path, answered)
    except Refused as exc:
        parser.error(f"--output {output}: {path} refused: {exc}; {LEFT_AS_IT_WAS}")
    except (OSError, ResultsFileError) as exc:
        parser.error(f"--output {output}: {exc}")
