"""paddlehub-video: the videotag_tsn_lstm and stnet_kinetics400 PaddleHub modules on PaddlePaddle 3."""
from setuptools import find_packages, setup

setup(
    name="paddlehub-video",
    version="0.1.0",
    description="PaddleHub video classification modules (videotag_tsn_lstm, stnet_kinetics400) on PaddlePaddle 3",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    # CPython 3.10 to 3.12 (README, "Which Pythons"). 3.13: paddlehub imports paddle2onnx at start, and
    # paddle2onnx >= 1.0 has no 3.13 wheel while 0.x imports paddle.fluid (gone in Paddle 3). 3.9: past
    # its end of life, and av 17+ (constraints.txt) needs 3.10. Keep SUPPORTED_PYTHONS in
    # scripts/python_env.sh in step (tests/test_python_versions.py checks).
    python_requires=">=3.10,<3.13",
    # The shared layer is common/paddlehub_video/: the folder carries the import name, so editors and
    # PYTHONPATH=common resolve it without an install (the dependencies still have to be installed).
    # configs/ stays at the top and ships inside the package as `paddlehub_video.configs`, so installed
    # modules find their YAML; from a clone, config.config_files() falls back to the top-level configs/.
    packages=[*find_packages("common"), "paddlehub_video.configs"],
    package_dir={"": "common", "paddlehub_video.configs": "configs"},
    package_data={"paddlehub_video.configs": ["*.yaml", "params/*.json"]},
    install_requires=[
        "paddlepaddle>=3.0,<4",
        "paddlehub==2.4.0",
        "opencv-python>=4.5",
        # PyAV: the packet list and planned decoding of paddlehub_video.decode.packet_plan (wheels bundle FFmpeg).
        "av>=14",
        "numpy>=1.23",
        "pyyaml>=5.4",
        "Pillow>=9.0",
        "tqdm>=4.60",
        "filelock>=3.8",
        # hub serving --use_multiprocess and the WSGI app's worker (interfaces/gunicorn_app.py); PaddleHub pulls it in.
        "gunicorn>=20",
    ],
    extras_require={
        "test": ["pytest>=7", "psutil>=5.9", "ruff>=0.5"],
        # paddlehub_video.interfaces.ray_adapter (scale-out on Ray Data); importing paddlehub_video never needs it.
        "ray": ["ray[data]>=2.9"],
        # bench/: the sgemm reference is run with BLAS limited to the bench's thread count; bench_serving
        # reads the server's processes' memory with psutil.
        "bench": ["threadpoolctl>=3.1", "psutil>=5.9"],
        # runtime.precision bf16/auto: the CNNs' bf16 engine (model/openvino_engine.py; README Speed says why
        # OpenVINO rather than Paddle's own bf16 passes). It needs only numpy and openvino-telemetry.
        "bf16": ["openvino>=2025.1"],
    },
)
