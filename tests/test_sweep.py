"""bench/sweep.py: a sweep stopped mid-run and started again ends with the results of an uninterrupted one."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from hypersparse.errors import RunStopped  # noqa: E402
from hypersparse.run_write import RunFiles  # noqa: E402

import sweep  # noqa: E402

TINY = {"dataset": "digits", "model": "mlp", "sparsity": 0.9, "warmup_epochs": 1, "finetune_epochs": 2,
        "lr_steps": "1", "stats": False}


def plan(results: dict):
    """Two GMP runs, then a one-shot run whose budget depends on the first result (as the real sweeps do)."""
    for seed in (0, 1):
        yield {"name": f"gmp-s{seed}", "config": dict(TINY, method="gmp", prune_epochs=2, seed=seed),
               "meta": {"method": "gmp", "seed": seed}}
    if "gmp-s0" in results:
        epochs = results["gmp-s0"]["epochs"]["prune"] + 1
        yield {"name": "oneshot-s0", "config": dict(TINY, method="oneshot", prune_epochs=epochs, seed=0),
               "meta": {"method": "oneshot", "seed": 0}}


def outcome(results: dict) -> dict:
    drop = {"wall_seconds", "resumed", "commit"}
    return {n: {k: v for k, v in r.items() if k not in drop} for n, r in results.items()}


def test_a_stopped_sweep_resumes_to_the_same_results(tmp_path, monkeypatch):
    whole = sweep.run_sweep(plan, tmp_path / "whole", workers=0, say=lambda s: None)
    assert sorted(whole) == ["gmp-s0", "gmp-s1", "oneshot-s0"]

    calls = {"n": 0}
    record = RunFiles.record_epoch

    def killed_after_four_epochs(self, *args, **kwargs):
        record(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 7:  # the second run, after its second checkpoint
            raise KeyboardInterrupt

    monkeypatch.setattr(RunFiles, "record_epoch", killed_after_four_epochs)
    store = tmp_path / "stopped"
    with pytest.raises(RunStopped):  # what Ctrl-C becomes inside a run
        sweep.run_sweep(plan, store, workers=0, say=lambda s: None)
    assert sorted(sweep.load_results(store)) == ["gmp-s0"]
    assert (store / "runs" / "gmp-s1" / "checkpoint.pt").exists()
    monkeypatch.setattr(RunFiles, "record_epoch", record)

    said = []
    again = sweep.run_sweep(plan, store, workers=0, say=said.append)
    assert "start gmp-s1 (resuming)" in said and not any("gmp-s0" in s for s in said)  # finished runs are skipped
    assert again["gmp-s1"]["resumed"]
    assert outcome(again) == outcome(whole)
    assert outcome(sweep.run_sweep(plan, store, workers=0, say=said.append)) == outcome(whole)  # nothing left


def test_a_changed_plan_is_refused_not_mixed(tmp_path):
    sweep.run_sweep(plan, tmp_path, workers=0, say=lambda s: None)

    def other(results):
        yield {"name": "gmp-s0", "config": dict(TINY, method="gmp", prune_epochs=3, seed=0), "meta": {}}

    with pytest.raises(sweep.SweepError, match="other settings"):
        sweep.run_sweep(other, tmp_path, workers=0, say=lambda s: None)


def test_merge_refuses_conflicting_runs():
    a = {"runs": [{"name": "x", "test_error": 1.0}]}
    y = {"name": "y", "test_error": 2.0}
    assert sweep.merge(a, {"runs": [y]}) == a["runs"] + [y]
    with pytest.raises(sweep.SweepError, match="twice"):
        sweep.merge(a, {"runs": [{"name": "x", "test_error": 3.0}]})


def test_the_beyond_mnist_baselines_get_as_many_epochs_as_art_regularized():
    """bench/beyond_mnist.py runs at --epochs-scale 0.25, which scales every phase: a baseline given ART's 24
    regularization epochs must train 24 epochs between warm-up and fine-tuning, not 6 (its first GMP run did)."""
    from hypersparse.config import TrainConfig

    import beyond_mnist
    import beyond_setup

    art = {"experiment": "mlp-cifar10jpeg75", "sparsity": 0.98, "method": "art-hs", "seed": 0, "val_acc": 0.5,
           "test_error": 45.0, "epochs": {"warmup": 15, "regularize": 24, "finetune": 40}}
    plan = beyond_mnist.plan_for(["mlp-cifar10jpeg75"], [0.98], [0])
    jobs = {j["name"]: j for j in plan({beyond_setup.name("mlp-cifar10jpeg75", 0.98, "art-hs", 0): art})}
    for method in ("gmp", "rigl", "oneshot"):
        cfg = TrainConfig.from_dict(jobs[beyond_setup.name("mlp-cifar10jpeg75", 0.98, method, 0)]["config"])
        assert (cfg.warmup, cfg.scaled(cfg.baseline.prune_epochs), cfg.finetune) == (15, 24, 40), method


def test_the_beyond_mnist_causes_run_only_where_art_trails():
    """The suspected causes cost a run each: they are planned for a cell once seed 0 shows ART behind GMP on
    validation, or once the table (test error, two seeds or more) shows ART behind a baseline by more than one std."""
    import beyond_mnist
    import beyond_setup

    def result(method, seed, val_acc, test_error):
        return {"experiment": "lenet5-mnist", "sparsity": 0.995, "method": method, "seed": seed, "val_acc": val_acc,
                "test_error": test_error, "epochs": {"regularize": 20}}

    def planned(*results):
        runs = {beyond_setup.name("lenet5-mnist", 0.995, r["method"], r["seed"]): r for r in results}
        jobs = beyond_mnist.plan_for(["lenet5-mnist"], [0.995], [0, 1])(runs)
        return {j["meta"]["method"] for j in jobs} & set(beyond_setup.CAUSES)

    assert planned(result("art-hs", 0, 0.97, 1.2), result("gmp", 0, 0.98, 1.1)) == set(beyond_setup.CAUSES)
    assert planned(result("art-hs", 0, 0.98, 1.2), result("gmp", 0, 0.97, 1.1)) == set()  # one seed: validation
    two_seeds = [result("art-hs", 0, 0.98, 1.22), result("gmp", 0, 0.97, 1.14), result("art-hs", 1, 0.98, 1.24)]
    assert planned(*two_seeds, result("gmp", 1, 0.97, 1.16)) == set(beyond_setup.CAUSES)  # 0.08 apart, std 0.014
    assert planned(*two_seeds, result("gmp", 1, 0.97, 1.30)) == set()  # 0.08 apart, std 0.11: within one std


def test_the_beyond_mnist_learning_rate_suspect_runs_in_art_and_in_gmp_at_arts_budget():
    """Where a short check on validation preferred another learning rate than the experiment kept (the CIFAR MLP),
    a trailing cell runs ART at that rate, then GMP at that rate given that ART run's regularization epochs; an
    experiment without such a check (LeNet-5) plans neither."""
    from hypersparse.config import TrainConfig

    import beyond_mnist
    import beyond_setup

    def result(exp, method, val_acc, regs=20):
        return {"experiment": exp, "sparsity": 0.98, "method": method, "seed": 0, "val_acc": val_acc,
                "test_error": 50.0, "epochs": {"regularize": regs}}

    def jobs(exp, *results):
        done = {beyond_setup.name(exp, 0.98, r["method"], 0): r for r in results}
        return {j["meta"]["method"]: j for j in beyond_mnist.plan_for([exp], [0.98], [0])(done)}

    cifar = "mlp-cifar10jpeg75"
    trailing = [result(cifar, "art-hs", 0.45), result(cifar, "gmp", 0.55)]
    planned = jobs(cifar, *trailing)
    assert "art-hs-lr" in planned and "gmp-lr" not in planned
    assert TrainConfig.from_dict(planned["art-hs-lr"]["config"]).schedule.lr == 0.003
    planned = jobs(cifar, *trailing, result(cifar, "art-hs-lr", 0.5, regs=31))
    gmp = TrainConfig.from_dict(planned["gmp-lr"]["config"])
    assert (gmp.sparsity.method, gmp.schedule.lr, gmp.scaled(gmp.baseline.prune_epochs)) == ("gmp", 0.003, 31)
    assert "art-hs-lr" not in jobs(cifar, result(cifar, "art-hs", 0.55), result(cifar, "gmp", 0.45))
    assert not {"art-hs-lr", "gmp-lr"} & set(jobs("lenet5-mnist", result("lenet5-mnist", "art-hs", 0.97),
                                                  result("lenet5-mnist", "gmp", 0.98)))


def test_the_beyond_mnist_page_says_why_no_default_changed_where_art_is_behind_on_test_alone():
    """Where a baseline is ahead in test error but ART ahead on validation, the cause runs cannot justify a new
    default (that would choose on the test set): the page says so instead of measuring them against a negative
    gap."""
    import beyond_page

    def result(method, seed, val_acc, test_error):
        return {"experiment": "lenet5-mnist", "sparsity": 0.98, "method": method, "seed": seed, "val_acc": val_acc,
                "test_error": test_error, "epochs": {"regularize": 18}}

    runs = [result("art-hs", 0, 0.9920, 0.98), result("art-hs", 1, 0.9915, 0.91), result("gmp", 0, 0.9910, 0.84),
            result("gmp", 1, 0.9912, 0.82), result("art-hs-slow-lambda", 0, 0.9925, 0.95)]
    text = "\n".join(beyond_page.explain(runs, "lenet5-mnist", [0.98]))
    assert "ART is ahead" in text and "none was changed" in text and "-point gap" not in text, text
    runs[2]["val_acc"] = runs[3]["val_acc"] = 0.9990  # GMP ahead on validation too: the gap is measured
    text = "\n".join(beyond_page.explain(runs, "lenet5-mnist", [0.98]))
    assert "-point gap" in text and "No change tried closes the gap" in text, text
    assert "none comes within that spread" in text, text  # the cause run has no trace: not shown changed alone
    assert "cause of this gap was not found" not in text, text  # every suspect named for LeNet-5 was run
    cifar = [dict(r, experiment="mlp-cifar10jpeg75") for r in runs]  # review 4: its learning rate was not run
    text = "\n".join(beyond_page.explain(cifar, "mlp-cifar10jpeg75", [0.98]))
    assert "The cause of this gap was not found: the learning rate (0.003" in text, text
    # the learning rate run in ART and GMP alike: the page reads them against each other, not against the defaults
    lr_runs = cifar + [dict(result("art-hs-lr", 0, 0.9950, 0.80), experiment="mlp-cifar10jpeg75"),
                       dict(result("gmp-lr", 0, 0.9940, 0.79), experiment="mlp-cifar10jpeg75")]
    text = "\n".join(beyond_page.explain(lr_runs, "mlp-cifar10jpeg75", [0.98]))
    assert "At lr 0.003 (the rate the short check on validation preferred), ART reaches 99.5 %" in text, text
    assert "GMP, given that run's 18 epochs, 99.4 %" in text, text
    assert "the gap comes with the experiment's learning rate" in text and "No change tried" not in text, text
    lr_runs[-1]["val_acc"] = 0.9999  # GMP far ahead at that rate too: the cause stays unfound
    text = "\n".join(beyond_page.explain(lr_runs, "mlp-cifar10jpeg75", [0.98]))
    assert "not found among the suspects run, the learning rate included" in text, text
    assert "learning rate (0.003" not in text, text
    runs[3]["val_acc"] = 0.9930  # GMP's seeds far apart: the confounded move comes within their spread of the gap
    text = "\n".join(beyond_page.explain(runs, "lenet5-mnist", [0.98]))
    assert "cannot rule that change out" in text and "No change tried" not in text, text


def _trace(warm_val: float, stop_val: float, pruned_val: float, middle: str = "regularize") -> list[dict]:
    """A short epoch trace: two warm-up epochs, two middle epochs (ART's end with its stop), one fine-tuning epoch."""
    rows = [{"epoch": e, "phase": "warmup", "lr": 0.01, "train_acc": 0.9, "val_acc": warm_val} for e in (0, 1)]
    rows.append({"epoch": 2, "phase": middle, "lr": 0.01, "train_acc": 0.9, "val_acc": stop_val - 0.01,
                 "dense_acc": 0.95, "buffer_mean": 0.5})
    last = {"epoch": 3, "phase": middle, "lr": 0.01, "train_acc": 0.9, "val_acc": stop_val}
    if middle == "regularize":
        last.update(dense_acc=0.93, buffer_mean=0.94, stop_reason="rule", val_acc_after_stop=pruned_val)
    return rows + [last, {"epoch": 4, "phase": "finetune", "lr": 0.01, "train_acc": 0.9, "val_acc": pruned_val}]


def test_the_beyond_mnist_page_explains_every_art_variant_behind_and_plans_causes_for_the_defaults_only():
    """λ_0 auto trailing GMP gets its own measured paragraph (dense model against a plain dense run at the same
    epoch, where fine-tuning starts), while the cause runs, changes of the defaults, are planned only where the
    defaults trail."""
    import beyond_mnist
    import beyond_page
    import beyond_setup

    def result(method, seed, val_acc, test_error, trace):
        return {"experiment": "lenet5-mnist", "sparsity": 0.98, "method": method, "seed": seed, "val_acc": val_acc,
                "test_error": test_error, "epochs": {"regularize": 2}, "trace": trace,
                "name": beyond_setup.name("lenet5-mnist", 0.98, method, seed)}

    dense = [result("dense", s, 0.99, 0.8, _trace(0.98, 0.96, 0.99, middle="warmup")[:2] +
                    [{"epoch": 3, "phase": "warmup", "lr": 0.01, "train_acc": 0.9, "val_acc": 0.96 + 0.02 * s},
                     {"epoch": 4, "phase": "finetune", "lr": 0.001, "train_acc": 0.9, "val_acc": 0.99}])
             for s in (0, 1)]
    dense[0]["sparsity"] = dense[1]["sparsity"] = 0.0
    runs = [result("art-hs", s, 0.99, 1.0, _trace(0.98, 0.96, 0.95)) for s in (0, 1)] + \
        [result("art-hs-auto", s, 0.97, 1.5 + s / 100, _trace(0.98, 0.94, 0.93)) for s in (0, 1)] + \
        [result("gmp", s, 0.99, 1.0 + s / 100, _trace(0.98, 0.97, 0.97, middle="prune")) for s in (0, 1)] + dense
    lines = beyond_page.explain(runs, "lenet5-mnist", [0.98])
    auto = [line for line in lines if "ahead of ART (λ_0 auto)" in line]
    assert len(auto) == 1 and not any("ahead of ART:" in line for line in lines), lines
    assert "2.0 points behind on validation" in auto[0], auto[0]
    assert "without the regularizer (same seed and warm-up) had 97.0 %" in auto[0], auto[0]  # epoch 3, same lr
    assert "pruned copy of ART (λ_0 auto) at 93.0 %" in auto[0] and "pruning epochs at 97.0 %" in auto[0], auto[0]
    assert "budget" not in auto[0], auto[0]  # GMP's epochs unknown here: no comparison of budgets
    unequal = [dict(r, epochs={"prune": 4}) if r["method"] == "gmp" else r for r in runs]
    auto_unequal = next(line for line in beyond_page.explain(unequal, "lenet5-mnist", [0.98]) if "λ_0 auto)" in line)
    assert "it trained 4.0 epochs between warm-up and fine-tuning where ART (λ_0 auto) regularized 2.0" in auto_unequal
    # review 4: it pointed to "the paragraph on the defaults" where the defaults had none; it says what was done
    assert "paragraph on the defaults" not in auto[0] and "No cause run was made at 98 %" in auto[0], auto[0]
    assert "Nothing was changed: λ_0 auto stays an option" in auto[0], auto[0]
    level = [dict(r, val_acc=0.99) if r["method"] == "art-hs-auto" else r for r in runs]
    auto_level = next(line for line in beyond_page.explain(level, "lenet5-mnist", [0.98]) if "λ_0 auto)" in line)
    assert "is level" in auto_level and "the test gap is no ground to change anything" in auto_level, auto_level
    done = {r["name"]: r for r in runs}
    planned = {j["meta"]["method"] for j in beyond_mnist.plan_for(["lenet5-mnist"], [0.98], [0, 1])(done)}
    assert not planned & set(beyond_setup.CAUSES), planned
    for r in runs:  # the plain dense run trained that epoch at another rate: no comparison is made
        if r["method"] == "dense":
            r["trace"][2]["lr"] = 0.1
    auto = [line for line in beyond_page.explain(runs, "lenet5-mnist", [0.98]) if "λ_0 auto" in line]
    assert "without the regularizer" not in auto[0], auto[0]


def test_the_beyond_mnist_page_calls_a_validation_lead_within_the_seeds_spread_level():
    """A validation lead smaller than the seeds' spread is not a lead: the page says ART is level there."""
    import beyond_page

    def result(method, seed, val_acc, test_error):
        return {"experiment": "lenet5-mnist", "sparsity": 0.98, "method": method, "seed": seed, "val_acc": val_acc,
                "test_error": test_error, "epochs": {"regularize": 18}}

    runs = [result("art-hs", 0, 0.9900, 0.98), result("art-hs", 1, 0.9900, 0.91), result("gmp", 0, 0.9884, 0.84),
            result("gmp", 1, 0.9904, 0.82)]
    text = "\n".join(beyond_page.explain(runs, "lenet5-mnist", [0.98]))
    assert "ART is level (ahead by 0.06 points, the seeds' spread ±0.14)" in text, text


def test_the_beyond_mnist_page_names_runs_that_did_not_warm_up_like_their_seed():
    """Runs of a seed share initialization and data order; one whose warm-up drifted (other float results) is named,
    flagged where a cause is said to be changed alone, and left out of the dense-run comparison."""
    import beyond_page

    def result(method, seed, warm_val, val_acc=0.97):
        return {"experiment": "mlp-cifar10jpeg75", "sparsity": 0.98, "method": method, "seed": seed,
                "val_acc": val_acc, "test_error": 1.0, "epochs": {"regularize": 2}, "commit": "abc1234",
                "trace": _trace(warm_val, 0.96, 0.95), "name": method}

    runs = [result("art-hs", 0, 0.98), result("gmp", 0, 0.98), result("art-hs-paper-rule", 0, 0.981, 0.99)]
    assert beyond_page.drifted(runs, "mlp-cifar10jpeg75") == [runs[2]]
    assert "`art-hs-paper-rule` 98 % seed 0 (`abc1234`)" in "".join(beyond_page.drift_note(runs, "mlp-cifar10jpeg75"))
    table = "\n".join(beyond_page.causes(runs, "mlp-cifar10jpeg75", [0.98]))
    assert table.count("not the change alone") == 1 and "not the change alone) | 99.00" in table, table
    runs[2]["trace"] = _trace(0.98, 0.96, 0.95)
    assert beyond_page.drifted(runs, "mlp-cifar10jpeg75") == []
    assert "not the change alone" not in "\n".join(beyond_page.causes(runs, "mlp-cifar10jpeg75", [0.98]))


def test_the_beyond_mnist_frozen_reference_sentence_goes_seed_by_seed():
    """Whether a stop reference frozen at the first regularization epoch would have stopped ART later is decided per
    seed (a mean can hide a seed whose pruned copy fell short), and a 100 % reference is named as such."""
    import beyond_page

    def story(first, buffer):
        return {"ref_first": first, "buffer_mean": buffer}

    assert "no later" in beyond_page.frozen_reference([story(0.47, 0.49), story(0.46, 0.47)], "ART")
    text = beyond_page.frozen_reference([story(0.47, 0.49), story(0.47, 0.46)], "ART")
    assert "1.0 points more than it had on 1 of 2 seeds" in text, text
    assert "(100 %) could be met only" in beyond_page.frozen_reference([story(1.0, 0.99)], "ART")


def test_the_beyond_mnist_units_sentence_bounds_live_units_by_what_the_next_layer_reads():
    """Every hidden layer's units with a kept incoming weight, and where the next layer's inputs are those units, how
    many it reads (a convolution feeding a Linear layer reads positions, so no count is given there)."""
    import beyond_page

    def run(out0, in1, out1):
        return {"layers": [{"shape": [20, 1, 5, 5], "alive_out": out0, "alive_in": 1},
                           {"shape": [50, 20, 5, 5], "alive_out": out1, "alive_in": in1},
                           {"shape": [500, 800], "alive_out": 100, "alive_in": 300},
                           {"shape": [10, 500], "alive_out": 10, "alive_in": 90}]}

    text = beyond_page.units_sentence([run(20, 16, 25)], [run(20, 17, 40)], "ART", "GMP")
    assert "ART 20 (16), 25, 100 (90) of 20, 50, 500; GMP 20 (17), 40, 100 (90)" in text, text


def test_the_beyond_mnist_dense_line_says_how_a_beaten_dense_model_ends_training():
    """Where sparse models beat the dense one, the page gives the dense model's final training and validation
    accuracy beside the best sparse model's, instead of leaving a weak reference unexplained."""
    import beyond_page

    def result(method, sparsity, err, train, val):
        return {"experiment": "mlp-cifar10jpeg75", "sparsity": sparsity, "method": method, "seed": 0,
                "val_acc": val, "test_error": err, "trace": [{"train_acc": train, "val_acc": val}]}

    runs = [result("dense", 0.0, 47.0, 0.61, 0.53), result("gmp", 0.98, 43.0, 0.575, 0.576),
            result("art-hs", 0.98, 45.0, 0.55, 0.55)]
    text = beyond_page.dense_line(runs, "mlp-cifar10jpeg75", [0.98])
    assert "61.0 % training and 53.0 % validation" in text and "GMP (Zhu & Gupta) at 98 % ends at 57.5 %" in text
    runs[0]["test_error"] = 40.0
    assert beyond_page.dense_line(runs, "mlp-cifar10jpeg75", [0.98], seeds=1).strip() == \
        "Dense, same total epochs: **40.00 %** test error."
    assert "**40.00 %** (n=1) test error" in beyond_page.dense_line(runs, "mlp-cifar10jpeg75", [0.98], seeds=3)


def test_the_beyond_mnist_cause_run_must_train_like_the_defaults_until_its_change_can_act():
    """A cause run that warmed up alike but then trained differently before its change could act (other arithmetic
    while regularizing) is flagged: the optimizer reset acts at the stop, a slower lambda after the first
    regularization epoch."""
    import beyond_page

    def run(method, regs):
        trace = [{"epoch": e, "phase": "warmup", "train_acc": 0.9, "val_acc": 0.9} for e in (0, 1)]
        trace += [{"epoch": 2 + i, "phase": "regularize", "train_acc": 0.9, "val_acc": v} for i, v in enumerate(regs)]
        trace[-1].update(stop_reason="rule", lr=0.01)
        for t in trace:
            t.setdefault("lr", 0.01)
        return {"method": method, "trace": trace}

    default = run("art-hs", [0.91, 0.92, 0.93])
    assert beyond_page.changed_alone(run("art-hs-keep-momentum", [0.91, 0.92, 0.93, 0.94]), default)
    assert not beyond_page.changed_alone(run("art-hs-keep-momentum", [0.91, 0.925, 0.93, 0.94]), default)
    assert beyond_page.changed_alone(run("art-hs-slow-lambda", [0.91, 0.80, 0.85, 0.9, 0.95]), default)
    assert not beyond_page.changed_alone(run("art-hs-slow-lambda", [0.915, 0.80, 0.85, 0.9, 0.95]), default)


def test_the_beyond_mnist_page_names_each_runs_host_where_it_recorded_one():
    """A sweep that spans sessions runs on several hosts: the page names the runs' own machines, and where runs did
    not record theirs, says that the machine named is where the sweep started (review 4: it named one host for all)."""
    import beyond_page

    started = {"machine": "CPU A, 2 logical cores", "commit": "b171144aaaa"}
    old = [{"name": "a"}, {"name": "b"}]
    assert beyond_page.hosts(old, started) == ("CPU A, 2 logical cores (the host recorded when the sweep started, at "
                                               "`b171144`; the sweep spanned sessions, each on another host, and its "
                                               "runs did not record their own)")
    mixed = old + [{"name": "c", "machine": "CPU B, 2 logical cores"}]
    assert "2 of its 3 runs did not record their own; the others ran on CPU B" in beyond_page.hosts(mixed, started)
    assert beyond_page.hosts([{"machine": "CPU B"}, {"machine": "CPU C"}], started) == "CPU B, CPU C"


def test_the_beyond_mnist_cause_table_says_where_its_rows_no_longer_decide_anything():
    """Cause runs start once the runs finished by then show ART's defaults behind; where every seed later puts them
    level, the page says those rows decide nothing (review 4: LeNet-5 98 % showed them without a word)."""
    import beyond_page

    def result(method, seed, test_error):
        return {"experiment": "lenet5-mnist", "sparsity": 0.98, "method": method, "seed": seed, "val_acc": 0.99,
                "test_error": test_error, "epochs": {"regularize": 18}}

    runs = [result("art-hs", s, e) for s, e in ((0, 0.95), (1, 0.82), (2, 0.90))] + \
        [result("gmp", s, e) for s, e in ((0, 0.88), (1, 0.90), (2, 0.89))] + [result("art-hs-slow-lambda", 0, 0.9)]
    moot = "these runs were made when the runs finished by then had ART's defaults behind"
    assert "At 98 % " + moot in "\n".join(beyond_page.causes(runs, "lenet5-mnist", [0.98]))
    behind = [dict(r, test_error=r["test_error"] + 0.5) if r["method"] == "art-hs" else r for r in runs]
    assert moot not in "\n".join(beyond_page.causes(behind, "lenet5-mnist", [0.98]))


def test_the_learning_rate_check_trains_dense_at_each_rate_and_the_page_quotes_it():
    """bench/lr_check.py: one dense run per rate, warm-up epochs only, seed 0; its summary names each rate's final
    validation accuracy (a diverged rate as such) and is what the beyond_mnist page quotes for the experiment."""
    from hypersparse.config import TrainConfig

    import beyond_page
    import lr_check

    jobs = list(lr_check.plan_for(["lenet5-mnist"], [0.003, 0.01], 6)({}))
    assert [j["name"] for j in jobs] == ["lenet5-mnist-dense-6ep-lr0.003", "lenet5-mnist-dense-6ep-lr0.01"]
    cfg = TrainConfig.from_dict(jobs[0]["config"])
    assert (cfg.schedule.lr, cfg.warmup, cfg.scaled(cfg.baseline.prune_epochs), cfg.finetune) == (0.003, 6, 0, 0)
    assert (cfg.sparsity.sparsity, cfg.run.seed) == (0.0, 0)

    def result(lr, val, failed=False):
        return {"experiment": "lenet5-mnist", "lr": lr, "config": {"warmup_epochs": 6},
                "test_error": None if failed else 1.0, **({} if failed else {"trace": [{"val_acc": val}]})}

    line = lr_check.summary("lenet5-mnist", [result(0.01, 0.985), result(0.003, 0.98), result(0.03, 0, True)])
    assert line.endswith("lr 0.003 98.00 %, 0.01 98.50 %, 0.03 diverged"), line
    assert lr_check.summary("mlp-cifar10jpeg75", [result(0.01, 0.985)]) is None
    page = beyond_page.section("lenet5-mnist", [], [0.98], [0], {"machine": "m", "torch": "t"}, line)
    assert "Learning rate: lr 0.03, the issue's suggestion, diverged" in page
    assert "The check on record: a short check on validation (bench/lr_check.py" in page


def _cause_run(method, regs, val_acc, test_error=45.0, sparsity=0.995, seed=0, commit="c1"):
    """A CIFAR-cell run whose trace is two warm-up epochs and ``regs`` (validation accuracy per regularization
    epoch, the last one the stop)."""
    trace = [{"epoch": e, "phase": "warmup", "lr": 0.01, "train_acc": 0.4, "val_acc": 0.4} for e in (0, 1)]
    trace += [{"epoch": 2 + i, "phase": "regularize", "lr": 0.01, "train_acc": 0.4, "val_acc": v}
              for i, v in enumerate(regs)]
    trace[-1].update(stop_reason="rule")
    return {"experiment": "mlp-cifar10jpeg75", "sparsity": sparsity, "method": method, "seed": seed,
            "val_acc": val_acc, "test_error": test_error, "epochs": {"regularize": len(regs)}, "trace": trace,
            "commit": commit, "name": f"mlp-cifar10jpeg75-{sparsity:g}-{method}-s{seed}"}


def test_the_beyond_mnist_causes_run_again_together_where_they_drifted_and_the_page_uses_the_reruns():
    """Review 5: at CIFAR 99.5 % every cause run trained unlike the defaults' run before its change could act (made
    in other sessions), so no suspect was changed alone. Where the table shows the defaults behind and a cause run
    drifted, the plan runs the defaults and every cause again together; once all have finished, the page measures
    each move against the defaults' rerun and flags none."""
    import beyond_mnist
    import beyond_page
    import beyond_setup

    table = [_cause_run("art-hs", [0.44, 0.45], 0.45, 49.4 + s / 10, seed=s) for s in (0, 1, 2)] + \
        [_cause_run("gmp", [0.50, 0.51], 0.48, 46.3 + s / 10, seed=s) for s in (0, 1, 2)]
    drifted = [_cause_run(c, [0.43, 0.45, 0.46], 0.455) for c in beyond_setup.CAUSES]  # epoch 2 differs

    def planned(runs):
        done = {r["name"]: r for r in runs}
        return {j["meta"]["method"] for j in beyond_mnist.plan_for(["mlp-cifar10jpeg75"], [0.995], [0])(done)}

    again = {"art-hs-again"} | {c + "-again" for c in beyond_setup.CAUSES}
    assert again <= planned(table + drifted)
    alike = [_cause_run(c, [0.44, 0.45, 0.46], 0.455) for c in beyond_setup.CAUSES]
    assert not again & planned(table + alike)  # every cause changed alone: nothing to rerun
    level = [dict(r, test_error=46.4) if r["method"] == "art-hs" else r for r in table]
    assert not again & planned(level + drifted)  # the defaults are not behind: the cell needs no explanation

    reruns = [_cause_run("art-hs-again", [0.42, 0.43], 0.44, commit="c2")] + \
        [_cause_run(c + "-again", [0.42, 0.43, 0.44], 0.445, commit="c2") for c in beyond_setup.CAUSES]
    runs = table + drifted + reruns
    text = "\n".join(beyond_page.explain(runs, "mlp-cifar10jpeg75", [0.995]))
    assert "Run again together at seed 0" in text and "the reruns ran at `c2`)" in text, text
    reruns[1]["commit"] = "c3"  # a sweep restarted at another commit: the page names both
    text = "\n".join(beyond_page.explain(runs, "mlp-cifar10jpeg75", [0.995]))
    assert "the reruns ran at `c2`, `c3`)" in text, text
    assert "not the change alone" not in text and "+0.5" in text, text  # 0.445 against the rerun's 0.44
    table_text = "\n".join(beyond_page.causes(runs, "mlp-cifar10jpeg75", [0.995]))
    assert table_text.count("not the change alone") == len(beyond_setup.CAUSES), table_text  # the first runs only
    assert "run again with the three below" in table_text, table_text
    assert not any(r["method"].endswith("-again") for r in beyond_page.drifted(runs, "mlp-cifar10jpeg75"))


def test_the_beyond_mnist_baseline_runs_at_lambda_auto_budget_where_auto_trails_and_the_page_weighs_it():
    """Review 5 (B3): where λ_0 auto trails GMP, GMP had the defaults' budget, longer than auto's; the plan
    runs GMP again at auto's own epochs, seed by seed, and the page says whether the test gap stays at equal
    epochs (judged against the seeds' spread)."""
    from hypersparse.config import TrainConfig

    import beyond_mnist
    import beyond_page
    import beyond_setup

    def result(method, seed, val_acc, test_error, epochs):
        return {"experiment": "lenet5-mnist", "sparsity": 0.995, "method": method, "seed": seed, "val_acc": val_acc,
                "test_error": test_error, "epochs": epochs, "commit": "c1",
                "name": beyond_setup.name("lenet5-mnist", 0.995, method, seed)}

    seeds = (0, 1, 2)
    table = [result("art-hs", s, 0.989, 1.09 + s / 100, {"regularize": 27}) for s in seeds] + \
        [result("gmp", s, 0.989, 1.09 + s / 100, {"prune": 27}) for s in seeds] + \
        [result("art-hs-auto", s, 0.989, 1.20 + s / 100, {"regularize": 15 - (s == 1)}) for s in seeds]

    def planned(runs):
        done = {r["name"]: r for r in runs}
        return {j["name"]: j for j in beyond_mnist.plan_for(["lenet5-mnist"], [0.995], list(seeds))(done)}

    jobs = planned(table)
    for s in seeds:
        cfg = TrainConfig.from_dict(jobs[beyond_setup.name("lenet5-mnist", 0.995, "gmp-auto-budget", s)]["config"])
        assert (cfg.sparsity.method, cfg.scaled(cfg.baseline.prune_epochs)) == ("gmp", 15 - (s == 1)), s
    behind_too = [dict(r, test_error=1.30) if r["method"] == "art-hs" else r for r in table]
    assert sum("gmp-auto-budget" in n for n in planned(behind_too)) == 3  # the defaults trailing too changes nothing
    level = [dict(r, test_error=1.09) if r["method"] == "art-hs-auto" else r for r in table]
    assert not any("auto-budget" in n for n in planned(level))  # λ_0 auto not behind: nothing to weigh

    def auto_line(runs):
        return next(line for line in beyond_page.explain(runs, "lenet5-mnist", [0.995]) if "λ_0 auto)" in line)

    assert "GMP at ART (λ_0 auto)'s budget was not run" in auto_line(table)
    closed = table + [result("gmp-auto-budget", s, 0.988, 1.19 + s / 100, {"prune": 15 - (s == 1)}) for s in seeds]
    text = auto_line(closed)
    assert "seed by seed (15/14/15), GMP reaches 98.80 % validation accuracy against ART (λ_0 auto)'s 98.90 %" in text
    assert "no longer ahead in test error by more than one standard deviation (+0.01 points" in text, text
    # flagged on test alone (level on validation): validation has no gap to explain, and the page says so
    assert "the table had no gap to explain, and the shorter budget moved GMP's validation accuracy by -0.10" in text
    assert "comes with the unequal budget" not in text, text  # no cause read off the test set
    on_val = [dict(r, val_acc=0.980 + r["seed"] / 1000) if r["method"] == "art-hs-auto" else
              dict(r, val_acc=0.9802 + r["seed"] / 1000) if r["method"] == "gmp-auto-budget" else r
              for r in closed]  # behind on validation too, and level with GMP there at equal epochs
    text = auto_line(on_val)
    assert "lead on validation is within the seeds' spread" in text and "the 12.3 more epochs GMP had there" in text
    ahead = [dict(r, val_acc=0.995 + r["seed"] / 1000) if r["method"] == "gmp-auto-budget" else r for r in on_val]
    assert "stays ahead on validation by more than the seeds' spread" in auto_line(ahead), auto_line(ahead)
    kept = table + [result("gmp-auto-budget", s, 0.990, 1.10 + s / 100, {"prune": 15 - (s == 1)}) for s in seeds]
    assert "stays ahead in test error by more than one standard deviation" in auto_line(kept)
    assert "against ART (λ_0 auto)'s 98.90 % (level: ahead by 0.10 points, the seeds' spread ±0.00" not in \
        auto_line(kept)  # a lead beyond the spread is not level
    kept[-1]["val_acc"] = 0.970  # GMP's seeds far apart on validation: a lead within their spread is level
    assert "(level: behind by 0.57 points, the seeds' spread ±1.15)" in auto_line(kept), auto_line(kept)
    assert "(1 of 3 seeds so far)" in auto_line(kept[:-2])


def test_the_mask_swap_fine_tunes_each_start_under_its_mask_and_keeps_it(tmp_path, monkeypatch):
    """bench/mask_swap.py on digits: ART's and GMP's stops, the warm-up, and fine-tunings from one run's weights under
    another run's mask; each fine-tuning ends with exactly its starting zeros, and the warm-up arms start from the
    warm-up's weights."""
    import torch

    import mask_swap

    tiny = {"config": {"dataset": "digits", "model": "mlp", "lr": 0.05, "stats": False}}
    monkeypatch.setitem(mask_swap.EXPERIMENTS, "tiny", tiny)
    monkeypatch.setitem(mask_swap.SCHEDULE, "epochs_scale", 0.05)  # beyond_setup's: budgets read it too
    store = tmp_path / "store"
    results = sweep.run_sweep(mask_swap.plan_for([0.9], [0], store, exp="tiny"), store, workers=0, say=lambda s: None)
    arms = {r["method"]: r for r in results.values()}
    assert set(arms) == {"warmup", "art-stop", "gmp-stop", "auto-stop", "gmp-auto-stop", *mask_swap.ARMS}
    assert arms["gmp-stop"]["epochs"]["prune"] == arms["art-stop"]["epochs"]["regularize"]
    assert arms["gmp-auto-stop"]["epochs"]["prune"] == arms["auto-stop"]["epochs"]["regularize"]
    warm = torch.load(store / "runs" / "tiny-warmup-s0" / "model.pt", weights_only=True)
    for arm, (weights, mask) in mask_swap.ARMS.items():
        r = arms[arm]
        assert r["kept_start_mask"] and r["epochs"] == {"finetune": 8}, arm
        start = torch.load(r["config"]["pretrained"], weights_only=True)
        masker = torch.load(store / "runs" / mask_swap.name("tiny", 0.9, mask, 0) / "model.pt", weights_only=True)
        for key, w in start.items():
            if w.dim() == 2:
                assert torch.equal(w != 0, masker[key] != 0), (arm, key)
                if weights == "warmup":
                    assert torch.equal(w[w != 0], warm[key][w != 0]), (arm, key)
    assert abs(arms["art-own"]["dense"]["val_acc"] - arms["art-stop"]["val_acc"]) < 1e-9  # the start is the stop


def _swap(arm: str, seed: int, val: float, alive: int = 200, k: float = 0.98) -> dict:
    return {"experiment": "mlp-cifar10jpeg75", "sparsity": k, "method": arm, "seed": seed, "val_acc": val,
            "test_error": 100 * (1 - val), "dense": {"val_acc": val - 0.05}, "kept_start_mask": True, "commit": "c",
            "name": f"{arm}-s{seed}", "layers": [{"alive_out": alive, "shape": [300, 3072]}]}


def _swaps(own_art: float, own_gmp: float, mask_art: float, mask_gmp: float, noisy: str) -> list[dict]:
    """Three seeds of bench/mask_swap.py's fine-tunings at 98 %: the ``noisy`` arm moves by +0.2, -0.2 and 0 points
    over the seeds, the others not; λ_0 auto's mask 0.3 points under GMP's at auto's budget."""
    arms = {"art-own": own_art, "gmp-own": own_gmp, "warmup-art-mask": mask_art, "warmup-gmp-mask": mask_gmp,
            "warmup-auto-mask": 0.556, "warmup-gmp-auto-mask": 0.559}
    alive = {"art-own": 190, "warmup-art-mask": 190, "warmup-auto-mask": 180}
    return [_swap(arm, s, v + (0.002, -0.002, 0.0)[s] * (arm == noisy), alive.get(arm, 280))
            for arm, v in arms.items() for s in (0, 1, 2)]


def test_the_mask_swap_split_names_what_carries_the_gap_and_the_beyond_page_says_it():
    """Where the masks from equal weights differ beyond their spread and the starting weights' part stays within its
    spread of zero, the mask carries the gap: the beyond page gives that as the measured cause in place of 'not
    found', and why no default changed; where the starting weights carry it, it says so and claims no cause in the
    mask; one seed decides nothing."""
    import beyond_page
    import mask_swap

    mask = _swaps(0.557, 0.573, 0.557, 0.573, noisy="gmp-own")  # GMP's own start +0.2/-0.2/0: the weights' part
    split = mask_swap.Split.measure(mask, 0.98)
    assert [round(g, 6) for g in split.mask] == [1.6] * 3 and split.carrier == "the mask"
    weights = _swaps(0.559, 0.574, 0.565, 0.566, noisy="warmup-gmp-mask")  # masks +0.3/-0.1/+0.1, weights ~1.4
    assert mask_swap.Split.measure(weights, 0.98).carrier == "the starting weights"
    assert mask_swap.Split.measure(mask, 0.995).carrier is None  # nothing measured there
    one = [r for r in mask if r["seed"] == 0 or r["method"] != "gmp-own"]  # seeds 1, 2 unfinished: left out whole
    assert mask_swap.Split.measure(one, 0.98).carrier == "one seed"
    assert "(1 seed), GMP's own network starts fine-tuning +1.80 points" in mask_swap.verdict(one, 0.98)
    assert "too few to say" in mask_swap.verdict(one, 0.98)
    page = mask_swap.section(mask, [0.98], {"machine": "m", "torch": "t", "workers": 2})
    assert "| 98 % | +1.60 ± 0.20 | +1.60 ± 0.00 | +0.00 ± 0.00 | +0.00 ± 0.20 | +0.30 ± 0.00 | the mask |" in page
    assert "Every fine-tuning ended with exactly the zeros it started from" in page and "2 runs side by side" in page
    assert "ART's mask keeps 190 of 300 first-layer units alive, GMP's 280" in page

    def result(method, seed, val_acc, test_error):
        return {"experiment": "mlp-cifar10jpeg75", "sparsity": 0.98, "method": method, "seed": seed,
                "val_acc": val_acc, "test_error": test_error, "epochs": {"regularize": 18}}

    runs = [result("art-hs", 0, 0.55, 44.6), result("art-hs", 1, 0.551, 44.7), result("gmp", 0, 0.57, 42.8),
            result("gmp", 1, 0.571, 42.9), result("art-hs-auto", 0, 0.549, 45.0), result("art-hs-auto", 1, 0.548, 45.1),
            result("art-hs-slow-lambda", 0, 0.551, 44.0), result("art-hs-lr", 0, 0.54, 45.0),
            result("gmp-lr", 0, 0.569, 42.8)]
    plain = "\n".join(beyond_page.explain(runs, "mlp-cifar10jpeg75", [0.98]))
    assert "not found among the suspects run" in plain and "carries" not in plain, plain
    lines = beyond_page.explain(runs, "mlp-cifar10jpeg75", [0.98], mask)
    defaults, auto = (next(line for line in lines if line.startswith("- 98 %, GMP ahead of " + who))
                      for who in ("ART:", "ART (λ_0 auto)"))
    assert "the mask carries the gap" in defaults and "This is the measured cause" in defaults, defaults
    assert "not found" not in defaults and "no default was changed" in defaults, defaults
    assert "(in the table, on validation: 2.00;" in defaults, defaults
    assert "GMP's mask at λ_0 auto's own budget reaches 55.90 %" in auto and "+0.30 ± 0.00 points" in auto, auto
    lenet = "\n".join(beyond_page.explain([dict(r, experiment="lenet5-mnist") for r in runs[:7]], "lenet5-mnist",
                                           [0.98], mask))
    assert "GMP ahead of ART" in lenet and "carries" not in lenet, lenet  # the swap measured the CIFAR MLP alone
    text = "\n".join(beyond_page.explain(runs, "mlp-cifar10jpeg75", [0.98], weights))
    assert "the starting weights carry the gap" in text and "This is the measured cause" not in text, text
    assert "No default was changed on this evidence" in text, text


def test_the_mask_swap_page_checks_that_each_seeds_runs_warmed_up_alike():
    """The split pairs runs of a seed through their shared warm-up: the page says so only where every run's warm-up
    matches the seed's warm-up run epoch by epoch, names those that do not, and says where there is nothing to
    check against."""
    import mask_swap

    def run(method, seed, vals, k=0.98):
        return {"name": mask_swap.name("mlp-cifar10jpeg75", k, method, seed), "method": method, "seed": seed,
                "sparsity": k, "trace": [{"phase": "warmup", "val_acc": v} for v in vals] + [{"phase": "x"}]}

    alike = [run("warmup", 0, [0.3, 0.4], k=0.0), run("art-stop", 0, [0.3, 0.4]), run("gmp-stop", 0, [0.3, 0.4])]
    assert "warmed up alike: the same validation accuracy after each of the 2 epochs" in mask_swap.warmups(alike)
    drifted = alike[:2] + [run("gmp-stop", 0, [0.3, 0.41])]
    assert "mlp-cifar10jpeg75-0.98-gmp-stop-s0" in mask_swap.warmups(drifted)
    assert "No warm-up run to check the others against for seed 0" in mask_swap.warmups(alike[1:])
