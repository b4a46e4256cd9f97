"""The torch-free contract every part of nemgan shares (numpy + Pillow only).

Training writes it, the service, the CLI's `sample` and any other consumer read it; keeping one copy
here is what stops the two sides drifting apart:

    manifest.py   the model directory: manifest.json read/write/validation, ONNX I/O names, file digests
    latent.py     LatentSpec (centres, scales, priors, noise), the numpy sampler, prior normalisation
    images.py     ImageSpec and the one preprocessing path: decode, grey/RGB, resize, uint8 <-> model range
    png.py        the fast path for the common PNG (same pixels as Pillow's full decoder)
    npy.py        .npy / .npz uploads read safely (declared shape and size checked before unpacking)
    inputs.py     the declared input (pixel range, polarity) and the accepted value ranges
    ood.py        the out-of-distribution score of an exported model
    grid.py       image grids, one row per mode
    modes.py      mode labels (index <-> label) and logits -> probabilities
    data.py       where data sets live (data root, presets' folders and class names)
    prior_options.py  the prior-learning options and defaults (CLI, API, playground)
    errors.py     ManifestError, DataError

Nothing in this package may import torch: tests/core/test_torch_free.py imports it, and every
`service` module, with torch made unimportable.
"""
