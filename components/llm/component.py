"""KFP wrappers: package an LLM checkpoint, serve it with a local vLLM, validate an LLM endpoint."""

from typing import List, Optional

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Markdown, Metrics, Model, Output

from kfp_serve.components import images


@dsl.component(base_image=images.SUITE_IMAGE, install_kfp_package=False)
def package_llm_checkpoint(
    packaged: Output[Artifact],
    published: Output[Artifact],
    card: Output[Markdown],
    destination: str,
    checkpoint: Optional[Input[Model]] = None,
    checkpoint_uri: str = "",
    model_name: str = "",
    allow_pickle: bool = False,
    require_chat_template: bool = True,
    golden_prompts: List[str] = [],  # noqa: B006 (KFP reads the default; never mutated)
    golden_chat_prompts: List[str] = [],  # noqa: B006
    golden_tokens: int = 16,
    golden_top_k: int = 5,
    version: int = 0,
    workers: int = 8,
):
    """Checks a Hugging Face checkpoint, writes its card and golden set, publishes a new version.

    Before anything is published: safetensors weights (pickle refused unless allowed), a
    tokenizer, a chat template, ``generation_config.json``, an architecture transformers ships
    (no remote code) and a maximum context. The card gives the architecture, parameters, dtype
    and bytes, maximum context and KV-cache bytes per token; the golden set holds greedy token
    ids, text and top-k log-probabilities per step for raw and chat prompts, from transformers
    in float32 on the CPU. Both travel inside the version, which is committed as
    ``publish_model`` commits one (manifest last, nothing overwritten).

    Args:
        destination: ``gs://BUCKET/PATH`` or a local folder to publish ``v<N>`` under.
        checkpoint: A model folder from an earlier step (``save_pretrained``'s output).
        checkpoint_uri: Instead of ``checkpoint``: a ``gs://`` folder, a local folder, or
            ``demo`` (a tiny Llama with random weights and a tokenizer trained on Python's
            own documentation, made on the spot: the pipelines' embedded default).
        model_name: The name servers serve it under (default: the folder's name).
        allow_pickle: Accept ``.bin``/``.pt`` weights (pickle runs code when loaded).
        require_chat_template: Fail without a chat template (False: completions only).
        golden_prompts: Raw prompts of the golden set (empty: the suite's four).
        golden_chat_prompts: User messages of the golden set's chat prompts (empty: two).
        golden_tokens: Greedy tokens per golden prompt.
        golden_top_k: Log-probabilities kept per step.
        version: Version number to publish; 0 takes the next free one.
        workers: Parallel uploads.

    Returns:
        packaged: An LlmCheckpoint artifact: the checked folder with its card and golden set.
        published: A PublishedVersion of it (``storageUri`` of the LLM deploy steps).
        card: The LLM card as a table.
    """
    import shutil
    import tempfile
    from pathlib import Path

    from kfp_serve.components import artifacts
    from kfp_serve.components.errors import UserError
    from kfp_serve.components.llm.package import package_checkpoint
    from kfp_serve.components.storage.publish import publish

    if (checkpoint is None) == (not checkpoint_uri):
        raise UserError("package_llm_checkpoint needs exactly one of checkpoint (an input"
                        " artifact) and checkpoint_uri (gs://..., a folder, or demo)")
    with tempfile.TemporaryDirectory(prefix="kfp-serve-llm-") as scratch:
        if checkpoint is not None:
            from kfp_serve.components.storage.fetch import local_folder

            source = local_folder(checkpoint)
        else:
            source = checkpoint_uri
        record, card_text = package_checkpoint(
            source, Path(packaged.path), Path(scratch), model_name=model_name,
            allow_pickle=allow_pickle, require_chat_template=require_chat_template,
            prompts=list(golden_prompts), chat_prompts=list(golden_chat_prompts),
            max_tokens=golden_tokens, top_k=golden_top_k)
    artifacts.mark(packaged, record)
    result = publish(packaged.path, destination, version=version, workers=workers)
    artifacts.mark(published, artifacts.PublishedVersion(
        uri=result.uri, published_version=result.version, content=record, files=result.files,
        bytes=result.bytes))
    published.uri = result.uri
    Path(card.path).write_text(card_text)
    shutil.rmtree(Path(packaged.path) / ".cache", ignore_errors=True)
    print(card_text)
    print(f"published {result.files} files ({result.bytes / 1e6:.1f} MB) to {result.uri}")


