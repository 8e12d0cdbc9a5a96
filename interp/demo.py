"""`interp demo`: everything end to end on synthetic planted-truth data, in minutes on a CPU.

The demo trains models for the two tasks of the paper's global tables: **sentiment** (7 exclusive concepts -3..3)
and **emotion** (6 multi-label concepts), each on its own synthetic data set where every concept is driven by one
planted feature, and for each task **one model per seed** (3 seeds; 2 with ``quick``), because a routing finding
is only worth reporting if it survives retraining. Steps (each prints one progress line when ``progress``):

1. synthetic data with planted feature→concept links (:func:`interp.synth.write_synthetic`)
   → ``<out>/data/synth-<task>.pkl`` (+ ``.planted.json``);
2. training, one model per seed (:func:`interp.seeds.train_seeds`) → ``<out>/models/<task>-seed<k>.pt``;
3. each model's test metrics (:func:`interp.evaluate.evaluate`, called by ``train_seeds``)
   → ``<out>/models/<task>-seed<k>.eval-test.json``;
4. extraction of the test split (:func:`interp.extract_many.extract_many`) → ``<out>/runs/<task>-seed<k>-test/``, and the
   faithfulness checks of the first sentiment run into its folder (:func:`interp.faithfulness.run_faithfulness`);
5. global statistics of all runs, laid out as the paper's Tables 3–7 (:func:`interp.global_report.run_global`)
   → ``<out>/reports/synth/``;
6. local explanations and the report of all runs (:func:`interp.report.run_report`)
   → ``<out>/reports/synth/index.html``.

The demo trains with learning rate 1e-3 instead of the paper's 1e-4 (sentiment) and 1e-5 (emotion): with those a
small model learns far too slowly for a demo of a few minutes. The report's model card records every setting.
``quick`` is a tiny version (a few hundred samples, a couple of epochs, a small model) that runs well under a
minute; its report has every section but is not expected to recover the planted links.

How well the planted links are recovered varies with the training run: on the full demo's settings the unimodal
links are found reliably, the interactions less so (a model may route a concept through a feature that contains
the planted one, e.g. ``tav`` for ``ta``); the report's "planted vs recovered" table says which, per seed. Measured
(seeds 0-2): sentiment 3, 4 and 3 of 7 links (a and t in every seed, v in two), emotion 5, 6 and 4 of 6 (t, a, v and
av in every seed); 311 s of CPU time single-threaded, i.e. about 5 minutes on a free 2-core machine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from interp.devices import threads as torch_threads
from interp.extract_many import extract_many
from interp.faithfulness import run_faithfulness
from interp.global_report import run_global
from interp.outputs import DEMO_MARKER, check_demo_folder
from interp.report import run_report
from interp.runs import atomic_write_text
from interp.seeds import train_seeds
from interp.synth import write_synthetic

REPORT_NAME = "synth"
STEPS = 6


@dataclass(frozen=True)
class TaskSettings:
    """Training length of one task of the demo."""

    task: str
    epochs: int
    patience: int


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the synthetic data and of the model, and the training settings, of one demo flavour."""

    n_train: int
    n_valid: int
    n_test: int
    lr: float
    batch_size: int
    d_model: int
    n_layers: int
    n_heads: int
    tasks: tuple[TaskSettings, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    data_seed: int = 0

    def describe(self) -> str:
        tasks = ", ".join(f"{t.task} (up to {t.epochs} epochs, patience {t.patience})" for t in self.tasks)
        return (f"{self.n_train}/{self.n_valid}/{self.n_test} train/valid/test samples per task; model d_model "
                f"{self.d_model}, {self.n_layers} layer(s), {self.n_heads} heads; Adam lr {self.lr:g}, batch "
                f"{self.batch_size}; one model per seed {', '.join(map(str, self.seeds))}; tasks: {tasks}")


#: The full demo: about 6 minutes on 2 CPU cores (3 seeds per task), with most planted links recovered.
FULL = DemoSettings(n_train=1600, n_valid=400, n_test=600, lr=1e-3, batch_size=32, d_model=32, n_layers=2, n_heads=4,
                    tasks=(TaskSettings("sentiment", 10, 3), TaskSettings("emotion", 10, 3)), seeds=(0, 1, 2))
#: ``--quick``: well under a minute; every section of the report, no promise about recovery.
QUICK = DemoSettings(n_train=300, n_valid=100, n_test=150, lr=1e-3, batch_size=32, d_model=16, n_layers=1, n_heads=2,
                     tasks=(TaskSettings("sentiment", 2, 2), TaskSettings("emotion", 2, 2)), seeds=(0, 1))


def demo_settings(quick: bool = False) -> DemoSettings:
    """The settings of the full or the quick demo."""
    return QUICK if quick else FULL


def run_demo(
    out: Path | str = Path("demo"),
    quick: bool = False,
    device: str = "auto",
    progress: bool = True,
    *,
    threads: int | None = 1,
    force: bool = False,
) -> Path:
    """Run the whole pipeline on synthetic planted-truth data under ``out``; returns the report's index.html.

    On the CPU the demo runs torch with ``threads`` intra-op threads (1 by default, restored afterwards): the demo's
    model is small, so more threads gain little, and on a machine whose cores are busy with other work several
    threads wait on each other (an epoch measured 5 s with one thread and 118 s with two on a loaded 2-core machine).
    ``threads=None`` keeps torch's setting.

    ``out`` must be new, empty, or a folder an earlier demo made (it holds :data:`interp.outputs.DEMO_MARKER`):
    the demo replaces its own files there. ``force`` writes into any folder.
    """
    check_demo_folder(out, force)
    atomic_write_text(Path(out) / DEMO_MARKER, "written by `interp demo`: it may replace the files in this folder\n")
    with torch_threads(threads, device):
        return _run_demo(Path(out), quick, device, progress)


def _run_demo(out: Path, quick: bool, device: str, progress: bool) -> Path:
    settings = demo_settings(quick)
    started = time.perf_counter()
    step_started = started

    def say(step: int, text: str) -> None:
        nonlocal step_started
        step_started = time.perf_counter()
        if progress:
            print(f"[{step}/{STEPS}] {text}", flush=True)

    def note(text: str) -> None:
        if progress:
            print(f"      {text}", flush=True)

    def done(text: str = "") -> None:
        note(f"done in {time.perf_counter() - step_started:.1f} s{('; ' + text) if text else ''}")

    if progress:
        print(f"interp demo ({'quick' if quick else 'full'}): {settings.describe()}", flush=True)
    tasks = settings.tasks

    say(1, f"synthetic data with planted feature->concept links -> {out / 'data'}/")
    data = {}
    for spec in tasks:
        synth = write_synthetic(out / "data" / f"synth-{spec.task}.pkl", task=spec.task, n_train=settings.n_train,
                                n_valid=settings.n_valid, n_test=settings.n_test, seed=settings.data_seed)
        data[spec.task] = synth.data_path
        note(f"{spec.task}: " + ", ".join(f"{c}<-{f}" for c, f in synth.planted.items()))
    done()

    say(2, f"training one model per seed ({', '.join(map(str, settings.seeds))}; lr {settings.lr:g}, d_model "
           f"{settings.d_model}, {settings.n_layers} layer(s)) -> {out / 'models'}/")
    trained = {}
    for spec in tasks:
        result = train_seeds(
            data[spec.task], out / "models" / f"{spec.task}.pt", settings.seeds, progress=progress, task=spec.task,
            variant="routing", epochs=spec.epochs, batch_size=settings.batch_size, lr=settings.lr,
            patience=spec.patience, device=device, d_model=settings.d_model, n_heads=settings.n_heads,
            n_layers=settings.n_layers,
        )
        trained[spec.task] = result
        note(f"{spec.task}: " + "; ".join(f"seed {r.seed} selected epoch {r.train.best_epoch} of {r.train.epochs_run}"
                                          for r in result.runs) + f" ({result.seconds:.1f} s)")
    done()

    say(3, "test metrics (one line per seed)")
    shown = ("acc7", "acc2", "f1", "mae", "corr", "acc_mean", "f1_mean")
    for spec in tasks:
        for run in trained[spec.task].runs:
            metrics = run.test_metrics or {}
            note(f"{spec.task} seed {run.seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k in shown))
    done()

    say(4, f"extracting p, r and p·r of every test sample, one run per model -> {out / 'runs'}/")
    checkpoints = [path for spec in tasks for path in trained[spec.task].checkpoints]  # >= 2: one run each
    runs = extract_many(checkpoints, split="test", out=out / "runs", device=device, force=True, progress=progress)
    first_sentiment = next((i for i, path in enumerate(checkpoints) if path.name.startswith("sentiment")), None)
    if first_sentiment is not None:  # faithfulness checks into the run folder, so the report shows the section
        faith = run_faithfulness(checkpoints[first_sentiment], run=runs[first_sentiment], device=device, progress=False)
        note(f"faithfulness ({runs[first_sentiment].name}): {faith.verdicts['deletion']}")
    done()

    report_dir = out / "reports" / REPORT_NAME
    say(5, f"global statistics (the paper's Tables 3-7) -> {report_dir}/")
    global_report = run_global(runs=runs, out=report_dir)
    done()

    say(6, "local explanations and the report")
    index = run_report(runs=runs, out=report_dir, results=global_report.results, write_tables=False,
                       gallery_random=1)
    done()
    if progress:
        print(f"demo finished in {time.perf_counter() - started:.1f} s", flush=True)
    return index


__all__ = ["DemoSettings", "FULL", "QUICK", "TaskSettings", "demo_settings", "run_demo"]
