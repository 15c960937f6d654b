"""The training loss over labelled positions only: logits are computed where a token is trained.

A character's examples train only the character's own turns: in charlite's datasets about one
token in eight carries a label, the rest (system message, profile, the other speakers) is -100.
Computing the logits of every position to throw most of them away costs little on a 49k
vocabulary but dominates a CPU step on a 262k one (Gemma-3): the LM head is then the largest
matrix of the model, applied (forward and backward) at every position.

:func:`labelled_loss` asks the model for the logits of the positions whose NEXT token is
labelled (transformers' ``logits_to_keep``, given a 1-D tensor of positions: the union over the
rows of the batch) and takes the cross-entropy there, normalised as TRL's SFT loss is: the sum
over labelled tokens divided by ``num_items_in_batch`` (the labelled tokens of the whole
gradient-accumulation batch) when the trainer passes it, else by this batch's labelled tokens.
The model's own forward slices before its LM head and applies what comes after it (Gemma's final
logit softcapping), so the logits are the ones the full forward gives at those positions.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

IGNORE_INDEX = -100


@dataclass
class LossParts:
    """The loss and what TRL's SFT trainer logs of the labelled tokens (without gradient)."""

    loss: Any
    labelled: Any
    """How many tokens carried a label (a 0-d tensor)."""
    entropy_sum: Any
    correct: Any
    """Labelled tokens whose label was the model's top-1."""


def accepts_logits_to_keep(model) -> bool:
    """Whether the causal LM under ``model`` (peft or accelerate wrappers peeled) takes
    ``logits_to_keep`` (transformers 4.50 on, for the architectures charlite trains)."""
    inner = model
    for _ in range(4):
        if hasattr(inner, "get_base_model"):
            inner = inner.get_base_model()
        elif hasattr(inner, "module"):
            inner = inner.module
        else:
            break
    try:
        return "logits_to_keep" in inspect.signature(type(inner).forward).parameters
    except (TypeError, ValueError):
        return False


def kept_positions(labels):
    """Positions (sorted, 1-D) whose next token is labelled in at least one row of ``labels``."""
    return (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero(as_tuple=True)[0]


def labelled_loss(model, inputs: dict[str, Any], num_items_in_batch=None) -> LossParts:
    """The causal-LM loss of ``inputs`` (which hold ``labels``, unshifted as TRL's collator gives
    them), computing logits only at :func:`kept_positions`."""
    import torch

    labels = inputs["labels"]
    positions = kept_positions(labels)
    model_inputs = {k: v for k, v in inputs.items() if k != "labels"}
    model_inputs["use_cache"] = False
    logits = model(**model_inputs, logits_to_keep=positions).logits  # [rows, kept, vocab]
    targets = labels[:, positions + 1]
    mask = targets != IGNORE_INDEX
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    picked = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    total = -(picked * mask).sum()
    labelled = mask.sum()
    divisor = labelled if num_items_in_batch is None else num_items_in_batch
    loss = total / torch.as_tensor(divisor, device=total.device).clamp(min=1)
    with torch.no_grad():
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        entropy_sum = (entropy * mask).sum()
        correct = ((log_probs.argmax(-1) == targets) & mask).sum()
    return LossParts(loss, labelled, entropy_sum, correct)
