"""InfoNCE: matches CLIP's loss, clamps its temperature, weights directions, respects duplicates."""

import math

import torch
import torch.nn.functional as F

from core_model.losses import InfoNCE


def test_matches_clip_loss_with_equal_weights():
    torch.manual_seed(0)
    sim = F.normalize(torch.randn(8, 16), dim=1) @ F.normalize(torch.randn(8, 16), dim=1).t()
    loss = InfoNCE(temperature=0.07, image_to_text_weight=0.5)(sim)
    logits = sim / 0.07
    target = torch.arange(8)
    clip = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
    assert torch.allclose(loss, clip, atol=1e-5)


def test_direction_weights_follow_the_paper_setting():
    sim = torch.randn(6, 6)
    i2t = InfoNCE(image_to_text_weight=1.0)(sim)
    t2i = InfoNCE(image_to_text_weight=0.0)(sim)
    paper = InfoNCE(image_to_text_weight=0.75)(sim)
    assert torch.allclose(paper, 0.75 * i2t + 0.25 * t2i, atol=1e-6)


def test_temperature_is_learnable_but_clamped():
    nce = InfoNCE(temperature=0.07, min_temperature=0.01, max_temperature=1.0)
    assert math.isclose(nce.temperature, 0.07, rel_tol=1e-5)
    with torch.no_grad():
        nce.log_scale.fill_(50.0)  # a runaway logit scale
    assert math.isclose(nce.temperature, 0.01, rel_tol=1e-5)
    assert nce.log_scale.requires_grad


def test_identical_reports_are_not_treated_as_negatives():
    # images 0 and 1 have the same report text: pairing image 0 with report 1 is not an error
    emb = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), dim=1)
    nce = InfoNCE(temperature=0.1, image_to_text_weight=0.5)
    grads = []
    for groups in (None, torch.tensor([0, 0, 1])):
        sim = (emb @ emb.t()).requires_grad_(True)
        nce(sim, groups).backward()
        grads.append(sim.grad[0, 1].item())
    plain, grouped = grads
    assert plain > 1e-3  # plain InfoNCE pushes the duplicate apart
    assert abs(grouped) < 1e-3 * plain  # duplicate-aware targets (almost) do not


def test_segmentation_loss_is_ten_focal_plus_dice_and_prefers_the_true_mask():
    from core_model.losses import focal_loss, seg_loss, soft_dice_loss

    target = torch.zeros(2, 1, 16, 16)
    target[:, :, 4:10, 4:10] = 1.0
    good = (target * 2 - 1) * 8.0  # logits that agree with the mask
    bad = -good
    assert torch.allclose(seg_loss(good, target), 10 * focal_loss(good, target) + soft_dice_loss(good, target))
    assert float(seg_loss(good, target)) < 0.01 < float(seg_loss(bad, target))
    # Dice is per image: an image with no lesion and an empty prediction costs (almost) nothing
    empty = torch.zeros(1, 1, 8, 8)
    assert float(soft_dice_loss(torch.full((1, 1, 8, 8), -8.0), empty)) < 0.05
