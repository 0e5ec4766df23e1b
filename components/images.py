"""Container image tags: the single source of truth, derived from the package version.

Every component is compiled against ``SUITE_IMAGE``. Users who build their own image set
``KFP_SERVE_IMAGE`` (or pass ``kfp-serve compile --image``) before the components are imported.
"""

from __future__ import annotations

import os
from importlib import metadata

IMAGE_ENV_VAR = "KFP_SERVE_IMAGE"
DEFAULT_REPOSITORY = "ghcr.io/kfp-serve/kfp-serve"


def package_version() -> str:
    """The installed kfp-serve version (``0.0.0`` when run from an uninstalled checkout)."""
    try:
        return metadata.version("kfp-serve")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def default_image() -> str:
    """The CPU component image built from this version's Dockerfile."""
    return f"{DEFAULT_REPOSITORY}:{package_version()}"


def suite_image() -> str:
    """The image components are compiled against: ``$KFP_SERVE_IMAGE`` or the default tag."""
    return os.environ.get(IMAGE_ENV_VAR) or default_image()


SUITE_IMAGE = suite_image()
