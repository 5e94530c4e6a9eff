"""The Lightning and Hugging Face callbacks train a tiny model to the target sparsity exactly."""
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from hypersparse import prunable_parameters
from hypersparse.params import Exclude


def blobs(n=512, dim=16, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=g) * 3
    y = torch.randint(0, classes, (n,), generator=g)
    return centers[y] + torch.randn(n, dim, generator=g), y


def problems(recwarn) -> list[str]:
    """The callbacks' warnings about a run, without the notice that fine-tuning ended the trainer early."""
    return [str(w.message) for w in recwarn if "hypersparse ART" in str(w.message) and "ends training at" not in
            str(w.message)]


@pytest.mark.parametrize("module,new,old", [("lightning", "ARTLightningCallback", "ART"),
                                             ("transformers", "ARTTransformersCallback", "ARTCallback")])
def test_the_callbacks_old_names_are_the_new_classes(module, new, old):
    pytest.importorskip(module)
    mod = __import__(f"hypersparse.integrations.{module}", fromlist=[new])
    assert getattr(mod, old) is getattr(mod, new)


def zeros_and_numel(model, exclude=()):
    params = [p for _, p in prunable_parameters(model, Exclude(exclude))]
    return sum(int((p == 0).sum()) for p in params), sum(p.numel() for p in params)


def lightning_net(L, log_acc: bool):
    """A small MLP LightningModule; with ``log_acc`` it logs the running training accuracy for the paper rule."""

    class Net(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, _):
            x, y = batch
            out = self(x)
            if log_acc:
                self.log("train_acc", (out.argmax(1) == y).float().mean(), on_step=False, on_epoch=True)
            return F.cross_entropy(out, y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    return Net()


@pytest.mark.parametrize("criterion", ["paper", "matched"])
def test_lightning_callback_reaches_exact_sparsity(tmp_path, criterion):
    L = pytest.importorskip("lightning.pytorch")
    from hypersparse.integrations.lightning import ARTLightningCallback

    torch.manual_seed(0)
    x, y = blobs()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True)
    callback = ARTLightningCallback(sparsity=0.9, criterion=criterion, warmup_epochs=2, lambda_init=1e-3, eta=2.0,
                                    finetune_epochs=3, score_batches=4)
    module = lightning_net(L, log_acc=True)
    trainer = L.Trainer(max_epochs=50, accelerator="cpu", callbacks=[callback], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    trainer.fit(module, loader)
    art = callback.art
    assert art.phase == "finetune" and art.done
    phases = [h["phase"] for h in art.history]
    assert phases[:2] == ["warmup", "warmup"] and phases[-3:] == ["finetune"] * 3
    assert trainer.current_epoch == len(art.history)  # stopped when fine-tuning was done, not at max_epochs
    zeros, numel = zeros_and_numel(module)
    assert zeros == math.floor(0.9 * numel)  # exact, after three fine-tuning epochs with momentum
    acc = (module(x).argmax(1) == y).float().mean()
    assert acc > 0.9


def test_lightning_paper_rule_needs_logged_accuracy(tmp_path):
    L = pytest.importorskip("lightning.pytorch")
    from hypersparse.errors import UserError
    from hypersparse.integrations.lightning import ARTLightningCallback

    x, y = blobs(64)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        callbacks=[ARTLightningCallback(sparsity=0.5, warmup_epochs=1, criterion="paper")])
    with pytest.raises(UserError, match="self.log\\('train_acc'"):
        trainer.fit(lightning_net(L, log_acc=False), loader)


