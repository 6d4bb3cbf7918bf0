"""Loading and validating ``params.yaml``: one schema for every stage.

Every stage loads the whole file through :func:`load_params`, so an unknown key, a wrong type or an
out-of-range value stops the stage at once with a message that names the key and the bad value,
e.g. ``params.yaml: ingest.size = -3: Input should be greater than or equal to 16``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from pipeline.errors import StageError

REPO_ROOT = Path(__file__).resolve().parent.parent


class ParamsError(StageError, ValueError):
    """params.yaml is missing, unreadable or invalid; the message names the key."""


class _Section(BaseModel):
    # extra="forbid": a misspelt key is an error, never silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


EXTERNAL_NAME = re.compile(r"^[a-z0-9_-]+$")


class ExternalSet(_Section):
    """One external validation set: never used for training, thresholds or any choice."""

    name: str
    dicom_dir: str = Field(min_length=1)
    labels_csv: str = Field(min_length=1)
    # Quoted verbatim by the report; without one the report says "external set `<name>`".
    description: str | None = None

    @model_validator(mode="after")
    def _check_name(self) -> ExternalSet:
        if not EXTERNAL_NAME.match(self.name):
            raise ValueError(f"name {self.name!r} must match [a-z0-9_-]+")
        if self.name == "internal":
            raise ValueError("name 'internal' is reserved for the development set")
        return self

    @property
    def split_key(self) -> str:
        """Its key in evaluation.json / metrics.json: ``external/<name>``."""
        return f"external/{self.name}"

    @property
    def label(self) -> str:
        """How the report names it: the description, else "external set `<name>`"."""
        return self.description or f"external set `{self.name}`"


def _external_sets(value: Any) -> Any:
    """``data.external``: a list of sets; [] or null = none. The single mapping of earlier
    versions (``{dicom_dir, labels_csv}``, both null = off) is one set named ``external``."""
    if value is None:
        return []
    if isinstance(value, dict) and "name" not in value:
        if set(value) <= {"dicom_dir", "labels_csv"}:
            if value.get("dicom_dir") is None and value.get("labels_csv") is None:
                return []
            if value.get("dicom_dir") is None or value.get("labels_csv") is None:
                raise ValueError("set both dicom_dir and labels_csv, or neither")
        return [{"name": "external", **value}]
    return value


class Data(_Section):
    dicom_dir: str = Field(min_length=1)
    labels_csv: str = Field(min_length=1)
    classes: list[str] = Field(min_length=2)
    positive_class: str | None = None
    # What each class means and how the labels were obtained (reference standard); quoted by the
    # report. None: the report says the definition is not given.
    label_definition: str | None = None
    external: Annotated[list[ExternalSet], BeforeValidator(_external_sets)] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_classes(self) -> Data:
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must be distinct, got {self.classes}")
        if len(self.classes) == 2 and self.positive_class is None:
            raise ValueError("positive_class is required for a binary task")
        if self.positive_class is not None and self.positive_class not in self.classes:
            raise ValueError(f"positive_class {self.positive_class!r} is not one of classes {self.classes}")
        names = [e.name for e in self.external]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"external set names must be unique, repeated: {dupes}")
        return self

    def external_set(self, name: str) -> ExternalSet:
        for e in self.external:
            if e.name == name:
                return e
        raise KeyError(f"no external set named {name!r}")

    @property
    def positive_index(self) -> int:
        """Index of the positive class (binary tasks); the last class when none is named."""
        if self.positive_class is None:
            return len(self.classes) - 1
        return self.classes.index(self.positive_class)


class Ingest(_Section):
    size: int = Field(ge=16, le=2048)
    fit: Literal["pad", "crop"] = "pad"
    apply_voi_lut: bool = True
    min_size: int = Field(default=32, ge=1)
    modalities: list[str] = Field(default_factory=lambda: ["CR", "DX", "RG", "DR"], min_length=1)
    workers: int = Field(default=0, ge=0)
    pseudonym_salt: str = Field(min_length=1)
    # Largest image accepted, in samples (Rows x Columns x SamplesPerPixel x frames), checked
    # from the header before any pixel is decoded.
    max_pixels: int = Field(default=6000 * 6000, ge=1)
    # Per-file limit on reading + decoding, in seconds (null = none).
    file_timeout_s: float | None = Field(default=300.0, gt=0)


class Split(_Section):
    val_fraction: float = Field(gt=0, lt=1)
    test_fraction: float = Field(gt=0, lt=1)
    # A patient above this share of the val or test images is kept in train (pipeline.splits).
    max_patient_share: float = Field(default=0.10, gt=0, le=1)

    @model_validator(mode="after")
    def _leave_train(self) -> Split:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must leave at least 10% for train")
        return self


class Augment(_Section):
    copies: int = Field(ge=0, le=50)
    prob: float = Field(ge=0, le=1)
    rotate_deg: float = Field(ge=0, le=180)
    scale: float = Field(ge=0, lt=1)
    translate: float = Field(ge=0, lt=1)
    gamma: tuple[float, float]
    noise_std: float = Field(ge=0, le=1)
    horizontal_flip: bool = False
    preview_images: int = Field(default=6, ge=1, le=32)

    @model_validator(mode="after")
    def _gamma_range(self) -> Augment:
        lo, hi = self.gamma
        if not 0 < lo <= hi:
            raise ValueError(f"gamma must be [low, high] with 0 < low <= high, got {list(self.gamma)}")
        return self


class Backbone(_Section):
    name: str = Field(min_length=1)
    weights_path: str | None = None
    grey_to_rgb: Literal["repeat", "sum_stem"] = "repeat"


class Features(_Section):
    batch_size: int = Field(ge=1, le=4096)


class Linear(_Section):
    C_grid: list[float] = Field(min_length=1)
    cv_folds: int = Field(ge=2, le=20)
    class_weight: Literal["balanced"] | None = "balanced"
    max_iter: int = Field(ge=10)
    use_augmented: bool = True
    # A C chosen at an edge of C_grid extends the grid by a decade on that side, never beyond
    # [C_min, C_max]; after one extension, a new edge that improves the CV log loss by less than
    # extend_tol stops the search (flat beyond the grid).
    C_min: float = Field(default=1e-9, gt=0)
    C_max: float = Field(default=1e3, gt=0)
    extend_tol: float = Field(default=1e-4, ge=0)

    @model_validator(mode="after")
    def _positive_c(self) -> Linear:
        bad = [c for c in self.C_grid if c <= 0]
        if bad:
            raise ValueError(f"C_grid values must be > 0, got {bad}")
        outside = [c for c in self.C_grid if not self.C_min <= c <= self.C_max]
        if outside:
            raise ValueError(f"C_grid values {outside} lie outside [C_min, C_max] = [{self.C_min:g}, {self.C_max:g}]")
        return self


class Train(_Section):
    epochs: int = Field(ge=1, le=1000)
    batch_size: int = Field(ge=1, le=4096)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    momentum: float = Field(default=0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(default=1e-4, ge=0)
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    early_stopping_patience: int | None = Field(default=3, ge=1)
    # The kept epoch is the best on val among the epochs whose eval-mode train AUROC reaches this
    # (until one does, the best of all); None = any epoch.
    min_train_auroc: float | None = Field(default=0.7, ge=0.5, le=1)
    device: Literal["auto", "cuda", "mps", "cpu"] = "auto"
    num_threads: int = Field(default=0, ge=0)
    augment_on_the_fly: bool = True
    # Data-parallel processes (torchrun + DDP) for the trained methods; 1 = one process.
    nproc: int = Field(default=1, ge=1, le=1024)
    # torch.compile the training step (helps on GPUs; on CPU the compile time dominates short runs).
    compile: bool = False
    # cuDNN's deterministic algorithms without autotuning (a GPU run repeats bit for bit); false
    # lets cuDNN benchmark and keep the fastest kernels (results then vary within noise between
    # runs). No effect on CPU.
    deterministic: bool = True


class Finetune(_Section):
    lr_powers: list[float] = Field(min_length=2)
    lr_boundaries: list[int] | None = None
    unfreeze_last_n: int | None = Field(default=None, ge=0)
    warmup_epochs: int = Field(default=0, ge=0)
    bn: Literal["adapt", "freeze"] = "freeze"

    @model_validator(mode="after")
    def _check_tiers(self) -> Finetune:
        bad = [p for p in self.lr_powers if p <= 0]
        if bad:
            raise ValueError(f"lr_powers are positive exponents (lr = 10^-p), got {bad}")
        if self.lr_boundaries is not None:
            if len(self.lr_boundaries) != len(self.lr_powers) - 2:
                raise ValueError(
                    f"lr_boundaries needs len(lr_powers) - 2 = {len(self.lr_powers) - 2} values, "
                    f"got {self.lr_boundaries}"
                )
            b = self.lr_boundaries
            if any(x < 1 for x in b) or any(b2 <= b1 for b1, b2 in zip(b, b[1:], strict=False)):
                raise ValueError(f"lr_boundaries must be increasing indices >= 1, got {b}")
        return self

    @property
    def learning_rates(self) -> list[float]:
        return [10.0 ** (-p) for p in self.lr_powers]


class Scratch(_Section):
    # None: chosen from lr_grid by short runs scored on val (pipeline.lr_search).
    lr: float | None = Field(default=None, gt=0, le=10)
    lr_grid: list[float] = Field(default_factory=lambda: [0.003, 0.001, 0.0003], min_length=1)
    grid_steps: int = Field(default=60, ge=1)
    # The optimiser-step budget of the scratch run (epochs = ceil(steps / batches per epoch)).
    steps: int = Field(default=300, ge=1)
    # scratch's own optimiser (a random network trains poorly with SGD at few steps).
    optimizer: Literal["sgd", "adamw"] = "adamw"
    # On-the-fly augmentation of scratch's training batches (train.augment_on_the_fly is the
    # pretrained methods'). Off: under augmentation a random network did not fit the demo's
    # training images within its budget (eval-mode train AUROC 0.75; 0.87 without).
    augment_on_the_fly: bool = False

    @model_validator(mode="after")
    def _check_grid(self) -> Scratch:
        bad = [x for x in self.lr_grid if not 0 < x <= 10]
        if bad:
            raise ValueError(f"lr_grid values must be in (0, 10], got {bad}")
        return self


class Evaluate(_Section):
    operating_point: Literal["youden", "sensitivity"] = "youden"
    target_sensitivity: float = Field(default=0.9, gt=0, lt=1)
    calibration_bins: int = Field(default=10, ge=2, le=100)
    bootstrap_samples: int = Field(default=1000, ge=100, le=100000)
    min_subgroup_size: int = Field(default=30, ge=1)
    min_subgroup_patients: int = Field(default=10, ge=1)
    # PPV/NPV at this prevalence (Bayes from sensitivity/specificity); None = the sample's.
    prevalence: float | None = Field(default=None, gt=0, lt=1)
    age_bands: list[float] = Field(min_length=2)
    # Fit checks (pipeline.fit_checks): near-constant when the raw positive-class probability's
    # IQR on val or test is below this; fitted when the raw train AUROC reaches this.
    near_constant_iqr: float = Field(default=0.02, gt=0, lt=1)
    fitted_train_auroc: float = Field(default=0.7, ge=0.5, le=1)

    @model_validator(mode="after")
    def _increasing_bands(self) -> Evaluate:
        b = self.age_bands
        if any(b2 <= b1 for b1, b2 in zip(b, b[1:], strict=False)):
            raise ValueError(f"age_bands must be increasing, got {b}")
        return self


class Diagnose(_Section):
    overfit_k: int = Field(default=2, ge=1)
    gap_mild: float = Field(default=0.05, ge=0, le=1)
    gap_severe: float = Field(default=0.15, ge=0, le=1)
    noninferiority_margin: float = Field(default=0.05, gt=0, lt=0.5)
    chance_margin: float = Field(default=0.05, ge=0, lt=0.5)
    fractions: list[float] = Field(min_length=1)
    repeats: int = Field(default=1, ge=1, le=100)
    learning_curve_epochs: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> Diagnose:
        bad = [f for f in self.fractions if not 0 < f <= 1]
        if bad:
            raise ValueError(f"fractions must be in (0, 1], got {bad}")
        if self.gap_severe < self.gap_mild:
            raise ValueError("gap_severe must be >= gap_mild")
        return self


class Report(_Section):
    title: str = "Transfer learning for chest radiograph classification"
    gradcam_per_outcome: int = Field(default=2, ge=0, le=10)


# The strategy variants a user may list in strategies.variants (names are a contract; each runs
# as its own DVC stage `variant@<name>` beside the three main methods linear/finetune/scratch).
VARIANT_NAMES = (
    "full_ft",
    "unfreeze_last",
    "dlr_234",
    "dlr_246",
    "dlr_23456",
    "layer_decay",
    "lp_ft",
    "linear_on_logits",
    "knn",
)
Variant = Literal[
    "full_ft",
    "unfreeze_last",
    "dlr_234",
    "dlr_246",
    "dlr_23456",
    "layer_decay",
    "lp_ft",
    "linear_on_logits",
    "knn",
]


class Strategies(_Section):
    # Extra transfer strategies, each its own cached DVC stage; unlisted ones do not run.
    variants: list[Variant] = Field(default_factory=list)
    # unfreeze_last: the last n backbone layer groups (plus the head) train.
    unfreeze_last_n: int = Field(default=2, ge=1)
    # layer_decay: group i of n (head = n) trains at head_lr * layer_decay ** (n - i).
    layer_decay: float = Field(default=0.7, gt=0, le=1)
    # full_ft: the one learning rate of every layer.
    full_ft_lr: float = Field(default=0.001, gt=0, le=10)
    # knn: the numbers of neighbours scored by patient-grouped CV log loss on train.
    knn_k: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [5, 11, 21, 41], min_length=1)
    # Backbones the transferability stage scores by LogME on frozen train features (registry
    # names, see pipeline.backbones); one without local weights is skipped with its reason.
    candidates: list[str] = Field(
        default_factory=lambda: ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"],
        min_length=1,
    )

    @model_validator(mode="after")
    def _distinct(self) -> Strategies:
        if len(set(self.candidates)) != len(self.candidates):
            raise ValueError(f"candidates must be distinct, got {self.candidates}")
        if len(set(self.variants)) != len(self.variants):
            raise ValueError(f"variants must be distinct, got {self.variants}")
        return self


class Introspect(_Section):
    # The last n backbone layer groups whose units (channels) are shown.
    last_groups: int = Field(default=2, ge=1, le=8)
    units_per_group: int = Field(default=3, ge=1, le=16)
    # Training radiographs shown per unit (highest mean activation over the train split).
    top_k: int = Field(default=4, ge=1, le=16)
    # Gradient-ascent activation maximisation: Adam steps, rate, and the regularisers.
    steps: int = Field(default=40, ge=1, le=1000)
    lr: float = Field(default=0.05, gt=0, le=1)
    l2: float = Field(default=0.01, ge=0)
    blur_every: int = Field(default=4, ge=0)
    # Layer groups whose feature maps are drawn (evenly spaced, stem to top) and channels each.
    feature_map_depths: int = Field(default=4, ge=1, le=12)
    feature_map_channels: int = Field(default=6, ge=1, le=32)
    batch_size: int = Field(default=32, ge=1, le=4096)


class Params(_Section):
    seed: int = Field(ge=0)
    data: Data
    ingest: Ingest
    split: Split
    augment: Augment
    backbone: Backbone
    features: Features
    linear: Linear
    train: Train
    finetune: Finetune
    scratch: Scratch
    evaluate: Evaluate
    diagnose: Diagnose
    report: Report
    strategies: Strategies = Field(default_factory=Strategies)
    introspect: Introspect = Field(default_factory=Introspect)


def _format_error(err: ValidationError, source: str, raw: dict[str, Any]) -> str:
    lines = [f"{source}: invalid parameters"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            lines.append(
                f"  {key} = {e.get('input')!r}: unknown key (misspelt? see the documented keys in params.yaml)"
            )
        elif e["type"] == "missing":
            lines.append(f"  {key}: required key is missing")
        else:
            lines.append(f"  {key} = {e.get('input')!r}: {msg}")
    return "\n".join(lines)


def validate_params(raw: dict[str, Any], source: str = "params.yaml") -> Params:
    """Validate a parsed params mapping; raise :class:`ParamsError` naming every bad key."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(_format_error(err, source, raw)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file (relative paths resolve against the repository root)."""
    p = Path(path)
    if not p.is_absolute() and not p.exists():
        p = REPO_ROOT / p
    if not p.exists():
        raise ParamsError(f"{path}: file not found")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    return validate_params(raw, source=str(path))


def resolve_path(path: str | Path, root: Path = REPO_ROOT) -> Path:
    """A params path: absolute as given, else relative to the repository root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (root / p)
