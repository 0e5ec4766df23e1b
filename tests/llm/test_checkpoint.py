"""The checkpoint checks and the LLM card, against a real Llama checkpoint and broken copies."""

from __future__ import annotations

import json

import pytest

from kfp_serve.components.errors import UserError
from kfp_serve.components.llm.checkpoint import check_checkpoint
from kfp_serve.components.llm.package import checked_max_model_len, package_checkpoint


def test_card_matches_what_transformers_loads(packaged_llm):
    from transformers import AutoModelForCausalLM

    folder, record = packaged_llm
    card = check_checkpoint(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert card.parameters == sum(p.numel() for p in model.parameters())
    assert card.weight_bytes == sum(p.numel() * p.element_size() for p in model.parameters())
    assert (card.architecture, card.dtype, card.max_context) == ("LlamaForCausalLM", "float32", 1024)
    # key and value, 2 layers, 2 KV heads of 64, float32
    assert card.kv_cache_bytes_per_token == 2 * 2 * 2 * 64 * 4
    assert record.card["kv_cache_bytes_per_token"] == card.kv_cache_bytes_per_token
    assert record.golden_prompts == 6  # four raw prompts, two chat prompts


def _break(folder, how):
    if how == "no tokenizer":
        (folder / "tokenizer.json").unlink()
    elif how == "remote code":
        config = json.loads((folder / "config.json").read_text())
        config["auto_map"] = {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}
        (folder / "config.json").write_text(json.dumps(config))
    elif how == "pickle":
        import torch
        from safetensors.torch import load_file

        torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink()
    elif how == "no chat template":
        (folder / "chat_template.jinja").unlink()
    elif how == "no generation config":
        (folder / "generation_config.json").unlink()
    elif how == "unknown architecture":
        config = json.loads((folder / "config.json").read_text())
        config["architectures"] = ["LlamaForTokenClassificationX"]
        (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("how, says", [
    ("no tokenizer", "has no tokenizer"),
    ("remote code", "needs remote code"),
    ("pickle", "set allow_pickle=True"),
    ("no chat template", "set require_chat_template=False"),
    ("no generation config", "has no generation_config.json"),
    ("unknown architecture", "not a causal language model transformers knows"),
])
def test_a_bad_checkpoint_is_one_line_that_says_what_to_change(demo_copy, tmp_path, how, says):
    _break(demo_copy, how)
    target = tmp_path / "packaged-out"
    with pytest.raises(UserError) as caught:
        package_checkpoint(str(demo_copy), target, tmp_path / "scratch")
    assert says in str(caught.value) and "\n" not in str(caught.value)
    assert not target.exists()  # nothing half-written


def test_pickle_weights_pass_when_allowed_and_chat_template_can_be_waived(demo_copy):
    _break(demo_copy, "pickle")
    _break(demo_copy, "no chat template")
    card = check_checkpoint(demo_copy, allow_pickle=True, require_chat_template=False)
    assert card.weight_dtypes == ("float32",) and not card.has_chat_template


def test_max_model_len_beyond_the_model_is_refused_before_any_start():
    card = {"max_context": 1024}
    assert checked_max_model_len(card, 0) == 1024
    assert checked_max_model_len(card, 512) == 512
    with pytest.raises(UserError, match="beyond the model's maximum context of 1024 tokens"):
        checked_max_model_len(card, 4096)
