"""Bad input of every kind, across train, eval, export, report and tune: exit 2, one line, nothing damaged.

Each case builds its bad input in a fresh folder (beside a copy of one finished run), runs the command in this
process, and checks the exit code, that stderr is one line without a traceback, and that no file that existed
before changed and no file was added.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import struct
from pathlib import Path

import pytest
import torch

from hypersparse.cli import main


@pytest.fixture(scope="module")
def finished(finished_run) -> Path:
    return finished_run  # conftest's finished digits run, with its sparse export


def _sparse_with(path: Path, src: Path, layout=None, arch=None) -> None:
    """A copy of the sparse file ``src`` with its layout or arch metadata replaced."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if layout is not None:
        meta["layout"] = layout(json.loads(meta["layout"])) if callable(layout) else layout
    if arch is not None:
        meta["arch"] = json.dumps(arch(json.loads(meta["arch"])))
    save_file(tensors, str(path), metadata=meta)


def _edit_layout(edit):
    def change(layout):
        name = next(n for n, m in layout.items() if m["enc"] != "dense")
        edit(layout[name])
        return json.dumps(layout)
    return change


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _idx_gz(path: Path, magic: int, dims: tuple[int, ...]) -> None:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims)
    body = header + bytes(int(torch.tensor(dims).prod()))
    _write(path, gzip.compress(body))


def _mnist_folder(d: Path, train_images: int = 60000) -> Path:
    d.mkdir()
    _idx_gz(d / "train-images-idx3-ubyte.gz", 2051, (train_images, 28, 28))
    _idx_gz(d / "train-labels-idx1-ubyte.gz", 2049, (60000,))
    _idx_gz(d / "t10k-images-idx3-ubyte.gz", 2051, (10000, 28, 28))
    _idx_gz(d / "t10k-labels-idx1-ubyte.gz", 2049, (10000,))
    return d


def _tiny_imagenet(d: Path, wnids: bytes = b"n01\n", annotation: str = "a.JPEG\tn01\t0\t0\t1\t1\n") -> Path:
    root = d / "tiny-imagenet-200"
    _write(root / "wnids.txt", wnids)
    _write(root / "val" / "val_annotations.txt", annotation)
    return d


def _readonly(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o555)
    return d


