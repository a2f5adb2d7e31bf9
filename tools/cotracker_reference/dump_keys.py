"""Write tests/fixtures/cotracker3_state_dict_keys.json: ``{"offline": [[key, shape], ...],
"online": [[key, shape], ...]}``, the official CoTracker3 state_dict keys and shapes in their
order, one entry a line.

    PYTHONPATH=/path/to/co-tracker .venv/bin/python tools/cotracker_reference/dump_keys.py
    .venv/bin/python tools/cotracker_reference/dump_keys.py --official /path/to/co-tracker
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "fixtures" / "cotracker3_state_dict_keys.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", type=Path, help="the co-tracker checkout (else it must be on PYTHONPATH)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.official is not None:
        sys.path.insert(0, str(args.official.resolve()))
    from cotracker.models.core.cotracker.cotracker3_offline import CoTrackerThreeOffline
    from cotracker.models.core.cotracker.cotracker3_online import CoTrackerThreeOnline

    models = {
        "offline": CoTrackerThreeOffline(stride=4, corr_radius=3, window_len=60),
        "online": CoTrackerThreeOnline(stride=4, corr_radius=3, window_len=16),
    }
    blocks = []
    for name, model in models.items():
        lines = [json.dumps([k, list(v.shape)]) for k, v in model.state_dict().items()]
        blocks.append(f'"{name}": [\n' + ",\n".join(lines) + "\n]")
        print(f"{name}: {len(lines)} keys")
    text = "{\n" + ",\n".join(blocks) + "\n}\n"
    json.loads(text)  # well-formed
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
