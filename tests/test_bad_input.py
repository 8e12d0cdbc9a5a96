"""Bad input through the real CLI (subprocess): exit code 2, one line that says what to do, nothing damaged.

Each case runs `python -m interp.cli ...` in a fresh process, as a user would, and checks the exit code, that
stderr is a single line without a traceback, a keyword of the message, and that no output was created or
damaged. The table of cases and what each got is printed at the end of the file's run:
`pytest -s tests/test_bad_input.py` (the table holds the cases run in that session).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path | None = None, env_extra: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "interp.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def one_line_error(result: subprocess.CompletedProcess[str], keyword: str) -> str:
    """Assert exit 2 and a single `interp: error:` line containing ``keyword``; returns the line."""
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("interp: warning:")]
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("interp: error:"), lines[0]
    assert keyword.lower() in lines[0].lower(), (keyword, lines[0])
    return lines[0]


def digest(path: Path) -> str:
    """sha256 over every file under ``path`` (names and bytes), to show it was not touched."""
    hasher = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        hasher.update(str(file.relative_to(path.parent)).encode())
        hasher.update(file.read_bytes())
    return hasher.hexdigest()


def mult_pickle(path: Path, n: int = 12, dims: tuple[int, int, int] = (4, 3, 2), mutate=None) -> Path:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    data = {}
    for split in ("train", "valid", "test"):
        data[split] = {
            "text": rng.normal(size=(n, 2, dims[0])).astype(np.float32),
            "audio": rng.normal(size=(n, 2, dims[1])).astype(np.float32),
            "vision": rng.normal(size=(n, 2, dims[2])).astype(np.float32),
            "labels": rng.uniform(-3, 3, size=(n, 1, 1)).astype(np.float32),
        }
    if mutate is not None:
        mutate(data)
    with open(path, "wb") as handle:
        pickle.dump(data, handle)
    return path


class Evil:
    """Unpickling this runs a shell command: loaders must refuse it before anything runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


TINY_TRAIN = ["--epochs", "1", "--d-model", "8", "--n-heads", "2", "--n-layers", "1", "--device", "cpu", "--quiet"]

RESULTS: list[tuple[str, str, str]] = []


def record(case: str, result: subprocess.CompletedProcess[str]) -> None:
    line = next((l for l in result.stderr.splitlines() if l.startswith("interp: error:")), result.stderr.strip()[-120:])
    RESULTS.append((case, str(result.returncode), line))


# ------------------------------------------------------------------------------------------------ checkpoints


