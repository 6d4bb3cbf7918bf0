"""Typed contracts of every inter-stage JSON file (pydantic v2, ``extra="forbid"``).

Writers validate the document right before writing it (:func:`write_contract`), so a key no
model declares fails the tests instead of reaching a reader; readers validate with
:func:`read_contract` and use attributes. Names chosen by the user or the data (split keys
``test`` / ``external/<name>``, external set names, path names, class names) are dict keys,
never fields. A value JSON cannot hold (NaN, inf) is written as ``null``: such floats are
``float | None``.

Adding a field is one line in the model of its file. ``python -m pipeline.contracts
--markdown`` prints the schema tables that DESIGN.md carries between its contract markers
(tests/test_contracts.py checks that they agree).
"""

from __future__ import annotations

import argparse
import re
import sys
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError, model_validator

from pipeline import paths
from pipeline.common import read_json, write_json
from pipeline.errors import StageError
from pipeline.params import VARIANT_NAMES

Num = float | None  # a statistic; null where undefined (NaN on the writer's side)
SPLIT_KEY = re.compile(r"^(train|val|test|external/[a-z0-9_-]+)$")


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Empty(Contract):
    """``{}``: written where a block does not apply."""


M = TypeVar("M", bound=BaseModel)


# ------------------------------------------------------------------- data/sources.json


class SourceSet(Contract):
    """One configured data set and the DVC fingerprint of its files."""

    name: str = Field(description="`internal` or the external set's name")
    role: Literal["internal", "external"]
    dicom_dir: str
    labels_csv: str
    description: str | None
    dicom_dir_md5: str = Field(description="DVC directory hash (`.dir`)")
    n_files: int
    size_bytes: int
    labels_csv_md5: str


class Sources(Contract):
    """data/sources.json (stage `sources`)."""

    schema_version: int
    hash: str
    sets: list[SourceSet]


# ------------------------------------------------------------------- reports/ingest.json


class RejectedFile(Contract):
    file: str
    reason: str = Field(description="`<reason code>: detail`")


class IngestBlock(Contract):
    """What ingest did with one data set's folder and labels CSV."""

    dicom_dir: str
    labels_csv: str
    seen: int
    accepted: int
    rejected: int
    reasons: dict[str, int] = Field(description="rejections per reason code")
    rejected_files: list[RejectedFile]
    labels_without_file: list[str]
    excluded: list[str]
    per_class: dict[str, int]
    patients: int
    patients_missing_id: int
    labels_duplicate_rows: int
    labels_rows_without_file_name: list[int] = Field(description="1-based CSV line numbers")
    intensity: dict[str, int]
    transfer_syntaxes: dict[str, int]


class ExternalIngestBlock(IngestBlock):
    patients_also_internal: int


class IngestStore(Contract):
    rows: int
    size: int
    dtype: str


class IngestSettings(Contract):
    size: int
    fit: str
    apply_voi_lut: bool
    min_size: int
    modalities: list[str]


class IngestTiming(Contract):
    seconds: float
    files_per_s: float | None
    workers: int


class IngestReport(IngestBlock):
    """reports/ingest.json (stage `ingest`): the internal set's block at the top level."""

    external: dict[str, ExternalIngestBlock] = Field(description="by external set name")
    store: IngestStore
    settings: IngestSettings
    timing: IngestTiming


# ------------------------------------------------------------------- data/processed/{images,augmented}/store.json


class StoreShard(Contract):
    file: str = Field(description="the shard's file name inside the store folder (a plain .npy)")
    start: int = Field(ge=0, description="store row of the shard's first image")
    rows: int = Field(ge=1, description="images in the shard")


class StoreIndex(Contract):
    """data/processed/images/store.json (stage `ingest`), data/processed/augmented/store.json
    (stage `augment`): the index of an image store (pipeline/store.py), ``(N, size, size)``
    float16 in [0, 1] in shards of ``shard_rows`` images (the last may be shorter), rows in order."""

    format: Literal["npy-shards"]
    version: Literal[1]
    dtype: Literal["<f2"]
    size: int = Field(ge=1, description="image side in pixels")
    rows: int = Field(ge=0, description="images in the store (N)")
    shard_rows: int = Field(ge=1, description="images per full shard")
    shards: list[StoreShard]


# ------------------------------------------------------------------- reports/split.json


class PatientDemographics(Contract):
    """One record per patient (`pipeline.splits.patient_demographics`): sex = the most frequent
    known value of the patient's images, age = the lowest known age (earliest study)."""

    patients: int
    patients_with_label: dict[str, int] = Field(description="patients with at least one image of the label")
    sex: dict[str, int] = Field(description="patients per sex (U: unknown)")
    age_mean: Num
    age_sd: Num = Field(description="sample SD (ddof 1); null for fewer than 2 known ages")
    age_min: Num
    age_max: Num
    age_unknown: int = Field(description="patients without a known age")


class SplitStats(Contract):
    patients: int
    images: int
    labels: dict[str, int]
    sex: dict[str, int]
    view: dict[str, int]
    age_mean: Num
    age_unknown: int
    max_patient_share: Num = Field(default=None, description="images of the largest patient / images")
    max_patient_images: int | None = None
    per_patient: PatientDemographics | None = None


