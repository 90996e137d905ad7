"""The words of a threat model: what a counter-attack knows of a defense, and the defense
families a counter-attack can be designed against.

Whether a counter-attack is *adaptive* is a property of the (defense, counter-attack) pair
(Carlini et al., "On Evaluating Adversarial Robustness", arXiv 2019, §3; Tramèr, Carlini,
Brendel and Mądry, "On Adaptive Attacks to Adversarial Example Defenses", NeurIPS 2020): blind
source separation is designed against a shared overlay and knows that much about one, but it
knows nothing about a blur. A defense declares its family
(:attr:`harness.api.contracts.Defense.family`), a counter-attack the families or defense names
it targets (:attr:`harness.api.contracts.CounterAttack.targets`); against a defense it targets
it has its declared threat model, against any other it knows nothing and is oblivious.
"""

from __future__ import annotations

from typing import Any

KNOWLEDGE_LEVELS = ("nothing", "algorithm", "parameters", "key")

# Defense family → what its members do to a photo (the vocabulary of ``Defense.family`` and of
# ``CounterAttack.targets``). ``none`` has no family: there is nothing to adapt to.
DEFENSE_FAMILIES: dict[str, str] = {
    "overlay": "blends the photo with overlay images (krtio, naive-overlay)",
    "universal-perturbation": "adds one learnt perturbation shared by every photo (uep)",
    "blur": "low-pass filters the photo (gaussian-blur)",
    "pixelation": "replaces blocks of pixels by their mean (pixelate)",
    "adversarial-perturbation": (
        "adds a small per-photo perturbation found with a surrogate's gradients "
        "(pgd, least-likely, p-fgsm, cw-l2, aip)"
    ),
    "spatial-transform": "rotates and shifts the photo (euclidean)",
    "generative": (
        "re-renders the photo with a network or an enhancement "
        "(cartoongan, ying-contrast, protective-unet)"
    ),
}

# In ``CounterAttack.targets``: designed against whatever defense is deployed (a counter-attack
# that retrains on photos protected with it).
EVERY_DEFENSE = "every-defense"

OBLIVIOUS: dict[str, Any] = {"knows": "nothing", "adaptive": False}


def unknown_targets(targets: frozenset[str], defense_names: frozenset[str]) -> list[str]:
    """The entries of ``targets`` that name no family, no defense of ``defense_names`` and
    are not :data:`EVERY_DEFENSE` (sorted)."""
    known = set(DEFENSE_FAMILIES) | set(defense_names) | {EVERY_DEFENSE}
    return sorted(t for t in targets if t not in known)
