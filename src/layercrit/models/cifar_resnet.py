"""ResNet-50 layout for 32x32 input (CIFAR-10), width-scalable.

Same 54 Conv2d/Linear layers with torchvision's module names (``conv1``,
``layerS.B.convK``, ``layerS.0.downsample.0``, ``fc``) so that criticality heatmaps line
up column by column with the ImageNet ResNet-50 study. Differences from torchvision's
ResNet-50: a stride-2 3x3 stem without max-pooling (32 -> 16 px) and a base width
(16 by default instead of 64) that scales every stage.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torchvision.models.resnet import Bottleneck

from .registry import CIFAR10_MEAN, CIFAR10_STD, register_arch

STAGE_BLOCKS = (3, 4, 6, 3)


class CifarResNet50(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.inplanes = width
        self.layer1 = self._make_stage(width, STAGE_BLOCKS[0], stride=1)
        self.layer2 = self._make_stage(width * 2, STAGE_BLOCKS[1], stride=2)
        self.layer3 = self._make_stage(width * 4, STAGE_BLOCKS[2], stride=2)
        self.layer4 = self._make_stage(width * 8, STAGE_BLOCKS[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width * 8 * Bottleneck.expansion, num_classes)
        # Same initialization as torchvision's ResNet.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        out = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or self.inplanes != out:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, out, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = out
        layers += [Bottleneck(out, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _register(name: str, width: int) -> None:
    @register_arch(name, num_classes=10, input_size=32, mean=CIFAR10_MEAN, std=CIFAR10_STD)
    def build(num_classes: int = 10) -> nn.Module:
        return CifarResNet50(num_classes=num_classes, width=width)


_register("cifar_resnet50", 16)
_register("cifar_resnet50_w32", 32)
_register("cifar_resnet50_w64", 64)
