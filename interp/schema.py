"""Names shared by every stage: features, tasks, concepts, and the run directory's schema.

See DESIGN.md ("Run directory"). Nothing here does any work at import time.
"""

from __future__ import annotations

#: The seven routed features, in the paper's fixed order (unimodal, bimodal, trimodal).
FEATURES: tuple[str, ...] = ("t", "a", "v", "ta", "av", "vt", "tav")

#: Long names of the features, shown next to the short ones.
FEATURE_NAMES: dict[str, str] = {
    "t": "text",
    "a": "audio",
    "v": "vision",
    "ta": "text+audio",
    "av": "audio+vision",
    "vt": "vision+text",
    "tav": "text+audio+vision",
}

#: The three input modalities, in the order the model takes them.
MODALITIES: tuple[str, ...] = ("text", "audio", "vision")

#: Concept names per task, in logit order.
TASK_CONCEPTS: dict[str, tuple[str, ...]] = {
    "sentiment": ("-3", "-2", "-1", "0", "1", "2", "3"),
    "emotion": ("happy", "sad", "angry", "fear", "disgust", "surprise"),
    "iemocap": ("neutral", "happy", "sad", "angry"),
}

#: Tasks whose concepts are exclusive (softmax, cross-entropy); the others are multi-label (sigmoid, BCE).
SINGLE_LABEL_TASKS: frozenset[str] = frozenset({"sentiment"})

#: The paper's learning rates per task (1e-4, except 1e-5 for emotion): the default of ``interp train --lr``.
DEFAULT_LR: dict[str, float] = {"sentiment": 1e-4, "emotion": 1e-5, "iemocap": 1e-4}

VARIANTS: dict[str, int] = {"routing": 2, "routing1": 1, "gam": 0}
"""Model variants and their routing iterations (0 = no routing: r fixed at 1/J)."""

# Run directory layout (output of `interp extract`).
SAMPLES_FILE = "samples.parquet"
ROUTING_FILE = "routing.parquet"
META_FILE = "meta.json"
#: Shards written by ranks of a distributed extraction: routing-rank<k>.parquet, samples-rank<k>.parquet.
ROUTING_SHARD_GLOB = "routing-rank*.parquet"
SAMPLES_SHARD_GLOB = "samples-rank*.parquet"

#: Columns of routing.parquet: one row per (sample, feature, concept).
ROUTING_COLUMNS: tuple[str, ...] = ("sample_id", "feature", "concept", "p", "r", "pr", "contribution")


def concept_names(task: str) -> tuple[str, ...]:
    """Concept names of a task, in logit order; raises KeyError-free InterpError on an unknown task."""
    from interp.errors import InterpError

    try:
        return TASK_CONCEPTS[task]
    except KeyError:
        raise InterpError(f"unknown task {task!r}; choose one of {', '.join(TASK_CONCEPTS)}") from None


def p_column(feature: str) -> str:
    """samples.parquet column holding p of a feature, e.g. ``p_ta``."""
    return f"p_{feature}"


def logit_column(concept: str) -> str:
    """samples.parquet column holding the logit of a concept, e.g. ``logit_-3``."""
    return f"logit_{concept}"


def prob_column(concept: str) -> str:
    """samples.parquet column holding the probability of a concept, e.g. ``prob_happy``."""
    return f"prob_{concept}"


def label_column(concept: str) -> str:
    """samples.parquet column holding the 0/1 target of a concept (multi-label tasks), e.g. ``label_happy``."""
    return f"label_{concept}"
