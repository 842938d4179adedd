"""WIDER FACE evaluation: the official protocol (MATLAB ``eval_tools`` / its common Python port),
vectorised, restricted to any subset of images.

Protocol, as the reference implementations do it:

1. Scores are normalised over *all* predictions of the evaluated images:
   ``s' = (s - lo) / (hi - lo)`` with ``lo = min(1, min s)`` and ``hi = max(0, max s)``.
   (If every score is equal, all become 1.0; the reference would divide by zero.)
2. Per image, predictions are sorted by score, descending (stable, as MATLAB ``read_pred.m``;
   the Python port relies on files being written sorted). Images without GT boxes or without
   predictions are skipped (their predictions count nowhere); their kept faces still count.
3. IoU uses the inclusive-pixel convention: a box ``[x, y, w, h]`` spans ``x .. x+w`` and its
   width is ``w + 1``. Each prediction, in order, takes the GT of highest IoU (first on ties).
   If IoU >= 0.5: a GT outside the setting's keep list (``gt_list``) marks the prediction
   ignored (it is no proposal at all); a kept GT is recalled the first time.
4. For the 1000 thresholds ``t_k = 1 - k/1000`` (k = 1..1000), each image contributes
   (#non-ignored predictions with score >= t_k, #kept GT recalled by them); these add up over
   images. precision = recalled / proposals, recall = recalled / #kept faces.
5. AP is the VOC area under the interpolated (monotone envelope) precision-recall curve.

Ground truth: the official ``.mat`` files give the easy/medium/hard keep lists. Without them
(only ``wider_face_*_bbx_gt.txt``), ``gt_source="text"`` approximates the keep lists from the
annotations (see ``text_keep_masks``); those APs are not the official numbers.
"""
from __future__ import annotations

import json
import math
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from facesieve.data.widerface import (
    SETTINGS,
    WiderAnnotation,
    WiderFaceDataError,
    image_key,
    image_paths,
    list_images,
    locate_data_dir,
    read_bbx_gt,
    read_eval_mats,
)
from facesieve.evaluation.predictions import (
    as_pred_array,
    faces_to_array,
    match_prediction_keys,
    read_predictions,
    write_predictions,
)
from facesieve.io import atomic_write_bytes, atomic_write_text
from facesieve.ops.boxes import box_iou

THRESH_NUM = 1000
IOU_THRESHOLD = 0.5


@dataclass
class ImageGT:
    """Evaluation GT of one image.

    boxes: (G, 4) float64 ``[x, y, w, h]`` pixels (all annotated faces, ignored ones included).
    keep: setting -> (G,) bool; True = the face counts in that setting, False = ignored
        (a prediction matching it is neither a true nor a false positive).
    """

    boxes: np.ndarray
    keep: dict[str, np.ndarray]


GroundTruth = dict[str, ImageGT]
"""``{"<event>/<stem>": ImageGT}``; the evaluated images are exactly its keys."""


# ---------------------------------------------------------------------------- ground truth


TEXT_HEIGHT_THRESHOLD = {"easy": 50.0, "medium": 30.0, "hard": 10.0}
"""``gt_source="text"``: a valid face counts in a setting when its height (pixels) is > this."""


def text_keep_masks(ann: WiderAnnotation) -> dict[str, np.ndarray]:
    """Approximate easy/medium/hard keep lists from text annotations (when no .mat files).

    A setting keeps the valid faces (``invalid == 0``) taller than ``TEXT_HEIGHT_THRESHOLD``
    (50 / 30 / 10 px). The official lists come from per-face difficulty scores the text file
    does not carry. On the full val set (39,708 faces) this rule never keeps a face the
    official list ignores, and agrees on 99.79% (easy), 99.41% (medium), 97.96% (hard) of the
    faces; the rest are faces exactly at the height limit, about half of which the official
    lists keep. APs from text GT are therefore close to, but not, the official numbers.
    """
    h = np.asarray(ann.boxes, dtype=np.float64)[:, 3]
    valid = ~ann.invalid
    return {s: valid & (h > TEXT_HEIGHT_THRESHOLD[s]) for s in SETTINGS}


