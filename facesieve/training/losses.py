"""Training losses: RetinaFace multi-task loss with hard negative mining, and the MTCNN
losses with online hard sample mining (OHEM)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


# --------------------------------------------------------------------------- RetinaFace


def hard_negative_mask(background_loss: torch.Tensor, positive: torch.Tensor, neg_pos_ratio: int = 7) -> torch.Tensor:
    """Pick, per image, the ``neg_pos_ratio * num_pos`` hardest negatives.

    background_loss: (B, A) classification loss of each anchor if it were background.
    positive: (B, A) bool. Returns (B, A) bool of chosen negatives (never a positive).
    An image without positives contributes no negatives (reference behaviour); at most
    A - 1 negatives are taken per image.
    """
    loss = background_loss.detach().clone()
    loss[positive] = float("-inf")  # positives rank last
    num_pos = positive.long().sum(dim=1, keepdim=True)
    num_neg = torch.clamp(neg_pos_ratio * num_pos, max=positive.shape[1] - 1)
    order = loss.argsort(dim=1, descending=True)
    rank = order.argsort(dim=1)
    return (rank < num_neg) & ~positive


@dataclass
class MultiBoxLossOutput:
    """Scalar loss terms. total = loc_weight * loc + conf + landmark."""

    total: torch.Tensor
    loc: torch.Tensor
    conf: torch.Tensor
    landmark: torch.Tensor
    num_pos: int
    num_landmark_pos: int


def multibox_loss(
    loc_pred: torch.Tensor,
    conf_pred: torch.Tensor,
    landmark_pred: torch.Tensor,
    loc_target: torch.Tensor,
    landmark_target: torch.Tensor,
    positive: torch.Tensor,
    landmark_positive: torch.Tensor,
    neg_pos_ratio: int = 7,
    loc_weight: float = 2.0,
) -> MultiBoxLossOutput:
    """RetinaFace multi-task loss.

    loc_pred / loc_target: (B, A, 4) encoded offsets; landmark_*: (B, A, 10) encoded;
    conf_pred: (B, A, 2) logits (background, face); positive: (B, A) bool anchors matched
    to a face; landmark_positive: (B, A) bool, positives whose face has landmarks.
    Box and classification terms are smooth-L1 / cross-entropy sums over positives
    (plus mined negatives for classification) divided by the number of positives; the
    landmark term is divided by the number of landmark positives.
    """
    num_pos = int(positive.sum())
    num_lm = int(landmark_positive.sum())
    n = max(num_pos, 1)
    loc = F.smooth_l1_loss(loc_pred[positive].float(), loc_target[positive].float(), reduction="sum") / n
    lm = F.smooth_l1_loss(
        landmark_pred[landmark_positive].float(), landmark_target[landmark_positive].float(), reduction="sum"
    ) / max(num_lm, 1)
    logp = F.log_softmax(conf_pred.float(), dim=-1)
    negative = hard_negative_mask(-logp[..., 0], positive, neg_pos_ratio)
    labels = positive.long()
    ce = -logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    conf = ce[positive | negative].sum() / n
    total = loc_weight * loc + conf + lm
    return MultiBoxLossOutput(total, loc, conf, lm, num_pos, num_lm)


# --------------------------------------------------------------------------- MTCNN


def ohem_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, keep_ratio: float = 0.7) -> torch.Tensor:
    """Face/non-face cross-entropy over the hardest ``keep_ratio`` of the valid samples.

    logits: (B, 2); labels: (B,) long with 0 = negative, 1 = positive, anything else
    ignored (part faces and landmark faces). Returns the mean loss of the kept samples
    (0 when there is none).
    """
    valid = (labels == 0) | (labels == 1)
    if not bool(valid.any()):
        return logits.sum() * 0.0
    losses = F.cross_entropy(logits[valid].float(), labels[valid], reduction="none")
    k = max(1, int(round(keep_ratio * losses.numel())))
    return losses.topk(k).values.mean()


def masked_l2(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked samples of the squared error summed over coordinates.

    pred/target: (B, D); mask: (B,) bool. 0 when the mask is empty.
    """
    if not bool(mask.any()):
        return pred.sum() * 0.0
    d = pred[mask].float() - target[mask].float()
    return (d * d).sum(dim=1).mean()


@dataclass(frozen=True)
class MTCNNLossWeights:
    """Task weights: 1 : 0.5 : 0.5 for P-Net and R-Net, 1 : 0.5 : 1 for O-Net."""

    cls: float = 1.0
    box: float = 0.5
    landmark: float = 0.5

    @staticmethod
    def for_stage(stage: str) -> "MTCNNLossWeights":
        return MTCNNLossWeights(1.0, 0.5, 1.0 if stage == "onet" else 0.5)


# Sample labels shared with facesieve.training.mtcnn_samples.
NEGATIVE, POSITIVE, PART, LANDMARK = 0, 1, 2, 3


def mtcnn_loss(
    cls_logits: torch.Tensor,
    box_pred: torch.Tensor,
    landmark_pred: torch.Tensor | None,
    labels: torch.Tensor,
    box_target: torch.Tensor,
    landmark_target: torch.Tensor,
    weights: MTCNNLossWeights,
    keep_ratio: float = 0.7,
) -> dict[str, torch.Tensor]:
    """MTCNN multi-task loss on a batch of samples.

    cls_logits (B, 2); box_pred/box_target (B, 4); landmark_pred/target (B, 10);
    labels (B,) with NEGATIVE / POSITIVE / PART / LANDMARK. Classification uses negatives
    and positives with OHEM; the box loss uses positives and part faces; the landmark
    loss uses landmark faces. Returns a dict with "total", "cls", "box", "landmark".
    """
    cls = ohem_cross_entropy(cls_logits, labels, keep_ratio)
    box = masked_l2(box_pred, box_target, (labels == POSITIVE) | (labels == PART))
    if landmark_pred is None:
        lm = cls * 0.0
    else:
        lm = masked_l2(landmark_pred, landmark_target, labels == LANDMARK)
    total = weights.cls * cls + weights.box * box + weights.landmark * lm
    return {"total": total, "cls": cls, "box": box, "landmark": lm}
