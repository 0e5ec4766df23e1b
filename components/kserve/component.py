"""KFP wrappers: deploy to KServe, promote or roll back a canary, delete."""

from typing import Dict, List, NamedTuple, Optional

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Output

from kfp_serve.components import images


@dsl.component(base_image=images.SUITE_IMAGE, install_kfp_package=False)
def deploy_kserve(
    inference_service: Output[Artifact],
    report: Output[Markdown],
    name: str,
    namespace: str,
    model: Input[Artifact] = None,
    storage_uri: Optional[str] = None,
    served_model_name: Optional[str] = None,
    model_format: Optional[str] = None,
    protocol_version: str = "v2",
    runtime: Optional[str] = None,
    service_account: Optional[str] = None,
    cpu: str = "1",
    memory: str = "2Gi",
    gpus: int = 0,
    node_selector: Optional[Dict[str, str]] = None,
    tolerations: Optional[List[dict]] = None,
    min_replicas: int = 1,
    max_replicas: int = 0,
    scale_metric: Optional[str] = None,
    scale_target: int = 0,
    container_concurrency: int = 0,
    timeout_s: int = 0,
    deployment_mode: str = "Knative",
    autoscaler_class: Optional[str] = None,
    runtime_version: Optional[str] = None,
    canary_traffic_percent: int = 100,
    labels: Optional[Dict[str, str]] = None,
    annotations: Optional[Dict[str, str]] = None,
    override: Optional[dict] = None,
    override_allowed: Optional[List[str]] = None,
    accelerator: Optional[str] = None,
    gpu_sharing: Optional[str] = None,
    max_shared_clients_per_gpu: int = 0,
    gpu_partition_size: Optional[str] = None,
    spot: bool = False,
    gcp_service_account: Optional[str] = None,
    model_load_timeout_s: int = 0,
    rollout_strategy: Optional[str] = None,
    ingress_from_namespaces: Optional[List[str]] = None,
    ready_timeout_s: float = 900.0,
    unschedulable_grace_s: float = 600.0,
    keep_failed: bool = False,
    kserve_namespace: str = "kserve",
    metrics_monitor: Optional[str] = None,
    metrics_interval_s: int = 30,
    scale_query: Optional[str] = None,
    scale_query_target: float = 0.0,
    prometheus_url: Optional[str] = None,
    api_host: Optional[str] = None,
) -> NamedTuple("Outputs", [("url", str)]):
    """Creates or updates a KServe InferenceService for a published model and waits until Ready.

    Before anything changes: the names KServe and Knative derive from ``name`` (each a DNS label
    of at most 63 characters: ``<name>-predictor``, the canary's tagged host, Standard mode's
    ``<name>-predictor-<namespace>`` host and ``isvc.<name>-predictor`` pod label, and the same
    for a Standard-mode canary's ``<name>-cXXXX-predictor``), a
    SelfSubjectAccessReview for the RBAC it needs, the namespace, Knative Serving (Knative
    mode), the ServingRuntime KServe would pick for the format and protocol (and a Triton that
    loads the repository's ONNX IR), and a server-side dry run with strict field validation.
    Then create, or replace at the current resourceVersion (conflicts retried). It waits until
    this apply serves: in Knative mode a new revision (a changed predictor, label or annotation
    makes one) is the latest ready one with the traffic share asked for; in Standard mode the
    predictor Deployment's rollout completes, or, for a canary, KServe reports the canary ready
    and its own Deployment's rollout completes. It fails at once on InvalidSpec, a failed model
    load of this revision or an image that cannot be pulled, on ReconcileFailed that lasts a
    minute (KServe retries a transient one), and on a pod still unschedulable after
    unschedulable_grace_s; on failure the log shows
    a diagnostics report (conditions, model status, pods, storage-initializer and
    kserve-container log tails, Warning events) and an InferenceService this step created is
    deleted unless keep_failed.

    Args:
        name: InferenceService name (DNS-1035 label).
        namespace: Kubernetes namespace.
        model: A PublishedVersion of a TritonRepository or TorchServeArchive (its URI is the
            storageUri).
        storage_uri: Instead of ``model``: where KServe reads the model as users keep it, a
            Hugging Face repository ``hf://OWNER/MODEL[:REVISION]`` (KServe 0.14+) or an OCI
            image ``oci://REGISTRY/REPO:TAG`` (modelcars enabled in KServe's
            inferenceservice-config), or any storageUri KServe reads; checked against the
            cluster's KServe before the apply. Needs model_format and served_model_name.
        served_model_name: With storage_uri: the model's name on the server (Triton's model
            folder), which validation calls.
        model_format: ``triton``, ``onnx``, ``pytorch`` or ``tensorrt``; empty: ``triton`` for
            a Triton repository, ``pytorch`` for a TorchServe archive.
        protocol_version: ``v1``, ``v2`` or ``grpc-v2``.
        runtime: A ServingRuntime/ClusterServingRuntime name; empty lets KServe choose.
        service_account: Service account of the predictor (for storage credentials).
        cpu: CPU request and limit.
        memory: Memory request and limit.
        gpus: ``nvidia.com/gpu`` request and limit.
        node_selector: Node labels the predictor must run on.
        tolerations: Pod tolerations (e.g. for GPU taints).
        min_replicas: Minimum replicas (0: scale to zero, in Knative mode or with KEDA).
        max_replicas: Maximum replicas (0: KServe's default).
        scale_metric: Knative mode: ``concurrency`` or ``rps`` (``cpu``/``memory`` switch to
            Knative's HPA class); Standard mode: ``cpu`` or ``memory`` (an HPA).
        scale_target: Autoscaling target for the metric (0: KServe's default).
        container_concurrency: Max in-flight requests per replica (0: unlimited); Knative only.
        timeout_s: Request timeout in seconds (0: KServe's default); at most 600 in Knative mode.
        deployment_mode: ``Knative`` (revisions, traffic split, scale to zero) or ``Standard``
            (a Deployment and an HPA; a canary in its own Deployment with KServe 0.20+).
            ``Serverless`` and ``RawDeployment`` are accepted as their deprecated names.
        autoscaler_class: Standard mode: ``hpa`` (KServe's default), ``keda``, ``external`` or
            ``none``.
        runtime_version: The runtime image tag (``runtimeVersion``); empty keeps the runtime's,
            except that a Triton too old for the repository's ONNX IR is moved to 24.05-py3.
        canary_traffic_percent: Below 100, a canary beside the model that serves: Knative mode
            gives the new revision that share of traffic; Standard mode (KServe 0.20+) runs it
            in its own Deployment (``spec.canary``, trafficPercent this share: KServe 0.20.0
            routes none of the users' traffic to it, later releases weight their Gateway API
            route), validated at its own Service. 100 rolls out fully. The first deploy of an
            InferenceService has nothing to canary against and takes all traffic.
        labels: Extra labels.
        annotations: Extra annotations.
        override: A partial manifest deep-merged into the generated one (lists replace). Keys
            that change the pod's identity or privileges (serviceAccountName, hostNetwork,
            hostPath, privileged, capabilities, runAsUser ...) are refused unless listed in
            override_allowed.
        override_allowed: Dotted paths of such keys in override that are intended, e.g.
            ``spec.predictor.hostNetwork``.
        accelerator: GKE GPU: ``T4``, ``L4``, ``A100``, ``A100-80GB`` or ``H100``; sets the
            ``cloud.google.com/gke-accelerator`` node selector, the GPU toleration and 1 GPU
            unless gpus says more.
        gpu_sharing: ``time-sharing`` (with max_shared_clients_per_gpu) or ``mig`` (with
            gpu_partition_size); one shared GPU per container.
        max_shared_clients_per_gpu: Time-sharing: containers per physical GPU (2-48).
        gpu_partition_size: MIG partition, e.g. ``1g.5gb`` (A100), ``1g.10gb`` (A100-80GB, H100).
        spot: Run on Spot VMs (node selector and toleration ``cloud.google.com/gke-spot``).
        gcp_service_account: Workload Identity: the Google service account the pods act as;
            service_account must be annotated with it (checked before the deploy).
        model_load_timeout_s: A startup probe allowing this long for the models to load (and,
            in Knative mode, a progress deadline above it; Knative Serving 1.15+ accepts
            startup probes).
        rollout_strategy: Standard mode: ``RollingUpdate`` (Kubernetes' default: the new pod
            starts before the old one stops, so a GPU model needs a spare GPU) or ``Recreate``
            (the old pod stops first: a short outage, no spare GPU). Empty: KServe's default.
        ingress_from_namespaces: Namespaces allowed to call the predictor: a NetworkPolicy
            ``<name>-ingress`` (Knative mode adds knative-serving, whose activator proxies
            requests); include your ingress gateway's namespace. Empty: no policy.
        ready_timeout_s: How long to wait for Ready (Triton images are large: keep it long).
        unschedulable_grace_s: How long a predictor pod may stay unschedulable (a cluster
            autoscaler adding a GPU node) before the deploy fails.
        keep_failed: Keep an InferenceService this step created when it fails.
        kserve_namespace: Where KServe is installed (its inferenceservice-config tells
            whether it reads hf:// and oci:// sources).
        metrics_monitor: Scrape the server's Prometheus metrics (Triton's queue and compute
            time, batch sizes, GPU memory) where the cluster scrapes: ``podmonitoring`` (GKE's
            Managed Service for Prometheus) or ``servicemonitor`` (Prometheus Operator, with a
            headless Service for the metrics port); owned by the InferenceService. Empty: none.
        metrics_interval_s: Scrape interval in seconds (5-3600).
        scale_query: Standard mode: scale on this PromQL query through KEDA (KServe 0.15+
            creates the ScaledObject), e.g. queue time or requests in flight per replica:
            ``sum(rate(nv_inference_queue_duration_us{model="digits"}[1m]))``. It is asked of
            Prometheus before the apply: invalid PromQL, a range vector or more than one series
            (KEDA's scaler refuses them) fail at once; no series yet is a note.
        scale_query_target: The query's value per replica KEDA keeps (its Value target).
        prometheus_url: The Prometheus HTTP API KEDA queries (e.g.
            ``http://prometheus-operated.monitoring.svc:9090``).
        api_host: Kubernetes API URL; empty uses the in-cluster service account.

    Returns:
        inference_service: A KServeInferenceService artifact: name, namespace, mode, url
            (status.url, external), internal_url (status.address.url, cluster-local),
            validation_url (what validate_endpoint calls: the canary's cluster-local tagged URL
            while traffic is split, a Standard-mode canary's own Service, else internal_url),
            latest_ready_revision, traffic, previous_predictor (what rollback re-applies in
            Standard mode), and for a Standard-mode canary its spec.canary entry and the
            predictor promoting it applies.
        report: The deployment summary.
        url: The URL clients call.
    """
    from collections import namedtuple

    from kfp_serve.components import artifacts
    from kfp_serve.components.errors import UserError
    from kfp_serve.components.kserve.api import KServeCluster, api_client
    from kfp_serve.components.kserve.gke import GkePresets
    from kfp_serve.components.kserve.keda import PrometheusScaling
    from kfp_serve.components.kserve.manifest import (
        DEFAULT_MODEL_FORMATS,
        InferenceServiceSpec,
        build_inference_service,
        build_network_policy,
    )
    from kfp_serve.components.kserve.rollout import DeployError, deploy

    published = artifacts.deployable(model, storage_uri or "", "storage_uri (hf://, oci:// or"
                                     " another source KServe reads)", "deploy_kserve")
    content = published.content if published else None
    if published is None and not (model_format and served_model_name):
        raise UserError(f"storage_uri {storage_uri} needs model_format (which runtime serves it)"
                        " and served_model_name (the model's name on that server)")
    spec = InferenceServiceSpec(
        name=name, namespace=namespace, storage_uri=published.uri if published else storage_uri,
        model_format=model_format or DEFAULT_MODEL_FORMATS[published.content_kind],
        protocol_version=protocol_version, runtime=runtime, service_account=service_account,
        cpu=cpu or None, memory=memory or None, gpus=gpus, node_selector=node_selector or {},
        tolerations=tolerations or [], min_replicas=min_replicas,
        max_replicas=max_replicas or None, scale_metric=scale_metric,
        scale_target=scale_target or None, container_concurrency=container_concurrency or None,
        timeout_s=timeout_s or None, deployment_mode=deployment_mode,
        autoscaler_class=autoscaler_class or None, runtime_version=runtime_version or None,
        canary_traffic_percent=canary_traffic_percent, labels=labels or {},
        annotations=annotations or {}, override=override or {},
        override_allowed=tuple(override_allowed or ()),
        gke=GkePresets(accelerator=accelerator or None, gpu_sharing=gpu_sharing or None,
                       max_shared_clients_per_gpu=max_shared_clients_per_gpu or None,
                       gpu_partition_size=gpu_partition_size or None, spot=spot,
                       gcp_service_account=gcp_service_account or None,
                       model_load_timeout_s=model_load_timeout_s or None),
        ingress_from_namespaces=tuple(ingress_from_namespaces or ()),
        metric_scaling=PrometheusScaling(scale_query, scale_query_target, prometheus_url or "")
        if scale_query else None,
        rollout_strategy=rollout_strategy or None,
    )
    onnx_ir_version = getattr(content, "onnx_ir_version", None)
    cluster = KServeCluster(api_client(api_host), namespace)
    try:
        result = deploy(cluster, build_inference_service(spec), timeout_s=ready_timeout_s,
                        keep_failed=keep_failed, onnx_ir_version=onnx_ir_version,
                        unschedulable_grace_s=unschedulable_grace_s,
                        network_policy=build_network_policy(spec),
                        workload_identity=(service_account, gcp_service_account)
                        if gcp_service_account else None, kserve_namespace=kserve_namespace,
                        monitor=(metrics_monitor, metrics_interval_s) if metrics_monitor else None)
    except DeployError as err:
        print(err.diagnostics)
        raise err.cause from err
    summary = result.summary(spec.storage_uri)
    with open(report.path, "w") as handle:
        handle.write(summary)
    artifacts.mark(inference_service, result.record(
        spec, content.model_name if content else served_model_name,
        getattr(content, "tensor_names", None) or {}))
    inference_service.uri = result.url or inference_service.uri
    print(summary)
    return namedtuple("Outputs", ["url"])(result.url)