def load_ground_truth(
    data_dir: str | os.PathLike, images: Iterable[str] | None = None, gt_source: str = "auto"
) -> tuple[GroundTruth, str]:
    """GT of the data dir's images (or of ``images``, keys or ``<event>/<file>.jpg`` paths).

    gt_source: "mat" (official easy/medium/hard .mat files), "text" (the bbx_gt text file,
    approximate settings) or "auto" (mat if present). Returns (GroundTruth in sorted key
    order, the source used).
    """
    d = locate_data_dir(data_dir)
    rels = list_images(data_dir, check_exists=False) if images is None else list(images)
    keys = sorted({image_key(r) for r in rels})
    if gt_source == "auto":
        gt_source = "mat" if d.mat_dir is not None else "text"
    if gt_source == "mat":
        if d.mat_dir is None:
            raise WiderFaceDataError(f"{d.root}: no ground_truth/wider_face_val.mat (use gt_source='text')")
        mats = read_eval_mats(d.mat_dir, keys)
        return {k: ImageGT(boxes=mats[k].boxes, keep=mats[k].keep) for k in keys}, "mat"
    if gt_source == "text":
        if d.gt_text is None:
            raise WiderFaceDataError(f"{d.root}: no wider_face_*_bbx_gt.txt")
        anns = {a.key: a for a in read_bbx_gt(d.gt_text)}
        lost = [k for k in keys if k not in anns]
        if lost:
            raise WiderFaceDataError(f"{d.gt_text}: {len(lost)} image(s) without GT, e.g. {', '.join(lost[:3])}")
        return {k: ImageGT(boxes=anns[k].boxes, keep=text_keep_masks(anns[k])) for k in keys}, "text"
    raise ValueError(f"gt_source must be 'auto', 'mat' or 'text', got {gt_source!r}")


# ---------------------------------------------------------------------------- protocol


def thresholds(thresh_num: int = THRESH_NUM) -> np.ndarray:
    """(T,) descending score thresholds ``1 - k/T``, k = 1..T (bit-identical to the reference)."""
    return 1.0 - np.arange(1, thresh_num + 1, dtype=np.float64) / thresh_num


