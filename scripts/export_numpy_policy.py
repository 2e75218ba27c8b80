"""Export trained agents' actor networks to ``.npz`` so that they act with numpy, without torch.

For each run or pretrained agent directory given (default: every agent shipped in
``agents/pretrained/``), each model ``.zip`` in it (``model.zip``, and ``best_model.zip`` when
present) is exported beside itself as ``.npz`` by :func:`agents.numpy_policy.export_numpy_policy`,
with its ``VecNormalize`` statistics. ``llmsched compare`` then runs the agent with numpy; run this
script again whenever a shipped model changes (a stale export is detected by its SHA-256 and
refused). Needs the ``agents`` extra (torch) to read the models.

Usage::

    python scripts/export_numpy_policy.py                  # the shipped agents
    python scripts/export_numpy_policy.py runs/batch       # a training run
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.compare import pretrained_names, pretrained_root  # noqa: E402
from agents.numpy_policy import export_numpy_policy  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "dirs", nargs="*", type=Path, help="run directories (default: the shipped agents)"
    )
    args = parser.parse_args(argv)
    dirs = args.dirs or [pretrained_root() / name for name in pretrained_names()]
    failed = 0
    for directory in dirs:  # one directory's fault does not stop the others
        models = [directory / f"{p}model.zip" for p in ("", "best_")]
        models = [m for m in models if m.is_file()]
        if not models:
            print(f"error: {str(directory)!r} holds no model.zip", file=sys.stderr)
            failed += 1
        for model in models:
            stats = model.with_name(model.name.replace("model.zip", "vecnormalize.pkl"))
            try:
                written = export_numpy_policy(model, stats if stats.is_file() else None)
            except ValueError as error:
                print(f"error: {model}: {error}", file=sys.stderr)
                failed += 1
                continue
            print(f"{model} -> {written} ({written.stat().st_size:,} bytes)")
    return 2 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
