"""Masks where they meet every other part, by generation: random sequences of mask operations, copies, round trips,
optimizer steps, compaction, sparse inference, the sparse file and ONNX (run in onnxruntime), and the consumers that
read the weights (the regularizers' gradients, magnitude_masks, sparsity_report: the same on a copy without masks), on
small MLPs and CNNs with and without BatchNorm and residual blocks.

After every operation:
* the weights the current mask prunes are exactly zero (when a mask is in force);
* the model's outputs equal those of the same weights in a copy without masks, and every consumer's outputs
  (sparse_inference, channel compaction, a sparse file loaded into a fresh model) equal the model's;
* no tensor carries more than one hook, no module more than one mask hook, no optimizer more than two, and one
  global step hook at most.
Nothing may raise. The examples are derandomized and few (HS_EXAMPLES, 40 per model): about 2 minutes on 2 busy cores,
under the 3 minutes CI allows it.
"""
from __future__ import annotations

import copy
import pickle
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.optim import optimizer as torch_optimizer

import hypersparse as hs
from hypersparse.compaction import compact_channels
from hypersparse.export import save_dense
from hypersparse.keep_pruned import has_masks, strip_masks_
from hypersparse.models.resnet_cifar import CifarResNet

from conftest import Nudge

MODELS = {
    "mlp": lambda: nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 24), nn.ReLU(), nn.Linear(24, 4)),
    "cnn": lambda: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
                                 nn.Flatten(), nn.Linear(8 * 6 * 6, 4)),
    "cnn-bn": lambda: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                    nn.Conv2d(8, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                                    nn.Flatten(), nn.Linear(8 * 3 * 3, 4)),
    "resnet": lambda: CifarResNet(8, num_classes=4, in_channels=3, widths=(4, 8, 8)),
}
OPTIMIZERS = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3),
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=1e-3),
    "other": lambda ps: Nudge(ps),  # not one torch's elementwise optimizers: the weights are masked after its step
}



EXAMPLES = int(__import__("os").environ.get("HS_EXAMPLES", "40"))
sparsities = st.sampled_from([0.5, 0.8, 0.9, 0.97])
ops = st.one_of(
    st.tuples(st.just("apply"), sparsities, st.sampled_from(["global", "layer"]),
              st.sampled_from([None, "sgd", "adam", "other"])),
    st.tuples(st.just("update"), sparsities),
    st.tuples(st.just("remove")),
    st.tuples(st.just("deepcopy")),
    st.tuples(st.just("pickle")),
    st.tuples(st.just("state_dict")),
    st.tuples(st.just("half"), st.booleans()),  # True: under torch's swap_tensors conversions
    st.tuples(st.just("steps"), st.integers(1, 3), st.booleans()),
    st.tuples(st.just("new_optimizer"), st.sampled_from(["sgd", "adam", "other"])),
    st.tuples(st.just("drop_handle")),
    st.tuples(st.just("sparse_inference")),
    st.tuples(st.just("compact")),
    st.tuples(st.just("export")),
    st.tuples(st.just("onnx")),
    st.tuples(st.just("consumers"), st.sampled_from(["HyperSparse", "L1", "L2"])),
)
ONNX = __import__("importlib").util.find_spec("onnxruntime") is not None


