"""MoveNet SinglePose (Google, Apache-2.0) in PyTorch, read from its TensorFlow.js graph files.

The layers follow the graph in ``movenet-{thunder,lightning}.json`` exactly: a MobileNetV2 backbone
(width 1.75 for Thunder, 1.0 for Lightning; batch norm folded into the convolution biases, ReLU6,
TF "SAME" padding), an FPN whose top-down path adds ×2 bilinear upsamplings (half-pixel centres) to
1×1 laterals of the /16, /8 and /4 taps, each sum followed by a separable convolution with ReLU,
and four heads on the final 24-channel stride-4 map (depthwise 3×3, 1×1 to 96 with ReLU, 1×1 out):
person centre (1), keypoint regression from the centre (2K), keypoint heatmaps (K), keypoint
offsets (2K). Every layer width is read from the weight shapes, so both models load into the same
classes. The graph is fully convolutional: any input whose sides are multiples of 32 works.

Input: RGB in 0..255 as float, ``[B, 3, H, W]``; the graph's own scaling (``x · (1/127.5) − 1``
with its stored, float16-rounded factor) happens inside :meth:`MoveNet.forward`.

:func:`decode_single_pose` reproduces the graph's post-processing (centre prior, regression,
distance-weighted heatmap argmax, offsets) for a batch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

_GRAPH_PREFIXES = ("StatefulPartitionedCall/", "center_net_mobile_net_v2fpn_feature_extractor/model_1/")
# MobileNetV2 inverted-residual blocks as (expansion, stride) per block, 17 blocks in the graph
# (block 0 is "expanded_conv"); output channels come from the weights.
_BLOCKS = ((1, 1), (6, 2), (6, 1), (6, 2), (6, 1), (6, 1), (6, 2), (6, 1), (6, 1), (6, 1),
           (6, 1), (6, 1), (6, 1), (6, 2), (6, 1), (6, 1), (6, 1))
# Backbone taps the FPN reads: after block 2 (/4), block 5 (/8), block 9 (/16); the /32 tap is Conv_1.
_TAPS = (2, 5, 9)
HEADS = ("center", "regress", "heatmap", "offset")
_HEAD_SCOPES = {"center": "center_0", "regress": "kpt_regress_0", "heatmap": "kpt_heatmap_0",
                "offset": "kpt_offset_0"}
# Keras layer-name suffixes of the FPN's laterals (conv2d…) and separable convs (separable_conv2d…).
_FPN_SUFFIXES = ("", "_1", "_2", "_3")
# Centre and keypoint selection of the graph: score / (distance in cells + this).
DISTANCE_BIAS = 1.8


def read_tfjs_weights(json_path: str | Path) -> dict[str, np.ndarray]:
    """All tensors of a TensorFlow.js graph model, by their graph name (scope prefixes stripped).

    Reads the ``weightsManifest`` and its ``.bin`` shard(s) beside the JSON without TensorFlow:
    float32 tensors stored as float16 (``quantization.dtype == "float16"``) are widened to float32,
    int32 constants are read as they are, in manifest order.

    Returns:
        name → array (float32 or int32) of the manifest shape.
    """
    json_path = Path(json_path)
    model = json.loads(json_path.read_text())
    out: dict[str, np.ndarray] = {}
    for group in model["weightsManifest"]:
        data = b"".join((json_path.parent / p).read_bytes() for p in group["paths"])
        offset = 0
        for spec in group["weights"]:
            count = int(np.prod(spec["shape"], dtype=np.int64))
            quant = (spec.get("quantization") or {}).get("dtype")
            if quant == "float16":
                dtype = np.float16
            elif spec["dtype"] in ("float32", "int32"):
                dtype = np.dtype(spec["dtype"])
            else:
                raise ValueError(f"{json_path}: unsupported tensor {spec['name']} ({spec['dtype']}, {quant})")
            array = np.frombuffer(data, dtype, count, offset)
            offset += count * np.dtype(dtype).itemsize
            name = spec["name"]
            for prefix in _GRAPH_PREFIXES:
                name = name.replace(prefix, "")
            out[name] = array.astype(np.float32 if dtype == np.float16 else dtype).reshape(spec["shape"])
        if offset != len(data):
            raise ValueError(f"{json_path}: manifest describes {offset} bytes, shards hold {len(data)}")
    return out


def _same_padding(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow "SAME" padding: output ⌈in/stride⌉, the odd pixel of padding after, not before."""
    if kernel == 1:
        return x
    pads = []
    for size in (x.shape[-1], x.shape[-2]):
        total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class TfConv(nn.Conv2d):
    """Convolution (bias always, BN folded) with TF "SAME" padding and an optional activation.

    Args:
        activation: "relu6", "relu" or None.
        bias: False for the graph's bias-free depthwise convolutions of separable layers.
    """

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 activation: str | None = None, bias: bool = True) -> None:
        super().__init__(cin, cout, kernel, stride, padding=0, groups=groups, bias=bias)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(_same_padding(x, self.kernel_size[0], self.stride[0]))
        if self.activation == "relu6":
            return F.relu6(y)
        if self.activation == "relu":
            return F.relu(y)
        return y

    def load_tf(self, weight: np.ndarray, bias: np.ndarray | None = None) -> None:
        """Copy a TF kernel ([kh, kw, cin, cout], or [kh, kw, c, 1] for depthwise) and bias."""
        w = torch.from_numpy(np.ascontiguousarray(weight))
        w = w.permute(2, 3, 0, 1) if self.groups > 1 else w.permute(3, 2, 0, 1)
        if tuple(w.shape) != tuple(self.weight.shape):
            raise ValueError(f"kernel {tuple(weight.shape)} does not fit {tuple(self.weight.shape)}")
        with torch.no_grad():
            self.weight.copy_(w)
            if bias is not None:
                self.bias.copy_(torch.from_numpy(np.ascontiguousarray(bias)))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1×1 expand (ReLU6, absent when expansion is 1), 3×3 depthwise (ReLU6),
    1×1 linear projection; identity shortcut when stride is 1 and widths match."""

    def __init__(self, cin: int, cout: int, hidden: int, stride: int) -> None:
        super().__init__()
        self.expand = TfConv(cin, hidden, 1, activation="relu6") if hidden != cin else None
        self.depthwise = TfConv(hidden, hidden, 3, stride, groups=hidden, activation="relu6")
        self.project = TfConv(hidden, cout, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


class SeparableConv(nn.Module):
    """Depthwise 3×3 (no bias) then pointwise 1×1 with bias and an activation, as Keras' SeparableConv2D."""

    def __init__(self, cin: int, cout: int, activation: str | None = "relu") -> None:
        super().__init__()
        self.depthwise = TfConv(cin, cin, 3, groups=cin, bias=False)
        self.pointwise = TfConv(cin, cout, 1, activation=activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def _shape(weights: dict[str, np.ndarray], name: str) -> tuple[int, ...]:
    return tuple(weights[name].shape)


@dataclass(frozen=True)
class MoveNetOutputs:
    """Raw maps of one forward pass (B batch, K keypoints, h×w = H/4 × W/4).

    Attributes:
        features: tuple of the stride-4 FPN map [B, 24, h, w], the stride-8 FPN map [B, 24, h/2, w/2],
            the stride-16 FPN map [B, 32, h/4, w/4] and the backbone's stride-32 output
            [B, 1280, h/8, w/8] (the DiffPose taps).
        center: [B, 1, h, w] person-centre logits.
        regress: [B, 2K, h, w] keypoint displacement from the centre, in cells, (dy, dx) per keypoint.
        heatmap: [B, K, h, w] keypoint logits.
        offset: [B, 2K, h, w] sub-cell keypoint offsets, (dy, dx) per keypoint.
    """

    features: tuple[torch.Tensor, ...]
    center: torch.Tensor
    regress: torch.Tensor
    heatmap: torch.Tensor
    offset: torch.Tensor


def movenet_spec(weights: dict[str, np.ndarray]) -> dict:
    """Layer widths of a TFJS MoveNet weights dict (JSON-able; rebuilds :class:`MoveNet` without the file).

    Keys: ``stem`` (channels), ``blocks`` ([hidden, out] per inverted-residual block), ``top``,
    ``laterals`` ([in, out] per FPN lateral), ``smooths`` ([in, out] per FPN separable conv),
    ``heads`` ({head: [in, hidden, out]}).
    """
    w = weights
    blocks = []
    for i in range(len(_BLOCKS)):
        name = MoveNet.block_name(i)
        blocks.append([_shape(w, f"model/{name}_depthwise/depthwise_weights")[2],
                       _shape(w, f"model/{name}_project/Conv2D_weights")[3]])
    heads = {}
    for head in HEADS:
        dw, pw, out = MoveNet.head_names(w, head)
        heads[head] = [_shape(w, dw)[2], _shape(w, pw)[3], _shape(w, out)[3]]
    return {
        "stem": _shape(w, "model/Conv1/Conv2D_weights")[3],
        "blocks": blocks,
        "top": _shape(w, "model/Conv_1/Conv2D_weights")[3],
        "laterals": [list(_shape(w, f"conv2d{s}/Conv2D/ReadVariableOp")[2:]) for s in _FPN_SUFFIXES],
        "smooths": [list(_shape(w, f"separable_conv2d{s}/separable_conv2d_weights")[2:]) for s in _FPN_SUFFIXES[:3]],
        "heads": heads,
        "input_scale": float(w["truediv"].ravel()[0]),
        "input_shift": float(w["sub_1/y"].ravel()[0]),
    }


class MoveNet(nn.Module):
    """MobileNetV2 + FPN + the four single-pose heads.

    Args:
        stem, blocks, top, laterals, smooths, heads: layer widths (see :func:`movenet_spec`).
        input_scale, input_shift: the graph's input scaling ``x · scale − shift``.
    """

    def __init__(self, stem: int, blocks: list, top: int, laterals: list, smooths: list, heads: dict,
                 input_scale: float, input_shift: float) -> None:
        super().__init__()
        self.stem = TfConv(3, stem, 3, 2, activation="relu6")
        layers, cin = [], stem
        for (hidden, cout), (_, stride) in zip(blocks, _BLOCKS):
            layers.append(InvertedResidual(cin, cout, hidden, stride))
            cin = cout
        self.blocks = nn.ModuleList(layers)
        self.top = TfConv(cin, top, 1, activation="relu6")
        # FPN: lateral 1×1 convs (on /32, /16, /8, /4) and the separable convs after each top-down sum.
        self.laterals = nn.ModuleList(TfConv(a, b, 1) for a, b in laterals)
        self.smooths = nn.ModuleList(SeparableConv(a, b) for a, b in smooths)
        # In HEADS order whatever the spec's key order (a checkpoint's JSON sorts it), so that the
        # state dict and a checkpoint saved again from a loaded model are the same.
        self.heads = nn.ModuleDict()
        for head in HEADS:
            cin_, hidden, cout = heads[head]
            self.heads[head] = nn.Sequential(SeparableConv(cin_, hidden), TfConv(hidden, cout, 1))
        self.num_keypoints = heads["heatmap"][2]
        self.feature_channels = (smooths[2][1], smooths[1][1], smooths[0][1], top)
        self.input_scale, self.input_shift = input_scale, input_shift

    @staticmethod
    def block_name(i: int) -> str:
        return "expanded_conv" if i == 0 else f"block_{i}"

    @staticmethod
    def head_names(w: dict[str, np.ndarray], head: str) -> tuple[str, str, str]:
        scope = _HEAD_SCOPES[head] + "/"
        names = [n for n in w if n.startswith(scope)]
        dw = next(n for n in names if n.endswith("separable_conv2d/ReadVariableOp"))
        pw = next(n for n in names if n.endswith("separable_conv2d/ReadVariableOp_1"))
        out = next(n for n in names if "/conv2d_" in n and n.endswith("Conv2D/ReadVariableOp"))
        return dw, pw, out

    def load_tfjs(self, w: dict[str, np.ndarray]) -> "MoveNet":
        """Copy every tensor of the TFJS weights dict into the layers (strict: all must fit)."""
        self.stem.load_tf(w["model/Conv1/Conv2D_weights"], w["model/Conv1/Conv2D_bn_offset"])
        for i, block in enumerate(self.blocks):
            name = f"model/{self.block_name(i)}"
            if block.expand is not None:
                block.expand.load_tf(w[f"{name}_expand/Conv2D_weights"], w[f"{name}_expand/Conv2D_bn_offset"])
            block.depthwise.load_tf(w[f"{name}_depthwise/depthwise_weights"], w[f"{name}_depthwise/depthwise_bn_offset"])
            block.project.load_tf(w[f"{name}_project/Conv2D_weights"], w[f"{name}_project/Conv2D_bn_offset"])
        self.top.load_tf(w["model/Conv_1/Conv2D_weights"], w["model/Conv_1/Conv2D_bn_offset"])
        for lateral, s in zip(self.laterals, _FPN_SUFFIXES):
            lateral.load_tf(w[f"conv2d{s}/Conv2D/ReadVariableOp"], w[f"conv2d{s}/BiasAdd/ReadVariableOp"])
        for smooth, s in zip(self.smooths, _FPN_SUFFIXES[:3]):
            smooth.depthwise.load_tf(w[f"separable_conv2d{s}/separable_conv2d/ReadVariableOp"])
            smooth.pointwise.load_tf(w[f"separable_conv2d{s}/separable_conv2d_weights"],
                                     w[f"separable_conv2d{s}/separable_conv2d_bn_offset"])
        for head in HEADS:
            dw, pw, out = self.head_names(w, head)
            separable, final = self.heads[head]
            separable.depthwise.load_tf(w[dw])
            separable.pointwise.load_tf(w[pw], w[pw.rsplit("/", 2)[0] + "/BiasAdd/ReadVariableOp"])
            final.load_tf(w[out], w[out.replace("Conv2D/ReadVariableOp", "BiasAdd/ReadVariableOp")])
        return self

    def backbone(self, rgb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Backbone taps (/4, /8, /16, /32) of RGB 0..255 input [B, 3, H, W] (sides divisible by 32)."""
        if rgb.shape[-1] % 32 or rgb.shape[-2] % 32:
            raise ValueError(f"MoveNet input sides must be multiples of 32, got {tuple(rgb.shape[-2:])}")
        x = self.stem(rgb * self.input_scale - self.input_shift)
        taps = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in _TAPS:
                taps.append(x)
        taps.append(self.top(x))
        return tuple(taps)

    def fpn(self, taps: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """Top-down FPN over the taps → (/4 map, /8 map, /16 map, /32 backbone output)."""
        c4, c8, c16, c32 = taps
        x = self.laterals[0](c32)
        outs = []
        for lateral, smooth, tap in zip(self.laterals[1:], self.smooths, (c16, c8, c4)):
            up = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            x = smooth(up + lateral(tap))
            outs.append(x)
        return outs[2], outs[1], outs[0], c32

    def run_heads(self, stride4: torch.Tensor) -> dict[str, torch.Tensor]:
        """The four heads on the stride-4 FPN map (raw logits / cell units)."""
        return {head: self.heads[head](stride4) for head in HEADS}

    def forward(self, rgb: torch.Tensor) -> MoveNetOutputs:
        """Args:
            rgb: [B, 3, H, W] float RGB in 0..255.

        Returns:
            :class:`MoveNetOutputs`.
        """
        features = self.fpn(self.backbone(rgb))
        return MoveNetOutputs(features=features, **self.run_heads(features[0]))


def load_movenet(json_path: str | Path) -> MoveNet:
    """Build a :class:`MoveNet` from a TFJS graph model (``movenet-thunder.json`` + ``.bin``), eval mode."""
    weights = read_tfjs_weights(json_path)
    return MoveNet(**movenet_spec(weights)).load_tfjs(weights).eval()


def _grid(h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    ys = torch.arange(h, device=device, dtype=torch.float32).view(h, 1).expand(h, w)
    xs = torch.arange(w, device=device, dtype=torch.float32).view(1, w).expand(h, w)
    return ys, xs


def _pick(maps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """maps [B, C, h, w], flat cell index [B] → [B, C] values at that cell."""
    flat = maps.flatten(2)
    return flat.gather(2, index.view(-1, 1, 1).expand(-1, flat.shape[1], 1)).squeeze(2)


def center_cells(center_logits: torch.Tensor, band: float | None = None) -> torch.Tensor:
    """Flat index [B] of the person centre: argmax of sigmoid(centre) / (distance to the grid centre + 1.8).

    The grid centre is (h/2, w/2) in cell units, as the graph's constant weight map (64×64 → (32, 32)).
    ``band``: only cells within ``band`` × the map's width (in x) and height (in y) of the grid
    centre can be the centre; None: any cell, as the graph decodes.
    """
    b, _, h, w = center_logits.shape
    ys, xs = _grid(h, w, center_logits.device)
    weight = 1.0 / (torch.sqrt((ys - h / 2) ** 2 + (xs - w / 2) ** 2) + DISTANCE_BIAS)
    if band is not None:
        weight = weight * (((xs - w / 2).abs() <= band * w) & ((ys - h / 2).abs() <= band * h))
    return (torch.sigmoid(center_logits[:, 0].float()) * weight).flatten(1).argmax(1)


def regressed_joints(out: MoveNetOutputs, centre_band: float | None = None) -> torch.Tensor:
    """[B, K, 2] joints (y, x) in cells regressed from the selected person centre
    (:func:`center_cells` with ``band=centre_band``)."""
    b, _, h, w = out.center.shape
    cell = center_cells(out.center, centre_band)
    cy, cx = (cell // w).float(), (cell % w).float()
    reg = _pick(out.regress.float(), cell).view(b, -1, 2)
    return torch.stack([cy[:, None] + reg[..., 0], cx[:, None] + reg[..., 1]], dim=-1)


def decode_single_pose(out: MoveNetOutputs, centre_band: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The graph's own single-person decoding (with ``centre_band``, the centre kept near the crop's
    middle: see :func:`center_cells`).

    Centre cell (see :func:`center_cells`) → regressed joints; per joint the argmax of
    sigmoid(heatmap) / (distance to the regressed joint + 1.8); position = cell + offset.

    Returns:
        ``yx`` [B, K, 2] in cells of the stride-4 map (divide by (h, w) for the graph's normalised
        output), ``scores`` [B, K] = sigmoid(heatmap) at the chosen cell.
    """
    b, k, h, w = out.heatmap.shape
    ys, xs = _grid(h, w, out.heatmap.device)
    joints = regressed_joints(out, centre_band)
    dist = torch.sqrt((ys - joints[..., 0, None, None]) ** 2 + (xs - joints[..., 1, None, None]) ** 2)
    heat = torch.sigmoid(out.heatmap.float())
    cells = (heat / (dist + DISTANCE_BIAS)).flatten(2).argmax(2)  # [B, K]
    scores = heat.flatten(2).gather(2, cells[..., None]).squeeze(2)
    offsets = out.offset.float().flatten(2).view(b, k, 2, h * w)
    off = offsets.gather(3, cells[:, :, None, None].expand(b, k, 2, 1)).squeeze(3)  # [B, K, 2]
    yx = torch.stack([(cells // w).float(), (cells % w).float()], dim=-1) + off
    return yx, scores
