"""The Adaptor: per-sample outputs, the paper preset, real cross-attention."""

import pytest
import torch

from core_model.adaptor import Adaptor, AdaptorConfig, make_config


def _tokens_adaptor(**kw):
    torch.manual_seed(0)
    cfg = make_config("tokens", 48, 32, dim=64, heads=4, layers=2, ffn_dim=128, patch_grid=(4, 4), **kw)
    return Adaptor(cfg).eval()


def _inputs(b=6, t=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    ip, it = torch.randn(b, 48, generator=g), torch.randn(b, 16, 48, generator=g)
    tp, tt = torch.randn(b, 32, generator=g), torch.randn(b, t, 32, generator=g)
    lengths = torch.randint(3, t + 1, (b,), generator=g)
    mask = torch.arange(t)[None, :] < lengths[:, None]
    return ip, it, tp, tt, mask, lengths


@torch.no_grad()
@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_outputs_do_not_depend_on_the_rest_of_the_batch(batch_size):
    a = _tokens_adaptor()
    ip, it, tp, tt, mask, lengths = _inputs()
    full_i, full_t = a.encode_image(ip, it), a.encode_text(tp, tt, mask)
    full_h = a.heatmap(full_i, full_t)
    # the same samples, in other company and order, and with less padding
    order = torch.randperm(6, generator=torch.Generator().manual_seed(batch_size))
    for start in range(0, 6, batch_size):
        sel = order[start : start + batch_size]
        t_max = int(lengths[sel].max())
        sub_i = a.encode_image(ip[sel], it[sel])
        sub_t = a.encode_text(tp[sel], tt[sel, :t_max], mask[sel, :t_max])
        sub_h = a.heatmap(sub_i, sub_t)
        assert torch.allclose(sub_i.pooled, full_i.pooled[sel], atol=1e-6)
        assert torch.allclose(sub_t.pooled, full_t.pooled[sel], atol=1e-6)
        assert torch.allclose(sub_h, full_h[sel], atol=1e-6)


@torch.no_grad()
def test_padding_tokens_have_no_influence():
    a = _tokens_adaptor()
    ip, it, tp, tt, mask, _ = _inputs()
    garbage = tt.clone()
    garbage[~mask] = 1e3  # whatever sits in padded positions
    assert torch.allclose(a.encode_text(tp, tt, mask).pooled, a.encode_text(tp, garbage, mask).pooled, atol=1e-6)


@torch.no_grad()
def test_paper_preset_is_batch_independent_and_has_the_published_size():
    cfg = AdaptorConfig.paper(768, 768)
    a = Adaptor(cfg).eval()
    # bias-free projections to 768, 2 post-norm layers, 12 heads, FFN 2048: about 12.2 M
    assert 12.1e6 < a.num_parameters() < 12.3e6
    assert a.image_proj.bias is None and a.text_proj.bias is None
    x = torch.randn(5, 768)
    full = a.encode_image(x).pooled
    single = torch.cat([a.encode_image(x[i : i + 1]).pooled for i in range(5)])
    assert torch.allclose(full, single, atol=1e-6)


@torch.no_grad()
def test_cross_attention_really_fuses_text_and_image():
    """The published code's cross-attention over one token was a no-op; ours must make the
    heatmap depend on both the words and the image."""
    a = _tokens_adaptor()
    ip, it, tp, tt, mask, _ = _inputs()
    io, to = a.encode_image(ip, it), a.encode_text(tp, tt, mask)
    h = a.heatmap(io, to)
    assert h.shape == (6, 16)
    assert torch.allclose(h.sum(1), torch.ones(6), atol=1e-5)
    other_text = a.encode_text(tp.flip(0), tt.flip(0), mask.flip(0))
    assert (a.heatmap(io, other_text) - h).abs().max() > 1e-3
    other_image = a.encode_image(ip.flip(0), it.flip(0))
    assert (a.heatmap(other_image, to) - h).abs().max() > 1e-3
    # local similarity is a real pairwise matrix, and its candidate form agrees with it
    s = a.local_similarity(io, to)
    assert s.shape == (6, 6)
    idx = torch.tensor([[j] + [k for k in range(6) if k != j][:2] for j in range(6)])
    s_cand = a.local_similarity(io, to, image_index=idx)
    assert torch.allclose(s_cand, s.t().gather(1, idx), atol=1e-5)


def test_unknown_preset_and_bad_dims_are_rejected():
    with pytest.raises(ValueError, match="preset"):
        make_config("giant", 8, 8)
    with pytest.raises(ValueError, match="divisible"):
        make_config("tokens", 8, 8, dim=10, heads=4)
