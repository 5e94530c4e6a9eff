"""The ``hypersparse`` command: ``train``, ``tune``, ``eval``, ``export``, ``report``.

User errors end with one line on stderr and exit code 2; a diverged run with
exit code 1; the checkpoint on disk is always the last complete one.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sys
import threading
import traceback
import typing
import warnings
from dataclasses import fields
from pathlib import Path

from hypersparse import __version__
from hypersparse.config import TrainConfig, canonical, flag, sections, setting_flag, setting_help, type_name
from hypersparse.distributed import close_distributed, is_rank0
from hypersparse.errors import RunDiverged, RunStopped, Terminated, UserError, did_you_mean, shown
from hypersparse.schedule import ARTDidNotConverge


class _Parser(argparse.ArgumentParser):
    command: str | None = None  # the subcommand typed, for a hint about a flag that belongs to another one

    def parse_args(self, args=None, namespace=None):  # argparse's own, keeping the subcommand for the hint
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            self.command = getattr(namespace, "command", None)
            self.error("unrecognized arguments: " + " ".join(extras))
        return namespace

    def parse_known_args(self, args=None, namespace=None):  # each subcommand's parser runs this on its own flags
        namespace, extras = super().parse_known_args(args, namespace)
        for action in self._actions:  # an empty value ('--out ""', a variable that was not set) means no default
            value = getattr(namespace, action.dest, None)
            values = value if isinstance(value, list) else [value]
            if any(isinstance(v, str) and not v.strip() for v in values):
                if action.option_strings:
                    self.error(f"{action.option_strings[-1]} is empty; give a value, or leave the flag out for its "
                               "default")
                self.error(f"the {action.metavar or action.dest} argument is empty; give a value")
        return namespace, extras

    def error(self, message: str) -> typing.NoReturn:  # one line, not usage + message; under torchrun, rank 0's
        message += _flag_hint(self, message)
        self.exit(2, f"hypersparse: error: {shown(message)} (see '{self.prog} --help')\n" if _rank0() else None)


def _flag_hint(parser: argparse.ArgumentParser, message: str) -> str:
    """`` (did you mean --momentum?)`` for a mistyped flag; a setting without a flag is named as ``--set``."""
    if not message.startswith("unrecognized arguments:"):
        return ""
    wrong = next((w.split("=")[0] for w in message.split(":", 1)[1].split() if w.startswith("--")), None)
    if wrong is None:
        return ""
    parsers = [parser] + [p for a in parser._actions if isinstance(a, argparse._SubParsersAction)
                          for p in a.choices.values()]
    flags = {o for p in parsers for a in p._actions for o in a.option_strings if o.startswith("--")}
    settings = {"--" + f.name.replace("_", "-"): f"--set {section}.{f.name}=VALUE"
                for section, cls in sections().items() for f in fields(cls) if not setting_flag(f)}
    close = did_you_mean(wrong, sorted(flags | set(settings)))
    if not close:  # perhaps a plugin's own flag: plugins are loaded by --plugin before the flags are read
        return " (if a plugin defines it, load the plugin first: --plugin NAME)"
    name = close.split("'")[1]
    if name == wrong and name not in settings:  # another subcommand's flag: not a typo of itself
        return _elsewhere(wrong, getattr(parser, "command", None))
    return f" (did you mean {settings.get(name, name)}?)"


_TUNE_OWN = {"--lambda-init": "tune searches lambda_init itself: set its range with --lambda-range",
             "--eta": "tune searches eta itself: set its range with --eta-range",
             "--run-dir": "tune names each trial's run itself: choose the folder with --study-dir",
             "--resume": "--resume is train's; tune continues a study when you run the same command again"}


def _elsewhere(flag: str, command: str | None) -> str:
    """Why ``flag``, a flag of some other subcommand, is not ``command``'s."""
    if command == "tune" and flag in _TUNE_OWN:
        return f" ({_TUNE_OWN[flag]})"
    return f" ({flag} is not a flag of '{command}')" if command else f" ({flag} is not a flag of this command)"