class World:
    """The model under test, its optimizer and handle, and the mask that should be in force (None: none)."""

    def __init__(self, kind: str):
        torch.manual_seed(0)
        self.kind = kind
        self.model = MODELS[kind]()
        self.opt = None
        self.handle = None
        self.masks = None
        self.x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))

    def outputs(self, model=None) -> torch.Tensor:
        model = model or self.model
        was = model.training
        model.eval()
        with torch.no_grad():
            out = model(self.x)
        model.train(was)
        return out

    def do(self, op: tuple) -> None:
        name = op[0]
        if name == "apply":
            _, sparsity, scope, optimizer = op
            self.masks = hs.magnitude_masks(self.model, sparsity, scope=scope)
            self.opt = OPTIMIZERS[optimizer](self.model.parameters()) if optimizer else None
            self.handle = hs.apply_masks_(self.model, self.masks, self.opt)
        elif name == "update" and self.handle is not None and self.masks is not None:
            self.masks = hs.magnitude_masks(self.model, op[1])
            self.handle.update_(self.masks)
        elif name == "remove" and self.handle is not None:
            self.handle.remove()
            self.handle, self.masks = None, None
        elif name in ("deepcopy", "pickle"):
            self.model = copy.deepcopy(self.model) if name == "deepcopy" else pickle.loads(pickle.dumps(self.model))
            self.opt, self.handle = None, None  # a copy travels without its original's optimizer and handle
        elif name == "state_dict":
            state = {k: v.clone() for k, v in self.model.state_dict().items()}
            fresh = MODELS[self.kind]()
            fresh.load_state_dict(state)
            self.model, self.opt, self.handle = fresh, None, None
            if self.masks is not None:  # the file's zeros are its mask
                self.masks = hs.masks_from_zeros(self.model)
                self.handle = hs.apply_masks_(self.model, self.masks)
        elif name == "half":
            ref = strip_masks_(copy.deepcopy(self.model)).half()
            torch.__future__.set_swap_module_params_on_conversion(op[1])
            try:
                self.model.half()
                with torch.no_grad():
                    self.model.eval(), ref.eval()
                    assert torch.equal(self.model(self.x.half()), ref(self.x.half()))
                self.model.float()
            finally:
                torch.__future__.set_swap_module_params_on_conversion(False)
        elif name == "drop_handle":  # the caller keeps no handle (nor the optimizer): the model carries its mask
            self.handle, self.opt = None, None
            __import__("gc").collect()
        elif name == "new_optimizer":  # e.g. fine-tuning's own: it steps the masked weights, no handle names it
            self.opt = OPTIMIZERS[op[1]](self.model.parameters())
        elif name == "steps":
            if self.opt is None:
                self.opt = OPTIMIZERS["sgd"](self.model.parameters())
            self.model.train()
            y = torch.arange(3) % 4

            def closure():
                self.opt.zero_grad()
                loss = nn.functional.cross_entropy(self.model(self.x), y)
                loss.backward()
                return loss

            for _ in range(op[1]):
                if op[2]:  # the gradients computed inside step, as Lightning does
                    self.opt.step(closure)
                else:
                    closure()
                    self.opt.step()
        elif name == "sparse_inference":
            fast = hs.sparse_inference(self.model, self.x, reps=1)
            close(fast(self.x), self.outputs())
        elif name == "compact":
            self.model.eval()
            compacted, _ = compact_channels(self.model)
            assert not has_masks(compacted) or compacted is self.model
            close(self.outputs(compacted), self.outputs())
        elif name == "export":
            with tempfile.TemporaryDirectory() as d:
                hs.save_sparse(self.model, Path(d) / "m.safetensors")
                loaded = hs.load_sparse(Path(d) / "m.safetensors", model=MODELS[self.kind]())
                save_dense(self.model, Path(d) / "m.pt", arch={})  # a plain state_dict: no mask buffer in it
                plain = MODELS[self.kind]()
                plain.load_state_dict(torch.load(Path(d) / "m.pt", weights_only=True))
            assert torch.equal(self.outputs(loaded), self.outputs())
            assert torch.equal(self.outputs(plain), self.outputs())
        elif name == "onnx" and ONNX:  # the graph holds the zeros; onnxruntime scores what torch does
            import onnxruntime

            from hypersparse.export import export_onnx

            with tempfile.TemporaryDirectory() as d:
                export_onnx(self.model, self.x, Path(d) / "m.onnx")
                session = onnxruntime.InferenceSession(str(Path(d) / "m.onnx"), providers=["CPUExecutionProvider"])
                out = session.run(None, {"input": self.x.numpy()})[0]
            close(torch.from_numpy(out), self.outputs())
        elif name == "consumers":  # the regularizer, magnitude_masks and sparsity_report see the same weights
            masked, plain = copy.deepcopy(self.model), strip_masks_(copy.deepcopy(self.model))
            for net in (masked, plain):
                net.zero_grad(set_to_none=True)
                (hs.HyperSparse(net, 0.9) if op[1] == "HyperSparse" else getattr(hs, op[1])(net)).add_grad_(1e-3)
            for (n, a), b in zip(masked.named_parameters(), plain.parameters()):
                assert (a.grad is None) == (b.grad is None), n
                assert a.grad is None or (torch.isfinite(a.grad).all() and torch.equal(a.grad, b.grad)), n
            ours, theirs = hs.magnitude_masks(masked, 0.9), hs.magnitude_masks(plain, 0.9)
            assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
            assert str(hs.sparsity_report(masked)) == str(hs.sparsity_report(plain))

    def check(self) -> None:
        params = dict(self.model.named_parameters())
        if self.masks is not None and has_masks(self.model):
            for n, keep in self.masks.items():
                assert torch.all(params[n].detach()[~keep] == 0), f"pruned weights of {n} revived"
        assert torch.equal(self.outputs(), self.outputs(strip_masks_(copy.deepcopy(self.model))))
        assert all(len(p._backward_hooks or {}) <= 1 for p in self.model.parameters())
        assert all(len(m._forward_pre_hooks) <= 1 and len(m._load_state_dict_post_hooks) <= 1
                   for m in self.model.modules())
        if self.opt is not None:
            assert len(self.opt._optimizer_step_pre_hooks) + len(self.opt._optimizer_step_post_hooks) <= 2
        assert len(torch_optimizer._global_optimizer_post_hooks) <= 1


def close(out: torch.Tensor, ref: torch.Tensor) -> None:
    assert (out - ref).abs().max() <= 1e-4 * max(1.0, float(ref.abs().max()))


@pytest.mark.parametrize("kind", list(MODELS))
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(sequence=st.lists(ops, min_size=1, max_size=8))
def test_any_sequence_of_mask_operations_keeps_the_mask_and_the_outputs(kind, sequence):
    world = World(kind)
    for op in sequence:
        world.do(op)
        world.check()
