"""From criticality to cheaper models: remove the least critical residual blocks.

``compress(bundle, out, rule=..., remove=N | max_drop=PP)`` chooses blocks (criticality-guided
greedy, weight magnitude, or random), saves the smaller network as its own architecture
variant and optionally fine-tunes it with the training lab; ``cost`` measures parameters,
FLOPs and throughput. See docs/compression.md.
"""
from .cost import flops, parameter_count, throughput
from .run import compress, top1
from .select import RULES, GreedyResult, select_greedy, select_magnitude, select_random, without_blocks

__all__ = ["RULES", "GreedyResult", "compress", "flops", "parameter_count", "select_greedy", "select_magnitude",
           "select_random", "throughput", "top1", "without_blocks"]