def test_checkpoint_problems(trained_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cases = []
    missing = run_cli("extract", "--ckpt", str(tmp_path / "missing.pt"), "--out", str(out))
    cases.append(("missing checkpoint", missing, "not found"))
    folder = tmp_path / "folder.pt"
    folder.mkdir()
    cases.append(("checkpoint is a folder", run_cli("eval", "--ckpt", str(folder)), "is a folder"))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(trained_checkpoint.read_bytes()[: trained_checkpoint.stat().st_size // 2])
    cases.append(("truncated checkpoint", run_cli("extract", "--ckpt", str(truncated), "--out", str(out)),
                  "cannot be read"))
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    cases.append(("a torch file that is not an interp checkpoint",
                  run_cli("extract", "--ckpt", str(foreign), "--out", str(out)), "not an interp checkpoint"))
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "interp-checkpoint", "payload": Evil(marker)}, evil)
    refused = run_cli("extract", "--ckpt", str(evil), "--out", str(out))
    cases.append(("pickle checkpoint that would run code", refused, "would run code"))
    for name, result, keyword in cases:
        record(name, result)
        one_line_error(result, keyword)
    assert not marker.exists(), "the refused checkpoint ran its command"
    assert not out.exists()


def test_checkpoint_and_data_disagree(trained_checkpoint: Path, tmp_path: Path) -> None:
    from interp.synth import write_synthetic

    other_dims = mult_pickle(tmp_path / "dims.pkl")
    result = run_cli("extract", "--ckpt", str(trained_checkpoint), "--data", str(other_dims), "--out", str(tmp_path / "r"))
    record("checkpoint and data with different input dims", result)
    one_line_error(result, "input dims")
    emotion = write_synthetic(tmp_path / "emotion.pkl", task="emotion", n_train=20, n_valid=10, n_test=10).data_path
    result = run_cli("eval", "--ckpt", str(trained_checkpoint), "--data", str(emotion))
    record("sentiment checkpoint on emotion data (task mismatch)", result)
    one_line_error(result, "task")
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------------------------------- data


def _drop_labels(data: dict) -> None:
    del data["valid"]["labels"]


def _four_d(data: dict) -> None:
    data["train"]["text"] = data["train"]["text"][:, :, :, None]


def _empty_valid(data: dict) -> None:
    for key in ("text", "audio", "vision", "labels"):
        data["valid"][key] = data["valid"][key][:0]


def _out_of_range(data: dict) -> None:
    data["train"]["labels"][3] = 7.5


@pytest.mark.parametrize(
    ("case", "mutate", "keyword"),
    [
        ("data file missing a key", _drop_labels, "labels"),
        ("modality of the wrong rank", _four_d, "shape"),
        ("empty split", _empty_valid, "empty"),
        ("labels out of range", _out_of_range, "must lie in [-3, 3]"),
    ],
)
def test_bad_data_files(case: str, mutate, keyword: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = mult_pickle(tmp_path / "data.pkl", mutate=mutate)
    model = tmp_path / "model.pt"
    result = run_cli("train", "--data", str(data), "--out", str(model), *TINY_TRAIN)
    record(case, result)
    one_line_error(result, keyword)
    assert not model.exists()


def test_data_file_missing_and_not_a_pickle(tmp_path: Path) -> None:
    result = run_cli("train", "--data", str(tmp_path / "nope.pkl"), "--out", str(tmp_path / "m.pt"))
    record("data file missing", result)
    one_line_error(result, "nope.pkl")
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"\x80\x04\x95 this is not a pickle")
    result = run_cli("train", "--data", str(garbage), "--out", str(tmp_path / "m.pt"))
    record("data file truncated / not a pickle", result)
    one_line_error(result, "not a valid data pickle")
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"train": Evil(marker)}))
    result = run_cli("train", "--data", str(evil), "--out", str(tmp_path / "m.pt"))
    record("data pickle naming os.system", result)
    one_line_error(result, "system")
    assert not marker.exists()


def test_non_finite_values_are_cleaned_and_reported(tmp_path: Path) -> None:
    def poison(data: dict) -> None:
        data["train"]["audio"][0, 0, 0] = -np.inf
        data["test"]["text"][1, 1, 1] = np.nan
        data["test"]["vision"][2, 0, 0] = np.inf

    data = mult_pickle(tmp_path / "nonfinite.pkl", mutate=poison)
    model = tmp_path / "model.pt"
    trained = run_cli("train", "--data", str(data), "--out", str(model), *TINY_TRAIN)
    assert trained.returncode == 0, trained.stderr
    assert "replaced 3 non-finite" in trained.stderr
    RESULTS.append(("non-finite feature values", "0", trained.stderr.strip().splitlines()[-1][:160]))
    run = tmp_path / "run"
    extracted = run_cli("extract", "--ckpt", str(model), "--out", str(run), "--quiet", "--device", "cpu")
    assert extracted.returncode == 0, extracted.stderr
    import json

    meta = json.loads((run / "meta.json").read_text())
    assert meta["nonfinite"]["total"] == 3
    routing = pq.read_table(run / "routing.parquet").to_pandas()
    samples = pq.read_table(run / "samples.parquet").to_pandas()
    assert np.isfinite(routing[["p", "r", "pr", "contribution"]].to_numpy()).all()
    assert np.isfinite(samples.select_dtypes("number").to_numpy()).all()
    reports = tmp_path / "reports"
    stats = run_cli("global", "--run", str(run), "--out", str(reports))
    assert stats.returncode == 0, stats.stderr
    assert "nan" not in (reports / "global_r.csv").read_text().lower()


# ------------------------------------------------------------------------------------------------------ runs


def _copy_run(run: Path, tmp_path: Path, name: str) -> Path:
    copy = tmp_path / name
    shutil.copytree(run, copy)
    return copy


