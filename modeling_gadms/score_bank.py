"""Per-sample token-score bank of GA-DMS (docs/method.md section 3).

Every training sample (one caption) owns one score per token position; all start at `initial_token_score`
(0.85). A step reads the scores of its samples (their previous visit) to draw the dual masks, computes new GASS
scores on the unmasked captions, and writes them back; the trainer does this around each step:

```python
scores = bank.get(indices)                     # masks of this visit use the scores of the previous one
out = model(**batch, token_scores=scores)      # GADMSForPreTraining: losses and the new GASS scores
indices, new = all_gather_variable(indices), all_gather_variable(out.token_scores)  # every process's
bank.update(indices, new)                      # the same update on every process
```

Memory: `num_samples * seq_len * dtype size` bytes, kept on CPU by default. With the default float16 a sample
costs 77 * 2 = 154 bytes, so WebPerson's 10,005,446 captions take about 1.54 GB (float32 would double that).
float16 resolves scores in [0, 1] to better than 5e-4, far finer than the masking curves need.
A sample not yet written reads exactly `initial_score` (a flag per sample, one byte: 0.85 itself is not a
float16 number).

The bank itself does no communication (see `modeling_gadms.distributed`). It has `state_dict` /
`load_state_dict`, so it can be checkpointed with the training state (e.g. with accelerate's
`register_for_checkpointing`).
"""

from __future__ import annotations

from typing import Any

import torch