TUNED = ("lambda_init", "eta", "run_dir")  # set by hypersparse tune for each trial
_TYPES = {"int": int, "float": float}


def _add_config_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One argument group per config section, one flag per setting marked as a flag; the rest in the epilog."""
    hidden = []
    for section, cls in sections().items():
        group = None
        for f in fields(cls):
            if f.name in skip:
                continue
            if not setting_flag(f):
                hidden.append(f"{section}.{f.name} ({f.default})")
                continue
            if group is None:
                group = parser.add_argument_group(section, cls.__doc__)
            dest, help = f"{section}.{f.name}", setting_help(f) + (f" (default: {f.default})" if f.default else "")
            flag = "--" + f.name.replace("_", "-")
            if type_name(f) == "bool":
                group.add_argument(flag, dest=dest, action="store_true", default=argparse.SUPPRESS, help=help)
            else:
                group.add_argument(flag, dest=dest, type=_TYPES.get(type_name(f), str), default=argparse.SUPPRESS,
                                   metavar=f.name.split("_")[-1].upper(), help=help)
    files = parser.add_argument_group("settings from a file")
    files.add_argument("--config", metavar="FILE",
                       help="settings from a TOML or JSON file (a run's config.json is one); "
                       "flags and --set override it")
    files.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="any setting, e.g. --set schedule.momentum=0.95")
    parser.epilog = "Settings without a flag (--set or --config): " + ", ".join(hidden) + "."


def _config_from(args) -> TrainConfig:
    """Defaults, then --config, then --set, then the flags. Code a --config file names (a plugin, a model or dataset
    by import path) is imported only if the same flag is typed too: a file never decides what code runs."""
    from hypersparse.plugins import require_typed

    cfg = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    sets = {}
    for item in args.set:
        key, eq, value = item.partition("=")
        if not eq:
            raise UserError(f"--set expects SECTION.KEY=VALUE, e.g. --set schedule.momentum=0.95, got {item!r}")
        sets[key.strip()] = value.strip()
    flags = {k: v for k, v in vars(args).items() if "." in k}
    cfg = TrainConfig.from_dict(sets, base=cfg, check=False, text=True)
    cfg = TrainConfig.from_dict(flags, base=cfg)
    if args.config:
        require_typed(cfg, {canonical(k) for k in [*sets, *flags]}, f"--config {args.config}")
    return cfg


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hypersparse", description="Make dense PyTorch networks extremely sparse with HyperSparse "
                     "and ART.")
    parser.add_argument("--version", action="version", version=f"hypersparse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (_train_flags, _tune_flags, _eval_flags, _export_flags, _report_flags):
        add(sub)
    return parser


def _train_flags(sub) -> None:
    from hypersparse.data import DATASETS
    from hypersparse.models import MODELS

    train = sub.add_parser(
        "train", help="warm-up -> ART -> fine-tune (or a baseline method)",
        description="Train a model from dense to sparse. With no flags: digits, MLP, 90 percent sparsity. Models: "
        + ", ".join(MODELS) + ". Datasets: " + ", ".join(DATASETS) + ".")
    _add_config_flags(train)
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint, "
                       "with the settings it started with (a run that names code needs its --plugin, --model or "
                       "--dataset typed again, as it started, if you trust it)")


def _tune_flags(sub) -> None:
    tune = sub.add_parser(
        "tune", help="search lambda_init and eta with Optuna on the validation split (needs the [tune] extra)",
        description="Search ART's lambda_init and eta; every other setting is the base run's, as for train. Running "
        "the same command again continues the study.")
    _add_config_flags(tune, skip=TUNED)
    tune.add_argument("--trials", type=int, default=20, help="finished trials to reach (earlier calls count)")
    tune.add_argument("--study-dir", help="trial runs, study.db and best.json (default: runs/tune-<dataset>-<model>-"
                      "<sparsity>)")
    tune.add_argument("--storage", help="Optuna storage URL (default: sqlite:///STUDY_DIR/study.db)")
    tune.add_argument("--lambda-range", default="1e-7,1e-3", help="log-uniform range of lambda_init")
    tune.add_argument("--eta-range", default="1.01,1.5", help="log-uniform range of eta")


def _eval_flags(sub) -> None:
    ev = sub.add_parser("eval", help="accuracy and sparsity of a trained model", description="Evaluate a run or "
                        "checkpoint.")
    ev.add_argument("checkpoint", help="a run directory, its model.pt / checkpoint.pt, a sparse file or an ONNX file "
                    "from hypersparse export (run with onnxruntime)")
    ev.add_argument("--dataset", help="dataset (default: the run's)")
    ev.add_argument("--data-dir", help="folder with the dataset's files (default: the run's)")
    ev.add_argument("--model", help="model name (default: the run's; code a run or file names is imported only if "
                    "typed here)")
    ev.add_argument("--plugin", help="modules to import first, comma-separated (a run that used --plugin needs it "
                    "again: hypersparse imports no code a file names)")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--fast", nargs="?", const=1, type=int, metavar="BATCH",
                    help="also score the model as hypersparse.sparse_inference runs it at this batch size (default 1: "
                    "compacted, sparse kernels where measured faster; CPU) and print its latency against the model's")


def _export_flags(sub) -> None:
    from hypersparse.export import EXPORTS

    ex = sub.add_parser("export", help="write a compressed sparse file or ONNX", description="Export a trained model.")
    ex.add_argument("run", help="a run directory (or its model.pt)")
    ex.add_argument("--model", help="model name (default: the run's; code a run names is imported only if typed "
                    "here)")
    ex.add_argument("--plugin", help="modules to import first, comma-separated (a run that used --plugin needs it "
                    "again)")
    ex.add_argument("--format", choices=tuple(EXPORTS), default="sparse",
                    help="; ".join(f.help for f in EXPORTS.values()))
    ex.add_argument("--out", help="output file (default: " + ", ".join(f"model{f.extension}" for f in EXPORTS.values())
                    + ", " + ", ".join(f"model.compact{EXPORTS[n].extension}" for n in _takes("compact"))
                    + " with --compact, in the run directory)")
    ex.add_argument("--compact", action="store_true",
                    help=f"--format {' or '.join(_takes('compact'))}: export the channel-compacted model (BatchNorm "
                    "folded, channels no kept weight produces or reads removed; same outputs, faster in any runtime)")


def _report_flags(sub) -> None:
    rep = sub.add_parser("report", help="figures and an HTML page for one or more runs",
                         description="Plot what ART did: gradient, exploration, layers, histograms, curves, classes.")
    rep.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories; several give comparison figures")
    rep.add_argument("--out", help="output folder (default: the first run directory)")
    rep.add_argument("--plugin", help="modules to import first, comma-separated (runs of a method a --plugin "
                     "registered need it again)")


def _report(args) -> int:
    from hypersparse.report import build_report

    print(shown(f"wrote {build_report(args.runs, args.out, args.plugin)}"))
    return 0


def _takes(option: str) -> list[str]:
    """The export formats that take ``option`` (``compact``)."""
    from hypersparse.export import EXPORTS

    return [name for name, f in EXPORTS.items() if option in f.options]


def _export(args) -> int:
    from hypersparse.checkpoint import output_file
    from hypersparse.export import EXPORTS
    from hypersparse.run_read import SUMMARY, model_from_run, plugins_first, read_json, run_settings
    from hypersparse.run_write import refuse_if_written

    path = Path(args.run)
    if not path.exists():
        raise UserError(f"{path} does not exist; pass a run directory or its model.pt")
    run_dir = path if path.is_dir() else path.parent
    refuse_if_written(run_dir, "export it")  # an unfinished run's model, and a second writer in its folder
    plugins_first(run_dir, args.plugin)  # before summary.json, whose settings may name a plugin's method
    summary = read_json(run_dir / SUMMARY)
    if summary is None:
        raise UserError(f"{run_dir} holds no finished run (no summary.json); train it to the end first")
    fmt = EXPORTS[args.format]
    options = {"compact": True} if args.compact else {}
    if set(options) - set(fmt.options):
        takes = " or ".join(_takes("compact"))
        raise UserError(f"--compact applies to --format {takes} only (a {args.format} file keeps the run's "
                        f"architecture, which loaders rebuild); drop --compact or use --format {takes}")
    default = f"model{'.compact' if args.compact else ''}{fmt.extension}"  # beside the plain export, not over it
    if args.out is not None and str(args.out).endswith(("/", os.sep)):
        raise UserError(f"--out {args.out} names a folder; give a file name inside it")
    out = output_file(args.out or run_dir / default, "--out")
    writes = (out, *fmt.also_writes(out))  # the dense format's JSON beside it, say (a plugin's call: once)
    for written in writes:
        _not_a_run_file(written, out, run_dir)

    def last(ext: str) -> str:  # .pt of .dense.pt, .onnx of .onnx: what the file is
        return "." + ext.rsplit(".", 1)[-1]

    own = last(fmt.extension)
    others = {last(f.extension): name for name, f in EXPORTS.items() if last(f.extension) != own}
    if args.out is not None and Path(args.out).suffix in others:  # a file named as another format's would mislead
        suffix = Path(args.out).suffix
        raise UserError(f"--out {args.out} ends in {suffix}, but --format {args.format} writes a {own} file; name "
                        f"it ...{own}, or give --format {others[suffix]}")
    settings = run_settings(path, model=args.model, plugin=args.plugin, uses=("run.plugin", "model.model"))
    arch, inputs = dict(summary["arch"], model=settings["model"]), summary.get("input")
    model = model_from_run(path, settings["model"], trust_code=True)  # the name is the user's or checked to be safe
    new = [p for p in writes if not os.path.lexists(p)]
    try:
        said = fmt.writer(model, out, arch, inputs, **options)
    except BaseException:  # a writer (a plugin's, say) that failed half-way: what it began of files new here goes
        for path in new:
            with contextlib.suppress(OSError):
                if path.is_file() and not path.is_symlink():
                    path.unlink()
        raise
    print(shown(said))  # the path as typed, control characters escaped
    return 0


def _not_a_run_file(written: Path, out: Path, run_dir: Path) -> None:
    """An export written over the run's own files (its model.pt, config.json, its lock...) would leave the run
    unreadable; ``written`` is ``out`` or a file the format writes beside it."""
    from hypersparse.run_write import CONFIG, LOCK, METRICS, RUN_FILES, STUDY_FILES

    try:
        folder = written.resolve().parent
        own = folder == run_dir.resolve()
        a_run = own or (folder / CONFIG).exists() or (folder / METRICS).exists()  # this run's, or another's
        a_study = (folder / STUDY_FILES[0]).exists()  # a tune study's folder: its study.db and best.json
    except OSError:
        return
    # study.db's SQLite companions (-journal, -wal, -shm) are read with it: a file there makes the database unreadable
    if a_study and (written.name in (*STUDY_FILES, LOCK) or written.name.startswith(f"{STUDY_FILES[0]}-")):
        raise UserError(f"--out {out} is the tune study's {written.name} ({written.parent}), which tune reads to "
                        "continue the study; write the export elsewhere")
    if a_run and written.name in (*RUN_FILES, LOCK):
        what = "is" if written == out else f"would write {written.name} beside it, which is"
        whose = "the run's own" if own else f"another run's ({written.parent})"
        raise UserError(f"--out {out} {what} {whose} {written.name}, which eval, report and --resume read; "
                        "write the export elsewhere (the default is model.<format> beside them)")


RESUME_CONFIRMS = ("run.plugin", "model.model", "data.dataset")  # beside --resume: confirm the code a run names


def _train(args) -> int:
    from hypersparse import compare

    if args.resume:
        given = sorted(k for k in vars(args) if "." in k and k not in RESUME_CONFIRMS) + \
            (["--config"] if args.config else []) + (["--set"] if args.set else [])
        if given:
            named = given[0] if given[0].startswith("--") else flag(given[0])
            raise UserError(f"--resume continues a run with the settings it started with; drop {named}")
        compare.resume(args.resume, confirmed={k: v for k, v in vars(args).items() if k in RESUME_CONFIRMS})
        return 0
    compare.train(_config_from(args))
    return 0


def _tune(args) -> int:
    from hypersparse.tune import parse_range, tune

    for item in args.set:  # a flag that does not apply is an error: tune sets these itself, for every trial
        key = item.partition("=")[0].strip()
        if key.rsplit(".", 1)[-1] in TUNED:
            raise UserError(f"--set {key} does not apply to tune, which sets it for each trial (lambda_init and eta "
                            "come from --lambda-range and --eta-range, the folder is STUDY_DIR/trial-N); drop it")
    base = _config_from(args)
    study_dir = args.study_dir or f"runs/tune-{base.data.dataset}-{base.model.model}-{base.sparsity.sparsity:g}"
    tune(base, study_dir, args.trials, parse_range(args.lambda_range, "--lambda-range"),
         parse_range(args.eta_range, "--eta-range"), args.storage)
    return 0


MAX_FAST_BATCH = 4096  # --fast repeats test images up to the batch: bounded, so it cannot ask for gigabytes


def _eval(args) -> int:
    from hypersparse.evaluate import evaluate_run

    if args.fast is not None and not 1 <= args.fast <= MAX_FAST_BATCH:
        raise UserError(f"--fast takes a batch size from 1 to {MAX_FAST_BATCH}, got {args.fast}")
    evaluate_run(args.checkpoint, args.dataset, args.data_dir, args.model, args.device, args.fast, args.plugin)
    return 0


def _rank0() -> bool:
    """Whether this process prints errors: always, except on the ranks other than 0 under torchrun (which sets
    TORCHELASTIC_RUN_ID); a RANK left in the environment without torchrun does not silence the one line."""
    try:
        return is_rank0() or "TORCHELASTIC_RUN_ID" not in os.environ
    except UserError:  # a malformed environment is itself the error to print
        return True


def _say(message: str, code: int) -> int:
    if _rank0():
        try:
            print(f"hypersparse: {shown(message)}", file=sys.stderr, flush=True)
        except OSError:  # stderr on a full device or closed: the exit code still says it
            pass
    return code


def _os_error(exc: OSError, command: str | None = None) -> str:
    """One line for a failed read or write: what, which file, and what to do (for the command that failed)."""
    where = f" ({exc.filename}{_set_by(exc.filename)})" if exc.filename else ""
    again = "a stopped run continues with hypersparse train --resume RUN_DIR" if command in ("train", "tune") else \
        "then run the command again"
    if exc.errno == errno.ENOSPC:
        if not exc.filename:  # no file named: the standard output or error stream may be the full device
            return f"error: no space left on a device being written (the disk, or where the output goes); free some " \
                   f"space or send the output elsewhere ({again})"
        return f"error: the disk is full{where}; free some space ({again})"
    if exc.errno == errno.EPIPE:  # no file: the reader of the output (`| head`) ended before the command did
        return f"error: the output's reader ended (a pipe such as | head closed); send the output to a file or let " \
               f"it read to the end ({again})"
    if exc.errno == errno.EFBIG:
        return f"error: a file grew past this process's file-size limit (ulimit -f){where}; raise it ({again})"
    return f"error: {exc.strerror or exc}{where}; check the path and its permissions"


#: settings from the environment that point at folders hypersparse (or torch, for it) writes into
PATH_SETTINGS = ("HYPERSPARSE_CACHE", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "TMPDIR", "XDG_CACHE_HOME")


def _set_by(filename: object) -> str:
    """`` , under TMPDIR=/x``: the environment setting that chose a failed path's folder, which the user never typed."""
    for name in PATH_SETTINGS:
        value = os.environ.get(name)
        if value and (str(filename) == value or str(filename).startswith(value.rstrip("/") + "/")):
            return f", under {name}={value}"
    return ""


