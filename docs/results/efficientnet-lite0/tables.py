"""Per-layer and per-role tables of the EfficientNet-Lite0 measurement, from the committed database.

    python docs/results/efficientnet-lite0/tables.py      # writes layers.csv, layers.md, roles.md beside it

Roles: the stem (3x3 stride-2 conv on the image), depthwise (3x3/5x5, one filter per channel), expansion
(1x1 conv widening a block's input 6x), projection (1x1 conv narrowing it again, no activation after: the
"linear bottleneck"; in block 0, which has no expansion, the 1x1 after the depthwise), head (1x1 conv to
1280 channels) and classifier (the Linear layer). Layer shapes come from timm's tf_efficientnet_lite0.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import timm
import torch.nn as nn

HERE = Path(__file__).resolve().parent
DB = HERE / "efficientnet-lite0.db"
ROLES = ["stem", "depthwise", "expansion", "projection", "head", "classifier"]


def role(name: str) -> str:
    if name == "conv_stem":
        return "stem"
    if name == "conv_head":
        return "head"
    if name == "classifier":
        return "classifier"
    last = name.rsplit(".", 1)[-1]
    if last == "conv_dw":
        return "depthwise"
    if last == "conv_pwl" or name == "blocks.0.0.conv_pw":  # block 0 has no expansion: its 1x1 projects
        return "projection"
    return "expansion"


def layer_info() -> pd.DataFrame:
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    rows = []
    blocks = {n: m for n, m in net.named_modules() if n.count(".") == 2 and n.startswith("blocks.")}
    for name, m in net.named_modules():
        if isinstance(m, nn.Conv2d):
            shape = f"{m.in_channels}->{m.out_channels} k{m.kernel_size[0]} s{m.stride[0]}"
        elif isinstance(m, nn.Linear):
            shape = f"{m.in_features}->{m.out_features}"
        else:
            continue
        block = ".".join(name.split(".")[:3]) if name.startswith("blocks.") else ""
        skip = bool(getattr(blocks.get(block), "has_skip", False)) if block else False
        rows.append({"layer": name, "role": role(name), "stage": int(name.split(".")[1]) if block else None,
                     "shape": shape, "params": sum(p.numel() for p in m.parameters()), "residual_block": skip})
    return pd.DataFrame(rows)


def main(db: Path = DB) -> None:
    with sqlite3.connect(db) as con:
        res = pd.read_sql("SELECT layer, trial, criticality, top1_acc, pred_agreement FROM results "
                          "WHERE reset = 'random'", con)
        base, n = con.execute("SELECT base_top1_acc, base_n_samples FROM runs").fetchone()
    per = res.groupby("layer", sort=False).agg(
        criticality=("criticality", "mean"), criticality_std=("criticality", "std"),
        disagreement=("pred_agreement", lambda a: 100 - a.mean()), top1_acc=("top1_acc", "mean"),
        trials=("trial", "count")).reset_index()
    table = layer_info().merge(per, on="layer", how="inner")
    table.insert(0, "index", range(len(table)))
    table.to_csv(HERE / "layers.csv", index=False, float_format="%.4f")

    shown = table.assign(stage=table.stage.map(lambda s: "" if pd.isna(s) else str(int(s))),
                         residual_block=table.residual_block.map({True: "yes", False: ""}))
    lines = [f"# EfficientNet-Lite0: criticality per layer (random reset, mean of {int(table.trials.max())} trials, "
             f"{n:,} images; unmodified top-1 {base:.1f} %)", "",
             "| # | layer | role | stage | shape | params | residual block | criticality | std | "
             "top-1 disagreement [%] | top-1 after reset [%] |", "|" + "---|" * 11]
    for r in shown.itertuples():
        lines.append(f"| {r.index} | `{r.layer}` | {r.role} | {r.stage} | {r.shape} | {r.params:,} | "
                     f"{r.residual_block} | {r.criticality:.2f} | {r.criticality_std:.2f} | {r.disagreement:.1f} | "
                     f"{r.top1_acc:.1f} |")
    (HERE / "layers.md").write_text("\n".join(lines) + "\n")

    roles = table.groupby("role").agg(layers=("layer", "count"), criticality=("criticality", "mean"),
                                      crit_min=("criticality", "min"), crit_max=("criticality", "max"),
                                      disagreement=("disagreement", "mean"), top1=("top1_acc", "mean"))
    roles = roles.reindex([r for r in ROLES if r in roles.index])
    lines = ["| role | layers | criticality mean | min | max | top-1 disagreement [%] | top-1 after reset [%] |",
             "|" + "---|" * 7]
    for name, r in roles.iterrows():
        lines.append(f"| {name} | {int(r.layers)} | {r.criticality:.2f} | {r.crit_min:.2f} | {r.crit_max:.2f} | "
                     f"{r.disagreement:.1f} | {r.top1:.1f} |")
    res_blocks = table[table.role.isin(["depthwise", "expansion", "projection"])]
    lines += ["", "Inside the inverted-residual blocks, by whether the block has a skip connection:", "",
              "| role | residual block | layers | criticality mean | top-1 disagreement [%] |", "|" + "---|" * 5]
    for (name, skip), g in res_blocks.groupby(["role", "residual_block"]):
        lines.append(f"| {name} | {'yes' if skip else 'no'} | {len(g)} | {g.criticality.mean():.2f} | "
                     f"{g.disagreement.mean():.1f} |")
    (HERE / "roles.md").write_text("\n".join(lines) + "\n")
    print(f"{len(table)} layers -> layers.csv, layers.md, roles.md")


if __name__ == "__main__":
    import sys

    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DB)
