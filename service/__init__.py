"""nemgan inference service: FastAPI + ONNX Runtime request path, Celery prior-learning jobs.

Keep this package import light: `service.cli` is imported by the training CLI at start-up.
"""
