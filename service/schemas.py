"""Request/response models (with the examples the OpenAPI docs show)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator
from pydantic_core import PydanticCustomError

from core.latent import SIGMA_MAX


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), json_schema_extra={"examples": [
        {"mode": 3, "n": 16, "sigma": 1.0, "seed": 42, "format": "grid"},
        {"n": 4, "format": "json", "seed": 7},
        {"model": "mnist", "version": "1", "mode": "7", "n": 256, "sigma": 0.5, "format": "npz"},
    ]})

    model: StrictStr | None = Field(None, description="Model name (default: the service's default model).")
    version: StrictStr | StrictInt | None = Field(None, description="Version (default: the active one).")
    mode: StrictInt | StrictStr | None = Field(None, description=(
        "The mode: a JSON integer index 0..K-1, or a string that is either one of the model's mode labels exactly "
        "as GET /v1/models/{name} lists them (\"7\", \"Sneaker\"; a label wins over an index) or an index "
        "written the one canonical way (ASCII digits, no leading zero, sign or space: \"3\", not \"03\", "
        "\"+3\" or \" 3\"). Absent or null: each image's mode is drawn from the priors."),
        examples=[3, "7", "Sneaker"])
    n: StrictInt = Field(1, ge=1, description="Number of images (1..NEMGAN_MAX_N).")
    sigma: float = Field(1.0, allow_inf_nan=False, json_schema_extra={"minimum": 0, "maximum": SIGMA_MAX},
                         description=f"Noise scale, 0..{SIGMA_MAX:g}: 0 = the mode centre, 1 = the noise the "
                                     "model was trained with (the papers use 0.25..2).")
    seed: StrictInt | None = Field(None, ge=0, le=2**63 - 1, description="Same seed -> identical bytes.")
    format: Literal["png", "grid", "npz", "json"] = Field(
        "json", description="png: one PNG (n=1) or a zip of PNGs; grid: one PNG grid; npz: images+modes; "
                            "json: base64 PNGs + modes.")

    @field_validator("sigma")
    @classmethod
    def _sigma_in_range(cls, v: float) -> float:
        if not 0 <= v <= SIGMA_MAX:
            raise PydanticCustomError("sigma_range", "must be in the range 0..{max} (0 = the mode centre, 1 = the "
                                      "trained noise), got {got}", {"max": f"{SIGMA_MAX:g}", "got": f"{v:g}"})
        return v


class GenerateResponse(BaseModel):
    model: str
    version: str
    seed: int
    n: int
    modes: list[int]
    mode_labels: list[str]
    images: list[str] = Field(description="base64 PNG per image")


class ClusterItem(BaseModel):
    index: int
    mode: int
    label: str
    probabilities: list[float]
    latent: list[float] | None = None
    reconstruction: str | None = Field(None, description="base64 PNG of g(h1(x))")
    reconstruction_mse: float | None = None
    ood_score: float | None = Field(None, description="Out-of-distribution score: 0 = typical training image, "
                                                      "larger = less like the training data")
    ood: bool | None = Field(None, description="ood_score > the model's threshold (absent: model not calibrated)")


class OodInfo(BaseModel):
    threshold: float
    fpr: float = Field(description="Share of held-out training images flagged at this threshold (calibration)")
    components: list[str]


class ClusterResponse(BaseModel):
    model: str
    version: str
    mode_labels: list[str]
    results: list[ClusterItem]
    ood: OodInfo | None = Field(None, description="The OOD flag's threshold and calibration (None: not calibrated)")


class ModelVersion(BaseModel):
    version: str
    active: bool
    loaded: bool
    created: str | None = None
    priors: list[float] | None = None
    metrics: dict | None = None
    job: dict | None = None
    valid: bool = Field(True, description="false: this version cannot be served (see error)")
    error: str | None = Field(None, description="Why the version cannot be served (invalid manifest, digests, ONNX)")


class ModelSummary(BaseModel):
    name: str
    active_version: str | None
    versions: list[str]
    serving_version: str | None = Field(None, description="The version this replica serves (differs from "
                                        "active_version only while the active one cannot be served: see problem)")
    problem: dict | None = Field(None, description="kind (fallback | unavailable | pointer), wanted, serving, reason")
    n_modes: int | None = None
    mode_labels: list[str] | None = None
    image: dict | None = None
    input: dict | None = Field(None, description="Expected input: dtype, range, polarity, channels, height, width")
    ood: dict | None = Field(None, description="OOD score calibration: components, threshold, fpr, how it was fitted")


class ModelDetail(ModelSummary):
    history: list[str]
    details: list[ModelVersion]


class JobInfo(BaseModel):
    id: str
    state: Literal["pending", "running", "succeeded", "failed", "cancelled"]
    progress: float
    message: str | None = None
    created: float | None = None
    started: float | None = None
    finished: float | None = None
    attempts: int = 0
    params: dict | None = None
    result: dict | None = Field(None, description="When succeeded: priors, metrics, model, version.")
    error: str | None = None
    hint: str | None = Field(None, description="Why a pending job does not move (e.g. no worker is running)")


class ErrorBody(BaseModel):
    error: str
    detail: object | None = None
