"""WIDER FACE evaluation: hand-computed APs on tiny synthetic cases, a loop-by-loop re-statement
of the protocol checked against the vectorised code, prediction files, evaluate_detector and the CLI."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
from PIL import Image

from facesieve.data.widerface import WiderAnnotation, image_key, read_bbx_gt, write_bbx_gt
from facesieve.detectors.base import Detector
from facesieve.evaluation.predictions import parse_prediction, read_predictions, write_predictions
from facesieve.evaluation.widerface import (
    ImageGT,
    evaluate_arrays,
    evaluate_detector,
    evaluate_predictions,
    load_ground_truth,
    thresholds,
)
from facesieve.types import Face

SETTINGS = ("easy", "medium", "hard")


def gt_image(boxes: Sequence[Sequence[float]], keep: Sequence[bool] | None = None) -> ImageGT:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    k = np.ones(len(b), bool) if keep is None else np.asarray(keep, bool)
    return ImageGT(boxes=b, keep={s: k.copy() for s in SETTINGS})


def ap(gt: dict[str, ImageGT], preds: dict[str, Sequence[Sequence[float]]], setting: str = "hard") -> float:
    p = {k: np.asarray(v, dtype=np.float64).reshape(-1, 5) for k, v in preds.items()}
    return evaluate_arrays(gt, p, settings=(setting,))[setting].ap


FACES4 = [[0, 0, 20, 20], [100, 0, 20, 20], [200, 0, 20, 20], [300, 0, 20, 20]]


def with_score(box: Sequence[float], s: float) -> list[float]:
    return [*box, s]


# ------------------------------------------------------------------ hand-computed cases


def test_perfect_predictions_give_ap_one():
    gt = {"e/a": gt_image(FACES4), "e/b": gt_image(FACES4[:2])}
    preds = {"e/a": [with_score(b, 1.0) for b in FACES4], "e/b": [with_score(b, 1.0) for b in FACES4[:2]]}
    res = evaluate_arrays(gt, {k: np.asarray(v) for k, v in preds.items()})
    assert [res[s].ap for s in SETTINGS] == [1.0, 1.0, 1.0]
    assert res["hard"].num_faces == 6


def test_half_the_faces_found():
    # 2 of 4 faces, no false positive: the PR curve stops at recall 0.5 with precision 1.
    gt = {"e/a": gt_image(FACES4)}
    assert ap(gt, {"e/a": [with_score(FACES4[0], 0.9), with_score(FACES4[1], 0.6)]}) == pytest.approx(0.5)


def test_image_without_predictions_caps_recall():
    # image b has 2 faces and no predictions: recall <= 2/3 of the 3 faces, precision 1.
    gt = {"e/a": gt_image(FACES4[:1]), "e/b": gt_image(FACES4[:2])}
    preds = {"e/a": [with_score(FACES4[0], 0.9)], "e/b": []}
    assert ap(gt, preds) == pytest.approx(1 / 3)
    # the same image simply absent from the predictions counts the same
    assert ap(gt, {"e/a": preds["e/a"]}) == pytest.approx(1 / 3)


def test_false_positive_above_all_true_positives():
    # scores normalise to FP 1.0, TPs 0.75 0.5 0.25 0.0: PR points (1/4,1/2) (2/4,2/3) (3/4,3/4) (1,4/5);
    # the precision envelope is 4/5 everywhere -> AP 0.8 (1.0 without the FP).
    gt = {"e/a": gt_image(FACES4)}
    tps = [with_score(b, s) for b, s in zip(FACES4, (0.8, 0.7, 0.6, 0.5))]
    assert ap(gt, {"e/a": tps}) == pytest.approx(1.0)
    fp = with_score([500, 500, 20, 20], 0.9)
    assert ap(gt, {"e/a": [fp] + tps}) == pytest.approx(0.8)


def test_false_positive_between_true_positives():
    # TP 0.9, FP 0.8, TP 0.7 on 2 faces: points (1/2, 1) (1/2, 1/2) (1, 2/3) -> 1/2 + 1/2 * 2/3
    gt = {"e/a": gt_image(FACES4[:2])}
    preds = [with_score(FACES4[0], 0.9), with_score([500, 500, 20, 20], 0.8), with_score(FACES4[1], 0.7)]
    assert ap(gt, {"e/a": preds}) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_duplicate_detection_is_a_false_positive():
    gt = {"e/a": gt_image(FACES4[:2])}
    preds = [with_score(FACES4[0], 0.9), with_score(FACES4[0], 0.8), with_score(FACES4[1], 0.7)]
    assert ap(gt, {"e/a": preds}) == pytest.approx(0.5 + 0.5 * 2 / 3)


@pytest.mark.parametrize("fp_first", [True, False])
def test_score_ties_enter_together_whatever_the_order(fp_first):
    # TP 0.9 then a TP and a FP tied at 0.5: both enter at the same threshold, so the curve goes
    # (1/2, 1) -> (1, 2/3) whichever of the tied pair comes first: AP = 1/2 + 1/2 * 2/3.
    gt = {"e/a": gt_image(FACES4[:2])}
    tied = [with_score([500, 500, 20, 20], 0.5), with_score(FACES4[1], 0.5)]
    preds = [with_score(FACES4[0], 0.9)] + (tied if fp_first else tied[::-1])
    assert ap(gt, {"e/a": preds}) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_ignored_faces_are_neither_hits_nor_false_positives():
    keep = [True, True, False, False]  # faces 2 and 3 are not in this setting's keep list
    gt = {"e/a": gt_image(FACES4, keep)}
    kept = [with_score(FACES4[0], 0.6), with_score(FACES4[1], 0.5)]
    ignored = [with_score(FACES4[2], 0.9), with_score(FACES4[3], 0.8)]
    assert ap(gt, {"e/a": kept}) == pytest.approx(1.0)  # missing ignored faces costs nothing
    assert ap(gt, {"e/a": ignored + kept}) == pytest.approx(1.0)  # finding them above is no FP
    assert ap(gt, {"e/a": ignored}) == pytest.approx(0.0)  # and no hit either
    assert evaluate_arrays(gt, {})["hard"].num_faces == 2


def test_ignored_match_marks_prediction_ignored_per_setting():
    # face 1 is kept in hard only. Predicting it above the easy face is a hit for hard, ignored for easy.
    b = np.asarray(FACES4[:2], float)
    gt = {"e/a": ImageGT(b, {"easy": np.array([True, False]), "medium": np.array([True, False]), "hard": np.array([True, True])})}
    res = evaluate_arrays(gt, {"e/a": np.array([with_score(FACES4[1], 0.9), with_score(FACES4[0], 0.8)])})
    assert res["easy"].ap == pytest.approx(1.0) and res["hard"].ap == pytest.approx(1.0)
    assert res["easy"].num_faces == 1 and res["hard"].num_faces == 2


def test_iou_uses_inclusive_pixel_convention():
    # GT x 0..5, prediction x 2..7 (w = h = 5): continuous IoU 3/7 = 0.43 < 0.5, but with the
    # reference's +1 widths it is (6-2)/(6+2) = 0.5, a match.
    gt = {"e/a": gt_image([[0, 0, 5, 5]])}
    assert ap(gt, {"e/a": [[2, 0, 5, 5, 1.0]]}) == pytest.approx(1.0)
    assert ap(gt, {"e/a": [[3, 0, 5, 5, 1.0]]}) == pytest.approx(0.0)  # (6-3)/(6+3) = 1/3


def test_predictions_on_images_without_gt_boxes_count_nowhere():
    gt = {"e/a": gt_image(FACES4[:1]), "e/empty": gt_image(np.zeros((0, 4)))}
    preds = {"e/a": [with_score(FACES4[0], 0.5)], "e/empty": [with_score([0, 0, 9, 9], 0.99)]}
    assert ap(gt, preds) == pytest.approx(1.0)


def test_setting_without_faces_gives_nan():
    gt = {"e/a": gt_image(FACES4[:1], [False])}
    assert np.isnan(ap(gt, {"e/a": [with_score(FACES4[0], 1.0)]}))


def test_thresholds_match_reference_arithmetic():
    t = thresholds()
    assert len(t) == 1000 and t[0] == 1 - 1 / 1000 and t[-1] == 0.0
    assert all(t[k] == 1 - float(k + 1) / 1000 for k in range(1000))


# ------------------------------------------------------------------ protocol, loop by loop


def loop_protocol(gt: dict[str, ImageGT], preds: dict[str, np.ndarray], setting: str) -> float:
    """The evaluation protocol written out with plain loops, one step at a time."""
    scores = [float(s) for v in preds.values() for s in np.asarray(v)[:, 4]]
    hi, lo = max([0.0] + scores), min([1.0] + scores)
    curve = np.zeros((1000, 2))
    n_faces = 0
    for key, g in gt.items():
        keep = g.keep[setting]
        n_faces += int(sum(keep))
        p = np.array(preds.get(key, np.zeros((0, 5))), dtype=float).reshape(-1, 5)
        if len(g.boxes) == 0 or len(p) == 0:
            continue
        p[:, 4] = (p[:, 4] - lo) / (hi - lo)
        order = sorted(range(len(p)), key=lambda i: -p[i, 4])  # stable
        p = p[order]
        state = [0] * len(g.boxes)  # 0 untouched, 1 recalled, -1 matched while ignored
        is_proposal, n_recalled = [], []
        for row in p:
            x1, y1, x2, y2 = row[0], row[1], row[0] + row[2], row[1] + row[3]
            best, best_iou = 0, -1.0
            for j, (gx, gy, gw, gh) in enumerate(g.boxes):
                iw = min(x2, gx + gw) - max(x1, gx) + 1
                ih = min(y2, gy + gh) - max(y1, gy) + 1
                iou = 0.0
                if iw > 0 and ih > 0:
                    iou = iw * ih / ((x2 - x1 + 1) * (y2 - y1 + 1) + (gw + 1) * (gh + 1) - iw * ih)
                if iou > best_iou:
                    best, best_iou = j, iou
            proposal = True
            if best_iou >= 0.5:
                if not keep[best]:
                    state[best], proposal = -1, False
                elif state[best] == 0:
                    state[best] = 1
            is_proposal.append(proposal)
            n_recalled.append(state.count(1))
        for t in range(1000):
            th = 1 - (t + 1) / 1000
            above = [i for i in range(len(p)) if p[i, 4] >= th]
            if above:
                curve[t] += (sum(is_proposal[: above[-1] + 1]), n_recalled[above[-1]])
    with np.errstate(invalid="ignore", divide="ignore"):
        prec, rec = curve[:, 1] / curve[:, 0], curve[:, 1] / n_faces
    mrec, mpre = [0.0, *rec, 1.0], [0.0, *prec, 0.0]
    for i in range(len(mpre) - 1, 0, -1):
        mpre[i - 1] = float(np.maximum(mpre[i - 1], mpre[i]))  # NaN-propagating, as the reference
    return float(sum((mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1) if mrec[i + 1] != mrec[i]))


def random_case(seed: int, n_images: int = 12) -> tuple[dict[str, ImageGT], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    gt, preds = {}, {}
    for i in range(n_images):
        g = int(rng.integers(0, 7))
        xy = rng.integers(0, 300, size=(g, 2))
        wh = rng.integers(4, 60, size=(g, 2))
        boxes = np.concatenate([xy, wh], axis=1).astype(float)
        keep_hard = rng.random(g) < 0.8
        keep = {"hard": keep_hard, "medium": keep_hard & (wh[:, 1] > 20), "easy": keep_hard & (wh[:, 1] > 40)}
        key = f"ev/img{i}"
        gt[key] = ImageGT(boxes, keep)
        if i % 5 == 4:
            continue  # no prediction file
        hits = boxes[rng.random(g) < 0.7]
        hits = hits + rng.normal(0, 2.5, size=hits.shape)
        dups = hits[: int(rng.integers(0, 2))] + 1.0
        fps = np.concatenate([rng.integers(0, 300, size=(3, 2)), rng.integers(4, 60, size=(3, 2))], axis=1)
        p = np.concatenate([hits, dups, fps[: int(rng.integers(0, 4))]])
        scores = np.round(rng.random(len(p)), 1)  # coarse scores: plenty of ties
        preds[key] = np.concatenate([p, scores[:, None]], axis=1)[rng.permutation(len(p))]
    return gt, preds


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_equals_loop_protocol(seed):
    gt, preds = random_case(seed)
    res = evaluate_arrays(gt, preds)
    for s in SETTINGS:
        assert res[s].ap == pytest.approx(loop_protocol(gt, preds, s), abs=1e-12)
    assert 0.0 < res["hard"].ap < 1.0


# ------------------------------------------------------------------ prediction files


def test_prediction_files_round_trip_exactly(tmp_path):
    gt, preds = random_case(7)
    preds = {k: v * np.array([1.0137, 1.0, 0.991, 1.0, 1.0]) for k, v in preds.items()}  # non-round floats
    write_predictions(tmp_path, preds)
    back = read_predictions(tmp_path)
    assert back.keys() == preds.keys()
    for k in preds:
        np.testing.assert_array_equal(back[k], preds[k])
    first = (tmp_path / "ev" / "img0.txt").read_text().splitlines()
    assert first[0] == "img0" and int(first[1]) == len(preds["ev/img0"])


def test_prediction_reader_variants():
    standard = "0_Parade_1\n2\n1 2 3 4 0.9 \n5 6 7 8 0.5 \n"
    crlf_path_name = "0--Parade/0_Parade_1.jpg\r\n2\r\n1 2 3 4 0.9\r\n\r\n5 6 7 8 0.5\r\n"
    no_header = "1,2,3,4,0.9\n5,6,7,8,0.5,10,11,12,13,14,15,16,17,18,19\n"
    wrong_count = "0_Parade_1\n7\n1 2 3 4 0.9\n5 6 7 8 0.5\n"
    expected = np.array([[1, 2, 3, 4, 0.9], [5, 6, 7, 8, 0.5]])
    for text in (standard, crlf_path_name, no_header, wrong_count):
        np.testing.assert_array_equal(parse_prediction(text)[1], expected)
    assert parse_prediction("0_Parade_1\n0\n")[1].shape == (0, 5)
    assert parse_prediction(crlf_path_name)[0] == "0--Parade/0_Parade_1.jpg"


# ------------------------------------------------------------------ data dir, evaluate_detector, CLI

FACE_BOX = (10, 12, 40, 60)  # x y w h: 60 px tall, kept in every text-GT setting


def make_data_dir(root: Path, n: int = 6) -> Path:
    """Tiny WIDER-like dir: image i has width 64 + i (so a fake detector can tell them apart),
    i % 3 + 1 faces; every image's last face is invalid (ignored in every setting)."""
    anns = []
    for i in range(n):
        event = f"{i % 2}--Ev{i % 2}"
        rel = f"{event}/{i % 2}_Ev_{i}.jpg"
        (root / "images" / event).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64 + i, 80), (i * 20, 0, 0)).save(root / "images" / rel)
        k = i % 3 + 1
        boxes = np.array([[FACE_BOX[0] + 70 * j, FACE_BOX[1], FACE_BOX[2], FACE_BOX[3]] for j in range(k + 1)], float)
        attrs = np.zeros((k + 1, 6), np.int64)
        attrs[-1, 3] = 1
        anns.append(WiderAnnotation(rel, boxes, attrs))
    write_bbx_gt(root / "wider_face_val_bbx_gt.txt", anns)
    return root


