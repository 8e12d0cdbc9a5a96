"""The commands of the `interp` command line: each turns parsed arguments into one library call and prints.

Each ``cmd_*`` takes the :class:`argparse.Namespace` that :func:`interp.cli.build_parser` made and returns the
exit code. The library modules are imported inside the commands on purpose: they pull in torch, pandas and
matplotlib (about 2.5 s on a CPU), which ``interp --help`` and argument errors must not wait for; this module
itself imports only the standard library, so ``interp.cli`` stays fast (an optional heavy dependency, in the
house rules' terms).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from interp.errors import InterpError
from interp.guard import printable
from interp.outputs import check_report_out


def _set_threads(args: argparse.Namespace) -> None:
    """Apply ``--threads`` (process-wide, so the CLI sets it; a notebook calls interp.devices.set_threads)."""
    threads = getattr(args, "threads", None)
    if threads is not None:
        from interp.devices import set_threads

        set_threads(threads)


def cmd_data_synth(args: argparse.Namespace) -> int:
    from interp.synth import write_synthetic

    result = write_synthetic(
        args.out,
        task=args.task,
        n_train=args.n_train,
        n_valid=args.n_valid,
        n_test=args.n_test,
        seq_len=args.seq_len,
        noise=args.noise,
        seed=args.seed,
    )
    print(f"wrote {result.data_path} and its planted map {result.planted_path}")
    for concept, feature in result.planted.items():
        print(f"  concept {concept:>8} <- {feature}")
    return 0


def cmd_data_inspect(args: argparse.Namespace) -> int:
    from interp.data_inspect import inspect_data

    report = inspect_data(args.path, format=args.format)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.render())
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from interp.train import train

    _set_threads(args)
    if args.seeds is not None:
        return cmd_train_seeds(args)
    if args.engine is not None:
        raise InterpError("--engine chooses how several seeds are trained; pass it with --seeds")
    result = train(
        data_path=args.data,
        out=args.out,
        task=args.task,
        variant=args.variant,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        patience=args.patience,
        seed=args.seed if args.seed is not None else 0,
        device=args.device,
        d_model=args.d_model,
        n_heads=args.n_heads,
        n_layers=args.n_layers,
        d_feature=args.d_feature,
        d_concept=args.d_concept,
        concept_dropout=args.dropout,
        embed_dropout=args.embed_dropout,
        attn_dropout=args.attn_dropout,
        relu_dropout=args.relu_dropout,
        res_dropout=args.res_dropout,
        grad_clip=args.grad_clip,
        resume=args.resume,
        progress=not args.quiet,
        format=args.format,
    )
    print(result.summary())
    return 0


def cmd_train_seeds(args: argparse.Namespace) -> int:
    from interp.seeds import train_seeds

    if args.seed is not None:
        raise InterpError("pass --seed or --seeds, not both")
    result = train_seeds(
        args.data, args.out, args.seeds, engine=args.engine or "auto", resume=args.resume, progress=not args.quiet,
        task=args.task,
        variant=args.variant, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.patience,
        device=args.device, d_model=args.d_model, n_heads=args.n_heads, n_layers=args.n_layers,
        d_feature=args.d_feature, d_concept=args.d_concept, concept_dropout=args.dropout, grad_clip=args.grad_clip,
        embed_dropout=args.embed_dropout, attn_dropout=args.attn_dropout, relu_dropout=args.relu_dropout,
        res_dropout=args.res_dropout, format=args.format,
    )
    print(result.render())
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from interp.evaluate import evaluate

    _set_threads(args)
    result = evaluate(
        args.ckpt, data=args.data, split=args.split, device=args.device, batch_size=args.batch_size, out=args.out,
        format=args.format,
    )
    print(result.table())
    print(f"metrics written to {result.path}")
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    from interp.extract_many import extract_many

    _set_threads(args)
    runs = extract_many(
        args.ckpt or [Path("models/model.pt")],
        data=args.data,
        split=args.split,
        out=args.out,
        batch_size=args.batch_size,
        device=args.device,
        force=args.force,
        amp=args.amp,
        num_workers=args.num_workers,
        compile=args.compile,
        progress=not args.quiet,
        format=args.format,
    )
    for run in runs:
        print(f"run written to {run}")
    return 0


def cmd_global(args: argparse.Namespace) -> int:
    from interp.global_report import run_global

    check_report_out(args.out, args.run)

    result = run_global(
        runs=args.run or None,
        baseline=args.baseline,
        level=args.level,
        group=args.group,
        interval=args.interval,
        correction=args.correction,
        split=args.split,
        out=args.out,
        bootstrap_samples=args.bootstrap_samples,
        seed=args.seed,
        cluster=args.cluster,
        ensemble=args.ensemble,
    )
    print(result.render_terminal())
    print(f"global report written to {result.html_path}")
    return 0


def cmd_local(args: argparse.Namespace) -> int:
    from interp.local import run_local

    check_report_out(args.out, [args.run] if args.run else [])

    results = run_local(
        run=args.run,
        sample_ids=args.sample_id or [],
        concept=args.concept,
        out=args.out,
        top=args.top,
        feature=args.feature,
        by=args.by,
        random=args.random,
        seed=args.seed,
    )
    for result in results:
        print(f"{printable(result.sample_id)}: {result.html_path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from interp.report import run_report

    check_report_out(args.out, args.run)

    path = run_report(runs=args.run or None, out=args.out)
    print(f"report written to {path}")
    return 0


def cmd_faithfulness(args: argparse.Namespace) -> int:
    from interp.faithfulness import run_faithfulness

    _set_threads(args)
    result = run_faithfulness(
        args.ckpt, data=args.data, split=args.split, run=args.run, out=args.out, device=args.device,
        batch_size=args.batch_size, repeats=args.repeats, seed=args.seed, level=args.level,
        resamples=args.bootstrap_samples, progress=not args.quiet,
    )
    for check, text in result.verdicts.items():
        print(f"{check}: {text}")
    print(f"faithfulness written to {result.json_path} (and faithfulness_*.parquet/.csv beside it)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from interp.demo import run_demo

    _set_threads(args)
    path = run_demo(out=args.out, quick=args.quick, device=args.device, progress=not args.quiet, force=args.force)
    print(f"demo report: {path}")
    return 0
