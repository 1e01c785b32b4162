"""Write configs/params/<network>.json from the reference list of the publisher's parameters.

Usage: python scripts/make_param_manifests.py [path/to/upstream_param_shapes.json]
(default: ../shared/reference/upstream_param_shapes.json). The output lists, in program creation
order, every parameter name and shape that the publisher's weight files hold; tests check that
our programs hold exactly these.
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "reference" / "upstream_param_shapes.json"


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SOURCE
    reference = json.loads(source.read_text(encoding="utf-8"))
    out_dir = ROOT / "configs" / "params"
    out_dir.mkdir(parents=True, exist_ok=True)
    for network, params in reference.items():
        if network.startswith("_"):
            continue
        lines = ",\n".join(f"  [{json.dumps(name)}, {json.dumps(shape)}]" for name, shape in params)
        (out_dir / f"{network}.json").write_text(f"[\n{lines}\n]\n", encoding="utf-8")
        print(f"{network}: {len(params)} parameters")


if __name__ == "__main__":
    main()
