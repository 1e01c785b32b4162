#!/usr/bin/env bash
# Set everything up and run the main job: install the package, `hub install` both modules,
# make a sample video and classify it with each module. Both modules are tried even when one
# fails (offline, say: each names every file it lacks), and the end says how each went.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check -c constraints.txt -e .
hub install videotag_tsn_lstm stnet_kinetics400
python3 scripts/make_sample_video.py samples/sample.mp4
failed=()
for module in videotag_tsn_lstm stnet_kinetics400; do
    hub run "$module" --input_path samples/sample.mp4 || failed+=("$module")
done
if ((${#failed[@]})); then
    echo "demo: failed: ${failed[*]} (the reasons are above)" >&2
    exit 1
fi
echo "demo: both modules classified samples/sample.mp4" >&2
