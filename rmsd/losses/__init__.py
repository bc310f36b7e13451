"""Pure loss and advantage functions on tensors; the trainers in `rmsd.train` only feed them.

- `multisample_sft`: R-MSD's per-item weighted multi-sample SFT loss (+ `token_logps`).
- `bradley_terry`: the discriminator's Bradley–Terry loss of the adversarial stage (GAD).
- `advantages`: GRPO group advantages, VISD's direction–magnitude token advantages, the λ
  schedule and the clipped-ratio policy loss with per-token advantages.
"""

from rmsd.losses.advantages import (
    advantage_bounds,
    decoupled_token_advantages,
    group_advantages,
    grpo_token_loss,
    lambda_schedule,
)
from rmsd.losses.bradley_terry import bradley_terry_loss, discriminator_accuracy
from rmsd.losses.multisample_sft import multisample_sft_loss, normalised_weights, sequence_nll, token_logps

__all__ = [
    "advantage_bounds",
    "bradley_terry_loss",
    "decoupled_token_advantages",
    "discriminator_accuracy",
    "group_advantages",
    "grpo_token_loss",
    "lambda_schedule",
    "multisample_sft_loss",
    "normalised_weights",
    "sequence_nll",
    "token_logps",
]