QUICK = ["--epochs-scale", "0.02"]
# (id, build(tmp, run) -> argv, words the one line must hold)
CASES = [
    # train: numbers and names
    ("sparsity-above-1", lambda t, r: ["train", "--sparsity", "1.5"], "--sparsity"),
    ("sparsity-word", lambda t, r: ["train", "--sparsity", "abc"], "invalid float"),
    ("sparsity-nan", lambda t, r: ["train", "--sparsity", "nan"], "--sparsity"),
    ("epochs-scale-tiny", lambda t, r: ["train", "--epochs-scale", "1e-9"], "--epochs-scale"),
    ("epochs-scale-negative", lambda t, r: ["train", "--epochs-scale", "-1"], "--epochs-scale"),
    ("epochs-scale-inf", lambda t, r: ["train", "--epochs-scale", "inf"], "--epochs-scale"),
    ("seed-huge", lambda t, r: ["train", "--seed", str(2**70)], "--seed"),
    ("seed-negative", lambda t, r: ["train", "--seed", "-1"], "--seed"),
    ("lr-negative", lambda t, r: ["train", "--lr", "-1"], "--lr"),
    ("lr-nan", lambda t, r: ["train", "--lr", "nan"], "--lr"),
    ("batch-size-zero", lambda t, r: ["train", "--batch-size", "0"], "--batch-size"),
    ("warmup-negative", lambda t, r: ["train", "--warmup-epochs", "-1"], "--warmup-epochs"),
    ("eta-below-1", lambda t, r: ["train", "--eta", "0.5"], "--eta"),
    ("exclude-typo", lambda t, r: ["train", "--exclude", "fc9"], "--exclude"),
    ("exclude-empty", lambda t, r: ["train", "--exclude", " , "], "--exclude"),
    ("layer-ceiling-below-target", lambda t, r: ["train", "--max-layer-sparsity", "0.5"], "--max-layer-sparsity"),
    ("layer-ceiling-above-1", lambda t, r: ["train", "--max-layer-sparsity", "1.5"], "--max-layer-sparsity"),
    ("lambda-negative", lambda t, r: ["train", "--lambda-init", "-5"], "--lambda-init"),
    ("lambda-auto-word", lambda t, r: ["train", "--lambda-init", "auto:abc"], "--lambda-init"),
    ("criterion-unknown", lambda t, r: ["train", "--criterion", "bogus"], "--criterion"),
    ("reg-unknown", lambda t, r: ["train", "--reg", "bogus"], "--reg"),
    ("method-unknown", lambda t, r: ["train", "--method", "bogus"], "--method"),
    ("model-unknown", lambda t, r: ["train", "--model", "alexnet"], "unknown model"),
    ("model-bad-depth", lambda t, r: ["train", "--model", "resnet18"], "6n+2"),
    ("dataset-unknown", lambda t, r: ["train", "--dataset", "nosuch"], "unknown dataset"),
    ("device-unknown", lambda t, r: ["train", "--set", "run.device=tpu"], "device"),
    ("lr-steps-words", lambda t, r: ["train", "--set", "schedule.lr_steps=a,b"], "lr_steps"),
    ("epoch-fraction-zero", lambda t, r: ["train", "--set", "schedule.epoch_fraction=0"], "epoch_fraction"),
    ("download-digits", lambda t, r: ["train", "--download"], "--download"),
    ("export-dense-json-name", lambda t, r: ["export", str(r), "--format", "dense", "--out", str(t / "x.json")],
     "name the state_dict .pt"),
    ("report-out-holds-a-user-figure", lambda t, r: ["report", str(r), "--out", str(_write(t / "mine" / "curves.png",
                                                                                         b"my own figure").parent)],
     "curves.png, which no hypersparse report wrote"),
    # trial 31l N003: the line called the figure "--out"
    ("report-again-where-a-figure-is-now-a-folder", lambda t, r: ["report", str(r), "--out", str(_figure_a_folder(
        r, t / "rep"))], "gradient.png there is a folder, where the report writes its gradient.png"),
    ("compare-twice", lambda t, r: ["train", "--compare", "gmp,oneshot,gmp"], "twice"),
    ("flag-not-applicable", lambda t, r: ["train", "--method", "gmp", "--eta", "1.1"], "--eta"),
    # train: --set and --config
    ("set-without-equals", lambda t, r: ["train", "--set", "foo"], "--set"),
    ("set-unknown-key", lambda t, r: ["train", "--set", "schedule.nosuch=1"], "nosuch"),
    ("set-bad-number", lambda t, r: ["train", "--set", "schedule.momentum=abc"], "momentum"),
    ("config-missing", lambda t, r: ["train", "--config", str(t / "none.toml")], "none.toml"),
    ("config-bad-toml", lambda t, r: ["train", "--config", str(_write(t / "c.toml", "[art\neta = "))], "c.toml"),
    ("config-bad-json", lambda t, r: ["train", "--config", str(_write(t / "c.json", "{\"art\": "))], "c.json"),
    ("config-unknown-key", lambda t, r: ["train", "--config", str(_write(t / "c.json", '{"art": {"nosuch": 1}}'))],
     "nosuch"),
    ("config-not-utf8", lambda t, r: ["train", "--config", str(_write(t / "c.toml", b"eta = \xff\xfe"))], "c.toml"),
    ("config-json-key-twice", lambda t, r: ["train", "--config", str(_write(
        t / "c.json", '{"sparsity": {"sparsity": 0.9, "sparsity": 0.5}}'))], "key 'sparsity' appears twice"),  # G014
    ("config-toml-key-twice", lambda t, r: ["train", "--config", str(_write(
        t / "c.toml", "[sparsity]\nsparsity = 0.9\nsparsity = 0.5\n"))], "c.toml"),
    ("config-is-a-list", lambda t, r: ["train", "--config", str(_write(t / "c.json", "[1, 2]"))], "c.json"),
    ("config-a-directory", lambda t, r: ["train", "--config", str(t)], "work"),
    # train: data
    ("data-dir-missing", lambda t, r: ["train", "--dataset", "mnist", "--data-dir", str(t / "no")], "does not exist"),
    ("data-dir-empty", lambda t, r: ["train", "--dataset", "mnist", "--data-dir", str(_readonly(t / "d"))],
     "missing"),
    ("data-mnist-wrong-count", lambda t, r: ["train", "--dataset", "mnist", "--data-dir",
                                             str(_mnist_folder(t / "m", 100))], "train-images-idx3-ubyte.gz"),
    ("data-not-gzip", lambda t, r: ["train", "--dataset", "fashion-mnist", "--data-dir",
                                    str(_write(t / "f" / "train-images-idx3-ubyte.gz", b"junk").parent)],
     "train-images"),
    ("data-cifar-junk", lambda t, r: ["train", "--dataset", "cifar10", "--data-dir", str(
        _write(t / "c" / "cifar-10-batches-py" / "data_batch_1", b"\x80\x04junk").parent.parent)], "cifar"),
    ("data-tinyimagenet-bad-wnids", lambda t, r: ["train", "--dataset", "tinyimagenet", "--data-dir",
                                                  str(_tiny_imagenet(t / "ti", wnids=b"\xff\xfe\n"))], "wnids.txt"),
    ("data-tinyimagenet-no-tab", lambda t, r: ["train", "--dataset", "tinyimagenet", "--data-dir",
                                               str(_tiny_imagenet(t / "ti", annotation="a.JPEG n01\n"))],
     "val_annotations.txt"),
    ("data-jpeg75-cache-corrupt", lambda t, r: ["train", "--dataset", "cifar10-jpeg75", "--data-dir", str(
        _write(t / "j" / "cifar10_jpeg75.decoded.bogus.npz", b"x").parent)], "cifar10_jpeg75"),
    # train: files and folders
    ("run-dir-is-a-file", lambda t, r: ["train", "--run-dir", str(_write(t / "afile", "x"))], "afile"),
    ("run-dir-read-only", lambda t, r: ["train", "--run-dir", str(_readonly(t / "ro") / "run")], "ro"),
    ("run-dir-not-empty", lambda t, r: ["train", "--run-dir", str(r)], "run"),
    ("run-dir-under-a-file", lambda t, r: ["train", "--run-dir", str(_write(t / "afile", "x") / "run")], "afile"),
    # trial 31i E008: "cannot write to run directory e8 (File exists)"
    ("run-dir-a-dangling-link", lambda t, r: ["train", "--run-dir", str(_dangling(t / "e8"))],
     "is a symbolic link to"),
    ("report-out-a-dangling-link", lambda t, r: ["report", str(r), "--out", str(_dangling(t / "e9"))],
     "is a symbolic link to"),
    ("pretrained-missing", lambda t, r: ["train", "--pretrained", str(t / "no.pt")], "no.pt"),
    ("pretrained-random-bytes", lambda t, r: ["train", "--pretrained", str(_write(t / "w.pt", os.urandom(256)))],
     "w.pt"),
    ("pretrained-a-list", lambda t, r: ["train", "--pretrained", str(_save(t / "w.pt", [1, 2]))], "w.pt"),
    # trial 31i P005: a NaN weight was trained from, and the run blamed the learning rate
    ("pretrained-nan", lambda t, r: ["train", "--pretrained", str(_save(t / "w.pt", {
        k: v.fill_(float("nan")) if k == "1.weight" else v for k, v in torch.load(
            r / "model.pt", weights_only=True).items()})), "--run-dir", str(t / "x")], "holds NaN or inf in 1.weight"),
    # trial 31l T2: a sparse tensor in a state_dict crashed in torch's dispatcher
    ("pretrained-sparse-coo-tensor", lambda t, r: ["train", "--pretrained", str(_save(t / "w.pt", {
        k: v.to_sparse() if k == "1.weight" else v for k, v in torch.load(
            r / "model.pt", weights_only=True).items()})), "--run-dir", str(t / "x")],
     "1.weight, which is a sparse_coo"),
    ("eval-model-pt-sparse-csr-tensor", lambda t, r: ["eval", str(_sparse_weight(r / "model.pt").parent)],
     "1.weight, which is a sparse_csr"),
    # trial 31m C72/C80/C279: a float8 weight is converted on load (its NaN check failed inside torch); meta and
    # nested tensors are refused
    ("eval-model-pt-meta-tensor", lambda t, r: ["eval", str(_save(r / "model.pt", {
        k: v.to("meta") if k == "1.weight" else v for k, v in torch.load(
            r / "model.pt", weights_only=True).items()}).parent)], "1.weight, which is on the meta device"),
    ("pretrained-nan-in-float8", lambda t, r: ["train", "--pretrained", str(_save(t / "w.pt", {
        k: v.fill_(float("nan")).to(torch.float8_e4m3fn) if k == "1.weight" else v for k, v in torch.load(
            r / "model.pt", weights_only=True).items()})), "--run-dir", str(t / "x")], "holds NaN or inf in 1.weight"),
    ("pretrained-wrong-shapes", lambda t, r: ["train", "--pretrained", str(_save(t / "w.pt", {"0.weight": torch.zeros(
        3, 3)}))], "w.pt"),
    ("resume-missing", lambda t, r: ["train", "--resume", str(t / "none")], "none"),
    # trial 31h G230, X208, G221: an empty flag meant its default; a relative --plugin was blamed on the user's code
    ("run-dir-empty", lambda t, r: ["train", "--run-dir", ""], "--run-dir is empty"),
    ("export-out-empty", lambda t, r: ["export", str(r), "--out", ""], "--out is empty"),
    ("plugin-relative", lambda t, r: ["train", "--plugin", ".rel"], "a relative module name"),
    ("resume-no-checkpoint", lambda t, r: ["train", "--resume", str(_readonly(t / "empty"))], "no checkpoint"),
    ("resume-random-checkpoint", lambda t, r: ["train", "--resume", str(_corrupt(r, "checkpoint.pt"))],
     "checkpoint.pt"),
    ("resume-momentum-wrong-shape", lambda t, r: ["train", "--resume", str(_edit_checkpoint(
        r, _momentum_of_wrong_shape))], "momentum_buffer has shape (3, 3)"),
    # trial 31i Q007: the message stopped at "Error(s) in loading state_dict for MLP:", before what is wrong
    ("resume-model-weight-wrong-shape", lambda t, r: ["train", "--resume", str(_edit_checkpoint(
        r, lambda c: c["model"].update({"1.weight": torch.zeros(3, 3)})))], "size mismatch for 1.weight"),
    # trial 31f Q013, Q014, Q019: a negative cut, a rank above the weights, an int32 momentum were taken
    ("resume-regularizer-cut-negative", lambda t, r: ["train", "--resume", str(_edit_checkpoint(
        r, lambda c: c["method"]["regularizer"].update(t=torch.tensor(-1.0))))], "regularizer.t"),
    ("resume-regularizer-rank-huge", lambda t, r: ["train", "--resume", str(_edit_checkpoint(
        r, lambda c: c["method"]["regularizer"].update(rank=torch.tensor(10**12))))], "regularizer.rank"),
    ("resume-momentum-int32", lambda t, r: ["train", "--resume", str(_edit_checkpoint(r, _momentum_int))],
     "momentum_buffer is torch.int32, not a floating-point tensor"),
    # trial 31f Q006: a mask of another shape in ART's state was taken
    ("resume-art-mask-shape", lambda t, r: ["train", "--resume", str(_edit_checkpoint(
        r, lambda c: c["method"]["masks"].update({"1.weight": torch.ones(3, 3, dtype=torch.bool)})))],
     "masks are not bool masks of this model's prunable weights"),
    # trial 31g T4: a regularization count past the limit overflowed eta ** reg_epochs
    ("resume-reg-epochs-huge", lambda t, r: ["train", "--resume", str(_edit_checkpoint(
        r, lambda c: c["method"].update(reg_epochs=10**6)))], "reg_epochs is 1000000"),
    # trial 31g Q124: a metrics list shorter than the method's epochs resumed, exit 0, the summary's counts wrong
    ("resume-metrics-short", lambda t, r: ["train", "--resume", str(_edit_checkpoint(
        r, lambda c: c.update(metrics=c["metrics"][:-2])))], "but its method has run"),
    # a checkpoint whose own settings hash otherwise now (a version's change) was said to be another run's
    ("resume-another-version", lambda t, r: ["train", "--resume", str(_edit_checkpoint(
        r, lambda c: c.update(identity="0" * 16)))], "was written by another version of hypersparse"),
    ("resume-no-such-folder", lambda t, r: ["train", "--resume", str(t / "nosuchrun")], "is not a folder"),
    ("resume-weights-inf", lambda t, r: ["train", "--resume", str(_edit_checkpoint(r, _weights_inf))], "NaN or inf"),
    # trial 31f T1: a statistics state of the wrong length or type was a traceback at the next collection
    ("resume-stats-keep-short", lambda t, r: ["train", "--resume", str(_edit_checkpoint(r, lambda c: c["stats"].update(
        prev_keep=torch.ones(100, dtype=torch.bool))))], "stats.prev_keep"),
    ("resume-stats-keep-float", lambda t, r: ["train", "--resume", str(_edit_checkpoint(r, lambda c: c["stats"].update(
        prev_keep=c["stats"]["prev_keep"].float())))], "stats.prev_keep"),
    ("resume-weights-complex", lambda t, r: ["train", "--resume", str(_edit_checkpoint(r, _weights_complex))],
     "complex64, the model's is torch.float32"),
    ("config-nul-in-a-path", lambda t, r: ["train", "--config", str(_write(
        t / "c.json", '{"model": {"pretrained": "a\\u0000b"}}'))], "NUL"),
    ("eval-wrapped-state-dict", lambda t, r: ["eval", str(_state_dict_file(t / "w.pt", lambda sd: {"state_dict": sd})),
                                              "--model", "mlp", "--dataset", "digits"], "wraps a state_dict"),
    # trial 31h Q213: a complex weight was taken, torch keeping its real part with a warning
    ("eval-complex-state-dict", lambda t, r: ["eval", str(_state_dict_file(t / "c.pt", lambda sd: {
        k: v.to(torch.complex64) if k.endswith("weight") else v for k, v in sd.items()})), "--model", "mlp",
        "--dataset", "digits"], "as torch.complex64"),
    ("eval-ddp-prefixed-state-dict", lambda t, r: ["eval", str(_state_dict_file(
        t / "d.pt", lambda sd: {"module." + k: v for k, v in sd.items()})), "--model", "mlp", "--dataset", "digits"],
     "'module.' prefix"),
    ("resume-version-a-str", lambda t, r: ["train", "--resume", str(_edit_checkpoint(
        r, lambda c: c.update(version=str(c["version"]))))], "a str, where an integer"),  # trial 31d K_ver_str
    ("resume-checkpoint-a-list", lambda t, r: ["train", "--resume", str(_replace_pt(r, "checkpoint.pt", [1]))],
     "checkpoint.pt"),
    ("resume-with-flag", lambda t, r: ["train", "--resume", str(r), "--sparsity", "0.5"], "--sparsity"),
    # eval
    ("eval-missing", lambda t, r: ["eval", str(t / "none")], "none"),
    ("eval-other-model", lambda t, r: ["eval", str(r), "--model", "lenet300"], "lenet300"),
    ("eval-pt-a-list", lambda t, r: ["eval", str(_save(t / "m.pt", [1, 2])), "--dataset", "digits", "--model", "mlp"],
     "m.pt"),
    ("eval-pt-truncated", lambda t, r: ["eval", str(_truncate(r, "model.pt"))], "model.pt"),
    ("eval-safetensors-random", lambda t, r: ["eval", str(_write(t / "m.safetensors", os.urandom(300))),
                                              "--dataset", "digits", "--model", "mlp"],
     "m.safetensors"),
    ("eval-safetensors-header-huge", lambda t, r: ["eval", str(_write(t / "m.safetensors", struct.pack(
        "<Q", 2**40) + b"{}")), "--dataset", "digits", "--model", "mlp"], "m.safetensors"),
    ("eval-sparse-layout-not-json", lambda t, r: ["eval", str(_sparse(t, r, layout="{"))], "s.safetensors"),
    ("eval-sparse-layout-bad-enc", lambda t, r: ["eval", str(_sparse(t, r, layout=_edit_layout(
        lambda m: m.update(enc="zip"))))], "s.safetensors"),
    ("eval-sparse-layout-bad-shape", lambda t, r: ["eval", str(_sparse(t, r, layout=_edit_layout(
        lambda m: m.update(shape=[2**40, 2**20]))))], "s.safetensors"),
    ("eval-sparse-layout-bad-dtype", lambda t, r: ["eval", str(_sparse(t, r, layout=_edit_layout(
        lambda m: m.update(dtype="object"))))], "s.safetensors"),
    ("eval-sparse-other-arch", lambda t, r: ["eval", str(_sparse(t, r, arch=lambda a: dict(a, model="lenet300")))],
     "s.safetensors"),
    ("eval-sparse-huge-image", lambda t, r: ["eval", str(_sparse(t, r, arch=lambda a: dict(a, image_size=2**24)))],
     "s.safetensors"),
    ("eval-sparse-unknown-model", lambda t, r: ["eval", str(_sparse(t, r, arch=lambda a: dict(a, model="nosuch")))],
     "s.safetensors"),
    ("eval-config-corrupt", lambda t, r: ["eval", str(_corrupt(r, "config.json"))], "config.json"),
    ("eval-summary-corrupt", lambda t, r: ["eval", str(_corrupt(r, "summary.json"))], "summary.json"),
    ("eval-unknown-dataset", lambda t, r: ["eval", str(r), "--dataset", "nosuch"], "nosuch"),
    ("eval-device-unknown", lambda t, r: ["eval", str(r), "--device", "tpu"], "tpu"),
    ("eval-fast-zero", lambda t, r: ["eval", str(r), "--fast", "0"], "--fast"),
    # trial 31e Y003: a tune study's folder was taken for a model file ("pass --dataset and --model")
    ("eval-a-study-folder", lambda t, r: ["eval", str(_write(t / "study" / "study.db", "x").parent)],
     "is not a run directory (no config.json) (a tune study"),
    ("eval-fast-not-a-number", lambda t, r: ["eval", str(r), "--fast", "many"], "--fast"),
    # export
    ("export-missing", lambda t, r: ["export", str(t / "none")], "none"),
    ("export-out-missing-folder", lambda t, r: ["export", str(r), "--out", str(t / "no" / "m.safetensors")], "no"),
    ("export-out-a-directory", lambda t, r: ["export", str(r), "--out", str(t)], "work"),
    ("export-out-read-only", lambda t, r: ["export", str(r), "--out", str(_readonly(t / "ro") / "m.safetensors")],
     "ro"),
    ("export-out-under-a-file", lambda t, r: ["export", str(r), "--out", str(_write(t / "afile", "x") / "m")],
     "afile"),
    ("export-summary-corrupt", lambda t, r: ["export", str(_corrupt(r, "summary.json"))], "summary.json"),
    ("export-no-summary", lambda t, r: ["export", str(_remove(r, "summary.json"))], "summary.json"),
    ("export-model-truncated", lambda t, r: ["export", str(_truncate(r, "model.pt"))], "model.pt"),
    # trial 31f S1/X010: the dense format's JSON beside --out replaced the run's summary.json or config.json
    ("export-dense-json-over-summary", lambda t, r: ["export", str(r), "--format", "dense", "--out",
                                                     str(r / "summary.pt")], "would write summary.json beside it"),
    ("export-dense-json-over-config", lambda t, r: ["export", str(r), "--format", "dense", "--out",
                                                    str(r / "config")], "would write config.json beside it"),
    ("export-out-the-runs-lock", lambda t, r: ["export", str(r), "--out", str(r / ".hypersparse.lock")],
     "the run's own .hypersparse.lock"),
    # trial 31f X043: another run's files were not protected
    ("export-out-another-runs-summary", lambda t, r: ["export", str(r), "--out", str(_copy_run(r, t / "other") /
                                                                                    "summary.json")],
     "is another run's"),
    # trial 31i T017/T019: a tune study's best.json and study.db were replaced
    ("export-out-a-studys-best-json", lambda t, r: ["export", str(r), "--out", str(
        _write(t / "study" / "study.db", "x").parent / "best.json")], "is the tune study's best.json"),
    ("export-out-a-studys-db", lambda t, r: ["export", str(r), "--out", str(_write(t / "study" / "study.db", "x"))],
     "is the tune study's study.db"),
    ("export-out-a-studys-journal", lambda t, r: ["export", str(r), "--out", str(
        _write(t / "study" / "study.db", "x").parent / "study.db-journal")], "is the tune study's study.db-journal"),
    # trial 31k J008: a torch pickle was written under a .safetensors name
    ("export-dense-named-safetensors", lambda t, r: ["export", str(r), "--format", "dense", "--out",
                                                     str(t / "x.safetensors")], "give --format sparse"),
    ("export-out-dash", lambda t, r: ["export", str(r), "--format", "sparse", "--out", "-"],
     "--out - is not stdout here; name a file"),  # trial 31d H006: wrote a file named "-"
    ("report-out-dash", lambda t, r: ["report", str(r), "--out", "-"], "--out - is not stdout here; name a folder"),
    ("export-summary-3-class-names", lambda t, r: ["export", str(_edit_summary(r, lambda s: s.update(
        input=dict(s["input"], classes=["a", "b", "c"])))), "--format", "sparse"],
     "input.classes names 3 classes, but arch.num_classes (the model's outputs) is 10"),  # trial 31d X006
    # trial 31i S008/S018: counts that cannot be were printed as they were
    ("export-summary-dense-kept-too-many", lambda t, r: ["export", str(_edit_summary(r, lambda s: s["dense"].update(
        kept=10**7))), "--format", "sparse"], "dense.kept is 10000000, more than the model's"),
    ("export-summary-sparsity-not-its-counts", lambda t, r: ["export", str(_edit_summary(
        r, lambda s: s["sparse"].update(sparsity=0.5))), "--format", "sparse"], "sparse.sparsity is 0.5, but"),
    # trial 31k F009: a model chosen at an epoch beyond the run's was printed as it was
    ("report-summary-dense-epoch-beyond-the-run", lambda t, r: ["report", str(_edit_summary(
        r, lambda s: s["dense"].update(epoch=10**6))), "--out", str(t / "rep")],
     "dense.epoch is 1000000, beyond the run's"),
    ("export-format-unknown", lambda t, r: ["export", str(r), "--format", "zip"], "--format"),
    # report
    ("report-missing", lambda t, r: ["report", str(t / "none")], "none"),
    ("report-not-a-run", lambda t, r: ["report", str(_readonly(t / "empty"))], "empty"),
    ("report-out-a-file", lambda t, r: ["report", str(r), "--out", str(_write(t / "f.txt", "x"))], "f.txt"),
    ("report-metrics-garbage", lambda t, r: ["report", str(_garble(r, "metrics.jsonl"))], "metrics.jsonl"),
    # trial 31l C044/C045: rows out of order or repeated (two writers, or an edit) were drawn as curves
    ("report-metrics-rows-swapped", lambda t, r: ["report", str(_edit_rows(r, lambda rows: rows[1::-1] + rows[2:])),
                                                  "--out", str(t / "rep")],
     "row 1 is epoch 1, where the run's epoch 0"),
    ("report-metrics-row-repeated", lambda t, r: ["report", str(_edit_rows(r, lambda rows: rows[:2] + rows[1:])),
                                                  "--out", str(t / "rep")],
     "row 3 is epoch 1, where the run's epoch 2"),
    # trial 31l C016/C025: summary.json of other settings than config.json's was read as this run's
    ("report-summary-of-another-run", lambda t, r: ["report", str(_edit_summary(
        r, lambda s: s["config"]["sparsity"].update(sparsity=0.5))), "--out", str(t / "rep")],
     "(first difference: sparsity.sparsity); the folder holds files of two runs"),
    # trial 31l H028: one of the dense model's pair of counts
    ("eval-summary-dense-kept-without-sparsity", lambda t, r: ["eval", str(_edit_summary(
        r, lambda s: s["dense"].pop("sparsity")))], "dense.sparsity is missing, but dense.kept is there"),
    ("report-config-corrupt", lambda t, r: ["report", str(_corrupt(r, "config.json"))], "config.json"),
    ("report-stats-empty", lambda t, r: ["report", str(_write(r / "stats.jsonl", "").parent)],
     "stats.jsonl is empty or damaged"),  # trial 31d R005: was "has no stats.jsonl"
    # trial 31l C055: magnitudes below zero and out of order were drawn as they were
    ("report-stats-negative-magnitudes", lambda t, r: ["report", str(_edit_stats(r, lambda row: row.update(
        sorted_magnitudes=[-v for v in row["sorted_magnitudes"]]))), "--out", str(t / "rep")],
     "sorted_magnitudes must be magnitudes (>= 0) in increasing order"),
    ("report-stats-cut-mid-line", lambda t, r: ["report", str(_write(r / "stats.jsonl", '{"epoch": 1, "ph').parent)],
     "stats.jsonl is empty or damaged"),
    # tune
    ("tune-study-dir-a-file", lambda t, r: ["tune", "--study-dir", str(_write(t / "afile", "x")), "--trials", "1"],
     "afile"),
    ("tune-study-dir-read-only", lambda t, r: ["tune", "--study-dir", str(_readonly(t / "ro") / "s"), "--trials", "1"],
     "ro"),
    ("tune-study-dir-under-a-file", lambda t, r: ["tune", "--study-dir", str(_write(t / "afile", "x") / "s"),
                                                  "--trials", "1"], "afile"),
    ("report-out-under-a-file", lambda t, r: ["report", str(r), "--out", str(_write(t / "afile", "x") / "o")],
     "afile"),
    ("tune-storage-bogus", lambda t, r: ["tune", "--storage", "bogus://x", "--study-dir", str(t / "s"), "--trials",
                                        "1"], "--storage"),
    ("tune-lambda-range-word", lambda t, r: ["tune", "--lambda-range", "a,b", "--study-dir", str(t / "s")],
     "--lambda-range"),
    ("tune-eta-range-reversed", lambda t, r: ["tune", "--eta-range", "1.5,1.1", "--study-dir", str(t / "s")],
     "--eta-range"),
    ("tune-trials-zero", lambda t, r: ["tune", "--trials", "0", "--study-dir", str(t / "s")], "--trials"),
    ("tune-trials-huge", lambda t, r: ["tune", "--trials", str(10**30), "--study-dir", str(t / "s")], "--trials"),
    ("tune-eta-range-below-eta", lambda t, r: ["tune", "--eta-range", "0.5,2", "--study-dir", str(t / "s")],
     "--eta-range 0.5,2"),
    ("tune-storage-a-text-file", lambda t, r: ["tune", "--storage", f"sqlite:///{_write(t / 'notes.txt', 'mine')}",
                                               "--study-dir", str(t / "s"), "--trials", "1"], "notes.txt"),
    ("tune-study-db-garbage", lambda t, r: ["tune", "--study-dir", str(_write(t / "s" / "study.db", "x").parent),
                                            "--trials", "1"], "study.db"),
    ("tune-not-art", lambda t, r: ["tune", "--method", "gmp", "--study-dir", str(t / "s")], "--method gmp"),
]


