"""FractalNet: the expansion rule's conv counts and path length, the join, drop-path, the encoder contract."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medseg.encoders import FractalBlock, FractalEncoder, build_encoder
from medseg.encoders.fractal import cifar_fractal_blocks, join
from medseg.errors import MedsegError
from medseg.models import build_model


def _count_convs(module: nn.Module) -> tuple[list[int], list]:
    """A list that grows by one per conv forward call, and the hooks to remove."""
    calls: list[int] = []
    hooks = [m.register_forward_hook(lambda *_: calls.append(1)) for m in module.modules()
             if isinstance(m, nn.modules.conv._ConvNd)]  # fmt: skip
    return calls, hooks


@pytest.mark.parametrize(("columns", "convs"), [(1, 1), (2, 3), (3, 7), (4, 15)])
def test_a_block_of_c_columns_has_2_to_the_c_minus_1_convs(columns: int, convs: int) -> None:
    block = FractalBlock(2, 4, 8, columns)
    assert sum(isinstance(m, nn.Conv2d) for m in block.modules()) == convs
    assert [len(col) for col in block.columns] == [2**c for c in range(columns)]


def test_the_expansion_rule_computes_f_c_plus_1_from_two_f_c_and_one_conv() -> None:
    """f_2(z) = join(conv(conv(z)), conv(z)); the block's forward is that expression, flattened joins."""
    torch.manual_seed(0)
    block = FractalBlock(2, 3, 5, 2).eval()
    z = torch.randn(2, 3, 7, 9)
    with torch.no_grad():
        deep, short = block.columns[1], block.columns[0]
        torch.testing.assert_close(block(z), (deep[1](deep[0](z)) + short[0](z)) / 2)
        block3 = FractalBlock(2, 3, 5, 3).eval()
        c1, c2, c3 = block3.columns
        mid = (c3[1](c3[0](z)) + c2[0](z)) / 2  # the first f_2 of f_3 = join(f_2(f_2(z)), conv(z))
        expected = (c3[3](c3[2](mid)) + c2[1](mid) + c1[0](z)) / 3
        torch.testing.assert_close(block3(z), expected)


def test_join_is_the_mean_of_its_inputs_and_local_drop_path_keeps_at_least_one() -> None:
    inputs = [torch.full((2, 3), float(v)) for v in (1, 2, 6)]
    torch.testing.assert_close(join(inputs), torch.full((2, 3), 3.0))
    torch.manual_seed(0)
    seen = set()
    for _ in range(200):
        value = float(join(inputs, drop=0.9)[0, 0])
        assert value in {1.0, 2.0, 6.0, 1.5, 3.5, 4.0, 3.0}  # the mean of a non-empty subset
        seen.add(value)
    assert {1.0, 2.0, 6.0} <= seen  # at 0.9 most draws keep one input: every one gets kept sometimes


@pytest.mark.parametrize(("name", "parameters"), [("fractal20", 33_724_618), ("fractal40", 76_106_634)])
def test_parameter_counts_with_the_cifar_head(name: str, parameters: int) -> None:
    """Bias-free 3x3 convs with batch norm, 64-128-256-512-512, a 10-class head, 3 input channels."""
    with torch.device("meta"):
        encoder = build_encoder(name, in_channels=3, num_classes=10)
    assert sum(p.numel() for p in encoder.parameters()) == parameters


@pytest.mark.parametrize(("name", "depth"), [("fractal20", 20), ("fractal40", 40)])
def test_the_deepest_path_has_b_times_2_to_the_c_minus_1_convs(name: str, depth: int) -> None:
    encoder = build_encoder(name, in_channels=3).eval()
    assert encoder.depth == depth
    calls, hooks = _count_convs(encoder)
    with torch.no_grad(), encoder.use_column(encoder.max_columns):
        encoder(torch.randn(1, 3, 16, 16))
    assert len(calls) == depth
    calls.clear()
    with torch.no_grad(), encoder.use_column(1):
        encoder(torch.randn(1, 3, 16, 16))
    assert len(calls) == 5  # the shortest path: one conv per block
    for h in hooks:
        h.remove()


def test_global_drop_path_computes_exactly_one_column() -> None:
    torch.manual_seed(0)
    encoder = FractalEncoder(in_channels=2, columns=3, widths=(4, 8), global_ratio=1.0).train()
    calls, _ = _count_convs(encoder)
    counts = set()
    for _ in range(30):
        calls.clear()
        encoder(torch.randn(2, 2, 8, 8))
        counts.add(len(calls))
    assert counts == {2, 4, 8}  # column c has 2^(c-1) convs in each of 2 blocks, and all three get drawn
    encoder = FractalEncoder(in_channels=2, columns=3, widths=(4, 8)).eval()  # both sets of statistics at init
    x = torch.randn(2, 2, 8, 8)
    with torch.no_grad(), encoder.use_column(3):
        y = x
        for i, stage in enumerate(encoder.stages):
            y = encoder.pool(y) if i else y
            for unit in stage[0].columns[2]:
                y = unit(y)
        torch.testing.assert_close(encoder(x)[-1], y)  # the deepest column alone: a plain 8-layer chain


