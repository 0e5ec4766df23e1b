"""vLLM on KServe: the memory budget and arguments (no cluster), then deploy_kserve_llm against
the fake controller, which runs KServe's vllmserver container with the local vLLM: Ready, the
CPU image rewrite, validation through the cluster gateway, a canary promoted, a start vLLM
refuses named in the step's last line."""

from __future__ import annotations

import pytest
from support.kserve import artifact

from kfp_serve.components.errors import KfpServeError, UserError
from kfp_serve.components.kserve.llm_runtime import VllmSettings, fit, predictor_override

#: a 7B Llama-like card in bfloat16 (32 layers, 8 KV heads of 128: 128 KiB per token)
CARD_7B = {"max_context": 32768, "parameters": 7_000_000_000, "dtype": "bfloat16",
           "attention_heads": 32, "kv_heads": 8, "kv_cache_bytes_per_token": 2 * 32 * 8 * 128 * 2}


def test_a_7b_model_fits_one_l4_at_8k_but_not_a_t4_and_says_why():
    length, budget = fit(CARD_7B, VllmSettings(max_model_len=8192), "L4", 1)
    assert length == 8192 and "1 x L4: weights 13.0 GiB, KV cache room for" in budget
    with pytest.raises(UserError, match=r"does not fit 1 x T4: weights 13.0 GiB \+ KV cache for"
                                        r" one 32768-token sequence 4.00 GiB > 14.4 GiB"):
        fit(CARD_7B, VllmSettings(), "T4", 1)
    # two T4s hold it, with room for a few full-length sequences, not 64
    with pytest.raises(UserError, match="holds 3 sequences of 32768 tokens, fewer than max_num_seqs 64"):
        fit(CARD_7B, VllmSettings(max_num_seqs=64), "T4", 2)


def test_lengths_heads_and_settings_are_checked_before_any_apply():
    with pytest.raises(UserError, match="beyond the model's maximum context of 32768 tokens"):
        fit(CARD_7B, VllmSettings(max_model_len=65536), "L4", 1)
    with pytest.raises(UserError, match="32 attention heads do not split over tensor_parallel_size 3"):
        fit(CARD_7B, VllmSettings(tensor_parallel_size=3), "L4", 3)
    with pytest.raises(UserError, match="gpu_memory_utilization 1.5 must be in"):
        VllmSettings(gpu_memory_utilization=1.5)
    with pytest.raises(UserError, match="would change what the serving container sets itself"):
        VllmSettings(extra_args=("--port=9000",))


def test_the_settings_become_the_runtime_s_arguments():
    settings = VllmSettings(max_num_seqs=32, enable_prefix_caching=True, quantization="awq",
                            extra_args=("--swap-space=0",))
    fmt, prefix, override = predictor_override("vllm", settings, 4096, 2)
    model = override["spec"]["predictor"]["model"]
    assert (fmt, prefix, model["terminationMessagePolicy"]) == ("vLLM", "", "FallbackToLogsOnError")
    assert model["args"] == ["--max-model-len=4096", "--dtype=auto", "--gpu-memory-utilization=0.9",
                             "--tensor-parallel-size=2", "--max-num-seqs=32",
                             "--enable-prefix-caching", "--quantization=awq", "--swap-space=0"]
    fmt, prefix, override = predictor_override("huggingface", VllmSettings(), 1024, 0)
    assert (fmt, prefix) == ("huggingface", "/openai")
    assert override["spec"]["predictor"]["model"]["args"][0] == "--backend=vllm"


@pytest.mark.usefixtures("vllm_environment")
def test_deploy_validate_canary_and_promote_vllm_on_the_fake_cluster(kube, published_llm, packaged_llm, tmp_path):
    from kfp import dsl

    from kfp_serve.components import delete_kserve, deploy_kserve_llm, promote_kserve, validate_llm_endpoint

    api, url = kube
    isvc = artifact("inference_service", str(tmp_path / "isvc"))
    report = artifact("report", str(tmp_path / "report.md"))
    outputs = deploy_kserve_llm.python_func(model=published_llm(), inference_service=isvc,
                                            report=report, name="chat", namespace="models",
                                            api_host=url, max_model_len=512, ready_timeout_s=240)
    assert isvc.metadata["protocol"] == "openai" and isvc.metadata["model_name"] == "chat"
    assert outputs.url == isvc.metadata["url"]
    summary = (tmp_path / "report.md").read_text()
    assert "no GPU: KServe runs the runtime's CPU image" in summary
    pod = api.pods["chat"][0]
    assert pod["status"]["containerStatuses"][0]["image"] == "vllm/vllm-openai-cpu:latest"
    stored = api.objects[("models", "chat")]["spec"]["predictor"]["model"]
    assert stored["modelFormat"]["name"] == "vLLM" and "--max-model-len=512" in stored["args"]

    checkpoint = artifact("packaged", str(packaged_llm[0]), packaged_llm[1])

    def validate(where):
        return validate_llm_endpoint.python_func(
            endpoint=isvc, model=checkpoint, metrics=dsl.Metrics(name="m", uri=str(where / "m")),
            report=dsl.Markdown(name="r", uri=str(where / "r.md")),
            html_report=dsl.HTML(name="h", uri=str(where / "h.html")), concurrency=[2],
            num_prompts=4, input_len=32, output_len=8)

    (tmp_path / "v1").mkdir()
    assert validate(tmp_path / "v1") is True
    text = (tmp_path / "v1" / "r.md").read_text()
    assert "max_model_len 512" in text and text.count("token ids equal") == 6

    deploy_kserve_llm.python_func(model=published_llm(), inference_service=isvc, report=report,
                                  name="chat", namespace="models", api_host=url, max_model_len=512,
                                  canary_traffic_percent=20, ready_timeout_s=240)
    assert isvc.metadata["canary"] and "-c" in isvc.metadata["validation_url"]
    (tmp_path / "v2").mkdir()
    assert validate(tmp_path / "v2") is True  # the canary's own Service
    promote_kserve.python_func(inference_service=isvc, api_host=url)
    predictor = api.objects[("models", "chat")]["spec"]["predictor"]
    assert predictor["model"]["storageUri"].endswith("/v2") and not api.objects[("models", "chat")]["spec"].get("canary")
    assert delete_kserve.python_func(name="chat", namespace="models", api_host=url) is True


@pytest.mark.usefixtures("vllm_environment")
def test_a_start_vllm_refuses_reaches_the_step_s_last_line(kube, published_llm, tmp_path, capsys):
    from kfp_serve.components import deploy_kserve_llm

    _, url = kube
    with pytest.raises(KfpServeError) as caught:
        deploy_kserve_llm.python_func(
            model=published_llm(), inference_service=artifact("i", str(tmp_path / "i")),
            report=artifact("r", str(tmp_path / "r")), name="chat", namespace="models",
            api_host=url, max_model_len=1024, extra_args=["--no-enable-chunked-prefill",
                                                          "--max-num-batched-tokens=16"],
            ready_timeout_s=240)
    line = str(caught.value)
    assert line.startswith("InferenceService 'chat' failed: ModelLoadFailed in kserve-container:"
                           " max_num_batched_tokens (16) is smaller than max_model_len (1024)")
    assert "\n" not in line  # vLLM's own reason, from the termination message
    assert "kserve-container (last 30 lines)" in capsys.readouterr().out
