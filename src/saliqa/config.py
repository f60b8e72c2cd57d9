"""The run configuration: pydantic models read from TOML, validated before any work starts.

Every field has a default, and the defaults are the embedded demo, so ``saliqa run`` with no config file
runs the whole pipeline offline. Later stages add their own sections here.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import tomli_w
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from saliqa.errors import ConfigError
from saliqa.iqa.categories import CATEGORIES

if TYPE_CHECKING:
    from saliqa.iqa.nss import SlidingMap


def _check_device(value: str) -> str:
    if value not in ("auto", "cpu", "cuda") and not (value.startswith("cuda:") and value[5:].isdigit()):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, not {value!r}")
    return value


Device = Annotated[str, AfterValidator(_check_device)]
"""``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``."""


RUNTIME: dict[str, Any] = {"runtime": True}
"""Marks a setting that changes no number, only speed, memory or what is shown (``Field(...,
json_schema_extra=RUNTIME)``): such settings are left out of the sections' fingerprints, so changing one
reruns nothing. This is the one place that says which settings they are. Two of them can move numbers on
some machines, and enter a result's identity there through the models that run: a device's kind, and
evaluate's ``precision`` where it applies (CUDA)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def runtime_settings(section: type[BaseModel]) -> tuple[str, ...]:
    """The fields of a config section marked :data:`RUNTIME`."""
    return tuple(
        name
        for name, info in section.model_fields.items()
        if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("runtime")
    )


def result_settings(section: BaseModel) -> dict[str, Any]:
    """A section's settings that can change a result: its values without the :data:`RUNTIME` ones."""
    skip = runtime_settings(type(section))
    return {k: v for k, v in config_to_dict(section).items() if k not in skip}


class DataConfig(_Section):
    """Which images to use."""

    source: Literal["demo", "folder", "mit67", "manifest", "imagenet-val"] = "demo"
    """``demo``: the embedded demo, built in the run directory; ``folder``: ROOT/<class>/<image>;
    ``mit67``: MIT Indoor 67 (ROOT/Images/<class>/..., optional TrainImages.txt/TestImages.txt);
    ``manifest``: a CSV with ``path,label[,split]``; ``imagenet-val``: the ILSVRC2012 validation images, in
    WNID class folders or flat with the devkit (extracted or its .tar.gz) or Kaggle's LOC_val_solution.csv in
    ROOT or its parent (labels are WNIDs; :mod:`saliqa.data.imagenet`)."""
    root: Path | None = None
    """Dataset folder (or the CSV file for ``manifest``); required unless ``source = "demo"``, or ``mit67``
    downloaded into the data cache (``saliqa data download mit67``)."""
    listed_only: bool = False
    """MIT Indoor 67 only: use just the files named in TrainImages.txt/TestImages.txt."""
    demo_views_per_class: int = Field(24, ge=2, le=1000)
    """Demo only: views cut from each bundled photo."""

    @model_validator(mode="after")
    def _root_needed(self) -> DataConfig:
        """A dataset of the download catalog (``mit67``) may leave ``root`` out: it is then read from the data
        cache (``saliqa data download mit67``), looked up when the run opens its sources, not here."""
        from saliqa.data.catalog import CATALOG

        if self.source != "demo" and self.root is None and self.source not in CATALOG:
            raise ValueError(f"root is required when source = {self.source!r}")
        return self


class ImagesConfig(_Section):
    """How files are decoded; see :mod:`saliqa.images`."""

    max_pixels: int = Field(150_000_000, gt=0)
    oversize: Literal["reject", "downscale"] = "reject"
    min_side: int = Field(32, ge=1)

    @model_validator(mode="after")
    def _some_image_fits(self) -> ImagesConfig:
        if self.max_pixels < self.min_side**2:
            raise ValueError(
                f"max_pixels={self.max_pixels} is below min_side**2={self.min_side**2}: no image fits"
            )
        return self


