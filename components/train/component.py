"""KFP wrapper: train the digits classifier."""

from kfp import dsl
from kfp.dsl import Metrics, Model, Output

from kfp_serve.components import images


@dsl.component(base_image=images.SUITE_IMAGE, install_kfp_package=False)
def train_digits_classifier(
    model: Output[Model],
    metrics: Output[Metrics],
    epochs: int = 15,
    learning_rate: float = 0.002,
    seed: int = 0,
    min_accuracy: float = 0.95,
    golden_size: int = 16,
    device: str = "cpu",
):
    """Trains a small CNN on scikit-learn's bundled digits images (8x8, 10 classes; no download).

    Writes a model artifact: a torch.export program, its signature (input ``image``
    float32[batch,1,8,8], output ``logits`` float32[batch,10]) and a golden set of test images
    with the eager model's reference outputs.

    Args:
        epochs: Passes over the 1,437 training images.
        learning_rate: Adam learning rate.
        seed: Seed for the data split, initialisation and shuffling (same seed, same model).
        min_accuracy: Fail the step when accuracy on the 360 held-out images is below this.
        golden_size: Held-out images kept as the golden set (2-360).
        device: ``cpu`` or ``cuda`` for training; the saved artifact is always CPU/fp32.

    Returns:
        model: A TorchModel artifact (``model.pt2``, ``signature.json``, ``golden.npz``).
        metrics: ``test_accuracy`` on the held-out split.
    """
    from kfp_serve.components import artifacts
    from kfp_serve.components.train.digits import SIGNATURE, train_digits

    result = train_digits(model.path, epochs=epochs, learning_rate=learning_rate, seed=seed,
                          min_accuracy=min_accuracy, golden_size=golden_size, device=device)
    metrics.log_metric("test_accuracy", round(result.test_accuracy, 4))
    artifacts.mark(model, artifacts.TorchModel(signature=SIGNATURE,
                                               test_accuracy=round(result.test_accuracy, 4)))
    print(f"test accuracy {result.test_accuracy:.4f} after {epochs} epochs")