class SplitSettings(Contract):
    seed: int
    val_fraction: float
    test_fraction: float
    stratified_by: str
    max_patient_share: float | None = Field(default=None, description="split.max_patient_share")


class SplitChecks(Contract):
    patient_disjoint: bool
    external_patients_also_internal: int
    patients_forced_to_train: int | None = Field(default=None, description="kept in train by the share rule")
    max_patient_share: dict[str, Num] | None = None


class SplitReport(BaseModel):
    """reports/split.json (stage `split`); every other key is a split (`train`, `val`,
    `test`, `external/<name>`) holding :class:`SplitStats`."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, SplitStats] = Field(init=False)

    settings: SplitSettings
    checks: SplitChecks

    @model_validator(mode="after")
    def _split_keys(self) -> SplitReport:
        bad = [k for k in self.splits if not SPLIT_KEY.match(k)]
        if bad:
            raise ValueError(f"not a split key: {bad}")
        return self

    @property
    def splits(self) -> dict[str, SplitStats]:
        return dict(self.__pydantic_extra__ or {})


# ------------------------------------------------------------------- data/features/info.json


class Preprocessing(Contract):
    scale: float
    mean: list[float]
    std: list[float]
    in_chans: int
    grey_to_rgb: str
    description: str


class FeaturesInfo(Contract):
    """data/features/info.json (stage `features`)."""

    backbone: str
    weights_source: str
    weights_sha256: str
    num_features: int
    num_classes: int
    preprocessing: Preprocessing
    D: int = Field(description="embedding dimension")
    image_size: int
    n_images: int
    n_augmented: int
    batch_size: int
    device: str
    num_threads: int
    logits_dim: int | None = Field(
        default=None, description="ImageNet classes in logits.npy / augmented_logits.npy; null: none written"
    )
    logits_note: str | None = Field(default=None, description="why no logits were written")


# ------------------------------------------------------------------- reports/train/<method>.json


class LayerGroup(Contract):
    name: str
    lr: float
    n_params: int
    trainable: bool


class NetModelCard(Contract):
    """Model card of a trained network (finetune, scratch)."""

    path: str
    backbone: str
    weights_source: str
    weights_sha256: str | None
    trained: str
    layer_groups: list[LayerGroup]
    epochs_run: int
    best_epoch: int
    monitor: str
    device: str
    num_threads: int
    wall_time_s: float
    image_size: int
    seed: int
    grey_to_rgb: str
    preprocessing: str
    optimizer: str
    bn: Literal["adapt", "freeze"] = Field(description="BatchNorm running statistics while training")
    head_init: Literal["random", "linear_probe"]
    augment_on_the_fly: bool = Field(
        description="training batches augmented on the fly (pipeline.augment, on the training device)"
    )
    trained_params: int = Field(description="parameters of the trainable layer groups")


class EpochRecord(Contract):
    epoch: int
    train_loss: Num = Field(description="eval mode, un-augmented training images")
    train_auroc: Num = Field(description="eval mode, un-augmented training images")
    train_loss_running: Num = Field(description="train mode, augmented images, during the epoch")
    train_auroc_running: Num = Field(description="train mode, augmented images, during the epoch")
    val_loss: Num
    val_auroc: Num
    lr: dict[str, float] = Field(description="by layer group")
    seconds: float
    seconds_train_pass: float = Field(description="the optimisation pass alone (no evaluation)")


class LrTrial(Contract):
    lr: float
    val_auroc: Num
    val_loss: Num
    train_auroc: Num


class LrSearch(Contract):
    """scratch's learning rate, chosen on val by short runs over scratch.lr_grid."""

    chosen_lr: float
    grid_steps: int
    epochs_per_trial: int
    trials: list[LrTrial]


class TrainLog(Contract):
    """reports/train/<method>.json of a trained method (finetune, scratch, fine-tuning variants)."""

    model_card: NetModelCard
    history: list[EpochRecord]
    best_epoch: int
    monitor: str
    stopped_early: bool
    resumed_from_epoch: int | None
    lr_search: LrSearch | None = None


class LinearModelCard(Contract):
    """Model card of the logistic regression on frozen embeddings (linear) or on the pretrained
    network's ImageNet class scores (linear_on_logits)."""

    path: Literal["linear", "linear_on_logits"]
    backbone: str
    weights_source: str
    weights_sha256: str | None
    trained: str
    layer_groups: list[LayerGroup]
    frozen: str
    n_params_trained: int
    epochs_run: None
    best_epoch: None
    device: str
    image_size: int
    C: float
    class_weight: str | None
    n_train_images: int
    n_train_augmented: int
    n_train_patients: int
    cv_folds: int
    cv_folds_requested: int
    cv_warnings: list[str]
    C_scoring: str | None = Field(default=None, description="what C is chosen by: `neg_log_loss`")
    C_stop_reason: str | None = Field(default=None, description="why the search over C stopped where it did")
    wall_time_s: float
    seed: int


