"""Machine facts for benchmark results; the code lives in the package (fastdenoise.machine) so the CLI can use it."""

from fastdenoise.machine import cpu_model, machine_facts, machine_name

__all__ = ["cpu_model", "machine_facts", "machine_name"]