def _save(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


def _sparse_weight(path: Path) -> Path:
    """``path``'s state_dict with 1.weight as a sparse CSR tensor (made without torch's beta warning)."""
    import warnings

    state = torch.load(path, weights_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state["1.weight"] = state["1.weight"].to_sparse_csr()
    return _save(path, state)


def _corrupt(run: Path, name: str) -> Path:
    _write(run / name, os.urandom(64) if name.endswith(".pt") else "{not json")
    return run


def _truncate(run: Path, name: str) -> Path:
    data = (run / name).read_bytes()
    (run / name).write_bytes(data[: len(data) // 2])
    return run


def _replace_pt(run: Path, name: str, obj) -> Path:
    torch.save(obj, run / name)
    return run


def _copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def _edit_checkpoint(run: Path, edit) -> Path:
    """The run's checkpoint with ``edit(checkpoint)`` applied (a damaged or forged one, still weights-only)."""
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    edit(ckpt)
    torch.save(ckpt, run / "checkpoint.pt")
    return run


def _momentum_of_wrong_shape(ckpt) -> None:
    state = ckpt["optimizer"]["state"]
    state[next(iter(state))]["momentum_buffer"] = torch.zeros(3, 3)


def _momentum_int(ckpt) -> None:
    state = ckpt["optimizer"]["state"]
    first = state[next(iter(state))]
    first["momentum_buffer"] = first["momentum_buffer"].to(torch.int32)


def _weights_inf(ckpt) -> None:
    ckpt["model"][next(k for k in ckpt["model"] if k.endswith("weight"))].fill_(float("inf"))


def _weights_complex(ckpt) -> None:
    name = next(k for k in ckpt["model"] if k.endswith("weight"))
    ckpt["model"][name] = ckpt["model"][name].to(torch.complex64)


def _state_dict_file(path: Path, wrap) -> Path:
    """A state_dict of the digits MLP, saved the way ``wrap`` changes it (nested, prefixed)."""
    from hypersparse.models import create_model

    torch.save(wrap(create_model("mlp", 10, 1, 8).state_dict()), path)
    return path


def _dangling(link: Path) -> Path:
    link.symlink_to(link.parent / "nowhere")
    return link


def _figure_a_folder(run: Path, out: Path) -> Path:
    """A report of ``run`` in ``out`` whose gradient.png was then replaced by a folder holding the user's note."""
    assert main(["report", str(run), "--out", str(out)]) == 0
    (out / "gradient.png").unlink()
    (out / "gradient.png").mkdir()
    (out / "gradient.png" / "note.txt").write_text("mine")
    return out


def _edit_stats(run: Path, edit) -> Path:
    """The run with ``edit`` applied to the first row of its stats.jsonl."""
    rows = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    edit(rows[0])
    (run / "stats.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return run


def _edit_rows(run: Path, edit) -> Path:
    """The run with its metrics.jsonl rows (as lines) rearranged by ``edit``."""
    rows = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run / "metrics.jsonl").write_text("".join(edit(rows)))
    return run


def _edit_summary(run: Path, edit) -> Path:
    summary = json.loads((run / "summary.json").read_text())
    edit(summary)
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def _remove(run: Path, name: str) -> Path:
    (run / name).unlink()
    return run


def _garble(run: Path, name: str) -> Path:
    lines = (run / name).read_text().splitlines()
    lines[1] = "{garbage"
    (run / name).write_text("\n".join(lines) + "\n")
    return run


def _sparse(tmp: Path, run: Path, **edit) -> Path:
    path = run / "s.safetensors"  # beside the run's config.json, which names the data
    _sparse_with(path, run / "model.sparse.safetensors", **edit)
    return path


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


# root writes into a read-only folder, so those cases test nothing there; the "under-a-file" cases run everywhere
_AS_ROOT = pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores folder permissions")


@pytest.mark.parametrize("build,needle", [pytest.param(*c[1:], id=c[0], marks=_AS_ROOT if "read-only" in c[0] else ())
                                          for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(build, needle, finished, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    monkeypatch.chdir(work)  # a default run folder would appear here
    argv = build(work, run)
    if argv[0] in ("train", "tune") and "--resume" not in argv and "--epochs-scale" not in argv:
        argv += QUICK
    before = _snapshot(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    finally:
        for p in tmp_path.rglob("*"):
            if p.is_dir():
                p.chmod(0o755)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert needle in lines[0], err
    after = _snapshot(tmp_path)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, changed


def test_at_least_sixty_distinct_bad_inputs():
    assert len({c[0] for c in CASES}) == len(CASES) >= 60


def test_any_damaged_pt_file_is_one_refusal(tmp_path):
    """Random bytes make torch's weights-only unpickler fail in many ways (an empty stack, a missing memo key, a
    protocol it guesses at with a warning): every one of 2,000 seeded files is one UserError, and nothing else."""
    import random
    import warnings

    from hypersparse.checkpoint import load_checkpoint
    from hypersparse.errors import UserError

    rng = random.Random(0)
    path = tmp_path / "w.pt"
    for _ in range(2000):
        path.write_bytes(rng.randbytes(256))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a warning would be a second line on stderr
            with pytest.raises(UserError, match="w.pt"):
                load_checkpoint(path)


def test_snip_from_an_all_zero_pretrained_model_is_defined(finished, tmp_path, capsys):
    """Every product |dL/dw * w| is zero: SNIP's scores are zero, not 0/0 = NaN read as a diverged run."""
    from conftest import run_cli

    zero = _save(tmp_path / "zero.pt", {k: torch.zeros_like(v) for k, v in
                                        torch.load(finished / "model.pt", weights_only=True).items()})
    code, err = run_cli(["train", "--pretrained", str(zero), "--method", "snip", "--run-dir", str(tmp_path / "r"),
                         "--set", "run.stats=false", *QUICK], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["sparse"]["val_acc"] == summary["sparse"]["val_acc"]  # a number, not NaN


def _hf_config(folder: Path, **sizes) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "vit", "hidden_size": 8, "num_hidden_layers": 1,
                                                    "num_attention_heads": 1, "intermediate_size": 8,
                                                    "image_size": 8, "patch_size": 4, "num_channels": 1, **sizes}))
    return folder


@pytest.mark.parametrize("sizes,needle", [
    ({"hidden_size": 10**8, "num_hidden_layers": 1000, "intermediate_size": 10**6}, "GiB of weights, more than"),
    ({"num_hidden_layers": 10**6}, "num_hidden_layers 1000000, more than the 1000 layers"),
])
def test_hf_config_asking_for_a_huge_model_is_one_line(tmp_path, capsys, monkeypatch, sizes, needle):
    """Counted on the meta device before anything is allocated (trial31 H001: a 45-line allocation traceback)."""
    from conftest import run_cli

    pytest.importorskip("transformers")
    monkeypatch.chdir(tmp_path)
    _hf_config(tmp_path / "big", **sizes)
    code, err = run_cli(["train", "--model", "hf:big", "--run-dir", "r", *QUICK], capsys, seconds=120)
    assert (code, len(err)) == (2, 1) and needle in err[0] and "hf:big" in err[0], err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("sizes,needle", [
    ({"hidden_size": -16}, "torch cannot build the model its config.json describes"),
    ({"attn_implementation": "flash_attention_2"}, "asks for a package that is not installed"),
])
def test_hf_config_that_transformers_or_torch_refuse_is_one_line(tmp_path, capsys, monkeypatch, sizes, needle):
    """Trial 31g T5: a config.json with a negative size, or one naming flash attention without its package, ended in
    torch's RuntimeError or transformers' ImportError."""
    from conftest import run_cli

    pytest.importorskip("transformers")
    if sizes.get("attn_implementation") and __import__("importlib").util.find_spec("flash_attn"):
        pytest.skip("flash_attn is installed")
    monkeypatch.chdir(tmp_path)
    _hf_config(tmp_path / "cfg", **sizes)
    code, err = run_cli(["train", "--model", "hf:cfg", "--run-dir", "r", *QUICK], capsys, seconds=120)
    assert code == 2 and len(err) == 1 and "hf:cfg" in err[0] and needle in err[0], err
    assert not (tmp_path / "r").exists()


def test_hf_build_out_of_memory_is_one_line(tmp_path, capsys, monkeypatch):
    """Weights within the count's bound can still fail to allocate (other memory in use): one line, exit 2."""
    from conftest import run_cli

    transformers = pytest.importorskip("transformers")
    from hypersparse.models import hf

    build = transformers.AutoModelForImageClassification.from_config

    def fails_off_meta(*args, **kwargs):
        if torch.empty(0).device.type != "meta":
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory")
        return build(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForImageClassification, "from_config", fails_off_meta)
    monkeypatch.setattr(hf, "_memory_bytes", lambda: 2**40)
    monkeypatch.chdir(tmp_path)
    _hf_config(tmp_path / "cfg")
    code, err = run_cli(["train", "--model", "hf:cfg", "--run-dir", "r", *QUICK], capsys, seconds=120)
    assert (code, len(err)) == (2, 1) and "hf:cfg: not enough memory to build" in err[0], err
    assert not (tmp_path / "r").exists()


def test_hf_weights_in_a_pickle_that_names_code_are_one_line_and_nothing_runs(tmp_path, capsys, monkeypatch):
    """Trial 31f T5: a pytorch_model.bin naming a global (os.system) was refused by torch's weights-only load, as it
    should be, but the UnpicklingError escaped as a traceback."""
    import pickle

    from conftest import run_cli

    pytest.importorskip("transformers")
    monkeypatch.chdir(tmp_path)
    folder = _hf_config(tmp_path / "planted")
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"w": Payload()}))
    code, err = run_cli(["train", "--model", "hf:planted", "--run-dir", "r", *QUICK], capsys, seconds=120)
    assert (code, len(err)) == (2, 1) and "pytorch_model.bin cannot be read as plain weights" in err[0], err
    assert not marker.exists() and not (tmp_path / "r").exists()


def test_an_hf_config_naming_its_own_code_runs_none_of_it_even_when_asked_at_a_terminal(tmp_path):
    """Review of issue 31: a config.json with auto_map names Python files beside it; transformers, not told
    otherwise, asked "Do you wish to run the custom code? [y/N]" at a terminal, and "y" ran them. hypersparse says
    no itself (trust_remote_code=False), so no prompt is shown and nothing runs, whatever is typed."""
    import pty
    import subprocess
    import sys

    pytest.importorskip("transformers")
    folder, marker = tmp_path / "planted", tmp_path / "ran"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "plantedcfg", "architectures": ["PlantedModel"],
        "auto_map": {"AutoConfig": "planted.PlantedConfig",
                     "AutoModelForImageClassification": "planted.PlantedModel"}}))
    (folder / "planted.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
                                       "from transformers import PretrainedConfig\n"
                                       "class PlantedConfig(PretrainedConfig):\n    model_type = 'plantedcfg'\n")
    master, slave = pty.openpty()
    try:
        os.write(master, b"y\ny\n")  # an answer waiting at the terminal, should anything ask
        done = subprocess.run([sys.executable, "-m", "hypersparse", "train", "--model", f"hf:{folder}", "--run-dir",
                               str(tmp_path / "r"), *QUICK], stdin=slave, capture_output=True, text=True,
                              timeout=120)
    finally:
        os.close(master)
        os.close(slave)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "names Python code of its own (auto_map)" in lines[0], lines
    assert not marker.exists() and not (tmp_path / "r").exists()


