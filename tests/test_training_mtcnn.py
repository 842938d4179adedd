"""MTCNN stage training: tensors/targets layout, and short runs of P-Net (random crops) and
R-Net (samples mined from a proposer) with checkpoint and resume."""
from __future__ import annotations

import json

import numpy as np
import torch

from facesieve.nets.mtcnn import PNet
from facesieve.training.mtcnn import (
    MTCNNTrainConfig,
    MTCNNTrainer,
    landmarks_to_net,
    stage_forward,
    to_input,
    train_mtcnn,
)
from facesieve.weights.mtcnn import read_stage_state
from test_training_retinaface import make_toy_dataset  # tests/ is on sys.path (rootdir conftest)


def test_input_normalisation_and_landmark_order():
    img = np.full((1, 12, 12, 3), 255, np.uint8)
    img[..., 1] = 0
    x = to_input(img)
    assert x.shape == (1, 3, 12, 12)
    assert torch.allclose(x[0, 0], torch.full((12, 12), 127.5 / 128)) and torch.allclose(x[0, 1], torch.full((12, 12), -127.5 / 128))
    inter = np.arange(10, dtype=np.float32)[None]  # x0 y0 x1 y1 ...
    assert landmarks_to_net(inter).tolist() == [[0, 2, 4, 6, 8, 1, 3, 5, 7, 9]]


def test_stage_forward_shapes():
    score, box, lm = stage_forward(PNet(), torch.zeros(3, 3, 12, 12))
    assert score.shape == (3, 2) and box.shape == (3, 4) and lm.shape == (3, 10)


def _cfg(data, out, **kw):
    base = dict(data=str(data), out=str(out), stage="pnet", batch_size=64, epochs=2, log_every=1,
                negatives_per_image=20, crops_per_face=30, landmarks_per_face=5, min_face=12, threads=1)
    base.update(kw)
    return MTCNNTrainConfig(**base)


def test_pnet_training_run_and_resume(tmp_path):
    data = make_toy_dataset(tmp_path, n=4)
    run = tmp_path / "pnet"
    st = train_mtcnn(_cfg(data, run, max_iters=2))
    assert st.iteration == 2
    counts = json.loads((run / "summary.json").read_text())["samples"]
    assert counts["positive"] > 0 and counts["negative"] > 0 and counts["landmark"] > 0
    # 3:1:1:2 up to the scarcest class
    assert counts["negative"] <= 3 * min(counts["positive"], counts["part"]) + 3
    for name in ("pnet.pth", "samples_pnet.npz", "train.csv", "val.csv", "loss.png", "checkpoints/last.pt"):
        assert (run / name).is_file(), name
    st2 = train_mtcnn(_cfg(data, run, resume=True, epochs=3))
    assert st2.iteration > 2 and st2.stopped_by == "schedule"
    steps = [int(r.split(",")[0]) for r in (run / "train.csv").read_text().splitlines()[1:]]
    assert steps == list(range(1, st2.iteration + 1))
    net = PNet()
    net.load_state_dict(read_stage_state(str(run / "pnet.pth"), "pnet"))
    # a full-cascade state dict works too
    torch.save({f"pnet.{k}": v for k, v in net.state_dict().items()}, tmp_path / "all.pth")
    assert read_stage_state(str(tmp_path / "all.pth"), "pnet").keys() == net.state_dict().keys()


def test_rnet_samples_mined_from_proposer(tmp_path):
    data = make_toy_dataset(tmp_path, n=2)

    def factory(cfg):
        def propose(image):
            h, w = image.shape[:2]
            rng = np.random.default_rng(h + w)
            xy = rng.uniform(0, 60, (40, 2))
            return np.concatenate([xy, xy + rng.uniform(20, 40, (40, 1))], axis=1)
        return propose

    tr = MTCNNTrainer(_cfg(data, tmp_path / "rnet", stage="rnet", max_iters=1, batch_size=16), proposer_factory=factory)
    st = tr.run()
    assert st.iteration == 1
    s = np.load(tmp_path / "rnet" / "samples_rnet.npz")
    assert s["images"].shape[1:] == (24, 24, 3)


def test_proposal_recall_known_answer(tmp_path):
    from PIL import Image

    from facesieve.data.labels import BoxDataset, ImageLabels
    from facesieve.training.mtcnn_mining import proposal_recall

    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(tmp_path / "a.png")
    # faces: 40 px (found), 30 px (missed), 10 px (too small: not counted)
    ds = BoxDataset(tmp_path, [ImageLabels("a.png", [[0, 0, 40, 40], [50, 50, 80, 80], [0, 90, 10, 100]])])
    r = proposal_recall(ds, lambda im: np.array([[2, 2, 42, 42], [0, 90, 10, 100]]), min_size=24, iou=0.5)
    assert (r.faces, r.found, r.proposals) == (2, 1, 2) and r.recall == 0.5


def test_write_cascade_loads_with_facesieve(tmp_path):
    import facesieve
    from facesieve.training.mtcnn_mining import write_cascade

    net = PNet()
    torch.nn.init.constant_(net.score.bias, 0.25)
    torch.save(net.state_dict(), tmp_path / "pnet.pth")
    write_cascade(tmp_path / "mtcnn.pth", pnet=str(tmp_path / "pnet.pth"))
    det = facesieve.load("mtcnn", weights=str(tmp_path / "mtcnn.pth"), backend="torch")
    assert torch.all(det.runner.nets.pnet.score.bias == 0.25)
    ref = facesieve.load("mtcnn", backend="torch")
    assert torch.equal(det.runner.nets.onet.fc.weight, ref.runner.nets.onet.fc.weight)  # other stages: released
    # the cascade used for mining and recall runs the replaced P-Net
    from facesieve.training.mtcnn_mining import build_cascade, cascade_proposals

    cas = build_cascade(pnet=str(tmp_path / "pnet.pth"))
    assert torch.all(cas.runner.nets.pnet.score.bias == 0.25)
    boxes, scores = cascade_proposals(cas, np.zeros((40, 50, 3), np.uint8), "rnet")
    assert boxes.shape[1] == 4 and len(boxes) == len(scores)


def test_resumed_pnet_run_equals_an_uninterrupted_one(tmp_path):
    """Stopped after 1 iteration (mid-epoch) and resumed: same weights and losses as one run."""
    data = make_toy_dataset(tmp_path, n=4)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    st = train_mtcnn(_cfg(data, straight, epochs=2))
    assert st.iteration >= 4  # more than one iteration per epoch: the stop is mid-epoch
    train_mtcnn(_cfg(data, resumed, epochs=2, max_iters=1))
    train_mtcnn(_cfg(data, resumed, epochs=2, resume=True))
    rows_a = (straight / "train.csv").read_text().splitlines()
    rows_b = (resumed / "train.csv").read_text().splitlines()
    col = rows_a[0].split(",").index("total")
    assert [r.split(",")[0] for r in rows_b] == [r.split(",")[0] for r in rows_a]
    np.testing.assert_allclose([float(r.split(",")[col]) for r in rows_b[1:]],
                               [float(r.split(",")[col]) for r in rows_a[1:]], rtol=1e-5)
    a = read_stage_state(str(straight / "pnet.pth"), "pnet")
    b = read_stage_state(str(resumed / "pnet.pth"), "pnet")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=k)