def test_transformers_callback_reaches_exact_sparsity(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from hypersparse.integrations.transformers import ARTTransformersCallback

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=2)
    model = transformers.BertForSequenceClassification(config)  # built from a config: no download
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 32, (256, 8), generator=g)
    labels = (ids[:, 0] < 16).long()  # learnable from the first token
    data = [{"input_ids": i, "attention_mask": torch.ones(8, dtype=torch.long), "labels": y}
            for i, y in zip(ids, labels)]
    callback = ARTTransformersCallback(sparsity=0.8, warmup_epochs=2, lambda_init=1e-3, eta=2.0, finetune_epochs=2,
                                       score_batches=4)
    args = transformers.TrainingArguments(output_dir=str(tmp_path), num_train_epochs=40, per_device_train_batch_size=16,
                                          learning_rate=1e-3, report_to=[], save_strategy="no", use_cpu=True,
                                          logging_strategy="no", disable_tqdm=True, seed=0)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[callback])
    trainer.train()
    art = callback.art
    assert art.phase == "finetune" and art.done
    assert [h["phase"] for h in art.history][-2:] == ["finetune", "finetune"]
    assert round(trainer.state.epoch) == len(art.history) < 40  # stopped once fine-tuning was done
    zeros, numel = zeros_and_numel(model, exclude=["classifier"])  # the head stays dense by default
    assert zeros == math.floor(0.8 * numel)
    assert int((model.classifier.weight == 0).sum()) == 0


def test_lightning_resume_keeps_art_state(tmp_path):
    L = pytest.importorskip("lightning.pytorch")
    from hypersparse.integrations.lightning import ARTLightningCallback

    def fit(max_epochs, ckpt_path=None):
        torch.manual_seed(0)
        x, y = blobs()
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
        callback = ARTLightningCallback(sparsity=0.9, criterion="matched", warmup_epochs=2, lambda_init=1e-3, eta=2.0,
                                        finetune_epochs=3, score_batches=4)
        saver = L.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0)
        module = lightning_net(L, log_acc=False)
        trainer = L.Trainer(max_epochs=max_epochs, accelerator="cpu", callbacks=[callback, saver], logger=False,
                            enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
        trainer.fit(module, loader, ckpt_path=ckpt_path)
        return callback, module

    first, _ = fit(3)  # stops one epoch into regularization
    assert [h["phase"] for h in first.art.history] == ["warmup", "warmup", "regularize"]
    resumed, module = fit(50, ckpt_path=tmp_path / "last.ckpt")
    art = resumed.art
    assert [h["phase"] for h in art.history][:3] == ["warmup", "warmup", "regularize"]  # restored, not restarted
    assert art.done and [h["phase"] for h in art.history][-3:] == ["finetune"] * 3
    zeros, numel = zeros_and_numel(module)
    assert zeros == math.floor(0.9 * numel)


def _fit_lightning(tmp_path, callback, max_epochs, accumulate=1, max_steps=-1):
    L = pytest.importorskip("lightning.pytorch")
    torch.manual_seed(0)
    x, y = blobs()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True)
    module = lightning_net(L, log_acc=False)
    trainer = L.Trainer(max_epochs=max_epochs, accelerator="cpu", callbacks=[callback], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path, accumulate_grad_batches=accumulate, max_steps=max_steps)
    trainer.fit(module, loader)
    module.optimizer_steps = trainer.global_step
    return module


def test_lightning_under_gradient_accumulation_steps_once_per_optimizer_step(tmp_path):
    pytest.importorskip("lightning.pytorch")
    from hypersparse.integrations.lightning import ARTLightningCallback

    callback = ARTLightningCallback(sparsity=0.9, lambda_init=1e-3, eta=2.0, score_batches=4)
    calls = []
    after = callback.driver.after_step
    callback.driver.after_step = lambda model: (calls.append(1), after(model))
    module = _fit_lightning(tmp_path, callback, max_epochs=30, accumulate=4)
    assert len(calls) == module.optimizer_steps > 0  # 16 batches per epoch, an optimizer step every 4
    assert callback.finished is True
    zeros, numel = zeros_and_numel(module)
    assert zeros == math.floor(0.9 * numel)


def test_lightning_with_too_few_epochs_warns_at_start_and_end(tmp_path):
    pytest.importorskip("lightning.pytorch")
    from hypersparse.integrations.lightning import ARTLightningCallback

    callback = ARTLightningCallback(sparsity=0.98, warmup_epochs=60, finetune_epochs=160)  # the authors'; 5 to run
    with pytest.warns(UserWarning) as caught:
        module = _fit_lightning(tmp_path, callback, max_epochs=5)
    said = [str(w.message) for w in caught if "hypersparse ART" in str(w.message)]
    assert any("the trainer runs 5" in s and "dense" in s for s in said), said
    assert any("NOT sparse" in s for s in said), said
    assert callback.finished is False and zeros_and_numel(module)[0] == 0