class CvRow(Contract):
    C: float
    train_auroc: Num
    cv_auroc: Num
    cv_auroc_std: Num
    train_log_loss: Num = Field(default=None, description="mean over the training folds")
    cv_log_loss: Num = Field(default=None, description="mean held-out log loss: C is chosen by this")
    cv_log_loss_std: Num = None
    extension: int | None = Field(default=None, description="0: linear.C_grid; n: the n-th decade added past an edge")


class CSearch(Contract):
    """How C was searched (pipeline.linear.search_C)."""

    scoring: str = Field(description="`neg_log_loss`: patient-grouped CV log loss")
    initial_grid: list[float] = Field(description="linear.C_grid, ascending")
    searched_grid: list[float] = Field(description="every C scored, ascending")
    extensions: int = Field(description="decades added past an edge")
    best_C: float
    stop: Literal["interior", "bound", "plateau", "single_value"] = Field(
        description="`interior`: the best C is inside the searched values; `bound`: the next decade "
        "would leave [linear.C_min, linear.C_max]; `plateau`: an extension improved the CV log loss by "
        "less than linear.extend_tol; `single_value`: one C, no search"
    )
    stop_reason: str


class LinearLog(Contract):
    """reports/train/linear.json (stage `linear`); also reports/train/linear_on_logits.json."""

    model_card: LinearModelCard
    cv: list[CvRow] = Field(description="one row per searched C (linear.C_grid and its extensions), C ascending")
    best_C: float
    C_search: CSearch | None = None
    val_auroc: Num
    train_auroc: Num


class KnnModelCard(Contract):
    """Model card of the k-nearest-neighbour classifier on frozen embeddings (variant knn)."""

    path: Literal["knn"]
    backbone: str
    weights_source: str
    weights_sha256: str | None
    trained: str
    layer_groups: list[LayerGroup]
    frozen: str
    n_params_trained: int = Field(description="0: a neighbour classifier stores its training set, it learns no weights")
    epochs_run: None
    best_epoch: None
    device: str
    image_size: int
    k: int = Field(description="neighbours, chosen by patient-grouped CV log loss from strategies.knn_k")
    weights: str = Field(description="scikit-learn KNeighborsClassifier weights")
    n_train_images: int
    n_train_augmented: int
    n_train_patients: int
    cv_folds: int
    cv_folds_requested: int
    cv_warnings: list[str]
    wall_time_s: float
    seed: int


class KnnCvRow(Contract):
    k: int
    train_auroc: Num
    cv_auroc: Num
    cv_auroc_std: Num
    train_log_loss: Num
    cv_log_loss: Num = Field(description="mean held-out log loss: k is chosen by this")
    cv_log_loss_std: Num


class KnnLog(Contract):
    """reports/train/knn.json (stage `variant@knn`)."""

    model_card: KnnModelCard
    cv: list[KnnCvRow] = Field(description="one row per k of strategies.knn_k, ascending")
    best_k: int
    val_auroc: Num
    train_auroc: Num


# ------------------------------------------------------------------- predictions/<method>.calibration.json


class SigmoidParameters(Contract):
    a: float = Field(description="slope; < 0 (increasing in the score) whenever applied")
    b: float = Field(description="intercept")


class PredictionCalibration(Contract):
    """predictions/<method>.calibration.json, written with predictions/<method>.csv by every method
    (pipeline.predictions.write_predictions): the sigmoid fitted on the validation rows."""

    method: Literal["sigmoid"]
    implementation: str = Field(description="scikit-learn version and estimator")
    score: str = Field(description="what the sigmoid is a function of (the log-odds of the raw probability)")
    formula: str
    fitted_on: Literal["val"]
    calibrated: bool = Field(description="false: prob_ columns are the raw probabilities (see note)")
    note: str | None = Field(description="why not calibrated")
    n_val_images: int
    n_val_patients: int
    val_class_counts: dict[str, int]
    parameters: dict[str, SigmoidParameters] = Field(
        description="by class: binary one entry (the second class; the first gets 1 - P), else one "
        "per class (one-vs-rest, rows renormalised); empty when val lacks a class"
    )
    val_log_loss_raw: Num
    val_log_loss_calibrated: Num = Field(description="in-sample on val; null when not calibrated")


# ------------------------------------------------------------------- reports/evaluation.json


class Proportion(Contract):
    """A proportion k/n with its Wilson interval widened by the clustering (design effect)."""

    value: Num
    ci_low: Num
    ci_high: Num
    k: int
    n: int
    n_patients: int | None = None
    design_effect: Num = None
    n_effective: Num = None
    prevalence: Num = Field(default=None, description="PPV/NPV: the prevalence they assume")
    prevalence_source: str | None = Field(default=None, description="`sample` or `evaluate.prevalence`")


class Confusion(Contract):
    tn: int
    fp: int
    fn: int
    tp: int


class AtThreshold(Contract):
    threshold: float
    n: int
    n_patients: int | None = None
    prevalence: Num = None
    prevalence_source: str | None = None
    confusion: Confusion
    sensitivity: Proportion
    specificity: Proportion
    ppv: Proportion
    npv: Proportion
    accuracy: Proportion
    balanced_accuracy: Num
    f1: Num


