"""Running a model over a split: logits in eval mode, batch by batch, padding masked as the model was trained.

Used by :mod:`interp.train` (validation), :mod:`interp.evaluate` and :mod:`interp.faithfulness`.
"""

from __future__ import annotations

import numpy as np
import torch

from interp.data import Split
from interp.model import RoutingModel


def split_lengths(split: Split) -> torch.Tensor | None:
    """(N, 3) int64 real steps per modality of a padded split, or None (full length); see :mod:`interp.padding`."""
    return None if split.lengths is None else torch.from_numpy(np.ascontiguousarray(split.lengths, dtype=np.int64))


@torch.inference_mode()
def predict_logits(
    model: RoutingModel, split: Split, device: torch.device, batch_size: int = 256, mask_padding: bool = True
) -> np.ndarray:
    """Logits (N, J) of a split in eval mode (padding masked when ``mask_padding`` and the split is padded)."""
    model.eval()
    outputs = []
    lengths = split_lengths(split) if mask_padding else None
    for start in range(0, split.n, batch_size):
        stop = min(start + batch_size, split.n)
        text = torch.as_tensor(split.text[start:stop], dtype=torch.float32, device=device)
        audio = torch.as_tensor(split.audio[start:stop], dtype=torch.float32, device=device)
        vision = torch.as_tensor(split.vision[start:stop], dtype=torch.float32, device=device)
        batch_lengths = lengths[start:stop] if lengths is not None else None  # on the CPU: no wait for the device
        outputs.append(model(text, audio, vision, batch_lengths, split.padding).logits.float().cpu().numpy())
    return np.concatenate(outputs, axis=0)
