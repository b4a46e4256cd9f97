"""nemgan inference service: FastAPI + ONNX Runtime request path, Celery prior-learning jobs.

Torch-free (tests/core/test_torch_free.py); the `nemgan serve` / `nemgan worker` commands are in cli/serve.py.
"""