class OperatingPoint(Contract):
    method: str
    target_sensitivity: float | None
    chosen_on: str
    threshold: float | None
    note: str | None
    val: AtThreshold | None


class IntervalPart(Contract):
    ci_low: Num
    ci_high: Num
    p_value: Num = None


class BootstrapPart(Contract):
    ci_low: Num
    ci_high: Num
    p_value: Num
    n_boot: int
    skipped_single_class: int
    seed: int
    unit: str


class DelongAuroc(Contract):
    """The headline AUROC with its patient-level interval (or the image-level one, `unit`)."""

    value: Num
    ci_low: Num
    ci_high: Num
    se: Num
    method: str
    unit: str | None = Field(default=None, description="`patient` or `image`")
    clustered_delong: IntervalPart | None = None


class BootstrapAuroc(Contract):
    value: Num
    ci_low: Num
    ci_high: Num
    unit: str
    n_groups: int
    n_boot_requested: int
    n_boot: int
    skipped_single_class: int
    seed: int


class ClassAuroc(Contract):
    n_positive: int
    auroc: Num
    ci_low: Num
    ci_high: Num
    se: Num
    average_precision: Num


class CalibrationBin(Contract):
    bin: int
    lower: float
    upper: float
    count: int
    mean_predicted: Num
    fraction_positive: Num


class Calibration(Contract):
    kind: Literal["binary", "top_label"]
    brier: Num
    ece: Num
    n_bins: int
    bins: list[CalibrationBin]


class RocCurve(Contract):
    class_: str = Field(alias="class")
    fpr: list[float]
    tpr: list[float]
    threshold: list[Num]


class PrCurve(Contract):
    class_: str = Field(alias="class")
    recall: list[float]
    precision: list[float]


class Curves(Contract):
    roc: list[RocCurve]
    pr: list[PrCurve]


class Subgroup(Contract):
    attribute: str
    group: str
    n: int
    n_patients: int
    n_positive: int | None
    auroc: Num
    ci_low: Num
    ci_high: Num
    auroc_patient_weighted: Num = None
    flagged: bool
    flags: list[str]


class SplitResult(Contract):
    """One path on one split."""

    n: int
    n_patients: int
    class_counts: dict[str, int]
    n_positive: int | None
    largest_patient_share: Num = Field(default=None, description="images of the largest patient / n")
    auroc: DelongAuroc
    auroc_image: DelongAuroc | None = Field(default=None, description="image-level DeLong, for reference")
    auroc_patient_weighted: Num = Field(default=None, description="each patient's images weigh 1/n")
    auroc_bootstrap: BootstrapAuroc
    per_class: dict[str, ClassAuroc] | None = Field(description="more than 2 classes only")
    at_threshold: AtThreshold | None
    average_precision: Num = None
    calibration: Calibration
    curves: Curves
    subgroups: list[Subgroup]


class ValidationResult(Contract):
    """One method's headline AUROC on the validation split (where choices are made)."""

    n: int
    n_patients: int
    auroc: DelongAuroc


class RawSpread(Contract):
    """Quartiles, IQR and range of a method's raw probability of one class on one split."""

    class_: str = Field(alias="class", description="the positive class (else the class with the widest IQR)")
    n: int
    min: Num
    q25: Num
    median: Num
    q75: Num
    max: Num
    iqr: Num
    range: Num


class FitCheck(Contract):
    """Did the method fit its training data; are its outputs near-constant (pipeline.fit_checks)."""

    train_auroc: Num = Field(description="headline AUROC of the raw probabilities on the train images")
    n_train: int
    fitted: bool | None = Field(description="train_auroc >= evaluate.fitted_train_auroc; null if undefined")
    raw_spread: dict[str, RawSpread] = Field(description="`val`, `test`")
    near_constant: bool | None = Field(description="raw IQR < evaluate.near_constant_iqr on val or test")
    near_constant_splits: list[str]


class PathResult(Contract):
    operating_point: OperatingPoint | None
    validation: ValidationResult | None = Field(default=None, description="null without validation rows")
    fit: FitCheck | None = None
    val_calibration: PredictionCalibration | None = Field(
        default=None, description="predictions/<method>.calibration.json: the sigmoid behind prob_"
    )
    splits: dict[str, SplitResult] = Field(description="by split key")


class Comparison(Contract):
    """Paired DeLong test of two paths on the same images."""

    path_a: str
    path_b: str
    n: int
    n_patients: int | None = None
    auroc_a: Num
    auroc_b: Num
    difference: Num
    ci_low: Num
    ci_high: Num
    p_value: Num
    method: str
    unit: str | None = None
    verdict: str | None = Field(default=None, description="`higher`, `lower` or `not separated`")
    clustered_delong: IntervalPart | None = None
    bootstrap: BootstrapPart | None = None


class EvaluationSettings(Contract):
    operating_point: str
    target_sensitivity: float
    calibration_bins: int
    bootstrap_samples: int
    min_subgroup_size: int
    min_subgroup_patients: int | None = None
    prevalence: Num = None
    age_bands: list[float]
    near_constant_iqr: float | None = None
    fitted_train_auroc: float | None = None


