"""Random JSON into meta.json and the planted JSON: a one-line refusal or a valid result, never a traceback.

In-process examples call the library where the JSON enters (:func:`interp.runs.check_run`,
:func:`interp.data.read_planted`) and then a consumer of what was accepted (the report's model card, the planted
map's use); a few subprocess examples go through the real CLI (exit 0 or 2, one stderr line when 2).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from interp.data import read_planted
from interp.errors import DataError, RunError
from interp.report import model_card
from interp.runs import check_run
from interp.schema import FEATURES

META_KEYS = ["task", "concepts", "features", "J", "n", "planted", "train", "model_config", "nonfinite", "shards",
             "versions", "split", "variant"]
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=6)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(META_KEYS + list(FEATURES) + ["-3", "valid_loss", "lr"]) | st.text(max_size=4),
                      children, max_size=4),
    max_leaves=12,
)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CLI = settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def run_copy(extracted_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("fuzz") / "run"
    shutil.copytree(extracted_run, copy)
    return copy


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from interp.synth import write_synthetic

    return write_synthetic(tmp_path_factory.mktemp("fuzzdata") / "d.pkl", n_train=20, n_valid=10, n_test=10).data_path


def _meta(extracted_run: Path) -> dict[str, Any]:
    return json.loads((extracted_run / "meta.json").read_text())


def _accepts_or_refuses_meta(run: Path, content: str) -> None:
    (run / "meta.json").write_text(content)
    try:
        meta = check_run(run)
    except RunError as error:
        assert "\n" not in str(error)
        return
    rows = model_card(meta, run.name)  # what the report does with an accepted meta.json
    assert all(isinstance(value, str) for _, value, _ in rows)


@FAST
@given(value=json_values)
def test_random_meta_json(run_copy: Path, value: Any) -> None:
    _accepts_or_refuses_meta(run_copy, json.dumps(value))


@FAST
@given(key=st.sampled_from(META_KEYS + ["train.valid_loss", "train.valid_metrics", "train.lr"]), value=json_values)
def test_one_random_field_of_meta_json(extracted_run: Path, run_copy: Path, key: str, value: Any) -> None:
    meta = _meta(extracted_run)
    if key.startswith("train."):
        meta["train"] = {**meta["train"], key.split(".", 1)[1]: value}
    else:
        meta[key] = value
    _accepts_or_refuses_meta(run_copy, json.dumps(meta))


@FAST
@given(value=json_values | st.fixed_dictionaries({"planted": json_values}) | st.fixed_dictionaries(
    {"task": st.sampled_from(["sentiment", "emotion", "x"]),
     "planted": st.dictionaries(st.sampled_from(["-3", "0", "happy"]) | st.text(max_size=3),
                                st.sampled_from(list(FEATURES)) | scalars, max_size=3)}))
@example(value={"task": [], "planted": {"happy": "t"}})  # an unhashable task once escaped as a TypeError
def test_random_planted_json(small_data: Path, value: Any) -> None:
    small_data.with_name("d.planted.json").write_text(json.dumps(value))
    try:
        info = read_planted(small_data)
    except DataError as error:
        assert "\n" not in str(error)
        return
    assert info is not None
    planted = info["planted"]
    assert planted and all(isinstance(c, str) and f in FEATURES for c, f in planted.items())


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "interp.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def _exit_0_or_one_line(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode in (0, 2), result.stderr
    if result.returncode == 2:
        lines = [line for line in result.stderr.splitlines() if line.startswith("interp: error:")]
        assert len(lines) == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr


@CLI
@given(key=st.sampled_from(META_KEYS), value=json_values)
def test_random_meta_field_through_the_cli(extracted_run: Path, run_copy: Path, key: str, value: Any) -> None:
    meta = _meta(extracted_run)
    meta[key] = value
    (run_copy / "meta.json").write_text(json.dumps(meta))
    _exit_0_or_one_line(_cli("report", "--run", str(run_copy), "--out", str(run_copy.parent / "report")))


@CLI
@given(value=json_values)
def test_random_planted_json_through_the_cli(trained_checkpoint: Path, synth_data: Path, value: Any,
                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = tmp_path_factory.mktemp("planted")
    data = folder / "d.pkl"
    shutil.copy(synth_data, data)
    (folder / "d.planted.json").write_text(json.dumps(value))
    _exit_0_or_one_line(_cli("extract", "--ckpt", str(trained_checkpoint), "--data", str(data), "--out",
                             str(folder / "run"), "--device", "cpu", "--quiet"))


any_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF))  # surrogates and controls too


@FAST
@given(text=any_text)
def test_printable_text_has_no_controls_and_encodes(text: str) -> None:
    import unicodedata
    import xml.etree.ElementTree as ElementTree
    from xml.sax.saxutils import escape

    from interp.guard import clean_text, one_line, printable, xml_safe

    shown = printable(text)
    assert not any(unicodedata.category(ch) in ("Cc", "Cs") for ch in shown)
    shown.encode("utf-8")
    assert "\n" not in one_line(text) and "\r" not in one_line(text)
    clean_text(text).encode("utf-8")  # what extraction writes to parquet
    assert clean_text(text) == text or any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)
    ElementTree.fromstring(f"<t>{escape(xml_safe(text))}</t>")  # valid XML text