def test_damaged_runs(extracted_run: Path, tmp_path: Path) -> None:
    no_table = _copy_run(extracted_run, tmp_path, "no-table")
    (no_table / "routing.parquet").unlink()
    no_column = _copy_run(extracted_run, tmp_path, "no-column")
    pq.write_table(pq.read_table(no_column / "routing.parquet").drop(["pr"]), no_column / "routing.parquet")
    wrong_type = _copy_run(extracted_run, tmp_path, "wrong-type")
    table = pq.read_table(wrong_type / "samples.parquet")
    index = table.schema.get_field_index("p_ta")
    table = table.set_column(index, "p_ta", pa.array([str(v) for v in table.column("p_ta").to_pylist()]))
    pq.write_table(table, wrong_type / "samples.parquet")
    no_meta = _copy_run(extracted_run, tmp_path, "no-meta")
    (no_meta / "meta.json").unlink()
    sample_id = pq.read_table(extracted_run / "samples.parquet", columns=["sample_id"]).column(0)[0].as_py()
    for run, case, keyword in [
        (no_table, "run missing routing.parquet", "routing.parquet"),
        (no_column, "run with a column missing", "'pr'"),
        (wrong_type, "run with a column of the wrong type", "p_ta"),
        (no_meta, "run without meta.json (incomplete)", "meta.json"),
    ]:
        before = digest(run)
        for command in (["global"], ["local", "--sample-id", sample_id], ["report"]):
            result = run_cli(*command, "--run", str(run), "--out", str(tmp_path / "out" / run.name))
            if command == ["global"]:
                record(case, result)
            one_line_error(result, keyword)
        assert digest(run) == before
    assert not (tmp_path / "out").exists()


def test_unknown_sample_id(extracted_run: Path, tmp_path: Path) -> None:
    sample_id = pq.read_table(extracted_run / "samples.parquet", columns=["sample_id"]).column(0)[0].as_py()
    result = run_cli("local", "--run", str(extracted_run), "--sample-id", sample_id + "x", "--out", str(tmp_path / "o"))
    record("unknown sample id", result)
    line = one_line_error(result, "closest")
    assert sample_id in line


def test_unwritable_output(trained_checkpoint: Path, extracted_run: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run_cli("extract", "--ckpt", str(trained_checkpoint), "--out", str(blocker / "run"), "--device", "cpu", "--quiet")
    record("unwritable output folder (extract)", result)
    one_line_error(result, "a-file")
    result = run_cli("global", "--run", str(extracted_run), "--out", str(blocker / "reports"))
    record("unwritable output folder (global)", result)
    one_line_error(result, "a-file")
    assert blocker.read_text() == "not a folder"


# ------------------------------------------------------------------------------------------------- disk full

DISK_FULL = textwrap.dedent(
    """
    import errno, os
    _real_fsync = os.fsync
    def _full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    os.fsync = _full
    import pyarrow.parquet as _pq
    _pq.ParquetWriter.write_table = lambda self, *a, **k: _full()
    """
)


def test_disk_full_never_damages_existing_outputs(trained_checkpoint: Path, extracted_run: Path, tmp_path: Path) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(DISK_FULL)
    env = {"PYTHONPATH": f"{hook}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    (tmp_path / "runs").mkdir()
    run = _copy_run(extracted_run, tmp_path / "runs", "existing")
    before = digest(run)
    result = run_cli("extract", "--ckpt", str(trained_checkpoint), "--out", str(run), "--force", "--device", "cpu",
                     "--quiet", env_extra=env)
    record("disk full while extracting over an existing run (--force)", result)
    one_line_error(result, "no space")
    assert digest(run) == before
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["existing"], "a temp folder was left behind"
    checkpoint = tmp_path / "model.pt"
    shutil.copy(trained_checkpoint, checkpoint)
    ckpt_before = digest(checkpoint)
    data = mult_pickle(tmp_path / "d.pkl", dims=(16, 12, 10))
    result = run_cli("train", "--data", str(data), "--out", str(checkpoint), *TINY_TRAIN, env_extra=env)
    record("disk full while writing a checkpoint over an existing one", result)
    one_line_error(result, "no space")
    assert digest(checkpoint) == ckpt_before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".model.pt")) == []


