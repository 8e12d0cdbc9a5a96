"""Do the verdicts survive retraining? The figures of issue 12 on runs of several seeds (not a test).

Given the runs of K seeds (same task, data and split) and, optionally, runs of held-out seeds, prints:
- the bold agreement of r̄ between every pair of seeds (columns whose bold cell is the same; "none bold" counts);
- the range of the Spearman correlation between two seeds' r̄ tables;
- seed-to-seed std of a cell's r̄ ÷ the CLT half-width that one run prints (median, max);
- the share of cells whose "above / below / neither 1/J" verdict is the same in all K runs;
- the ensemble Table 3 (between-seed t interval, K−1 df) and how many single-seed verdicts survive in it;
- the video-clustered ÷ per-sample standard error (median, max) of each run;
- calibration: the share of cells whose held-out r̄ (and p̄r) falls inside the ensemble's prediction interval.

    python bench/retraining.py --runs runs/model-seed{0,1,2,3,4}-test --held-out runs/model-seed{5,6,7}-test
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import stats as sps

from interp.ensemble import pool_seeds, seed_of, verdict_survival
from interp.stats import StatsOptions, compute_global_stats
from interp.tables import IntervalTable


def _bold_columns(stats, quantity: str = "r") -> dict[str, str]:
    cells = stats.quantity_cells(quantity)
    return {c: ",".join(cells[(cells["concept"] == c) & cells["bold"].astype(bool)]["feature"]) for c in stats.concepts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="runs of the ensemble's seeds")
    parser.add_argument("--held-out", type=Path, nargs="*", default=[], help="runs of held-out seeds (calibration)")
    args = parser.parse_args()

    singles = [compute_global_stats(run) for run in args.runs]
    seeds = [seed_of(s) for s in singles]
    print(f"runs: {len(singles)} seeds {seeds}; task {singles[0].task}; n = {singles[0].n_samples} samples")

    same_bold = []
    for a, b in itertools.combinations(singles, 2):
        ba, bb = _bold_columns(a), _bold_columns(b)
        same_bold.append(sum(ba[c] == bb[c] for c in a.concepts))
    both_bold = []
    for a, b in itertools.combinations(singles, 2):
        ba, bb = _bold_columns(a), _bold_columns(b)
        both_bold.append(sum(ba[c] == bb[c] and ba[c] != "" for c in a.concepts))
    print(f"bold agreement of r̄ per pair of seeds (of {len(singles[0].concepts)} columns): same bold cell or both "
          f"none {min(same_bold)}–{max(same_bold)} (median {np.median(same_bold):g}); same bold cell, not none "
          f"{min(both_bold)}–{max(both_bold)} (median {np.median(both_bold):g})")

    means = np.stack([s.quantity_cells("r")["mean"].to_numpy(dtype=np.float64) for s in singles])
    rhos = [sps.spearmanr(means[i], means[j]).statistic for i, j in itertools.combinations(range(len(singles)), 2)]
    print(f"Spearman of r̄ tables between two seeds: {min(rhos):.2f}–{max(rhos):.2f} (median {np.median(rhos):.2f})")

    halves = np.stack([(s.quantity_cells("r")["high"] - s.quantity_cells("r")["low"]).to_numpy() / 2 for s in singles])
    ratio = means.std(axis=0, ddof=1) / np.median(halves, axis=0)
    print(f"seed-to-seed std of a cell's r̄ ÷ one run's CLT half-width: median {np.median(ratio):.1f}×, "
          f"max {ratio.max():.1f}×")
    verdicts = np.stack([s.quantity_cells("r")["significant"].astype(str).to_numpy() for s in singles])
    print(f"cells with the same r̄ verdict in all {len(singles)} runs: {np.mean((verdicts == verdicts[0]).all(axis=0)):.0%}")

    ensemble = pool_seeds(singles)
    print(f"\nensemble Table 3 (r̄; interval over seeds: Student t, K = {len(singles)}, {len(singles) - 1} df; "
          f"baseline 1/J = {ensemble.baseline:.3f}; ⁺ above, ⁻ below, bold as **):")
    table = IntervalTable.from_stats(ensemble, "r").as_frame(marks=True, style="markdown")
    print("| r̄ | " + " | ".join(table.columns) + " |\n|---" * 1 + "|---" * len(table.columns) + "|")
    for feature, row in table.iterrows():
        print(f"| {feature} | " + " | ".join(row) + " |")
    survival = verdict_survival(ensemble)
    for quantity, part in survival.groupby("quantity"):
        print(f"single-seed verdicts of {quantity} that the ensemble keeps: {int(part['kept'].sum())} of {len(part)}")
    print(f"all judged quantities: {int(survival['kept'].sum())} of {len(survival)} single-seed verdicts survive")

    for stats in singles:
        try:
            video = compute_global_stats(stats.run, replace(stats.options, cluster="video"))
        except Exception as error:  # an old run without a video column
            print(f"{stats.name}: no clustering ({error})")
            continue
        r = np.concatenate([video.quantity_cells(q)["se"].to_numpy() / stats.quantity_cells(q)["se"].to_numpy()
                            for q in ("r", "pr")])
        r = r[np.isfinite(r)]
        print(f"{stats.name}: video-clustered ÷ per-sample SE median {np.median(r):.2f}×, max {r.max():.2f}× "
              f"({video.units} videos)")

    if args.held_out:
        for quantity in ("r", "pr"):
            cells = ensemble.quantity_cells(quantity)
            inside = []
            for run in args.held_out:
                held = compute_global_stats(run, StatsOptions()).quantity_cells(quantity)["mean"].to_numpy()
                inside.append((held >= cells["pi_low"].to_numpy()) & (held <= cells["pi_high"].to_numpy()))
            inside = np.concatenate(inside)
            print(f"calibration ({quantity}): {inside.mean():.1%} of {inside.size} held-out cell means lie inside the "
                  f"ensemble's 95% prediction interval for a new seed ({len(args.held_out)} held-out seeds)")


if __name__ == "__main__":
    main()