@dsl.component(base_image=images.SUITE_IMAGE, install_kfp_package=False)
def promote_kserve(
    inference_service: Input[Artifact],
    ready_timeout_s: float = 600.0,
    api_host: Optional[str] = None,
) -> str:
    """Promotes the canary: all traffic to the latest revision (canaryTrafficPercent removed).

    Standard mode: a canary becomes the predictor (``predictor.name`` set to the canary's, its
    entry removed), so its Deployment carries on as the stable one and the old one is deleted;
    after a full rollout the new model already serves everything and this waits until it is
    Ready. Refused, changing nothing, when another deploy changed the InferenceService since
    (a newer revision, predictor or canary): promoting then would promote what was not
    validated. A retried promote that finds its work done does nothing.

    Args:
        inference_service: The KServeInferenceService artifact from deploy_kserve.
        ready_timeout_s: How long to wait for Ready after the change.
        api_host: Kubernetes API URL; empty uses the in-cluster service account.

    Returns:
        Output: The revision that now takes all traffic.
    """
    from kfp_serve.components import artifacts
    from kfp_serve.components.kserve.rollout import promote

    service = artifacts.read(inference_service, artifacts.KServeInferenceService)
    return promote(service, ready_timeout_s, api_host).latest_ready_revision


@dsl.component(base_image=images.SUITE_IMAGE, install_kfp_package=False)
def rollback_kserve(
    inference_service: Input[Artifact],
    ready_timeout_s: float = 600.0,
    api_host: Optional[str] = None,
) -> str:
    """Rolls the canary back: 0 % to the latest revision, all traffic to the previous one.

    Knative mode: traffic goes back to the last fully rolled-out revision. Standard mode: a
    canary's entry is removed (the stable predictor never changed); after a full rollout the
    predictor from before the deploy is applied again and its Deployment rollout awaited (an
    InferenceService the deploy created has nothing to roll back to: that is an error). A
    canary already replaced by a later deploy leaves nothing to do; a full rollout overtaken
    by another deploy is refused, changing nothing.

    Args:
        inference_service: The KServeInferenceService artifact from deploy_kserve.
        ready_timeout_s: How long to wait for Ready after the change.
        api_host: Kubernetes API URL; empty uses the in-cluster service account.

    Returns:
        Output: The URL, now serving the previous revision.
    """
    from kfp_serve.components import artifacts
    from kfp_serve.components.kserve.rollout import rollback

    service = artifacts.read(inference_service, artifacts.KServeInferenceService)
    return rollback(service, ready_timeout_s, api_host).url


@dsl.component(base_image=images.SUITE_IMAGE, install_kfp_package=False)
def delete_kserve(name: str, namespace: str, api_host: Optional[str] = None) -> bool:
    """Deletes an InferenceService (safe when it does not exist, e.g. in an exit handler).

    Args:
        name: InferenceService name.
        namespace: Kubernetes namespace.
        api_host: Kubernetes API URL; empty uses the in-cluster service account.

    Returns:
        Output: True if it existed and was deleted.
    """
    from kfp_serve.components.kserve.api import KServeCluster, api_client

    deleted = KServeCluster(api_client(api_host), namespace).delete(name)
    print(f"deleted {namespace}/{name}" if deleted else f"{namespace}/{name} did not exist")
    return deleted
