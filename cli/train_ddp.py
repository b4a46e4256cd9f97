"""torchrun entry point: every process runs `nemgan train` with the same options.

It lives in cli/ (the top layer) because it is the command line: training/ never imports cli
(import-linter contract in pyproject.toml). `nemgan train --nproc N` starts it for you.

    torchrun --standalone --nproc_per_node 4 -m cli.train_ddp --preset mnist-unsup --out runs/ddp
    torchrun --nnodes 2 --node_rank $R --rdzv_backend c10d --rdzv_endpoint $HOST:29500 --nproc_per_node 8 \\
        -m cli.train_ddp --config run.json --out /shared/runs/x

training/distributed.py reads torchrun's environment (rank, world size, local rank), joins the process
group and shards each global batch; rank 0 writes the run folder and prints the summary. --out must be
on storage every node sees when the run is resumed (all ranks read last.pt).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    from cli import app

    app(["train", *(sys.argv[1:] if argv is None else argv)], prog_name="cli.train_ddp")


if __name__ == "__main__":
    main()
