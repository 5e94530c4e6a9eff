"""``hypersparse eval``: reload a trained model and report its accuracy and sparsity."""
from __future__ import annotations

import json
from pathlib import Path

from hypersparse.checkpoint import load_checkpoint
from hypersparse.data import load_dataset
from hypersparse.data.loader import DeviceLoader
from hypersparse.engine import evaluate, pick_device
from hypersparse.errors import UserError
from hypersparse.masks import sparsity_report
from hypersparse.models import create_model


def _find_config(path: Path) -> dict:
    for cand in (path / "config.json", path.parent / "config.json"):
        if cand.exists():
            return json.loads(cand.read_text())
    return {}


def evaluate_checkpoint(path: str, dataset=None, data_dir=None, model_name=None, device="auto") -> dict:
    """Print and return validation/test accuracy and sparsity of a saved model."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p} does not exist; pass a run directory or a model file")
    cfg = _find_config(p)
    file = p / "model.pt" if p.is_dir() else p
    dataset = dataset or cfg.get("dataset")
    model_name = model_name or cfg.get("model")
    if not dataset or not model_name:
        raise UserError(f"{p} has no config.json beside it; pass --dataset and --model")
    data = load_dataset(dataset, data_dir or cfg.get("data_dir"), cfg.get("seed", 0))
    if file.suffix == ".safetensors":
        from hypersparse.export import load_sparse

        model = load_sparse(file)
    else:
        try:
            obj = load_checkpoint(file)
        except (OSError, RuntimeError, EOFError) as exc:
            raise UserError(f"cannot read {file} ({exc})") from None
        state = obj.get("model", obj)
        model = create_model(model_name, data.num_classes, data.in_channels, data.image_size)
        model.load_state_dict(state)
    dev = pick_device(device)
    model.to(dev)
    loader = DeviceLoader(data.train_x[:1], data.train_y[:1], 1, data.mean, data.std, dev)
    result = {
        "val_acc": evaluate(model, data.val_x, data.val_y, loader),
        "test_acc": evaluate(model, data.test_x, data.test_y, loader),
        "sparsity": sparsity_report(model).sparsity,
    }
    print(sparsity_report(model))
    print(f"validation {result['val_acc']:.2%}  test {result['test_acc']:.2%}  sparsity {result['sparsity']:.2%}")
    return result