class RateConfig(_Section):
    """Stage rate: the quality judge and how the work is cut."""

    iqa: str = "piqe"
    device: Device = Field("auto", json_schema_extra=RUNTIME)
    """Where the judge runs (its numbers agree across devices to their float precision)."""
    batch_size: int = Field(16, ge=1, json_schema_extra=RUNTIME)
    """Images of equal size rated in one call (a model rates each image of a batch as alone: tested)."""
    shard_size: int = Field(256, ge=1, json_schema_extra=RUNTIME)
    """Images per resumable unit of work."""
    workers: int = Field(2, ge=0, json_schema_extra=RUNTIME)
    """Decoding threads (0 = decode in the main thread)."""

    @field_validator("iqa")
    @classmethod
    def _known_model(cls, value: str) -> str:
        """Quality models this version can run; others fail here, never silently fall back. ``paq2piq:<path>`` is
        PaQ-2-PiQ with trained weights (``saliqa iqa train``); the file itself is checked before the rate stage."""
        from saliqa.iqa.registry import is_quality_model_name, quality_model_names

        if not is_quality_model_name(value):
            raise ValueError(
                f"unknown quality model {value!r}; choose one of {', '.join(quality_model_names())}, or "
                f"paq2piq:<path to a weights file> for a trained PaQ-2-PiQ"
            )
        return value


class SplitConfig(_Section):
    """Stage split: which categories to keep and how to divide them."""

    keep: tuple[Literal["Bad", "Poor", "Fair", "Good", "Excellent"], ...] = ("Good", "Excellent")
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    min_per_class: int = Field(2, ge=2)
    """A class with fewer kept images is left out of the split, with a message saying so."""

    @field_validator("keep")
    @classmethod
    def _non_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError(f"keep at least one of {', '.join(CATEGORIES)}")
        return tuple(c for c in CATEGORIES if c in value)


