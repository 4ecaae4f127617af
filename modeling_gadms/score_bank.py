"""Per-sample token-score bank of GA-DMS (SPEC section 3).

Every training sample (one caption) owns one score per token position; all start at `initial_token_score`
(0.85). A step reads the scores of its samples (their previous visit) to draw the dual masks, computes new GASS
scores on the unmasked captions, and writes them back:

```python
scores = bank.get(indices)            # masks of this visit use the scores of the previous one
views = dual_masking(input_ids, scores, config)
...
bank.update(indices, new_scores)      # after the step; synchronised across processes
```

Memory: `num_samples * seq_len * dtype size` bytes, kept on CPU by default. With the default float16 a sample
costs 77 * 2 = 154 bytes, so WebPerson's 10,005,446 captions take about 1.54 GB (float32 would double that).
float16 resolves scores in [0, 1] to better than 5e-4, far finer than the masking curves need.

Under `torch.distributed` (world size > 1) `update` all-gathers `(indices, scores)` from every process and
applies all of them, in rank order, on every process, so that all banks stay identical. The bank has
`state_dict` / `load_state_dict`, so it can be checkpointed with the training state (e.g. with accelerate's
`register_for_checkpointing`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def _world_size() -> int:
    """Number of processes when `torch.distributed` is initialised, else 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def _communication_device(tensor: torch.Tensor) -> torch.device:
    """Device to all-gather on: the tensor's own device, unless the backend can only use another one."""
    backend = str(dist.get_backend()).lower()
    if backend == "gloo":
        return torch.device("cpu")
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return tensor.device  # a multi-device backend such as "cpu:gloo,cuda:nccl"


def all_gather_variable(tensor: torch.Tensor, return_sizes: bool = False) -> Any:
    """All-gather tensors whose first dimension may differ between processes; concatenated in rank order.

    The tensors must agree in dtype and in all but the first dimension. Communication runs on the tensor's device
    (CPU under gloo, the current CUDA device under nccl); the result comes back on the tensor's device.
    Without gradient. With one process (or no process group) the tensor is returned as is.
    With `return_sizes=True` returns `(gathered, sizes)`, `sizes` the first dimension of every process's tensor.
    """
    world = _world_size()
    if world == 1:
        return (tensor, [tensor.shape[0]]) if return_sizes else tensor
    device = tensor.device
    comm = _communication_device(tensor)
    local = tensor.detach().to(comm).contiguous()
    size = torch.tensor([local.shape[0]], device=comm, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes_list = [int(s.item()) for s in sizes]
    longest = max(sizes_list)
    if local.shape[0] < longest:
        pad = local.new_zeros((longest - local.shape[0], *local.shape[1:]))
        local = torch.cat([local, pad], dim=0)
    parts = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(parts, local)
    gathered = torch.cat([part[:n] for part, n in zip(parts, sizes_list)], dim=0).to(device)
    return (gathered, sizes_list) if return_sizes else gathered


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

    @classmethod
    def from_config(cls, config: Any, num_samples: int, **kwargs: Any) -> "ScoreBank":
        """A bank for `num_samples` samples with `seq_len` and `initial_score` taken from a `GADMSConfig`."""
        text = config.text_config
        seq_len = text["max_position_embeddings"] if isinstance(text, dict) else text.max_position_embeddings
        kwargs.setdefault("seq_len", int(seq_len))
        kwargs.setdefault("initial_score", float(config.initial_token_score))
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
        return self.scores.index_select(0, rows).to(device=device, dtype=torch.float32)

    @torch.no_grad()
    def update(self, indices: torch.Tensor, scores: torch.Tensor) -> None:
        """Store new scores [len(indices), seq_len] for the given samples.

        Under `torch.distributed` with several processes, `(indices, scores)` are first all-gathered from every
        process (every process must call `update` in the same step; batch sizes may differ), so every process's
        bank is identical afterwards. A sample given more than once in one update (also across processes) takes
        its last value in rank order, then batch order, deterministically on every process.
        """
        if not isinstance(indices, torch.Tensor):
            indices = torch.as_tensor(indices)
        if scores.dim() != 2 or scores.shape[1] != self.seq_len or scores.shape[0] != indices.reshape(-1).shape[0]:
            raise ValueError(
                f"scores must have shape [len(indices), seq_len] = [{indices.reshape(-1).shape[0]}, {self.seq_len}], "
                f"got {tuple(scores.shape)}"
            )
        self._check_indices(indices)  # fail on this process before any communication
        indices = indices.to(scores.device, torch.long)
        scores = scores.detach().float()
        if _world_size() > 1:
            indices = all_gather_variable(indices)
            scores = all_gather_variable(scores)
        rows = self._check_indices(indices)
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

    # -- checkpointing -----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The bank's state: `scores` (a CPU copy in the storage dtype) and `initial_score`."""
        return {"scores": self.scores.detach().cpu().clone(), "initial_score": self.initial_score}

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


__all__ = ["ScoreBank", "all_gather_variable"]
