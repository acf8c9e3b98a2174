"""torch.hub entry points, one per bundled model (`fastdenoise.models.catalog`; a "-" or "." in a name becomes "_"):
`torch.hub.load(repo_dir, "blind", source="local")` is `fastdenoise.load("blind")`, an `ImageDenoiser`; keyword
arguments go to `fastdenoise.load` (backend, device, precision ...). Every other name here starts with "_", so that
`torch.hub.list` shows the models alone."""

from fastdenoise.api import load as _load
from fastdenoise.models.catalog import MODELS as _MODELS

dependencies = ["torch", "numpy", "PIL", "safetensors"]


def _entry_point(name: str, summary: str):
    def model(**options):
        return _load(name, **options)

    model.__name__ = model.__qualname__ = name.replace("-", "_").replace(".", "_")
    model.__doc__ = f"{summary}: fastdenoise.load({name!r}, **options)."
    return model


globals().update({entry.__name__: entry for entry in (_entry_point(m.name, m.summary) for m in _MODELS)})
