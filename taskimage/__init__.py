"""taskimage: multi-architecture container image builds for Tekton, with buildah and qemu.

The package is split by concern:

- :mod:`taskimage.params` declares every ``taskimage build`` parameter once (CLI flag,
  environment variable, Tekton param) so the CLI, the Task YAML and the README cannot drift.
- :mod:`taskimage.platforms` and :mod:`taskimage.reference` parse user input.
- :mod:`taskimage.tools` is the only module that starts subprocesses (through ``sh``);
  :mod:`taskimage.buildah` and :mod:`taskimage.skopeo` build argv lists as pure functions.
- :mod:`taskimage.build` orchestrates a build; :mod:`taskimage.binfmt` checks and registers
  qemu emulation; :mod:`taskimage.results` writes Tekton results.
"""

__version__ = "0.1.0"

from taskimage.errors import EmulationError, TaskimageError, ToolError, UsageError
from taskimage.platforms import Platform, parse_platforms
from taskimage.reference import ImageReference, parse_image

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