class Evaluation(Contract):
    """reports/evaluation.json (stage `evaluate`)."""

    schema_version: int
    classes: list[str]
    positive_class: str | None
    task: Literal["binary", "multiclass"]
    alpha: float
    seed: int
    unit_of_uncertainty: str | None = Field(default=None, description="`patient`")
    settings: EvaluationSettings
    definitions: dict[str, str]
    splits: list[str] = Field(description="evaluated split keys: `test`, `external/<name>`")
    paths: list[str]
    notes: list[str]
    results: dict[str, PathResult] = Field(description="by path")
    comparisons: dict[str, list[Comparison]] = Field(
        description="by split key: `val` (what choices rest on), then each of `splits`; every pair of methods"
    )


# ------------------------------------------------------------------- reports/metrics.json


class SplitMetrics(BaseModel):
    """The flat numbers `dvc metrics` shows for one path on one split; with more than two
    classes also one `auroc_<class>` per class."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, Num] = Field(init=False)

    auroc: Num
    auroc_ci_low: Num = Field(description="patient-level 95% CI")
    auroc_ci_high: Num
    auroc_image_ci_low: Num = Field(default=None, description="image-level DeLong (images independent)")
    auroc_image_ci_high: Num = None
    auroc_patient_weighted: Num = None
    auroc_boot_ci_low: Num
    auroc_boot_ci_high: Num
    average_precision: Num
    sensitivity: Num
    specificity: Num
    ppv: Num
    npv: Num
    balanced_accuracy: Num
    brier: Num
    ece: Num
    threshold: Num
    prevalence: Num = None
    n: int
    n_patients: int | None = None
    n_positive: int | None

    @model_validator(mode="after")
    def _class_keys(self) -> SplitMetrics:
        bad = [k for k in self.__pydantic_extra__ or {} if not k.startswith("auroc_")]
        if bad:
            raise ValueError(f"undeclared metric keys: {bad}")
        return self


class Metrics(RootModel[dict[str, dict[str, SplitMetrics]]]):
    """reports/metrics.json (stage `evaluate`): path -> split key -> numbers."""


# ------------------------------------------------------------------- reports/diagnostics.json


class Rules(Contract):
    overfit_k: int
    gap_mild: float
    gap_severe: float
    noninferiority_margin: float | None = None
    chance_margin: float | None = None


class Verdict(Contract):
    level: Literal["no", "mild", "severe", "unknown"]
    gap: Num
    onset: bool
    val_decline: bool | None = Field(default=None, description="val AUROC fell from its peak by > gap_mild")
    near_chance: bool | None = None
    text: str


class ValDecline(Contract):
    peak_epoch: int
    peak_val_auroc: Num
    last_val_auroc: Num
    drop: Num
    train_auroc_change: Num


class PairedDifference(Contract):
    difference: Num
    ci_low: Num
    ci_high: Num
    p_value: Num
    method: str


class Gaps(Contract):
    epoch: int
    train_auroc: Num
    val_auroc: Num
    auroc_gap: Num
    train_loss: Num
    val_loss: Num
    loss_gap: Num


class Onset(Contract):
    epoch: int
    rise_after_epoch: int


class Convergence(Contract):
    epochs: int
    epoch: int
    threshold: Num
    seconds: Num


class EpochCurves(Contract):
    train_loss: list[Num]
    val_loss: list[Num]
    train_auroc: list[Num]
    val_auroc: list[Num]


class EpochDiagnostics(Contract):
    """A path trained in epochs (finetune, scratch)."""

    epochs: list[int]
    curves: EpochCurves
    epochs_run: int
    best_epoch: int
    at_best: Gaps
    at_last: Gaps
    overfit_onset: Onset | None
    start_val_auroc: Num
    best_val_auroc: Num
    convergence: Convergence | None
    near_chance: bool | None = None
    val_decline: ValDecline | None = None
    wall_time_s: Num
    verdict: Verdict


class CRow(Contract):
    C: float
    train_auroc: Num
    cv_auroc: Num
    cv_auroc_std: Num
    gap: Num


class LinearDiagnostics(Contract):
    curve: list[CRow]
    best_C: float
    at_best: CRow
    near_chance: bool | None = None
    verdict: Verdict


class TestAuroc(Contract):
    auroc: Num
    ci_low: Num
    ci_high: Num


class TrifectaPath(Contract):
    start_val_auroc: Num
    convergence_epochs: int | None
    convergence_seconds: Num
    best_val_auroc: Num
    test: TestAuroc | None
    best_cv_auroc: Num = Field(None, description="linear only")
    note: str | None = Field(None, description="linear only")


class FinetuneVsScratch(Contract):
    start_val_auroc_diff: Num
    convergence_epochs_saved: int | None
    best_val_auroc_diff: Num
    test_auroc_diff: Num
    test_ci_overlap: bool | None
    higher_start: bool | None
    faster_convergence: bool | None
    higher_asymptote: bool | None
    test_paired: PairedDifference | None = None
    higher_start_claim: str | None = None
    faster_convergence_claim: str | None = None
    higher_asymptote_claim: str | None = Field(default=None, description="yes / no / not separated")
    near_chance: list[str] | None = None


class Trifecta(Contract):
    paths: dict[str, TrifectaPath]
    finetune_vs_scratch: FinetuneVsScratch | Empty


class LearningPoint(Contract):
    path: str
    fraction: float
    repeat: int
    seed: int
    n_patients: int
    n_positive_patients: int
    n_images: int
    test_auroc: Num
    ci_low: Num
    ci_high: Num
    seconds: Num
    reused_main_run: bool
    best_C: float | None = Field(None, description="linear only")
    best_epoch: int | None = Field(None, description="finetune, scratch only")
    epochs_run: int | None = Field(None, description="finetune, scratch only")


class LearningSummary(Contract):
    path: str
    fraction: float
    n_patients: int
    n_images: int
    repeats: int
    test_auroc: Num
    ci_low: Num
    ci_high: Num
    reused_main_run: bool


class CatchUp(Contract):
    challenger: str
    reference: str
    margin: float | None = None
    per_size: list[dict[str, float | int | bool | str | None]] = Field(
        description="fraction, n_patients, `<challenger>_auroc`, `<reference>_auroc`, `<reference>_ci_low`, caught_up"
    )
    from_patients: int | None
    text: str


class LearningCurve(Contract):
    fractions: list[float]
    repeats: int
    epochs: int | None
    unit: str
    evaluated_on: str
    reuse: str
    points: list[LearningPoint]
    summary: list[LearningSummary]
    scratch_catch_up: dict[str, CatchUp] = Field(description="by reference path")
    comparison_method: str | None = None
    pairs: list[dict[str, float | int | str | None]] | None = Field(
        default=None,
        description="challenger, reference, fraction, repeat, n_patients, difference, ci_low, ci_high, p_value",
    )
    pair_summary: list[dict[str, float | int | str | None]] | None = None
    n_training_patients_total: int
    n_test_images: int


class Diagnostics(Contract):
    """reports/diagnostics.json (stage `diagnose`)."""

    rules: Rules
    definitions: dict[str, str]
    paths: dict[str, Annotated[EpochDiagnostics | LinearDiagnostics, Field(union_mode="left_to_right")]]
    verdicts: dict[str, Verdict] = Field(description="by path")
    trifecta: Trifecta
    learning_curve: LearningCurve | None
    figures: dict[str, str] = Field(description="figure key -> path under the project root")
    wall_time_s: float


# ------------------------------------------------------------------- reports/recommendation.json


class RecAuroc(Contract):
    """A method's validation AUROC with its patient-level interval (evaluation.json)."""

    value: Num
    ci_low: Num
    ci_high: Num
    n: int | None
    n_patients: int | None


