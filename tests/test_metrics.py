"""Functional metrics against scikit-learn on random data, and their edge cases."""
import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from mlcomp.errors import ConfigError
from mlcomp.runner import metrics as M
from mlcomp.runner.metrics.functional import get_activation_fn


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(0)


def test_accuracy_topk_matches_sklearn(rng):
    logits = torch.randn(200, 7, generator=rng)
    targets = torch.randint(0, 7, (200,), generator=rng)
    top1, top3, top7, top9 = M.accuracy(logits, targets, topk=(1, 3, 7, 9))
    assert top1.dim() == 0
    assert top1.item() == pytest.approx(skm.accuracy_score(targets, logits.argmax(1)))
    assert top3.item() == pytest.approx(skm.top_k_accuracy_score(targets, logits, k=3, labels=range(7)))
    assert top7.item() == top9.item() == 1.0


def test_accuracy_binary_one_logit_reads_softmax_as_sigmoid(rng):
    logits = torch.randn(50, generator=rng)
    targets = (torch.rand(50, generator=rng) > 0.5).long()
    expected = skm.accuracy_score(targets, (logits > 0).long())
    assert M.accuracy(logits, targets, activation="Softmax")[0].item() == pytest.approx(expected)
    assert M.accuracy(logits.view(-1, 1), targets, activation="Sigmoid")[0].item() == pytest.approx(expected)


@pytest.mark.parametrize("topk", [(0,), (), (1.5,), "1"])
def test_accuracy_rejects_bad_topk(topk):
    with pytest.raises(ValueError, match="topk"):
        M.accuracy(torch.randn(4, 3), torch.zeros(4), topk=topk)


def test_multi_label_accuracy(rng):
    logits = torch.randn(30, 4, generator=rng)
    targets = (torch.rand(30, 4, generator=rng) > 0.5).float()
    expected = ((logits > 0).float() == targets).float().mean().item()
    assert M.multi_label_accuracy(logits, targets).item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="same shape"):
        M.multi_label_accuracy(logits, targets[:, :2])


def _apk(actual, predicted, k):
    """Reference AP@k (Kaggle's ml_metrics.apk)."""
    predicted = predicted[:k]
    score, hits = 0.0, 0
    for i, p in enumerate(predicted):
        if p in actual and p not in predicted[:i]:
            hits += 1
            score += hits / (i + 1.0)
    return score / min(len(actual), k) if actual else 0.0


@pytest.mark.parametrize("k", [1, 3, 5, 20])
def test_mapk_matches_reference_single_and_multi_label(rng, k):
    scores = torch.randn(40, 8, generator=rng)
    ranked = scores.argsort(dim=1, descending=True).tolist()
    labels = torch.randint(0, 8, (40,), generator=rng)
    expected = np.mean([_apk([a], p, k) for a, p in zip(labels.tolist(), ranked)])
    assert M.mapk(scores, labels, k).item() == pytest.approx(expected)
    multi = (torch.rand(40, 8, generator=rng) > 0.6).float()
    actual = [torch.nonzero(row).view(-1).tolist() for row in multi]
    expected = np.mean([_apk(a, p, k) for a, p in zip(actual, ranked)])
    assert M.mapk(scores, multi, k).item() == pytest.approx(expected)


def test_mean_average_accuracy_single_label_is_reciprocal_rank():
    scores = torch.tensor([[0.1, 0.9, 0.5], [0.8, 0.1, 0.3]])
    targets = torch.tensor([2, 0])  # ranks 2 and 1
    map1, map3 = M.mean_average_accuracy(scores, targets, topk=(1, 3))
    assert map1.item() == pytest.approx(0.5)
    assert map3.item() == pytest.approx((0.5 + 1.0) / 2)


@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_f1_dice_iou_match_sklearn_binary(rng, threshold):
    logits = torch.randn(300, generator=rng)
    targets = (torch.rand(300, generator=rng) > 0.4).float()
    predicted = (torch.sigmoid(logits) > threshold).long()
    f1 = M.f1_score(logits, targets, threshold=threshold)
    assert f1.item() == pytest.approx(skm.f1_score(targets, predicted), abs=1e-6)
    assert M.fbeta_score(logits, targets, beta=2.0, threshold=threshold).item() == pytest.approx(
        skm.fbeta_score(targets, predicted, beta=2.0), abs=1e-6)
    assert M.iou(logits, targets, threshold=threshold).item() == pytest.approx(
        skm.jaccard_score(targets, predicted), abs=1e-6)
    assert M.dice(logits, targets, threshold=threshold).item() == pytest.approx(f1.item(), abs=1e-6)


