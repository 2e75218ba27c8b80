"""Fit the ``splitwise-*`` static-batch presets and print their rows, coefficients and errors.

The data is splitwise-sim's ``perf_model.csv`` (Patel et al., "Splitwise", ISCA 2024; MIT), shipped
as ``llmsched_env/data/splitwise_perf_model.csv``; the fit is ``llmsched_env.latency.splitwise``.
For every (model, hardware, TP) group the script prints the rows kept and flagged, the
coefficients of the fit to all kept rows, and the leave-one-configuration-out mean absolute
percentage error of ``prompt_time``, ``token_time`` and ``e2e_time``.

Usage::

    python scripts/fit_splitwise.py              # the shipped file, about 2 s
    python scripts/fit_splitwise.py --csv other.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmsched_env.latency.presets import splitwise_preset_name  # noqa: E402
from llmsched_env.latency.splitwise import (  # noqa: E402
    E2E_TOLERANCE,
    e2e_gap,
    fit_splitwise,
    flag_inconsistent,
    load_splitwise_perf,
    recompute_power_capped_e2e,
)


def consistency_report(frame) -> list[str]:
    """Lines on the e2e identity: the gap of kept and flagged rows, and the step convention."""
    gap = np.abs(e2e_gap(frame))
    flagged = flag_inconsistent(frame)
    kept = frame[~flagged]
    steps = (kept["e2e_time"] - kept["prompt_time"]) / kept["token_time"]
    extra = steps - (kept["token_size"] - 1)
    return [
        f"tolerance |e2e / (prompt + (tokens - 1) * step) - 1| <= {E2E_TOLERANCE:.3f}",
        f"rows {len(frame)}, kept {int((~flagged).sum())}, flagged {int(flagged.sum())}; "
        f"largest kept gap {gap[~flagged].max():.4f}, "
        f"smallest flagged gap {gap[flagged].min():.4f}",
        "decode steps implied by kept rows minus (token_size - 1): "
        f"min {extra.min():+.2f}, median {extra.median():+.2f}, max {extra.max():+.2f} "
        f"(minus token_size: median {extra.median() - 1:+.2f})",
    ]


def main(argv: list[str] | None = None) -> None:
    """Print the consistency check and one block per group."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", default=None, help="measurements (default: the shipped file)")
    args = parser.parse_args(argv)
    try:
        frame = recompute_power_capped_e2e(load_splitwise_perf(args.csv))
    except (OSError, ValueError) as error:  # a missing file, or columns of another file
        parser.error(f"--csv: {error}")
    print("\n".join(consistency_report(frame)))
    print()
    header = f"{'preset':36} {'used':>4} {'flag':>4} {'cfgs':>4}  MAPE% prompt  token    e2e"
    print(header)
    fits = fit_splitwise(args.csv)
    for (model, hardware, tp), fit in fits.items():
        mape = fit.heldout_mape
        print(
            f"{splitwise_preset_name(model, hardware, tp):36} {fit.rows_used:4d} "
            f"{fit.rows_flagged:4d} {fit.configurations:4d}        {mape['prompt_time']:6.2f} "
            f"{mape['token_time']:6.2f} {mape['e2e_time']:6.2f}"
        )
        latency, it = fit.latency, fit.latency.iteration
        print(
            f"    prefill = max({latency.prefill_floor_s * 1e3:.2f} ms, "
            f"{it.b1_s_per_prefill_token * 1e6:.2f} us * P + "
            f"{latency.prefill_s_per_squared_token * 1e9:.3f} ns * sum p^2)"
        )
        print(
            f"    step    = {it.b0_s * 1e3:.2f} ms + {it.b2_s_per_decode_token * 1e6:.1f} us * b + "
            f"{it.b3_s_per_context_token * 1e9:.1f} ns * context"
        )
    worst = {
        column: max(fit.heldout_mape[column] for fit in fits.values())
        for column in ("prompt_time", "token_time", "e2e_time")
    }
    print()
    print(
        "largest held-out MAPE over groups: " + ", ".join(f"{c} {v:.2f}%" for c, v in worst.items())
    )


if __name__ == "__main__":
    main()