STOPPED = "{what}; files written so far are complete (run the command again to continue)"


def _stopped(exc: KeyboardInterrupt) -> int:
    """The one line for Ctrl-C (130) or SIGTERM (143) outside a training run, which says more (RunStopped)."""
    if isinstance(exc, Terminated):
        return _say(STOPPED.format(what="terminated"), 143)
    return _say(STOPPED.format(what="interrupted"), 130)


PRELOAD = ("train", "tune", "export")  # commands whose flags and choices list what plugins register


def _typed_plugins(argv: list[str]) -> list[str]:
    """The modules typed after ``--plugin`` (before the arguments are parsed: they may add flags and choices)."""
    found = []
    for i, word in enumerate(argv):
        if word == "--plugin" and i + 1 < len(argv):
            found.append(argv[i + 1])
        elif word.startswith("--plugin="):
            found.append(word.split("=", 1)[1])
    return found


def _resumed_plugin(argv: list[str]) -> str | None:
    """The ``--plugin`` the run that ``--resume`` names was started with (None if unreadable: the resume says why)."""
    import json

    folder = argv[argv.index("--resume") + 1] if argv.index("--resume") + 1 < len(argv) else None
    try:
        return json.loads((Path(folder) / "config.json").read_text())["run"]["plugin"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None


def _typed_names_here():
    """Names the user types (``--plugin``, ``--model mod:fn``) are found in the current folder, for their import only;
    if the folder was removed, they are looked up as Python does."""
    from hypersparse.plugins import typed_names_from

    try:
        return typed_names_from(os.getcwd())
    except OSError:
        return contextlib.nullcontext()


def _user_code_failed(exc) -> int:
    """The user's own code raised: its frames, then one line."""
    if _rank0():
        print(exc.frames, end="", file=sys.stderr, flush=True)
    return _say(f"error: {exc}", 2)


def _preload(argv: list[str]) -> int | None:
    """For train, tune and export: import the installed plugins (entry points) and the typed ``--plugin`` modules
    first, so the methods, settings and export formats they register are flags and choices; an exit code if one
    fails."""
    from hypersparse.plugins import UserCodeError, load_entry_points, load_plugins

    if not argv or argv[0] not in PRELOAD:
        return None
    typed = ",".join(_typed_plugins(argv))
    if "--resume" in argv and typed != _resumed_plugin(argv):
        typed = ""  # beside --resume, --plugin confirms the run's; a different one is refused by the resume itself
    try:
        with _typed_names_here():
            load_entry_points()
            load_plugins(typed)
    except UserCodeError as exc:
        return _user_code_failed(exc)
    except UserError as exc:
        return _say(f"error: {exc}", 2)
    return None


def _registered_code():
    """What was registered from outside hypersparse (models, datasets, methods, export formats) and by whom: the
    user's plugins, installed or not (:func:`hypersparse.plugins.registered_code`)."""
    from hypersparse import data, export, method, models
    from hypersparse.plugins import registered_code

    registries = {models.KIND: {n: b for n, (b, _) in models.MODELS.items()},
                  data.KIND: {n: b for n, (b, _) in data.DATASETS.items()},
                  method.KIND: {n: e.build for n, e in method.method_entries().items()},
                  export.KIND: {n: f.writer for n, f in export.EXPORTS.items()}}
    builders = [b for registry in registries.values() for b in registry.values()]
    return registered_code(builders, {(kind, n) for kind, registry in registries.items() for n in registry})


def _dispatch(args) -> int:
    """The one error boundary: every user-facing failure becomes one line on stderr and an exit code (the user's own
    code failing: their frames, then that line)."""
    from hypersparse.params import NoPrunableParametersError
    from hypersparse.plugins import UserCodeError, their_frame

    try:
        with _typed_names_here():
            return {"train": _train, "tune": _tune, "eval": _eval, "export": _export,
                    "report": _report}[args.command](args)
    except UserCodeError as exc:
        return _user_code_failed(exc)
    except UserError as exc:
        return _say(f"error: {exc}", 2)
    except NoPrunableParametersError:
        return _say("error: no Linear or Conv weight is left to prune (the model has none, or --exclude / "
                    "sparsity.exclude names them all); exclude fewer layers or pick another model", 2)
    except (RunDiverged, ARTDidNotConverge) as exc:
        return _say(f"error: {exc}", 1)
    except RunStopped as exc:
        return _say(str(exc), exc.code)
    except KeyboardInterrupt as exc:
        return _stopped(exc)
    except Exception as exc:  # noqa: BLE001 - raised by the user's own code while hypersparse ran it (training)?
        registered = _registered_code()
        frame = their_frame(exc, registered)
        if frame is not None:
            return _user_code_failed(UserCodeError(f"your code ({frame.name} in {os.path.basename(frame.filename)}:"
                                                   f"{frame.lineno}), run by hypersparse {args.command},", exc,
                                                   registered))
        if isinstance(exc, OSError):
            return _say(_os_error(exc, getattr(args, "command", None)), 2)
        raise  # hypersparse's own failure: its traceback is the bug report


def _terminate(signum, frame) -> typing.NoReturn:
    raise Terminated()


def _quit(signum, frame) -> typing.NoReturn:
    """Ctrl-C or SIGTERM in ``eval``, ``export`` or ``report``: remove the temporary being written, say so, end now.

    These commands spend their time inside libraries (torch's ONNX exporter, matplotlib, numpy); an exception raised
    from a signal handler there can leave a library half-imported or abort inside C++, so they stop without
    unwinding. Every output is written atomically, so what exists is complete."""
    from hypersparse.checkpoint import remove_own_temporaries

    remove_own_temporaries()
    what, code = ("terminated", 143) if signum == signal.SIGTERM else ("interrupted", 130)
    if _rank0():
        os.write(2, f"hypersparse: {STOPPED.format(what=what)}\n".encode())
    os._exit(code)


STOP_AT_ONCE = ("eval", "export", "report")  # the others stop by an exception the run loop turns into RunStopped


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


def _warning_line(message, category, filename, lineno, line=None) -> str:
    """A warning on the command line is one line, without the file and line of whichever library raised it (the
    format, not the display: a caller recording warnings still records them)."""
    return f"hypersparse: warning: {shown(' '.join(str(message).split()))}\n" if _rank0() else ""


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a path that is not valid UTF-8 is printed escaped, not a crash
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, OSError, ValueError):  # not a text stream, or a descriptor closed under it
            pass
    formatwarning, warnings.formatwarning = warnings.formatwarning, _warning_line
    try:
        return _main(argv)
    finally:  # the caller's (a test's, a notebook's) format comes back
        warnings.formatwarning = formatwarning


def _main(argv: list[str] | None) -> int:
    main_thread = threading.current_thread() is threading.main_thread()
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)} if main_thread else {}
    try:
        if main_thread:
            signal.signal(signal.SIGTERM, _terminate)  # stop like Ctrl-C: the write in progress finishes or is undone
            signal.signal(signal.SIGINT, signal.default_int_handler)
        argv = sys.argv[1:] if argv is None else list(argv)
        early = _preload(argv)
        if early is not None:
            return early
        try:
            parser = build_parser()
        except UserError as exc:  # a plugin's setting that clashes with another shows when the flags are built
            return _say(f"error: {exc}", 2)
        args = parser.parse_args(argv)
        if main_thread and args.command in STOP_AT_ONCE:
            for sig in saved:
                signal.signal(sig, _quit)
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
    except KeyboardInterrupt as exc:  # before the command's boundary or after it: nothing half-written either way
        return _stopped(exc)
    finally:
        for sig, handler in saved.items():  # called from Python (tests, notebooks): leave the caller's handlers
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
