"""Accuracy of a model on uint8 images, normalised as its run trained (:class:`~hypersparse.data.loader.Normalizer`,
also importable from here), and ``hypersparse eval``.

Nothing here imports the training engine: ``eval``, ``export``, ``report`` and
the benchmarks score models with these alone.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from hypersparse.data.loader import Normalizer
from hypersparse.device import autocast, pick_device
from hypersparse.masks import sparsity_report
from hypersparse.params import exclude_filter


def input_record(data) -> dict:
    """What a model trained on ``data`` (Splits) expects: ``(pixel - 255 mean) / (255 std)`` per channel, on
    NCHW images with pixels in 0..255, and the class names where the data has them. Stored in summary.json and in
    every export, so the model can be used without hypersparse."""
    return {"layout": "NCHW", "pixel_range": [0, 255], "mean": [255 * m for m in data.mean],
            "std": [255 * s for s in data.std], "classes": list(data.classes) if data.classes else None}


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, normalize: Normalizer, batch: int = 1024,
             per_class: list | None = None) -> float:
    """Accuracy of ``model`` in eval mode on uint8 images ``x``; with a list ``per_class``, each class's accuracy."""
    was = model.training
    model.eval()
    device = normalize.device
    correct = torch.zeros((), dtype=torch.int64, device=device)
    hits = []
    for start in range(0, len(x), batch):
        with autocast(device):
            out = model(normalize(x[start : start + batch]))
        right = out.argmax(1) == y[start : start + batch].to(device)
        correct += right.sum()
        hits.append(right)
    model.train(was)
    if per_class is not None and hits:
        right, labels = torch.cat(hits).cpu(), y.cpu()
        classes = int(labels.max()) + 1
        total = torch.bincount(labels, minlength=classes).clamp_min(1)
        per_class[:] = (torch.bincount(labels[right], minlength=classes) / total).tolist()
    return int(correct) / max(1, len(x))


def evaluate_run(path: str | Path, dataset: str | None = None, data_dir: str | None = None,
                 model_name: str | None = None, device: str = "auto", fast: int | None = None,
                 plugin: str | None = None) -> dict:
    """``hypersparse eval``: print and return validation/test accuracy and sparsity of a saved model; with ``fast``
    (a batch size), also the test accuracy and latency of :func:`hypersparse.sparse_inference`'s model.

    ``dataset``, ``model_name`` and ``plugin`` are what the user typed: code the run's files name is imported only
    if they repeat it (:func:`hypersparse.run_read.run_settings`)."""
    from hypersparse.data import load_dataset
    from hypersparse.errors import UserError
    from hypersparse.models import check_fit
    from hypersparse.plugins import CODE_FLAGS
    from hypersparse.run_read import model_from_run, run_settings

    onnx = Path(path).suffix == ".onnx"  # the graph is the model: only the data's code must be typed
    settings = run_settings(path, dataset, data_dir, model_name, plugin,
                            uses=("run.plugin", "data.dataset") if onnx else tuple(CODE_FLAGS))
    if onnx:
        if fast is not None or model_name or device not in ("auto", "cpu"):
            given = "--fast" if fast is not None else "--model" if model_name else "--device"
            raise UserError(f"{given} does not apply to an ONNX file, which onnxruntime runs on the CPU as exported; "
                            "drop it")
        from hypersparse.schema import regular_file

        regular_file(path, "ONNX file")  # before the data loads: a FIFO would block onnxruntime's read
        return evaluate_onnx(path, load_dataset(settings["dataset"], settings["data_dir"], settings["seed"]))
    dev = torch.device("cpu") if fast is not None and device == "auto" else pick_device(device)
    if fast is not None and dev.type != "cpu":
        raise UserError(f"--fast measures inference on the CPU, not {dev.type}; add --device cpu")
    data = load_dataset(settings["dataset"], settings["data_dir"], settings["seed"])
    sparse_file = Path(path).suffix == ".safetensors"  # it names its own architecture, unless --model is typed
    name = model_name if sparse_file else settings["model"]
    model = model_from_run(path, name, data.num_classes, data.in_channels, data.image_size, trust_code=not sparse_file)
    model.to(dev)
    normalize = Normalizer(data.mean, data.std, dev)
    check_fit(model, name or f"of {path}", normalize(data.test_x[:2]), data.num_classes,
              user=None if name else False)
    report = sparsity_report(model, exclude_filter(settings["exclude"]))  # the layers the run could prune
    result = {
        "val_acc": evaluate(model, data.val_x, data.val_y, normalize),
        "test_acc": evaluate(model, data.test_x, data.test_y, normalize),
        "sparsity": report.sparsity,
    }
    print(report)
    print(f"validation {result['val_acc']:.2%}  test {result['test_acc']:.2%}  sparsity {result['sparsity']:.2%}")
    if fast is not None:
        result.update(_fast(model, data, normalize, fast))
    return result


