"""Pure loss and advantage functions on tensors, each unit-tested on hand-made tensors.

- `multisample_sft`: R-MSD's per-item weighted multi-sample SFT loss (stage sft's loss).
- `bradley_terry`: the discriminator's Bradley–Terry loss of the adversarial stage (GAD).
- `advantages`: VISD's direction–magnitude token advantages and the λ schedule (the VISD
  signal, `rmsd.train.visd`, feeds them TRL's rollout advantages; TRL computes its own loss).
- `temporal`: Video-R1's T-GRPO temporal bonus on one item's ordered and shuffled scores
  (`rmsd.train.temporal` applies it to the GRPO stage's correctness reward).

Every function here is production code (`sequence_nll` and `normalised_weights` are the parts
of `multisample_sft_loss`, `item_confidence` its item weights under `weighting: matched_conf`);
the test oracles (TRL's GRPO loss written out, advantage bounds) live in
`tests/losses/oracles.py`.
"""

from rmsd.losses.advantages import decoupled_token_advantages, lambda_schedule
from rmsd.losses.bradley_terry import bradley_terry_loss, discriminator_accuracy
from rmsd.losses.multisample_sft import item_confidence, multisample_sft_loss, normalised_weights, sequence_nll
from rmsd.losses.temporal_bonus import TemporalContrast, temporal_contrast

__all__ = [
    "bradley_terry_loss",
    "decoupled_token_advantages",
    "discriminator_accuracy",
    "item_confidence",
    "lambda_schedule",
    "multisample_sft_loss",
    "normalised_weights",
    "sequence_nll",
    "temporal_contrast",
    "TemporalContrast",
]
