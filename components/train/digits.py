"""A small CNN trained on scikit-learn's bundled digits data set (8x8 images, 10 classes).

Real data with no download, small enough to train in seconds on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kfp_serve.components.errors import UserError
from kfp_serve.components.signature import BATCH, ModelSignature, TensorSpec

SIGNATURE = ModelSignature(
    inputs=(TensorSpec("image", "float32", (BATCH, 1, 8, 8)),),
    outputs=(TensorSpec("logits", "float32", (BATCH, 10)),),
    metadata={"task": "digits-classification", "input_scale": "pixel / 16"},
)


@dataclass(frozen=True)
class TrainResult:
    """What training produced and how well it does on the held-out split."""

    test_accuracy: float
    train_samples: int
    test_samples: int
    epochs: int


def load_digits_split(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stratified 80/20 split of the digits set as ``(x_train, y_train, x_test, y_test)``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = data.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.2, random_state=seed, stratify=labels
    )
    return x_train, y_train, x_test, y_test


def build_model():
    """The CNN: two 3x3 convolutions, max-pooling, two linear layers."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64), nn.ReLU(),
        nn.Linear(64, 10),
    )


def train_digits(
    output_dir: str | Path,
    epochs: int = 15,
    learning_rate: float = 2e-3,
    batch_size: int = 64,
    seed: int = 0,
    min_accuracy: float = 0.95,
    golden_size: int = 16,
    device: str = "cpu",
) -> TrainResult:
    """Train the CNN and write a model artifact (see :mod:`model_artifact`) to ``output_dir``.

    Raises:
        UserError: on out-of-range parameters, or when test accuracy is below ``min_accuracy``.
    """
    import torch

    from kfp_serve.components.model_artifact import save_torch_model

    if device not in ("cpu", "cuda"):
        raise UserError(f"device {device!r} is not supported; use 'cpu' or 'cuda'")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("device='cuda' but no CUDA GPU is visible; use device='cpu'")
    if epochs < 1 or batch_size < 1 or learning_rate <= 0:
        raise UserError("epochs and batch_size must be >= 1 and learning_rate > 0")
    if not 2 <= golden_size <= 360:
        raise UserError(f"golden_size={golden_size} must be between 2 and 360 (the test split)")
    torch.manual_seed(seed)
    x_train, y_train, x_test, y_test = load_digits_split(seed)
    model = build_model().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    loss_fn = torch.nn.CrossEntropyLoss()
    xs, ys = torch.from_numpy(x_train).to(device), torch.from_numpy(y_train).to(device)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(xs), generator=generator).to(device).split(batch_size):
            optimizer.zero_grad()
            loss_fn(model(xs[idx]), ys[idx]).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        predicted = model(torch.from_numpy(x_test).to(device)).argmax(dim=1).cpu().numpy()
    accuracy = float((predicted == y_test).mean())
    if accuracy < min_accuracy:
        raise UserError(
            f"test accuracy {accuracy:.3f} is below min_accuracy={min_accuracy};"
            " train longer (epochs) or lower the gate"
        )
    save_torch_model(model, SIGNATURE, {"image": x_test[:golden_size]}, output_dir)
    return TrainResult(accuracy, len(x_train), len(x_test), epochs)
