"""Two tables, two names: core.data.DATASETS (data-set presets: where a data set lives and how it is carved up)
and training.config.PRESETS (training recipes). core.data.PRESETS stays as the old name of DATASETS."""

from __future__ import annotations

import core.data as data


def test_data_set_presets_are_called_datasets():
    assert data.DATASETS is data.PRESETS  # the old name still imports
    assert {"mnist", "fashion-mnist", "mnist-2-90-10"} <= set(data.DATASETS)
    assert all("path" in spec for spec in data.DATASETS.values())
    assert data.dataset_path("mnist", "/root-x") == data.resolve_path("mnist", "/root-x")


def test_training_recipes_are_another_table():
    from training import config
    from training.dataset import DATASETS

    assert DATASETS is data.DATASETS
    assert not set(config.PRESETS) & set(data.DATASETS)  # a recipe name never shadows a data set's
    assert all(config.preset(name)["dataset"] in data.DATASETS for name in ("mnist-unsup", "fmnist-10pc"))
