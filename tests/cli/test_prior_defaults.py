"""Prior learning has one set of defaults: `nemgan learn-priors`, POST /v1/priors/learn, its OpenAPI schema, the
playground's form and training/prior_learning.py all take them from core/prior_options.py."""

from __future__ import annotations

import inspect
import re

from core.prior_options import ALPHA_STEPS, H_STEPS, INT_OPTIONS
from torch_blocker import REPO


def test_h_steps_default_is_one_constant_everywhere():
    from cli.train import learn_priors_cmd
    from service.routes.jobs import LEARN_OPENAPI, _int
    from training.prior_learning import learn_and_export

    assert H_STEPS == 300  # the README's "default 300"
    cli = inspect.signature(learn_priors_cmd).parameters
    assert cli["h_steps"].default == H_STEPS and cli["alpha_steps"].default == ALPHA_STEPS
    lib = inspect.signature(learn_and_export).parameters
    assert lib["h_steps"].default == H_STEPS and lib["alpha_steps"].default == ALPHA_STEPS
    for key, (default, _, _) in INT_OPTIONS.items():
        assert _int({}, key) == default  # a form without the field
        assert LEARN_OPENAPI["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"][key][
            "default"] == default
    html = (REPO / "service" / "static" / "index.html").read_text()
    for key in ("h_steps", "alpha_steps"):
        m = re.search(rf'name="{key}"[^>]*value="(\d+)"', html)
        assert m and int(m.group(1)) == INT_OPTIONS[key][0], key