@dsl.component(base_image=images.SUITE_IMAGE, install_kfp_package=False)
def deploy_local_llm(
    model: Input[Artifact],
    endpoint: Output[Artifact],
    deployment: str,
    port: int = 0,
    max_model_len: int = 0,
    dtype: str = "auto",
    max_num_seqs: int = 0,
    kv_cache_gib: int = 1,
    extra_args: List[str] = [],  # noqa: B006
    ready_timeout_s: float = 300.0,
):
    """Serves a published LLM checkpoint with a real vLLM (CPU build) on 127.0.0.1, detached.

    vLLM runs from its own environment (``make llm-env``; ``$KFP_SERVE_VLLM_PYTHON`` names
    another). The server keeps running after this step; stop it with ``undeploy_local_llm``
    (the pipelines do so in an exit handler). On failure the server is stopped and the error
    gives vLLM's reason and what to change.

    Args:
        model: A PublishedVersion of an LlmCheckpoint (fetched and checked against its
            manifest), or the LlmCheckpoint itself.
        deployment: A name unique on the machine (pipelines pass the run id).
        port: HTTP port on 127.0.0.1; 0 picks a free one.
        max_model_len: vLLM's ``--max-model-len``; 0: the card's maximum context. More than the
            card's maximum is refused before the start.
        dtype: vLLM's ``--dtype`` (auto: the checkpoint's).
        max_num_seqs: vLLM's ``--max-num-seqs``; 0: vLLM's default.
        kv_cache_gib: KV-cache space of the CPU backend (``VLLM_CPU_KVCACHE_SPACE``).
        extra_args: More vLLM arguments, as on its command line.
        ready_timeout_s: How long to wait for the model to be served.

    Returns:
        endpoint: A ServingEndpoint artifact (protocol ``openai``): ``url``, ``metrics_url``
            (``vllm:*``), ``model_name``, ``pid``, ``log_path``.
    """
    import json

    from kfp_serve.components import artifacts
    from kfp_serve.components.llm.package import checked_max_model_len
    from kfp_serve.components.llm.vllm_server import start_vllm
    from kfp_serve.components.local.triton_server import hold_while_serving

    given = artifacts.read(model, artifacts.LlmCheckpoint, artifacts.PublishedVersion)
    if isinstance(given, artifacts.PublishedVersion):
        served = artifacts.read_published(model, artifacts.LlmCheckpoint).content
        source = given.uri
    else:
        served, source = given, model.path
    length = checked_max_model_len(served.card, max_model_len)
    record = start_vllm(source, served.model_name, deployment, length, port=port, dtype=dtype,
                        max_num_seqs=max_num_seqs, kv_cache_gib=kv_cache_gib,
                        extra_args=list(extra_args), timeout_s=ready_timeout_s)
    artifacts.mark(endpoint, artifacts.ServingEndpoint(
        url=record.url, model_name=record.model_name, protocol="openai",
        metrics_url=record.metrics_url, pid=record.pid, deployment=record.deployment,
        log_path=record.log_path))
    with open(endpoint.path, "w") as handle:
        json.dump(endpoint.metadata, handle, indent=2)
    print(f"vLLM serving {record.model_name!r} (max_model_len {length}) at {record.url}"
          f" (pid {record.pid})")
    hold_while_serving(record)


@dsl.component(base_image=images.SUITE_IMAGE, install_kfp_package=False)
def undeploy_local_llm(deployment: str) -> bool:
    """Stops the vLLM server that ``deploy_local_llm`` started under the same deployment name.

    Safe to run when nothing is running (for example after a failed deploy).

    Args:
        deployment: The name given to ``deploy_local_llm``.

    Returns:
        Output: True if a running server was stopped.
    """
    from kfp_serve.components.local.triton_server import undeploy

    return undeploy(deployment)


