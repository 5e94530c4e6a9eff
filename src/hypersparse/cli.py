"""The ``hypersparse`` command: ``train``, ``tune``, ``eval``, ``export``, ``report``.

User errors end with one line on stderr and exit code 2; a diverged run with
exit code 1; the checkpoint on disk is always the last complete one.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
import typing

from hypersparse.config import TrainConfig, config_fields
from hypersparse.distributed import close_distributed
from hypersparse.errors import RunDiverged, UserError
from hypersparse.schedule import ARTDidNotConverge


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:  # one line, not usage + message
        self.exit(2, f"hypersparse: error: {message} (see '{self.prog} --help')\n")


def _flag_type(tp):
    if callable(tp) and not isinstance(tp, (type, str)):
        return tp  # a parser of its own, e.g. a number or 'auto'
    tp = str(tp)
    if "bool" in tp:
        return None
    if "float" in tp:
        return float
    if "int" in tp:
        return int
    return str


TUNED = ("lambda_init", "eta", "run_dir")  # set by hypersparse tune for each trial


def _add_config_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One flag per TrainConfig field, with its default and help."""
    for name, tp, default, help in config_fields():
        if name in skip:
            continue
        flag = "--" + name.replace("_", "-")
        if _flag_type(tp) is None:
            parser.add_argument(flag, action="store_true", help=help)
        else:
            parser.add_argument(flag, type=_flag_type(tp), default=default, help=help)


