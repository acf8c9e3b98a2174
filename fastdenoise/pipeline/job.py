"""A folder run put together from its options, as `fastdenoise run` and `fastdenoise.denoise_folder` both do it: the
weights (`zoo.plan_weights`), the backend, the router that picks each image's weights, and the RunConfig with the
record of what makes the pixels."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from fastdenoise.backends import Backend, BackendConfig, build_backend, load_network, sigma_router
from fastdenoise.choices import Precision
from fastdenoise.models.denoiser import Denoiser
from fastdenoise.models.zoo import WeightsPlan
from fastdenoise.pipeline.runner import RunConfig

if TYPE_CHECKING:
    from fastdenoise.models.zoo import SigmaRouter


@dataclass(frozen=True)
class Job:
    """What `runner.denoise_folder` runs besides its folders."""

    plan: WeightsPlan
    network: Denoiser  # the plan's default weights (a noise-map model bound to its level)
    backend: Backend | BackendConfig  # a config where nothing runs here (a dry run) or workers build their own (Ray)
    cfg: RunConfig  # with made_by: what makes the pixels
    router: SigmaRouter | None = None


def prepare_job(
    plan: WeightsPlan, cfg: RunConfig, backend: BackendConfig, ensemble: bool = False, build: bool = True
) -> Job:
    """Load the plan's default weights and (with `build`) build its backend and the router; the errors are those of
    `load_network` and `make_backend` (CheckpointError and ValueError, ImportError for a backend missing here)."""
    network = load_network(plan.default, plan.level)
    made = replace(cfg, made_by=made_by(network, backend, ensemble, plan))
    if not build:
        return Job(plan, network, backend, made)
    runner = build_backend(network, backend, ensemble)
    return Job(plan, network, runner, made, sigma_router(plan, runner, backend, ensemble))


def made_by(network: Denoiser, backend: BackendConfig, ensemble: bool, plan: WeightsPlan) -> dict:
    """The `made_by` record of a run's outputs: the digest of the weights (the level bound in, for a noise-map model;
    the default weights' when each image's level is estimated, each row naming its own) or of the engine file, of the
    weights JPEG inputs run, the precision asked for, the ensemble; a manifest row made otherwise vouches for
    nothing."""
    from fastdenoise.engines.export import weights_sha256
    from fastdenoise.files import sha256_file

    made = {
        "weights_sha256": weights_sha256(network),
        "precision": Precision(backend.precision).value,
        "ensemble": ensemble,
    }
    if backend.engine is not None:
        made["engine_sha256"] = sha256_file(backend.engine)
    made |= {"jpeg_weights_sha256": sha256_file(plan.jpeg)} if plan.jpeg is not None else {}
    return made | ({"sigma": "auto"} if plan.estimate else {})
