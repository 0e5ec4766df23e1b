"""What a run on this machine needs from outside, checked before the first step: credentials
for the gs:// locations it uses, and a Kubernetes API for the steps that deploy to KServe.

Without these a run trained for minutes and then failed at the step that needed them.
"""

from __future__ import annotations

import os
from typing import Any

from kfp_serve.components.errors import UserError

#: the steps that talk to a Kubernetes API (at the pipeline's ``api_host``, else in-cluster or
#: kubeconfig credentials)
KUBERNETES_STEPS = {"deploy_kserve", "promote_kserve", "rollback_kserve", "delete_kserve"}


def check_credentials(name: str, pipeline: Any, params: dict[str, Any],
                      gcs_emulator: bool = False) -> None:
    """Raise UserError, naming what to add, when the run would fail for want of credentials."""
    from kfp_serve.components.storage.emulator import EMULATOR_ENV
    from kfp_serve.pipelines.params import component_inputs
    from kfp_serve.pipelines.run_local import gcs_buckets

    buckets = gcs_buckets(pipeline, params)
    if buckets and not gcs_emulator and not os.environ.get(EMULATOR_ENV) and not _google_credentials():
        raise UserError(
            f"{name} uses gs://{buckets[0]} and this machine has no Google Cloud credentials: add"
            " --gcs-emulator (a local fake-gcs-server serves gs:// for the run), point the gs://"
            " parameters at folders, or run `gcloud auth application-default login`")
    reached = {component for pairs in component_inputs(pipeline).values() for component, _ in pairs}
    defaults = {key: spec.default for key, spec in (pipeline.component_spec.inputs or {}).items()}
    if reached & KUBERNETES_STEPS and not {**defaults, **params}.get("api_host") \
            and not _kubernetes_credentials():
        raise UserError(
            f"{name} deploys to KServe and this machine has no Kubernetes credentials (not in a"
            " cluster, no kubeconfig): pass --param api_host=URL of a Kubernetes API (e.g. `kubectl"
            " proxy`'s http://127.0.0.1:8001), or set KUBECONFIG")


def _google_credentials() -> bool:
    import google.auth
    import google.auth.exceptions

    try:
        google.auth.default()
    except google.auth.exceptions.DefaultCredentialsError:
        return False
    return True


def _kubernetes_credentials() -> bool:
    from kubernetes import config

    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return True
    try:
        config.list_kube_config_contexts()
    except Exception:  # kubernetes.config.ConfigException, a missing or unreadable file
        return False
    return True
