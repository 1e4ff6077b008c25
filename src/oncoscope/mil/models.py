"""Attention MIL models in plain PyTorch: gated attention (ABMIL) and CLAM-SB.

Both take one bag of tile features ``(n, d) float32`` and return bag logits ``(1, classes)``
and the attention over the tiles ``(n,)`` (softmax weights, summing to 1).

- ``abmil``: gated attention pooling of Ilse, Tomczak and Welling, "Attention-based Deep
  Multiple Instance Learning" (ICML 2018): ``a_i ∝ exp(w^T (tanh(V h_i) ⊙ sigm(U h_i)))``,
  bag embedding ``Σ a_i h_i``, a linear classifier on it.
- ``clam_sb``: the single-branch CLAM of Lu et al., "Data-efficient and weakly supervised
  computational pathology on whole-slide images" (Nat. Biomed. Eng. 2021): the same gated
  attention, plus one instance classifier per class trained on pseudo-labels: the ``k`` tiles of
  highest attention are positive and the ``k`` of lowest negative for the bag's class (and,
  with more than two classes, the top ``k`` are negative for every other class).
"""

from __future__ import annotations

from typing import Any, TypedDict, Unpack

import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch convention
from torch import nn

from oncoscope.errors import UnknownModelError

#: MIL model names ``--model`` accepts.
MIL_MODELS = ("abmil", "clam_sb")