def test_lightning_phases_from_max_epochs_reach_the_target_and_finish(tmp_path, recwarn):
    pytest.importorskip("lightning.pytorch")
    from hypersparse.integrations.lightning import ARTLightningCallback

    callback = ARTLightningCallback(sparsity=0.9, lambda_init=1e-3, eta=2.0, score_batches=4)  # no phase lengths given
    module = _fit_lightning(tmp_path, callback, max_epochs=30)
    assert callback.driver.options["warmup_epochs"] == 4 and callback.driver.options["finetune_epochs"] == 12
    assert callback.finished is True and callback.art.done
    zeros, numel = zeros_and_numel(module)
    assert zeros == math.floor(0.9 * numel)
    assert not problems(recwarn)


def test_lightning_phases_from_max_steps(tmp_path, recwarn):
    pytest.importorskip("lightning.pytorch")
    from hypersparse.integrations.lightning import ARTLightningCallback

    callback = ARTLightningCallback(sparsity=0.9, lambda_init=1e-3, eta=2.0, score_batches=4)
    module = _fit_lightning(tmp_path, callback, max_epochs=-1, max_steps=30 * 16)  # 16 batches an epoch: 30 epochs
    assert callback.driver.options["warmup_epochs"] == 4 and callback.driver.options["finetune_epochs"] == 12
    assert callback.finished is True
    zeros, numel = zeros_and_numel(module)
    assert zeros == math.floor(0.9 * numel)
    assert not problems(recwarn)


def test_transformers_callback_with_the_readme_arguments(tmp_path, recwarn):
    """ARTTransformersCallback(sparsity=0.9) in a Trainer with its own epoch budget: phases derived, target reached, no
    warning; with a budget too small for the fine-tuning asked for, a warning at the start and at the end."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from hypersparse.integrations.transformers import ARTTransformersCallback

    def run(callback, epochs):
        torch.manual_seed(0)
        config = transformers.BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=32, max_position_embeddings=16, num_labels=2)
        model = transformers.BertForSequenceClassification(config)
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(1, 32, (256, 8), generator=g)
        labels = (ids[:, 0] < 16).long()
        data = [{"input_ids": i, "attention_mask": torch.ones(8, dtype=torch.long), "labels": lab}
                for i, lab in zip(ids, labels)]
        args = transformers.TrainingArguments(output_dir=str(tmp_path), num_train_epochs=epochs,
                                              per_device_train_batch_size=16, learning_rate=1e-3, report_to=[],
                                              save_strategy="no", use_cpu=True, logging_strategy="no",
                                              disable_tqdm=True, seed=0)
        transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[callback]).train()
        return model

    callback = ARTTransformersCallback(sparsity=0.9, lambda_init="auto", score_batches=4)
    model = run(callback, 12)
    assert callback.finished is True, [str(w.message) for w in recwarn]
    zeros, numel = zeros_and_numel(model, exclude=["classifier"])
    assert zeros == math.floor(0.9 * numel)
    assert not problems(recwarn)
    # a budget of 3 epochs: ART decides every max_steps / 20 optimizer steps instead. From scratch the dense score
    # climbs to 0.97 and falls back to 0.77 at round 9, where the pruned copy catches up: no mask on that model
    short = ARTTransformersCallback(sparsity=0.9, lambda_init="auto", finetune_epochs=3, score_batches=4)
    model = run(short, 3)
    assert short.steps == (256 // 16 * 3) // 20
    said = problems(recwarn)
    assert any("dense score fell from" in s and "lower lambda_init" in s for s in said), said
    assert short.finished is False and not short.art.mask_fixed and zeros_and_numel(model)[0] == 0
    per_epoch = ARTTransformersCallback(sparsity=0.9, finetune_epochs=3, score_batches=4, period="epoch")
    with pytest.warns(UserWarning, match="hypersparse ART"):
        run(per_epoch, 3)
    assert per_epoch.finished is False


def _bert_case(tmp_path, transformers, shrink_qk=False):
    """A 2-layer BERT of width 32 built from its config (no download), 512 sequences whose label is whether the first
    token is in the vocabulary's lower half, and a Trainer run on it: ``run(model, callbacks, epochs, **args)``."""
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=16, num_labels=2)
    model = transformers.BertForSequenceClassification(config)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 64, (512, 8), generator=g)
    data = [{"input_ids": i, "attention_mask": torch.ones(8, dtype=torch.long), "labels": (i[0] < 32).long()}
            for i in ids]

    def run(model, callbacks, epochs=3, **extra):
        args = dict(output_dir=str(tmp_path), num_train_epochs=epochs, per_device_train_batch_size=16,
                    learning_rate=1e-3, report_to=[], save_strategy="no", use_cpu=True, logging_strategy="no",
                    disable_tqdm=True, seed=0)
        trainer = transformers.Trainer(model=model, args=transformers.TrainingArguments(**{**args, **extra}),
                                       train_dataset=data, callbacks=callbacks)
        trainer.train()
        return trainer

    def accuracy(m):
        with torch.no_grad():
            x = ids[:256]
            return float((m.eval()(input_ids=x, attention_mask=torch.ones_like(x)).logits.argmax(-1) ==
                          (x[:, 0] < 32).long()).float().mean())

    def pretrained():
        """The same BERT trained dense for 3 epochs first (as a checkpoint one fine-tunes would be)."""
        torch.manual_seed(0)
        m = transformers.BertForSequenceClassification(config)
        run(m, [], epochs=3)
        if shrink_qk:  # Q and K weights a tenth of the others' scale: global pruning would take them first
            with torch.no_grad():
                for name, p in m.named_parameters():
                    if name.endswith(("query.weight", "key.weight")):
                        p.mul_(0.1)
        return m

    return model, run, accuracy, pretrained


