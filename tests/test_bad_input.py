"""Bad input through the real CLI (subprocess): exit code 2, one line that says what to do, nothing damaged.

Each case runs `python -m interp.cli ...` in a fresh process, as a user would, and checks the exit code, that
stderr is a single line without a traceback, a keyword of the message, and that no output was created or
damaged. The table of cases and what each got is printed by `pytest -s -k bad_input_table`.
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
    args = [sys.executable, "-m", "interp.cli", "train", "--data", str(data), "--out", str(model), "--epochs", "50",
            "--d-model", "8", "--n-heads", "2", "--n-layers", "1", "--device", "cpu", "--quiet", "--lr", "1e-3"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
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
    from interp.train import read_checkpoint

    kept = read_checkpoint(model)
    epochs_done = kept["resume"]["epoch"]
    assert epochs_done >= 1
    resumed = run_cli("train", "--data", str(data), "--out", str(model), "--epochs", str(epochs_done + 1), "--d-model",
                      "8", "--n-heads", "2", "--n-layers", "1", "--device", "cpu", "--quiet", "--lr", "1e-3", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert read_checkpoint(model)["resume"]["epoch"] == epochs_done + 1


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


def test_bad_input_table(capsys: pytest.CaptureFixture[str]) -> None:
    """Prints the table of bad inputs tried in this session and what each got (run with -s to see it)."""
    with capsys.disabled():
        if RESULTS:
            print("\n| bad input | exit | message |\n| --- | --- | --- |")
            for case, code, line in RESULTS:
                print(f"| {case} | {code} | {line.replace('|', '/')} |")
    assert all(code in ("0", "2", "130") for _, code, _ in RESULTS)