def _started(hs, model):
    """An ARTDriver past its warm-up on ``model``, as a loop would have it at the first regularization epoch."""
    driver = hs.ARTDriver(0.9, warmup_epochs=0)
    driver.start(model, torch.optim.SGD(model.parameters(), lr=0.1))
    return driver


def _mlp():
    from conftest import make_mlp

    return make_mlp((64, 32, 10))


def _weight_normed(_masked):
    """A fresh MLP with weight_norm on its first Linear: its ``weight`` is recomputed at each forward."""
    from torch.nn.utils.parametrizations import weight_norm

    from conftest import make_mlp

    model = make_mlp((64, 32, 10))
    weight_norm(model[0] if isinstance(model[0], torch.nn.Linear) else model[1])
    return model


def _masked_mlp():
    import hypersparse as hs

    from conftest import make_mlp

    model = make_mlp((64, 32, 10))
    hs.apply_masks_(model, hs.magnitude_masks(model, 0.9))
    return model


def _with_nan(model):
    weight = next(p for p in model.parameters() if p.dim() == 2)
    with torch.no_grad():
        weight.view(-1)[int(torch.nonzero(weight.view(-1))[0])] = float("nan")  # a kept weight
    return model


@pytest.mark.parametrize("call,error,needle", [
    (lambda hs, m: hs.sparse_inference(m.half(), torch.randn(4, 64).half()), ValueError, "float32"),
    (lambda hs, m: hs.sparse_inference(m, torch.randn(4, 64), reps=0), ValueError, "reps"),
    # trial 31i A040, A128: an int key, and a tensor in arch, failed deep inside with messages naming neither
    (lambda hs, m: hs.apply_masks_(m, {0: torch.ones(32, 64, dtype=torch.bool)}), TypeError, "got the key 0"),
    (lambda hs, m: hs.save_sparse(m, "/tmp/hs-a128.safetensors", arch={"model": torch.zeros(1)}), TypeError,
     "arch and inputs must hold JSON values"),
    # trial 31h I117: a NaN in a kept weight gave finite outputs where the model's were NaN
    (lambda hs, m: hs.sparse_inference(_with_nan(m), torch.randn(4, 64)), ValueError, r"\S+weight holds NaN or inf"),
    (lambda hs, m: hs.apply_masks_(m, {**hs.magnitude_masks(m, 0.9), "nope.weight": torch.ones(3, dtype=torch.bool)}),
     ValueError, "nope.weight"),
    (lambda hs, m: hs.L2(m, 0.9), TypeError, "take no sparsity"),
    (lambda hs, m: hs.apply_masks_(m, hs.magnitude_masks(m, 0.9), torch.optim.SGD([torch.zeros(2, requires_grad=True)],
                                                                                  lr=0.1)), ValueError, "none of"),
    (lambda hs, m: hs.magnitude_masks(m, 0.9, scope="layer", max_layer_sparsity=0.5), ValueError,
     "max_layer_sparsity"),
    (lambda hs, m: hs.apply_masks_(_weight_normed(m), hs.magnitude_masks(m, 0.9)), ValueError,
     "computed from other tensors"),
    (lambda hs, m: hs.HyperSparse(_weight_normed(m), 0.9), ValueError, "computed from other tensors"),
    # trial 31f A042, G112: a missing folder named the temporary file; a name ending in a slash wrote a file
    (lambda hs, m: hs.save_sparse(m, "/nonexistent-folder-hs42/m.safetensors"), FileNotFoundError,
     "no such folder to write into: '/nonexistent-folder-hs42'"),
    (lambda hs, m: hs.save_sparse(m, "/nonexistent-folder-hs42/"), IsADirectoryError, "ends in a slash"),
    # trial 31f C016, C017: an accuracy above 1 was taken; a driver started on a second model kept the first's method
    (lambda hs, m: _started(hs, m).end_epoch(m, lambda _: 1.5), ValueError, "between 0 and 1"),
    (lambda hs, m: _started(hs, m).start(_mlp(), None), ValueError, "started on another model"),
    # trial 31f T7: a loop hook before start() was an AttributeError on None
    (lambda hs, m: hs.ARTDriver(0.9).before_step(), RuntimeError, r"call start\(model, optimizer\) before"),
])
def test_api_misuse_is_a_clear_exception_naming_the_argument(call, error, needle):
    """Misuse found by the adversarial trial of issue 31 (trial 31b): each is one clear ValueError or TypeError
    naming what is wrong, raised at the call, never a crash later (a wrong dtype deep in a kernel, an optimizer that
    quietly revives pruned weights, a ceiling ignored)."""
    import hypersparse as hs

    with pytest.raises(error, match=needle):
        call(hs, _masked_mlp())


