"""What PaddleHub 2.4 needs of a module class, in a room of its own: `hub run`, `hub serving`, and the
ways its machinery is met.

- PaddleHub finds the `hub run` and `hub serving` methods by the class that declared them
  (`@runnable`, `@serving`), walking a module class's bases: `HubEntryPoints` declares both.
- It wraps every method of a module in a switch to static-graph mode (for fluid-era modules) that is
  not restored when the method raises, and that flips the mode for the whole process while it runs.
  Our code builds its programs in its own guarded scope, so `HubEntryPoints` opts out
  (`__getattribute__`).
- Its servers are made after the modules: `prepare_hub_servers` bounds them first.
- It reads a method's defaults from its signature: `with_defaults` gives a module class real ones.

The methods here turn a command line or a request body into calls of the module's public API
(`classify_stream`, `classify_timeline_stream`, `labels`), nothing more.
"""
from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from paddlehub.module.module import runnable, serving

from .interfaces.cli import build_parser, run_batch
from .interfaces.gunicorn_app import bound_multiprocess_serving
from .interfaces.serving import (
    RequestError,
    bound_request_bodies,
    check_fields,
    check_request,
    classify_request,
    refused_entry,
    serving_max_windows,
)
from .interfaces.wsgi import stop_when_client_gone
from .timeline import applied_max_windows, failed_entry

T = TypeVar("T")


class HubRunEntry:
    """The `_run_func` of a module class.

    `hub run NAME` started in a folder that holds a directory called NAME makes PaddleHub 2.4 load
    that directory with `Module.load`, which returns the class instead of an instance; its run
    command then calls `_run_func` on the class. Here that creates the instance first.
    """

    def __get__(self, instance: Any, owner: type) -> Any:
        if instance is None:
            return lambda argv: owner().run_cmd(argv)
        return instance.run_cmd


def with_defaults(function: Callable[..., T], **defaults: Any) -> Callable[..., T]:
    """A copy of `function` whose named parameters default to `defaults` (its signature says so too)."""
    copy = types.FunctionType(function.__code__, function.__globals__, function.__name__, None, function.__closure__)
    parameters = inspect.signature(function).parameters.values()
    copy.__defaults__ = tuple(defaults.get(p.name, p.default) for p in parameters if p.default is not p.empty)
    copy.__doc__, copy.__qualname__, copy.__module__ = function.__doc__, function.__qualname__, function.__module__
    copy.__annotations__ = dict(function.__annotations__)
    return copy


def prepare_hub_servers() -> None:
    """Bound the servers PaddleHub makes after loading the modules (a no-op outside `hub serving`)."""
    bound_request_bodies()  # under `hub serving`, before PaddleHub makes its Flask app
    bound_multiprocess_serving()  # under `hub serving --use_multiprocess`, before it makes its gunicorn app


class HubEntryPoints:
    """`hub run` and `hub serving` for a module class that has `NAME`, `DEFAULTS`, `labels`, `classify`,
    `classify_stream`, `classify_timeline` and `classify_timeline_stream` (`VideoModule`)."""

    _run_func = HubRunEntry()
    __getattribute__ = object.__getattribute__  # PaddleHub's static-mode wrapper: see the module docstring

    @serving
    def serving_method(self, paths: list[str] | None = None, videos: list | None = None, **options: Any) -> list[dict]:
        """`hub serving`: `classify` of server `paths` and/or base64 `videos` (see paddlehub_video.interfaces.serving);
        with `timeline` (seconds) and optionally `stride` and `timeline_context`, `classify_timeline` instead."""
        classify, options, refused = self._serving_call(options)
        with applied_max_windows(serving_max_windows()):
            return classify_request(stop_when_client_gone(classify), paths, videos, options, refused)

    def check_serving_request(self, body: dict[str, Any]) -> None:
        """RequestError if `serving_method(**body)` would refuse the request as the client's mistake (nothing is
        decoded or written): `hub serving` then answers it with an HTTP 4xx before PaddleHub's view runs."""
        options = {name: value for name, value in body.items() if name not in ("paths", "videos")}
        classify, options, _ = self._serving_call(options)
        check_request(classify, body.get("paths"), body.get("videos"), options)

    def serving_fields(self) -> list[str]:
        """The fields a serving request body may hold."""
        # `workers` is how a process runs its calls, the server's business: never a client's
        options = [name for name in inspect.signature(self.classify).parameters if name not in ("paths", "workers")]
        return ["paths", "videos", *options, "timeline", "stride", "timeline_context"]

    def _serving_call(self, options: dict[str, Any]) -> tuple[Callable[..., list[dict]], dict[str, Any], Callable]:
        """The body's options (besides paths and videos) -> what answers them: `classify`, or `classify_timeline`
        with `timeline` and `stride`; the options left for it; the shape of a refused item's entry."""
        check_fields(options, self.serving_fields())
        options = dict(options)
        if "timeline" not in options:
            for field in ("stride", "timeline_context"):
                if field in options:
                    raise RequestError(f"'{field}' needs 'timeline' (the window's seconds)")
            return self.classify, options, refused_entry
        window, stride = options.pop("timeline"), options.pop("stride", None)
        context = options.pop("timeline_context", "window")
        return (partial(self.classify_timeline, window_seconds=window, stride_seconds=stride, context=context),
                options, failed_entry)

    @runnable
    def run_cmd(self, argvs: list[str]) -> object:
        """`hub run <module> --input_path V|folder|'glob' [...] --input_file list.txt [--output r.jsonl]`."""
        defaults = self.DEFAULTS
        parser = build_parser(self.NAME, defaults.description, top_k=defaults.top_k, threshold=defaults.threshold)
        args = parser.parse_args(argvs)
        module = self.with_precision(args.precision)
        if args.timeline is not None:  # entries of their own shape, printed as they are
            context = args.timeline_context or "window"
            try:
                module.classify_timeline_stream([], args.timeline, args.stride, context=context)
            except ValueError as exc:  # videotag has no whole-video context
                parser.error(f"--timeline-context {context}: {exc}")
            return run_batch(
                self.NAME, parser, args,
                lambda paths: module.classify_timeline_stream(
                    paths, args.timeline, args.stride, args.use_gpu, args.threshold, args.top_k, context
                ),
                labels=lambda: self.labels, present=list,
            )
        return run_batch(
            self.NAME, parser, args,
            lambda paths: module.classify_stream(paths, args.use_gpu, args.threshold, args.top_k, args.workers),
            labels=lambda: self.labels, present=self.present,
        )

    def present(self, entries: list[dict]) -> object:
        """What `hub run` prints without --output for the published single-video call: the module's published
        result for these `classify` entries (any other input prints the entries, each with its path)."""
        return list(entries)

