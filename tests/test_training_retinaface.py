"""RetinaFace training: target encoding round trips, schedule, weight initialisation, and
short end-to-end runs (checkpoint, resume, loading the result with facesieve.load)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from facesieve.data.labels import ImageLabels, write_jsonl
from facesieve.nets.batchnorm import conv_bn_pairs, shift_input_mean, unfold_state
from facesieve.nets.retinaface import RetinaFace
from facesieve.ops.anchors import AnchorGenerator
from facesieve.ops.box_coder import BoxCoder
from facesieve.training.retinaface import (
    BGR_MEAN,
    RetinaFaceTrainConfig,
    load_backbone,
    train_retinaface,
)
from facesieve.training.run import lr_at
from facesieve.training.targets import TargetBuilder


def test_targets_decode_back_to_the_faces():
    size = 160
    anchors = AnchorGenerator()(size, size)
    tb = TargetBuilder(anchors, size)
    boxes = np.array([[20, 30, 52, 70], [90, 80, 150, 150]], np.float32)
    lms = np.stack([b[:2] + (b[2:] - b[:2]) * np.array([[.3, .4], [.7, .4], [.5, .6], [.35, .8], [.65, .8]])
                    for b in boxes]).astype(np.float32)
    t = tb([{"boxes": torch.tensor(boxes / size), "landmarks": torch.tensor(lms.reshape(2, 10) / size),
             "has_landmarks": torch.tensor([True, False])}])
    pos = t.positive[0].numpy()
    assert pos.sum() >= 2
    coder = BoxCoder()
    dec = coder.decode_boxes(t.loc[0].numpy()[pos], anchors[pos])
    dec_lm = coder.decode_landmarks(t.landmarks[0].numpy()[pos], anchors[pos])
    # every positive anchor decodes exactly to one of the two faces
    err = np.abs(dec[:, None, :] - boxes[None]).max(axis=2)
    which = err.argmin(axis=1)
    assert err.min(axis=1).max() < 1e-3
    assert set(which.tolist()) == {0, 1}
    np.testing.assert_allclose(dec_lm[which == 0], np.repeat(lms[:1].reshape(1, 10), (which == 0).sum(), 0), atol=1e-3)
    # landmark positives: only anchors of the face that has landmarks
    expected = np.zeros(len(pos), bool)
    expected[np.flatnonzero(pos)[which == 0]] = True
    assert expected.sum() >= 1 and (expected != pos).any()  # some positives belong to face 1
    np.testing.assert_array_equal(t.landmark_positive[0].numpy(), expected)


def test_targets_empty_image():
    anchors = AnchorGenerator()(64, 64)
    t = TargetBuilder(anchors, 64)([{"boxes": torch.zeros(0, 4), "landmarks": torch.zeros(0, 10),
                                     "has_landmarks": torch.zeros(0, dtype=torch.bool)}])
    assert t.loc.shape == (1, len(anchors), 4) and not t.positive.any()


def test_lr_warmup_and_step_decay():
    kw = dict(base_lr=1e-3, iters_per_epoch=10, warmup_epochs=2, decay_iters=[50, 80], gamma=0.1)
    assert lr_at(0, **kw) == pytest.approx(1e-6)
    assert lr_at(10, **kw) == pytest.approx(1e-6 + (1e-3 - 1e-6) / 2)
    assert lr_at(20, **kw) == pytest.approx(1e-3)
    assert lr_at(49, **kw) == pytest.approx(1e-3)
    assert lr_at(50, **kw) == pytest.approx(1e-4)
    assert lr_at(99, **kw) == pytest.approx(1e-5)
    assert lr_at(0, **{**kw, "warmup_epochs": 0}) == pytest.approx(1e-3)


def _randomize_bn(net: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def test_unfold_state_is_exact_and_mean_shift_preserves_first_block():
    from facesieve.nets.batchnorm import fold_batchnorm

    net = RetinaFace("mobilenet0.25")
    _randomize_bn(net)
    net.eval()
    folded = fold_batchnorm(RetinaFace("mobilenet0.25").eval())
    src = {k: v for k, v in net.state_dict().items()}
    tmp = RetinaFace("mobilenet0.25").eval()
    tmp.load_state_dict(src)
    folded.load_state_dict(fold_batchnorm(tmp).state_dict())
    again = RetinaFace("mobilenet0.25").eval()
    again.load_state_dict(unfold_state(again, folded.state_dict()))
    x = torch.randn(1, 3, 32, 32) * 50
    with torch.no_grad():
        for a, b in zip(again(x), folded(x)):
            assert (a - b).abs().max() < 1e-3
    # an input mean change folded into the first BN leaves the first block's output unchanged
    # away from the zero-padded border
    shifted = RetinaFace("mobilenet0.25").eval()
    old_mean, new_mean = (104.0, 117.0, 127.0), BGR_MEAN
    shifted.load_state_dict(shift_input_mean(shifted, net.state_dict(), old_mean, new_mean))
    pix = torch.rand(1, 3, 32, 32) * 255
    x_old = pix - torch.tensor(old_mean).view(1, 3, 1, 1)
    x_new = pix - torch.tensor(new_mean).view(1, 3, 1, 1)
    first = conv_bn_pairs(net)[0][0].rsplit(".", 1)[0]
    assert first == "body.stage1.0"
    with torch.no_grad():
        a = net.body.stage1[0](x_old)[..., 1:, 1:]
        b = shifted.body.stage1[0](x_new)[..., 1:, 1:]
        c = net.body.stage1[0](x_new)[..., 1:, 1:]
    assert (a - b).abs().max() < 1e-4
    assert (a - c).abs().max() > 1e-2  # without the shift the outputs would differ


def test_load_backbone_from_imagenet_checkpoint(shared_weights, tmp_path):
    path = shared_weights / "mobilenetV1X0.25_pretrain.tar"
    if not path.exists():
        pytest.skip("mobilenetV1X0.25_pretrain.tar not in shared weights")
    net = RetinaFace("mobilenet0.25")
    skipped = load_backbone(net, path)
    assert sorted(skipped) == ["fc.bias", "fc.weight"]
    ck = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(net.body.stage1[0][0].weight, ck["module.stage1.0.0.weight"])
    torch.save({"state_dict": {"module.stage1.0.0.weight": torch.zeros(1)}}, tmp_path / "bad.tar")
    with pytest.raises(ValueError, match="lacks"):
        load_backbone(net, tmp_path / "bad.tar")


def make_toy_dataset(root: Path, n: int = 4, size: tuple[int, int] = (96, 128)) -> Path:
    """Images with bright 'faces' (ellipses with two dark eyes); JSON Lines labels with landmarks."""
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        img = Image.new("RGB", (size[1], size[0]), (40, 60, 80))
        d = ImageDraw.Draw(img)
        boxes, lms = [], []
        for _ in range(2):
            w = int(rng.integers(24, 40))
            x, y = int(rng.integers(0, size[1] - w)), int(rng.integers(0, size[0] - w))
            d.ellipse([x, y, x + w, y + w], fill=(230, 190, 160))
            eyes = [(x + 0.3 * w, y + 0.4 * w), (x + 0.7 * w, y + 0.4 * w)]
            for ex, ey in eyes:
                d.ellipse([ex - 2, ey - 2, ex + 2, ey + 2], fill=(0, 0, 0))
            boxes.append([x, y, x + w, y + w])
            lms.append(eyes + [(x + .5 * w, y + .6 * w), (x + .35 * w, y + .8 * w), (x + .65 * w, y + .8 * w)])
        name = f"img{i}.png"
        img.save(root / name)
        items.append(ImageLabels(name, np.array(boxes, np.float32), np.array(lms, np.float32)))
    write_jsonl(root / "faces.jsonl", items)
    return root / "faces.jsonl"


def _cfg(data: Path, out: Path, **kw) -> RetinaFaceTrainConfig:
    base = dict(data=str(data), out=str(out), image_size=96, batch_size=2, epochs=3, workers=0, log_every=1,
                checkpoint_every=2, warmup_epochs=0.5, lr=1e-3, threads=1)
    base.update(kw)
    return RetinaFaceTrainConfig(**base)


def test_train_checkpoint_resume_and_load(tmp_path):
    data = make_toy_dataset(tmp_path, n=2)
    run = tmp_path / "run"
    st = train_retinaface(_cfg(data, run, image_size=64, max_iters=2))  # 1 it/epoch, 3 epochs
    assert st.iteration == 2 and st.stopped_by == "max_iters"
    for name in ("config.json", "train.csv", "loss.png", "weights.pth", "summary.json", "checkpoints/last.pt"):
        assert (run / name).is_file(), name
    rows = (run / "train.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch,lr,loss") and len(rows) == 3
    # resume continues at iteration 2 up to the end of the 3-epoch schedule
    st2 = train_retinaface(_cfg(data, run, image_size=64, resume=True))
    assert st2.iteration == 3 and st2.stopped_by == "schedule"
    steps = [int(r.split(",")[0]) for r in (run / "train.csv").read_text().splitlines()[1:]]
    assert steps == [1, 2, 3]
    assert json.loads((run / "summary.json").read_text())["iterations"] == 3
    import facesieve

    # the detector runs exactly the trained network: its raw outputs == the checkpoint's net
    det = facesieve.load("retinaface-mnet025", weights=str(run / "weights.pth"))

    net = RetinaFace("mobilenet0.25").eval()
    net.load_state_dict(torch.load(run / "checkpoints" / "last.pt", weights_only=False)["model"])
    x = np.random.default_rng(0).normal(0, 50, (1, 3, 64, 96)).astype(np.float32)
    with torch.no_grad():
        loc, conf, lm = net(torch.from_numpy(x))
    got = det.forward(x)
    np.testing.assert_allclose(got[0], loc.numpy(), atol=1e-4)
    np.testing.assert_allclose(got[1], torch.softmax(conf, -1).numpy(), atol=1e-5)
    np.testing.assert_allclose(got[2], lm.numpy(), atol=1e-4)


def test_resumed_run_equals_an_uninterrupted_one(tmp_path):
    """Stopped after 1 iteration (mid-epoch: 2 iterations per epoch) and resumed, a 4-iteration
    run ends with the same weights and logs the same losses as one run straight through."""
    data = make_toy_dataset(tmp_path, n=4)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train_retinaface(_cfg(data, straight, image_size=64, epochs=2, checkpoint_every=1))
    train_retinaface(_cfg(data, resumed, image_size=64, epochs=2, checkpoint_every=1, max_iters=1))
    train_retinaface(_cfg(data, resumed, image_size=64, epochs=2, checkpoint_every=1, resume=True))
    rows_a = [r.split(",") for r in (straight / "train.csv").read_text().splitlines()]
    rows_b = [r.split(",") for r in (resumed / "train.csv").read_text().splitlines()]
    assert [r[0] for r in rows_a[1:]] == ["1", "2", "3", "4"] and [r[0] for r in rows_b[1:]] == ["1", "2", "3", "4"]
    loss = rows_a[0].index("loss")
    np.testing.assert_allclose([float(r[loss]) for r in rows_b[1:]], [float(r[loss]) for r in rows_a[1:]], rtol=1e-5)
    a = torch.load(straight / "weights.pth", weights_only=True)
    b = torch.load(resumed / "weights.pth", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=k)


def test_training_reduces_loss_on_toy_data(tmp_path):
    data = make_toy_dataset(tmp_path, n=2)
    run = tmp_path / "run"
    train_retinaface(_cfg(data, run, epochs=30, batch_size=2, lr=5e-3, warmup_epochs=1, decay_epochs=(1000,),
                          checkpoint_every=1000))
    rows = [r.split(",") for r in (run / "train.csv").read_text().splitlines()[1:]]
    loss = np.array([float(r[3]) for r in rows])
    assert len(loss) == 30
    assert loss[-5:].mean() < 0.6 * loss[:5].mean()


def test_cli_train_retinaface(tmp_path):
    from facesieve.cli import main

    data = make_toy_dataset(tmp_path, n=2)
    rc = main(["train", "retinaface", "--data", str(data), "--out", str(tmp_path / "r"), "--image-size", "64",
               "--batch-size", "2", "--epochs", "1", "--workers", "0", "--threads", "1"])
    assert rc == 0 and (tmp_path / "r" / "weights.pth").is_file()
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["image_size"] == 64 and cfg["backbone"] == "mobilenet0.25"
    assert main(["train", "retinaface", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