def _fast(model: nn.Module, data, normalize: Normalizer, batch: int) -> dict:
    """``eval --fast``: sparse_inference's model at ``batch``, scored on the test split and timed against ``model``."""
    from hypersparse.inference import interleaved_latency, sparse_inference

    example = normalize(data.test_x[:batch])
    if len(example) < batch:
        example = example.repeat((batch + len(example) - 1) // len(example), *[1] * (example.dim() - 1))[:batch]
    quick = sparse_inference(model, example)
    test_acc = evaluate(quick, data.test_x, data.test_y, normalize, batch=max(batch, 256))
    t = interleaved_latency({"model": model.eval(), "fast": quick}, example, 50)
    sparse = sum(c["sparse"] for c in quick.hypersparse_choices.values())
    print(f"sparse_inference at batch {batch}: test {test_acc:.2%}, {t['fast'] * 1e3:.3f} ms per batch against "
          f"{t['model'] * 1e3:.3f} ms ({t['model'] / t['fast']:.1f}x; {sparse} layers swapped; "
          f"{compaction_text(quick.hypersparse_compaction)}; CPU, {torch.get_num_threads()} threads)")
    return {"fast_test_acc": test_acc, "fast_ms": t["fast"] * 1e3, "model_ms": t["model"] * 1e3}


def compaction_text(compaction: dict | None) -> str:
    """What channel compaction did in sparse_inference: the channels it removed, and whether the compacted model was
    kept (it is only where measured faster; export --compact always writes it)."""
    if compaction is None:
        return "no convolutions to compact"
    if not compaction["removed"]:
        return "no channel could be removed"
    if compaction["kept"]:
        return f"compaction removed {compaction['removed']} channels"
    return (f"compaction could remove {compaction['removed']} channels but was not faster at this batch size, so the "
            "uncompacted model runs")


ONNX_MAX_BYTES = 2**31  # protobuf's own limit on one message


def evaluate_onnx(path: str | Path, data) -> dict:
    """``hypersparse eval model.onnx``: the exported graph run by onnxruntime on the raw pixels of ``data``'s
    validation and test splits (the graph normalises them itself), and its weights' sparsity."""
    import numpy as np

    from hypersparse.errors import UserError, first_line

    try:
        import onnxruntime
    except ImportError:
        raise UserError("evaluating an ONNX file needs onnxruntime: pip install 'hypersparse[onnx]'") from None
    from hypersparse.schema import read_bytes

    graph = read_bytes(path, "ONNX file", ONNX_MAX_BYTES)  # a FIFO or a device would block onnxruntime's read
    try:
        session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own classes for unreadable files
        raise UserError(f"{path} is not an ONNX model onnxruntime can run ({first_line(exc, 200)})") from None
    record = session.get_modelmeta().custom_metadata_map.get("hypersparse.input")
    if record is None:
        raise UserError(f"{path} was not written by hypersparse export --format onnx (it does not say what input it "
                        "takes); export the run again")
    classes = _onnx_input_record(record, path).get("classes")
    name = session.get_inputs()[0].name

    def accuracy(x: torch.Tensor, y: torch.Tensor) -> float:
        right = 0
        for start in range(0, len(x), 512):
            feeds = {name: x[start : start + 512].float().numpy()}
            logits = _run_interruptibly(session, onnxruntime.RunOptions(), feeds, path)
            if logits.ndim != 2 or logits.shape[0] != len(y[start : start + 512]) or logits.dtype.kind != "f":
                raise UserError(f"{path} gives outputs of shape {logits.shape} ({logits.dtype}), not one row of class "
                                "scores per image; export the run again")
            if classes is not None and logits.shape[1] != len(classes):
                raise UserError(f"{path} scores {logits.shape[1]} classes but its hypersparse.input record names "
                                f"{len(classes)}; the file is damaged: export the run again")
            if logits.shape[1] != data.num_classes:
                raise UserError(f"{path} scores {logits.shape[1]} classes, the data has {data.num_classes}; give the "
                                "--dataset it was trained on")
            right += int((np.argmax(logits, 1) == y[start : start + 512].numpy()).sum())
        return right / max(1, len(x))

    result = {"val_acc": accuracy(data.val_x, data.val_y), "test_acc": accuracy(data.test_x, data.test_y)}
    zeros, numel = _onnx_weight_zeros(path)
    if numel:
        result["sparsity"] = zeros / numel
    print(f"validation {result['val_acc']:.2%}  test {result['test_acc']:.2%}"
          + (f"  sparsity {result['sparsity']:.2%} (of the graph's weight matrices and kernels)" if numel else "")
          + " (onnxruntime, CPU)")
    return result


def _onnx_input_record(record: str, path: str | Path) -> dict:
    """An ONNX file's ``hypersparse.input`` metadata, checked with the schema of the same record in a run's
    ``summary.json``; one UserError line if it is not that record."""
    from hypersparse.errors import UserError
    from hypersparse.schema import INPUT, SchemaError, parse_json

    try:
        return INPUT.check(parse_json(record), "hypersparse.input")
    except SchemaError as exc:
        raise UserError(f"{path}: its metadata record {exc}; export the run again") from None
    except ValueError as exc:
        raise UserError(f"{path}: its metadata record hypersparse.input is not valid JSON ({exc}); export the run "
                        "again") from None


def _run_interruptibly(session, options, feeds: dict, path):
    """``session.run`` in a worker thread, so that Ctrl-C or SIGTERM (whose handlers run in the main thread, between
    its waits) stop it through onnxruntime's ``terminate``: a graph can loop for as long as it likes. An error the
    graph raises on this data is one line."""
    import threading

    from hypersparse.errors import UserError, first_line

    done: dict = {}

    def run() -> None:
        try:
            done["out"] = session.run(None, feeds, options)[0]
        except Exception as exc:  # onnxruntime's own classes: a graph that does not run on this input
            done["error"] = exc

    worker = threading.Thread(target=run, name="hypersparse-onnx", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.2)
    except BaseException:
        options.terminate = True  # the run returns with an error at its next check; the signal's exit goes on
        worker.join(5)
        raise
    if "error" in done:
        first = first_line(done["error"], 200)
        raise UserError(f"{path} does not run on this data in onnxruntime ({first}); export the run again")
    return done["out"]


def _onnx_weight_zeros(path: str | Path) -> tuple[int, int]:
    """Zeros and entries of the graph's weights (initializers of 2 or more dimensions); (0, 0) without ``onnx``."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        return 0, 0
    graph = onnx.load(str(path)).graph
    zeros = numel = 0
    for init in graph.initializer:
        if len(init.dims) >= 2:
            arr = numpy_helper.to_array(init)
            zeros, numel = zeros + int((arr == 0).sum()), numel + arr.size
    for sparse in graph.sparse_initializer:
        if len(sparse.dims) >= 2:
            size = 1
            for d in sparse.dims:
                size *= d
            kept = int((numpy_helper.to_array(sparse.values) != 0).sum())
            zeros, numel = zeros + size - kept, numel + size
    return zeros, numel