def test_transformers_defaults_keep_every_attention_tensor_and_the_head_alive(tmp_path, recwarn):
    """A small trained BERT whose Q and K weights are a tenth of the others' scale: global pruning at 90 % removes
    every weight of Q and K (the control, with no ceiling and no exclusion); the callback's defaults keep a share of
    each tensor (max_layer_sparsity 0.99) and the classifier dense, and still reach the target on the rest."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from hypersparse import sparsity_report
    from hypersparse.integrations.transformers import ARTTransformersCallback

    _, run, accuracy, pretrained = _bert_case(tmp_path, transformers, shrink_qk=True)
    control = pretrained()
    run(control, [ARTTransformersCallback(sparsity=0.9, lambda_init="auto", score_batches=4, exclude=[],
                                          max_layer_sparsity=1.0)])
    dead = sparsity_report(control).dead_layers
    assert len(dead) == 4 and all(n.endswith(("query.weight", "key.weight")) for n in dead)
    model = pretrained()
    callback = ARTTransformersCallback(sparsity=0.9, lambda_init="auto", score_batches=4)
    run(model, [callback])
    assert callback.finished is True, problems(recwarn)
    report = sparsity_report(model)
    assert report.dead_layers == []
    assert all(layer.sparsity <= 0.99 for layer in report.layers)
    assert int((model.classifier.weight == 0).sum()) == 0
    zeros, numel = zeros_and_numel(model, exclude=["classifier"])
    assert zeros == math.floor(0.9 * numel)


def test_transformers_from_scratch_warns_instead_of_ending_on_a_chance_level_model(tmp_path, recwarn):
    """The issue's case: ARTTransformersCallback(sparsity=0.9, lambda_init="auto") on a BERT trained from scratch for
    the usual 3 epochs. Without the guard the pruned copy "caught up" with a dense model at chance (both 0.5) at round
    2, the mask was fixed and the Trainer ended early with finished=True. Now: a warning that says the model is near
    chance and what to do, no mask fixed on a chance-level model, the Trainer's whole budget, and finished False."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from hypersparse.integrations.transformers import ARTTransformersCallback

    class Unguarded(ARTTransformersCallback):  # the callback as it was: the stop rule alone
        def on_train_begin(self, *args, **kwargs):
            super().on_train_begin(*args, **kwargs)
            self.driver.method.hold = None

    model, run, accuracy, _ = _bert_case(tmp_path, transformers)
    control = Unguarded(sparsity=0.9, lambda_init="auto", score_batches=4)
    trainer = run(model, [control])
    stop = next(h for h in control.art.history if h.get("chosen_epoch") is not None)
    assert stop["dense_acc"] <= 0.55 and trainer.state.global_step < trainer.state.max_steps  # the failure, shown

    model, run, accuracy, _ = _bert_case(tmp_path, transformers)
    callback = ARTTransformersCallback(sparsity=0.9, lambda_init="auto", score_batches=4)
    trainer = run(model, [callback])
    said = problems(recwarn)
    assert any("near chance" in s and "meant for trained models" in s for s in said), said
    chance = callback.guard.chance
    learned = chance + 0.1 * (1 - chance)
    stops = [h for h in callback.art.history if h.get("chosen_epoch") is not None]
    assert all(h["dense_acc"] >= learned for h in stops)  # a mask only on a model that has learned something
    if callback.finished:  # the model learned while the mask waited: sparse and as good as the dense one
        assert accuracy(model) >= learned and callback.result["sparse_acc"] >= callback.result["dense_acc"] - 0.05
    else:  # or it ran the Trainer's whole budget and says why it did not finish
        assert trainer.state.global_step == trainer.state.max_steps and len(said) >= 2