class ScoreBank:
    """Token scores of every training sample, indexed by sample index.

    Args:
        num_samples: number of training samples (captions).
        seq_len: token positions per sample (the text context length, 77).
        initial_score: value of every score before its sample is first updated (`initial_token_score`, 0.85).
        dtype: storage dtype (float16 by default: 2 bytes per score; see `estimate_nbytes`).
        device: storage device (CPU by default; a GPU bank costs GPU memory but avoids host transfers).
    """

    def __init__(
        self,
        num_samples: int,
        seq_len: int = 77,
        initial_score: float = 0.85,
        dtype: torch.dtype = torch.float16,
        device: torch.device | str = "cpu",
    ) -> None:
        if int(num_samples) < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        if int(seq_len) < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
        self.initial_score = float(initial_score)
        self.scores = torch.full((int(num_samples), int(seq_len)), self.initial_score, dtype=dtype, device=device)
        # which samples have been written: the others read back exactly `initial_score` (0.85 is not a float16
        # number; stored, it would read 0.8501); one byte a sample
        self.visited = torch.zeros(int(num_samples), dtype=torch.bool, device=device)

    @classmethod
    def from_config(cls, config: Any, num_samples: int, objective: Any = None, **kwargs: Any) -> "ScoreBank":
        """A bank for `num_samples` samples: `seq_len` from a `GADMSConfig` (the text context length),
        `initial_score` from a `GADMSObjectiveConfig` (`initial_token_score`, 0.85 by default)."""
        text = config.text_config
        seq_len = text["max_position_embeddings"] if isinstance(text, dict) else text.max_position_embeddings
        kwargs.setdefault("seq_len", int(seq_len))
        if objective is not None:
            kwargs.setdefault("initial_score", float(objective.initial_token_score))
        return cls(num_samples, **kwargs)

    # -- sizes -------------------------------------------------------------------------------------------

    @property
    def num_samples(self) -> int:
        """Number of samples the bank holds."""
        return self.scores.shape[0]

    @property
    def seq_len(self) -> int:
        """Number of token positions per sample."""
        return self.scores.shape[1]

    @property
    def dtype(self) -> torch.dtype:
        """Storage dtype."""
        return self.scores.dtype

    @property
    def device(self) -> torch.device:
        """Storage device."""
        return self.scores.device

    @property
    def bytes_per_sample(self) -> int:
        """Storage cost of one sample: `seq_len * dtype size`."""
        return self.seq_len * self.scores.element_size()

    @property
    def nbytes(self) -> int:
        """Storage cost of the whole bank in bytes."""
        return self.num_samples * self.bytes_per_sample

    @staticmethod
    def estimate_nbytes(num_samples: int, seq_len: int = 77, dtype: torch.dtype = torch.float16) -> int:
        """Bytes a bank of `num_samples` would take (float16, 77 positions: 154 bytes a sample, ~1.54 GB for 10M)."""
        itemsize = torch.empty((), dtype=dtype).element_size()
        return int(num_samples) * int(seq_len) * itemsize

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_samples={self.num_samples}, seq_len={self.seq_len}, "
            f"initial_score={self.initial_score}, dtype={self.dtype}, device={self.device}, "
            f"nbytes={self.nbytes})"
        )

    # -- access ------------------------------------------------------------------------------------------

    def _check_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Validate sample indices (1-D integer, in range) and return them as int64 on the bank's device."""
        if not isinstance(indices, torch.Tensor):
            indices = torch.as_tensor(indices)
        if indices.dim() != 1:
            raise ValueError(f"indices must be a 1-D tensor of sample indices, got shape {tuple(indices.shape)}")
        if indices.dtype.is_floating_point or indices.dtype.is_complex or indices.dtype == torch.bool:
            raise TypeError(f"indices must be an integer tensor, got {indices.dtype}")
        indices = indices.to(device=self.device, dtype=torch.long)
        if indices.numel():
            low, high = int(indices.min()), int(indices.max())
            if low < 0 or high >= self.num_samples:
                bad = low if low < 0 else high
                raise IndexError(
                    f"sample index {bad} is out of range for a score bank of {self.num_samples} samples "
                    f"(valid: 0 to {self.num_samples - 1})"
                )
        return indices

    def get(self, indices: torch.Tensor) -> torch.Tensor:
        """Scores of the given samples: float32 [len(indices), seq_len] on the device of `indices`.

        Call it before `update` in a step: a sample's masks use the scores of its previous visit.
        """
        device = indices.device if isinstance(indices, torch.Tensor) else torch.device("cpu")
        rows = self._check_indices(indices)
        scores = self.scores.index_select(0, rows).float()
        scores = scores.masked_fill(~self.visited.index_select(0, rows).unsqueeze(1), self.initial_score)
        return scores.to(device=device)

    def pad(self, scores: torch.Tensor) -> torch.Tensor:
        """Scores of captions padded to fewer positions than the bank's (`text_padding: longest`), extended
        with zeros to `seq_len`, as `update` takes them (positions past a caption's own score 0 anyway)."""
        return torch.nn.functional.pad(scores.detach().float(), (0, self.seq_len - scores.shape[-1]))

    @torch.no_grad()
    def update(self, indices: torch.Tensor, scores: torch.Tensor) -> None:
        """Store new scores [len(indices), seq_len] for the given samples.

        The bank does no communication: under several processes the caller gathers `(indices, scores)` from
        every process first (`modeling_gadms.distributed.all_gather_variable`, as the trainer does every step)
        and gives every process the same update, so that all banks stay identical. A sample given more than
        once in one update takes its last value (batch order), deterministically.
        """
        if not isinstance(indices, torch.Tensor):
            indices = torch.as_tensor(indices)
        if scores.dim() != 2 or scores.shape[1] != self.seq_len or scores.shape[0] != indices.reshape(-1).shape[0]:
            raise ValueError(
                f"scores must have shape [len(indices), seq_len] = [{indices.reshape(-1).shape[0]}, {self.seq_len}], "
                f"got {tuple(scores.shape)}"
            )
        rows = self._check_indices(indices)
        scores = scores.detach().float()
        values = scores.to(device=self.device, dtype=self.dtype)
        if rows.numel() == 0:
            return
        # Deduplicate, keeping the last occurrence of each index, so the result does not depend on the order
        # in which the backend would apply duplicate writes.
        unique, inverse = torch.unique(rows, return_inverse=True)
        positions = torch.arange(rows.shape[0], device=rows.device)
        last = torch.full((unique.shape[0],), -1, dtype=torch.long, device=rows.device)
        last = last.scatter_reduce(0, inverse, positions, reduce="amax")
        self.scores[unique] = values[last]
        self.visited[unique] = True

    # -- checkpointing -----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The bank's state: `scores` (a CPU copy in the storage dtype), `visited` (which samples have been
        written) and `initial_score`."""
        return {"scores": self.scores.detach().cpu().clone(), "visited": self.visited.cpu().clone(),
                "initial_score": self.initial_score}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state from `state_dict`; the stored scores must have this bank's shape."""
        if "scores" not in state_dict:
            raise KeyError(f"score bank state_dict has no 'scores' entry (keys: {sorted(state_dict)})")
        scores = state_dict["scores"]
        if not isinstance(scores, torch.Tensor):
            raise TypeError(f"score bank state_dict['scores'] must be a tensor, got {type(scores).__name__}")
        if tuple(scores.shape) != tuple(self.scores.shape):
            raise ValueError(
                f"score bank state has shape {tuple(scores.shape)} (samples, positions) but this bank has "
                f"{tuple(self.scores.shape)}: it was saved for a different data set or context length"
            )
        self.scores.copy_(scores.to(device=self.device, dtype=self.dtype))
        if "initial_score" in state_dict:
            self.initial_score = float(state_dict["initial_score"])
        visited = state_dict.get("visited")
        if visited is None:  # a state saved before `visited` existed: a sample is written when a score changed
            initial = torch.tensor(self.initial_score, dtype=self.dtype)
            visited = (self.scores != initial.to(self.device)).any(dim=1)
        self.visited.copy_(torch.as_tensor(visited).to(device=self.device, dtype=torch.bool))


__all__ = ["ScoreBank"]
