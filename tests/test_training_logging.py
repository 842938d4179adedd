"""Training logs: CSV rows (header widening, truncation on resume) and PNG curves."""
from __future__ import annotations

from facesieve.training.runlog import MetricsLogger, plot_curves, read_csv, smooth


def test_csv_rows_widen_and_truncate(tmp_path):
    log = MetricsLogger(tmp_path)
    log.log("train", 1, {"loss": 2.0})
    log.log("train", 2, {"loss": 1.5, "lr": 0.1})  # new column: file rewritten with a wider header
    log.log("train", 3, {"loss": 1.0, "lr": 0.1})
    rows = read_csv(tmp_path / "train.csv")
    assert [r["step"] for r in rows] == ["1", "2", "3"] and rows[0]["lr"] == "" and rows[2]["lr"] == "0.1"
    log.truncate_after(2)
    assert [r["step"] for r in read_csv(tmp_path / "train.csv")] == ["1", "2"]
    # a new logger (resumed run) appends under the existing header
    MetricsLogger(tmp_path).log("train", 3, {"loss": 0.5, "lr": 0.01})
    assert read_csv(tmp_path / "train.csv")[-1] == {"step": "3", "loss": "0.5", "lr": "0.01"}
    assert not MetricsLogger(tmp_path / "off", enabled=False).path("x").parent.exists()


def test_plot_curves_and_smooth(tmp_path):
    assert not plot_curves(tmp_path / "none.csv", tmp_path / "a.png", ["loss"])
    log = MetricsLogger(tmp_path)
    for i in range(1, 40):
        log.log("train", i, {"loss": 10.0 / i})
    assert plot_curves(tmp_path / "train.csv", tmp_path / "loss.png", ["loss", "missing"])
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert smooth([1.0, 3.0, 5.0], 2) == [1.0, 2.0, 4.0]
