"""nemgan_model_info keeps one series per model name across version swaps, without prometheus-client internals."""

from __future__ import annotations


def series(name: str) -> set[tuple[str, str]]:
    from service import metrics as M

    return {(s.labels["name"], s.labels["version"]) for fam in M.MODEL_INFO.collect() for s in fam.samples
            if s.labels["name"] == name}


def test_set_active_model_replaces_the_old_version_series():
    from service.metrics import set_active_model

    set_active_model("m-info-test", "1")
    set_active_model("other-info-test", "7")
    assert series("m-info-test") == {("m-info-test", "1")}
    set_active_model("m-info-test", "2")
    assert series("m-info-test") == {("m-info-test", "2")}
    set_active_model("m-info-test", "2")  # no change: still one series
    assert series("m-info-test") == {("m-info-test", "2")}
    assert series("other-info-test") == {("other-info-test", "7")}
