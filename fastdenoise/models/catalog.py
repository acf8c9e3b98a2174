"""The bundled models, declared once (as torchvision's weight enums and timm's pretrained configs do): each one's name,
file, what it is for, and which choice runs it. `zoo` derives every choice (`--model`, `--sigma`, `--task`, JPEG
inputs) from this table; tests/models/test_catalog.py checks it against the files in fastdenoise/weights/."""

from __future__ import annotations

from dataclasses import dataclass

from fastdenoise.choices import Task


@dataclass(frozen=True)
class BundledModel:
    """One bundled model: weights/<name>.safetensors (its card: <name>.json) and when it runs."""

    name: str
    summary: str
    sigma: float | None = None  # a per-sigma model: a known noise level within zoo.PER_SIGMA_REACH of this runs it
    tasks: tuple[Task, ...] = ()  # `run --task T` runs it for these tasks (from zoo.TASK_MIN_SIGMA; blind below)
    default: bool = False  # runs where nothing else is chosen (no model named, noise level unknown or out of reach)
    noise_map: bool = False  # takes the noise level as a fourth input: runs only with a known sigma
    jpeg: bool = False  # runs images stored as JPEG where no model is named (from zoo.JPEG_MIN_SIGMA)

    @property
    def file(self) -> str:
        return f"{self.name}.safetensors"


MODELS = (
    BundledModel("blind", "blind denoiser for noise levels 5-60 (0-255 units): the default", default=True),
    BundledModel("sigma15", "blind fine-tuned at sigma 15", sigma=15.0),
    BundledModel("sigma25", "blind fine-tuned at sigma 25", sigma=25.0),
    BundledModel("sigma35", "blind fine-tuned at sigma 35", sigma=35.0),
    BundledModel("sigma50", "blind fine-tuned at sigma 50", sigma=50.0),
    BundledModel("jpeg", "blind fine-tuned on noisy patches stored as JPEG (quality 70-95) and plain ones", jpeg=True),
    BundledModel(
        "task-aware",
        "blind fine-tuned label-free through frozen EfficientNet-Lite0 and ESPNetv2-CamVid",
        tasks=(Task.CLASSIFY, Task.SEGMENT),
    ),
    BundledModel("joint-classify", "joint training with frozen EfficientNet-Lite0, lambda 0.25 (Table 2)"),
    BundledModel("joint-classify-lam0.05", "joint training with frozen EfficientNet-Lite0, lambda 0.05 (Table 2)"),
    BundledModel("joint-segment", "joint training with frozen ESPNetv2-CamVid, lambda 0.5 (Table 3)"),
    BundledModel("separate-imagenet", "MSE alone on the photos of joint-classify: its control (Table 2)"),
)
DEFAULT = next(model for model in MODELS if model.default)


def bundled_model(name: str) -> BundledModel:
    """The table's entry `name`; ValueError naming the bundled models otherwise."""
    for model in MODELS:
        if model.name == name:
            return model
    raise ValueError(f"{name!r} is not a bundled model; choose one of {', '.join(m.name for m in MODELS)}")
