"""Choose on validation, report on test once (issue 33, item 1): ``catalog build`` reads no
test image or label before its finalists are chosen, BN calibration never reads the
validation hold-out, and the catalog records the split each entry was measured on and the
split that chose it. A run with no hold-out chooses on one seeded half of the test split
and reports on the other."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from conftest import make_fake_run, one_torch_thread

from ofa_deploy import run as run_files
from ofa_deploy.catalog import Catalog

VAL_SIZE = 200


@pytest.fixture(autouse=True)
def _one_torch_thread():
    with one_torch_thread():
        yield


def _run_with_holdout(tmp_path: Path) -> Path:
    path = make_fake_run(tmp_path / "run")
    config = run_files.read_config(path)
    config["data"]["val_size"] = VAL_SIZE
    run_files.write_config(path, config)
    return path


def _digests(images) -> set[str]:
    return {hashlib.sha256(img.contiguous().numpy().tobytes()).hexdigest() for img in images}


def _instrument(monkeypatch) -> tuple[list[tuple[str, str]], list]:
    """Log every raw read of a dataset split and the moment finalists are chosen; keep
    every batch of images BN statistics are recomputed on."""
    import ofa_deploy.data.datasets as datasets
    import ofa_deploy.evaluate.bn as bn
    import ofa_deploy.export.pipeline as pipeline
    import ofa_deploy.search.build as build

    events: list[tuple[str, str]] = []
    calibrated: list = []
    raw_split, choose, recalibrate = datasets._raw_split, build.choose_finalists, bn.recalibrate_bn

    def logged_raw_split(info, split, *args, **kwargs):
        events.append(("read", split))
        return raw_split(info, split, *args, **kwargs)

    def logged_choose(*args, **kwargs):
        events.append(("chosen", ""))
        return choose(*args, **kwargs)

    def logged_recalibrate(net, images, **kwargs):
        calibrated.append(images.detach().to("cpu").contiguous())
        return recalibrate(net, images, **kwargs)

    monkeypatch.setattr(datasets, "_raw_split", logged_raw_split)
    monkeypatch.setattr(build, "choose_finalists", logged_choose)
    monkeypatch.setattr(bn, "recalibrate_bn", logged_recalibrate)
    monkeypatch.setattr(pipeline, "recalibrate_bn", logged_recalibrate)
    return events, calibrated


def _build(run: Path, db: Path, **kwargs) -> dict:
    from ofa_deploy.search.build import build_catalog

    return build_catalog(run, "cpu", db, n=5, finalists=2, calib_n=64, test_images=100, measure=False, **kwargs)


def test_no_test_image_before_finalists_and_no_validation_image_in_calibration(tmp_path: Path, monkeypatch):
    from ofa_deploy.data import load_dataset

    run = _run_with_holdout(tmp_path)
    val = load_dataset("digits", "val", val_size=VAL_SIZE, seed=0)
    events, calibrated = _instrument(monkeypatch)
    summary = _build(run, tmp_path / "catalog.db")

    chosen_at = events.index(("chosen", ""))
    test_reads = [i for i, e in enumerate(events) if e == ("read", "test")]
    assert test_reads and min(test_reads) > chosen_at, events
    assert len(test_reads) == 1  # read once
    assert (summary["chosen_on"], summary["reported_on"]) == ("val", "test")

    assert calibrated  # candidates and exports recalibrated
    val_digests = _digests(val.images.cpu())
    for batch in calibrated:
        assert not (_digests(batch) & val_digests)

    with Catalog(tmp_path / "catalog.db") as cat:
        for fin in summary["finalists"]:
            rows = cat.accuracy_rows(fin["text"])
            assert {(r["split"], r["chosen_on"]) for r in rows} == {("val", None), ("test", "val")}
            assert [r["top1"] for r in rows if r["split"] == "test"] == [fin["accuracy"]]
            assert [r["top1"] for r in rows if r["split"] == "val"] == [fin["choosing_accuracy"]]
            assert rows[0]["images"] == VAL_SIZE


def test_a_run_without_holdout_chooses_on_one_half_of_test_and_reports_on_the_other(tmp_path: Path):
    from ofa_deploy.search.splits import choice_data

    run = make_fake_run(tmp_path / "run")
    data = choice_data(run_files.read_config(run), seed=3, test_images=100)
    report = data.report()
    assert not data.holdout and (data.choose.name, report.name) == ("test:half1:seed3", "test:half2:seed3")
    assert len(data.choose) + len(report) == 100
    assert not (_digests(data.choose.images) & _digests(report.images))
    assert "no unseen validation data" in data.note

    summary = _build(run, tmp_path / "catalog.db", seed=3)
    assert (summary["chosen_on"], summary["reported_on"]) == ("test:half1:seed3", "test:half2:seed3")
    assert "half of the test split" in summary["splits"]
