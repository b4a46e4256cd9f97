"""Shared fixtures. Tests train tiny models for a few steps; nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.data import DATA_HINT, default_data_root

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = default_data_root()  # the project's own resolution: $NEMGAN_DATA_DIR, else ../shared/data


# The fast lane (`pytest -m "not slow"`): tests that took 10 s or more in a full run with `--durations=0`
# (2-core machine shared with other jobs, load average ~10; full suite 22 min, these 31 tests 16 of them), and
# the modules and tests whose shared fixtures cost that much, are marked slow here, beside those marked with
# @pytest.mark.slow in their files. Still run in CI (.ci/run runs everything, with --durations=25 to see when this
# list needs updating); tests/test_hygiene.py checks that every entry still names a test file or test.
SLOW_TESTS = frozenset({
    # whole modules whose shared fixture costs 10 s or more (a reproduce dry run, an RGB export, a live service)
    "tests/benchmarks/test_reproduce.py",
    "tests/service/test_rgb_model.py",
    "tests/deploy/test_deploy_metrics.py",
    # the tests sharing the MNIST 3-vs-8 classifier fixture (29 s)
    "tests/training/test_metrics.py::test_classifier_save_load_round_trip",
    "tests/training/test_metrics.py::test_get_or_train_classifier_uses_cache",
    "tests/training/test_metrics.py::test_registry_generation_metrics_with_real_images_as_generator",
    "tests/training/test_metrics.py::test_reconstruction_metric_identity_and_swapped_class",
    "tests/benchmarks/test_gpu_run.py::test_dry_run_on_cpu",
    "tests/benchmarks/test_reproduce.py::test_dry_run_end_to_end",
    "tests/benchmarks/test_reproduce.py::test_failing_row_is_reported_not_fatal",
    "tests/cli/test_cli.py::test_export_names_unsupervised_modes_neutrally",
    "tests/cli/test_cli.py::test_round_trip_train_export_sample",
    "tests/cli/test_models_cmd.py::test_models_commands_against_a_running_service",
    "tests/cli/test_train_cmd.py::test_dry_run_without_out_uses_a_fresh_temporary_folder",
    "tests/cli/test_train_cmd.py::test_existing_run_is_refused_unless_resume_or_force",
    "tests/cli/test_train_cmd.py::test_resume_takes_the_runs_own_options",
    "tests/deploy/test_deploy_metrics.py::test_every_queried_metric_is_exported",
    "tests/service/test_e2e_priors.py::test_learned_priors_drive_generation",
    "tests/service/test_http_front.py::test_allowed_origins_and_api_key",
    "tests/service/test_jobs.py::test_embedded_mode_worker_end_to_end_with_kill",
    "tests/service/test_jobs.py::test_redis_mode_worker",
    "tests/service/test_jobs_bounds.py::test_redis_replaced_by_an_empty_instance_the_job_is_resent_and_runs",
    "tests/service/test_jobs_faults.py::test_killed_worker_job_requeued_on_another_host_once",
    "tests/service/test_jobs_faults.py::test_progress_reports_every_phase_at_least_every_2s",
    "tests/service/test_playground_browser.py::test_playground_end_to_end",
    "tests/service/test_rgb_model.py::test_generate_colour_png_grid_npz",
    "tests/service/test_serving_lifecycle.py::test_hot_swap_with_requests_in_flight",
    "tests/service/test_serving_lifecycle.py::test_version_eviction_keeps_a_bound_and_finishes_in_flight_requests",
    "tests/training/test_cluster.py::test_algorithm2_with_a_perfect_generator",
    "tests/training/test_ddp.py::test_nemgan_train_nproc",
    "tests/training/test_ddp.py::test_resume_a_two_process_checkpoint_in_one_process",
    "tests/training/test_ddp.py::test_torchrun_with_one_process_is_the_plain_run",
    "tests/training/test_ddp.py::test_two_processes_match_one_process_with_the_global_batch",
    "tests/training/test_metrics.py::test_tiny_classifier_learns_two_mnist_digits",
    "tests/training/test_networks.py::test_28x28_training_is_bit_identical_to_the_old_networks",
    "tests/training/test_own_images.py::test_example_folder_and_the_readme_commands",
    "tests/training/test_priors.py::test_learn_priors_recovers_imbalanced_ratio",
    "tests/training/test_train.py::test_dry_run_every_variant",
})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid.split("[")[0] in SLOW_TESTS or item.nodeid.split("::")[0] in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


def pytest_configure(config):
    # Two cores: keep each test process to one intra-op thread so parallel servers/workers don't thrash.
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not (DATA_ROOT / "mnist").is_dir():
        pytest.skip(f"needs MNIST under {DATA_ROOT}/mnist: {DATA_HINT}")
    return DATA_ROOT


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A model directory exported from a 3-step dry run (fake data, 10 modes): fast and deterministic."""
    from training.config import TrainConfig
    from training.export import export_model
    from training.model import NemganModel
    from training.train import train

    run = tmp_path_factory.mktemp("tiny-run")
    train(TrainConfig(out_dir=str(run), dry_run=True, seed=0), progress=False)
    out = tmp_path_factory.mktemp("tiny-export") / "tiny"
    export_model(NemganModel.load(run / "best.pt"), out, name="tiny", version="1")
    return out


def export_tiny_rgb(tmp_path_factory, side: int, name: str) -> Path:
    """A side x side RGB model directory from a 3-step dry run (fake colour data, 4 modes, narrow networks)."""
    from training.config import TrainConfig
    from training.export import export_model
    from training.model import NemganModel
    from training.train import train

    run = tmp_path_factory.mktemp(f"{name}-run")
    train(TrainConfig(out_dir=str(run), dry_run=True, seed=0, image_size=side, image_channels=3, n_modes=4,
                      g_width=8, d_width=8, fc_hidden=32, h2_hidden=32, d_norm="spectral"), progress=False)
    out = tmp_path_factory.mktemp(f"{name}-export") / name
    export_model(NemganModel.load(run / "best.pt"), out, name=name, version="1")
    return out


@pytest.fixture(scope="session")
def tiny_rgb_model_dir(tmp_path_factory) -> Path:
    """A 32x32 RGB model directory (the Colored-MNIST / CIFAR-10 input), exported like tiny_model_dir."""
    return export_tiny_rgb(tmp_path_factory, 32, "tiny-rgb")


@pytest.fixture(scope="session")
def tiny_rgb64_model_dir(tmp_path_factory) -> Path:
    """A 64x64 RGB model directory (four stride-2 stages)."""
    return export_tiny_rgb(tmp_path_factory, 64, "tiny-rgb64")
