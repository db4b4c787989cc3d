"""taskimage: multi-architecture container image builds for Tekton, with buildah and qemu.

The package is split by concern:

- :mod:`taskimage.build.params` declares every ``taskimage build`` parameter once (CLI flag,
  environment variable, Tekton param) so the CLI, the Task YAML and the README cannot drift.
- :mod:`taskimage.oci.platforms` and :mod:`taskimage.oci.reference` parse user input.
- :mod:`taskimage.proc` is the only module that starts subprocesses (through ``sh``);
  :mod:`taskimage.build.buildah` and :mod:`taskimage.skopeo` build argv lists as pure functions.
- :mod:`taskimage.build.orchestrate` orchestrates a build; :mod:`taskimage.emulation.binfmt` checks and registers
  qemu emulation; :mod:`taskimage.build.results` writes Tekton results.
"""

__version__ = "0.1.0"

from taskimage.errors import EmulationError, TaskimageError, ToolError, UsageError
from taskimage.oci.platforms import Platform, parse_platforms
from taskimage.oci.reference import ImageReference, parse_image

__all__ = [
    "__version__",
    "EmulationError",
    "ImageReference",
    "Platform",
    "TaskimageError",
    "ToolError",
    "UsageError",
    "parse_image",
    "parse_platforms",
]
