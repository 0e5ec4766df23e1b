"""GKE production presets: what users would otherwise write as node selectors, tolerations,
resources and probes by hand, checked as a whole.

Sources (read 2026-11): GKE docs "Run GPUs in GKE Standard node pools" (the
``cloud.google.com/gke-accelerator`` label values), "Share GPUs with multiple workloads using
time-sharing" (``gke-gpu-sharing-strategy``, ``gke-max-shared-clients-per-gpu``; a container
requests 1 shared GPU), "Run multi-instance GPUs" (``gke-gpu-partition-size`` and the
partitions per GPU), "Spot VMs" (``gke-spot`` label and taint), "Use Workload Identity
Federation for GKE" (``iam.gke.io/gcp-service-account`` on the Kubernetes service account,
``iam.gke.io/gke-metadata-server-enabled`` on nodes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from kfp_serve.components.errors import UserError

ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
#: short name -> (node label value, MIG partition sizes; empty: no MIG)
ACCELERATORS: dict[str, tuple[str, tuple[str, ...]]] = {
    "T4": ("nvidia-tesla-t4", ()),
    "L4": ("nvidia-l4", ()),
    "A100": ("nvidia-tesla-a100", ("1g.5gb", "2g.10gb", "3g.20gb", "7g.40gb")),
    "A100-80GB": ("nvidia-a100-80gb", ("1g.10gb", "2g.20gb", "3g.40gb", "7g.80gb")),
    "H100": ("nvidia-h100-80gb", ("1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb")),
}
GPU_SHARING = ("time-sharing", "mig")
WORKLOAD_IDENTITY_ANNOTATION = "iam.gke.io/gcp-service-account"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
SPOT_TOLERATION = {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true",
                   "effect": "NoSchedule"}
#: Knative fails a revision whose pods are not ready within this (config-deployment default)
KNATIVE_PROGRESS_DEADLINE_S = 600
PROGRESS_DEADLINE_ANNOTATION = "serving.knative.dev/progress-deadline"
PROBE_PERIOD_S = 10


@dataclass(frozen=True)
class GkePresets:
    """One-line settings for GKE; each becomes node selectors, tolerations and resources."""

    accelerator: str | None = None  # T4, L4, A100, A100-80GB, H100
    gpu_sharing: str | None = None  # time-sharing | mig
    max_shared_clients_per_gpu: int | None = None
    gpu_partition_size: str | None = None
    spot: bool = False
    gcp_service_account: str | None = None  # Workload Identity: the Google service account
    model_load_timeout_s: int | None = None  # startup probe budget for large models


def check(presets: GkePresets, gpus: int, service_account: str | None) -> None:
    """Invalid combinations as one-line errors."""
    if presets.accelerator is not None and presets.accelerator not in ACCELERATORS:
        raise UserError(f"accelerator {presets.accelerator!r} is not one of {list(ACCELERATORS)}")
    if presets.gpu_sharing is not None:
        if presets.gpu_sharing not in GPU_SHARING:
            raise UserError(f"gpu_sharing {presets.gpu_sharing!r} is not one of {list(GPU_SHARING)}")
        if presets.accelerator is None:
            raise UserError("gpu_sharing needs an accelerator (e.g. accelerator='L4')")
        if gpus > 1:
            raise UserError(f"gpu_sharing gives a container one shared GPU; gpus is {gpus}")
    if presets.gpu_sharing == "time-sharing":
        if presets.gpu_partition_size:
            raise UserError("gpu_partition_size is for gpu_sharing='mig'; time-sharing shares whole"
                            " GPUs (choose one)")
        clients = presets.max_shared_clients_per_gpu
        if clients is None or not 2 <= clients <= 48:
            raise UserError("time-sharing needs max_shared_clients_per_gpu between 2 and 48")
    elif presets.max_shared_clients_per_gpu is not None:
        raise UserError("max_shared_clients_per_gpu is for gpu_sharing='time-sharing'")
    if presets.gpu_sharing == "mig":
        sizes = ACCELERATORS[presets.accelerator][1]
        if not sizes:
            raise UserError(f"{presets.accelerator} GPUs have no multi-instance (MIG) partitions;"
                            " use A100, A100-80GB or H100, or gpu_sharing='time-sharing'")
        if presets.gpu_partition_size not in sizes:
            raise UserError(f"gpu_partition_size {presets.gpu_partition_size!r} is not a"
                            f" {presets.accelerator} MIG partition: one of {list(sizes)}")
    elif presets.gpu_partition_size is not None:
        raise UserError("gpu_partition_size needs gpu_sharing='mig'")
    if presets.gcp_service_account:
        if not service_account:
            raise UserError("gcp_service_account (Workload Identity) needs service_account: the"
                            " Kubernetes service account annotated with it")
        if not presets.gcp_service_account.endswith(".iam.gserviceaccount.com"):
            raise UserError(f"gcp_service_account {presets.gcp_service_account!r} is not a Google"
                            " service account email (NAME@PROJECT.iam.gserviceaccount.com)")
    if presets.model_load_timeout_s is not None and presets.model_load_timeout_s < PROBE_PERIOD_S:
        raise UserError(f"model_load_timeout_s must be >= {PROBE_PERIOD_S}")


def apply(presets: GkePresets, gpus: int, mode: str, model_format: str
          ) -> tuple[int, dict[str, str], list[dict[str, Any]], dict[str, Any], dict[str, str]]:
    """(gpus, node selector, tolerations, container fields, annotations) the presets add."""
    selector: dict[str, str] = {}
    tolerations: list[dict[str, Any]] = []
    if presets.accelerator:
        selector[ACCELERATOR_LABEL] = ACCELERATORS[presets.accelerator][0]
        tolerations.append(GPU_TOLERATION)
        gpus = gpus or 1
    if presets.gpu_sharing == "time-sharing":
        selector["cloud.google.com/gke-gpu-sharing-strategy"] = "time-sharing"
        selector["cloud.google.com/gke-max-shared-clients-per-gpu"] = str(presets.max_shared_clients_per_gpu)
    if presets.gpu_sharing == "mig":
        selector["cloud.google.com/gke-gpu-partition-size"] = str(presets.gpu_partition_size)
    if presets.spot:
        selector["cloud.google.com/gke-spot"] = "true"
        tolerations.append(SPOT_TOLERATION)
    if presets.gcp_service_account:
        selector["iam.gke.io/gke-metadata-server-enabled"] = "true"
    container: dict[str, Any] = {}
    annotations: dict[str, str] = {}
    if presets.model_load_timeout_s:
        # Triton answers /v2/health/ready once its models are loaded; TorchServe's KServe
        # wrapper is only known to listen on 8080
        check_by = ({"httpGet": {"path": "/v2/health/ready", "port": 8080}}
                    if model_format != "pytorch" else {"tcpSocket": {"port": 8080}})
        failures = math.ceil(presets.model_load_timeout_s / PROBE_PERIOD_S)
        container["startupProbe"] = {**check_by, "periodSeconds": PROBE_PERIOD_S,
                                     "failureThreshold": failures}
        if mode == "Knative" and presets.model_load_timeout_s + 60 > KNATIVE_PROGRESS_DEADLINE_S:
            annotations[PROGRESS_DEADLINE_ANNOTATION] = f"{presets.model_load_timeout_s + 60}s"
    return gpus, selector, tolerations, container, annotations
