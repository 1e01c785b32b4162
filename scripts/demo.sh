#!/usr/bin/env bash
# Set everything up and run the main job: install the package (in the active venv, or else in the
# repository's .venv/, made with the first supported Python found: scripts/python_env.sh; never the
# system Python), `hub install` both modules, fetch the publisher's two sample videos (1.mp4, 2.mp4:
# through the asset layer, sha256 checked) and classify them with each module. Both modules are
# tried even when one fails (offline, say: each names every file it lacks), and the end says how
# each went. Without the sample videos (offline) it stops at once with the asset layer's message.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python_env.sh
use_project_venv demo
"$PY" -m pip install -q --disable-pip-version-check -c constraints.txt -e .
hub install videotag_tsn_lstm stnet_kinetics400
if ! "$PY" -m paddlehub_video.interfaces.samples --list samples/publisher_videos.txt; then
    echo "demo: cannot fetch the publisher's sample videos (the reason is above)" >&2
    exit 1
fi
failed=()
for module in videotag_tsn_lstm stnet_kinetics400; do
    hub run "$module" --input_file samples/publisher_videos.txt || failed+=("$module")
done
if ((${#failed[@]})); then
    echo "demo: failed: ${failed[*]} (the reasons are above)" >&2
    exit 1
fi
echo "demo: both modules classified the publisher's 1.mp4 and 2.mp4" >&2
