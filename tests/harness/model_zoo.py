"""Small reference models with the shapes real serving models have, for tests and benchmarks.

``TextEncoder`` has two named inputs (int64 token ids and a float mask), a dynamic batch and a
dynamic sequence length, and two outputs — the case a single-image CNN does not cover. ``ZOO``
holds the architectures users bring (a Hugging Face encoder, a ResNet, a GRU, dict outputs,
uint8 images, bool/int32 inputs, data-dependent control flow; a left-padded decoder LM, a
vision transformer, a T5 encoder, audio convolutions, a detection head, argmax outputs, a packed
LSTM with no ONNX route, a float16 model).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


# ---------------------------------------------------------------------------------------------
# The zoo: the kinds of models users serve every day, built from code with random weights (no
# downloads). Each entry is what a user hands to save_torch_model: a module, its signature and
# example inputs as torch tensors (the natural way to write them).
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZooModel:
    """A model, its signature, and example inputs at a batch size (torch tensors)."""

    name: str
    build: Callable[[], Any]
    signature: ModelSignature
    example: Callable[[int], dict[str, Any]]
    note: str = ""
    no_onnx: str = ""  # why no ONNX exporter can take it (served as TorchScript instead)
    triton_max_batch_size: int = 8  # 0 where an input holds one value per row


def _bert():
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=64)
    return BertModel(config).eval()


def _bert_example(batch: int) -> dict[str, Any]:
    import torch

    generator = torch.Generator().manual_seed(batch)
    ids = torch.randint(1, 1000, (batch, 12), generator=generator)
    mask = torch.ones(batch, 12, dtype=torch.int64)
    mask[0, 9:] = 0  # one padded row
    return {"input_ids": ids, "attention_mask": mask,
            "token_type_ids": torch.zeros(batch, 12, dtype=torch.int64)}


def _resnet18(width: int = 16, classes: int = 10):
    """torchvision's ResNet-18 layout (BasicBlock x [2, 2, 2, 2], stride-2 stages, BatchNorm,
    projection shortcuts) written here: torchvision's PyPI wheels need the CUDA torch. Base width
    16 instead of 64 keeps it quick on 2 cores; the graph is the same."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.down = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                         if stride != 1 or cin != cout else nn.Identity())

        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(out)) + self.down(x))

    class ResNet18(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width),
                                      nn.ReLU(), nn.MaxPool2d(3, 2, 1))
            stages, cin = [], width
            for i, cout in enumerate((width, width * 2, width * 4, width * 8)):
                stages += [Block(cin, cout, 1 if i == 0 else 2), Block(cout, cout, 1)]
                cin = cout
            self.stages = nn.Sequential(*stages)
            self.fc = nn.Linear(cin, classes)

        def forward(self, pixels):
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.stages(self.stem(pixels)), 1), 1))

    torch.manual_seed(0)
    model = ResNet18()
    for module in model.modules():  # trained-looking BatchNorm statistics
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _gru_classifier():
    import torch
    from torch import nn

    class GruClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(500, 32)
            self.gru = nn.GRU(32, 48, batch_first=True)
            self.head = nn.Linear(48, 4)

        def forward(self, tokens):
            _, last = self.gru(self.embed(tokens))
            return self.head(last[-1])

    torch.manual_seed(0)
    return GruClassifier().eval()


def _multi_head():
    import torch
    from torch import nn

    class MultiHead(nn.Module):
        """Returns a dict whose key order differs from the signature's output order."""

        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(16, 32), nn.GELU())
            self.embedding = nn.Linear(32, 8)
            self.classes = nn.Linear(32, 5)

        def forward(self, features):
            hidden = self.body(features)
            return {"embedding": self.embedding(hidden),
                    "probabilities": torch.softmax(self.classes(hidden), dim=-1)}

    torch.manual_seed(0)
    return MultiHead().eval()


def _uint8_images():
    import torch
    from torch import nn

    class Uint8Classifier(nn.Module):
        """Takes raw uint8 images of any size and normalizes inside forward."""

        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.head = nn.Linear(8, 3)

        def forward(self, image):
            x = (image.float() / 255.0 - self.mean) / self.std
            return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))

    torch.manual_seed(0)
    return Uint8Classifier().eval()


