"""A thin wrapper around a Paddle Inference predictor: named inputs in, outputs out."""
from __future__ import annotations

import ctypes
import os
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import paddle
import paddle.inference as paddle_infer

from .. import progress
from ..errors import DeviceError


def check_gpu_available() -> None:
    """Raise DeviceError unless this Paddle build has CUDA and the machine a visible GPU."""
    if not paddle.is_compiled_with_cuda():
        raise DeviceError(
            "use_gpu=True, but this PaddlePaddle build has no CUDA support "
            "(install the paddlepaddle-gpu wheel or call with use_gpu=False)"
        )
    if paddle.device.cuda.device_count() < 1:
        raise DeviceError("use_gpu=True, but no CUDA GPU is visible (check CUDA_VISIBLE_DEVICES and the driver)")


class Predictor:
    """One Paddle Inference predictor for a saved model (`<prefix>.json` + `<prefix>.pdiparams`).

    The predictor is created and run in one thread of its own, whichever threads call `run`: a
    predictor must not run in two threads at once, and Paddle's oneDNN kernels keep their cache in
    thread-local storage (Paddle #32309; "one predictor per thread", #29037), so a predictor run
    from one thread after another fails at random with `RuntimeError: std::exception`, even with
    the runs serialised. The owner thread serialises the runs as well.
    """

    def __init__(
        self,
        model_prefix: str | Path,
        use_gpu: bool = False,
        cpu_threads: int = 1,
        use_onednn: bool = False,
        gpu_id: int = 0,
        onednn_shapes: int = 0,
    ):
        if use_gpu:
            check_gpu_available()
        self.cpu_threads = cpu_threads
        prefix = str(model_prefix)
        config = paddle_infer.Config(prefix + ".json", prefix + ".pdiparams")
        config.disable_glog_info()
        if use_gpu:
            config.enable_use_gpu(256, gpu_id)
        else:
            config.disable_gpu()
            config.set_cpu_math_library_num_threads(cpu_threads)
            # oneDNN is on by default in Paddle 3 builds but fails on some programs (Paddle #77340),
            # so each model says whether it wants it.
            if use_onednn:
                config.enable_onednn()
                if onednn_shapes:  # oneDNN keeps ~0.75 GB per input shape of StNet's sequence programs, else
                    config.set_onednn_cache_capacity(onednn_shapes)
            else:
                config.disable_onednn()
        self._start(paddle_infer.create_predictor, config, use_gpu)

    def _start(self, create: Callable[..., object], argument: object, use_gpu: bool) -> None:
        """Make the Paddle predictor with `create(argument)` in this object's own owner thread."""
        self.use_gpu = use_gpu
        self._pid = os.getpid()  # a forked child has none of this predictor's threads
        _made.add(self)
        self._owner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paddlehub_video-predictor")
        self._predictor = self._owner.submit(create, argument).result()
        self.input_names: list[str] = list(self._predictor.get_input_names())
        self.output_names: list[str] = list(self._predictor.get_output_names())

    def clone(self) -> Predictor:
        """Another predictor of the same model sharing this one's weights (Paddle's `clone`), with
        its own owner thread and activations: for running two videos at once without a second
        copy of the parameters."""
        self._check_process()
        twin = object.__new__(type(self))
        twin.cpu_threads = self.cpu_threads
        # The clone is made in the new owner thread: its oneDNN cache is that thread's.
        twin._start(lambda source: source.clone(), self._predictor, self.use_gpu)
        return twin

    def run(
        self,
        inputs: Mapping[str, np.ndarray],
        lod: Mapping[str, Sequence[Sequence[int]]] | None = None,
    ) -> list[np.ndarray]:
        """Feed `inputs` by name (with optional LoD per input) and return every output, in order."""
        unknown = set(inputs) - set(self.input_names)
        if unknown:
            raise KeyError(f"unknown inputs {sorted(unknown)}; the model takes {self.input_names}")
        self._check_process()
        return self._owner.submit(self._run, inputs, lod).result()

    def _check_process(self) -> None:
        """Refuse, rather than wait for ever, in a process forked after this predictor was made: its
        owner thread exists only in the parent."""
        if os.getpid() != self._pid:
            raise DeviceError(
                "this predictor was made before the process forked and cannot run in the child (its "
                "threads exist only in the parent): call the module again in the child, which makes "
                "its own predictors, instead of keeping the parent's (e.g. a predict_fn made before fork)"
            )

    def _run(
        self,
        inputs: Mapping[str, np.ndarray],
        lod: Mapping[str, Sequence[Sequence[int]]] | None,
    ) -> list[np.ndarray]:
        """The body of `run`, in the owner thread."""
        shared = []  # what the predictor reads in place must outlive run()
        for name, array in inputs.items():
            handle = self._predictor.get_input_handle(name)
            shared.append(self._feed(handle, array))
            if lod and name in lod:
                handle.set_lod([list(level) for level in lod[name]])
        self._predictor.run()
        return [self._predictor.get_output_handle(name).copy_to_cpu() for name in self.output_names]

    def _feed(self, handle: paddle_infer.Tensor, array: np.ndarray) -> object:
        """Give `array` to an input: on CPU without a copy (StNet's input is 98 MB), on GPU by copying."""
        array = np.ascontiguousarray(array)
        if self.use_gpu or not array.flags.writeable:  # DLPack cannot export a read-only array
            handle.reshape(array.shape)
            handle.copy_from_cpu(array)
            return array
        tensor = paddle.utils.dlpack.from_dlpack(array.__dlpack__())
        handle.share_external_data(tensor)
        return tensor


