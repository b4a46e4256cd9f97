"""The serving runtime on a GPU: ONNX Runtime's CUDA execution provider, with the CPU provider behind it.

The parity test needs onnxruntime-gpu and an NVIDIA GPU (benchmarks/gpu_run.sh installs and runs it on the
device machine); without the CUDA provider it skips and says so. The fallback test runs everywhere.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("pydantic_settings", reason="the serving extra is not installed (pip install -e '.[serving]')")

from core.latent import sample_latents  # noqa: E402
from service.runtime import ModelRuntime, pick_providers  # noqa: E402
from service.settings import Settings  # noqa: E402

MODEL = Path(__file__).resolve().parents[2] / "models" / "mnist"
HAS_CUDA_EP = "CUDAExecutionProvider" in ort.get_available_providers()


def test_provider_choice_and_cpu_fallback(monkeypatch, caplog):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with caplog.at_level(logging.WARNING, logger="nemgan.service"):
        assert pick_providers("cuda") == ["CPUExecutionProvider"]
    assert "CUDA execution provider requested but not available" in caplog.text
    assert pick_providers("auto") == ["CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    # CPU stays in the list: ONNX Runtime runs any node the CUDA provider cannot take on the CPU.
    assert pick_providers("cuda") == pick_providers("auto") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert pick_providers("cpu") == ["CPUExecutionProvider"]


@pytest.mark.skipif(not HAS_CUDA_EP, reason="onnxruntime has no CUDAExecutionProvider here (needs onnxruntime-gpu "
                    f"and an NVIDIA GPU; available: {ort.get_available_providers()})")
def test_cuda_provider_matches_cpu():
    cpu = ModelRuntime(MODEL, Settings(providers="cpu"))
    gpu = ModelRuntime(MODEL, Settings(providers="cuda"))
    for net in ("g", "h"):  # the sessions really run on the GPU
        assert gpu.session(net).get_providers()[0] == "CUDAExecutionProvider", net
    z, _ = sample_latents(cpu.spec, 512, None, 1.0, 0)
    x_cpu, x_gpu = cpu.run("g", z), gpu.run("g", z)
    # cuDNN may run the convolutions in TF32 (10-bit mantissa): ~1e-3 relative; images are in [-1, 1].
    assert np.abs(x_cpu - x_gpu).max() < 1e-2
    (zh_cpu, lg_cpu), (zh_gpu, lg_gpu) = cpu.run("h", x_cpu), gpu.run("h", x_cpu)
    assert np.allclose(zh_cpu, zh_gpu, rtol=1e-2, atol=1e-2)
    assert np.allclose(lg_cpu, lg_gpu, rtol=1e-2, atol=5e-2)
    assert (lg_cpu.argmax(1) == lg_gpu.argmax(1)).mean() >= 0.99
    gpu.warmup()  # the batch sizes the service warms up with run on the GPU too