def _mixed_dtypes():
    import torch
    from torch import nn

    class Mixed(nn.Module):
        """A bool mask and int32 bucket ids beside float features."""

        def __init__(self):
            super().__init__()
            self.buckets = nn.Embedding(10, 8)
            self.head = nn.Linear(8, 1)

        def forward(self, features, present, bucket):
            x = features.masked_fill(~present, 0.0) + self.buckets(bucket.long())
            return self.head(x)

    torch.manual_seed(0)
    return Mixed().eval()


def _data_dependent():
    import torch
    from torch import nn

    class Gate(nn.Module):
        """Data-dependent control flow: each row's branch depends on its values."""

        def __init__(self):
            super().__init__()
            self.up = nn.Linear(6, 6)
            self.down = nn.Linear(6, 6)

        def forward(self, x):
            rows = []
            for i in range(x.shape[0]):  # each row takes its own branch
                row = x[i:i + 1]
                if bool(row.mean() > 0):
                    rows.append(self.up(row) * 2.0)
                else:
                    rows.append(self.down(row) - 1.0)
            return torch.cat(rows)

    torch.manual_seed(0)
    return Gate().eval()


def _gpt2_lm():
    """A decoder LM (GPT-2 layout) returning logits only, as served behind a sampler."""
    import torch
    from torch import nn
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    inner = GPT2LMHeadModel(GPT2Config(vocab_size=300, n_positions=64, n_embd=32, n_layer=2,
                                       n_head=4, use_cache=False)).eval()

    class CausalLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.lm = inner

        def forward(self, input_ids, attention_mask):
            return self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    return CausalLM().eval()


def _left_padded(batch: int) -> dict[str, Any]:
    """Token ids left-padded as decoder LMs batch them: row 0 starts with 3 pad positions."""
    import torch

    ids = _tokens(batch, 10, 300)
    mask = torch.ones(batch, 10, dtype=torch.int64)
    mask[0, :3] = 0
    ids[0, :3] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _vit():
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    return ViTForImageClassification(ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, num_labels=5)).eval()


def _t5_encoder():
    """An encoder with relative position buckets (the T5 family): the dynamo exporter fails on
    it (a view of a transposed attention output), the legacy exporter does not."""
    import torch
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    return T5EncoderModel(T5Config(vocab_size=300, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                   num_heads=4)).eval()


def _audio_conv():
    """Convolutions over a raw waveform of any length (a wav2vec-style feature encoder)."""
    import torch
    from torch import nn

    class AudioClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv1d(1, 16, 10, 5), nn.GELU(), nn.Conv1d(16, 16, 3, 2),
                                          nn.GELU())
            self.head = nn.Linear(16, 6)

        def forward(self, waveform):
            return self.head(self.features(waveform.unsqueeze(1)).mean(-1))

    torch.manual_seed(0)
    return AudioClassifier().eval()


def _detector():
    """A detection head: boxes, scores and integer labels, of different ranks and dtypes."""
    import torch
    from torch import nn

    class Detector(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = nn.Conv2d(3, 8, 3, 2, 1)
            self.box = nn.Linear(8, 4)
            self.classes = nn.Linear(8, 7)

        def forward(self, image):
            anchors = torch.relu(self.backbone(image)).flatten(2).transpose(1, 2)[:, :10]
            scores, labels = self.classes(anchors).softmax(-1).max(-1)
            return {"boxes": self.box(anchors).sigmoid(), "scores": scores, "labels": labels}

    torch.manual_seed(0)
    return Detector().eval()


def _argmax_classifier():
    import torch
    from torch import nn

    class ArgmaxClassifier(nn.Module):
        """Returns the class id (int64), not scores."""

        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(12, 5)

        def forward(self, x):
            return self.linear(x).argmax(-1)

    torch.manual_seed(0)
    return ArgmaxClassifier().eval()


def _packed_lstm():
    import torch
    from torch import nn

    class PackedLstm(nn.Module):
        """Packs the padded batch by each row's length before the LSTM."""

        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(100, 16)
            self.lstm = nn.LSTM(16, 24, batch_first=True)
            self.head = nn.Linear(24, 3)

        def forward(self, tokens, lengths):
            packed = nn.utils.rnn.pack_padded_sequence(self.embed(tokens), lengths.cpu(),
                                                       batch_first=True, enforce_sorted=False)
            _, (last, _) = self.lstm(packed)
            return self.head(last[-1])

    torch.manual_seed(0)
    return PackedLstm().eval()


def _packed_example(batch: int) -> dict[str, Any]:
    import torch

    # lengths up to 5 of 8 positions: the resized golden set (6 positions) still holds them
    return {"tokens": _tokens(batch, 8, 100), "lengths": torch.arange(batch) % 5 + 1}


def _float16_mlp():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)).half().eval()