@dsl.component(base_image=images.SUITE_IMAGE, install_kfp_package=False)
def validate_llm_endpoint(
    endpoint: Input[Artifact],
    model: Input[Artifact],
    metrics: Output[Metrics],
    report: Output[Markdown],
    html_report: Output[HTML],
    concurrency: List[int] = [1, 4, 16],  # noqa: B006
    request_rates: List[float] = [],  # noqa: B006
    num_prompts: int = 0,
    input_len: int = 128,
    output_len: int = 64,
    prompt_file: str = "",
    slo_ttft_ms: float = 0.0,
    slo_tpot_ms: float = 0.0,
    slo_e2el_ms: float = 0.0,
    max_p95_ttft_ms: float = 0.0,
    max_p95_tpot_ms: float = 0.0,
    max_p95_itl_ms: float = 0.0,
    max_error_rate: float = 0.0,
    min_goodput_ratio: float = 0.0,
    min_output_tokens_per_s: float = 0.0,
    logprob_atol: float = 0.05,
    parity_reference: str = "golden",
    metrics_url: str = "",
    machine_type: str = "",
    hourly_price: float = 0.0,
    request_timeout_s: float = 300.0,
    fail_on_mismatch: bool = True,
) -> bool:
    """Checks a live OpenAI-compatible LLM endpoint: conformance, parity, TTFT/TPOT/ITL under load.

    Conformance: ``/v1/models`` names the model and its max length, completions and chat
    answer, the stream is well formed (``data:`` events, ``[DONE]``, usage, finish_reason) and
    really streams, an over-long request gets 400 and an unknown model 404. Parity: greedy
    token ids against the golden set (log-probabilities within ``logprob_atol``; a near tie
    within it may flip). Load: a concurrency sweep (and request rates) of streamed completions
    of fixed input/output lengths, measured as ``vllm bench serve`` measures them, with vLLM's
    own metrics per level. The verdict fails closed: any failed check, any failed request
    (``max_error_rate`` 0) or a level that measured nothing fails it.

    Args:
        endpoint: A ServingEndpoint (``deploy_local_llm``), KServeInferenceService
            (``deploy_kserve_llm``: its canary while traffic is split) or VertexEndpoint
            (``deploy_vertex_llm``: its deployed model alone, through its own invoke route) with
            protocol ``openai``.
        model: The LlmCheckpoint that was deployed (its golden set and card).
        concurrency: Requests in flight per load level (empty: no concurrency sweep).
        request_rates: Requests/s per extra level, Poisson arrivals (empty: none).
        num_prompts: Requests per level; 0: 8 x concurrency, at least 16.
        input_len: Tokens per synthetic prompt.
        output_len: Tokens asked per request (``ignore_eos``: every answer is this long).
        prompt_file: A JSONL file of ``{"prompt": ..., "max_tokens": N}`` lines instead.
        slo_ttft_ms: Per-request TTFT limit that counts a request as goodput (0: none).
        slo_tpot_ms: Per-request TPOT limit for goodput (0: none).
        slo_e2el_ms: Per-request end-to-end limit for goodput (0: none).
        max_p95_ttft_ms: Gate: p95 TTFT at every level (0: no gate).
        max_p95_tpot_ms: Gate: p95 TPOT at every level (0: no gate).
        max_p95_itl_ms: Gate: p95 inter-token latency at every level (0: no gate).
        max_error_rate: Gate: failed share of requests at every level (default 0).
        min_goodput_ratio: Gate: share of requests meeting the SLO at every level (0: none).
        min_output_tokens_per_s: Gate: best output tokens/s over the levels (0: none).
        logprob_atol: Log-probability tolerance of parity (raise it for bf16/fp8/quantized).
        parity_reference: Whose greedy answers parity compares with: ``golden`` (the golden set
            from transformers), ``stable`` (the deployed model that served before this deploy
            on a Vertex AI endpoint: a canary against stable, for models too large for a CPU
            reference), or the OpenAI base URL of a server to compare with.
        metrics_url: vLLM's Prometheus page; empty: the endpoint's own.
        machine_type: Prices output tokens from the suite's price table (components/cost.py).
        hourly_price: USD per hour of the serving node; overrides machine_type.
        request_timeout_s: Limit per request.
        fail_on_mismatch: Fail the step when validation fails; otherwise only return False.

    Returns:
        metrics: Conformance and parity failures, per level requests/s, output tokens/s,
            p95 TTFT/TPOT/ITL/E2EL, error rate, goodput, the server's queue time and KV-cache
            peak, the cost per million output tokens, and the verdict.
        report: The validation as Markdown tables.
        html_report: The same with TTFT/ITL distributions and the throughput/latency frontier.
        Output: True when everything passed.
    """
    from kfp_serve.components import artifacts
    from kfp_serve.components.errors import VerificationError
    from kfp_serve.components.llm import llm_report
    from kfp_serve.components.llm.package import run_validation
    from kfp_serve.components.storage.fetch import local_folder

    served = artifacts.read(endpoint, artifacts.ServingEndpoint, artifacts.KServeInferenceService,
                            artifacts.VertexEndpoint)
    checkpoint = artifacts.read(model, artifacts.LlmCheckpoint)
    result = run_validation(
        served, checkpoint, local_folder(model), concurrency=[int(c) for c in concurrency],
        request_rates=[float(r) for r in request_rates], num_prompts=num_prompts,
        input_len=input_len, output_len=output_len, prompt_file=prompt_file,
        slo=(slo_ttft_ms, slo_tpot_ms, slo_e2el_ms),
        gates=(max_p95_ttft_ms, max_p95_tpot_ms, max_p95_itl_ms, max_error_rate,
               min_goodput_ratio, min_output_tokens_per_s),
        logprob_atol=logprob_atol, metrics_url=metrics_url, machine_type=machine_type,
        hourly_price=hourly_price, timeout_s=request_timeout_s, parity_reference=parity_reference)
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)
    with open(report.path, "w") as handle:
        handle.write(llm_report.markdown(result))
    with open(html_report.path, "w") as handle:
        handle.write(llm_report.html(result))
    print(llm_report.markdown(result))
    if fail_on_mismatch and not result.passed:
        raise VerificationError(f"LLM endpoint validation failed: {result.failure_line()}")
    return result.passed