class RecOverfitting(Contract):
    level: str | None
    text: str | None


class RecCost(Contract):
    trained_parameters: int | None = Field(description="model card: n_params_trained, or trainable layer_groups")
    train_wall_time_s: Num = Field(description="model card wall_time_s")


class RecMethod(Contract):
    """One evaluated method: may it be ranked, and the evidence about it."""

    eligible: bool
    flags: list[str] = Field(description="why it is not ranked (empty when eligible)")
    unchecked: list[str] = Field(description="eligibility checks that could not be made, and why")
    source: str = Field(description="where the fit checks came from (evaluation.json fit block, or derived)")
    val_auroc: RecAuroc | None
    rank: int | None = Field(description="1 = highest val AUROC among eligible methods; null when not ranked")
    overfitting: RecOverfitting | None = Field(description="diagnostics.json verdict; null when not diagnosed")
    cost: RecCost


class RecDifference(Contract):
    """Paired patient-level AUROC difference (recommended - other) on one split."""

    difference: Num
    ci_low: Num
    ci_high: Num
    p_value: Num
    n: int | None
    n_patients: int | None
    verdict: str = Field(description="`<recommended> higher`, `<other> higher`, `not separated` or `undefined`")


class GapPoint(Contract):
    fraction: float
    n_patients: int
    gap: Num = Field(description="method - scratch, test AUROC, paired")
    ci_low: Num
    ci_high: Num
    verdict: str


class TransferGap(Contract):
    """A pretrained method's AUROC minus scratch's across training-set sizes (learning curve)."""

    method: str
    baseline: str
    points: list[GapPoint] = Field(description="by training patients, ascending")
    change: Num = Field(description="gap at the largest size - gap at the smallest (point estimates)")
    separated_at: list[int] = Field(description="training patients at which the gap's CI excludes 0")
    text: str


class Recommendation(Contract):
    """reports/recommendation.json (stage `recommend`): the method this data set rewards,
    chosen on validation only; test/external differences are evidence."""

    schema_version: int
    selection_split: Literal["val"]
    rule: str
    tie_break: str
    recommended: str | None = Field(description="null when no method is eligible")
    runner_up: str | None = Field(description="highest val AUROC among the other eligible methods")
    decided_by: Literal["val_auroc", "cost", "only_eligible", "none"] = Field(
        description="`cost`: no significant difference on val, the cheaper method chosen"
    )
    best_on_val: str | None = Field(description="highest val AUROC among eligible methods")
    tied_with: list[str] = Field(description="eligible methods not separated from best_on_val on val")
    ranking: list[str] = Field(description="eligible methods by val AUROC, best first")
    methods: dict[str, RecMethod] = Field(description="by method")
    versus_runner_up: dict[str, RecDifference | None] = Field(
        description="by split key: `val`, `test`, `external/<name>`"
    )
    differences: dict[str, dict[str, RecDifference]] = Field(
        description="split key -> other method -> recommended - other"
    )
    transfer_gap: dict[str, TransferGap] | None = Field(
        description="by pretrained method; null without a learning curve"
    )
    limits: list[str]
    notes: list[str]
    text: str = Field(description="the recommendation in plain words")


