"""deploy_kserve_llm's work: the vLLM InferenceService from a published checkpoint, through the
same preflight, apply, wait, diagnostics and canary as deploy_kserve."""

from __future__ import annotations

import dataclasses

from kfp_serve.components import artifacts, vllm_failures
from kfp_serve.components.kserve.llm_runtime import (
    VllmSettings,
    fit,
    knative_note,
    predictor_override,
)


def deploy_llm(published: artifacts.PublishedVersion, name: str, namespace: str,
               runtime_kind: str, settings: VllmSettings, accelerator: str | None, gpus: int,
               cpu: str, memory: str, deployment_mode: str, canary_traffic_percent: int,
               service_account: str | None, spot: bool, model_load_timeout_s: int,
               min_replicas: int, max_replicas: int, timeout_s: int,
               metrics_monitor: str | None, ready_timeout_s: float, keep_failed: bool,
               kserve_namespace: str, api_host: str | None
               ) -> tuple[artifacts.KServeInferenceService, str]:
    """Check, apply and wait; the record validation and promote/rollback read, and the summary."""
    from kfp_serve.components.kserve.api import KServeCluster, api_client
    from kfp_serve.components.kserve.gke import GkePresets
    from kfp_serve.components.kserve.manifest import InferenceServiceSpec, build_inference_service
    from kfp_serve.components.kserve.rollout import DeployError, deploy

    checkpoint: artifacts.LlmCheckpoint = published.content  # type: ignore[assignment]
    gpus = gpus or (1 if accelerator else 0)
    length, budget = fit(checkpoint.card, settings, accelerator, gpus)
    model_format, prefix, override = predictor_override(runtime_kind, settings, length, gpus)
    spec = InferenceServiceSpec(
        name=name, namespace=namespace, storage_uri=published.uri, model_format=model_format,
        protocol_version="v2", service_account=service_account, cpu=cpu or None,
        memory=memory or None, gpus=gpus if not accelerator else 0, min_replicas=min_replicas,
        max_replicas=max_replicas or None, timeout_s=timeout_s or None,
        deployment_mode=deployment_mode, canary_traffic_percent=canary_traffic_percent,
        override=override,
        gke=GkePresets(accelerator=accelerator, spot=spot,
                       model_load_timeout_s=model_load_timeout_s or None))
    if accelerator and gpus > 1:  # the presets ask for one GPU unless told more
        spec = dataclasses.replace(spec, gpus=gpus)
    cluster = KServeCluster(api_client(api_host), namespace)
    try:
        result = deploy(cluster, build_inference_service(spec), timeout_s=ready_timeout_s,
                        keep_failed=keep_failed, kserve_namespace=kserve_namespace,
                        monitor=(metrics_monitor, 30) if metrics_monitor else None)
    except DeployError as err:
        print(err.diagnostics)
        line = str(err.cause)
        if "\n" in line:  # a termination message holds the log's tail: vLLM's reason from it
            head, _, log = line.partition("kserve-container: ")
            line = f"{head}kserve-container: {vllm_failures.error_lines(log, 1)}"
        advice = vllm_failures.recognise(err.diagnostics)
        if advice:  # a failure vLLM is known for: the line says what to change
            line = f"{line} — {advice}"
        if line == str(err.cause):
            raise err.cause from err
        raise type(err.cause)(line) from err
    record = result.record(spec, name, {})
    record = dataclasses.replace(record, protocol="openai",
                                 validation_url=(record.validation_url or record.internal_url) + prefix)
    notes = [f"memory: {budget}", knative_note(deployment_mode, timeout_s)]
    summary = result.summary(spec.storage_uri) + "".join(f"\n- {n}" for n in notes if n) + "\n"
    return record, summary

