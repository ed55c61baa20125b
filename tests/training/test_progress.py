"""The epoch line: metrics, and how much of a time budget is used (the run stops on time, not at N)."""

from __future__ import annotations

from medseg.training.progress import budget_fit, format_row

ROW = {"epoch": 9, "train_loss": 0.41234, "val_loss": 0.5, "val_dice": 0.8765, "lr": 1e-3, "epoch_seconds": 12.34}


def test_epoch_line_without_a_budget() -> None:
    assert format_row(ROW, 27) == "epoch 9/27 | loss 0.4123  val loss 0.5000  val dice 0.8765  lr 1.00e-03  12.3s"


def test_epoch_line_says_how_much_of_the_budget_is_used() -> None:
    line = format_row({**ROW, "val_dice": ""}, 27, "96% of the 2-min budget")
    assert line == "epoch 9/27 | loss 0.4123  lr 1.00e-03  12.3s  96% of the 2-min budget"


def test_budget_fit_says_when_the_budget_ends_the_run_first() -> None:
    line = budget_fit(1, 12, seconds_left=130.0, epoch_seconds=17.0, minutes=3)  # 7.6 epochs left
    assert line.startswith("at 17 s an epoch the 3-min budget ends the run in about epoch 9 of 12")
    assert budget_fit(1, 6, seconds_left=-5.0, epoch_seconds=111.0, minutes=3).startswith(
        "at 111 s an epoch the 3-min budget ends the run in about epoch 1 of 6")


def test_budget_fit_is_silent_when_every_epoch_fits() -> None:
    assert budget_fit(1, 12, seconds_left=170.0, epoch_seconds=14.0, minutes=3) == ""
    assert budget_fit(12, 12, seconds_left=0.0, epoch_seconds=14.0, minutes=3) == ""