# ------------------------------------------------------------------- reports/introspection/introspection.json


class ArchitectureGroup(Contract):
    index: int
    name: str
    output_shape: list[int] = Field(description="(1, C, h, w) of the group's output (torchinfo)")
    n_params: int
    mult_adds: int


class Architecture(Contract):
    backbone: str
    input_shape: list[int]
    groups: list[ArchitectureGroup] = Field(description="layer groups in forward order, the head last")
    total_params: int
    total_mult_adds: int
    summary_library: str


class PlanGroup(Contract):
    group: str
    trains: bool
    lr: float | None = Field(description="null when frozen, or when the rate is chosen during training")


class TrainingPlan(Contract):
    groups: list[PlanGroup]
    note: str


class IntrospectionWeights(Contract):
    before: str = Field(description="the pretrained weights")
    after: str = Field(description="the fine-tuned checkpoint")


class FirstLayer(Contract):
    shape: list[int]
    relative_change: Num = Field(description="||after - before|| / ||before|| of the first convolution")
    figure: str


class FeatureMaps(Contract):
    row: int = Field(description="manifest row of the radiograph shown")
    groups: list[str]
    channels: int
    figure: str


class UnitState(Contract):
    """One unit under one network (`before` = pretrained, `after` = fine-tuned)."""

    top_rows: list[int] = Field(description="manifest rows of the most activating training radiographs")
    top_activations: list[float]
    actmax_start: float = Field(description="mean activation on the starting grey image")
    actmax_final: float = Field(description="... on the activation-maximisation image")
    reconstruction_row: int = Field(description="manifest row of the guided-backprop radiograph")
    mean_activation: float = Field(description="over the train split")


class Unit(Contract):
    group: str
    channel: int
    before: UnitState
    after: UnitState


class Units(Contract):
    selection: str
    reconstruction: str
    groups: dict[str, list[Unit]] = Field(description="by layer group")
    figures: dict[str, str] = Field(description="layer group -> PNG under the project root")


class Introspection(Contract):
    """reports/introspection/introspection.json (stage `introspect`)."""

    backbone: str
    weights_source: IntrospectionWeights
    image_size: int
    n_train: int
    architecture: Architecture
    training: dict[str, TrainingPlan] = Field(description="by method")
    first_layer: FirstLayer
    feature_maps: FeatureMaps
    units: Units
    wall_time_s: float
    timing_s: dict[str, float]


# ------------------------------------------------------------------- reports/transferability.json


class CandidateScore(Contract):
    name: str = Field(description="backbone registry name")
    status: Literal["scored", "skipped"]
    reason: str | None = Field(description="why it was skipped")
    score: Num = Field(description="LogME (higher: the features fit the labels better)")
    feature_dim: int | None
    n_train: int | None
    seconds: Num = Field(description="embedding (when done here) + LogME")
    embed_seconds: Num = Field(description="null: features reused from the features stage")
    logme_seconds: Num
    features_from: str | None
    weights_source: str | None


class RankedCandidate(Contract):
    rank: int
    name: str
    score: float


class RankCorrelation(Contract):
    candidates: list[str] = Field(description="scored candidates with a linear val AUROC")
    val_auroc: dict[str, float] = Field(description="by candidate")
    rho: Num = Field(description="Spearman; null when it cannot be computed (`note` says why)")
    p_value: Num
    note: str


class Transferability(Contract):
    """reports/transferability.json (stage `transferability`)."""

    method: str
    split: str
    n_train: int
    image_size: int
    candidates: list[CandidateScore] = Field(description="in strategies.candidates order")
    ranking: list[RankedCandidate] = Field(description="scored candidates, best first")
    correlation_with_val_auroc: RankCorrelation
    wall_time_s: float


# ------------------------------------------------------------------- registry and I/O


#: Each inter-stage file and its model. Train logs: one entry per method.
def train_log_model(method: str) -> type[LinearLog] | type[KnnLog] | type[TrainLog]:
    """The contract of reports/train/<method>.json."""
    if method in ("linear", "linear_on_logits"):
        return LinearLog
    return KnnLog if method == "knn" else TrainLog