def build_parser() -> argparse.ArgumentParser:
    from hypersparse.data import DATASETS
    from hypersparse.models import MODELS

    parser = _Parser(prog="hypersparse", description="Make dense PyTorch networks extremely sparse with HyperSparse and ART.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    train = sub.add_parser(
        "train",
        help="warm-up -> ART -> fine-tune (or a baseline method)",
        description="Train a model from dense to sparse. With no flags: digits, MLP, 90%% sparsity. "
        "Models: " + ", ".join(MODELS) + ". Datasets: " + ", ".join(DATASETS) + ".",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_config_flags(train)
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")

    tune = sub.add_parser(
        "tune", help="search lambda_0 and eta with Optuna on the validation split (needs the [tune] extra)",
        description="Search ART's lambda_0 and eta; every other flag is the base run's, as for train. Running the "
        "same command again continues the study.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_config_flags(tune, skip=TUNED)
    tune.add_argument("--trials", type=int, default=20, help="finished trials to reach (earlier calls count)")
    tune.add_argument("--study-dir", help="trial runs, study.db and best.json (default: runs/tune-<dataset>-<model>-<sparsity>)")
    tune.add_argument("--storage", help="Optuna storage URL (default: sqlite:///STUDY_DIR/study.db)")
    tune.add_argument("--lambda-range", default="1e-7,1e-3", help="log-uniform range of lambda_0")
    tune.add_argument("--eta-range", default="1.01,1.5", help="log-uniform range of eta")

    ev = sub.add_parser("eval", help="accuracy and sparsity of a trained model", description="Evaluate a run or checkpoint.")
    ev.add_argument("checkpoint", help="a run directory, its model.pt / checkpoint.pt, or a sparse file")
    ev.add_argument("--dataset", help="dataset (default: the run's)")
    ev.add_argument("--data-dir", help="folder with the dataset's files (default: the run's)")
    ev.add_argument("--model", help="model name (default: the run's)")
    ev.add_argument("--device", default="auto")
    ex = sub.add_parser("export", help="write a compressed sparse file or ONNX", description="Export a trained model.")
    ex.add_argument("run", help="a run directory (or its model.pt)")
    ex.add_argument("--format", choices=("sparse", "onnx"), default="sparse",
                    help="sparse: safetensors with CSR or bitmask tensors; onnx: needs the [onnx] extra")
    ex.add_argument("--out", help="output file (default: model.sparse.safetensors or model.onnx in the run directory)")
    rep = sub.add_parser("report", help="figures and an HTML page for one or more runs",
                         description="Plot what ART did: gradient, exploration, layers, histograms, curves, classes.")
    rep.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories; several give comparison figures")
    rep.add_argument("--out", help="output folder (default: the first run directory)")
    return parser


def _report(args) -> int:
    from hypersparse.report import build_report

    print(f"wrote {build_report(args.runs, args.out)}")
    return 0


def _export(args) -> int:
    import json
    from pathlib import Path

    import torch

    from hypersparse.checkpoint import load_checkpoint
    from hypersparse.export import export_onnx, save_sparse
    from hypersparse.models import create_model

    path = Path(args.run)
    run_dir = path if path.is_dir() else path.parent
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        raise UserError(f"{run_dir} holds no finished run (no summary.json); train it to the end first")
    arch = json.loads(summary_path.read_text())["arch"]
    try:
        state = load_checkpoint(path / "model.pt" if path.is_dir() else path)
    except (OSError, RuntimeError, EOFError) as exc:
        raise UserError(f"cannot read the model in {path} ({exc})") from None
    model = create_model(arch["model"], arch["num_classes"], arch["in_channels"], arch["image_size"])
    model.load_state_dict(state.get("model", state))
    if args.format == "sparse":
        info = save_sparse(model, args.out or run_dir / "model.sparse.safetensors", arch)
        print(f"wrote {info['path']}: {info['bytes']:,} bytes, {info['ratio']:.1f}x smaller than dense fp32")
    else:
        example = torch.zeros(1, arch["in_channels"], arch["image_size"], arch["image_size"])
        info = export_onnx(model, example, args.out or run_dir / "model.onnx")
        print(f"wrote {info['path']}: {info['bytes']:,} bytes, {info['sparse_initializers']} sparse initializers")
    return 0


def _train(args) -> int:
    from hypersparse import engine

    progress = False if args.no_progress else None
    if args.resume:
        engine.resume(args.resume, progress=progress)
        return 0
    values = {name: getattr(args, name) for name, *_ in config_fields()}
    engine.train(TrainConfig(**values).validate(), progress=progress)
    return 0


def _tune(args) -> int:
    from hypersparse.tune import parse_range, tune

    values = {name: getattr(args, name) for name, *_ in config_fields() if name not in TUNED}
    base = TrainConfig(**values).validate()
    study_dir = args.study_dir or f"runs/tune-{base.dataset}-{base.model}-{base.sparsity:g}"
    tune(base, study_dir, args.trials, parse_range(args.lambda_range, "--lambda-range"),
         parse_range(args.eta_range, "--eta-range"), args.storage)
    return 0


def _eval(args) -> int:
    from hypersparse.evaluate import evaluate_checkpoint

    evaluate_checkpoint(args.checkpoint, args.dataset, args.data_dir, args.model, args.device)
    return 0


def _dispatch(args) -> int:
    try:
        return {"train": _train, "tune": _tune, "eval": _eval, "export": _export, "report": _report}[args.command](args)
    except UserError as exc:
        print(f"hypersparse: error: {exc}", file=sys.stderr)
        return 2
    except (RunDiverged, ARTDidNotConverge) as exc:
        print(f"hypersparse: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hypersparse: interrupted; the last complete epoch is checkpointed (continue with --resume RUN_DIR)", file=sys.stderr)
        return 130


def _exit_worker(code: int) -> typing.NoReturn:
    """End a torchrun worker without interpreter teardown.

    gloo's worker threads may still be releasing the tensors of the last
    collective when Python shuts down; the release then cannot take the GIL and
    the rank aborts ("terminate called without an active exception",
    pytorch/pytorch#179291), failing a run that had finished. Every file of the
    run is closed by now, so skipping the teardown loses nothing.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = _dispatch(args)
    except BaseException:
        if not close_distributed():
            raise
        traceback.print_exc()
        _exit_worker(1)
    if close_distributed():
        _exit_worker(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
