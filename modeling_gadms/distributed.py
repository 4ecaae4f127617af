"""Collectives across training processes, in one place: the variable-size all-gather that the trainer uses to
keep every process's GASS score bank identical, and the gradient-preserving feature gather of the SDM loss.

With one process (or no `torch.distributed` process group) every function is the identity.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def world_size() -> int:
    """Number of processes when `torch.distributed` is initialised, else 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def communication_device(tensor: torch.Tensor) -> torch.device:
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
    world = world_size()
    if world == 1:
        return (tensor, [tensor.shape[0]]) if return_sizes else tensor
    device = tensor.device
    comm = communication_device(tensor)
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


def gather_features(tensor: torch.Tensor) -> torch.Tensor:
    """All-gather `tensor` ([n, ...]) from every process, concatenated in rank order along the first dimension.

    Only this process's slice carries gradient (it is the input tensor itself); the slices of the other processes
    are detached copies. The first dimension may differ between processes. With one process (or no process
    group) the tensor is returned unchanged.
    """
    if world_size() == 1:
        return tensor
    gathered, sizes = all_gather_variable(tensor.detach(), return_sizes=True)
    parts = list(torch.split(gathered, sizes, dim=0))
    parts[dist.get_rank()] = tensor
    return torch.cat(parts, dim=0)


__all__ = ["all_gather_variable", "communication_device", "gather_features", "world_size"]
