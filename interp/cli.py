"""The `interp` command line: a thin layer over the library.

Every command parses its arguments and calls one library function with plain values; a notebook can call
the same function. Problems with the user's input (:class:`interp.errors.InterpError`) are printed as one
line on stderr with exit code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Callable, Sequence

from interp import cli_commands
from interp.errors import DataWarning, InterpError
from interp.guard import bootstrap_samples_arg, lr_arg, one_line, printable, seed_arg, workers_arg
from interp.schema import (
    AMP, BASELINES, CLUSTERS, CORRECTIONS, DEFAULT_LR, FEATURES, GROUPS, INTERVALS, LAYOUTS, RANK_BY, SEED_ENGINES, SPLITS,
    TASKS, VARIANTS,
)

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line and exit 2 (argparse prints usage + error by default)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"interp: error: {one_line(message)} (see `{self.prog} --help`)\n")


def _seeds(text: str) -> tuple[int, ...]:
    """``--seeds`` text as seeds (:func:`interp.seeds.parse_seeds`; imported here, when the option is given, because
    interp.seeds pulls in torch and ``interp --help`` must stay fast)."""
    from interp.seeds import parse_seeds

    try:
        return parse_seeds(text)
    except InterpError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix(f"--seeds {text!r}: ")) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of at least 0, got {value}")
    return value


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a level strictly between 0 and 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


#: --help text of --threads (train, eval, extract, faithfulness, demo).
THREADS_HELP = (
    "CPU threads torch uses inside each operation (default: all the cores torch sees). On a machine shared with "
    "other jobs use 1, or the cores divided by the jobs running: busy threads waiting on each other can make "
    "training many times slower"
)
#: --help text of --format (train, eval, extract, data inspect).
FORMAT_HELP = "data layout: mult (MulT pickle) or mmsa (MMSA aligned/unaligned pickle); default: detected from the keys"


# ----------------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="interp",
        description="Interpret Multimodal Routing models: train, extract routing coefficients, report statistics.",
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    # data synth
    data = commands.add_parser(
        "data", help="data sets: `interp data synth` writes planted-truth data, `interp data inspect` describes a file"
    )
    data_commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", parser_class=_Parser)
    data_commands.required = True
    synth = data_commands.add_parser(
        "synth",
        help="write a synthetic data set with planted feature→concept links",
        description="Write a synthetic data set in the MulT pickle layout where each concept is driven by a "
        "chosen feature (a modality or an interaction of modalities); the planted map is saved beside it as JSON.",
    )
    synth.add_argument("--out", type=Path, default=Path("data/synth.pkl"), help="output pickle (default: %(default)s)")
    synth.add_argument("--task", default=TASKS[0], choices=TASKS)
    synth.add_argument("--n-train", type=_positive_int, default=2000, help="training samples (default: %(default)s)")
    synth.add_argument("--n-valid", type=_positive_int, default=400, help="validation samples (default: %(default)s)")
    synth.add_argument("--n-test", type=_positive_int, default=600, help="test samples (default: %(default)s)")
    synth.add_argument("--seq-len", type=_positive_int, default=8, help="time steps per modality (default: %(default)s)")
    synth.add_argument("--noise", type=float, default=0.5, help="noise scale (default: %(default)s)")
    synth.add_argument("--seed", type=seed_arg, default=0)
    synth.set_defaults(func=cli_commands.cmd_data_synth)
    inspect = data_commands.add_parser(
        "inspect",
        help="what a data file holds and what interp would refuse",
        description="Reads the file as training would (same restricted unpickler and checks) and shows: layout, "
        "splits, N, T and d per modality, padding side and real lengths, non-finite counts, the label distribution "
        "(7 sentiment classes), videos and segments per video, transcripts, planted truth, and every refusal.",
    )
    inspect.add_argument("path", type=Path, help="data pickle (MulT or MMSA layout)")
    inspect.add_argument("--format", default=None, choices=LAYOUTS, help=FORMAT_HELP)
    inspect.add_argument("--json", action="store_true", help="print JSON instead of tables")
    inspect.set_defaults(func=cli_commands.cmd_data_inspect)

    # train
    train = commands.add_parser(
        "train",
        help="train a Multimodal Routing model",
        description="Train with Adam, gradient clipping and early stopping; the model is selected on the "
        "validation split (never on test). The checkpoint holds everything needed to rebuild and interpret it.",
    )
    train.add_argument("--data", type=Path, required=True, help="data pickle (MulT or MMSA layout)")
    train.add_argument("--format", default=None, choices=LAYOUTS, help=FORMAT_HELP)
    train.add_argument("--task", default=TASKS[0], choices=TASKS)
    train.add_argument("--variant", default=next(iter(VARIANTS)), choices=list(VARIANTS),
                       help="routing: two routing updates after the uniform start, as the paper's text describes "
                       "(default); routing1: one update, which is the authors' released configuration "
                       "(--num-routing 1 in their run script) and the paper's Routing*; gam: no routing. Concept "
                       "dropout: the authors apply it to every concept update in training, we only to the final "
                       "concepts (evaluation is the same computation)")
    train.add_argument("--out", type=Path, default=Path("models/model.pt"), help="checkpoint (default: %(default)s)")
    train.add_argument("--epochs", type=_positive_int, default=30)
    train.add_argument("--batch-size", type=_positive_int, default=32)
    train.add_argument("--lr", type=lr_arg, default=None,
                       help="Adam learning rate (default: the paper's, "
                       + ", ".join(f"{task} {lr:g}" for task, lr in DEFAULT_LR.items()) + ")")
    train.add_argument("--patience", type=_positive_int, default=8,
                       help="stop after this many epochs without a better validation score")
    train.add_argument("--seed", type=seed_arg, default=None, help="seed of the one model (default: 0)")
    train.add_argument("--seeds", type=_seeds, default=None, metavar="LIST",
                       help="train one model per seed, e.g. 0-4 or 0,3,7, into <out stem>-seed<k>.pt; prints each "
                       "seed's validation and test metrics")
    train.add_argument("--engine", default=None, choices=SEED_ENGINES,
                       help="with --seeds: how the seeds are trained. sequential: one after the other; vectorised: all "
                       "at once as one vectorised model (same models when no encoder dropout is on); auto (default): "
                       "vectorised where it gives the same models, else sequential")
    train.add_argument("--device", default="auto", help="auto (cuda if present, else cpu), cpu, cuda, cuda:N")
    train.add_argument("--d-model", type=_positive_int, default=32, help="encoder width (paper size: 200)")
    train.add_argument("--n-heads", type=_positive_int, default=4, help="attention heads (paper size: 20)")
    train.add_argument("--n-layers", type=_positive_int, default=2, help="encoder layers (paper size: 7)")
    train.add_argument("--d-feature", type=_positive_int, default=64, help="d_f (paper: 64)")
    train.add_argument("--d-concept", type=_positive_int, default=64, help="d_c (paper: 64)")
    train.add_argument("--dropout", type=float, default=0.5, help="dropout on concepts (paper and authors' run: 0.5)")
    for name, what in (("embed", "on the input embeddings"), ("attn", "on the attention weights"),
                       ("relu", "inside the encoders' feed-forward"), ("res", "on the encoders' residual branches")):
        train.add_argument(f"--{name}-dropout", type=float, default=0.0,
                           help=f"dropout {what} (default %(default)s, the authors' released run; MulT's defaults: "
                                f"attn 0.1, relu 0.1, embed 0.25, res 0.1)")
    train.add_argument("--grad-clip", type=_positive_float, default=1.0)
    train.add_argument("--resume", action="store_true", help="continue from the checkpoint's saved training state")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--threads", type=_positive_int, default=None, help=THREADS_HELP)
    train.set_defaults(func=cli_commands.cmd_train)

    # eval
    evaluate = commands.add_parser(
        "eval",
        help="test metrics (the paper's Tables 1-2)",
        description="Sentiment: Acc7 (argmax class), Acc2 and weighted F1 in both conventions (non-zero: negative "
        "vs positive without the 0 labels; has-0: negative vs non-negative on all, MMSA's Has0_acc_2), MAE and "
        "Pearson r of the expected score. Emotion / IEMOCAP: per-emotion accuracy and weighted F1.",
    )
    evaluate.add_argument("--ckpt", type=Path, default=Path("models/model.pt"))
    evaluate.add_argument("--data", type=Path, default=None, help="data pickle (default: the one recorded in the checkpoint)")
    evaluate.add_argument("--split", default="test", choices=SPLITS)
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--batch-size", type=_positive_int, default=256)
    evaluate.add_argument("--out", type=Path, default=None, help="metrics JSON (default: beside the checkpoint)")
    evaluate.add_argument("--format", default=None, choices=LAYOUTS, help=FORMAT_HELP)
    evaluate.add_argument("--threads", type=_positive_int, default=None, help=THREADS_HELP)
    evaluate.set_defaults(func=cli_commands.cmd_eval)

    # extract
    extract = commands.add_parser(
        "extract",
        help="write every sample's p, r, p·r and contributions to runs/<name>/",
        description="One forward pass per batch in eval mode; writes samples.parquet, routing.parquet and "
        "meta.json atomically.",
    )
    extract.add_argument("--ckpt", nargs="+", action="extend", default=[], metavar="CKPT",
                         help="checkpoint(s), repeatable, or a quoted pattern such as 'models/model-seed*.pt'; "
                         "one run each (default: models/model.pt)")
    extract.add_argument("--data", type=Path, default=None, help="data pickle (default: the one recorded in the checkpoint)")
    extract.add_argument("--split", default=None, help="test, valid, train or all (default: test)")
    extract.add_argument("--out", type=Path, default=None, help="run directory (default: runs/<checkpoint>-<split>); "
                         "with several checkpoints, the folder that receives runs <checkpoint>-<split>")
    extract.add_argument("--batch-size", type=_positive_int, default=256)
    extract.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    extract.add_argument("--force", action="store_true", help="replace an existing run")
    extract.add_argument("--amp", default=None, choices=AMP, help="bf16 autocast of the encoders on CUDA "
                         "(interpretation values are always computed in fp32)")
    extract.add_argument("--num-workers", type=workers_arg, default=0, help="DataLoader workers")
    extract.add_argument("--compile", action="store_true", help="torch.compile the model first")
    extract.add_argument("--quiet", action="store_true", help="no progress bar")
    extract.add_argument("--format", default=None, choices=LAYOUTS, help=FORMAT_HELP)
    extract.add_argument("--threads", type=_positive_int, default=None, help=THREADS_HELP)
    extract.set_defaults(func=cli_commands.cmd_extract)

    # global
    global_ = commands.add_parser(
        "global",
        help="CLT intervals of mean r, p·r and p against the uniform baseline (Tables 3-7)",
        description="For each (feature, concept) cell: mean, std, n and the interval mean ± z·s/√n; a cell is "
        "significant if its interval lies wholly above or below 1/J, bold if it also has the largest mean in its column.",
    )
    global_.add_argument("--run", type=Path, action="append", default=[],
                         help="run directory (repeatable; default: the most recent run)")
    global_.add_argument("--baseline", default=BASELINES[0], choices=BASELINES, help="1/J (the paper's baseline)")
    global_.add_argument("--level", type=_probability, default=0.95)
    global_.add_argument("--group", default=GROUPS[0], choices=GROUPS,
                         help="samples in each concept's column: all (paper), or those whose true/predicted label it is")
    global_.add_argument("--interval", default=INTERVALS[0], choices=INTERVALS)
    global_.add_argument("--correction", default=CORRECTIONS[0], choices=CORRECTIONS)
    global_.add_argument("--bootstrap-samples", type=bootstrap_samples_arg, default=2000)
    global_.add_argument("--seed", type=seed_arg, default=0, help="seed of the bootstrap")
    global_.add_argument("--split", default=None, help="only samples of this split (default: all in the run)")
    global_.add_argument("--out", type=Path, default=None, help="output folder (default: reports/<run>/)")
    global_.add_argument("--cluster", default=CLUSTERS[0], choices=CLUSTERS,
                         help="none: intervals over samples (the paper); video: cluster-robust over the samples' videos")
    global_.add_argument("--ensemble", action="store_true",
                         help="require the runs to pool into ensembles of at least 2 seeds (same task, data and split); "
                         "runs of different seeds are pooled anyway when they match")
    global_.set_defaults(func=cli_commands.cmd_global)

    # local
    local = commands.add_parser(
        "local",
        help="per-sample heatmap of p·r and contributions (Fig. 3)",
        description="Writes reports/<run>/local/<ID>.html with PNG and SVG figures.",
    )
    local.add_argument("--run", type=Path, default=None, help="run directory (default: the most recent run)")
    local.add_argument("--sample-id", action="append", default=[], help="sample id (repeatable)")
    local.add_argument("--concept", default="true", help="true (label, as in the paper), pred, or a concept name")
    local.add_argument("--top", type=_positive_int, default=None, help="the K samples with the largest value of a cell")
    local.add_argument("--feature", default=None, help=f"feature of the cell for --top ({', '.join(FEATURES)})")
    local.add_argument("--by", default=RANK_BY[0], choices=RANK_BY, help="value ranked by --top")
    local.add_argument("--random", type=_positive_int, default=None, help="K samples drawn at random")
    local.add_argument("--seed", type=seed_arg, default=0)
    local.add_argument("--out", type=Path, default=None, help="output folder (default: reports/<run>/local/)")
    local.set_defaults(func=cli_commands.cmd_local)

    # report
    report = commands.add_parser(
        "report",
        help="one self-contained HTML report per run set",
        description="Model card, performance, global tables and heatmaps, a gallery of local explanations and, "
        "on synthetic data, planted vs recovered.",
    )
    report.add_argument("--run", type=Path, action="append", default=[],
                        help="run directory (repeatable; default: the most recent run)")
    report.add_argument("--out", type=Path, default=None, help="output folder (default: reports/<run>/)")
    report.set_defaults(func=cli_commands.cmd_report)

    # faithfulness
    faith = commands.add_parser(
        "faithfulness",
        help="does the routing explain the model? deletion curves, uniform r, Shapley, randomisation",
        description="For each sample's predicted concept: deletion curves and AOPC by routing importance vs "
        "|contribution|, reverse and random orders; the trained weights with r fixed at 1/J; exact Shapley values of "
        "the 7 features against the contributions; a cascading model-randomisation check. Writes faithfulness.json "
        "and tidy tables into the run folder (--run) or --out.",
    )
    faith.add_argument("--ckpt", type=Path, default=Path("models/model.pt"))
    faith.add_argument("--data", type=Path, default=None, help="data pickle (default: the run's, else the checkpoint's)")
    faith.add_argument("--split", default=None, help="train, valid, test or all (default: the run's, else test)")
    faith.add_argument("--run", type=Path, default=None,
                       help="a run of this checkpoint: outputs go into it (so `interp report` shows them)")
    faith.add_argument("--out", type=Path, default=None,
                       help="output folder (default: the run folder, else reports/<checkpoint>-<split>-faithfulness/)")
    faith.add_argument("--repeats", type=_positive_int, default=20, help="random deletion orders per sample")
    faith.add_argument("--seed", type=seed_arg, default=0, help="seed of random orders, bootstrap and re-initialisation")
    faith.add_argument("--level", type=_probability, default=0.95)
    faith.add_argument("--bootstrap-samples", type=bootstrap_samples_arg, default=1000)
    faith.add_argument("--batch-size", type=_positive_int, default=64)
    faith.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    faith.add_argument("--threads", type=_positive_int, default=None, help=THREADS_HELP)
    faith.add_argument("--quiet", action="store_true", help="no progress bar")
    faith.set_defaults(func=cli_commands.cmd_faithfulness)

    # demo
    demo = commands.add_parser(
        "demo",
        help="everything end to end on synthetic planted-truth data (minutes on a CPU)",
        description="Generates synthetic data, trains, evaluates, extracts, runs global and local analyses and "
        "writes the report.",
    )
    demo.add_argument("--out", type=Path, default=Path("demo"), help="working folder (default: %(default)s)")
    demo.add_argument("--quick", action="store_true", help="a tiny run, well under a minute")
    demo.add_argument("--device", default="auto")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.add_argument("--threads", type=_positive_int, default=None, help=THREADS_HELP)
    demo.add_argument("--force", action="store_true",
                      help="write into a folder that is neither empty nor made by an earlier demo (its files may be replaced)")
    demo.set_defaults(func=cli_commands.cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        return _run(func, args)


def _show_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
    """Warnings of the library as one line on stderr (e.g. non-finite values replaced by 0)."""
    if issubclass(category, (DataWarning, UserWarning)):
        print(f"interp: warning: {one_line(message)}", file=sys.stderr)


def _run(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command; user-facing errors become one line and exit code 2."""
    try:
        return func(args)
    except InterpError as error:
        if args.debug:
            raise
        print(f"interp: error: {one_line(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("interp: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except PermissionError as error:
        if args.debug:
            raise
        print(f"interp: error: no permission to write or read {printable(error.filename or error)}; choose another --out "
              f"or fix its permissions", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (IsADirectoryError, NotADirectoryError, FileExistsError) as error:
        if args.debug:
            raise
        print(f"interp: error: cannot write {printable(error.filename or error)}: a file or folder of that name is in the way "
              f"({error.strerror}); choose another --out", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as error:
        if args.debug:
            raise
        if error.errno == 28:  # ENOSPC
            print("interp: error: no space left on the device while writing (nothing half-written was kept); "
                  "free some space and retry", file=sys.stderr)
            return EXIT_BAD_INPUT
        raise


if __name__ == "__main__":
    sys.exit(main())
