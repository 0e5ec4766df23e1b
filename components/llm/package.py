"""The steps of the LLM components as plain functions: package a checkpoint (check, card, golden
set) and run a validation from an endpoint record and a packaged checkpoint."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from kfp_serve.components import artifacts
from kfp_serve.components.errors import UserError
from kfp_serve.components.llm.checkpoint import LlmCard, check_checkpoint
from kfp_serve.components.llm.golden_set import (
    CARD_FILE,
    DEFAULT_CHAT,
    DEFAULT_PROMPTS,
    GoldenSet,
    make_golden_set,
)
from kfp_serve.components.llm.llm_validation import LlmGates, LlmValidationResult, validate_llm

DEMO = "demo"
#: the golden set is computed in float32 on the CPU; beyond this share of the machine's memory
#: the weights would not fit, and the package step says so instead of swapping
REFERENCE_MEMORY_SHARE = 0.6


def resolve_source(source: str, scratch: Path) -> Path:
    """A local folder holding the checkpoint: ``demo`` is built, ``gs://`` copied."""
    if source == DEMO:
        from kfp_serve.components.llm.demo_model import build_demo_llm

        return build_demo_llm(scratch / "demo-llm")
    if source.startswith("gs://"):
        from kfp_serve.components.storage.fetch import copy_prefix

        return copy_prefix(source, scratch / "checkpoint")
    folder = Path(source)
    if not folder.is_dir():
        raise UserError(f"checkpoint {source!r} is not a folder, a gs:// URI or 'demo'")
    return folder


def _reference_fits(card: LlmCard) -> bool:
    total = _memory_bytes()
    return total == 0 or card.parameters * 4 <= REFERENCE_MEMORY_SHARE * total


def _memory_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def package_checkpoint(source: str, target: Path, scratch: Path, model_name: str = "",
                       allow_pickle: bool = False, require_chat_template: bool = True,
                       prompts: list[str] | None = None, chat_prompts: list[str] | None = None,
                       max_tokens: int = 16, top_k: int = 5
                       ) -> tuple[artifacts.LlmCheckpoint, str]:
    """Check the checkpoint at ``source``, copy it to ``target`` with its card and golden set,
    and return its record and the card as Markdown. Nothing is written to ``target`` before
    the checks pass."""
    folder = resolve_source(source, scratch)
    card = check_checkpoint(folder, allow_pickle=allow_pickle,
                            require_chat_template=require_chat_template)
    if not _reference_fits(card):
        raise UserError(f"{card.parameters:,} parameters need {card.parameters * 4 / 2**30:.1f}"
                        " GiB in float32 for the golden set, more than this machine has; run the"
                        " package step on a larger machine")
    golden = make_golden_set(folder, prompts or DEFAULT_PROMPTS,
                             chat_prompts or DEFAULT_CHAT if card.has_chat_template else (),
                             max_tokens=max_tokens, top_k=top_k)
    name = model_name or (folder.name if source != DEMO else "demo-llm")
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(folder, target, ignore=shutil.ignore_patterns(".cache", ".git*"))
    (target / CARD_FILE).write_text(json.dumps(card.to_dict(), indent=2) + "\n")
    golden.save(target)
    record = artifacts.LlmCheckpoint(model_name=name, card=card.to_dict(),
                                     golden_prompts=len(golden.entries))
    return record, f"# LLM card: {name}\n\n{card.markdown()}\n"


def checked_max_model_len(card: dict[str, Any], asked: int) -> int:
    """The max model length to serve: ``asked``, or the card's maximum context (0 asked); more
    than the model's context is a one-line error before any server starts."""
    context = int(card.get("max_context", 0))
    if asked < 0:
        raise UserError(f"max_model_len {asked} must be >= 0 (0: the model's {context})")
    if asked and context and asked > context:
        raise UserError(f"max_model_len {asked} is beyond the model's maximum context of"
                        f" {context} tokens (its card); lower it to {context} or less")
    return asked or context


def run_validation(served: artifacts.ServingEndpoint | artifacts.KServeInferenceService
                   | artifacts.VertexEndpoint, checkpoint: artifacts.LlmCheckpoint,
                   folder: str, concurrency: list[int], request_rates: list[float],
                   num_prompts: int, input_len: int, output_len: int, prompt_file: str,
                   slo: tuple[float, float, float], gates: tuple[float, ...],
                   logprob_atol: float, metrics_url: str, machine_type: str,
                   hourly_price: float, timeout_s: float,
                   parity_reference: str = "golden") -> LlmValidationResult:
    """validate_llm_endpoint's work, from its parameters."""
    from kfp_serve.components.cost import hourly_price as price_of
    from kfp_serve.components.llm.llm_load import Slo, file_prompts, synthetic_prompts
    from kfp_serve.components.llm.targets import describe, openai_target, parity_reference_target

    if served.protocol != "openai":
        raise UserError(f"endpoint {describe(served)} speaks {served.protocol!r};"
                        " validate_llm_endpoint needs an OpenAI-compatible LLM endpoint"
                        " (deploy_local_llm, deploy_kserve_llm, deploy_vertex_llm)")
    target = openai_target(served)
    reference = parity_reference_target(served, target, parity_reference)
    if any(c < 1 for c in concurrency) or any(r <= 0 for r in request_rates):
        raise UserError(f"concurrency {concurrency} must be >= 1 and request_rates"
                        f" {request_rates} > 0")
    card = LlmCard.from_dict(checkpoint.card)
    golden = GoldenSet.load(folder)
    if not golden.entries:
        raise UserError(f"the golden set in {folder} is empty; package the checkpoint again")
    if input_len + output_len > int(card.max_context):
        raise UserError(f"input_len {input_len} + output_len {output_len} exceed the model's"
                        f" {card.max_context}-token context; shorten them")

    def bodies_for(level: int) -> list[dict[str, Any]]:
        count = num_prompts or max(16, 8 * level)
        if prompt_file:
            prompts = file_prompts(prompt_file, output_len)
            return [prompts[k % len(prompts)] for k in range(count)]
        return synthetic_prompts(count, input_len, output_len, card.vocab_size,
                                 card.eos_token_ids, seed=level)

    levels = [(c, 0.0) for c in concurrency] + [(max(concurrency or [64]), r) for r in request_rates]
    if not levels:
        raise UserError("give at least one concurrency level or request rate")
    price = price_of(machine_type or None, hourly_price or None)
    if metrics_url:
        target = dataclasses.replace(target, metrics_url=metrics_url)
    return validate_llm(
        target, golden, int(card.max_context), card.vocab_size, card.has_chat_template, levels,
        bodies_for, LlmGates(*gates), Slo(*slo), logprob_atol=logprob_atol, price=price,
        timeout_s=timeout_s, reference=reference)