def _tokens(batch: int, seq: int, vocab: int) -> Any:
    import torch

    return torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(batch))


def _mixed_example(batch: int) -> dict[str, Any]:
    import torch

    rng = np.random.default_rng(batch)
    return {"features": _tensor(rng, (batch, 8), "float32"),
            "present": torch.from_numpy(rng.random((batch, 8)) > 0.3),
            "bucket": torch.arange(batch, dtype=torch.int32) % 10}


def _tensor(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> Any:
    import torch

    if dtype == "uint8":
        return torch.from_numpy(rng.integers(0, 256, size=shape, dtype=np.uint8))
    return torch.from_numpy(rng.standard_normal(shape).astype(dtype))


ZOO: list[ZooModel] = [
    ZooModel("bert", _bert, ModelSignature(
        inputs=(TensorSpec("input_ids", "int64", (BATCH, SEQ)),
                TensorSpec("attention_mask", "int64", (BATCH, SEQ)),
                TensorSpec("token_type_ids", "int64", (BATCH, SEQ))),
        outputs=(TensorSpec("last_hidden_state", "float32", (BATCH, SEQ, 64)),
                 TensorSpec("pooler_output", "float32", (BATCH, 64)))),
        _bert_example, "transformers BertModel (ModelOutput, keyword inputs)"),
    ZooModel("resnet18", _resnet18, ModelSignature(
        inputs=(TensorSpec("pixels", "float32", (BATCH, 3, 32, 32)),),
        outputs=(TensorSpec("logits", "float32", (BATCH, 10)),)),
        lambda b: {"pixels": _tensor(np.random.default_rng(b), (b, 3, 32, 32), "float32")},
        "ResNet-18 layout, width 16"),
    ZooModel("gru", _gru_classifier, ModelSignature(
        inputs=(TensorSpec("tokens", "int64", (BATCH, SEQ)),),
        outputs=(TensorSpec("logits", "float32", (BATCH, 4)),)),
        lambda b: {"tokens": _tokens(b, 12, 500)},
        "GRU text classifier, dynamic sequence"),
    ZooModel("multi_head", _multi_head, ModelSignature(
        inputs=(TensorSpec("features", "float32", (BATCH, 16)),),
        outputs=(TensorSpec("probabilities", "float32", (BATCH, 5)),
                 TensorSpec("embedding", "float32", (BATCH, 8)))),
        lambda b: {"features": _tensor(np.random.default_rng(b), (b, 16), "float32")},
        "dict outputs in another order than the signature"),
    ZooModel("uint8_images", _uint8_images, ModelSignature(
        inputs=(TensorSpec("image", "uint8", (BATCH, 3, "height", "width")),),
        outputs=(TensorSpec("logits", "float32", (BATCH, 3)),)),
        lambda b: {"image": _tensor(np.random.default_rng(b), (b, 3, 24, 20), "uint8")},
        "uint8 images of any size, normalized inside forward"),
    ZooModel("mixed_dtypes", _mixed_dtypes, ModelSignature(
        inputs=(TensorSpec("features", "float32", (BATCH, 8)),
                TensorSpec("present", "bool", (BATCH, 8)),
                TensorSpec("bucket", "int32", (BATCH,))),
        outputs=(TensorSpec("score", "float32", (BATCH, 1)),)),
        _mixed_example,
        "bool and int32 inputs", triton_max_batch_size=0),
    ZooModel("data_dependent", _data_dependent, ModelSignature(
        inputs=(TensorSpec("x", "float32", (BATCH, 6)),),
        outputs=(TensorSpec("y", "float32", (BATCH, 6)),)),
        lambda b: {"x": _tensor(np.random.default_rng(b + 1), (b, 6), "float32")},
        "data-dependent control flow"),
    ZooModel("gpt2_lm", _gpt2_lm, ModelSignature(
        inputs=(TensorSpec("input_ids", "int64", (BATCH, SEQ)),
                TensorSpec("attention_mask", "int64", (BATCH, SEQ))),
        outputs=(TensorSpec("logits", "float32", (BATCH, SEQ, 300), masked_by="attention_mask"),)),
        _left_padded, "transformers GPT2LMHeadModel, left-padded; logits masked_by attention_mask"),
    ZooModel("vit", _vit, ModelSignature(
        inputs=(TensorSpec("pixel_values", "float32", (BATCH, 3, 32, 32)),),
        outputs=(TensorSpec("logits", "float32", (BATCH, 5)),)),
        lambda b: {"pixel_values": _tensor(np.random.default_rng(b), (b, 3, 32, 32), "float32")},
        "transformers ViTForImageClassification"),
    ZooModel("t5_encoder", _t5_encoder, ModelSignature(
        inputs=(TensorSpec("input_ids", "int64", (BATCH, SEQ)),
                TensorSpec("attention_mask", "int64", (BATCH, SEQ))),
        outputs=(TensorSpec("last_hidden_state", "float32", (BATCH, SEQ, 32)),)),
        lambda b: {"input_ids": _tokens(b, 9, 300), "attention_mask": np.ones((b, 9), np.int64)},
        "transformers T5EncoderModel: ONNX by the legacy exporter, dynamo fails"),
    ZooModel("audio_conv", _audio_conv, ModelSignature(
        inputs=(TensorSpec("waveform", "float32", (BATCH, "samples")),),
        outputs=(TensorSpec("logits", "float32", (BATCH, 6)),)),
        lambda b: {"waveform": _tensor(np.random.default_rng(b), (b, 400), "float32")},
        "1-D convolutions over a waveform of any length"),
    ZooModel("detector", _detector, ModelSignature(
        inputs=(TensorSpec("image", "float32", (BATCH, 3, 16, 16)),),
        outputs=(TensorSpec("boxes", "float32", (BATCH, 10, 4)),
                 TensorSpec("scores", "float32", (BATCH, 10)),
                 TensorSpec("labels", "int64", (BATCH, 10)))),
        lambda b: {"image": _tensor(np.random.default_rng(b), (b, 3, 16, 16), "float32")},
        "detection head: outputs of different ranks and dtypes"),
    ZooModel("argmax", _argmax_classifier, ModelSignature(
        inputs=(TensorSpec("x", "float32", (BATCH, 12)),),
        outputs=(TensorSpec("label", "int64", (BATCH,)),)),
        lambda b: {"x": _tensor(np.random.default_rng(b), (b, 12), "float32")},
        "returns class ids (int64, one per row)", triton_max_batch_size=0),
    ZooModel("packed_lstm", _packed_lstm, ModelSignature(
        inputs=(TensorSpec("tokens", "int64", (BATCH, SEQ)), TensorSpec("lengths", "int64", (BATCH,))),
        outputs=(TensorSpec("logits", "float32", (BATCH, 3)),)),
        _packed_example, "LSTM over pack_padded_sequence: no ONNX route, served as TorchScript",
        no_onnx="packed sequences (torch.nn.utils.rnn.pack_padded_sequence) have no ONNX export",
        triton_max_batch_size=0),
    ZooModel("float16_mlp", _float16_mlp, ModelSignature(
        inputs=(TensorSpec("x", "float16", (BATCH, 8)),),
        outputs=(TensorSpec("y", "float16", (BATCH, 3)),)),
        lambda b: {"x": _tensor(np.random.default_rng(b), (b, 8), "float16")},
        "float16 weights, inputs and outputs (binary tensors to Triton)"),
]
