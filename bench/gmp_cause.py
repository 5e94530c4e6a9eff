"""Why the GMP cells of the shortened MNIST sweep moved when they were rerun (bench/gmp_rerun.py): the 99.8 %
LeNet-300 runs again, one setting changed at a time, against the rerun's own results.

    python bench/gmp_cause.py [--variants no-compact] [--workdir /tmp/gmp-cause]

Runs that finished in ``--workdir`` are not run again. Writes bench/results/gmp-cause.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from gmp_rerun import gmp_jobs  # noqa: E402

from common import provenance, write_results  # noqa: E402

VARIANTS = {"no-compact": {"compact_finetune": False}, "no-ceiling": {"max_layer_sparsity": 1.0}}


def main() -> None:
    from hypersparse.config import TrainConfig
    from hypersparse.engine import train

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="no-compact")
    ap.add_argument("--workdir", default="/tmp/gmp-cause")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    args = ap.parse_args()
    prov = provenance(seed=None)
    rows = []
    for variant in args.variants.split(","):
        for job in [j for j in gmp_jobs("mnist-sweep", args.data_dir) if "lenet300-0.998" in j["name"]]:
            run = Path(args.workdir) / f"{variant}-{job['name']}"
            if not (run / "summary.json").exists():
                train(TrainConfig.from_dict(dict(job["config"], **VARIANTS[variant])), run, False,
                      open(os.devnull, "w"))
            s = json.loads((run / "summary.json").read_text())
            rows.append({"variant": variant, "run": job["name"], "val_acc": s["sparse"]["val_acc"],
                         "test_error": round(100 * (1 - s["sparse"]["test_acc"]), 2)})
            print(rows[-1], flush=True)
    text = "\n".join(["# Why the rerun GMP cells moved: one setting at a time", "",
                      "| variant | run | test error % | validation accuracy |", "|---|---|---:|---:|",
                      *(f"| {r['variant']} | {r['run']} | {r['test_error']:.2f} | {r['val_acc']:.4f} |" for r in rows)])
    write_results("gmp-cause", {"provenance": prov, "runs": rows}, text)


if __name__ == "__main__":
    main()
