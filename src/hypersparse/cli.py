"""The ``hypersparse`` command: ``train``, ``eval``.

User errors end with one line on stderr and exit code 2; a diverged run with
exit code 1; the checkpoint on disk is always the last complete one.
"""
from __future__ import annotations

import argparse
import sys
import typing

from hypersparse.config import TrainConfig, config_fields
from hypersparse.errors import RunDiverged, UserError
from hypersparse.schedule import ARTDidNotConverge


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:  # one line, not usage + message
        self.exit(2, f"hypersparse: error: {message} (see '{self.prog} --help')\n")


def _flag_type(tp):
    tp = str(tp)
    if "bool" in tp:
        return None
    if "float" in tp:
        return float
    if "int" in tp:
        return int
    return str


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
    for name, tp, default, help in config_fields():
        flag = "--" + name.replace("_", "-")
        if _flag_type(tp) is None:
            train.add_argument(flag, action="store_true", help=help)
        else:
            train.add_argument(flag, type=_flag_type(tp), default=default, help=help)
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")

    ev = sub.add_parser("eval", help="accuracy and sparsity of a trained model", description="Evaluate a run or checkpoint.")
    ev.add_argument("checkpoint", help="a run directory, its model.pt / checkpoint.pt, or a sparse file")
    ev.add_argument("--dataset", help="dataset (default: the run's)")
    ev.add_argument("--data-dir", help="folder with the dataset's files (default: the run's)")
    ev.add_argument("--model", help="model name (default: the run's)")
    ev.add_argument("--device", default="auto")
    return parser


def _train(args) -> int:
    from hypersparse import engine

    progress = False if args.no_progress else None
    if args.resume:
        engine.resume(args.resume, progress=progress)
        return 0
    values = {name: getattr(args, name) for name, *_ in config_fields()}
    engine.train(TrainConfig(**values).validate(), progress=progress)
    return 0


def _eval(args) -> int:
    from hypersparse.evaluate import evaluate_checkpoint

    evaluate_checkpoint(args.checkpoint, args.dataset, args.data_dir, args.model, args.device)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"train": _train, "eval": _eval}[args.command](args)
    except UserError as exc:
        print(f"hypersparse: error: {exc}", file=sys.stderr)
        return 2
    except (RunDiverged, ARTDidNotConverge) as exc:
        print(f"hypersparse: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hypersparse: interrupted; the last complete epoch is checkpointed (continue with --resume RUN_DIR)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
