"""`interp report`: the numbers in the HTML equal the run's statistics, the page is offline, every section is there.

The statistics are recomputed here independently (pandas over the parquet files), not through interp.stats.
"""

from __future__ import annotations

import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from interp.errors import InterpError
from interp.report import related_features, run_report
from interp.runwriter import RunBatch, write_run
from interp.schema import FEATURES, TASK_CONCEPTS

Z95 = 1.959963984540054  # scipy.stats.norm.ppf(0.975)
EMOTIONS = TASK_CONCEPTS["emotion"]
EMOTION_PLANTED = {"happy": "t", "sad": "a", "angry": "ta", "fear": "v", "disgust": "av", "surprise": "tav"}


# ------------------------------------------------------------------------------------------------------ helpers


class ReportParser(HTMLParser):
    """Collects every element's attributes, the global table cells (with their text and bold flag) and ids."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.cells: list[dict[str, object]] = []
        self.ids: set[str] = set()
        self._cell: dict[str, object] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.elements.append((tag, values))
        if "id" in values:
            self.ids.add(values["id"])
        if tag == "td" and "data-quantity" in values:
            self._cell = {**values, "strong": False, "text": ""}
        elif tag == "strong" and self._cell is not None:
            self._cell["strong"] = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.cells.append(self._cell)
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell["text"] = str(self._cell["text"]) + data

    def with_attr(self, name: str, tag: str | None = None) -> list[dict[str, str]]:
        return [a for t, a in self.elements if name in a and (tag is None or t == tag)]


def parse(path: Path) -> ReportParser:
    parser = ReportParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def independent_cells(run: Path) -> dict[tuple[str, str, str], dict[str, float]]:
    """(quantity, feature, concept) -> mean, std, n, low, high, bold computed with pandas (the paper's rule)."""
    routing = pd.read_parquet(run / "routing.parquet")
    routing["feature"] = routing["feature"].astype(str)
    routing["concept"] = routing["concept"].astype(str)
    samples = pd.read_parquet(run / "samples.parquet")
    n_concepts = routing["concept"].nunique()
    baseline = 1.0 / n_concepts
    out: dict[tuple[str, str, str], dict[str, float]] = {}
    frames = []
    for quantity in ("r", "pr"):
        routing[quantity] = routing[quantity].astype(np.float64)
        grouped = routing.groupby(["feature", "concept"])[quantity].agg(["mean", "std", "count"]).reset_index()
        grouped["quantity"] = quantity
        frames.append(grouped)
    p = pd.DataFrame(
        [{"feature": f, "concept": "all", "mean": values.mean(), "std": values.std(ddof=1), "count": values.count(),
          "quantity": "p"} for f in FEATURES for values in [samples[f"p_{f}"].astype(np.float64)]]
    )
    frames.append(p)
    cells = pd.concat(frames, ignore_index=True)
    cells["low"] = cells["mean"] - Z95 * cells["std"] / np.sqrt(cells["count"])
    cells["high"] = cells["mean"] + Z95 * cells["std"] / np.sqrt(cells["count"])
    cells["bold"] = False
    for (_, _), column in cells.groupby(["quantity", "concept"]):
        top = column["mean"].idxmax()
        # p̄ is an activation: no 1/J verdict, never bold (issue 12, §4)
        cells.loc[top, "bold"] = bool(cells.loc[top, "low"] > baseline) and column["quantity"].iloc[0] != "p"
    for row in cells.itertuples(index=False):
        out[(row.quantity, row.feature, row.concept)] = {
            "mean": row.mean, "std": row.std, "n": row.count, "low": row.low, "high": row.high, "bold": row.bold,
        }
    return out


def independent_sentiment_metrics(run: Path) -> dict[str, float]:
    samples = pd.read_parquet(run / "samples.parquet")
    concepts = TASK_CONCEPTS["sentiment"]
    logits = samples[[f"logit_{c}" for c in concepts]].to_numpy(np.float64)
    score = samples["score"].to_numpy(np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    expected = probs @ np.arange(-3, 4)
    nonzero = score != 0
    return {
        "acc7": float(np.mean(logits.argmax(1) == np.clip(np.round(score), -3, 3) + 3)),
        "acc2": float(np.mean((expected[nonzero] > 0) == (score[nonzero] > 0))),
        "mae": float(np.mean(np.abs(expected - score))),
        "corr": float(np.corrcoef(expected, score)[0, 1]),
    }


def close(a: float, b: float, tol: float = 1e-9) -> bool:
    if math.isnan(a) and math.isnan(b):
        return True
    return abs(a - b) <= tol * max(1.0, abs(a), abs(b))


def make_emotion_run(path: Path, n: int = 80, seed: int = 1, split: str = "test") -> Path:
    """A small emotion run written directly (no model): the planted feature of each emotion is routed to it."""
    rng = np.random.default_rng(seed)
    n_features, n_concepts = len(FEATURES), len(EMOTIONS)
    scores = rng.normal(0.0, 0.3, size=(n, n_features, n_concepts))
    for concept, feature in EMOTION_PLANTED.items():
        scores[:, FEATURES.index(feature), EMOTIONS.index(concept)] += 2.0
    r = np.exp(scores) / np.exp(scores).sum(axis=2, keepdims=True)
    p = rng.uniform(0.3, 0.9, size=(n, n_features))
    contributions = (p[:, :, None] * r * rng.normal(0.0, 1.0, size=r.shape)).astype(np.float32)
    batch = RunBatch(
        sample_ids=[f"emo{i:03d}" for i in range(n)],
        split=split,
        rows=np.arange(n, dtype=np.int64),
        targets=(rng.uniform(size=(n, n_concepts)) > 0.6).astype(np.float32),
        logits=contributions.sum(axis=1),
        p=p.astype(np.float32),
        r=r.astype(np.float32),
        contributions=contributions,
        transcripts=[f"utterance {i} <b>not markup</b>" for i in range(n)],
    )
    meta = {
        "variant": "routing",
        "split": split,
        "planted": EMOTION_PLANTED,
        "checkpoint": "models/emotion.pt",
        "checkpoint_sha256": "ab" * 32,
        "data": "data/emotion.pkl",
        "data_sha256": "cd" * 32,
        "model_config": {"d_model": 16, "n_layers": 1, "n_heads": 2, "d_feature": 64, "d_concept": 64,
                         "concept_dropout": 0.5, "input_dims": [16, 12, 10]},
        "train": {"lr": 1e-5, "epochs": 3, "batch_size": 32, "best_epoch": 2, "valid_loss": 0.6,
                  "valid_metrics": {"acc_mean": 0.6, "f1_mean": 0.55}},
    }
    return write_run(path, task="emotion", concepts=EMOTIONS, batches=[batch], meta=meta)


# ----------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def report(extracted_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "synth-test"
    return run_report([extracted_run], out=out)


@pytest.fixture(scope="module")
def parsed(report: Path) -> ReportParser:
    return parse(report)


# -------------------------------------------------------------------------------------------------------- tests


def test_report_is_written_with_every_section(report: Path, parsed: ReportParser) -> None:
    assert report.name == "index.html" and report.is_file()
    for section in ("model-card", "performance", "planted", "global", "gallery", "files"):
        assert section in parsed.ids, f"section {section} missing"
    text = report.read_text(encoding="utf-8")
    howtos = [a for t, a in parsed.elements if t == "p" and a.get("class") == "howto"]
    assert len(howtos) == text.count('<p class="howto">') >= 6  # model, performance, planted, global, gallery, files
    # The global section (a macro of global.html) says how to read it right under its heading.
    assert re.search(r'<section id="global"[^>]*>\s*<h2>Global interpretation</h2>\s*<p class="howto">Each cell', text)
    assert "@media print" in text


def test_global_numbers_equal_independent_statistics(extracted_run: Path, parsed: ReportParser) -> None:
    expected = independent_cells(extracted_run)
    cells = [c for c in parsed.cells if c.get("data-run") == extracted_run.name]
    assert len(cells) == len(expected) == 2 * 7 * 7 + 7
    for cell in cells:
        key = (str(cell["data-quantity"]), str(cell["data-feature"]), str(cell["data-concept"]))
        want = expected[key]
        assert close(float(cell["data-mean"]), want["mean"]), key
        assert close(float(cell["data-std"]), want["std"], 1e-7), key
        assert int(cell["data-n"]) == want["n"], key
        assert close(float(cell["data-low"]), want["low"], 1e-7), key
        assert close(float(cell["data-high"]), want["high"], 1e-7), key
        assert str(cell["text"]).strip().rstrip("+−").startswith(f"({want['low']:.3f}, {want['high']:.3f})"), key
        assert cell["strong"] == want["bold"], key


def test_performance_equals_metrics_of_the_stored_logits(extracted_run: Path, parsed: ReportParser) -> None:
    import json

    want = independent_sentiment_metrics(extracted_run)
    shown = {a["data-metric"]: float(a["data-value"]) for a in parsed.with_attr("data-metric", "td")
             if a.get("data-source") == "run"}
    for key, value in want.items():
        assert close(shown[key], value, 1e-9), key
    valid = json.loads((extracted_run / "meta.json").read_text())["train"]["valid_metrics"]
    shown_valid = {a["data-metric"]: float(a["data-value"]) for a in parsed.with_attr("data-metric", "td")
                   if a.get("data-source") == "valid"}
    for key in ("acc7", "acc2", "f1", "mae", "corr"):
        assert close(shown_valid[key], valid[key]), key


def test_planted_vs_recovered_matches_the_bold_cells(extracted_run: Path, parsed: ReportParser) -> None:
    import json

    planted = json.loads((extracted_run / "meta.json").read_text())["planted"]
    cells = independent_cells(extracted_run)
    rows = parsed.with_attr("data-planted", "tr")
    assert [r["data-concept"] for r in rows] == list(TASK_CONCEPTS["sentiment"])
    agree = 0
    for row in rows:
        concept = row["data-concept"]
        bold = [f for f in FEATURES if cells[("r", f, concept)]["bold"]]
        top_pr = max(FEATURES, key=lambda f: cells[("pr", f, concept)]["mean"])
        assert row["data-planted"] == planted[concept]
        assert row["data-recovered"] == ",".join(bold)
        assert row["data-top-pr"] == top_pr
        assert row["data-agree"] == ("yes" if planted[concept] in bold else "no")
        if row["data-related"]:
            assert row["data-agree"] == "no" and related_features(row["data-related"], planted[concept])
        agree += planted[concept] in bold
    verdict = parsed.with_attr("data-agreement", "p")
    assert verdict and int(verdict[0]["data-agreement"]) == agree and int(verdict[0]["data-concepts"]) == 7


def test_no_external_resources(report: Path, parsed: ReportParser) -> None:
    pages = [report] + sorted((report.parent / "local").rglob("*.html"))
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert "http://" not in text and "https://" not in text, page
        assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*//""", text), page  # protocol-relative
        assert "<script" not in text.lower(), page
        assert "<link" not in text.lower(), page
        assert "@import" not in text, page
    for tag, attrs in parsed.elements:
        if tag == "img":
            assert attrs["src"].startswith("data:image/png;base64,")
        if "href" in attrs and not attrs["href"].startswith("#"):
            target = report.parent / attrs["href"]
            assert target.is_file(), attrs["href"]
            assert target.resolve().is_relative_to(report.parent.resolve())


def test_gallery_has_the_top_sample_of_each_concept_and_random_ones(extracted_run: Path, parsed: ReportParser) -> None:
    from interp.local import random_samples

    routing = pd.read_parquet(extracted_run / "routing.parquet")
    routing["feature"] = routing["feature"].astype(str)
    routing["concept"] = routing["concept"].astype(str)
    cards = parsed.with_attr("data-sample-id", "figure")
    top = {c["data-concept"]: c["data-sample-id"] for c in cards if c["data-kind"] == "top"}
    assert sorted(top) == sorted(TASK_CONCEPTS["sentiment"])
    for concept, sample_id in top.items():
        column = routing[routing["concept"] == concept]
        feature = column.groupby("feature")["pr"].mean().idxmax()
        cell = column[column["feature"] == feature]
        assert cell.loc[cell["pr"].idxmax(), "sample_id"] == sample_id, concept
    randoms = [c["data-sample-id"] for c in cards if c["data-kind"] == "random"]
    assert 1 <= len(randoms) <= 3 and set(randoms) <= set(random_samples(extracted_run, 3, 0))
    links = [a["href"] for t, a in parsed.elements if t == "a" and a.get("href", "").startswith("local/")]
    assert len(set(links)) == len(cards)


def test_model_card_records_the_run(extracted_run: Path, report: Path) -> None:
    import json

    meta = json.loads((extracted_run / "meta.json").read_text())
    text = report.read_text(encoding="utf-8")
    assert meta["checkpoint_sha256"][:12] in text and meta["data_sha256"][:12] in text
    assert "paper default: 0.0001" in text  # the fixture trains with lr 1e-3
    assert f"{meta['split']} / {meta['n']} samples" in text


def test_related_features_nest() -> None:
    assert related_features("t", "ta") and related_features("tav", "av") and related_features("ta", "t")
    assert not related_features("t", "t") and not related_features("t", "av") and not related_features("ta", "av")


def test_default_run_and_folder(extracted_run: Path, tmp_path: Path) -> None:
    path = run_report(None, runs_root=extracted_run.parent, reports_root=tmp_path, gallery_random=0)
    assert path == tmp_path / extracted_run.name / "index.html"
    assert (tmp_path / extracted_run.name / "global.html").is_file()
    cards = parse(path).with_attr("data-kind", "figure")
    assert cards and {c["data-kind"] for c in cards} == {"top"}  # gallery_random=0: no random card


def test_build_report_is_data_and_write_report_renders_it(extracted_run: Path, tmp_path: Path) -> None:
    """build_report reads the run and writes nothing; write_report renders exactly what the model holds."""
    from interp.local import random_samples
    from interp.report import build_report, write_report

    before = sorted(p.relative_to(extracted_run) for p in extracted_run.rglob("*"))
    model = build_report([extracted_run], gallery_random=2, seed=4)
    assert sorted(p.relative_to(extracted_run) for p in extracted_run.rglob("*")) == before
    assert [s.name for s in model.runs] == [extracted_run.name]
    choices = model.runs[0].gallery
    assert [c.explanation.sample_id for c in choices if c.kind == "random"] == random_samples(extracted_run, 2, 4)
    planted = model.runs[0].planted
    assert model.glance[0]["agreement"] == sum(row.planted in row.recovered for row in planted)
    out = tmp_path / "written"
    parsed = parse(write_report(model, out))
    # The table of contents links, in order, the sections the page holds.
    toc = [a["href"][1:] for t, a in parsed.elements if t == "a" and a.get("href", "").startswith("#")]
    sections = [a["id"] for t, a in parsed.elements if t == "section" and a.get("id")]
    assert toc == [anchor for anchor, _ in model.toc] == sections
    shown = [(c["data-sample-id"], c["data-kind"]) for c in parsed.with_attr("data-sample-id", "figure")]
    assert shown == [(c.explanation.sample_id, c.kind) for c in choices]
    for choice in choices:
        assert (out / choice.folder).is_dir()


def test_two_runs_sentiment_and_emotion_give_tables_3_to_7(extracted_run: Path, tmp_path: Path) -> None:
    emotion = make_emotion_run(tmp_path / "runs" / "emo-test")
    path = run_report([extracted_run, emotion], reports_root=tmp_path / "reports", gallery_random=0)
    assert path == tmp_path / "reports" / extracted_run.name / "index.html"
    parsed = parse(path)
    for number in range(3, 8):
        assert f"global-table{number}" in parsed.ids
    # Numbers of the emotion run equal the independent statistics, and its planted links are all recovered.
    expected = independent_cells(emotion)
    cells = [c for c in parsed.cells if c.get("data-run") == "emo-test"]
    assert len(cells) == len(expected)
    for cell in cells:
        want = expected[(str(cell["data-quantity"]), str(cell["data-feature"]), str(cell["data-concept"]))]
        assert close(float(cell["data-mean"]), want["mean"])
        assert cell["strong"] == want["bold"]
    rows = [r for r in parsed.with_attr("data-planted", "tr") if r["data-run"] == "emo-test"]
    assert [r["data-agree"] for r in rows] == ["yes"] * 6
    # Multi-label performance rows, per concept; local pages in a folder per run; markup in transcripts escaped.
    metrics = {a["data-metric"] for a in parsed.with_attr("data-metric", "td") if a["data-run"] == "emo-test"}
    assert {f"acc_{c}" for c in EMOTIONS} | {"acc_mean", "f1_mean"} <= metrics
    assert (path.parent / "local" / "emo-test").is_dir() and (path.parent / "local" / extracted_run.name).is_dir()
    text = path.read_text(encoding="utf-8")
    assert "<b>not markup</b>" not in text


def test_run_of_the_valid_split_keeps_its_own_metric_cells(tmp_path: Path) -> None:
    """A run extracted from the valid split: its cells are the run's, not model selection's (they were mislabelled
    as "valid" when the template tagged cells by the column title's first word)."""
    run = make_emotion_run(tmp_path / "runs" / "emo-valid", split="valid")
    parsed = parse(run_report([run], out=tmp_path / "report", gallery_random=0))
    cells = parsed.with_attr("data-metric", "td")
    shown_run = {a["data-metric"]: float(a["data-value"]) for a in cells if a["data-source"] == "run"}
    shown_valid = {a["data-metric"]: float(a["data-value"]) for a in cells if a["data-source"] == "valid"}
    samples = pd.read_parquet(run / "samples.parquet")
    accuracies = [float(np.mean((samples[f"logit_{c}"] > 0) == samples[f"label_{c}"].astype(bool))) for c in EMOTIONS]
    for concept, accuracy in zip(EMOTIONS, accuracies):
        assert close(shown_run[f"acc_{concept}"], accuracy), concept
    assert close(shown_run["acc_mean"], float(np.mean(accuracies)))
    assert {k: v for k, v in shown_valid.items() if not math.isnan(v)} == {"acc_mean": 0.6, "f1_mean": 0.55}


def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from interp.cli import main

    with pytest.raises(InterpError):
        run_report([tmp_path / "nope"])
    assert main(["report", "--run", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("interp: error:") and err.count("\n") == 1


def test_cli_report(
    extracted_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import interp.report
    from interp.cli import main

    monkeypatch.setattr(interp.report, "gallery_items", lambda *args: [])  # the gallery's pages are tested above

    assert main(["report", "--run", str(extracted_run), "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "r" / "index.html") in out
    assert (tmp_path / "r" / "index.html").is_file()
