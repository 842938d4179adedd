"""RetinaFace modules: shapes, BN folding, padded-batch masking, biubug6 key layout."""
from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch
from torch import nn

from facesieve.nets.backbones import fold_batchnorm, has_batchnorm, zero_padding_region
from facesieve.nets.retinaface import RetinaFace
from facesieve.ops.anchors import AnchorGenerator
from facesieve.weights.retinaface import biubug6_key


def _randomized(backbone: str, seed: int = 0) -> RetinaFace:
    """A fresh copy of a model with random conv weights and non-trivial BN statistics, in eval mode."""
    return copy.deepcopy(_build_randomized(backbone, seed))


@functools.lru_cache(maxsize=None)
def _build_randomized(backbone: str, seed: int) -> RetinaFace:
    torch.manual_seed(seed)
    model = RetinaFace(backbone)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("backbone,channels", [("mobilenet0.25", 64), ("resnet50", 256)])
def test_output_shapes_follow_anchor_count(backbone, channels):
    model = _randomized(backbone)
    assert model.class_head[0].in_channels == channels
    for h, w in [(37, 53), (1, 1)]:
        with torch.inference_mode():
            loc, conf, lm = model(torch.zeros(2, 3, h, w))
        a = AnchorGenerator().num_anchors(h, w)
        assert loc.shape == (2, a, 4) and conf.shape == (2, a, 2) and lm.shape == (2, a, 10)


def test_mobilenet_param_count_matches_biubug6_release(shared_weights):
    sd = torch.load(shared_weights / "mobilenet0.25_Final.pth", map_location="cpu", weights_only=True)
    ours = RetinaFace("mobilenet0.25").state_dict()
    assert len(sd) == len(ours) == 300
    assert sum(v.numel() for v in sd.values()) == sum(v.numel() for v in ours.values())


@pytest.mark.parametrize("backbone", ["mobilenet0.25", "resnet50"])
def test_fold_batchnorm_keeps_outputs(backbone):
    model = _randomized(backbone)
    x = torch.randn(1, 3, 40, 24)
    with torch.inference_mode():
        before = model(x)
    fold_batchnorm(model)
    assert not has_batchnorm(model)
    assert not any("running_mean" in k for k in model.state_dict())
    with torch.inference_mode():
        after = model(x)
    for b, a in zip(before, after):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("backbone", ["mobilenet0.25", "resnet50"])
def test_padded_batch_equals_single_images(backbone):
    model = fold_batchnorm(_randomized(backbone))
    gen = AnchorGenerator()
    sizes = [(45, 70), (64, 33), (64, 70)] if backbone == "mobilenet0.25" else [(27, 40), (40, 21)]
    padded = (max(h for h, _ in sizes), max(w for _, w in sizes))
    rng = np.random.default_rng(0)
    images = [torch.from_numpy(rng.normal(0, 50, (3, h, w)).astype(np.float32)) for h, w in sizes]
    batch = torch.zeros(len(sizes), 3, *padded)
    for k, im in enumerate(images):
        batch[k, :, : im.shape[1], : im.shape[2]] = im
    with torch.inference_mode():
        with zero_padding_region(model, sizes, padded):
            masked = model(batch)
        unmasked = model(batch)
        assert not model._forward_pre_hooks and all(not m._forward_pre_hooks for m in model.modules())
        for k, (im, (h, w)) in enumerate(zip(images, sizes)):
            alone = model(im[None])
            valid = torch.from_numpy(gen.valid_mask(*padded, h, w))
            for out_b, out_1 in zip(masked, alone):
                torch.testing.assert_close(out_b[k][valid], out_1[0], atol=1e-4, rtol=1e-4)
            if (h, w) != padded:  # without the mask the padding leaks into the image's outputs
                assert (unmasked[0][k][valid] - alone[0][0]).abs().max() > 1e-2


def test_biubug6_key_mapping():
    assert biubug6_key("module.body.stage1.0.0.weight") == "body.stage1.0.0.weight"
    assert biubug6_key("fpn.output3.1.running_var") == "fpn.lateral.2.1.running_var"
    assert biubug6_key("fpn.merge1.0.weight") == "fpn.merge.0.0.weight"
    assert biubug6_key("ssh2.conv7X7_2.1.bias") == "ssh.1.conv7x7_2.1.bias"
    assert biubug6_key("ssh3.conv7x7_3.0.weight") == "ssh.2.conv7x7_3.0.weight"
    assert biubug6_key("ssh1.conv3X3.0.weight") == "ssh.0.conv3x3.0.weight"
    assert biubug6_key("LandmarkHead.2.conv1x1.bias") == "landmark_head.2.bias"
    assert biubug6_key("module.ClassHead.0.conv1x1.weight") == "class_head.0.weight"
    assert biubug6_key("body.layer4.2.bn3.running_mean") == "body.layer4.2.bn3.running_mean"


def test_biubug6_mobilenet_checkpoint_maps_onto_every_parameter(shared_weights):
    sd = torch.load(shared_weights / "mobilenet0.25_Final.pth", map_location="cpu", weights_only=True)
    mapped = {biubug6_key(k): v for k, v in sd.items()}
    ours = RetinaFace("mobilenet0.25").state_dict()
    assert set(mapped) == set(ours)
    assert all(mapped[k].shape == ours[k].shape for k in ours)
