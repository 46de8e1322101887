"""What a network costs: parameters, FLOPs (torch's FlopCounterMode) and measured throughput."""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


def parameter_count(network: nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())


@torch.no_grad()
def flops(network: nn.Module, input_size: int, in_channels: int = 3) -> int:
    """FLOPs of one forward pass on one image (a multiply-add counts 2), by torch's flop counter."""
    p = next(network.parameters())
    x = torch.zeros(1, in_channels, input_size, input_size, device=p.device, dtype=p.dtype)
    was_training = network.training
    network.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        network(x)
    network.train(was_training)
    return int(counter.get_total_flops())


@torch.inference_mode()
def throughput(models: dict[str, nn.Module], input_size: int, *, batch_size: int, seconds: float = 3.0,
               rounds: int = 7, in_channels: int = 3) -> dict[str, float]:
    """Images per second of each model at ``batch_size``, measured in one run.

    The models take turns, round after round (each round about ``seconds`` / ``rounds`` per
    model), so that load changes on the machine hit all of them alike; each model's figure is
    the median over rounds. Compare models by the ratio of their figures, not across runs.
    """
    x = torch.rand(batch_size, in_channels, input_size, input_size).contiguous(memory_format=torch.channels_last)
    nets = {k: m.eval().to(memory_format=torch.channels_last) for k, m in models.items()}
    for net in nets.values():  # warm-up: allocator, kernels
        net(x)
    per_round = seconds / rounds
    rates: dict[str, list[float]] = {k: [] for k in nets}
    for _ in range(rounds):
        for name, net in nets.items():
            n, start = 0, time.perf_counter()
            while True:
                net(x)
                n += 1
                elapsed = time.perf_counter() - start
                if elapsed >= per_round:
                    break
            rates[name].append(n * batch_size / elapsed)
    return {k: statistics.median(v) for k, v in rates.items()}
