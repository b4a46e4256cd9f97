"""The multipart splitter of /v1/cluster (service/encoding.py parse_multipart) against python-multipart, the
parser Starlette uses (and so /v1/priors/learn), on serve_bench's request: 8 PNGs of 28x28 noise, ~8 KB.

    python benchmarks/multipart_bench.py [--rounds 15] [--n 2000]

python-multipart is fed the whole body at once with callbacks that collect each part's name, filename and
bytes, which is the least it does inside Starlette (which adds UploadFile objects and spooled files). Prints the
best microseconds per body of each over interleaved rounds, and their ratio.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from serve_bench import multipart  # noqa: E402

from service.encoding import parse_multipart  # noqa: E402


def body() -> tuple[bytes, str]:
    pngs = []
    for i, im in enumerate((np.random.default_rng(0).random((8, 28, 28)) * 255).astype(np.uint8)):
        b = io.BytesIO()
        Image.fromarray(im).save(b, "PNG")
        pngs.append((f"{i}.png", b.getvalue(), "image/png"))
    return multipart(pngs)


def python_multipart(data: bytes, ctype: str) -> list[tuple]:
    from python_multipart import MultipartParser
    from python_multipart.multipart import parse_options_header

    _, params = parse_options_header(ctype.encode())
    parts: list[tuple] = []
    cur: dict = {}

    def begin():
        cur.update(data=[], headers=[])

    def header_field(d, s, e):
        cur["headers"].append([d[s:e], b""])

    def header_value(d, s, e):
        cur["headers"][-1][1] += d[s:e]

    def part_data(d, s, e):
        cur["data"].append(d[s:e])

    def end():
        headers = {k.lower(): v for k, v in cur["headers"]}
        _, opts = parse_options_header(headers[b"content-disposition"])
        parts.append((opts.get(b"name"), opts.get(b"filename"), b"".join(cur["data"])))

    p = MultipartParser(params[b"boundary"], {"on_part_begin": begin, "on_header_field": header_field,
                                              "on_header_value": header_value, "on_part_data": part_data,
                                              "on_part_end": end})
    p.write(data)
    p.finalize()
    return parts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    data, ctype = body()
    ours = parse_multipart(data, ctype)
    theirs = python_multipart(data, ctype)
    assert [(p.name, p.filename, p.data) for p in ours] == [(a.decode(), b.decode(), c) for a, b, c in theirs]
    fns = {"parse_multipart (service/encoding.py)": lambda: parse_multipart(data, ctype),
           "python-multipart (Starlette's parser)": lambda: python_multipart(data, ctype)}
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(args.rounds):
        for k, fn in fns.items():
            t = time.perf_counter()
            for _ in range(args.n):
                fn()
            best[k] = min(best[k], (time.perf_counter() - t) / args.n * 1e6)
    print(f"{len(data)} bytes, {len(ours)} parts; best of {args.rounds} x {args.n}")
    for k, v in best.items():
        print(f"  {k:40s} {v:8.1f} us")
    a, b = best.values()
    print(f"  python-multipart / parse_multipart: {b / a:.1f}x")


if __name__ == "__main__":
    main()