def test_a_sparse_file_whose_row_repeats_a_column_is_refused(finished, tmp_path, capsys):
    """Trial 31b, N179: a CSR tensor whose row names one column twice would load with one weight lost; the file is
    refused as not holding the tensor it declares."""
    import numpy as np
    from safetensors import safe_open
    from safetensors.torch import save_file

    src = finished / "model.sparse.safetensors"
    with safe_open(str(src), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    layout = json.loads(meta["layout"])
    name = next(n for n, m in layout.items() if m["enc"] == "csr")
    col = tensors[f"{name}::col"].numpy().view(np.dtype(layout[name]["col"])).copy()
    rowptr = tensors[f"{name}::rowptr"].numpy().view(np.dtype(layout[name]["rowptr"])).astype(np.int64)
    row = next(r for r in range(len(rowptr) - 1) if rowptr[r + 1] - rowptr[r] >= 2)
    col[rowptr[row] + 1] = col[rowptr[row]]
    tensors[f"{name}::col"] = torch.from_numpy(col.view(np.uint8).copy())
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    bad = run / "dup.sparse.safetensors"  # beside the run's config.json, which names the data
    save_file(tensors, str(bad), metadata=meta)
    code = main(["eval", str(bad)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and name in err[0], err


def _foreign_onnx(run: Path, kind: str, record: str | None = None) -> Path:
    """An ONNX file written by someone else into a copy of the digits run (with hypersparse's input record, so eval
    takes it): ``argmax`` gives class ids instead of scores, ``half`` takes float16 input, ``loop`` runs a Loop of
    10**15 iterations before its scores."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    record = record or json.dumps({"layout": "NCHW", "pixel_range": [0.0, 255.0], "mean": [78.0], "std": [96.0],
                                   "classes": None})
    dtype = TensorProto.FLOAT16 if kind == "half" else TensorProto.FLOAT
    classes = 3 if kind == "three" else 10
    w = helper.make_tensor("W", dtype, [64, classes], [0.01] * 64 * classes)
    nodes = [helper.make_node("Flatten", ["input"], ["f"]), helper.make_node("MatMul", ["f", "W"], ["lin"])]
    out = helper.make_tensor_value_info("logits", dtype, None)
    if kind == "argmax":
        nodes.append(helper.make_node("ArgMax", ["lin"], ["logits"], axis=1, keepdims=0))
        out = helper.make_tensor_value_info("logits", TensorProto.INT64, None)
    elif kind == "loop":
        body = helper.make_graph(
            [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
             helper.make_node("Identity", ["v_in"], ["v_out"])],
            "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                     helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                     helper.make_tensor_value_info("v_in", TensorProto.FLOAT, None)],
            [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
             helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)])
        trips = helper.make_tensor("n", TensorProto.INT64, [], [10**15])
        nodes += [helper.make_node("Constant", [], ["n"], value=trips),
                  helper.make_node("Constant", [], ["c"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True])),
                  helper.make_node("Loop", ["n", "c", "lin"], ["logits"], body=body)]
    else:
        nodes[-1] = helper.make_node("MatMul", ["f", "W"], ["logits"])
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", dtype, ["N", 1, 8, 8])], [out], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"hypersparse.input": record})
    path = run / "model.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("kind,needle", [("argmax", "not one row of class scores"),
                                         ("half", "does not run on this data in onnxruntime"),
                                         ("three", "scores 3 classes, the data has 10")])
def test_a_foreign_onnx_graph_that_gives_no_scores_is_one_line(kind, needle, finished, tmp_path, capsys):
    """Trial 31b, N270/N274: an ONNX file that takes another input type, or gives class ids, is one line (exit 2),
    not onnxruntime's or numpy's traceback."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    code = main(["eval", str(_foreign_onnx(run, kind))])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err


@pytest.mark.parametrize("record,needle", [
    ("{not json", "its metadata record hypersparse.input is not valid JSON"),
    ("[1, 2]", "its metadata record hypersparse.input must be an object, got"),
    (json.dumps({"mean": [78.0], "std": [0.0]}), "its metadata record hypersparse.input.std[0] must be a number > 0"),
    (json.dumps({"mean": [78.0], "std": [96.0], "classes": ["a", "b", "c"]}),
     "scores 10 classes but its hypersparse.input record names 3"),
], ids=["not-json", "an-array", "std-zero", "3-class-names-for-10"])
def test_an_onnx_input_record_that_is_damaged_is_one_line(record, needle, finished, tmp_path, capsys):
    """Trial 31d O_notjson/O_array: the record was read unchecked ("{not json" and an array passed silently)."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    code = main(["eval", str(_foreign_onnx(run, "plain", record))])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err


def test_a_foreign_onnx_graph_that_loops_for_ever_stops_on_sigterm(finished, tmp_path):
    """Trial 31b, N267: a graph whose Loop runs 10**15 times kept eval in onnxruntime's C call, where neither SIGTERM
    nor Ctrl-C reached it. The run is now a worker thread's, and a signal stops it at once: exit 143, one line."""
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    path = _foreign_onnx(run, "loop")
    proc = subprocess.Popen([sys.executable, "-m", "hypersparse", "eval", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(6)  # past the start, inside the loop
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 143 and err.strip().splitlines() == [
        "hypersparse: terminated; files written so far are complete (run the command again to continue)"], err


def test_ctrl_c_during_a_comparison_names_the_run_whose_resume_finishes_it(finished, tmp_path, monkeypatch, capsys):
    """Trial 31b, N216: Ctrl-C while a --compare baseline trained advised resuming the baseline's own folder, after
    which the run's comparison stayed missing. The advice names the run, whose --resume finishes the comparison."""
    from hypersparse.engine import Trainer

    real = Trainer.epoch

    def epoch(self):  # Ctrl-C in the baseline's first epoch
        if self.files.path.name.startswith("compare-"):
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(Trainer, "epoch", epoch)
    run = tmp_path / "r"
    code = main(["train", *QUICK, "--set", "run.stats=false", "--compare", "oneshot", "--run-dir", str(run)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 130 and len(err) == 1, err
    assert f"--resume {run}" in err[0] and "while comparing with oneshot" in err[0], err


@pytest.mark.parametrize("megabytes", [300, 600])
def test_too_little_memory_to_load_torch_is_one_line(tmp_path, megabytes):
    """Trial 31f T4: under an address-space limit that torch's libraries do not fit, every command ended in a
    MemoryError traceback from inside torch's import. Near torch's need the failure also came as a SystemError
    ("error return without exception set", CI at 600 MB) or a native abort with no Python handler (glibc, OpenBLAS,
    libgomp at 500-640 MB on a 2-core machine), so a limit under 1 GB is refused before torch loads."""
    import resource
    import subprocess
    import sys

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (megabytes * 2**20, megabytes * 2**20))

    done = subprocess.run([sys.executable, "-m", "hypersparse", "train", "--run-dir", str(tmp_path / "r")],
                          capture_output=True, text=True, preexec_fn=limit, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hypersparse: error: out of memory") and "ulimit -v" in lines[0]
    assert not (tmp_path / "r").exists()


def test_a_limit_above_the_floor_trains(tmp_path):
    """The refusal above must not turn away a limit torch works under: 1.5 GB trains the default to the end."""
    import resource
    import subprocess
    import sys

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (1536 * 2**20, 1536 * 2**20))

    done = subprocess.run([sys.executable, "-m", "hypersparse", "train", "--run-dir", str(tmp_path / "r"),
                           "--epochs-scale", "0.1"], capture_output=True, text=True, preexec_fn=limit, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r" / "model.pt").is_file() and (tmp_path / "r" / "summary.json").is_file()


@pytest.mark.parametrize("limited", [True, False])
def test_a_system_error_while_loading_torch_is_out_of_memory_only_under_a_limit(tmp_path, limited):
    """CI, stop 47: torch's import under a 600 MB limit raised SystemError("error return without exception set"), a
    failed allocation in C that set no exception, and the command ended in a traceback. Under a limit it is one line;
    without one it is a real fault and keeps its traceback."""
    import subprocess
    import sys

    script = f"""
import resource, sys
if {limited}:
    resource.setrlimit(resource.RLIMIT_AS, (8 * 2**30, resource.getrlimit(resource.RLIMIT_AS)[1]))
class Fail:
    def find_spec(self, name, path=None, target=None):
        if name == "hypersparse.cli":
            raise SystemError("error return without exception set")
sys.meta_path.insert(0, Fail())
sys.argv = ["hypersparse", "train", "--run-dir", {str(tmp_path / "r")!r}]
from hypersparse.command import main
sys.exit(main())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    if limited:
        assert done.returncode == 2 and done.stderr.startswith("hypersparse: error: out of memory while loading "
                                                               "torch") and "Traceback" not in done.stderr
    else:
        assert done.returncode == 1 and "SystemError: error return without exception set" in done.stderr
    assert not (tmp_path / "r").exists()


def test_a_file_size_limit_is_one_line_that_says_which_limit(finished, tmp_path):
    """Trial 31f E005/E007/F006: a write past `ulimit -f` said "File too large; check the path and its permissions",
    and a full disk during export advised train --resume."""
    import resource
    import subprocess
    import sys

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20 * 2**10, 20 * 2**10))

    out = tmp_path / "m.dense.pt"
    done = subprocess.run([sys.executable, "-m", "hypersparse", "export", str(finished), "--format", "dense", "--out",
                           str(out)], capture_output=True, text=True, preexec_fn=limit, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "file-size limit (ulimit -f)" in lines[0] and "run the command again" in lines[0]
    assert "--resume" not in lines[0]
    assert not out.exists() and not list(tmp_path.glob(".hypersparse-*"))


def test_stdout_on_a_full_device_is_not_called_a_full_disk(tmp_path):
    """Trial 31h E212: with stdout on /dev/full the run stopped saying "the disk is full"; it is the output."""
    import subprocess
    import sys

    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "hypersparse", "train", "--epochs-scale", "0.05", "--run-dir",
                               str(tmp_path / "r")], stdout=full, stderr=subprocess.PIPE, text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "where the output goes" in lines[0], done.stderr


@pytest.mark.parametrize("how", ["closed", "read-only"])
def test_bad_input_with_the_error_stream_closed_still_exits_2_and_writes_into_no_file(tmp_path, how):
    """Trial 31h E213: with stderr closed (``2>&-``) bad input ended with exit code 1, the one line having nowhere to
    go; a launcher such as pyenv's shim leaves its own script open for reading there instead. The first file a
    command opens must not take descriptor 2 either, where an error line would be written into it."""
    import subprocess
    import sys

    shim = tmp_path / "launcher.sh"
    shim.write_text("#!/bin/sh\n")

    def stderr_gone():
        os.close(2)
        if how == "read-only":
            os.open(shim, os.O_RDONLY)  # takes descriptor 2

    run = tmp_path / "r"
    train = ["train", "--epochs-scale", "0.05", "--warmup-epochs", "1", "--run-dir", str(run)]
    for argv, code in ((["train", "--epochs-scale", "0.05", "--sparsity", "7", "--run-dir", str(run)], 2),
                       (["eval", str(tmp_path / "nothing")], 2),
                       (train, 0),
                       (train, 2)):  # refused once its lock file is open: the line lands in none of the run's files
        done = subprocess.run([sys.executable, "-m", "hypersparse", *argv], stdout=subprocess.PIPE, text=True,
                              preexec_fn=stderr_gone, timeout=300)
        assert done.returncode == code, (argv, done.stdout[-2000:])
    assert shim.read_text() == "#!/bin/sh\n"
    assert not any(b"hypersparse:" in f.read_bytes() for f in run.rglob("*") if f.is_file())


def test_a_name_with_control_characters_cannot_break_the_line_or_drive_the_terminal(tmp_path, capsys):
    """A path or a value holding a newline or a terminal escape sequence is shown escaped: still one line, and no
    escape byte reaches the terminal (a file name an attacker chose, printed in an error)."""
    from conftest import run_cli

    name = "x\x1b]0;owned\x07\x1b[31mred\nsecond line"
    for argv in (["eval", str(tmp_path / name)], ["train", "--model", name, "--run-dir", str(tmp_path / "r")]):
        code, err = run_cli(argv, capsys)
        assert code == 2 and len(err) == 1, err
        assert "\x1b" not in err[0] and "\x07" not in err[0] and "\\x1b]0;owned" in err[0], err
    assert not (tmp_path / "r").exists()


def test_output_piped_into_a_reader_that_ends_early_is_named_as_such(tmp_path):
    """Trial 31i E101: `hypersparse train | head -1` stopped with "Broken pipe; check the path and its
    permissions", which names no path; the line says the output's reader ended, and how to continue."""
    import subprocess
    import sys

    read, write = os.pipe()
    done = subprocess.Popen([sys.executable, "-m", "hypersparse", "train", "--epochs-scale", "0.05", "--run-dir",
                             str(tmp_path / "r")], stdout=write, stderr=subprocess.PIPE, text=True)
    os.close(write)
    with os.fdopen(read, "rb") as reader:
        reader.readline()  # `head -1`: one line, then the reader is gone
    err = done.communicate(timeout=300)[1]
    lines = err.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "the output's reader ended" in lines[0], err
    assert "--resume" in lines[0]


def test_stderr_on_a_full_device_still_exits_2(tmp_path):
    """Trial 31j O004: with stderr on /dev/full the one line cannot be written, and bad input ended with exit 1."""
    import subprocess
    import sys

    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "hypersparse", "eval", str(tmp_path / "none")], stdout=full,
                              stderr=full, timeout=120)
    assert done.returncode == 2


def test_the_success_line_escapes_control_characters_in_the_path(finished, tmp_path):
    """Trial 31j X012: `export --out` a name holding a newline and a clear-screen escape printed them raw in the
    `wrote ...` line; error lines already escaped them."""
    from conftest import cli

    out = tmp_path / "m\x1b[2J\nx.safetensors"
    done = cli("export", str(finished), "--format", "sparse", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert out.is_file()
    assert "\x1b" not in done.stdout and len(done.stdout.strip().splitlines()) == 1, done.stdout
