"""Strict inputs, against a real server with the shipped models: sigma within its documented range, OIP
answers that are never NaN/inf (nor JSON null), no model named by an empty name, RFC 2231 file names in
multipart parts, booleans with one set of spellings, and mode strings in one canonical form."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from core.latent import SIGMA_MAX
from core.modes import mode_labels, resolve_mode
from svc_helpers import REPO, served

MODELS = [REPO / "models" / "mnist", REPO / "models" / "fashion-mnist"]


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with served(tmp_path_factory.mktemp("strict"), MODELS) as s:
        yield s


@pytest.fixture(scope="module")
def c(srv):
    with httpx.Client(base_url=srv.url, timeout=60) as client:
        yield client


def _png(seed: int = 0) -> bytes:
    b = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8)).save(b, "PNG")
    return b.getvalue()


# ---------------------------------------------------------------------------------------------- sigma
def test_sigma_outside_its_range_is_422_naming_the_range(c):
    for sigma in (1e30, SIGMA_MAX * 1.001, -0.5, 1.7e308):
        r = c.post("/v1/generate", json={"n": 2, "sigma": sigma, "seed": 0})
        assert r.status_code == 422, (sigma, r.status_code)
        assert r.json()["error"].startswith("sigma: must be in the range 0..10 "), r.json()
    for sigma in (0, 0.5, SIGMA_MAX):
        assert c.post("/v1/generate", json={"n": 2, "sigma": sigma, "seed": 0}).status_code == 200, sigma
    prop = c.get("/openapi.json").json()["components"]["schemas"]["GenerateRequest"]["properties"]["sigma"]
    assert prop["minimum"] == 0 and prop["maximum"] == SIGMA_MAX


# ---------------------------------------------------------------------------------------------- OIP
def _infer(c, model: str, name: str, shape: list[int], value: float, binary: bool = False):
    body = {"inputs": [{"name": name, "shape": shape, "datatype": "FP32",
                        "data": [value] * int(np.prod(shape))}]}
    if binary:
        body["parameters"] = {"binary_data_output": True}
    return c.post(f"/v2/models/{model}/infer", json=body)


def test_oip_inputs_that_overflow_give_400_not_null(c):
    dim = c.get("/v2/models/mnist-g").json()["inputs"][0]["shape"][1]
    for model, name, shape in (("mnist-g", "z", [2, dim]), ("mnist-h", "x", [1, 1, 28, 28]),
                               ("mnist-h1", "x", [1, 1, 28, 28])):
        for binary in (False, True):
            r = _infer(c, model, name, shape, 3e38, binary)
            assert r.status_code == 400, (model, binary, r.status_code, r.content[:200])
            assert "non-finite" in r.json()["error"] and b"null" not in r.content
    ok = _infer(c, "mnist-g", "z", [2, dim], 0.5)
    assert ok.status_code == 200 and all(v is not None for v in ok.json()["outputs"][0]["data"])


def test_oip_model_names_need_a_model_part(c):
    assert c.get("/v2/models/mnist-g").status_code == 200
    for path in ("/v2/models/-g", "/v2/models/-h/ready", "/v2/models/-g/versions/1"):
        r = c.get(path)
        assert r.status_code == 404 and "unknown model" in r.json()["error"], (path, r.status_code)
    r = _infer(c, "-g", "z", [1, 50], 0.0)
    assert r.status_code == 404


def test_oip_boolean_parameters_are_json_booleans(c):
    dim = c.get("/v2/models/mnist-g").json()["inputs"][0]["shape"][1]
    body = {"inputs": [{"name": "z", "shape": [1, dim], "datatype": "FP32", "data": [0.0] * dim}],
            "outputs": [{"name": "x", "parameters": {"binary_data": "false"}}]}
    r = c.post("/v2/models/mnist-g/infer", json=body)  # before: the string "false" was read as true
    assert r.status_code == 400 and "binary_data must be true or false" in r.json()["error"]


# ---------------------------------------------------------------------------------------------- multipart
def _multipart(parts: list[tuple[bytes, bytes]], boundary: bytes = b"b0undary") -> tuple[bytes, str]:
    out = b""
    for disposition, data in parts:
        out += (b"--" + boundary + b"\r\nContent-Disposition: " + disposition +
                b"\r\nContent-Type: image/png\r\n\r\n" + data + b"\r\n")
    return out + b"--" + boundary + b"--\r\n", "multipart/form-data; boundary=" + boundary.decode()


def test_rfc2231_file_names_are_files(c):
    body, ctype = _multipart([
        (b"form-data; name=\"files\"; filename*=UTF-8''%E2%82%AC%20digit.png", _png(1)),  # only filename*
        (b"form-data; name=\"files\"; filename=\"plain.png\"", _png(2)),
        (b"form-data; name=\"files\"; filename=\"fallback.png\"; filename*=utf-8''real.png", _png(3)),
    ])
    r = c.post("/v1/cluster", content=body, headers={"content-type": ctype})
    assert r.status_code == 200, r.text
    assert len(r.json()["results"]) == 3  # before: the first part was a form field, 2 results


# ---------------------------------------------------------------------------------------------- booleans
def test_booleans_have_one_set_of_spellings(c):
    for bad in ("maybe", "2", "truthy"):
        r = c.post("/v1/priors/learn", files={"labeled": ("l.npz", b"not read"), "activate": (None, bad)})
        assert r.status_code == 422, (bad, r.status_code, r.text)  # before: 'maybe' was read as true
        assert r.json()["error"].startswith("activate must be a boolean (true/false, 1/0, yes/no, on/off)")
        r = c.post(f"/v1/cluster?return_latent={bad}", files={"files": ("a.png", _png())})
        assert r.status_code == 422 and "return_latent must be a boolean" in r.json()["error"]
    for good, latent in (("TRUE", True), ("yes", True), ("0", False), ("off", False), ("", False)):
        r = c.post(f"/v1/cluster?return_latent={good}", files={"files": ("a.png", _png())})
        assert r.status_code == 200 and (r.json()["results"][0].get("latent") is not None) == latent, good


# ---------------------------------------------------------------------------------------------- modes
def test_mode_strings_have_one_form(c):
    def modes(model, mode):
        return c.post("/v1/generate", json={"model": model, "mode": mode, "n": 3, "seed": 0})

    for mode in (7, "7"):
        r = modes("mnist", mode)
        assert r.status_code == 200 and r.headers["x-nemgan-modes"] == "7,7,7", mode
    for bad in ("07", "+7", " 7", "7 ", "7.0", "\u0667", "\u00b3", "-0", "0x7"):  # U+0667: an Arabic-Indic 7
        r = modes("mnist", bad)
        assert r.status_code == 422, (bad, r.status_code)  # before: "07" and "\u0667" were mode 7
        assert "unknown mode" in r.json()["error"], r.json()
    # labels first, exactly as listed; then the canonical index
    assert modes("fashion-mnist", "Sneaker").headers["x-nemgan-modes"] == "7,7,7"
    assert modes("fashion-mnist", "7").headers["x-nemgan-modes"] == "7,7,7"
    assert modes("fashion-mnist", "sneaker").status_code == 422
    assert modes("mnist", "10").status_code == 422 and modes("mnist", "-1").status_code == 422
    desc = c.get("/openapi.json").json()["components"]["schemas"]["GenerateRequest"]["properties"]["mode"]
    assert "canonical" in desc["description"] and "not \"03\"" in desc["description"]


def test_resolve_mode_is_the_same_for_the_cli():
    digits = mode_labels(10)
    assert resolve_mode("7", digits) == 7 and resolve_mode(7, digits) == 7
    shifted = [str(k + 1) for k in range(10)]  # labels that look like other indices: the label wins
    assert resolve_mode("1", shifted) == 0 and resolve_mode("0", shifted) == 0
    for bad in ("07", "+1", "\u0663", " 1"):
        with pytest.raises(ValueError, match="unknown mode"):
            resolve_mode(bad, shifted)
