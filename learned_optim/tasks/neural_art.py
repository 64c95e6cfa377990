"""Neural art (Andrychowicz et al. 2016, Section 3.4): the optimized parameters are pixels.

Style transfer in the manner of Gatys et al.: minimise a content loss (features of the image
against features of a content image) plus a style loss (Gram matrices against a style image).
No pretrained VGG is available offline, so features come from a small fixed conv net with
seeded random weights. Content images are random crops of scikit-learn's sample photo
``china.jpg``; styles are crops of ``flower.jpg`` (``style="photo"``) or procedurally generated
stripes never seen in training (``style="stripes"``). Paper sizes: train 64x64 (12,288
parameters), test 128x128 (49,152).
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from .base import Task, TaskFamily

__all__ = ["NeuralArtFamily"]


@lru_cache(maxsize=None)
def _sample_images() -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from sklearn.datasets import load_sample_images
    except ImportError as exc:  # pragma: no cover
        raise ImportError("neural-art needs scikit-learn and pillow: "
                          "pip install 'learned_optim[examples]'") from exc
    china, flower = load_sample_images().images
    as_tensor = [torch.tensor(img, dtype=torch.float32).permute(2, 0, 1) / 255.0
                 for img in (china, flower)]
    return as_tensor[0], as_tensor[1]


@lru_cache(maxsize=None)
def _feature_net() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU())
        for module in net:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)
                nn.init.zeros_(module.bias)
    return net.requires_grad_(False).train(False)


def _features(image: torch.Tensor) -> list[torch.Tensor]:
    net, out, x = _feature_net(), [], image.unsqueeze(0)
    for index, module in enumerate(net):
        x = module(x)
        if index in (1, 4):
            out.append(x[0])
    return out


def _gram(feature: torch.Tensor) -> torch.Tensor:
    flat = feature.flatten(1)
    return flat @ flat.t() / flat.shape[1]


def _crop(image: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    _, height, width = image.shape
    side = int(torch.randint(min(height, width) // 3, min(height, width) + 1, (1,), generator=g))
    top = int(torch.randint(0, height - side + 1, (1,), generator=g))
    left = int(torch.randint(0, width - side + 1, (1,), generator=g))
    patch = image[:, top:top + side, left:left + side].unsqueeze(0)
    return F.interpolate(patch, size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)[0]


def _stripes(size: int, g: torch.Generator) -> torch.Tensor:
    angle = float(torch.rand(1, generator=g)) * 3.1416
    freq = 0.2 + float(torch.rand(1, generator=g)) * 0.6
    colors = torch.rand(2, 3, 1, 1, generator=g)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32),
                            torch.arange(size, dtype=torch.float32), indexing="ij")
    wave = 0.5 + 0.5 * torch.sin(freq * (xx * torch.cos(torch.tensor(angle))
                                         + yy * torch.sin(torch.tensor(angle))))
    return colors[0] * wave + colors[1] * (1 - wave)


class _Image(nn.Module):
    def __init__(self, pixels: torch.Tensor):
        super().__init__()
        self.pixels = nn.Parameter(pixels)

    def forward(self, _inputs=None) -> torch.Tensor:
        return self.pixels


class NeuralArtFamily(TaskFamily):
    """Style transfer tasks; θ₀ is the content image plus uniform noise."""

    def __init__(self, size: int = 64, style: str = "photo", style_weight: float = 10.0,
                 horizon: int = 100, name: str | None = None):
        if style not in ("photo", "stripes"):
            raise ValueError("style must be 'photo' or 'stripes'")
        self.size, self.style, self.style_weight, self.horizon = size, style, style_weight, horizon
        default = "neural-art" if size == 64 else f"neural-art-{size}"
        self.name = name or default + ("" if style == "photo" else f"-{style}")

    def sample(self, seed: int) -> Task:
        g = torch.Generator().manual_seed(seed)
        china, flower = _sample_images()
        content = _crop(china, self.size, g)
        style = _crop(flower, self.size, g) if self.style == "photo" else _stripes(self.size, g)
        with torch.no_grad():
            content_features = _features(content)[-1]
            style_grams = [_gram(f) for f in _features(style)]
        start = (content + 0.1 * (torch.rand(content.shape, generator=g) - 0.5)).clamp(0, 1)
        weight = self.style_weight

        def loss_fn(image: torch.Tensor, _targets=None) -> torch.Tensor:
            features = _features(image)
            content_loss = (features[-1] - content_features).square().mean()
            style_loss = sum((_gram(f) - s).square().mean() for f, s in zip(features, style_grams))
            return content_loss + weight * style_loss

        return Task(model=_Image(start), sample_batch=lambda step: (None, None), loss_fn=loss_fn)

    def describe(self):
        return {**super().describe(), "size": self.size, "style": self.style,
                "style_weight": self.style_weight}