# ------------------------------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_keeps_best_checkpoint_and_resume_continues(tmp_path: Path) -> None:
    from interp.synth import write_synthetic

    data = write_synthetic(tmp_path / "s.pkl", n_train=200, n_valid=40, n_test=40, seed=3).data_path
    model = tmp_path / "model.pt"
    # 1000 epochs without early stopping: the training does not end on its own before the Ctrl-C arrives
    args = [sys.executable, "-m", "interp.cli", "train", "--data", str(data), "--out", str(model), "--epochs", "1000",
            "--patience", "1000", "--d-model", "8", "--n-heads", "2", "--n-layers", "1", "--device", "cpu", "--quiet", "--lr", "1e-3"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    # SIGINT back to its default in the child: a test run started in the background (`pytest &`) ignores SIGINT,
    # children inherit that, and the Ctrl-C below would then never arrive
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while not model.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert model.exists(), "no checkpoint after the first epoch"
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    RESULTS.append(("Ctrl-C during interp train", str(process.returncode), (stdout + stderr).strip().splitlines()[-1][:160]))
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "best checkpoint so far" in stdout
    from interp.checkpoint import read_checkpoint, resume_state

    kept = read_checkpoint(model)
    epochs_done = resume_state(kept, model)["epoch"]
    assert epochs_done >= 1
    resumed = run_cli("train", "--data", str(data), "--out", str(model), "--epochs", str(epochs_done + 1),
                      "--patience", "1000", "--d-model", "8", "--n-heads", "2", "--n-layers", "1", "--device", "cpu", "--quiet", "--lr", "1e-3", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert resume_state(read_checkpoint(model), model)["epoch"] == epochs_done + 1


# ------------------------------------------------------------------------------------------------- escaping


def test_untrusted_ids_and_transcripts_are_escaped_and_contained(tmp_path: Path) -> None:
    from interp.runwriter import RunBatch, write_run
    from interp.schema import TASK_CONCEPTS

    rng = np.random.default_rng(0)
    n, J = 4, 7
    r = rng.random((n, 7, J))
    r /= r.sum(2, keepdims=True)
    ids = ["<script>alert(1)</script>", "../../escape", "plain", "a/b\\c"]
    batch = RunBatch(ids, "test", np.arange(n), rng.integers(0, 7, n), rng.normal(size=(n, J)), rng.random((n, 7)), r,
                     rng.normal(size=(n, 7, J)), scores=rng.uniform(-3, 3, n),
                     transcripts=["<img src=x onerror=alert(2)>"] * n)
    run = write_run(tmp_path / "runs" / "evil", task="sentiment", concepts=TASK_CONCEPTS["sentiment"], batches=[batch],
                    meta={})
    out = tmp_path / "reports" / "evil"
    args = ["local", "--run", str(run), "--out", str(out / "local")]
    for sample_id in ids:
        args += ["--sample-id", sample_id]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    report = run_cli("report", "--run", str(run), "--out", str(out))
    assert report.returncode == 0, report.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(out in p.parents or run in p.parents for p in written), "a file was written outside its folder"
    pages = [p for p in out.rglob("*.html")]
    assert len(pages) >= 5
    for page in pages:
        text = page.read_text()
        assert "<script>alert(1)</script>" not in text, page
        assert "<img src=x" not in text, page


# ------------------------------------------------------------------------------------- nothing lost (issue 11)


def _project(tmp_path: Path, checkpoint: Path) -> Path:
    """A user's project folder: notes, a model and its data, and a sub-folder; --force must never touch it."""
    project = tmp_path / "project"
    (project / "sub").mkdir(parents=True)
    (project / "notes.txt").write_text("my notes\n")
    (project / "sub" / "draft.md").write_text("# draft\n")
    shutil.copy(checkpoint, project / "model.pt")
    mult_pickle(project / "data.pkl")
    return project


def test_force_replaces_only_a_run_folder(trained_checkpoint: Path, extracted_run: Path, tmp_path: Path) -> None:
    project = _project(tmp_path, trained_checkpoint)
    before = digest(project)
    args = ["--device", "cpu", "--quiet", "--force"]
    result = run_cli("extract", "--ckpt", str(trained_checkpoint), "--out", str(project), *args)
    record("extract --out PROJECT --force (a folder that is not a run)", result)
    line = one_line_error(result, "replaces only a run folder")
    assert "notes.txt" in line
    result = run_cli("extract", "--ckpt", str(project / "model.pt"), "--out", str(project), *args)
    record("extract --out FOLDER --force where FOLDER holds the checkpoint", result)
    one_line_error(result, "holds the checkpoint")
    run = _copy_run(extracted_run, tmp_path, "here")
    run_before = digest(run)
    result = run_cli("extract", "--ckpt", str(trained_checkpoint), "--out", ".", *args, cwd=run)
    record("extract --out . --force inside that run folder", result)
    one_line_error(result, "current folder")
    assert digest(project) == before and digest(run) == run_before
    (run / "faithfulness.json").write_text("{}")  # what `interp faithfulness` writes into a run folder by default
    result = run_cli("extract", "--ckpt", str(trained_checkpoint), "--out", str(run), *args)
    assert result.returncode == 0, result.stderr  # a run folder is still replaced
    assert sorted(p.name for p in run.iterdir()) == ["meta.json", "routing.parquet", "samples.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here", "project"], "a temp folder was left behind"


def test_demo_refuses_a_folder_it_did_not_make(trained_checkpoint: Path, tmp_path: Path) -> None:
    project = _project(tmp_path, trained_checkpoint)
    before = digest(project)
    result = run_cli("demo", "--out", str(project), "--quick", "--quiet", "--device", "cpu")
    record("demo --out PROJECT (not empty, not made by the demo)", result)
    line = one_line_error(result, "not made by `interp demo`")
    assert "--force" in line
    assert digest(project) == before


def test_failed_training_leaves_a_good_checkpoint_byte_identical(trained_checkpoint: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    shutil.copy(trained_checkpoint, good)
    before = good.read_bytes()

    def extreme(data: dict) -> None:  # finite float32 values whose products overflow: the loss is NaN at epoch 1
        for split in data.values():
            split["text"][:] = 3e38

    data = mult_pickle(tmp_path / "extreme.pkl", dims=(16, 12, 10), mutate=extreme)
    result = run_cli("train", "--data", str(data), "--out", str(good), *TINY_TRAIN)
    record("training whose loss is NaN at epoch 1, --out = a good checkpoint", result)
    line = one_line_error(result, "epoch 1")
    assert "lower --lr" in line and "left as it was" in line
    result = run_cli("train", "--data", str(data), "--out", str(good), *TINY_TRAIN, "--lr", "1e20")
    record("train --lr 1e20 over a good checkpoint", result)
    one_line_error(result, "learning rate")
    assert good.read_bytes() == before
    def extreme_valid(data: dict) -> None:  # training is fine, the validation loss is NaN
        data["valid"]["text"][:] = 3e38

    valid_nan = mult_pickle(tmp_path / "valid-nan.pkl", dims=(16, 12, 10), mutate=extreme_valid)
    result = run_cli("train", "--data", str(valid_nan), "--out", str(good), *TINY_TRAIN)
    record("training whose validation loss is NaN, --out = a good checkpoint", result)
    line = one_line_error(result, "validation loss became nan at epoch 1")
    assert "left as it was" in line
    assert good.read_bytes() == before
    fresh = tmp_path / "fresh.pt"
    result = run_cli("train", "--data", str(data), "--out", str(fresh), *TINY_TRAIN)
    one_line_error(result, "nothing was written")
    assert not fresh.exists()
    # several seeds at once (the vectorised engine): the same stop, and the seeds' good checkpoints stay as they were
    shutil.copy(good, tmp_path / "ens-seed0.pt")
    for mutated, which in ((data, "training"), (valid_nan, "validation")):
        result = run_cli("train", "--data", str(mutated), "--out", str(tmp_path / "ens.pt"), *TINY_TRAIN,
                         "--seeds", "0,1", "--engine", "vectorised")
        record(f"--seeds 0,1 --engine vectorised, {which} loss NaN at epoch 1, seed 0's --out a good checkpoint",
               result)
        line = one_line_error(result, f"the {which} loss of seed 0")
        assert "epoch 1" in line and "lower --lr" in line and "no checkpoint was written or changed" in line
        assert (tmp_path / "ens-seed0.pt").read_bytes() == before and not (tmp_path / "ens-seed1.pt").exists()


def test_an_output_is_never_an_input(trained_checkpoint: Path, extracted_run: Path, tmp_path: Path) -> None:
    from interp.synth import write_synthetic

    folder = tmp_path / "work"
    folder.mkdir()
    model = folder / "m.pt"
    shutil.copy(trained_checkpoint, model)
    data = write_synthetic(folder / "d.pkl", n_train=40, n_valid=20, n_test=20, seed=1).data_path
    notes = folder / "notes.txt"
    notes.write_text("not a checkpoint")
    (folder / "notes.json").write_text('{"mine": 1}')
    run = _copy_run(extracted_run, folder, "run")
    before = digest(folder)
    cases = [
        ("eval --out = --ckpt", ["eval", "--ckpt", str(model), "--data", str(data), "--out", str(model)],
         "is the checkpoint"),
        ("eval --out = --data", ["eval", "--ckpt", str(model), "--data", str(data), "--out", str(data)],
         "is the data file"),
        ("eval --out over a JSON file it did not write",
         ["eval", "--ckpt", str(model), "--data", str(data), "--out", str(folder / "notes.json")], "not a metrics JSON"),
        ("train --out = --data", ["train", "--data", str(data), "--out", str(data), *TINY_TRAIN], "is the data file"),
        ("train --out = the planted map beside --data",
         ["train", "--data", str(data), "--out", str(folder / "d.planted.json"), *TINY_TRAIN], "planted map"),
        ("train --out over a file that is not a checkpoint",
         ["train", "--data", str(data), "--out", str(notes), *TINY_TRAIN], "not an interp checkpoint"),
        ("extract --out = --ckpt", ["extract", "--ckpt", str(model), "--data", str(data), "--out", str(model),
                                    "--force", "--device", "cpu"], "is the checkpoint"),
        ("data synth --out over a file it did not write", ["data", "synth", "--out", str(notes)], "not synthetic data"),
        ("global --out = --run", ["global", "--run", str(run), "--out", str(run)], "is the run"),
        ("report --out inside --run", ["report", "--run", str(run), "--out", str(run / "report")], "inside the run"),
        ("local --out inside --run", ["local", "--run", str(run), "--random", "1", "--out", str(run / "l")],
         "inside the run"),
    ]
    for case, args, keyword in cases:
        result = run_cli(*args)
        record(case, result)
        one_line_error(result, keyword)
    assert digest(folder) == before


def _deep_pickle(path: Path, depth: int = 100_000) -> Path:
    """A MulT-layout pickle whose ``id`` is a list nested ``depth`` deep, written opcode by opcode (pickle.dumps
    itself would overflow the stack; protocol 2 has no frames to adjust). Loading it is iterative; walking it
    recursively is not."""
    import struct

    mult_pickle(path, mutate=lambda data: data["train"].__setitem__("id", "DEEP-MARKER"))
    with open(path, "rb") as handle:
        data = pickle.load(handle)
    raw = pickle.dumps(data, protocol=2)
    token = b"X" + struct.pack("<I", 11) + b"DEEP-MARKER"  # BINUNICODE of the marker
    assert raw.count(token) == 1
    path.write_bytes(raw.replace(token, b"]" * depth + b"a" * (depth - 1)))
    return path


def test_hostile_values_at_the_boundary(trained_checkpoint: Path, tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    cases = []
    deep = _deep_pickle(tmp_path / "deep.pkl")
    cases.append(("data pickle with a list nested 10^5 deep",
                  run_cli("train", "--data", str(deep), "--out", str(model), *TINY_TRAIN), "nests containers"))
    planted = mult_pickle(tmp_path / "p.pkl")
    (tmp_path / "p.planted.json").write_text("[" * 100_000 + "]" * 100_000)
    cases.append(("planted JSON nested 10^5 deep",
                  run_cli("train", "--data", str(planted), "--out", str(model), *TINY_TRAIN), "planted.json"))

    def complex_audio(data: dict) -> None:
        data["train"]["audio"] = data["train"]["audio"] + 1j

    cases.append(("complex feature values", run_cli("train", "--data", str(mult_pickle(tmp_path / "c.pkl",
                  mutate=complex_audio)), "--out", str(model), *TINY_TRAIN), "complex"))

    def negative_emotions(data: dict) -> None:
        for split in data.values():
            split["labels"] = np.abs(np.random.default_rng(0).normal(size=(12, 1, 6))).astype(np.float32)
        data["valid"]["labels"][2, 0, 4] = -1.5

    emotion = mult_pickle(tmp_path / "e.pkl", mutate=negative_emotions)
    cases.append(("negative emotion scores", run_cli("train", "--data", str(emotion), "--task", "emotion",
                  "--out", str(model), *TINY_TRAIN), "intensities >= 0"))
    for option, value, command in [
        ("--bootstrap-samples", str(10**12), ["global", "--interval", "bootstrap"]),
        ("--seq-len", str(10**9), ["data", "synth", "--out", str(tmp_path / "s.pkl")]),
        ("--n-train", str(10**11), ["data", "synth", "--out", str(tmp_path / "s.pkl")]),
        ("--seed", str(2**70), ["train", "--data", str(planted), "--out", str(model)]),
        ("--seed", "-1", ["global"]),
        ("--bootstrap-samples", str(10**12), ["faithfulness", "--ckpt", str(trained_checkpoint)]),
        ("--seed", str(2**70), ["faithfulness", "--ckpt", str(trained_checkpoint)]),
        ("--lr", "inf", ["train", "--data", str(planted), "--out", str(model)]),
        ("--num-workers", "100000", ["extract", "--ckpt", str(trained_checkpoint), "--out", str(tmp_path / "r")]),
        ("--d-model", str(2**20), ["train", "--data", str(mult_pickle(tmp_path / "g.pkl")), "--out", str(model),
                                   "--n-heads", "1"]),
    ]:
        result = run_cli(*command, option, value, cwd=tmp_path)
        cases.append((f"{command[0]} {option} {value}", result, "memory" if option in ("--seq-len", "--n-train")
                      else option.lstrip("-").split("-")[0]))
    for case, result, keyword in cases:
        record(case, result)
        one_line_error(result, keyword)
    assert not model.exists() and not (tmp_path / "s.pkl").exists()


def _edit_checkpoint(source: Path, target: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    edit(checkpoint)
    torch.save(checkpoint, target)
    return target


def test_checkpoint_entries_are_checked(trained_checkpoint: Path, tmp_path: Path) -> None:
    def setter(*keys, value):  # type: ignore[no-untyped-def]
        def edit(checkpoint: dict) -> None:
            node = checkpoint
            for key in keys[:-1]:
                node = node[key]
            node[keys[-1]] = value(node[keys[-1]]) if callable(value) else value
        return edit

    cases = [
        ("checkpoint 'data' is a string", setter("data", value="d.pkl"), "data must be an object"),
        ("checkpoint 'train' is a list", setter("train", value=[]), "train must be an object"),
        ("checkpoint 'state_dict' holds numbers", setter("state_dict", value={"w": 1}), "state_dict"),
        ("checkpoint 'concepts' is a string", setter("concepts", value="-3-2-10123"), "concepts"),
        ("checkpoint with duplicate concept names", setter("concepts", value=["-3"] * 7), "more than once"),
        ("checkpoint of an unknown version", setter("version", value=99), "version"),
        ("checkpoint with input_dims of 10^9", setter("config", "input_dims", value=[10**9, 12, 10]), "input_dims"),
        ("checkpoint with d_model 2^24", setter("config", "d_model", value=2**24), "d_model"),
        ("checkpoint with routing_iterations 10^6", setter("config", "routing_iterations", value=10**6),
         "routing_iterations"),
        ("checkpoint whose weights have the wrong shape (multi-line torch error)",
         setter("state_dict", value=lambda state: {k: v[..., :1] if v.ndim == 2 else v for k, v in state.items()}),
         "does not match"),
    ]
    for index, (case, edit, keyword) in enumerate(cases):
        bad = _edit_checkpoint(trained_checkpoint, tmp_path / f"bad{index}.pt", edit)
        result = run_cli("eval", "--ckpt", str(bad), "--device", "cpu", timeout=120)
        record(case, result)
        one_line_error(result, keyword)
    assert not list(tmp_path.glob("*.json"))


def test_meta_json_is_checked(extracted_run: Path, tmp_path: Path) -> None:
    import json

    meta = json.loads((extracted_run / "meta.json").read_text())
    cases = [
        ("meta.json is a list", json.dumps([meta]).encode(), "not the object"),
        ("meta.json is not UTF-8", json.dumps(meta).encode().replace(b'"task"', b'"t\xe9sk"'), "not UTF-8"),
        ("meta.json with J a string", json.dumps({**meta, "J": "7"}).encode(), "J must be"),
        ("meta.json with a planted map of numbers", json.dumps({**meta, "planted": {"-3": 3}}).encode(), "planted"),
        ("meta.json with train.valid_loss a string",
         json.dumps({**meta, "train": {**meta["train"], "valid_loss": "low"}}).encode(), "valid_loss"),
    ]
    for index, (case, content, keyword) in enumerate(cases):
        run = _copy_run(extracted_run, tmp_path, f"run{index}")
        (run / "meta.json").write_bytes(content)
        before = digest(run)
        result = run_cli("global", "--run", str(run), "--out", str(tmp_path / "out"))
        record(case, result)
        one_line_error(result, keyword)
        assert digest(run) == before
    assert not (tmp_path / "out").exists()


def test_ids_with_control_characters_and_surrogates(trained_checkpoint: Path, tmp_path: Path) -> None:
    import xml.etree.ElementTree as ElementTree

    def hostile_ids(data: dict) -> None:
        for name, split in data.items():
            split["id"] = np.array([f"{name}-{k}" for k in range(12)], dtype=object)
            split["transcript"] = np.array(["fine"] * 12, dtype=object)
        data["test"]["id"][:4] = ["nul\x00id", "esc\x1b[31mred", "new\nline", "lone\udc80surrogate"]
        data["test"]["transcript"][3] = "a lone \ud800 surrogate and an \x1b escape"

    data = mult_pickle(tmp_path / "ids.pkl", dims=(16, 12, 10), mutate=hostile_ids)
    run = tmp_path / "run"
    result = run_cli("extract", "--ckpt", str(trained_checkpoint), "--data", str(data), "--out", str(run),
                     "--device", "cpu", "--quiet")
    RESULTS.append(("lone UTF-16 surrogates in an id and a transcript (extract)", str(result.returncode),
                    result.stdout.strip()[-100:]))
    assert result.returncode == 0, result.stderr
    ids = pq.read_table(run / "samples.parquet", columns=["sample_id"]).column(0).to_pylist()
    assert "lone\\udc80surrogate" in ids  # shown escaped, the other ids kept as they are
    assert "esc\x1b[31mred" in ids
    result = run_cli("local", "--run", str(run), "--sample-id", "esc[31mred", "--out", str(tmp_path / "l"))
    record("unknown id whose closest ids hold ESC and a newline", result)
    line = one_line_error(result, "closest ids")
    assert "\x1b" not in result.stderr and "\\x1b" in line
    out = tmp_path / "pages"
    from interp.local import explain_sample, write_local_page

    write_local_page(explain_sample(run, "nul\x00id"), out)  # no OS passes NUL in an argument: in-process
    result = run_cli("local", "--run", str(run), "--sample-id", "esc\x1b[31mred", "--out", str(out))
    assert result.returncode == 0, result.stderr
    RESULTS.append(("local page of an id with ESC (stdout escaped, SVG valid XML)", "0", result.stdout.strip()[-100:]))
    assert "\x1b" not in result.stdout and "\\x1b" in result.stdout
    svgs = sorted(out.glob("*.svg"))
    assert len(svgs) == 2
    for svg in svgs:
        ElementTree.parse(svg)  # raises ParseError on NUL / ESC


def test_bad_input_table(capsys: pytest.CaptureFixture[str]) -> None:
    """Prints the table of bad inputs tried in this session and what each got (run with -s to see it)."""
    with capsys.disabled():
        if RESULTS:
            print("\n| bad input | exit | message |\n| --- | --- | --- |")
            for case, code, line in RESULTS:
                print(f"| {case} | {code} | {line.replace('|', '/')} |")
    assert all(code in ("0", "2", "130") for _, code, _ in RESULTS)
