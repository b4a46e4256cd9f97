"""Prior-learning jobs: the on-disk job store (torch-free), the Celery app, and the task."""
