"""Sparse inference on the CPU: latency dense vs `sparse_inference`, and file sizes per format.

Masks: every prunable layer pruned by magnitude to the same sparsity (``scope="layer"``)
from a seeded initialization, a pattern where no layer vanishes entirely. Latency is
the median of repeated runs at 2 threads, batch 1 and 64, dense and sparse calls interleaved.

    python bench/inference.py [--reps 200] [--threads 2]
"""
from __future__ import annotations

import argparse
import io
import json
import tempfile
from pathlib import Path

import torch

from common import provenance, write_results
import hypersparse as hs
from hypersparse import native
from hypersparse.errors import UserError
from hypersparse.export import export_onnx, save_sparse
from hypersparse.inference import interleaved_latency, sparse_inference
from hypersparse.models import create_model

CASES = [("lenet300", 0.98, 1, 28), ("lenet300", 0.995, 1, 28), ("resnet32", 0.995, 3, 32), ("vgg19", 0.995, 3, 32)]


def kept(measured: dict) -> str:
    """What sparse_inference returned: the dense model, or which chains it compacted."""
    swapped = [f"{chain} {kind}" for chain, kind in measured["choices"].items() if kind != "dense"]
    return ", ".join(swapped) if swapped else "dense model"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--from-json", help="rebuild the table from a saved results JSON, without measuring")
    args = ap.parse_args()
    if args.from_json:
        payload = json.loads(Path(args.from_json).read_text())
        return publish(payload["provenance"], payload["rows"])
    torch.set_num_threads(args.threads)
    prov = provenance(seed=0)  # at the start: the code that ran
    prov["native"] = native.unavailable()  # None: the C kernel was a candidate
    rows = []
    for name, sparsity, ch, size in CASES:
        torch.manual_seed(0)
        model = create_model(name, 10, ch, size).eval()
        hs.apply_masks_(model, hs.magnitude_masks(model, sparsity, scope="layer")).remove()
        row = {"model": name, "sparsity": sparsity}
        with tempfile.TemporaryDirectory() as tmp:
            buf = io.BytesIO()
            torch.save(model.state_dict(), buf)
            row["dense_pt_bytes"] = len(buf.getvalue())
            row["sparse_bytes"] = save_sparse(model, Path(tmp) / "m.safetensors")["bytes"]
            try:
                row["onnx_bytes"] = export_onnx(model, torch.zeros(1, ch, size, size), Path(tmp) / "m.onnx")["bytes"]
            except UserError:
                row["onnx_bytes"] = None
        reps = args.reps if name == "lenet300" else max(20, args.reps // 10)
        for batch in (1, 64):
            x = torch.randn(batch, ch, size, size)
            fast = sparse_inference(model, x)
            with torch.no_grad():
                assert torch.allclose(fast(x), model(x), atol=1e-5, rtol=0)
            t = interleaved_latency({"dense": model, "sparse": fast}, x, reps)
            dense_t, sparse_t = t["dense"], t["sparse"]
            row[f"b{batch}"] = {"dense_ms": dense_t * 1e3, "sparse_ms": sparse_t * 1e3, "speedup": dense_t / sparse_t,
                                "choices": {k: v["kind"] for k, v in fast.hypersparse_choices.items()},
                                "shapes": [v["shapes"] for v in fast.hypersparse_choices.values() if v["sparse"]]}
        rows.append(row)
        print(row, flush=True)
    publish(prov, rows)


def publish(prov: dict, rows: list[dict]) -> None:
    md = ["# Sparse inference on the CPU (median latency, dense vs `hypersparse.sparse_inference`)\n",
          "| model | sparsity | batch 1 dense ms | batch 1 sparse ms | speed-up | batch 64 dense ms | batch 64 sparse ms "
          "| speed-up | kept at batch 1 / 64 | dense .pt | sparse .safetensors | ratio | ONNX (sparse initializers) |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        onnx = f"{r['onnx_bytes']:,}" if r["onnx_bytes"] else "extra not installed"
        md.append(f"| {r['model']} | {r['sparsity']:.1%} | {r['b1']['dense_ms']:.3f} | {r['b1']['sparse_ms']:.3f} | "
                  f"{r['b1']['speedup']:.1f}x | {r['b64']['dense_ms']:.2f} | {r['b64']['sparse_ms']:.2f} | "
                  f"{r['b64']['speedup']:.1f}x | {kept(r['b1'])} / {kept(r['b64'])} | {r['dense_pt_bytes']:,} | {r['sparse_bytes']:,} | "
                  f"{r['dense_pt_bytes'] / r['sparse_bytes']:.0f}x | {onnx} |")
    md.append("\n'dense model': no replacement was at least 3 % faster, or together they saved less than 3 % of "
              "the model's time, so `sparse_inference` returned the dense model; its speed-up differs from 1.0x by "
              "timing noise only. "
              "Each chain of Linear layers becomes a `CompactMLP`: inputs no kept weight reads and hidden units that "
              "no longer reach the outputs are removed, units with no kept incoming weight are folded into the next bias "
              "as constants, and what is left runs as small dense (`addmm`) or CSR (`sparse.mm`) products, or as "
              "one C call that walks the CSR rows of every layer (`native`: compiled on first use with the system C "
              "compiler; at batch 1 one call replaces about six PyTorch dispatches of ~2 µs each), whichever "
              "a measurement at load finds fastest (or the chain as it was). "
              + (f"The C kernel was not available in this run: {prov['native']}. " if prov.get("native") else "")
              + "Shapes after compaction: "
              + "; ".join(f"{r['model']} {r['sparsity']:.1%}: {r['b1']['shapes']}" for r in rows if r["model"] == "lenet300")
              + ". Conv layers stay dense, so ResNet-32 and VGG-19 could gain only in their classifier, far less than 3 % of "
              "their time. "
              "Masks: each layer pruned to the sparsity by magnitude from a seeded initialization.")
    write_results("inference-cpu", {"provenance": prov, "rows": rows}, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
