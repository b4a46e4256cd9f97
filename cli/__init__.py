"""`nemgan`: one command line composing training and serving.

    cli/train.py    train, eval, export, learn-priors   (the training extra: torch, imported inside each)
    cli/ood.py      calibrate-ood                       (ONNX Runtime; the training data loaders)
    cli/sample.py   sample                              (ONNX Runtime + numpy: works in a serving-only install)
    cli/cluster.py  cluster                             (ONNX Runtime + numpy: offline batch clustering, OOD flag)
    cli/serve.py    serve, worker                       (the serving extra; the worker's jobs also need torch)
    cli/models.py   models list|show|activate|rollback|push|delete   (a running service's registry, stdlib HTTP)

Importing this package imports typer and the command modules only, never torch, fastapi or onnxruntime:
`nemgan --help` is instant and `nemgan serve` / `nemgan sample` run where torch is not installed
(tests/cli/test_cli_no_torch.py runs them with torch blocked).
"""

from __future__ import annotations

import typer

from . import cluster, models, ood, sample, serve, train

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Train, export and serve mode-matching GANs (NEMGAN, NEMGAN-P, MM-GAN).")

app.command()(train.train)
app.command("eval")(train.eval_)
app.command()(train.export)
app.command()(sample.sample)
app.command()(cluster.cluster)
app.command("learn-priors")(train.learn_priors_cmd)
app.command("calibrate-ood")(ood.calibrate_ood)
app.command()(serve.serve)
app.command()(serve.worker)
app.add_typer(models.app, name="models")


def main() -> None:  # pragma: no cover
    app()