_shared: dict[tuple, Predictor] = {}
_made: weakref.WeakSet[Predictor] = weakref.WeakSet()  # every predictor of this process still in use
_shared_lock = threading.Lock()


def shared_predictor(
    model_prefix: str | Path, use_gpu: bool = False, cpu_threads: int = 1, use_onednn: bool = False,
    worker: int = 0, precision: str = "fp32", onednn_shapes: int = 0,
) -> Predictor:
    """The process-wide Predictor for a model, settings and worker: created on first use, then reused.
    Worker k > 0 gets a clone of worker 0's, sharing its weights. `precision` "bf16" runs the model's
    cached ONNX export on OpenVINO (`openvino_engine`), "fp32" the model itself on Paddle Inference.
    `onednn_shapes`: the input shapes oneDNN keeps its kernels for (0: Paddle's default, all of them)."""
    key = (str(model_prefix), use_gpu, cpu_threads, use_onednn, precision, onednn_shapes, worker)
    _check_not_forked_after_threads()
    with _shared_lock:
        if key not in _shared:
            if worker:
                _shared[key] = _shared_unlocked(key[:-1] + (0,)).clone()
            else:
                _shared[key] = _shared_unlocked(key)
        return _shared[key]


def _shared_unlocked(key: tuple) -> Predictor:
    """Worker 0's predictor of `key`, made if needed (the caller holds `_shared_lock`)."""
    if key not in _shared:
        model_prefix, use_gpu, cpu_threads, use_onednn, precision, onednn_shapes, _ = key
        if precision == "bf16":
            from .openvino_engine import OpenVinoPredictor, cached_onnx_model

            onnx_file = cached_onnx_model(Path(model_prefix))
            with progress.current().busy(f"loading {model_name(model_prefix)} (bf16)"):
                _shared[key] = OpenVinoPredictor(onnx_file, cpu_threads)
            return _shared[key]
        # Seconds for TSN's 170 MB of parameters: a line on hub run's terminal meanwhile.
        with progress.current().busy(f"loading {model_name(model_prefix)}"):
            _shared[key] = Predictor(model_prefix, use_gpu, cpu_threads, use_onednn, onednn_shapes=onednn_shapes)
    return _shared[key]


# Set in a process forked after its parent ran a predictor on several CPU threads: Paddle's OpenMP
# runtime (GNU libgomp) does not survive fork, and creating a predictor here would wait forever.
_forked_after_threads = False


def _forget_predictors() -> None:
    """In a forked child: the parent's owner threads do not exist here (a run would wait forever), and
    its lock may be held. The child makes its own predictors on first use, where Paddle can."""
    global _shared, _shared_lock, _made, _forked_after_threads
    inherited = list(_made)
    _forked_after_threads = _forked_after_threads or any(p.cpu_threads > 1 and not p.use_gpu for p in inherited)
    for predictor in inherited:
        # Never freed here: a Paddle predictor's destructor in a forked child fails on the parent's
        # threads (std::system_error, SIGABRT), even at the child's normal exit.
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(predictor))
    _shared, _shared_lock, _made = {}, threading.Lock(), weakref.WeakSet()


def check_can_create(use_gpu: bool) -> None:
    """Raise DeviceError now where no predictor can be made: no GPU for `use_gpu`, or a forked child
    whose parent ran a multi-threaded one (cheap: before a caller starts work that needs one)."""
    if use_gpu:
        check_gpu_available()
    _check_not_forked_after_threads()


def _check_not_forked_after_threads() -> None:
    """Refuse, rather than hang, where Paddle cannot make a predictor (see `_forked_after_threads`)."""
    if _forked_after_threads:
        raise DeviceError(
            "this process was forked after its parent ran a Paddle predictor on several CPU threads, and "
            "Paddle's OpenMP runtime does not survive fork (a new predictor would wait forever): start "
            "worker processes with multiprocessing's 'spawn' or 'forkserver' method, fork them before the "
            "parent classifies anything, or set runtime.cpu_threads: 1 in the parent"
        )


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_predictors)


def model_name(model_prefix: str | Path) -> str:
    """`videotag_tsn` of a converted model's prefix `.../inference/videotag_tsn-v1-<key>/model`."""
    return Path(model_prefix).parent.name.rsplit("-", 2)[0]
