"""`interp eval`: the paper's Table 1/2 metrics of a checkpoint on a split (test by default)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interp.data import get_split, load_dataset
from interp.outputs import check_not_input, check_replaceable_file
from interp.metrics import task_metrics
from interp.runs import atomic_write_text
from interp.checkpoint import check_compatible, load_checkpoint, masks_padding, resolve_data_path
from interp.devices import resolve_device
from interp.inference import predict_logits
from interp.targets import targets

#: Display names of the metrics, in table order.
METRIC_LABELS = {
    "acc7": "Acc7",
    "acc2": "Acc2 non-zero (neg vs pos, y != 0)",
    "f1": "F1 weighted non-zero (neg vs pos, y != 0)",
    "acc2_has0": "Acc2 has-0 (neg vs non-neg, all; MMSA Has0)",
    "f1_has0": "F1 weighted has-0 (neg vs non-neg, all)",
    "mae": "MAE (expected score)",
    "corr": "Pearson r (expected score)",
    "acc2_majority": "Acc2 non-zero of the majority class",
    "acc2_has0_majority": "Acc2 has-0 of the majority class",
    "acc_mean": "mean accuracy",
    "f1_mean": "mean weighted F1",
}


@dataclass
class EvalResult:
    """Metrics of a checkpoint on one split, and where they were written."""

    task: str
    split: str
    metrics: dict[str, float]
    path: Path
    checkpoint: Path
    data: Path

    def table(self) -> str:
        """The metrics as an aligned two-column text table."""
        rows = [(METRIC_LABELS.get(key, key), value) for key, value in self.metrics.items()]
        width = max(len(name) for name, _ in rows)
        lines = [f"{self.task} metrics on {self.split} ({self.data})", "-" * (width + 12)]
        for name, value in rows:
            text = f"{value:d}" if isinstance(value, int) else f"{value:.4f}"
            lines.append(f"{name:<{width}}  {text:>9}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "split": self.split,
            "metrics": self.metrics,
            "checkpoint": str(self.checkpoint),
            "data": str(self.data),
        }


def evaluate(
    ckpt: Path | str,
    data: Path | str | None = None,
    split: str = "test",
    device: str = "auto",
    batch_size: int = 256,
    out: Path | str | None = None,
    format: str | None = None,
) -> EvalResult:
    """Metrics of ``ckpt`` on ``split`` of ``data`` (default: the data recorded in the checkpoint).

    Writes them as JSON to ``out`` (default: ``<checkpoint>.eval-<split>.json`` beside the checkpoint).
    ``format``: data layout (``mult`` / ``mmsa``; None detects it).
    """
    torch_device = resolve_device(device)
    loaded = load_checkpoint(ckpt, torch_device)
    data_path = resolve_data_path(loaded.checkpoint, data)
    path = Path(out) if out is not None else Path(ckpt).with_name(f"{Path(ckpt).stem}.eval-{split}.json")
    check_not_input(path, {"checkpoint": ckpt, "data file": data_path})
    check_replaceable_file(path, _is_metrics, "a metrics JSON written by `interp eval`")
    dataset = load_dataset(data_path, format=format)
    chosen = get_split(dataset, split)
    check_compatible(loaded, dataset, chosen)
    logits = predict_logits(loaded.model, chosen, torch_device, batch_size, masks_padding(loaded.checkpoint))
    scores = chosen.labels.reshape(-1) if loaded.task == "sentiment" else None
    metrics = task_metrics(loaded.task, logits, targets(chosen.labels, loaded.task), loaded.concepts, scores=scores)
    result = EvalResult(task=loaded.task, split=split, metrics=metrics, path=path, checkpoint=Path(ckpt), data=data_path)
    atomic_write_text(path, json.dumps(result.to_dict(), indent=2))
    return result


def _is_metrics(value: Any) -> bool:
    """True for the JSON of :meth:`EvalResult.to_dict` (what `interp eval` may replace)."""
    return isinstance(value, dict) and {"task", "split", "metrics"} <= set(value)