class GatedAttention(nn.Module):
    """Gated attention scores: ``w^T (tanh(V h) ⊙ sigmoid(U h))`` per tile (Ilse et al. 2018)."""

    def __init__(self, hidden: int, attention_dim: int, dropout: float) -> None:
        super().__init__()
        self.v = nn.Sequential(nn.Linear(hidden, attention_dim), nn.Tanh(), nn.Dropout(dropout))
        self.u = nn.Sequential(nn.Linear(hidden, attention_dim), nn.Sigmoid(), nn.Dropout(dropout))
        self.w = nn.Linear(attention_dim, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``(n, hidden)`` -> ``(n,)`` unnormalised attention scores."""
        scores: torch.Tensor = self.w(self.v(h) * self.u(h)).squeeze(-1)
        return scores


class AttentionLayers(TypedDict, total=False):
    """The layer sizes of :class:`AttentionMIL` (and its subclasses), as keyword arguments."""

    hidden: int
    attention_dim: int
    dropout: float
    standardize: bool


class AttentionMIL(nn.Module):
    """Gated-attention MIL (``abmil``).

    Args:
        in_dim: feature size ``d`` of the bags.
        num_classes: number of classes.
        hidden: size of the tile embedding (a linear layer + ReLU on the features).
        attention_dim: size of the gated attention's hidden layer.
        dropout: dropout on the embedding and attention layers.
        standardize: subtract ``feature_mean`` and divide by ``feature_std`` (buffers of size
            ``d``, saved with the weights; set by :meth:`set_feature_statistics`) before the
            embedding, for encoders whose features are far from unit scale (random weights).
    """

    feature_mean: torch.Tensor
    feature_std: torch.Tensor

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        hidden: int = 256,
        attention_dim: int = 128,
        dropout: float = 0.25,
        standardize: bool = False,
    ) -> None:
        super().__init__()
        self.standardize = standardize
        if standardize:
            self.register_buffer("feature_mean", torch.zeros(in_dim))
            self.register_buffer("feature_std", torch.ones(in_dim))
        self.embed = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.attention = GatedAttention(hidden, attention_dim, dropout)
        self.classifier = nn.Linear(hidden, num_classes)
        self.num_classes = num_classes

    def set_feature_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Set the per-feature ``(d,)`` mean and standard deviation of a model built with
        ``standardize``; a zero standard deviation is taken as 1.

        Raises:
            ValueError: the model does not standardize.
        """
        if not self.standardize:
            raise ValueError("the model was built without standardize")
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(torch.where(std > 0, std, torch.ones_like(std)))

    def attend(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(n, d)`` features -> ``(n, hidden)`` embeddings and ``(n,)`` attention weights."""
        if self.standardize:
            features = (features - self.feature_mean) / self.feature_std
        h = self.embed(features)
        attention = torch.softmax(self.attention(h).float(), dim=0)
        return h, attention

    def outputs(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(1, classes)`` logits, ``(n,)`` attention and ``(n, hidden)`` tile embeddings."""
        h, attention = self.attend(features)
        bag = attention.to(h.dtype) @ h
        logits: torch.Tensor = self.classifier(bag).unsqueeze(0)
        return logits, attention, h

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(n, d)`` features -> ``(1, classes)`` logits, ``(n,)`` attention (sums to 1)."""
        logits, attention, _ = self.outputs(features)
        return logits, attention

    def auxiliary_loss(
        self, embeddings: torch.Tensor, attention: torch.Tensor, target: int
    ) -> torch.Tensor | None:
        """An extra training loss beside the bag loss (none for plain ABMIL)."""
        return None


class ClamSB(AttentionMIL):
    """CLAM-SB: :class:`AttentionMIL` plus instance-level clustering (``clam_sb``).

    Args:
        k_sample: tiles taken at each end of the attention ranking for the pseudo-labels
            (fewer when a bag has fewer than ``2 * k_sample`` tiles).
        instance_weight: share of the instance loss in the total loss (CLAM's default 0.3);
            the bag loss gets the rest.
        in_dim, num_classes: as :class:`AttentionMIL`; ``layers``: its ``hidden``,
            ``attention_dim``, ``dropout`` and ``standardize`` (:class:`AttentionLayers`).
    """

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        *,
        k_sample: int = 8,
        instance_weight: float = 0.3,
        **layers: Unpack[AttentionLayers],
    ) -> None:
        super().__init__(in_dim, num_classes, **layers)
        hidden = self.classifier.in_features
        self.instance_classifiers = nn.ModuleList(nn.Linear(hidden, 2) for _ in range(num_classes))
        self.k_sample, self.instance_weight = k_sample, instance_weight

    def auxiliary_loss(
        self, embeddings: torch.Tensor, attention: torch.Tensor, target: int
    ) -> torch.Tensor | None:
        """The instance clustering loss of one bag of class ``target``, weighted.

        In-class: top-``k`` attention tiles labelled 1, bottom-``k`` labelled 0 for the
        target class's instance classifier. Out-of-class (more than two classes): top-``k``
        tiles labelled 0 for the other classes' classifiers.
        """
        h = embeddings
        k = min(self.k_sample, len(h) // 2)
        if k < 1:
            return None
        order = torch.argsort(attention.detach(), descending=True)
        top, bottom = h[order[:k]], h[order[-k:]]
        ones = torch.ones(k, dtype=torch.long, device=h.device)
        zeros = torch.zeros(k, dtype=torch.long, device=h.device)
        head = self.instance_classifiers[target]
        losses = [F.cross_entropy(head(torch.cat([top, bottom])).float(), torch.cat([ones, zeros]))]
        if self.num_classes > 2:
            for index, other in enumerate(self.instance_classifiers):
                if index != target:
                    losses.append(F.cross_entropy(other(top).float(), zeros))
        return self.instance_weight * torch.stack(losses).mean()


def create_mil_model(name: str, in_dim: int, num_classes: int, **kwargs: Any) -> AttentionMIL:
    """A MIL model by name (:data:`MIL_MODELS`).

    Example:
        >>> model = create_mil_model("abmil", in_dim=8, num_classes=2)
        >>> logits, attention = model(torch.zeros(5, 8))
        >>> tuple(logits.shape), tuple(attention.shape)
        ((1, 2), (5,))

    Raises:
        UnknownModelError: a name that is not in :data:`MIL_MODELS`.
    """
    if name == "abmil":
        return AttentionMIL(in_dim, num_classes, **kwargs)
    if name == "clam_sb":
        return ClamSB(in_dim, num_classes, **kwargs)
    raise UnknownModelError(f"unknown MIL model {name!r}; use one of {', '.join(MIL_MODELS)}")