def test_per_class_overlap_on_masks_matches_sklearn(rng):
    logits = torch.randn(4, 3, 5, 5, generator=rng)
    masks = (torch.rand(4, 3, 5, 5, generator=rng) > 0.5).float()
    predicted = (logits > 0).float()
    per_class = M.iou(logits, masks, threshold=0.5, per_class=True)
    assert per_class.shape == (3,)
    flat = lambda x: x.transpose(0, 1).reshape(3, -1).T.numpy()  # noqa: E731 — [pixels, classes]
    expected = skm.jaccard_score(flat(masks), flat(predicted), average=None)
    assert per_class.numpy() == pytest.approx(expected, abs=1e-6)


def test_soft_dice_and_empty_masks():
    probabilities = torch.tensor([0.5, 0.5])
    targets = torch.tensor([1.0, 0.0])
    assert M.dice(probabilities, targets, activation="none").item() == pytest.approx(2 * 0.5 / (1 + 1), abs=1e-6)
    empty = torch.zeros(3)
    assert M.dice(torch.full((3,), -10.0), empty, threshold=0.5).item() == pytest.approx(1.0)
    assert M.iou(torch.full((3,), -10.0), empty, threshold=0.5).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same shape"):
        M.dice(torch.zeros(3), torch.zeros(4))


def test_auc_matches_sklearn_binary_multilabel_and_multiclass(rng):
    scores = torch.randn(100, generator=rng).round(decimals=1)  # ties
    labels = (torch.rand(100, generator=rng) > 0.5).long()
    assert M.auc(scores, labels).item() == pytest.approx(skm.roc_auc_score(labels, scores))
    multi_scores = torch.randn(80, 3, generator=rng)
    multi_labels = (torch.rand(80, 3, generator=rng) > 0.5).long()
    expected = skm.roc_auc_score(multi_labels, multi_scores, average=None)
    assert M.auc(multi_scores, multi_labels).numpy() == pytest.approx(expected)
    classes = torch.randint(0, 3, (80,), generator=rng)
    probabilities = torch.softmax(multi_scores, dim=1)
    expected = skm.roc_auc_score(classes, probabilities, multi_class="ovr", average=None)
    assert M.auc(probabilities, classes).numpy() == pytest.approx(expected)


def test_auc_of_a_single_class_is_nan():
    assert torch.isnan(M.binary_auc(torch.randn(5), torch.ones(5)))


def test_confusion_matrix_and_statistics_match_sklearn(rng):
    logits = torch.randn(120, 4, generator=rng)
    targets = torch.randint(0, 4, (120,), generator=rng)
    matrix = M.confusion_matrix(logits, targets)
    predicted = logits.argmax(1)
    assert matrix.numpy().tolist() == skm.confusion_matrix(targets, predicted, labels=range(4)).tolist()
    assert torch.equal(M.confusion_matrix(predicted, targets, num_classes=4), matrix)
    precision, recall, f1 = M.precision_recall_fbeta(matrix)
    sk_p, sk_r, sk_f, _ = skm.precision_recall_fscore_support(targets, predicted, labels=range(4), zero_division=0)
    assert precision.numpy() == pytest.approx(sk_p)
    assert recall.numpy() == pytest.approx(sk_r)
    assert f1.numpy() == pytest.approx(sk_f)
    normalized = M.normalize_confusion_matrix(matrix, "true")
    assert normalized.sum(dim=1).numpy() == pytest.approx([1.0] * 4)
    with pytest.raises(ValueError, match="num_classes"):
        M.confusion_matrix(predicted, targets)
    with pytest.raises(ValueError, match="allowed"):
        M.normalize_confusion_matrix(matrix, "rows")


def test_activation_names():
    x = torch.tensor([[0.0, 1.0]])
    assert torch.allclose(get_activation_fn("Softmax")(x).sum(), torch.tensor(1.0))
    assert torch.equal(get_activation_fn(None)(x), x)
    with pytest.raises(ConfigError, match="'Sigmoid'"):
        get_activation_fn("tanh")
    assert M.get_default_topk_args(4) == [1, 3]


def test_metrics_stay_on_device_without_grad_leaks():
    logits = torch.randn(8, 3, requires_grad=True)
    targets = torch.randint(0, 3, (8,))
    value = M.accuracy(logits, targets)[0]
    assert value.device == logits.device and not value.requires_grad
