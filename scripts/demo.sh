#!/usr/bin/env bash
# Set everything up and run the main job: install the package, `hub install` both modules,
# make a sample video and classify it with each module.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check -c constraints.txt -e .
hub install videotag_tsn_lstm stnet_kinetics400
python3 scripts/make_sample_video.py samples/sample.mp4
hub run videotag_tsn_lstm --input_path samples/sample.mp4
hub run stnet_kinetics400 --input_path samples/sample.mp4
