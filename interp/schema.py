"""Names shared by every stage: features and their modalities, tasks, concepts, splits, the option vocabularies
of the library and the CLI, and the run directory's schema.

See DESIGN.md ("Run directory"). Nothing here does any work at import time, and nothing here imports torch,
numpy or pandas, so the CLI can build its parser (choices and defaults) from it cheaply. In every vocabulary
tuple of options the first entry is the default.
"""

from __future__ import annotations

from interp.errors import InterpError

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

#: The modalities each feature combines, as indices into :data:`MODALITIES` (``vt`` = vision queries text).
FEATURE_MODALITIES: dict[str, tuple[int, ...]] = {
    "t": (0,), "a": (1,), "v": (2,), "ta": (0, 1), "av": (1, 2), "vt": (2, 0), "tav": (0, 1, 2),
}

#: Split names in their canonical order.
SPLITS: tuple[str, ...] = ("train", "valid", "test")

#: Concept names per task, in logit order.
TASK_CONCEPTS: dict[str, tuple[str, ...]] = {
    "sentiment": ("-3", "-2", "-1", "0", "1", "2", "3"),
    "emotion": ("happy", "sad", "angry", "fear", "disgust", "surprise"),
    "iemocap": ("neutral", "happy", "sad", "angry"),
}

#: The tasks, default first.
TASKS: tuple[str, ...] = tuple(TASK_CONCEPTS)

#: Tasks whose concepts are exclusive (softmax, cross-entropy); the others are multi-label (sigmoid, BCE).
SINGLE_LABEL_TASKS: frozenset[str] = frozenset({"sentiment"})

#: The paper's learning rates per task (1e-4, except 1e-5 for emotion): the default of ``interp train --lr``.
DEFAULT_LR: dict[str, float] = {"sentiment": 1e-4, "emotion": 1e-5, "iemocap": 1e-4}

VARIANTS: dict[str, int] = {"routing": 2, "routing1": 1, "gam": 0}

SEED_ENGINES: tuple[str, ...] = ("auto", "sequential", "vectorised")
"""How ``interp train --seeds`` trains its seeds (:mod:`interp.seeds`); ``auto`` picks one of the others."""
"""Model variants and their routing iterations (0 = no routing: r fixed at 1/J); the first is the default."""

#: Data layouts understood by :func:`interp.data.load_dataset` (``--format``; None detects it).
LAYOUTS: tuple[str, ...] = ("mult", "mmsa")
#: Mixed precision of ``interp extract --amp`` (None: fp32).
AMP: tuple[str, ...] = ("bf16",)

# Options of the global statistics (:class:`interp.stats.StatsOptions`, ``interp global``); first = default.
#: Samples in each concept's column: all (the paper), or those whose true / predicted label it is.
GROUPS: tuple[str, ...] = ("all", "label", "pred")
INTERVALS: tuple[str, ...] = ("clt", "t", "bootstrap")
CORRECTIONS: tuple[str, ...] = ("none", "holm", "bonferroni")
#: none: intervals over samples; video: cluster-robust over the samples' videos.
CLUSTERS: tuple[str, ...] = ("none", "video")
BASELINES: tuple[str, ...] = ("uniform",)

#: Values that ``interp local --top`` ranks samples by.
RANK_BY: tuple[str, ...] = ("pr", "contribution")

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


def related_features(first: str, second: str) -> bool:
    """True when two different features nest (one's modalities contain the other's), e.g. t and ta, ta and tav."""
    a, b = FEATURE_MODALITIES.get(first), FEATURE_MODALITIES.get(second)
    return first != second and a is not None and b is not None and (set(a) <= set(b) or set(b) <= set(a))