def normalize_scores(predictions: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Copy of predictions with column 4 mapped by the reference's global min/max (module doc, step 1)."""
    nonempty = [v[:, 4] for v in predictions.values() if len(v)]
    if not nonempty:
        return {k: v.copy() for k, v in predictions.items()}
    allscores = np.concatenate(nonempty)
    hi = max(float(allscores.max()), 0.0)
    lo = min(float(allscores.min()), 1.0)
    diff = hi - lo
    out = {}
    for k, v in predictions.items():
        v = v.copy()
        if len(v):
            v[:, 4] = 1.0 if diff == 0 else (v[:, 4] - lo) / diff
        out[k] = v
    return out


def _xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    out = np.array(b[:, :4], dtype=np.float64)
    out[:, 2:4] += out[:, 0:2]
    return out


def match_image(pred: np.ndarray, gt_boxes: np.ndarray, iou_threshold: float = IOU_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """Best GT per prediction. pred (P, >=4) and gt_boxes (G, 4) xywh pixels, G >= 1.

    Returns (best (P,) int GT index, matched (P,) bool: best IoU >= iou_threshold).
    """
    ious = box_iou(_xywh_to_xyxy(pred), _xywh_to_xyxy(gt_boxes), offset=1.0)
    best = ious.argmax(axis=1)
    return best, ious[np.arange(len(best)), best] >= iou_threshold


def image_pr_counts(
    scores: np.ndarray, best: np.ndarray, matched: np.ndarray, keep: np.ndarray, thresh: np.ndarray
) -> np.ndarray:
    """(T, 2) [proposals, recalled] of one image at each threshold.

    scores: (P,) normalised, sorted descending; best/matched from ``match_image`` in the same
    order; keep: (G,) bool; thresh: (T,) thresholds.
    """
    kept_hit = matched & keep[best]
    proposal = ~(matched & ~keep[best])
    hit_idx = np.flatnonzero(kept_hit)
    first_hit = np.zeros(len(scores), dtype=np.int64)
    if len(hit_idx):
        _, first = np.unique(best[hit_idx], return_index=True)
        first_hit[hit_idx[first]] = 1
    recalled = np.cumsum(first_hit)
    proposals = np.cumsum(proposal)
    # number of predictions with score >= t; they are a prefix of the sorted list
    n_ge = len(scores) - np.searchsorted(scores[::-1], thresh, side="left")
    last = np.maximum(n_ge - 1, 0)
    out = np.zeros((len(thresh), 2), dtype=np.float64)
    has = n_ge > 0
    out[has, 0] = proposals[last[has]]
    out[has, 1] = recalled[last[has]]
    return out


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the interpolated PR curve (precision envelope, summed over recall steps).

    NaN precisions (no proposals yet) only occur at recall 0 and never contribute.
    """
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], np.nan_to_num(precision, nan=0.0), [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


@dataclass
class SettingResult:
    """One setting: ap (fraction), precision/recall (T,) per threshold, faces counted, pr counts (T, 2)."""

    ap: float
    precision: np.ndarray
    recall: np.ndarray
    num_faces: int
    counts: np.ndarray


def evaluate_arrays(
    gt: Mapping[str, ImageGT],
    predictions: Mapping[str, np.ndarray],
    settings: Sequence[str] = SETTINGS,
    iou_threshold: float = IOU_THRESHOLD,
    thresh_num: int = THRESH_NUM,
) -> dict[str, SettingResult]:
    """Core protocol (module doc) on in-memory data.

    gt: images to evaluate; predictions: ``{key: (N, 5) [x, y, w, h, score]}`` for (a subset
    of) those keys, raw scores; keys absent from gt are ignored, gt keys absent from
    predictions have no detections.
    """
    preds = normalize_scores({k: as_pred_array(predictions[k], k) for k in gt if k in predictions})
    thresh = thresholds(thresh_num)
    counts = {s: np.zeros((thresh_num, 2), dtype=np.float64) for s in settings}
    faces = {s: 0 for s in settings}
    for key, g in gt.items():
        for s in settings:
            faces[s] += int(np.count_nonzero(g.keep[s]))
        p = preds.get(key)
        if p is None or len(p) == 0 or len(g.boxes) == 0:
            continue
        p = p[np.argsort(-p[:, 4], kind="stable")]
        best, matched = match_image(p, g.boxes, iou_threshold)
        for s in settings:
            counts[s] += image_pr_counts(p[:, 4], best, matched, np.asarray(g.keep[s], dtype=bool), thresh)
    out = {}
    for s in settings:
        c = counts[s]
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = c[:, 1] / c[:, 0]
            recall = c[:, 1] / faces[s] if faces[s] else np.full(thresh_num, np.nan)
        ap = voc_ap(recall, precision) if faces[s] else float("nan")
        out[s] = SettingResult(ap=ap, precision=precision, recall=recall, num_faces=faces[s], counts=c)
    return out


def _result_dict(res: dict[str, SettingResult], info: dict[str, Any]) -> dict[str, Any]:
    d: dict[str, Any] = {s: r.ap for s, r in res.items()}
    d["pr_curves"] = {s: {"precision": r.precision, "recall": r.recall} for s, r in res.items()}
    d["info"] = {"num_faces": {s: r.num_faces for s, r in res.items()}, **info}
    return d


# ---------------------------------------------------------------------------- public API


def evaluate_predictions(
    data_dir: str | os.PathLike,
    predictions: str | os.PathLike | Mapping[str, np.ndarray],
    images: Iterable[str] | None = None,
    gt_source: str = "auto",
    iou_threshold: float = IOU_THRESHOLD,
    only_predicted: bool = False,
) -> dict[str, Any]:
    """WIDER FACE AP of predictions on the images of data_dir.

    predictions: a prediction dir (``<event>/<stem>.txt``) or ``{"<event>/<stem>": (N, 5)
        [x, y, w, h, score]}`` (xywh pixels, raw scores).
    images: evaluate only these (keys ``"<event>/<stem>"`` or ``<event>/<file>.jpg``); default
        all images of data_dir. GT and score normalisation are restricted to them.
    only_predicted: evaluate only the images that have a prediction (e.g. a ``--limit`` run).
    Images without predictions otherwise count as no detections (``info.missing_predictions``).

    Returns ``{"easy": ap, "medium": ap, "hard": ap}`` as fractions in [0, 1] (NaN when a
    setting has no face), plus ``"pr_curves": {setting: {"precision": (1000,), "recall":
    (1000,)}}`` and ``"info"`` (gt_source, num_images, num_faces, missing_predictions).
    """
    if isinstance(predictions, (str, os.PathLike)):
        pred_map: Mapping[str, np.ndarray] = read_predictions(predictions)
    else:
        pred_map = predictions
    if images is None:
        images = list_images(data_dir, check_exists=False)
    keys = sorted({image_key(r) for r in images})
    found, missing = match_prediction_keys(pred_map, keys)
    if only_predicted:
        keys, missing = sorted(found), []
        if not keys:
            raise WiderFaceDataError("no prediction matches an image of the data dir")
    gt, source = load_ground_truth(data_dir, keys, gt_source)
    res = evaluate_arrays(gt, found, iou_threshold=iou_threshold)
    return _result_dict(
        res,
        {"gt_source": source, "num_images": len(gt), "missing_predictions": len(missing), "iou_threshold": iou_threshold},
    )


@contextmanager
def _single_scale(detector: Any, on: bool) -> Iterator[None]:
    """Within the block, ``detector.multiscale`` is False when ``on`` (restored after)."""
    if not on:
        yield
        return
    detector.multiscale = False
    try:
        yield
    finally:
        detector.multiscale = True


def evaluate_detector(
    detector: Any,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    score_threshold: float = 0.02,
    nms_threshold: float = 0.4,
    batch_size: int = 1,
    progress: bool = True,
    gt_source: str = "auto",
    scales: str = "protocol",
) -> dict[str, Any]:
    """Run ``detector.detect_batch`` on data_dir's images and evaluate them.

    scales: "protocol" (default): the WIDER FACE protocol, one pass at the detector's base
    scale (RetinaFace with ``multiscale`` switched off for the run: the original size
    unless the detector was loaded with ``target_size`` / ``max_size``); the published and
    recorded APs are measured so. "detector": the detector's own settings (e.g. the
    multi-scale default of ``facesieve detect``). Raises ValueError for another value.

    Images: ``list_images(data_dir)`` sorted by ``"<event>/<file>.jpg"``; ``limit`` keeps the
    first N of that order (deterministic). GT is restricted to exactly the images run.
    out_dir: if given, writes predictions (``out_dir/<event>/<stem>.txt``), ``ap.json`` and
    ``pr_curves.png`` there. Returns the ``evaluate_predictions`` dict; ``info.images`` lists
    the keys evaluated.
    """
    if scales not in ("protocol", "detector"):
        raise ValueError(f"scales must be 'protocol' or 'detector', got {scales!r}")
    rels = list_images(data_dir)
    if limit is not None:
        rels = rels[: max(0, int(limit))]
    if not rels:
        raise WiderFaceDataError(f"{data_dir}: no images to evaluate (limit={limit})")
    paths = image_paths(data_dir, rels)
    keys = [image_key(r) for r in rels]
    preds: dict[str, np.ndarray] = {}
    bs = max(1, int(batch_size))
    chunk = bs * max(1, 16 // bs)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(paths), desc=f"widerface {getattr(detector, 'name', '')}".strip(), unit="img", file=sys.stderr,
                   disable=None)  # only on a terminal
    single = scales == "protocol" and bool(getattr(detector, "multiscale", False))
    for start in range(0, len(paths), chunk):
        with _single_scale(detector, single):
            faces = detector.detect_batch(
                paths[start : start + chunk], batch_size=bs, score_threshold=score_threshold,
                nms_threshold=nms_threshold,
            )
        done = {k: faces_to_array(f) for k, f in zip(keys[start : start + chunk], faces)}
        if out_dir is not None:
            write_predictions(out_dir, done)  # as we go: an interrupted run keeps what it did
        preds.update(done)
        if bar is not None:
            bar.update(len(faces))
    if bar is not None:
        bar.close()
    result = evaluate_predictions(data_dir, preds, images=keys, gt_source=gt_source)
    result["info"].update(
        {
            "detector": getattr(detector, "name", type(detector).__name__),
            "score_threshold": score_threshold,
            "nms_threshold": nms_threshold,
            "scales": scales,
            "limit": limit,
            "images": keys,
        }
    )
    if out_dir is not None:
        save_report(result, out_dir)
    return result


# ---------------------------------------------------------------------------- reports


def _json_float(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), 6)


def result_to_json(result: Mapping[str, Any]) -> str:
    """JSON text of a result: APs (fractions, null for NaN) and info; PR curves left out."""
    d = {s: _json_float(result[s]) for s in SETTINGS if s in result}
    d["info"] = result.get("info", {})
    return json.dumps(d, indent=2) + "\n"


def plot_pr_curves(result: Mapping[str, Any], path: str | os.PathLike, title: str = "WIDER FACE") -> None:
    """Save the precision-recall curves of every setting to a PNG (matplotlib Agg, atomic)."""
    import io

    from facesieve.optional import require

    require("matplotlib", "plotting precision-recall curves", "eval")
    from matplotlib.figure import Figure  # no pyplot: renders with Agg, leaves the user's backend alone

    fig = Figure(figsize=(6, 5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for s, curve in result["pr_curves"].items():
        rec = np.asarray(curve["recall"], dtype=np.float64)
        prec = np.asarray(curve["precision"], dtype=np.float64)
        ok = np.isfinite(rec) & np.isfinite(prec)
        ax.plot(rec[ok], prec[ok], linewidth=2, label=f"{s}: {100 * result[s]:.2f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def save_report(result: Mapping[str, Any], out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``out_dir/ap.json`` and ``out_dir/pr_curves.png`` (atomic); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "ap.json", result_to_json(result))
    title = f"WIDER FACE ({result.get('info', {}).get('num_images', '?')} images)"
    plot_pr_curves(result, out / "pr_curves.png", title=title)
    return out / "ap.json", out / "pr_curves.png"


def format_aps(result: Mapping[str, Any]) -> str:
    """``"easy 89.91  medium 88.25  hard 72.49"`` (percent, 2 decimals)."""
    return "  ".join(f"{s} {100 * result[s]:.2f}" for s in SETTINGS if s in result)
