"""Pure, typed descriptions of a Vertex AI deployment, checked before any API call.

Everything here is plain Python: the allowed regions and machine/accelerator combinations, the
capacity, scaling and logging knobs, and the idempotency key that lets a retried step find the
model version an earlier attempt uploaded (the serving container is in :mod:`.container`, the
traffic arithmetic in :mod:`.traffic`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass, field

from kfp_serve.components.errors import UserError
from kfp_serve.components.storage.uris import parse_gcs_uri
from kfp_serve.components.vertex.container import ContainerSpec, LargeModel, container_for
from kfp_serve.components.vertex.traffic import check_percent

_N1 = re.compile(r"^n1-(standard|highmem|highcpu)-(2|4|8|16|32|64|96)$")
_CPU_FAMILIES = re.compile(r"^(n1|n2|n2d|e2|c2|c2d|c3|m1)-[a-z]+-\d+$")
#: GPU machine families: accelerator -> (machine pattern, GPUs from the ``-<N>g`` suffix)
_GPU_MACHINES = {
    "NVIDIA_TESLA_A100": re.compile(r"^a2-highgpu-(1|2|4|8)g$|^a2-megagpu-(16)g$"),
    "NVIDIA_A100_80GB": re.compile(r"^a2-ultragpu-(1|2|4|8)g$"),
    "NVIDIA_H100_80GB": re.compile(r"^a3-highgpu-(1|2|4|8)g$"),
    "NVIDIA_H100_MEGA_80GB": re.compile(r"^a3-megagpu-(8)g$"),
    "NVIDIA_H200_141GB": re.compile(r"^a3-ultragpu-(8)g$"),
    "NVIDIA_B200": re.compile(r"^a4-highgpu-(8)g$"),
    "NVIDIA_GB200": re.compile(r"^a4x-highgpu-(4)g$"),
}
_G2_GPUS = {"g2-standard-4": 1, "g2-standard-8": 1, "g2-standard-12": 1, "g2-standard-16": 1,
            "g2-standard-32": 1, "g2-standard-24": 2, "g2-standard-48": 4, "g2-standard-96": 8}
_G4_GPUS = {"g4-standard-48": 1, "g4-standard-96": 2, "g4-standard-192": 4, "g4-standard-384": 8}
#: N1 + GPU: the most vCPUs per GPU count (Compute Engine "GPU machine types", N1 general
#: purpose with attached GPUs; read 2026-11)
_N1_MAX_VCPUS = {"NVIDIA_TESLA_T4": {1: 48, 2: 48, 4: 96}, "NVIDIA_TESLA_P4": {1: 24, 2: 48, 4: 96},
                 "NVIDIA_TESLA_P100": {1: 16, 2: 32, 4: 64},
                 "NVIDIA_TESLA_V100": {1: 12, 2: 24, 4: 48, 8: 96}}
#: accelerator types aiplatform knows that online prediction does not offer
_NOT_FOR_PREDICTION = ("ACCELERATOR_TYPE_UNSPECIFIED", "NVIDIA_TESLA_K80")


def prediction_regions() -> tuple[str, ...]:
    """Vertex AI regions, from the aiplatform package's own list (``global`` has no endpoints)."""
    from google.cloud.aiplatform.constants import base

    return tuple(sorted(r for r in base.SUPPORTED_REGIONS if r != "global"))


def accelerators() -> tuple[str, ...]:
    """GPU types Vertex AI prediction runs on: aiplatform's AcceleratorType, less TPUs and
    retired GPUs."""
    from google.cloud.aiplatform_v1.types import AcceleratorType

    return tuple(a.name for a in AcceleratorType
                 if a.name.startswith("NVIDIA_") and a.name not in _NOT_FOR_PREDICTION)


LABEL_KEY = "kfp-serve-key"
_REGISTRY_MODEL = re.compile(r"^(projects/[^/]+/locations/[^/]+/models/)?[A-Za-z0-9_-]+(@[a-z0-9-]+)?$")
#: ReservationAffinity.key naming a reservation (reservation_affinity.proto)
RESERVATION_KEY = "compute.googleapis.com/reservation-name"
_RESERVATION = re.compile(r"^projects/[a-z0-9-]+/zones/[a-z]+-[a-z]+\d+-[a-z]"
                          r"/reservations/[a-z]([a-z0-9-]*[a-z0-9])?$")
