"""A mistyped name gets one line that names the closest right one: models, datasets, methods, settings, flags."""
import pytest

from hypersparse.cli import main

CASES = [
    (["train", "--model", "lenet30"], "unknown model 'lenet30' (did you mean 'lenet300'?)"),
    (["train", "--dataset", "mnst"], "unknown dataset 'mnst' (did you mean 'mnist'?)"),
    (["train", "--method", "gmpp"], "got 'gmpp' (did you mean 'gmp'?)"),
    (["train", "--set", "schedule.momentm=0.95"], "unknown setting 'schedule.momentm' (did you mean "
                                                  "'schedule.momentum'?)"),
    (["train", "--set", "momentm=0.95"], "(did you mean 'momentum'?)"),
    (["train", "--compare", "oneshoot"], "(did you mean 'oneshot'?)"),
    (["train", "--sparsty", "0.9"], "(did you mean --sparsity?)"),
    (["train", "--momentum", "0.95"], "(did you mean --set schedule.momentum=VALUE?)"),  # a setting without a flag
    (["train", "--set", "run.log=tensorbord"], "(did you mean 'tensorboard'?)"),
    (["train", "--draw-frequency", "3"], "(if a plugin defines it, load the plugin first: --plugin NAME)"),
]


@pytest.mark.parametrize("args,needle", CASES, ids=[" ".join(a[1:]) for a, _ in CASES])
def test_a_typo_is_one_line_with_the_closest_name(args, needle, tmp_path, capsys):
    try:
        code = main([*args, "--run-dir", str(tmp_path / "run")])
    except SystemExit as exc:  # argparse's own refusals
        code = exc.code
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_no_guess_for_a_name_like_nothing():
    from hypersparse.errors import did_you_mean

    assert did_you_mean("qqqq", ["mlp", "lenet300"]) == ""


@pytest.mark.parametrize("args,needle", [
    (["tune", "--lambda-init", "1e-4"], "tune searches lambda_init itself: set its range with --lambda-range"),
    (["tune", "--resume", "r"], "--resume is train's"),
    (["eval", "r", "--sparsity", "0.5"], "--sparsity is not a flag of 'eval'"),
])
def test_a_flag_of_another_command_is_named_not_suggested_to_itself(args, needle, capsys):
    """Trial 31d U016/U018: '--lambda-init (did you mean --lambda-init?)' went round in circles."""
    with pytest.raises(SystemExit) as exc:
        main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and needle in err[0], err
    assert "did you mean" not in err[0]
