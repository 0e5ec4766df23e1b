"""Small reference models with the shapes real serving models have, for tests and benchmarks.

``TextEncoder`` has two named inputs (int64 token ids and a float mask), a dynamic batch and a
dynamic sequence length, and two outputs — the case a single-image CNN does not cover.
"""

from __future__ import annotations

import numpy as np

from kfp_serve.components.signature import BATCH, ModelSignature, TensorSpec

SEQ = "seq"


def text_encoder_signature(num_classes: int, d_model: int) -> ModelSignature:
    return ModelSignature(
        inputs=(TensorSpec("input_ids", "int64", (BATCH, SEQ)),
                TensorSpec("attention_mask", "float32", (BATCH, SEQ))),
        outputs=(TensorSpec("logits", "float32", (BATCH, num_classes)),
                 TensorSpec("pooled", "float32", (BATCH, d_model))),
        metadata={"task": "text-classification"},
    )


def build_text_encoder(vocab: int = 1000, d_model: int = 64, layers: int = 2, heads: int = 4,
                       ff: int = 128, num_classes: int = 3, max_len: int = 512, seed: int = 0):
    """A transformer encoder classifier; ~25M parameters with vocab=8000, d_model=512, layers=6,
    heads=8, ff=2048."""
    import torch
    from torch import nn

    class TextEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, d_model)
            self.position = nn.Parameter(torch.randn(max_len, d_model) * 0.02)
            layer = nn.TransformerEncoderLayer(d_model, heads, ff, dropout=0.0, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.head = nn.Linear(d_model, num_classes)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
            seq = input_ids.shape[1]
            x = self.embed(input_ids) + self.position[:seq]
            x = self.encoder(x, src_key_padding_mask=attention_mask == 0)
            weights = attention_mask.unsqueeze(-1)
            pooled = (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)
            return self.head(pooled), pooled

    torch.manual_seed(seed)
    return TextEncoder().eval()


def text_encoder_inputs(batch: int, seq: int, vocab: int = 1000, seed: int = 0) -> dict[str, np.ndarray]:
    """Random token ids with right padding (every row keeps at least one token)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, size=(batch, seq), dtype=np.int64)
    lengths = rng.integers(1, seq + 1, size=batch)
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.float32)
    return {"input_ids": ids * mask.astype(np.int64), "attention_mask": mask}