#: FlexStart.max_runtime_duration's limit (machine_resources.proto, v1beta1: "up to 7 days")
MAX_FLEX_START_S = 7 * 24 * 3600
_BIGQUERY = re.compile(r"^bq://[a-z][a-z0-9-]{4,28}[a-z0-9](\.\w{1,1024}(\.[\w$-]{1,1024})?)?$")


def check_region(location: str) -> str:
    regions = prediction_regions()
    if location not in regions:
        close = difflib.get_close_matches(location or "", regions, n=1)
        hint = f" (did you mean {close[0]}?)" if close else " (e.g. us-central1)"
        raise UserError(f"location {location!r} is not a Vertex AI prediction region{hint}")
    return location


def check_project(project: str) -> str:
    if not re.match(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$", project or ""):
        raise UserError(f"project {project!r} is not a Google Cloud project id (6-30 lowercase"
                        " letters, digits and '-', starting with a letter)")
    return project


def allowed_accelerator_counts(machine_type: str, accelerator: str) -> tuple[int, ...]:
    """The accelerator counts Vertex AI allows on ``machine_type``; () when none."""
    if accelerator in _N1_MAX_VCPUS:
        match = _N1.match(machine_type)
        if not match:
            return ()
        vcpus = int(match.group(2))
        return tuple(count for count, most in _N1_MAX_VCPUS[accelerator].items() if vcpus <= most)
    if accelerator == "NVIDIA_L4":
        return (_G2_GPUS[machine_type],) if machine_type in _G2_GPUS else ()
    if accelerator == "NVIDIA_RTX_PRO_6000":
        return (_G4_GPUS[machine_type],) if machine_type in _G4_GPUS else ()
    pattern = _GPU_MACHINES.get(accelerator)
    match = pattern.match(machine_type) if pattern else None
    return (int(next(g for g in match.groups() if g)),) if match else ()


def check_machine(machine_type: str, accelerator_type: str, accelerator_count: int) -> None:
    """Reject machine/accelerator combinations Vertex AI would refuse minutes later."""
    known = accelerators()
    gpu_families = ("a2-", "a3-", "a4-", "a4x-", "g2-", "g4-")
    if not accelerator_type:
        if accelerator_count:
            raise UserError(f"accelerator_count={accelerator_count} needs an accelerator_type"
                            f" (one of {', '.join(known)})")
        if not (_CPU_FAMILIES.match(machine_type) or machine_type.startswith(gpu_families)):
            raise UserError(f"machine type {machine_type!r} is not a Vertex AI prediction machine"
                            " type (e.g. n1-standard-4)")
        if machine_type.startswith(gpu_families):
            raise UserError(f"machine type {machine_type!r} comes with GPUs: set accelerator_type"
                            " and accelerator_count")
        return
    if accelerator_type not in known:
        raise UserError(f"accelerator {accelerator_type!r} is not one Vertex AI serves on; use one"
                        f" of {', '.join(known)}")
    counts = allowed_accelerator_counts(machine_type, accelerator_type)
    if not counts:
        if accelerator_type in _N1_MAX_VCPUS and _N1.match(machine_type):
            most = max(_N1_MAX_VCPUS[accelerator_type].values())
            raise UserError(f"{machine_type} has more vCPUs than any count of {accelerator_type}"
                            f" allows (at most {most}); use a smaller n1 machine type")
        raise UserError(f"machine type {machine_type!r} cannot take {accelerator_type} on Vertex AI"
                        f" ({_which_machines(accelerator_type)})")
    if accelerator_count not in counts:
        raise UserError(f"{machine_type} takes {' or '.join(map(str, counts))} x {accelerator_type},"
                        f" not {accelerator_count}")


def _which_machines(accelerator: str) -> str:
    return {"NVIDIA_TESLA_A100": "use a2-highgpu-<N>g", "NVIDIA_A100_80GB": "use a2-ultragpu-<N>g",
            "NVIDIA_L4": "use g2-standard-<N>", "NVIDIA_H100_80GB": "use a3-highgpu-<N>g",
            "NVIDIA_H100_MEGA_80GB": "use a3-megagpu-8g", "NVIDIA_H200_141GB": "use a3-ultragpu-8g",
            "NVIDIA_B200": "use a4-highgpu-8g", "NVIDIA_GB200": "use a4x-highgpu-4g",
            "NVIDIA_RTX_PRO_6000": "use g4-standard-<N>"}.get(
        accelerator, "use an n1-standard/highmem/highcpu machine type")


def artifact_dir(uri: str) -> str:
    """Vertex AI's ``artifactUri``: a gs:// folder (TorchServe's model.mar lies at its top)."""
    if not uri.startswith("gs://"):
        raise UserError(f"artifact URI {uri!r} is not on GCS: Vertex AI reads models only from"
                        " gs://; publish with destination gs://BUCKET/PATH")
    parse_gcs_uri(uri)
    return uri.rstrip("/")


def idempotency_key(*parts: str) -> str:
    """A label value naming what one deploy asked for: a retry finds what the first attempt made."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:40]


@dataclass(frozen=True)
class VertexDeploySpec:
    """One deploy_vertex call, checked."""

    project: str
    location: str
    display_name: str
    artifact_uri: str
    content_kind: str
    model_name: str
    serving_image: str = ""
    endpoint: str = ""  # display name, id or resource name; empty: the model's display name
    machine_type: str = "n1-standard-4"
    accelerator_type: str = ""
    accelerator_count: int = 0
    min_replicas: int = 1
    max_replicas: int = 1
    cpu_utilization_target: int = 0
    accelerator_utilization_target: int = 0
    traffic_percentage: int = 100
    labels: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    version_aliases: list[str] = field(default_factory=list)
    service_account: str = ""
    archive_format: str = ""  # a TorchServeArchive's model format (onnx, torchscript)
    # getting GPUs
    spot: bool = False
    reservation: str = ""  # "", "any", "none" or projects/P/zones/Z/reservations/NAME
    required_replicas: int = 0  # a partial deploy succeeds with this many ready (0: all min)
    #: flex-start VMs (Dynamic Workload Scheduler) for at most this long; Vertex AI undeploys
    #: the model then (0: not flex-start). v1beta1 only.
    flex_start_s: int = 0
    request_count_target: int = 0  # autoscaling target: requests per minute per replica
    # observability
    access_logging: bool = False
    container_logging: bool = True
    # the endpoint, when this deploy creates it
    dedicated_endpoint: bool = False
    inference_timeout_s: int = 0
    request_logging_rate: float = 0.0
    request_logging_table: str = ""  # bq://PROJECT[.DATASET[.TABLE]]; empty: bq://<project>
    large_model: LargeModel = field(default_factory=LargeModel)
    #: a version already in the Model Registry (``ID@VERSION``, ``ID@alias`` or its resource
    #: name) deployed as it is, instead of uploading ``artifact_uri``
    registry_model: str = ""
    #: a Private Service Connect endpoint's forwarding rule (IP or DNS name[:port]) in the
    #: user's network, where validation calls it
    psc_address: str = ""
    #: the serving server's own arguments (vLLM's settings for an LLM checkpoint)
    server_args: tuple[str, ...] = ()
    #: Triton's gRPC server on too (``grpcPorts``), reached through DirectRawPredict on a
    #: dedicated endpoint
    grpc: bool = False

    def check(self) -> VertexDeploySpec:
        check_project(self.project)
        check_region(self.location)
        if self.registry_model:
            if self.artifact_uri:
                raise UserError("give either a published model or registry_model, not both")
            if not _REGISTRY_MODEL.match(self.registry_model):
                raise UserError(f"registry_model {self.registry_model!r}: use MODEL_ID, MODEL_ID@VERSION,"
                                " MODEL_ID@alias or projects/P/locations/L/models/MODEL_ID[@...]")
        else:
            artifact_dir(self.artifact_uri)
        check_machine(self.machine_type, self.accelerator_type, self.accelerator_count)
        check_percent(self.traffic_percentage)
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise UserError(f"replicas: need 1 <= min_replicas ({self.min_replicas}) <= max_replicas"
                            f" ({self.max_replicas}); Vertex AI endpoints do not scale to zero")
        for target in (self.cpu_utilization_target, self.accelerator_utilization_target):
            if not 0 <= target <= 100:
                raise UserError(f"autoscaling target {target} must be a percentage from 1 to 100, or 0 for"
                                " Vertex AI's default")
        if self.accelerator_utilization_target and not self.accelerator_type:
            raise UserError("accelerator_utilization_target needs an accelerator_type")
        self._check_capacity_and_logging()
        self.large_model.check()
        if not re.match(r"^.{1,128}$", self.display_name):
            raise UserError(f"display name {self.display_name!r} must be 1-128 characters")
        for alias in self.version_aliases:
            if not re.match(r"^[a-z][a-z0-9-]{0,126}[a-z0-9]$", alias) or alias == "default":
                raise UserError(f"version alias {alias!r}: use lowercase letters, digits and '-',"
                                " starting with a letter ('default' is reserved)")
        for key, value in self.labels.items():
            if not re.match(r"^[a-z][a-z0-9_-]{0,62}$", key) or not re.match(r"^[a-z0-9_-]{0,63}$", value):
                raise UserError(f"label {key}={value!r}: keys and values take lowercase letters,"
                                " digits, '_' and '-' (keys start with a letter, 63 at most)")
        if not self.registry_model:
            self.container()
        if self.grpc and (self.psc_address or not self.dedicated_endpoint):
            raise UserError("grpc=True: Vertex AI takes gRPC predictions on dedicated public"
                            " endpoints (its dedicated endpoints page); set dedicated_endpoint=True"
                            " and drop psc_address")
        if self.content_kind == "LlmCheckpoint" and (self.psc_address or not self.dedicated_endpoint):
            raise UserError("an LLM is served through Vertex AI's invoke routes, which only"
                            " dedicated public endpoints take: set dedicated_endpoint=True and drop"
                            " psc_address")
        if (self.content_kind == "TorchServeArchive" and self.archive_format == "onnx"
                and not self.serving_image):
            raise UserError(
                "an ONNX .mar cannot run on Vertex AI's prebuilt PyTorch container: it runs"
                " TorchServe with its own configuration, so the archive's requirements (onnxruntime)"
                " are never installed; archive the TorchScript export instead, serve the ONNX model"
                " as a Triton repository, or pass serving_image with an image that has onnxruntime")
        return self

    def _check_capacity_and_logging(self) -> None:
        """The knobs Vertex AI reads from the DeployedModel and the Endpoint
        (``machine_resources.proto``, ``reservation_affinity.proto``, ``endpoint.proto``)."""
        if not 0 <= self.required_replicas <= self.min_replicas:
            raise UserError(f"required_replicas={self.required_replicas}: a partial deploy needs"
                            f" between 1 and min_replicas ({self.min_replicas}) ready replicas, or 0"
                            " for all of them")
        if self.request_count_target < 0:
            raise UserError(f"request_count_target={self.request_count_target}: requests per minute"
                            " per replica, or 0 for no request-count autoscaling")
        if self.reservation not in ("", "any", "none") and not _RESERVATION.match(self.reservation):
            raise UserError(f"reservation {self.reservation!r}: use 'any', 'none' or the full name"
                            " projects/PROJECT/zones/ZONE/reservations/NAME")
        if not 0 <= self.flex_start_s <= MAX_FLEX_START_S:
            raise UserError(f"flex_start_max_runtime_s={self.flex_start_s}: flex-start VMs run for at"
                            f" most {MAX_FLEX_START_S} s (7 days), then Vertex AI undeploys the model;"
                            " 0 for on-demand capacity")
        if self.spot and self.reservation not in ("", "none"):
            raise UserError("spot=True cannot consume a reservation (Compute Engine: Spot VMs do not"
                            " consume reserved capacity); drop one of spot and reservation")
        if not 0 <= self.request_logging_rate <= 1:
            raise UserError(f"request_logging_rate={self.request_logging_rate}: a fraction of"
                            " requests in (0, 1], or 0 for no request-response logging")
        if self.request_logging_table and not self.request_logging_rate:
            raise UserError("request_logging_table needs request_logging_rate > 0 (the share of"
                            " requests to log)")
        if self.request_logging_table and not _BIGQUERY.match(self.request_logging_table):
            raise UserError(f"request_logging_table {self.request_logging_table!r}: use"
                            " bq://PROJECT, bq://PROJECT.DATASET or bq://PROJECT.DATASET.TABLE")
        if self.inference_timeout_s < 0:
            raise UserError(f"inference_timeout_s={self.inference_timeout_s}: seconds, or 0 for"
                            " Vertex AI's default")

    def endpoint_settings(self) -> dict:
        """What an endpoint this deploy creates is made with (REST field names): dedicated or
        shared, the inference timeout, request-response logging to BigQuery."""
        settings: dict = {}
        if self.dedicated_endpoint:
            settings["dedicatedEndpointEnabled"] = True
        if self.inference_timeout_s:
            settings["clientConnectionConfig"] = {"inferenceTimeout": f"{self.inference_timeout_s}s"}
        if self.request_logging_rate:
            table = self.request_logging_table or f"bq://{self.project}"
            settings["predictRequestResponseLoggingConfig"] = {
                "enabled": True, "samplingRate": self.request_logging_rate,
                "bigqueryDestination": {"outputUri": table}}
        return settings

    @property
    def model_id(self) -> str:
        """The model's id, derived from the display name: every run of a pipeline adds a
        version to the same model, and a retried upload cannot create a second model."""
        slug = re.sub(r"[^a-z0-9]+", "-", self.display_name.lower()).strip("-")[:40] or "model"
        digest = idempotency_key(self.project, self.location, self.display_name)[:8]
        return f"{'m-' if not slug[0].isalpha() else ''}{slug}-{digest}"

    @property
    def key(self) -> str:
        """What the model version holds: the artifact and the whole serving container (image,
        arguments, environment, ports, routes). A version is reused only when all of it agrees;
        a redeploy with another environment variable or argument uploads a new version."""
        container, _ = self.container()
        return idempotency_key(self.project, self.location, self.display_name, self.artifact_uri,
                               json.dumps(container.to_api(), sort_keys=True))

    def container(self) -> tuple[ContainerSpec, str]:
        return container_for(self.content_kind, self.model_name, self.serving_image,
                             bool(self.accelerator_type), self.env, self.large_model,
                             self.server_args, self.grpc)

    def model_body(self) -> dict:
        """The ``Model`` resource for ``models:upload``."""
        container, _ = self.container()
        return {"displayName": self.display_name, "artifactUri": artifact_dir(self.artifact_uri),
                "containerSpec": container.to_api(),
                "labels": {**self.labels, LABEL_KEY: self.key, "managed-by": "kfp-serve"},
                "versionAliases": list(self.version_aliases)}

    def deployed_model_body(self, model_version_name: str) -> dict:
        """The ``DeployedModel`` for ``deployModel``."""
        spec: dict = {"machineSpec": {"machineType": self.machine_type},
                      "minReplicaCount": self.min_replicas, "maxReplicaCount": self.max_replicas}
        if self.accelerator_type:
            spec["machineSpec"].update(acceleratorType=self.accelerator_type,
                                       acceleratorCount=self.accelerator_count)
        if self.reservation:
            spec["machineSpec"]["reservationAffinity"] = (
                {"reservationAffinityType": f"{self.reservation.upper()}_RESERVATION"}
                if self.reservation in ("any", "none") else
                {"reservationAffinityType": "SPECIFIC_RESERVATION", "key": RESERVATION_KEY,
                 "values": [self.reservation]})
        if self.spot:
            spec["spot"] = True
        if self.flex_start_s:
            spec["flexStart"] = {"maxRuntimeDuration": f"{self.flex_start_s}s"}
        if self.required_replicas:
            spec["requiredReplicaCount"] = self.required_replicas
        metrics = []
        if self.cpu_utilization_target:
            metrics.append({"metricName": "aiplatform.googleapis.com/prediction/online/cpu/utilization",
                            "target": self.cpu_utilization_target})
        if self.accelerator_utilization_target:
            metrics.append({"metricName": "aiplatform.googleapis.com/prediction/online/"
                                          "accelerator/duty_cycle",
                            "target": self.accelerator_utilization_target})
        if self.request_count_target:
            metrics.append({"metricName": "aiplatform.googleapis.com/prediction/online/request_count",
                            "target": self.request_count_target})
        if metrics:
            spec["autoscalingMetricSpecs"] = metrics
        body = {"model": model_version_name, "displayName": self.display_name[:128],
                "dedicatedResources": spec}
        if self.service_account:
            body["serviceAccount"] = self.service_account
        if self.access_logging:
            body["enableAccessLogging"] = True
        if not self.container_logging:
            body["disableContainerLogging"] = True
        return body