def test_batch_norm_keeps_separate_statistics_for_single_column_passes() -> None:
    torch.manual_seed(0)
    encoder = FractalEncoder(in_channels=1, columns=3, widths=(4, 8), global_ratio=1.0).train()
    norms = [m for m in encoder.stages.modules() if isinstance(m, nn.BatchNorm2d)]
    x = torch.randn(4, 1, 8, 8) * 3 + 2
    for _ in range(20):
        encoder(x)  # global drop-path only
    assert all(torch.equal(m.running_mean, torch.zeros_like(m.running_mean)) for m in norms)
    assert all(int(m.num_batches_tracked) == 0 for m in norms)
    moved = [m for m in norms if not torch.equal(m.column_running_mean, torch.zeros_like(m.running_mean))]
    assert len(moved) == len(norms)  # every column got drawn in 20 batches
    encoder.global_ratio = 0.0
    column_stats = [m.column_running_mean.clone() for m in norms]
    encoder(x)  # one joined pass: every conv runs, only the joined statistics move
    assert all(torch.equal(m.column_running_mean, c) for m, c in zip(norms, column_stats, strict=True))
    assert all(int(m.num_batches_tracked) == 1 for m in norms)
    assert "stages.0.0.columns.2.3.1.column_running_var" in encoder.state_dict()
    encoder.eval()
    with torch.no_grad():
        joined = encoder(x)[-1]
        with encoder.use_column(3):
            alone = encoder(x)[-1]
        for m in norms:
            m.column_running_mean.fill_(5.0)
        assert torch.equal(encoder(x)[-1], joined)  # evaluation of the joined network reads the joined set
        with encoder.use_column(3):
            assert not torch.allclose(encoder(x)[-1], alone)  # one column reads its own set


def test_local_drop_path_drops_inputs_only_while_training() -> None:
    torch.manual_seed(0)
    encoder = FractalEncoder(in_channels=1, columns=3, widths=(4,), drop_path=0.5, global_ratio=0.0)
    x = torch.randn(1, 1, 6, 6)
    encoder.eval()
    with torch.no_grad():
        assert torch.equal(encoder(x)[-1], encoder(x)[-1])
        encoder.train()
        outputs = {encoder(x)[-1].sum().item() for _ in range(20)}
    assert len(outputs) > 1  # different subsets of columns joined


@pytest.mark.parametrize(("depth", "layout"), [(20, [3, 2]), (32, [3, 3, 2]), (110, [3] * 9)])
def test_cifar_layout_matches_the_resnet_depth(depth: int, layout: list[int]) -> None:
    blocks = cifar_fractal_blocks(depth)
    assert blocks == [layout] * 3
    encoder = FractalEncoder(in_channels=3, widths=(16, 32, 64), blocks=blocks, stem=16, num_classes=10)
    assert encoder.depth + 1 == depth  # stem + deepest path, + the classifier
    assert encoder.out_channels == (16, 16, 32, 64) and encoder.reductions == (1, 1, 2, 4)
    assert encoder.classify(torch.randn(2, 3, 12, 12)).shape == (2, 10)


@pytest.mark.parametrize("decoder", ["unet_resnet", "dual_unet_resnet", "fcn"])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_every_decoder_takes_a_fractal_encoder(decoder: str, spatial_dims: int) -> None:
    torch.manual_seed(0)
    options = {"widths": (8, 16, 16, 32), "columns": 2} if spatial_dims == 3 else None  # 3D: small, for speed
    model = build_model(decoder, spatial_dims=spatial_dims, in_channels=2, out_channels=3, encoder="fractal20",
                        encoder_options=options)  # fmt: skip
    shape = (2, 2, *((21, 19) if spatial_dims == 2 else (13, 11, 9)))
    outputs = model(torch.randn(shape))
    outputs = outputs if isinstance(outputs, tuple | list) else (outputs,)
    assert all(tuple(o.shape) == (2, 3, *shape[2:]) for o in outputs)
    sum(o.mean() for o in outputs).backward()
    firsts = [column[0][0].weight.grad for column in model.encoder.stages[0][0].columns]
    assert any(g is not None and g.abs().sum() > 0 for g in firsts)  # drop-path trains some of the columns


def test_one_line_errors() -> None:
    with pytest.raises(MedsegError, match="num_classes"):
        FractalEncoder(widths=(4,)).classify(torch.randn(1, 1, 8, 8))
    for bad in ({"blocks": ((3,),)}, {"norm": "layer"}, {"spatial_dims": 4}, {"drop_path": 1.0},
                {"columns": 0}, {"widths": ()}):  # fmt: skip
        with pytest.raises(MedsegError) as err:
            FractalEncoder(**bad)
        assert "\n" not in str(err.value)
    with pytest.raises(MedsegError, match="column 4"), build_encoder("fractal20").use_column(4):
        pass
    with pytest.raises(MedsegError, match="unknown option"):
        build_encoder("fractal20", depth=3)
    with pytest.raises(MedsegError, match="6n\\+2"):
        cifar_fractal_blocks(21)
