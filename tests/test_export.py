"""ONNX export: graphs compute what the PyTorch modules compute (any batch / size), caching, CLI."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from facesieve.backends.ort_runner import OrtOptions, OrtRunner
from facesieve.export import onnx as fx
from facesieve.weights.cache import WeightsError

TOL = 1e-3  # float32 reorderings of ~1e3-term sums; observed differences are ~1e-5


@pytest.fixture(scope="module")
def retinaface():
    import facesieve

    try:
        return facesieve.load("retinaface-mnet025")
    except WeightsError as e:
        pytest.skip(f"RetinaFace weights unavailable: {e}")


@pytest.fixture(scope="module")
def mtcnn_nets():
    from facesieve.nets.mtcnn import MTCNNNets
    from facesieve.weights.mtcnn import load_into, load_mtcnn_state_dict

    try:
        state = load_mtcnn_state_dict()
    except WeightsError as e:
        pytest.skip(f"MTCNN weights unavailable: {e}")
    nets = MTCNNNets().eval()
    load_into(nets, state)
    return nets


@pytest.fixture(scope="module")
def rf_graphs(retinaface) -> dict[str, bytes]:
    from facesieve.export.retinaface import export_retinaface

    return {layout: export_retinaface(retinaface.model, layout) for layout in ("nchw", "nhwc")}


def _torch(module: nn.Module, *xs: np.ndarray) -> list[np.ndarray]:
    with torch.inference_mode():
        out = module(*(torch.from_numpy(x) for x in xs))
    return [t.numpy() for t in (out if isinstance(out, (tuple, list)) else (out,))]


def test_retinaface_graph_matches_torch_for_any_batch_and_size(retinaface, rf_graphs):
    from facesieve.export.retinaface import RetinaFaceGraph

    runner = OrtRunner(rf_graphs["nchw"], OrtOptions(threads=1))
    graph = RetinaFaceGraph(retinaface.model)
    rng = np.random.default_rng(0)
    for shape in [(1, 3, 96, 128), (2, 3, 75, 133)]:  # not the traced size; odd sizes too
        x = rng.normal(0, 60, shape).astype(np.float32)
        ref, got = _torch(graph, x), runner(x)
        assert [o.shape for o in got] == [o.shape for o in ref]
        diff = fx.max_abs_diff(ref, got)
        print(f"retinaface {shape}: max |onnx - torch| = {diff:.2e}")
        assert diff < TOL
        np.testing.assert_allclose(got[1].sum(-1), 1.0, atol=1e-5)  # conf is a softmax


def test_retinaface_nhwc_graph_equals_nchw_graph(rf_graphs):
    x = np.random.default_rng(1).normal(0, 60, (1, 3, 64, 80)).astype(np.float32)
    nchw = OrtRunner(rf_graphs["nchw"], OrtOptions(threads=1))(x)
    nhwc = OrtRunner(rf_graphs["nhwc"], OrtOptions(threads=1))(
        np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    )
    assert fx.max_abs_diff(nchw, nhwc) < 1e-5


def _edge(h: int, w: int, gap: int) -> np.ndarray:
    """P-Net edge map: 0 inside, -1e4 on the last ``gap`` columns (a packing gap, as the detector makes)."""
    edge = np.zeros((1, 1, h - 2, w - 2), np.float32)
    if gap:
        edge[..., -gap:] = -1e4
    return edge


def test_mtcnn_graphs_match_torch(mtcnn_nets):
    from facesieve.export.mtcnn import STAGES, export_mtcnn_stage, stage_graph

    rng = np.random.default_rng(2)
    cases = {
        "pnet": [[rng.uniform(-1, 1, (1, 3, h, w)).astype(np.float32), _edge(h, w, gap)]
                 for h, w, gap in [(12, 12, 0), (57, 90, 0), (57, 90, 9)]],  # dynamic height / width
        "rnet": [[rng.uniform(-1, 1, (n, 3, 24, 24)).astype(np.float32)] for n in (1, 7)],
        "onet": [[rng.uniform(-1, 1, (n, 3, 48, 48)).astype(np.float32)] for n in (1, 7)],
    }
    for stage in STAGES:
        runner = OrtRunner(export_mtcnn_stage(mtcnn_nets, stage), OrtOptions(threads=1))
        for inputs in cases[stage]:
            ref, got = _torch(stage_graph(mtcnn_nets, stage), *inputs), runner(*inputs)
            if stage == "pnet":  # compare the output cells whose window avoids the gap (the detector's)
                w2 = inputs[1].shape[-1]
                cols = (int((inputs[1][0, 0, 0] == 0).sum()) - 9 + 1) // 2 if (inputs[1] != 0).any() else None
                ref, got = [o[..., :cols] for o in ref], [o[..., :cols] for o in got]
                assert cols is None or 0 < cols < (w2 - 8) // 2
            diff = fx.max_abs_diff(ref, got)
            print(f"mtcnn {stage} {inputs[0].shape}: max |onnx - torch| = {diff:.2e}")
            assert diff < TOL


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


def _export_tiny(m: nn.Module) -> bytes:
    return fx.export_onnx(m, [torch.zeros(1, 3, 8, 8)], ["input"], ["out"], {"input": {0: "n", 2: "h", 3: "w"}})


def test_cached_graph_is_keyed_by_weights_and_built_once(tmp_path, monkeypatch):
    monkeypatch.setenv("FACESIEVE_CACHE", str(tmp_path))
    m = _Tiny().eval()
    calls = []

    def build() -> bytes:
        calls.append(1)
        return _export_tiny(m)

    p1 = fx.cached_graph("tiny", m, build)
    p2 = fx.cached_graph("tiny", m, build)
    assert p1 == p2 and len(calls) == 1
    assert p1.parent == tmp_path / "converted" and f"x{fx.EXPORTER_VERSION}" in p1.name
    x = np.random.default_rng(3).normal(size=(2, 3, 5, 7)).astype(np.float32)
    assert fx.max_abs_diff(_torch(m, x), OrtRunner(p1)(x)) < 1e-5
    with torch.no_grad():
        m.conv.bias.add_(1.0)  # new weights -> new key, new file
    p3 = fx.cached_graph("tiny", m, build)
    assert p3 != p1 and len(calls) == 2
    assert sorted(f.name for f in p1.parent.iterdir()) == sorted([p1.name, p3.name])  # no temp files left


def test_module_digest_tracks_every_tensor():
    a, b = _Tiny(), _Tiny()
    b.load_state_dict(a.state_dict())
    assert fx.module_digest(a) == fx.module_digest(b)
    with torch.no_grad():
        b.conv.weight[0, 0, 0, 0] += 1e-6
    assert fx.module_digest(a) != fx.module_digest(b)


def test_cli_export_mtcnn_writes_three_checked_graphs(tmp_path, mtcnn_nets, capsys):
    from facesieve.cli import main

    assert main(["export", "mtcnn", "--format", "onnx", "--out", str(tmp_path / "mt.onnx")]) == 0
    out = capsys.readouterr().out
    for stage in ("pnet", "rnet", "onet"):
        assert (tmp_path / f"mt-{stage}.onnx").is_file()
        assert f"mt-{stage}.onnx: written; max |onnx - torch| = " in out
    assert main(["export", "mtcnn", "--out", str(tmp_path / "q.onnx"), "--quantize"]) == 2


def test_cli_export_retinaface(tmp_path, retinaface, capsys):
    from facesieve.cli import main

    out = tmp_path / "rf.onnx"
    assert main(["export", "retinaface-mnet025", "--out", str(out)]) == 0
    assert out.is_file() and "max |onnx - torch|" in capsys.readouterr().out
    x = np.zeros((1, 3, 40, 56), np.float32)
    loc, conf, landmarks = OrtRunner(out)(x)
    assert loc.shape == (1, retinaface.anchor_generator.num_anchors(40, 56), 4)
    assert conf.shape[-1] == 2 and landmarks.shape[-1] == 10
