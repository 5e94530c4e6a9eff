"""Sparse inference on the CPU: latency of the dense model, the channel-compacted one and `sparse_inference`'s,
file sizes per format, and onnxruntime on the dense and the compacted ONNX graph.

Masks: (a) every prunable layer pruned by magnitude to the same sparsity (``scope="layer"``) from a seeded
initialization, a pattern where no layer vanishes entirely; (b) the global, non-uniform masks that ART produced
in real runs (the sparse files in bench/masks/, see its README). Latency is the median of repeated runs, batch 1
and 64, the candidates' calls interleaved so that machine noise hits all alike.

    python bench/inference.py [--reps 200] [--threads 2]
    python bench/inference.py --from-json bench/results/inference-cpu.json   # the page again, without measuring
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import hypersparse as hs
from hypersparse import native
from hypersparse.compaction import compact_channels
from hypersparse.errors import UserError
from hypersparse.export import export_onnx, load_sparse_state, save_sparse
from hypersparse.inference import interleaved_latency, sparse_inference
from hypersparse.models import create_model

from common import provenance, write_results

MASKS = Path(__file__).resolve().parent / "masks"
UNIFORM = [("lenet300", 0.98, 1, 28), ("lenet300", 0.995, 1, 28),
           ("resnet32", 0.9, 3, 32), ("resnet32", 0.98, 3, 32), ("resnet32", 0.995, 3, 32),
           ("vgg19", 0.9, 3, 32), ("vgg19", 0.98, 3, 32), ("vgg19", 0.995, 3, 32)]
# masks from real runs (bench/masks/README.md): (label, file)
RUNS = [("ART run (global)", "lenet5-mnist-art-0.98.sparse.safetensors"),
        ("ART run (global)", "lenet5-mnist-art-0.995.sparse.safetensors"),
        ("GMP run (global)", "lenet5-mnist-gmp-0.995.sparse.safetensors"),
        ("RigL run (global)", "lenet5-mnist-rigl-0.995.sparse.safetensors"),
        # issue 35's LeNet-5 sweep at a quarter of the authors' schedule (docs/results.md), seed 0
        ("ART, quarter schedule", "lenet5-mnist-art-0.995-quarter.sparse.safetensors"),
        ("GMP, quarter schedule", "lenet5-mnist-gmp-0.995-quarter.sparse.safetensors"),
        ("RigL, quarter schedule", "lenet5-mnist-rigl-0.995-quarter.sparse.safetensors")]
BATCHES = (1, 64)
# the targets: (model, sparsity, batch) -> least speed-up over dense PyTorch
TARGETS = {("resnet32", 0.995, 1): 5, ("vgg19", 0.995, 1): 5, ("resnet32", 0.995, 64): 2, ("vgg19", 0.995, 64): 2,
           ("resnet32", 0.98, 1): 2, ("vgg19", 0.98, 1): 2}
ANCHORS = ("XNNPACK sparse inference (Elsen et al., \"Fast Sparse ConvNets\", CVPR 2020): 1.3-2.4x on MobileNets at "
           "80-90 % sparsity; Park et al., \"Faster CNNs with Direct Sparse Convolutions and Guided Pruning\" (ICLR "
           "2017): 3.1-7.3x per convolution layer of AlexNet and GoogLeNet. Cited, not rerun.")


def multiply_adds(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """Multiply-adds of one input through the convolutions and Linear layers: all weights, and the nonzero ones."""
    totals = [0, 0]

    def count(module, args, out):
        per_weight = out[0, 0].numel() if isinstance(module, nn.Conv2d) else 1
        totals[0] += module.weight.numel() * per_weight
        totals[1] += int(module.weight.count_nonzero()) * per_weight

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(x[:1])
    for h in hooks:
        h.remove()
    return totals[0], totals[1]


def channels_per_layer(model: nn.Module, compacted: nn.Module) -> list[list[int]]:
    """[kept, before] output channels of each convolution, in order (compaction never drops a whole layer)."""
    before = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    after = [m.out_channels for m in compacted.modules() if isinstance(m, nn.Conv2d)]
    return [[a, b] for a, b in zip(after, before)] if len(after) == len(before) else []


def sizes(model: nn.Module, ch: int, size: int, tmp: str) -> dict:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    out = {"dense_pt_bytes": len(buf.getvalue()),
           "sparse_bytes": save_sparse(model, Path(tmp) / "m.safetensors")["bytes"]}
    try:
        out["onnx_bytes"] = export_onnx(model, torch.zeros(1, ch, size, size), Path(tmp) / "m.onnx")["bytes"]
    except UserError:  # the [onnx] extra is not installed
        out["onnx_bytes"] = None
    return out


def blocked_latency(fns: dict, x, calls: int, rounds: int = 3, settle: float = 0.2) -> dict[str, float]:
    """Median seconds per call, each function timed in turn in blocks of ``calls`` calls (``rounds`` blocks each).

    For onnxruntime: a session's threads spin for a while after each call, so calls of two sessions interleaved
    one by one compete for the cores. Each block starts with ``settle`` seconds of untimed calls, by which time the
    other session's threads have gone to sleep, so each runs as it would alone.
    """
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            while time.perf_counter() - start < settle:
                fn(x)
            for _ in range(calls):
                start = time.perf_counter()
                fn(x)
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def onnx_latency(model: nn.Module, compacted: nn.Module, ch: int, size: int, tmp: str) -> dict | None:
    """onnxruntime milliseconds per batch for the dense and the compacted ONNX graph (None: not installed)."""
    try:
        import onnxruntime
    except ImportError:
        return None
    sessions = {}
    for name, m in (("dense", model), ("compacted", compacted)):
        path = Path(tmp) / f"{name}.onnx"
        export_onnx(m, torch.zeros(1, ch, size, size), path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        sessions[name] = onnxruntime.InferenceSession(str(path), options)
    out = {}
    for batch in BATCHES:
        feed = torch.randn(batch, ch, size, size).numpy()
        runs = {name: (lambda x, s=s: s.run(None, {s.get_inputs()[0].name: x})) for name, s in sessions.items()}
        t = blocked_latency(runs, feed, 100 if batch == 1 else 10)
        out[f"b{batch}"] = {name: v * 1e3 for name, v in t.items()}
    return out


def summary_of(fast: nn.Module) -> dict:
    """What sparse_inference swapped: convolutions made sparse (with threads), Linear chains and their kernels."""
    layers = fast.hypersparse_choices
    convs = [c for c in layers.values() if c["layer"] == "conv"]
    chains = {k: c for k, c in layers.items() if c["layer"] == "chain"}
    return {"convs": len(convs), "sparse_convs": sum(c["sparse"] for c in convs),
            "threaded_convs": sum(c["kind"] == "sparse-threads" for c in convs),
            "chains": {k: c["kind"] for k, c in chains.items()},
            "shapes": [c["shapes"] for c in chains.values() if c["sparse"]],
            "compacted": bool((fast.hypersparse_compaction or {}).get("kept")),
            "kept_model": any(c["sparse"] for c in layers.values())}


def measure(model: nn.Module, compacted: nn.Module, ch: int, size: int, reps: int) -> dict:
    """Latency of dense, compacted and sparse_inference's model at each batch size, outputs checked."""
    out = {}
    for batch in BATCHES:
        x = torch.randn(batch, ch, size, size)
        fast = sparse_inference(model, x, reps=max(10, reps // 10))
        with torch.no_grad():
            ref = model(x)
            for m in (fast, compacted):
                if (m(x) - ref).abs().max() > 1e-4 * ref.abs().max():
                    raise SystemExit("outputs differ from the dense model's: a bug, not a benchmark result")
        t = interleaved_latency({"dense": model, "compacted": compacted, "sparse": fast}, x, reps)
        out[f"b{batch}"] = {**{f"{k}_ms": v * 1e3 for k, v in t.items()}, "speedup": t["dense"] / t["sparse"],
                            **summary_of(fast)}
    return out


def cases(only: str | None = None):
    """(label, model, name, sparsity, channels, size) for every row, uniform masks first; ``only``: the rows of the
    models whose name holds it."""
    for name, sparsity, ch, size in UNIFORM:
        if only and only not in name:
            continue
        torch.manual_seed(0)
        model = create_model(name, 10, ch, size).eval()
        hs.apply_masks_(model, hs.magnitude_masks(model, sparsity, scope="layer")).remove()
        yield "uniform per layer", model, name, sparsity, ch, size
    for label, file in RUNS:
        arch = load_sparse_state(MASKS / file)[1]
        if only and only not in arch["model"]:
            continue
        model = hs.load_sparse(MASKS / file).eval()
        yield label, model, arch["model"], round(hs.sparsity_report(model).sparsity, 4), arch["in_channels"], \
            arch["image_size"]


def _order(row: dict) -> tuple:
    """A row's place on the page: the uniform masks in UNIFORM's order, then the runs' in RUNS' order."""
    uniform = [(n, k) for n, k, _, _ in UNIFORM]
    if (row["model"], row["sparsity"]) in uniform and row["mask"].startswith("uniform"):
        return (0, uniform.index((row["model"], row["sparsity"])), 0.0)
    labels = list(dict.fromkeys(label for label, _ in RUNS))
    return (1, labels.index(row["mask"]) if row["mask"] in labels else len(labels), row["sparsity"])


def merged(kept: dict, rows: list[dict]) -> list[dict]:
    """The rows measured now, and those of a saved page (``kept``) that were not measured again, each with the
    commit it was measured at."""
    fresh = {(r["model"], r["mask"], r["sparsity"]) for r in rows}
    old = [dict(r, commit=r.get("commit", kept["provenance"]["commit"]), date=r.get("date", kept["provenance"]["date"]))
           for r in kept["rows"] if (r["model"], r["mask"], r["sparsity"]) not in fresh]
    return sorted(old + rows, key=_order)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--from-json", help="rebuild the page from a saved results JSON, without measuring")
    ap.add_argument("--only", help="measure only the rows of models whose name holds this (e.g. lenet5)")
    ap.add_argument("--keep", help="a saved results JSON whose other rows stay on the page (with their commit)")
    args = ap.parse_args()
    if args.from_json:
        payload = json.loads(Path(args.from_json).read_text())
        return publish(payload["provenance"], payload["rows"])
    torch.set_num_threads(args.threads)
    prov = provenance(seed=0)  # at the start: the code that ran
    prov["native"] = native.unavailable()  # None: the C kernels were candidates
    rows = []
    for mask, model, name, sparsity, ch, size in cases(args.only):
        reps = args.reps if name.startswith("lenet") else max(20, args.reps // 10)
        compacted, removed = compact_channels(model)
        dense_macs, kept_macs = multiply_adds(model, torch.zeros(1, ch, size, size))
        row = {"model": name, "mask": mask, "sparsity": sparsity, "flop_ratio": dense_macs / max(1, kept_macs),
               "channels_removed": removed, "channels": channels_per_layer(model, compacted)}
        with tempfile.TemporaryDirectory() as tmp:
            row.update(sizes(model, ch, size, tmp))
            if removed:
                row["onnx_ms"] = onnx_latency(model, compacted, ch, size, tmp)
        row.update(measure(model, compacted, ch, size, reps))
        row.update(commit=prov["commit"], date=prov["date"])
        rows.append(row)
        print(json.dumps(row), flush=True)
    publish(prov, merged(json.loads(Path(args.keep).read_text()), rows) if args.keep else rows)


def _commits(rows: list[dict]) -> str:
    """Which commit measured which rows, where the page holds rows of more than one run."""
    by: dict[str, list[str]] = {}
    for r in rows:
        if "commit" in r:
            by.setdefault(f"`{r['commit'][:7]}` ({r['date'][:10]})", []).append(
                f"{r['model']} {r['mask']} {r['sparsity']:.1%}")
    if len(by) < 2:
        return ""
    return " Rows measured at different commits: " + "; ".join(f"{c}: {', '.join(names)}" for c, names in by.items()) \
        + "."


def _kept(b: dict) -> str:
    """What sparse_inference returned at one batch size, in a few words."""
    if not b["kept_model"] and not b["compacted"]:
        return "dense model"
    parts = ["compacted"] if b["compacted"] else []
    if b["convs"]:
        parts.append(f"{b['sparse_convs']}/{b['convs']} convs sparse"
                     + (f" ({b['threaded_convs']} threaded)" if b["threaded_convs"] else ""))
    parts += [f"{k} {v}" for k, v in b["chains"].items() if v != "dense"]
    return ", ".join(parts)


def _widths(channels: list[list[int]]) -> str:
    return " ".join(f"{a}/{b}" for a, b in channels) if channels else "-"


def publish(prov: dict, rows: list[dict]) -> None:
    md = ["# Sparse inference on the CPU (median latency: dense, channel-compacted, `hypersparse.sparse_inference`)\n",
          f"{prov['threads']} threads. Speed-up: dense PyTorch time over `sparse_inference`'s; FLOP ratio: "
          "multiply-adds of all weights over those of the nonzero ones, what arithmetic alone would allow.\n",
          "| model | mask | sparsity | FLOP ratio | batch 1 dense ms | compacted ms | sparse ms | speed-up | "
          "batch 64 dense ms | compacted ms | sparse ms | speed-up | kept at batch 1 | kept at batch 64 |",
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        b1, b64 = r["b1"], r["b64"]
        md.append(f"| {r['model']} | {r['mask']} | {r['sparsity']:.1%} | {r['flop_ratio']:.0f}x | "
                  f"{b1['dense_ms']:.3f} | {b1['compacted_ms']:.3f} | {b1['sparse_ms']:.3f} | {b1['speedup']:.1f}x | "
                  f"{b64['dense_ms']:.2f} | {b64['compacted_ms']:.2f} | {b64['sparse_ms']:.2f} | "
                  f"{b64['speedup']:.1f}x | {_kept(b1)} | {_kept(b64)} |")
    md += ["\n## Targets\n", "| model | sparsity | batch | target | measured | met |", "|---|---:|---:|---:|---:|---|"]
    for (name, sparsity, batch), least in TARGETS.items():
        found = [r for r in rows
                 if r["model"] == name and r["sparsity"] == sparsity and r["mask"].startswith("uniform")]
        if found:
            got = found[0][f"b{batch}"]["speedup"]
            md.append(f"| {name} | {sparsity:.1%} | {batch} | {least}x | {got:.1f}x | "
                      f"{'yes' if got >= least else 'no'} |")
    md += ["\n## CNNs: channel compaction and onnxruntime\n",
           "| model | mask | sparsity | channels removed | onnxruntime batch 1 dense / compacted ms | "
           "batch 64 dense / compacted ms | output channels kept / before, per convolution |",
           "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        if not r["channels"]:
            continue
        o = r.get("onnx_ms") or {}
        ort = [f"{o[b]['dense']:.2f} / {o[b]['compacted']:.2f}" if b in o else "-" for b in ("b1", "b64")]
        md.append(f"| {r['model']} | {r['mask']} | {r['sparsity']:.1%} | {r['channels_removed']:,} | {ort[0]} | "
                  f"{ort[1]} | {_widths(r['channels'])} |")
    cells = [(r, b) for r in rows if r.get("onnx_ms") for b in ("b1", "b64")]
    slower = [f"{r['model']} {r['mask']} {r['sparsity']:.1%} batch {b[1:]} "
              f"({r['onnx_ms'][b]['compacted'] / r['onnx_ms'][b]['dense'] - 1:+.0%})"
              for r, b in cells if r["onnx_ms"][b]["compacted"] >= r["onnx_ms"][b]["dense"]]
    if cells:
        md.append(f"\nWhere compaction removed channels, the compacted graph was faster in onnxruntime in "
                  f"{len(cells) - len(slower)} of {len(cells)} cells" + (f"; not faster in: {'; '.join(slower)}."
                                                                          if slower else "."))
    md += ["\n## File sizes\n", "| model | mask | sparsity | dense .pt | sparse .safetensors | ratio | ONNX (sparse "
           "initializers) |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        onnx = f"{r['onnx_bytes']:,}" if r["onnx_bytes"] else "extra not installed"
        md.append(f"| {r['model']} | {r['mask']} | {r['sparsity']:.1%} | {r['dense_pt_bytes']:,} | "
                  f"{r['sparse_bytes']:,} | {r['dense_pt_bytes'] / r['sparse_bytes']:.0f}x | {onnx} |")
    md.append(
        "\n## How\n\n"
        "CNNs are first channel-compacted (`hypersparse.compaction`: BatchNorm folded into the convolutions, output "
        "channels that no kept weight produces or that nothing reads removed, constants folded into the next bias; "
        "the outputs unchanged) where that is 3 % faster. Then each convolution is timed, on the input it sees, dense "
        "and as a direct sparse convolution (`hypersparse.sparse_conv.SparseConv2d`, after Park et al. 2017: each "
        "kept weight adds a shifted input plane times a scalar, in C; a ReLU and a residual block's sum done in the "
        "same pass; the batch split across threads or not), and the faster is kept. Each chain of Linear layers "
        "becomes a `CompactMLP` (units no kept weight connects removed; dense, CSR or one C call over every layer) "
        "where faster. A swap is kept only if it is at least 3 % faster, and all of them only if the whole model is "
        "3 % faster; 'dense model': nothing was, and the speed-up differs from 1.0x by timing noise only. "
        + (f"The C kernels were not available in this run: {prov['native']}. " if prov.get("native") else "")
        + "onnxruntime: as many intra-op threads as above, the dense and the compacted graph (the same "
        "`compact_channels` model) timed in turn in 3 blocks of 100 calls (batch 64: 10) each, every block after 0.2 s "
        "of untimed calls, since a session's threads spin for a while after each call. "
        "Shapes of the compacted Linear chains: "
        + "; ".join(f"{r['model']} {r['sparsity']:.1%}: {r['b1']['shapes']}" for r in rows if r["model"] == "lenet300")
        + ". Masks 'uniform per layer': each layer pruned to the sparsity by magnitude from a seeded initialization "
        "(seed 0). Masks 'ART run (global)': LeNet-5 trained on MNIST by ART + HyperSparse on the CPU (shortened "
        "schedule, bench/masks/README.md); 'GMP run (global)' and 'RigL run (global)': the same schedule by GMP and "
        "RigL, given as many pruning epochs as ART regularized at 99.5 %; the 'quarter schedule' masks: seed 0 at "
        "99.5 % of issue 35's LeNet-5 sweep (bench/beyond_mnist.py, docs/results.md; bench/masks/README.md says how "
        "they were taken). ResNet-32 and VGG-19 CIFAR masks from ART "
        "need a GPU run, which none of the sessions so far had." + _commits(rows) + "\n\nAnchors: " + ANCHORS)
    write_results("inference-cpu", {"provenance": prov, "rows": rows}, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
