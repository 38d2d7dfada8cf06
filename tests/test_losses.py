"""Focal, reduced focal, Dice and IoU losses: formulas, reductions, ignore index, gradients."""
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from mlcomp.runner.losses import (DiceLoss, FocalLossBinary, FocalLossMultiClass, IoULoss, reduced_focal_loss,
                                  sigmoid_focal_loss)


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(64, generator=generator), (torch.rand(64, generator=generator) > 0.7).float()


def _reference_focal(logits, targets, gamma, alpha):
    """Lin et al. 2017, eq. (5), in numpy: −α_t (1 − p_t)^γ log p_t."""
    p = 1 / (1 + np.exp(-logits.numpy().astype(np.float64)))
    t = targets.numpy()
    pt = np.where(t == 1, p, 1 - p)
    alpha_t = np.where(t == 1, alpha, 1 - alpha)
    return -alpha_t * (1 - pt) ** gamma * np.log(pt)


@pytest.mark.parametrize("gamma,alpha", [(2.0, 0.25), (0.5, 0.75)])
def test_sigmoid_focal_loss_matches_paper_formula(batch, gamma, alpha):
    logits, targets = batch
    expected = _reference_focal(logits, targets, gamma, alpha)
    assert sigmoid_focal_loss(logits, targets, gamma, alpha, "none").numpy() == pytest.approx(expected, rel=1e-5)
    assert sigmoid_focal_loss(logits, targets, gamma, alpha).item() == pytest.approx(expected.mean(), rel=1e-5)
    assert sigmoid_focal_loss(logits, targets, gamma, alpha, "sum").item() == pytest.approx(expected.sum(), rel=1e-5)


def test_focal_loss_without_focus_is_cross_entropy(batch):
    logits, targets = batch
    bce = F.binary_cross_entropy_with_logits(logits, targets)
    assert sigmoid_focal_loss(logits, targets, gamma=0.0, alpha=None).item() == pytest.approx(bce.item(), rel=1e-6)


def test_reduced_focal_loss_is_cross_entropy_below_threshold(batch):
    logits, targets = batch
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    pt = torch.exp(-bce)
    loss = reduced_focal_loss(logits, targets, threshold=0.5, gamma=2.0, reduction="none")
    hard = pt < 0.5
    assert hard.any() and (~hard).any()
    assert torch.allclose(loss[hard], bce[hard])
    assert torch.allclose(loss[~hard], bce[~hard] * ((1 - pt[~hard]) / 0.5) ** 2)


def test_unknown_reduction_is_rejected(batch):
    with pytest.raises(ValueError, match="batchwise_mean"):
        sigmoid_focal_loss(*batch, reduction="avg")
    with pytest.raises(ValueError, match="reduction"):
        FocalLossBinary(reduction="avg")


def test_focal_loss_binary_ignores_index_and_backpropagates(batch):
    logits, targets = batch
    logits = logits.clone().requires_grad_(True)
    marked = targets.clone()
    marked[:10] = 255
    loss = FocalLossBinary(ignore=255)(logits.view(-1, 1), marked)
    expected = sigmoid_focal_loss(logits[10:], targets[10:])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert logits.grad[:10].abs().sum() == 0 and logits.grad[10:].abs().sum() > 0
    reduced = FocalLossBinary(reduced=True, threshold=0.4)(logits, targets)
    assert reduced.item() == pytest.approx(reduced_focal_loss(logits, targets, 0.4).item(), rel=1e-6)


def test_focal_loss_multiclass_sums_one_vs_rest_losses():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(20, 3, generator=generator)
    classes = torch.randint(0, 3, (20,), generator=generator)
    expected = sum(sigmoid_focal_loss(logits[:, c], (classes == c).float()) for c in range(3))
    assert FocalLossMultiClass()(logits, classes).item() == pytest.approx(expected.item(), rel=1e-6)


def test_dice_and_iou_losses():
    logits = torch.tensor([10.0, 10.0, -10.0, -10.0], requires_grad=True)
    targets = torch.tensor([1.0, 1.0, 0.0, 0.0])
    assert DiceLoss()(logits, targets).item() == pytest.approx(0.0, abs=1e-4)
    assert IoULoss()(logits, 1 - targets).item() == pytest.approx(1.0, abs=1e-4)
    loss = DiceLoss()(logits * 0.1, targets)
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_losses_are_in_the_criterion_registry():
    from mlcomp.runner import registry

    assert registry.Criterion.get("FocalLossBinary") is FocalLossBinary
    assert registry.Criterion.get("DiceLoss") is DiceLoss


def test_focal_loss_ignore_leaves_samples_out():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(12, 3, generator=generator)
    classes = torch.randint(0, 3, (12,), generator=generator)
    marked = classes.clone()
    marked[:4] = -1
    loss = FocalLossMultiClass(ignore=-1)(logits, marked)
    assert loss.item() == pytest.approx(FocalLossMultiClass()(logits[4:], classes[4:]).item(), rel=1e-6)
    labels = (classes == 0).float()
    labels[:4] = -1
    per_element = FocalLossBinary(ignore=-1, reduction="none")(logits[:, 0], labels)
    assert torch.allclose(per_element, sigmoid_focal_loss(logits[4:, 0], labels[4:], reduction="none"))
    summed = FocalLossBinary(ignore=-1, reduction="sum")(logits[:, 0], labels)
    assert summed.item() == pytest.approx(per_element.sum().item(), rel=1e-6)
