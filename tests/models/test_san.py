"""The SAN local self-attention and front end, against hand-computed attention."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from oncoscope.models.san import RELATIONS, LocalAttention2d, SANFrontEnd


def naive_attention(layer: LocalAttention2d, x: torch.Tensor) -> torch.Tensor:
    """Attention weights ``(G, k*k, H, W)`` of one image, position by position, in eval mode."""
    _, _, h, w = x.shape
    k, g = layer.kernel_size, layer.groups
    q, key = layer.query(x)[0], layer.key(x)[0]
    out = torch.zeros(g, k * k, h, w)
    for i in range(h):
        for j in range(w):
            logits = torch.full((g, k * k), float("-inf"))
            for n in range(k * k):
                dy, dx = n // k - k // 2, n % k - k // 2
                y, xx = i + dy, j + dx
                if not (0 <= y < h and 0 <= xx < w):
                    continue
                if layer.relative is not None:  # dot
                    head = layer.rel_channels // g
                    keyed = key[:, y, xx].reshape(g, head) + layer.relative[:, n]
                    logits[:, n] = (q[:, i, j].reshape(g, head) * keyed).sum(1) / math.sqrt(head)
                else:  # pairwise: gamma([q_i - k_j, p(i - j)])
                    assert layer.position is not None
                    offset = torch.tensor([[-dy], [-dx]], dtype=torch.float32) / (k // 2)
                    position = layer.position(offset.unsqueeze(0))[0, :, 0]
                    joined = torch.cat([q[:, i, j] - key[:, y, xx], position])
                    logits[:, n] = layer.gamma(joined.reshape(1, -1, 1, 1)).reshape(g)
            out[:, :, i, j] = logits.softmax(dim=1)
    return out


@pytest.mark.parametrize("relation", ["pairwise", "dot"])
def test_attention_weights_match_a_position_by_position_computation(relation):
    torch.manual_seed(0)
    layer = LocalAttention2d(6, 4, 8, kernel_size=3, relation=relation, groups=2).eval()
    x = torch.randn(1, 6, 5, 4)
    with torch.no_grad():
        layer(x)
        expected = naive_attention(layer, x)
    torch.testing.assert_close(layer.last_attention[0], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("relation", RELATIONS)
def test_attention_sums_to_one_over_each_neighbourhood_inside_the_image(relation):
    torch.manual_seed(0)
    layer = LocalAttention2d(8, 4, 8, kernel_size=5, relation=relation, groups=2)
    out = layer(torch.randn(2, 8, 7, 6))
    assert out.shape == (2, 8, 7, 6)
    attention = layer.last_attention
    assert attention.shape == (2, 2, 25, 7, 6) and attention.dtype == torch.float32
    torch.testing.assert_close(attention.sum(dim=2), torch.ones(2, 2, 7, 6), atol=1e-5, rtol=0)
    assert (attention >= 0).all()
    # the top-left position has neighbours only below and to the right: offsets -2, -1 get 0
    corner = attention[:, :, :, 0, 0].reshape(2, 2, 5, 5)
    assert (corner[:, :, :2, :] == 0).all() and (corner[:, :, :, :2] == 0).all()


def test_uniform_attention_averages_the_neighbours_inside_the_image():
    layer = LocalAttention2d(4, 4, 4, kernel_size=3, relation="pairwise", groups=1)
    final = layer.gamma[-1]
    torch.nn.init.zeros_(final.weight)  # equal logits -> equal weights
    torch.nn.init.zeros_(final.bias)
    torch.nn.init.eye_(layer.value.weight.view(4, 4))
    torch.nn.init.zeros_(layer.value.bias)
    x = torch.randn(1, 4, 9, 8)
    expected = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    torch.testing.assert_close(layer(x), expected)
    # relative to uniform attention: 1 everywhere, also at the border, where fewer queries look
    torch.testing.assert_close(layer.received(), torch.ones(1, 9, 8))


def test_received_attention_peaks_where_every_query_looks():
    layer = LocalAttention2d(1, 1, 1, kernel_size=5, relation="dot", groups=1)
    with torch.no_grad():
        layer.query.weight.zero_()
        layer.query.bias.fill_(1.0)  # q = 1 everywhere
        layer.key.weight.fill_(20.0)  # k = 20 on the bright pixel, 0 elsewhere
        layer.key.bias.zero_()
        layer.relative.zero_()
    x = torch.zeros(1, 1, 12, 12)
    x[0, 0, 5, 7] = 1.0
    layer(x)
    received = layer.received()[0]
    assert divmod(int(received.argmax()), 12) == (5, 7)
    assert float(received[5, 7]) == pytest.approx(25.0, rel=1e-3)  # all 5 x 5 queries, not 1
    # (5, 6): 20 of the 25 queries that see it also see the bright pixel and look there only
    assert float(received[5, 6]) == pytest.approx(5 / 25, abs=1e-3)


@pytest.mark.parametrize("relation", RELATIONS)
def test_front_end_output_has_the_channels_and_stride_asked_for(relation):
    front = SANFrontEnd(
        1, 24, widths=(8, 16, 16), depths=(1, 2, 1), kernel_sizes=(3, 5, 3), relation=relation
    )
    out = front(torch.randn(2, 1, 37, 50))
    assert front.stride == 8
    assert out.shape == (2, 24, math.ceil(37 / 8), math.ceil(50 / 8))
    heat = front.attention_map()
    assert heat.shape == (2, 37, 50) and torch.isfinite(heat).all()


@pytest.mark.parametrize("relation", RELATIONS)
def test_gradients_reach_every_front_end_parameter(relation):
    torch.manual_seed(0)
    front = SANFrontEnd(
        1, 12, widths=(8, 16), depths=(1, 1), kernel_sizes=(3, 3), relation=relation
    )
    out = front(torch.randn(2, 1, 16, 16))
    (out * torch.randn_like(out)).sum().backward()  # a plain sum has no gradient through BN
    missing = [n for n, p in front.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


def test_bad_front_end_arguments():
    with pytest.raises(ValueError, match="odd"):
        LocalAttention2d(8, 4, 8, kernel_size=4)
    with pytest.raises(ValueError, match="divisible"):
        LocalAttention2d(8, 4, 6, groups=4)
    with pytest.raises(ValueError, match="relation"):
        LocalAttention2d(8, 4, 8, relation="cosine")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one entry per stage"):
        SANFrontEnd(1, 8, widths=(8, 8), depths=(1,), kernel_sizes=(3, 3))
    with pytest.raises(ValueError, match="stem_kernel must be odd"):
        SANFrontEnd(1, 8, widths=(8,), depths=(1,), kernel_sizes=(3,), stem_kernel=2)


@pytest.mark.parametrize("stem_kernel", [1, 3, 5])
def test_the_stem_mixes_a_stem_kernel_wide_neighbourhood_at_full_resolution(stem_kernel):
    # one changed pixel moves the stem's output (before any pooling) exactly over the
    # stem_kernel x stem_kernel square around it: 1x1 is SAN's stem, 3x3 the named configs'
    torch.manual_seed(0)
    front = SANFrontEnd(1, 8, (8,), (1,), (3,), stem_kernel=stem_kernel).eval()
    x = torch.randn(1, 1, 15, 15)
    changed = x.clone()
    changed[0, 0, 7, 7] += 5.0
    with torch.no_grad():
        moved = (front.stem[:2](changed) - front.stem[:2](x)).abs().amax(dim=1)[0] > 1e-6
    half = stem_kernel // 2
    expected = torch.zeros(15, 15, dtype=torch.bool)
    expected[7 - half : 8 + half, 7 - half : 8 + half] = True
    assert torch.equal(moved, expected)