FILES: dict[str, type[BaseModel]] = {
    "data/sources.json": Sources,
    str(paths.INGEST_REPORT): IngestReport,
    str(paths.STORE / "store.json"): StoreIndex,
    str(paths.AUGMENTED_STORE / "store.json"): StoreIndex,
    str(paths.SPLIT_REPORT): SplitReport,
    str(paths.FEATURES_INFO): FeaturesInfo,
    str(paths.train_log("linear")): LinearLog,
    str(paths.train_log("finetune")): TrainLog,
    str(paths.train_log("scratch")): TrainLog,
    **{str(paths.train_log(v)): train_log_model(v) for v in VARIANT_NAMES},
    **{str(paths.calibration_json(m)): PredictionCalibration for m in paths.PATHS},
    str(paths.EVALUATION): Evaluation,
    str(paths.METRICS): Metrics,
    str(paths.DIAGNOSTICS): Diagnostics,
    str(paths.RECOMMENDATION): Recommendation,
    str(paths.INTROSPECTION): Introspection,
    str(paths.TRANSFERABILITY): Transferability,
}


def check(model: type[BaseModel], doc: Any) -> Any:
    """Validate ``doc`` against ``model`` and return ``doc`` unchanged (raises ValidationError)."""
    model.model_validate(doc)
    return doc


def write_contract(path: str | Path, model: type[BaseModel], doc: Any) -> Path:
    """Validate, then write ``doc`` as it is (key order and bytes unchanged) with write_json."""
    return write_json(path, check(model, doc))


class ContractError(StageError, ValueError):
    """An inter-stage file that is not valid JSON or does not match its contract."""


def read_contract(path: str | Path, model: type[M]) -> M:
    """Read a JSON file and validate it against ``model``; :class:`ContractError` if it does not
    parse or match (the message names the file and the first offending keys)."""
    try:
        return model.model_validate(read_json(path))
    except ValidationError as err:
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()[:3])
        raise ContractError(
            f"{path} does not match {model.__name__} ({where}); rerun the stage that writes it"
        ) from None
    except ValueError as err:
        raise ContractError(f"{path} is not valid JSON ({err})") from None


# ------------------------------------------------------------------- markdown tables


def _type_name(t: Any) -> str:
    origin = typing.get_origin(t)
    args = typing.get_args(t)
    if t is type(None):
        return "null"
    if origin is Annotated:
        return _type_name(args[0])
    if origin in (Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in args)
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin is list:
        return f"list[{_type_name(args[0])}]"
    if origin is dict:
        return f"{{{_type_name(args[0])}: {_type_name(args[1])}}}"
    if isinstance(t, type) and issubclass(t, BaseModel):
        return t.__name__
    return getattr(t, "__name__", str(t))


def _nested(t: Any) -> list[type[BaseModel]]:
    if isinstance(t, type) and issubclass(t, BaseModel):
        return [t]
    return [m for a in typing.get_args(t) for m in _nested(a)]


def _models(root: type[BaseModel]) -> list[type[BaseModel]]:
    """``root`` and every model it contains, depth first, each once."""
    out: list[type[BaseModel]] = []

    def visit(m: type[BaseModel]) -> None:
        if m in out:
            return
        out.append(m)
        if issubclass(m, RootModel):
            for n in _nested(m.model_fields["root"].annotation):
                visit(n)
            return
        extra = typing.get_type_hints(m).get("__pydantic_extra__") if m.model_config.get("extra") == "allow" else None
        for f in m.model_fields.values():
            for n in _nested(f.annotation):
                visit(n)
        for n in _nested(extra):
            visit(n)

    visit(root)
    return out


def _table(m: type[BaseModel]) -> list[str]:
    doc = " ".join((m.__doc__ or "").split()) if m.__doc__ != BaseModel.__doc__ else ""
    lines = [f"**{m.__name__}**" + (f": {doc}" if doc else ""), ""]
    if issubclass(m, RootModel):
        lines += [f"`{_type_name(m.model_fields['root'].annotation)}`", ""]
        return lines
    lines += ["| key | type | notes |", "|---|---|---|"]
    for name, f in m.model_fields.items():
        key = f.alias or name
        opt = "" if f.is_required() else " (optional)"
        lines.append(f"| `{key}` | {_type_name(f.annotation)} | {(f.description or '') + opt} |")
    if m.model_config.get("extra") == "allow":
        extra = typing.get_type_hints(m)["__pydantic_extra__"]
        lines.append(f"| *other keys* | {_type_name(typing.get_args(extra)[1])} | see above |")
    return lines + [""]


def markdown() -> str:
    """One section per file: its model's table, then the table of every model it nests."""
    out: list[str] = []
    seen: set[type[BaseModel]] = set()
    for model in FILES.values():
        files = [f for f, m in FILES.items() if m is model]
        if model in seen:
            continue
        out += [f"#### {', '.join(f'`{f}`' for f in files)}", ""]
        for m in _models(model):
            if m in seen:
                continue
            seen.add(m)
            out += _table(m)
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown", action="store_true", help="print the schema tables (DESIGN.md)")
    ap.add_argument(
        "--check", nargs="*", metavar="FILE", help="validate these inter-stage files (default: every one present)"
    )
    a = ap.parse_args(argv)
    if a.markdown:
        sys.stdout.write(markdown())
        return 0
    files = a.check or [f for f in FILES if Path(f).exists()]
    for f in files:
        model = FILES[Path(f).as_posix()]
        read_contract(f, model)
        print(f"{f}: valid {model.__name__}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