class TrainConfig(_Section):
    """Stage train: the classifier of the study, trained on the train split.

    The defaults train ``p2p-resnet18`` from a seeded random initialisation, sized for the demo on a CPU;
    for MIT Indoor 67 set ``pretrained = "imagenet"`` and more epochs.
    """

    arch: str = "p2p-resnet18"
    """``p2p-resnet18`` (ResNet-18 body, PaQ-2-PiQ's RoIPool head), ``resnet18``, ``resnet50``, ``timm:<name>``."""
    pretrained: str = "random"
    """``random`` (seeded), ``imagenet`` (torchvision's weights, downloaded once into the torch hub cache) or
    the path of a checkpoint in torchvision's ResNet format (its body is loaded, the head initialised)."""
    epochs: int = Field(12, ge=1)
    batch_size: int = Field(16, ge=2)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    """Peak learning rate."""
    momentum: float = Field(0.9, ge=0, lt=1)
    """SGD momentum (AdamW: beta1)."""
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["cosine", "onecycle", "step", "constant"] = "cosine"
    """Per-step schedule; ``cosine`` decays to 0 after ``warmup_epochs`` of linear warm-up (also used by
    ``step`` and ``constant``); ``onecycle`` has its own warm-up and ignores ``warmup_epochs``."""
    warmup_epochs: float = Field(1.0, ge=0)
    step_epochs: int = Field(10, ge=1)
    """``step`` only: multiply the rate by ``step_gamma`` every this many epochs."""
    step_gamma: float = Field(0.1, gt=0, le=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    image_size: int = Field(224, ge=32)
    device: Device = Field("auto", json_schema_extra=RUNTIME)
    """Where to train; the device's kind (CPU or CUDA) is part of the training's identity, its index is not."""
    workers: int = Field(2, ge=0, json_schema_extra=RUNTIME)
    """Data-loading processes (0 = load in the main process); every random draw is keyed by image."""
    amp: bool = True
    """Mixed precision (float16 autocast and gradient scaling) on CUDA; CPU always trains in float32."""
    trust_checkpoint: bool = Field(False, json_schema_extra=RUNTIME)
    """Read ``pretrained`` with torch's full unpickler, which runs any code the file names: only for a file
    from a source you trust. Off, saliqa reads weights-only files and refuses the rest, saying why."""

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, value: str) -> str:
        from saliqa.classify.models import classifier_names

        if value not in classifier_names() and not (value.startswith("timm:") and len(value) > 5):
            raise ValueError(
                f"unknown classifier {value!r}; choose one of {', '.join(classifier_names())} or timm:<name>"
            )
        return value

    @field_validator("pretrained")
    @classmethod
    def _pretrained_value(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("pretrained must be random, imagenet or a checkpoint path")
        return value


class ModelConfig(_Section):
    """A classifier evaluated as it is, instead of one trained by the run: the train stage then only fetches
    and records it ("skipped: evaluating <model>"), and the split puts every kept image in ``val``.

    Exactly one of ``name`` and ``checkpoint``. Dataset labels are matched to the model's classes by name
    (ImageNet models' classes are WNIDs, in torchvision's order), and a label the model lacks is an error."""

    name: str | None = None
    """Published weights by name: ``torchvision:resnet50.IMAGENET1K_V2`` (any torchvision classification
    weights on ImageNet-1k, fetched once into torch's hub cache) or ``timm:<model>.<tag>`` (fetched by timm
    from the Hugging Face hub, or read from ``weights``)."""
    weights: Path | None = None
    """``timm:`` only: a local file of the named model's weights, instead of timm's download."""
    checkpoint: Path | None = None
    """A saliqa checkpoint (``runs/x/model/best.pt``: its architecture and classes inside), or a plain state
    dict of ``arch`` with ``classes``."""
    arch: str | None = None
    """For a plain state dict: its architecture (``resnet18``, ``resnet50``, ``p2p-resnet18``,
    ``torchvision:<builder>``, ``timm:<name>``)."""
    classes: Path | None = None
    """For a plain state dict: a text file of class names, one per line, in the order of its outputs."""
    transforms: Literal["published", "study"] = "published"
    """``published``: resize the short side as the weights were evaluated (e.g. 232 then crop 224 for
    IMAGENET1K_V2), then distort, then centre-crop; ``study``: no resize, the crop of ``evaluate.crop`` (as
    for a trained model). A checkpoint has no published transforms and always follows the study."""
    trust_checkpoint: bool = Field(False, json_schema_extra=RUNTIME)
    """Read ``checkpoint`` with torch's full unpickler, which runs any code the file names: only for a file
    from a source you trust. Off, only weights-only files are read."""

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if (self.name is None) == (self.checkpoint is None):
            raise ValueError("give exactly one of name (published weights) and checkpoint (a file)")
        if self.name is not None:
            kind, _, rest = self.name.partition(":")
            if kind not in ("torchvision", "timm") or not rest:
                raise ValueError(
                    f"name {self.name!r}: write torchvision:<builder>.<WEIGHTS> or timm:<model>[.<tag>]"
                )
            if self.arch is not None or self.classes is not None:
                raise ValueError("arch and classes go with a checkpoint; a named model brings its own")
        if self.weights is not None and not (self.name or "").startswith("timm:"):
            raise ValueError("weights is for a timm: model; torchvision weights are fetched by name")
        if (self.arch is None) != (self.classes is None):
            raise ValueError("a plain state dict needs both arch and classes")
        return self


class EvalSetConfig(_Section):
    """An extra evaluation set (e.g. a dataset's official test folder), evaluated beside the validation split."""

    name: str
    source: Literal["folder", "mit67", "manifest", "imagenet-val"] = "folder"
    """As :attr:`DataConfig.source`, without ``demo``: ``imagenet-val`` evaluates on ImageNet's validation set."""
    root: Path | None = Field(None, validate_default=True)
    """Required, except for a dataset of the download catalog (``mit67``): then read from the data cache."""
    listed_only: bool = False

    @field_validator("root")
    @classmethod
    def _root_needed(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        from saliqa.data.catalog import CATALOG

        source = info.data.get("source")
        if value is None and source is not None and source not in CATALOG:
            raise ValueError(f"root is required when source = {source!r}")
        return value

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if value == "val" or not value or not all(c.isalnum() or c in "-_" for c in value):
            raise ValueError(f"set name {value!r}: use letters, digits, - or _, and not 'val'")
        return value


class EvaluateConfig(_Section):
    """Stage evaluate: each evaluation image x condition, distorted at full size, then centre-cropped."""

    corruptions: tuple[str, ...] = ("brightness", "contrast", "saturate", "jpeg_compression")
    severities: tuple[int, ...] = (1, 2)
    """The report's protocol: the four corruptions above at severities 1 and 2 (plus the clean image).

    ``corruptions`` also takes "all" (the 19), "common" (ImageNet-C's 15), "extra" (its 4 validation ones) or a
    family name, alone or inside the list."""
    crop: int = Field(224, ge=32)
    checkpoint: Literal["best", "last"] = "best"
    batch_size: int = Field(64, ge=1)
    """Crops per forward pass of the classifier and the quality model."""
    shard_size: int = Field(128, ge=1, json_schema_extra=RUNTIME)
    """Images per resumable unit of work."""
    workers: int = Field(2, ge=0, json_schema_extra=RUNTIME)
    """Processes that decode and distort ahead of the models (0 = in the main process)."""
    device: Device = Field("auto", json_schema_extra=RUNTIME)
    """Where the models run; the device's kind is part of the results' identity, its index is not."""
    distort_on: Literal["workers", "device"] = "workers"
    """Where the corruptions run: in the loader workers on the CPU, or batched on ``device`` in the main
    process (the fast path on a GPU box; on CUDA a few pixel values may land one level from the CPU's)."""
    precision: Literal["float32", "mixed"] = Field("float32", json_schema_extra=RUNTIME)
    """``mixed``: on CUDA, the classifier and PaQ-2-PiQ's body run channels-last under float16 autocast
    (PaQ-2-PiQ's head and the softmax in float32; :mod:`saliqa.precision`); elsewhere, and for NIQE, BRISQUE
    and PIQE, float32 as always. Where it applies it is part of the results' identity, like the device's kind."""
    bootstrap: int = Field(1000, ge=100)
    """Resamples behind each 95% interval of summary.parquet."""
    extra_sets: tuple[EvalSetConfig, ...] = ()
    baseline: Path | None = None
    """Another run's directory or its eval.parquet: CE and relative CE per corruption and the mCE against it
    are written to robustness.parquet (set by set, over the severities both runs have)."""
    alexnet_reference: bool = False
    """Also score CE and mCE against AlexNet's published ImageNet-C errors (for ImageNet runs; approximate,
    since saliqa corrupts full-size images on the fly rather than the released 224-pixel JPEG files)."""

    @field_validator("corruptions", mode="before")
    @classmethod
    def _expand_selections(cls, value: object) -> object:
        """ "all", "common", "extra" or a family ("noise", "blur", "weather", "digital"), alone or in a list,
        stand for their corruptions in canonical order; the resolved config lists the names."""
        from saliqa.corrupt import SELECTIONS, corruption_names

        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            return value
        return tuple(n for item in items for n in (corruption_names(item) if item in SELECTIONS else (item,)))

    @field_validator("corruptions")
    @classmethod
    def _known_corruptions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from saliqa.corrupt import check_corruption
        from saliqa.corrupt.weather import check_textures

        for name in value:
            check_corruption(name)
        if "frost" in value:
            check_textures()
        if len(set(value)) != len(value):
            raise ValueError("corruptions are listed more than once (a selection may already include one)")
        return value

    @field_validator("severities")
    @classmethod
    def _severity_range(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not all(1 <= s <= 5 for s in value):
            raise ValueError("severities must be between 1 and 5")
        return tuple(sorted(set(value)))

    @model_validator(mode="after")
    def _distinct_sets(self) -> EvaluateConfig:
        names = [s.name for s in self.extra_sets]
        if len(set(names)) != len(names):
            raise ValueError("extra_sets: names must be distinct")
        return self


class SlidingMapConfig(_Section):
    """``[explain.sliding_map]``: NIQE's and BRISQUE's local map drawn with overlapping windows instead of the
    release's 96-pixel tiling (2 x 2 on a 224 crop); their picture scores stay the release's.

    The defaults (96 pixels every 16) keep the release's patch size and give 9 x 9 windows on a 224 crop, finer
    than the 7 x 7 comparison grid (every 32 pixels would give 5 x 5, compared on its own coarser grid)."""

    patch: int = 96
    """Window side in pixels: even, at least 32, at most the crop."""
    stride: int = 16
    """Pixels between neighbouring windows: even, positive, at most ``patch``."""

    @model_validator(mode="after")
    def _valid_windows(self) -> SlidingMapConfig:
        self.windows()  # the model's own checks: stride 0, odd sides, a patch too small for the statistics
        return self

    def windows(self) -> SlidingMap:
        """The :class:`saliqa.iqa.nss.SlidingMap` these settings describe."""
        from saliqa.iqa.nss import SlidingMap

        return SlidingMap(self.patch, self.stride)


class ExplainConfig(_Section):
    """Stage explain: attribution maps against quality maps, on the very crops evaluate judged."""

    methods: tuple[str, ...] = ("gradcam", "gradcam++", "saliency")
    """Attribution methods of the classifier (``saliqa.attribution_methods()``)."""
    target: Literal["prediction", "label"] = "prediction"
    """The class each map explains: the classifier's prediction on the image's clean crop (kept under every
    condition, so a map changes with the pixels, not with a switch of class), or the true label."""
    sample: int = Field(32, ge=2)
    """Images per evaluation set, drawn seeded and stratified by class from those evaluate judged."""
    corruptions: tuple[str, ...] | None = None
    """Default: evaluate's; otherwise some of them."""
    severities: tuple[int, ...] | None = None
    """Default: evaluate's; otherwise some of them."""
    grid: int = Field(7, ge=2, le=32)
    """Side of the comparison grid on the crop (7: layer4 of ResNet-18 and PaQ-2-PiQ on 224 pixels); a quality
    map whose own grid is coarser is compared on its own grid."""
    sliding_map: SlidingMapConfig | None = None
    """NIQE and BRISQUE only: their quality maps from sliding windows (see :class:`SlidingMapConfig`) instead of
    the release's 96-pixel tiling, which gives 2 x 2 on a 224 crop. Unset: the release's tiling."""
    metrics: tuple[str, ...] = ("cc", "spearman", "sim", "kld", "emd", "iou@20")
    """Similarity metrics (``saliqa.similarity_metrics()``); kld is reported in both directions."""
    baselines: bool = True
    """Also score a centred Gaussian, Sobel edges, a seeded random map and the shuffled pairing."""
    sanity: bool = True
    """Run the cascading model-parameter randomisation test."""
    sanity_sample: int = Field(8, ge=1)
    """Clean validation crops the randomisation test re-attributes at every step."""
    options: dict[str, dict[str, float | int]] = {}
    """Per-method options, e.g. ``{smoothgrad = {n_samples = 25}}`` (see ``saliqa.attribute``)."""
    bootstrap: int = Field(1000, ge=100)
    """Resamples behind each 95% interval of compare_summary.parquet and stats.parquet."""
    panels: int = Field(8, ge=0)
    """Images in the grid of example panels (their worst condition)."""
    batch_size: int = Field(16, ge=1)
    """Crops per attribution pass."""
    shard_size: int = Field(16, ge=1, json_schema_extra=RUNTIME)
    """Images per resumable unit of work."""
    workers: int = Field(2, ge=0, json_schema_extra=RUNTIME)
    """Processes that decode and distort ahead of the models (0 = in the main process)."""
    device: Device = Field("auto", json_schema_extra=RUNTIME)

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from saliqa.explain import attribution_methods

        unknown = [m for m in value if m not in attribution_methods()]
        if unknown or not value or len(set(value)) != len(value):
            raise ValueError(
                f"methods must be distinct names of {', '.join(attribution_methods())}; got {', '.join(value)}"
            )
        return value

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from saliqa.explain import map_similarity

        probe = [[0.0, 1.0], [2.0, 3.0]]
        for metric in value:
            map_similarity(probe, probe, metric)  # raises ValueError naming the known metrics
        if not value or len(set(value)) != len(value):
            raise ValueError("metrics must be distinct and not empty")
        return value

    @model_validator(mode="after")
    def _options_of_listed_methods(self) -> ExplainConfig:
        from saliqa.explain.attribution import method_options

        for method, options in self.options.items():
            if method not in self.methods:
                raise ValueError(f"options: {method!r} is not one of the methods ({', '.join(self.methods)})")
            seeded = sorted(set(options) & {"seed", "seeds"})
            if seeded:
                raise ValueError(f"options.{method}: {', '.join(seeded)} come from the run's seed, per image")
            unknown = sorted(set(options) - set(method_options(method)))
            if unknown:
                known = ", ".join(method_options(method)) or "none"
                raise ValueError(f"options.{method}: unknown {', '.join(unknown)} (it takes {known})")
        return self


class EngineConfig(_Section):
    """Where the per-image stages (rate, evaluate, explain) run. Nothing here changes a number: every setting is
    a runtime one, so switching engines reruns nothing, and a run resumes across engines."""

    kind: Literal["local", "ray"] = Field("local", json_schema_extra=RUNTIME)
    """``local``: this process and its loader workers; ``ray``: Ray Data, on this machine or a cluster (needs
    ``pip install 'saliqa[ray]'``)."""
    address: str | None = Field(None, json_schema_extra=RUNTIME)
    """Ray cluster to join (``auto``, ``ray://host:10001``); none starts Ray on this machine, or joins the one
    this process already started."""
    model_workers: int = Field(1, ge=1, json_schema_extra=RUNTIME)
    """Actors that each hold the stage's models and judge batches (one per GPU on a GPU cluster)."""
    cpus_per_model_worker: float = Field(1.0, gt=0, json_schema_extra=RUNTIME)
    """CPUs each model actor reserves (its intra-op threads)."""
    gpus_per_model_worker: float = Field(1.0, gt=0, json_schema_extra=RUNTIME)
    """GPUs each model actor reserves when the stage's device is CUDA (fractions share one GPU)."""
    prepare_batch: int = Field(4, ge=1, json_schema_extra=RUNTIME)
    """Images each CPU task decodes (and distorts) in one go: Ray's unit of scheduling, so small enough that
    every worker gets several."""


class RunConfig(_Section):
    """A whole run. One seed drives every random choice."""

    seed: int = 0
    data: DataConfig = DataConfig()
    images: ImagesConfig = ImagesConfig()
    rate: RateConfig = RateConfig()
    split: SplitConfig = SplitConfig()
    train: TrainConfig = TrainConfig()
    model: ModelConfig | None = None
    """A classifier evaluated as it is (no training); see :class:`ModelConfig`."""
    evaluate: EvaluateConfig = EvaluateConfig()
    explain: ExplainConfig = ExplainConfig()
    engine: EngineConfig = EngineConfig()

    @model_validator(mode="after")
    def _explain_within_evaluate(self) -> RunConfig:
        x, e = self.explain, self.evaluate
        for name, mine, theirs in (
            ("corruptions", x.corruptions, e.corruptions),
            ("severities", x.severities, e.severities),
        ):
            outside = [v for v in (mine or ()) if v not in theirs]
            if outside:
                raise ValueError(
                    f"explain.{name}: {', '.join(map(str, outside))} not evaluated (evaluate.{name}: "
                    f"{', '.join(map(str, theirs))}); explain works on the crops evaluate judged"
                )
        return self

    @model_validator(mode="after")
    def _sliding_map_fits(self) -> RunConfig:
        """A sliding map needs an NSS judge, and windows that fit in the crop (a crop set by published
        transforms is checked by the explain stage before it starts)."""
        from saliqa.iqa.registry import SLIDING_MAP_MODELS

        sliding = self.explain.sliding_map
        if sliding is None:
            return self
        if self.rate.iqa not in SLIDING_MAP_MODELS:
            raise ValueError(
                f"explain.sliding_map is for {' and '.join(SLIDING_MAP_MODELS)}; rate.iqa = {self.rate.iqa!r} "
                "keeps its own map grid (remove [explain.sliding_map])"
            )
        published = (
            self.model is not None and self.model.name is not None and self.model.transforms == "published"
        )
        if sliding.patch > self.evaluate.crop and not published:
            raise ValueError(
                f"explain.sliding_map.patch = {sliding.patch} is larger than the crop (evaluate.crop = "
                f"{self.evaluate.crop}): no window fits"
            )
        return self


def _explain(error: ValidationError, origin: str) -> ConfigError:
    lines = []
    for item in error.errors():
        key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in item["loc"]).lstrip(".")
        key = key or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (check its spelling and section)"
        lines.append(f"{key}: {message}")
    return ConfigError(f"invalid config {origin}: " + "; ".join(lines))


def config_from_dict(values: dict[str, Any], origin: str = "(dict)") -> RunConfig:
    """Validate a plain dict; errors name every bad key."""
    try:
        return RunConfig.model_validate(values)
    except ValidationError as error:
        raise _explain(error, origin) from None


def load_config(path: str | Path | None = None) -> RunConfig:
    """Read and validate a TOML config; ``None`` gives the defaults (the embedded demo).

    Relative paths (``data.root``, ``train.pretrained``, ``evaluate.extra_sets[].root``, the file of
    ``rate.iqa = "paq2piq:<path>"``) are resolved against the config file's folder.
    """
    if path is None:
        return RunConfig()
    path = Path(path)
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read config {path}: {type(error).__name__}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config {path} is not valid TOML: {error}") from None
    _resolve_paths(values, path.parent)
    return config_from_dict(values, origin=str(path))


def _resolve_paths(values: dict[str, Any], base: Path) -> None:
    """Make the config's relative file paths relative to the config file's folder, in place."""

    def resolve(section: Any, key: str, keep: tuple[str, ...] = ()) -> None:
        value = section.get(key) if isinstance(section, dict) else None
        if isinstance(value, str) and value not in keep and not Path(value).expanduser().is_absolute():
            section[key] = str((base / value).resolve())

    resolve(values.get("data"), "root")
    resolve(values.get("train"), "pretrained", keep=("random", "imagenet"))
    rate = values.get("rate")
    iqa = rate.get("iqa") if isinstance(rate, dict) else None
    weights = iqa[8:].strip() if isinstance(iqa, str) and iqa.startswith("paq2piq:") else ""
    if weights and not Path(weights).expanduser().is_absolute():
        rate["iqa"] = f"paq2piq:{(base / weights).resolve()}"  # a trained judge's weights file
    evaluate = values.get("evaluate")
    for extra in evaluate.get("extra_sets", []) if isinstance(evaluate, dict) else []:
        resolve(extra, "root")
    resolve(evaluate, "baseline")
    for key in ("weights", "checkpoint", "classes"):
        resolve(values.get("model"), key)


def with_overrides(config: RunConfig, overrides: list[str]) -> RunConfig:
    """``config`` with ``section.key=value`` settings replaced (``value`` read as TOML, else as a string),
    validated like a file: ``explain.sample=16``, ``evaluate.corruptions=["fog", "snow"]``."""
    values = config_to_dict(config)
    for item in overrides:
        key, sep, text = item.partition("=")
        path = [part for part in key.strip().split(".") if part]
        if not sep or not path:
            raise ConfigError(f"--set {item!r}: write SECTION.KEY=VALUE, e.g. explain.sample=16")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        node = values
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part} is not a section")
        node[path[-1]] = value
    return config_from_dict(values, origin="(--set)")


def config_to_dict(config: BaseModel) -> dict[str, Any]:
    """Plain JSON/TOML-ready values (paths as strings, no None)."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if v is not None}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    return clean(config.model_dump(mode="json"))


def dump_config(config: RunConfig) -> str:
    """The resolved config as TOML (what ``config.toml`` in a run directory holds)."""
    return tomli_w.dumps(config_to_dict(config))