class GTDetector(Detector):
    """Returns the GT boxes of the image recognised by its width (score 1), via the base batching path."""

    name = "gt-fake"

    def __init__(self, data_dir: Path):
        self.by_width = {}
        for a in read_bbx_gt(data_dir / "wider_face_val_bbx_gt.txt"):
            w = Image.open(data_dir / "images" / a.path).size[0]
            self.by_width[w] = a.boxes
        self.calls: list[tuple[int, float, float]] = []

    def _detect_arrays(self, images, score_threshold, nms_threshold):
        self.calls.append((len(images), score_threshold, nms_threshold))
        out = []
        for im in images:
            b = self.by_width[im.shape[1]]
            out.append([Face((x, y, x + w, y + h), 1.0) for x, y, w, h in b])
        return out


def test_evaluate_detector_with_fake_detector(tmp_path):
    data = make_data_dir(tmp_path / "data")
    det = GTDetector(data)
    out = tmp_path / "preds"
    res = evaluate_detector(det, data, out_dir=out, limit=4, batch_size=2, progress=False, score_threshold=0.3)
    assert [res[s] for s in SETTINGS] == [1.0, 1.0, 1.0]
    # first 4 images sorted by "<event>/<file>": 0--Ev0/0_Ev_0, _2, _4 then 1--Ev1/1_Ev_1
    assert res["info"]["images"] == ["0--Ev0/0_Ev_0", "0--Ev0/0_Ev_2", "0--Ev0/0_Ev_4", "1--Ev1/1_Ev_1"]
    assert res["info"]["num_faces"]["hard"] == 1 + 3 + 2 + 2  # valid faces of exactly those images
    assert res["info"]["gt_source"] == "text"
    assert all(c[0] <= 2 and c[1:] == (0.3, 0.4) for c in det.calls)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.txt")) == [f"{k}.txt" for k in res["info"]["images"]]
    saved = json.loads((out / "ap.json").read_text())
    assert saved["hard"] == 1.0 and saved["info"]["num_images"] == 4
    assert (out / "pr_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # re-evaluating the written folder gives the same numbers on the same images
    again = evaluate_predictions(data, out, only_predicted=True)
    assert [again[s] for s in SETTINGS] == [1.0, 1.0, 1.0] and again["info"]["num_images"] == 4
    # over all 6 images, the 2 without predictions (1_Ev_3, 1_Ev_5) hold 1 + 3 valid faces: max recall 8/12
    full = evaluate_predictions(data, out)
    assert full["hard"] == pytest.approx(8 / 12) and full["info"]["missing_predictions"] == 2


def test_cli_eval_widerface(tmp_path, monkeypatch, capsys):
    from facesieve import api
    from facesieve.cli import main

    data = make_data_dir(tmp_path / "data")
    monkeypatch.setattr(api, "load", lambda name, weights=None, device="cpu", **kw: GTDetector(data))
    out = tmp_path / "run"
    assert main(["eval", "widerface", str(data), "--model", "fake", "--out", str(out), "--limit", "3", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "easy 100.00  medium 100.00  hard 100.00" in text and "3 images" in text
    assert (out / "ap.json").is_file() and (out / "pr_curves.png").is_file()
    assert main(["eval", "widerface", str(data), "--predictions", str(out), "--only-predicted"]) == 0
    assert "hard 100.00" in capsys.readouterr().out
    assert main(["eval", "widerface", str(tmp_path / "nope"), "--predictions", str(out)]) == 2
    assert "data directory not found" in capsys.readouterr().err
    (tmp_path / "bare" / "images").mkdir(parents=True)
    assert main(["eval", "widerface", str(tmp_path / "bare"), "--predictions", str(out)]) == 2
    assert "no ground truth" in capsys.readouterr().err


# ------------------------------------------------------------------ real data


def test_real_dev_set_perfect_and_known_fractions(wider_val_dev):
    gt, source = load_ground_truth(wider_val_dev)
    assert source == "mat" and len(gt) == 500
    perfect = {k: np.c_[g.boxes, np.ones(len(g.boxes))] for k, g in gt.items()}
    res = evaluate_predictions(wider_val_dev, perfect)
    assert [res[s] for s in SETTINGS] == [1.0, 1.0, 1.0]
    assert res["info"]["num_faces"] == {"easy": 1109, "medium": 2082, "hard": 6616}
    # drop every image of events 0..9 ("0--" .. "9--"): max recall = share of kept faces left
    keys = sorted(gt)
    dropped = [k for k in keys if len(k.split("--")[0]) == 1]
    part = {k: v for k, v in perfect.items() if k not in dropped}
    res = evaluate_predictions(wider_val_dev, part)
    for s in SETTINGS:
        left = sum(int(gt[k].keep[s].sum()) for k in part)
        assert res[s] == pytest.approx(left / res["info"]["num_faces"][s])
    # a limited subset, GT restricted to it, is perfect again
    sub = evaluate_predictions(wider_val_dev, perfect, images=keys[:7])
    assert sub["info"]["num_images"] == 7 and sub["hard"] == 1.0


def test_real_dev_set_text_gt_close_to_mat(wider_val_dev):
    gt_mat, _ = load_ground_truth(wider_val_dev, gt_source="mat")
    gt_txt, _ = load_ground_truth(wider_val_dev, gt_source="text")
    rng = np.random.default_rng(0)
    preds = {
        k: np.c_[g.boxes + rng.normal(0, 1.5, g.boxes.shape), rng.random(len(g.boxes))][rng.random(len(g.boxes)) < 0.7]
        for k, g in gt_mat.items()
    }
    a = evaluate_arrays(gt_mat, preds)
    b = evaluate_arrays(gt_txt, preds)
    for s in SETTINGS:
        assert abs(a[s].ap - b[s].ap) < 0.02
        # the text rule never keeps a face the official list ignores
        assert all(not (gt_txt[k].keep[s] & ~gt_mat[k].keep[s]).any() for k in gt_mat)


def test_flat_or_nested_prediction_folders_and_stray_files(tmp_path):
    data = make_data_dir(tmp_path / "data")
    gt, _ = load_ground_truth(data)
    preds = {k: np.c_[g.boxes, np.ones(len(g.boxes))] for k, g in gt.items()}
    flat = {k.split("/")[1]: v for k, v in preds.items()}  # <pred_dir>/<stem>.txt, no event folders
    write_predictions(tmp_path / "flat", flat)
    write_predictions(tmp_path / "nested" / "widerface_txt", preds)
    (tmp_path / "flat" / "notes.txt").write_text("run notes\nevaluated with the old model\n")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        res = evaluate_predictions(data, tmp_path / "flat")
    assert res["hard"] == 1.0 and res["info"]["missing_predictions"] == 0
    res = evaluate_predictions(data, tmp_path / "nested")
    assert res["hard"] == 1.0 and res["info"]["num_images"] == 6


def test_evaluate_detector_real_slice(wider_val_dev):
    gt, _ = load_ground_truth(wider_val_dev)

    class Oracle(Detector):
        name = "oracle"

        def detect_batch(self, images, batch_size=None, score_threshold=None, nms_threshold=None):
            return [
                [Face((x, y, x + w, y + h), 0.9) for x, y, w, h in gt[image_key(p)].boxes] for p in images
            ]

        def _detect_arrays(self, images, score_threshold, nms_threshold):  # pragma: no cover
            raise NotImplementedError

    res = evaluate_detector(Oracle(), wider_val_dev, limit=5, progress=False)
    first5 = sorted(gt)[:5]
    assert res["info"]["images"] == first5 and res["info"]["gt_source"] == "mat"
    assert res["info"]["num_faces"] == {s: sum(int(gt[k].keep[s].sum()) for k in first5) for s in SETTINGS}
    assert [res[s] for s in SETTINGS] == [1.0, 1.0, 1.0]


def test_extra_prediction_columns_are_dropped():
    gt = {"e/a": gt_image(FACES4[:2])}
    rows = np.array([with_score(FACES4[0], 0.9) + list(range(10)), with_score(FACES4[1], 0.8) + list(range(10))])
    assert ap(gt, {"e/a": rows[:, :5]}) == 1.0
    assert evaluate_arrays(gt, {"e/a": rows})["hard"].ap == 1.0
