"""Training: tokenizer, Keras fit with early stopping on validation macro-F1, test metrics, and the baseline."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from tokenizers import Tokenizer

from model_export.config import ModelConfig, TrainConfig
from model_export.data import Splits
from model_export.model import AttentionClassifier, build_model
from model_export.scoring import score
from model_export.tokenization import PAD_ID, UNK_TOKEN, train_tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainedModel:
    """A fitted model with its tokenizer and what training measured."""

    model: AttentionClassifier
    tokenizer: Tokenizer
    config: ModelConfig
    metrics: dict[str, Any]
    baseline: dict[str, float]


class ProbabilitiesOnly(keras.Model):
    """Fits the classifier on its probabilities; the attention outputs need no loss."""

    def __init__(self, model: AttentionClassifier) -> None:
        super().__init__()
        self.inner = model

    def call(self, inputs: dict[str, Any], training: bool = False) -> Any:
        return self.inner(inputs, training=training)["probabilities"]


class _MacroF1EarlyStopping(keras.callbacks.Callback):
    """Stops when validation macro-F1 has not improved for ``patience`` epochs and restores the best weights."""

    def __init__(self, predict: Callable[[], np.ndarray], truth: list[int], patience: int) -> None:
        super().__init__()
        self.predict, self.truth, self.patience = predict, truth, patience
        self.best, self.best_epoch, self.best_weights = -1.0, -1, None
        self.history: list[float] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        score = float(f1_score(self.truth, self.predict().argmax(-1), average="macro"))
        self.history.append(score)
        if logs is not None:
            logs["val_macro_f1"] = score
        if score > self.best:
            self.best, self.best_epoch, self.best_weights = score, epoch, self.model.get_weights()
        elif epoch - self.best_epoch >= self.patience:
            self.model.stop_training = True

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def token_ids(tokenizer: Tokenizer, texts: list[str], max_len: int) -> list[list[int]]:
    """Ids per text, truncated to ``max_len``; an empty text becomes one ``[UNK]``."""
    unk = tokenizer.token_to_id(UNK_TOKEN)
    return [enc.ids[:max_len] or [unk] for enc in tokenizer.encode_batch(texts, add_special_tokens=False)]


def make_dataset(ids: list[list[int]], labels: list[int], batch_size: int, seed: int | None) -> tf.data.Dataset:
    """Batches padded to their own longest sequence, with the attention mask; reshuffled each epoch if seeded.

    Built from a ragged tensor rather than a Python generator: no Python in the input pipeline.
    """
    rows = tf.data.Dataset.from_tensor_slices((tf.ragged.constant(ids, dtype=tf.int32), tf.constant(labels, tf.int32)))
    if seed is not None:
        rows = rows.shuffle(len(ids), seed=seed, reshuffle_each_iteration=True)
    rows = rows.map(lambda x, y: ({"input_ids": x, "attention_mask": tf.ones_like(x)}, y))
    return rows.padded_batch(batch_size, padding_values=({"input_ids": PAD_ID, "attention_mask": 0}, 0)).prefetch(2)


def train_baseline(splits: Splits) -> dict[str, float]:
    """TF-IDF + logistic regression scored on the same test split, for comparison.

    It needs no validation data, so it trains on everything outside the test split (train + validation).
    """
    texts, labels = splits.train[0] + splits.validation[0], splits.train[1] + splits.validation[1]
    vectorizer = TfidfVectorizer()
    features = vectorizer.fit_transform(texts)
    classifier = LogisticRegression(max_iter=2000).fit(features, labels)
    predicted = classifier.predict(vectorizer.transform(splits.test[0]))
    return score(splits.test[1], predicted)


def train(splits: Splits, model_config: ModelConfig, train_config: TrainConfig, verbose: int = 1) -> TrainedModel:
    """Train tokenizer and model on the train split, stop early on validation, score on the test split."""
    started = time.monotonic()
    keras.utils.set_random_seed(train_config.seed)
    tf.config.experimental.enable_op_determinism()  # same seed, same data: the same model
    tokenizer = train_tokenizer(splits.train[0], model_config.vocab_size)
    config = ModelConfig(**{**model_config.to_dict(), "vocab_size": tokenizer.get_vocab_size()})
    ids = {
        name: token_ids(tokenizer, getattr(splits, name)[0], config.max_len) for name in ("train", "validation", "test")
    }
    batch = train_config.batch_size
    train_data = make_dataset(ids["train"], splits.train[1], batch, train_config.seed)
    val_data = make_dataset(ids["validation"], splits.validation[1], batch, None)
    test_data = make_dataset(ids["test"], splits.test[1], batch, None)

    model = build_model(config)
    fitter = ProbabilitiesOnly(model)
    fitter.compile(
        optimizer=keras.optimizers.AdamW(train_config.learning_rate, weight_decay=train_config.weight_decay),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    stopper = _MacroF1EarlyStopping(
        lambda: fitter.predict(val_data, verbose=0), splits.validation[1], train_config.patience
    )
    fitter.fit(
        train_data,
        validation_data=val_data,
        epochs=train_config.epochs,
        class_weight=_class_weights(splits.train[1], len(splits.label_names)) if train_config.class_weighting else None,
        callbacks=[stopper],
        shuffle=False,  # the dataset reshuffles itself each epoch
        verbose=verbose,
    )
    metrics = score(splits.test[1], fitter.predict(test_data, verbose=0).argmax(-1))
    metrics.update(
        best_epoch=stopper.best_epoch + 1,
        epochs_run=len(stopper.history),
        validation_macro_f1=round(stopper.best, 4),
        parameters=int(model.count_params()),
        train_seconds=round(time.monotonic() - started, 1),
    )
    baseline = train_baseline(splits)
    log.info("test metrics %s; TF-IDF + LR baseline %s", metrics, baseline)
    return TrainedModel(model, tokenizer, config, metrics, baseline)


def _class_weights(labels: list[int], classes: int) -> dict[int, float]:
    """Inverse-frequency weights, so the rare class counts as much as the others in macro-F1."""
    counts = np.bincount(labels, minlength=classes)
    return {i: float(len(labels) / (classes * max(int(c), 1))) for i, c in enumerate(counts)}
