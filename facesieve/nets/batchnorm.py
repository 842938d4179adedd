"""BatchNorm surgery on conv -> BN pairs: folding for inference, unfolding and an input-mean
shift for fine-tuning folded or differently normalised weights.

Every operation walks the same pairs (``conv_bn_pairs``): a Conv2d child directly followed
by a BatchNorm2d child of the same parent, in registration order (which in facesieve's
networks is the data flow). State-dict keys are the dotted module paths of ``named_modules``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn


@dataclass(frozen=True)
class ConvBN:
    """One conv -> BN pair: its parent module, the two child names, and the dotted paths
    (``conv`` / ``bn``: keys prefix in the model's state dict)."""

    parent: nn.Module
    conv_child: str
    bn_child: str
    conv: str
    bn: str


def iter_conv_bn(model: nn.Module) -> list[ConvBN]:
    """Every Conv2d directly followed by a BatchNorm2d sibling, in ``named_modules`` order.

    This is the one traversal that ``fold_batchnorm``, ``unfold_state`` and
    ``shift_input_mean`` share, so they always agree on which BN belongs to which conv.
    """
    pairs: list[ConvBN] = []
    for pname, parent in model.named_modules():
        children = list(parent.named_children())
        for (cname, conv), (bname, bn) in zip(children, children[1:]):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                prefix = f"{pname}." if pname else ""
                pairs.append(ConvBN(parent, cname, bname, prefix + cname, prefix + bname))
    return pairs


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv name, bn name) of each Conv2d directly followed by a BatchNorm2d sibling
    (the pairs ``fold_batchnorm`` folds), as dotted module paths."""
    return [(p.conv, p.bn) for p in iter_conv_bn(model)]


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm2d into the Conv2d just before it, in place.

    A pair is a Conv2d child directly followed by a BatchNorm2d child of the same
    parent (registration order, which in these modules is the data flow). The conv
    gains a bias; the BN becomes nn.Identity, so the state dict then holds only
    ``<conv>.weight`` and ``<conv>.bias``. Uses the BN running statistics (inference only).
    Returns ``model``.
    """
    for p in iter_conv_bn(model):
        conv: nn.Conv2d = getattr(p.parent, p.conv_child)
        bn: nn.BatchNorm2d = getattr(p.parent, p.bn_child)
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
        conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)
        setattr(p.parent, p.bn_child, nn.Identity())
    return model


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has any BatchNorm2d left (False after ``fold_batchnorm``)."""
    return any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def unfold_state(model: nn.Module, folded: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """State dict for ``model`` (which has its BatchNorms) equivalent, in eval mode, to a
    folded one (``fold_batchnorm`` layout: ``<conv>.bias`` and no BN entries).

    For each folded conv (weight W, bias b) and output channel o with s_o = ||W_o||:
    conv weight W_o / s_o, BN gamma 1, beta b_o, running mean 0 and running variance
    ``1 / s_o**2 - eps`` (the BN divides by 1 / s_o), so ``BN(conv(x)) == folded_conv(x)``
    exactly. This puts conv weights and gammas back at the O(1) scale of a BN-trained
    network: kept folded (tiny first-layer weights, gamma = s_o), plain SGD steps of even
    1e-4 destroy the first layers. Pairs without a ``<conv>.bias`` entry are left as they are;
    ``folded`` is not modified.
    """
    state = dict(folded)
    for p in iter_conv_bn(model):
        conv, bn = p.conv, p.bn
        bias = state.pop(f"{conv}.bias", None)
        if bias is None:
            continue
        m: nn.BatchNorm2d = getattr(p.parent, p.bn_child)
        w = state[f"{conv}.weight"]
        norm = w.flatten(1).norm(dim=1)
        scale = torch.where(norm > 0, norm, torch.ones_like(norm))
        state[f"{conv}.weight"] = w / scale.view(-1, *([1] * (w.dim() - 1)))
        state[f"{bn}.weight"] = torch.ones_like(bias)
        state[f"{bn}.bias"] = bias.clone()
        state[f"{bn}.running_mean"] = torch.zeros_like(bias)
        state[f"{bn}.running_var"] = (1.0 / scale.double() ** 2 - m.eps).to(bias.dtype)
        state[f"{bn}.num_batches_tracked"] = torch.tensor(0)
    return state


def shift_input_mean(model: nn.Module, state: dict[str, torch.Tensor], from_mean: Sequence[float],
                     to_mean: Sequence[float]) -> dict[str, torch.Tensor]:
    """Adapt a state dict (with BatchNorm) trained on ``pixel - from_mean`` to inputs
    ``pixel - to_mean`` (one value per input channel, in the network's channel order).

    The first conv then sees its input shifted by ``to_mean - from_mean`` per channel; its
    BatchNorm's running mean absorbs the constant ``sum(W * shift)`` so outputs are
    unchanged (exactly, except on the 1-pixel border where the conv reads zero padding).
    Returns ``state`` itself when the means are equal, else a new dict.
    """
    delta = torch.tensor([t - f for f, t in zip(from_mean, to_mean)], dtype=torch.float32)
    if not bool(delta.any()):
        return state
    first = iter_conv_bn(model)[0]
    conv, bn = first.conv, first.bn
    w = state[f"{conv}.weight"].float()
    # x_from = x_to + delta, so conv(x_to) = conv(x_from) - shift: lower the running mean by shift
    shift = (w * delta.view(1, -1, 1, 1)).sum(dim=(1, 2, 3))
    out = dict(state)
    out[f"{bn}.running_mean"] = state[f"{bn}.running_mean"] - shift.to(state[f"{bn}.running_mean"].dtype)
    return out


def set_bn_eval(model: nn.Module) -> None:
    """Put every BatchNorm (1d/2d/3d) of ``model`` in eval mode: running statistics are
    used and not updated (fine-tuning with frozen BN); other modules keep their mode."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
