"""Training of a MobileNetV2 tf.Module: a plain tf.GradientTape loop with Adam (no Keras)."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from mcugen.errors import McugenError
from mcugen.mobilenet_v2 import import_tensorflow


RECALIBRATION_BATCHES = 50  # batches used to recompute batch-norm statistics after training


@dataclass(frozen=True)
class TrainOptions:
    """Hyper-parameters of one training run (Adam with cosine learning-rate decay)."""

    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0
    validation_split: float = 0.0  # fraction of the data held out (seeded choice) for accuracy only
    progress: bool = True  # on stderr: a bar on a terminal, plain periodic lines otherwise (mcugen.progress)
    deterministic: bool = True  # tf.config.experimental.enable_op_determinism()

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise McugenError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise McugenError(f"batch size must be >= 1, got {self.batch_size}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise McugenError(f"learning rate must be > 0, got {self.learning_rate}")
        if not 0.0 <= self.validation_split < 1.0:
            raise McugenError(f"validation split must be in [0, 1), got {self.validation_split}")


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    loss: float  # mean training cross-entropy over the epoch's batches
    train_accuracy: float  # on the batches as trained (training-mode batch norm)
    validation_accuracy: Optional[float]  # inference mode, None without a validation split


@dataclass(frozen=True)
class TrainResult:
    history: tuple[EpochStats, ...]
    seconds: float
    train_samples: int
    validation_samples: int


class Adam:
    """Adam (Kingma & Ba) over a fixed list of tf.Variables, slots created eagerly."""

    def __init__(self, tf, variables, learning_rate: float, beta1: float = 0.9, beta2: float = 0.999,
                 epsilon: float = 1e-7):
        self.tf = tf
        self.variables = list(variables)
        self.learning_rate = tf.Variable(float(learning_rate), trainable=False, name="adam/learning_rate")
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon
        self.steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="adam/steps")
        self.m = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables]
        self.v = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables]

    def apply(self, gradients) -> None:
        tf = self.tf
        self.steps.assign_add(1)
        t = tf.cast(self.steps, tf.float32)
        correction = tf.sqrt(1.0 - tf.pow(self.beta2, t)) / (1.0 - tf.pow(self.beta1, t))
        step = self.learning_rate * correction
        for var, grad, m, v in zip(self.variables, gradients, self.m, self.v):
            if grad is None:
                continue
            m.assign(self.beta1 * m + (1.0 - self.beta1) * grad)
            v.assign(self.beta2 * v + (1.0 - self.beta2) * tf.square(grad))
            var.assign_sub(step * m / (tf.sqrt(v) + self.epsilon))


def _split(count: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(count)
    held = int(round(count * fraction))
    if fraction > 0 and (held == 0 or held == count):
        raise McugenError(f"validation split {fraction} of {count} samples leaves an empty part")
    return np.sort(order[held:]), np.sort(order[:held])


def predict_logits(module, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Inference-mode logits of preprocessed float images, in batches."""
    tf = import_tensorflow()
    outputs = [module.logits(tf.constant(images[i:i + batch_size]), training=False).numpy()
               for i in range(0, len(images), batch_size)]
    return np.concatenate(outputs)


def accuracy(module, images: np.ndarray, labels: np.ndarray, batch_size: int = 64) -> float:
    """Fraction of `images` whose arg-max logit equals the label (float model)."""
    return float(np.mean(np.argmax(predict_logits(module, images, batch_size), axis=1) == labels))


def train(module, images: np.ndarray, labels: np.ndarray, options: TrainOptions = TrainOptions()) -> TrainResult:
    """Train `module` in place on preprocessed float images N x H x W x C and labels 0..classes-1."""
    tf = import_tensorflow()
    from mcugen.progress import Progress

    config = module.config
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels, np.int64)
    if len(images) == 0:
        raise McugenError("training data set is empty")
    expected = (config.height, config.width, config.channels)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise McugenError(f"training images have shape {images.shape[1:]}, the model takes {expected}")
    if labels.shape != (len(images),) or labels.min() < 0 or labels.max() >= config.classes:
        raise McugenError(f"training labels must be {len(images)} integers in 0..{config.classes - 1}")
    if options.deterministic:
        tf.config.experimental.enable_op_determinism()
    tf.random.set_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    train_index, val_index = _split(len(images), options.validation_split, rng)
    x_train, y_train = images[train_index], labels[train_index]
    batch = min(options.batch_size, len(x_train))
    batches_per_epoch = len(x_train) // batch  # the incomplete last batch is dropped (batch norm)
    total_steps = options.epochs * batches_per_epoch

    variables = list(module.trainable_variables)
    optimizer = Adam(tf, variables, options.learning_rate)
    spec = [tf.TensorSpec([batch, *expected], tf.float32), tf.TensorSpec([batch], tf.int64)]

    @tf.function(input_signature=spec)
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = module.logits(x, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        optimizer.apply(tape.gradient(loss, variables))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, axis=1), y), tf.int32))
        return loss, correct

    history = []
    start = time.monotonic()
    done = 0
    for epoch in range(options.epochs):
        order = rng.permutation(len(x_train))
        losses, correct = [], 0
        bar = Progress(batches_per_epoch, f"epoch {epoch + 1}/{options.epochs}", "batches", options.progress)
        for b in range(batches_per_epoch):
            # cosine decay from learning_rate to 0 over all steps
            optimizer.learning_rate.assign(0.5 * options.learning_rate * (1 + math.cos(math.pi * done / total_steps)))
            pick = order[b * batch:(b + 1) * batch]
            loss, hits = step(tf.constant(x_train[pick]), tf.constant(y_train[pick]))
            losses.append(float(loss))
            correct += int(hits)
            done += 1
            bar.update(loss=f"{np.mean(losses):.4f}", accuracy=f"{correct / ((b + 1) * batch):.3f}")
        bar.close()
        val = accuracy(module, images[val_index], labels[val_index]) if len(val_index) else None
        stats = EpochStats(epoch + 1, float(np.mean(losses)), correct / (batches_per_epoch * batch), val)
        history.append(stats)
        if options.progress:
            extra = f", validation accuracy {val:.4f}" if val is not None else ""
            print(f"epoch {stats.epoch}/{options.epochs}: loss {stats.loss:.4f}, "
                  f"train accuracy {stats.train_accuracy:.4f}{extra}", file=sys.stderr)
    if module.batch_norm:
        # Short runs leave the moving averages behind the weights; recompute them (as in
        # "precise batch norm") so the inference/export graph sees the final statistics.
        order = rng.permutation(len(x_train))[: batch * min(batches_per_epoch, RECALIBRATION_BATCHES)]
        module.recalibrate_batch_norm(x_train[order[i:i + batch]] for i in range(0, len(order), batch))
        if len(val_index):
            val = accuracy(module, images[val_index], labels[val_index])
            history[-1] = EpochStats(history[-1].epoch, history[-1].loss, history[-1].train_accuracy, val)
        if options.progress:
            after = f": validation accuracy {val:.4f}" if len(val_index) else ""
            print(f"batch norm statistics re-estimated on {len(order)} training images{after}", file=sys.stderr)
    return TrainResult(tuple(history), time.monotonic() - start, len(train_index), len(val_index))
