"""Losses (deep-supervision weighting) and learning-rate schedules at known steps."""

from __future__ import annotations

import math

import pytest
import torch
from monai.losses import DiceCELoss

from medseg.training.losses import SegmentationLoss
from medseg.training.schedule import WARMUP_TIME_SHARE, Budget, build_scheduler, lr_factor


def _case(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    main = torch.randn(2, 3, 8, 8, generator=g)
    aux = torch.randn(2, 3, 8, 8, generator=g)
    target = torch.randint(0, 3, (2, 1, 8, 8), generator=g).float()
    return main, aux, target


def _dice_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return DiceCELoss(to_onehot_y=True, softmax=True, smooth_nr=1e-5, smooth_dr=1e-5)(logits, target)


def test_single_output_is_the_plain_base_loss() -> None:
    main, _, target = _case()
    torch.testing.assert_close(SegmentationLoss("dice_ce")(main, target), _dice_ce(main, target))


def test_deep_supervision_weights_are_normalised_to_sum_one() -> None:
    main, aux, target = _case(1)
    expected = (1.0 * _dice_ce(main, target) + 0.5 * _dice_ce(aux, target)) / 1.5
    torch.testing.assert_close(SegmentationLoss("dice_ce", (1.0, 0.5))((main, aux), target), expected)
    # scaling every weight changes nothing: only their ratio counts
    torch.testing.assert_close(SegmentationLoss("dice_ce", (4.0, 2.0))((main, aux), target), expected)


def test_identical_outputs_give_the_single_output_loss_whatever_the_weights() -> None:
    main, _, target = _case(2)
    single = SegmentationLoss("dice_ce")(main, target)
    torch.testing.assert_close(SegmentationLoss("dice_ce", (1.0, 0.25))((main, main.clone()), target), single)


def test_reduced_precision_logits_are_scored_in_fp32() -> None:
    main, _, target = _case(3)
    loss = SegmentationLoss("dice_focal")(main.to(torch.bfloat16), target)
    assert loss.dtype == torch.float32


def test_unknown_loss_is_refused() -> None:
    with pytest.raises(ValueError, match="dice_ce"):
        SegmentationLoss("hinge")


@pytest.mark.parametrize(("step", "expected"), [(0, 0.1), (4, 0.5), (9, 1.0)])
def test_linear_warmup(step: int, expected: float) -> None:
    assert lr_factor(step, 110, 10, "cosine") == pytest.approx(expected)


@pytest.mark.parametrize(("step", "expected"), [(10, 1.0), (60, 0.5), (85, 0.5 * (1 + math.cos(0.75 * math.pi))), (110, 0.0)])
def test_cosine_after_warmup(step: int, expected: float) -> None:
    assert lr_factor(step, 110, 10, "cosine") == pytest.approx(expected, abs=1e-12)


def test_poly_and_constant() -> None:
    assert lr_factor(50, 100, 0, "poly") == pytest.approx(0.5**0.9)
    assert lr_factor(100, 100, 0, "poly") == pytest.approx(0.0)
    assert lr_factor(99, 100, 0, "constant") == 1.0
    with pytest.raises(ValueError, match="schedule"):
        lr_factor(0, 10, 0, "step")


def test_scheduler_steps_once_per_optimizer_step_and_resumes_exactly() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.2)
    sched = build_scheduler(opt, "cosine", total_steps=20, warmup_steps=4)
    for _ in range(7):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2 * lr_factor(7, 20, 4, "cosine"))
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.2)
    resumed = build_scheduler(opt2, "cosine", total_steps=20, warmup_steps=4)
    resumed.load_state_dict(sched.state_dict())
    opt2.step()
    resumed.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.2 * lr_factor(8, 20, 4, "cosine"))


def test_warmup_ends_at_its_steps_or_its_share_of_the_time_whichever_comes_first() -> None:
    assert lr_factor(2, 1000, 100, "cosine", 0.3, warmup_time=0.5) == pytest.approx(0.5)
    assert lr_factor(2, 1000, 100, "cosine", 0.3, warmup_time=1.0) == pytest.approx(0.5 * (1 + math.cos(0.3 * math.pi)))
    assert lr_factor(50, 1000, 100, "cosine", 0.3, warmup_time=0.2) == pytest.approx(0.51)  # the steps lead


def test_a_budget_scheduler_warms_up_over_its_time_share_from_when_it_is_built() -> None:
    budget = Budget(100.0, spent=10.0)  # planning and caching took 10 % of the budget before the steps
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, "cosine", total_steps=100_000, warmup_steps=10_000, budget=budget)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4, abs=1e-3)  # step 0: warm-up starts at the bottom
    budget.spent = 10.0 + 0.5 * WARMUP_TIME_SHARE * 90.0  # half the warm-up's share of the steps' time
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5, abs=1e-3)
    budget.spent = 10.0 + WARMUP_TIME_SHARE * 90.0 + 1.0  # past it: the cosine, on the time, after step 2 of 10,000
    opt.step()
    sched.step()
    fraction = budget.fraction()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * (1 + math.cos(math.pi * fraction)), abs=1e-3)