def test_transformers_on_a_trained_model_finishes_and_logs_through_the_trainer(tmp_path, recwarn):
    """The same BERT trained first: ART makes it 90 % sparse within 3 epochs and keeps its accuracy (finished True,
    judged on the scoring batches), says that it ends the Trainer early, and its values reach the Trainer's own
    TensorBoard logger."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from hypersparse.integrations.transformers import ARTTransformersCallback

    _, run, accuracy, pretrained = _bert_case(tmp_path, transformers)
    model = pretrained()
    dense = accuracy(model)
    callback = ARTTransformersCallback(sparsity=0.9, lambda_init="auto", score_batches=4)
    trainer = run(model, [callback], report_to=["tensorboard"])
    assert callback.finished is True, problems(recwarn)
    assert callback.result["sparse_acc"] >= callback.result["dense_acc"] - 0.05
    assert accuracy(model) >= dense - 0.05
    zeros, numel = zeros_and_numel(model, exclude=["classifier"])
    assert zeros == math.floor(0.9 * numel)
    if trainer.state.global_step < trainer.state.max_steps:
        assert any(f"ends training at step {trainer.state.global_step} of {trainer.state.max_steps}" in str(w.message)
                   for w in recwarn)
    events = EventAccumulator(str(next(tmp_path.rglob("events.out.tfevents*")).parent))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/art/pruned_acc", "train/art/lambda", "train/art/sparsity"} <= set(tags), tags
    assert events.Scalars("train/art/sparsity")[-1].value == pytest.approx(0.9, abs=0.02)


def test_lightning_logs_through_the_trainers_logger_and_says_when_it_ends_early(tmp_path, recwarn):
    """The callback's values reach the Trainer's own logger (a CSVLogger here), one row per epoch; ending the Trainer
    before max_epochs is said with the epoch; and finished is judged on the scores it records."""
    L = pytest.importorskip("lightning.pytorch")
    import csv

    from hypersparse.integrations.lightning import ARTLightningCallback

    torch.manual_seed(0)
    x, y = blobs()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True)
    callback = ARTLightningCallback(sparsity=0.9, warmup_epochs=2, lambda_init=1e-3, eta=2.0, finetune_epochs=3,
                                    score_batches=4)
    trainer = L.Trainer(max_epochs=50, accelerator="cpu", callbacks=[callback], enable_checkpointing=False,
                        logger=L.loggers.CSVLogger(tmp_path), enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    trainer.fit(lightning_net(L, log_acc=False), loader)
    rows = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    scored = [float(r["art/pruned_acc"]) for r in rows if r.get("art/pruned_acc")]
    assert scored == pytest.approx([h["pruned_acc"] for h in callback.art.history if "pruned_acc" in h])
    assert float([r for r in rows if r.get("art/sparsity")][-1]["art/sparsity"]) == pytest.approx(0.9, abs=1e-3)
    assert any(f"ends training at epoch {trainer.current_epoch} of 50" in str(w.message) for w in recwarn)
    assert callback.finished is True and callback.result["sparse_acc"] >= callback.result["dense_acc"] - 0.05
