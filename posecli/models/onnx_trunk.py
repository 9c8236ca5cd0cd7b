"""MoveNet's layers through onnxruntime, for CPU inference.

On the CPU onnxruntime runs the MoveNet trunk 2–2.4× faster than PyTorch eager (its depthwise
convolutions and fused conv+activation kernels; measured in one process on the 2-core machine:
41 vs 98 ms per 256×256 crop NCHW, 82 channels-last). The graph is exported from our PyTorch port
in memory when a model is loaded (about 2 s, no file written), so it always holds the
checkpoint's own weights; outputs agree with PyTorch within float rounding
(``tests/test_diffpose_movenet.py``).
"""

from __future__ import annotations

import io
import logging
import warnings

import numpy as np
import torch

from .movenet import MoveNet, MoveNetOutputs

log = logging.getLogger("posecli.models")

_OUTPUTS = ("fpn4", "fpn8", "fpn16", "heatmap", "center", "regress", "offset")


class _TrunkGraph(torch.nn.Module):
    """MoveNet as a function of plain tensors (what the exporter traces); the /32 tap is unused."""

    def __init__(self, trunk: MoveNet) -> None:
        super().__init__()
        self.trunk = trunk

    def forward(self, rgb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.trunk(rgb)
        return (*out.features[:3], out.heatmap, out.center, out.regress, out.offset)


class OnnxTrunk:
    """Callable like ``MoveNet``: RGB 0..255 [B, 3, H, W] → :class:`MoveNetOutputs` (CPU tensors).

    Args:
        trunk: the PyTorch trunk (its weights are exported).
        input_hw: crop size (H, W); the batch size stays dynamic.
        threads: onnxruntime intra-op threads.
    """

    def __init__(self, trunk: MoveNet, input_hw: tuple[int, int], threads: int) -> None:
        import onnxruntime as ort

        buffer = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer notes on the shape checks, exporter deprecation notes
            torch.onnx.export(_TrunkGraph(trunk).eval(), torch.zeros(1, 3, *input_hw), buffer, dynamo=False,
                              input_names=["rgb"], output_names=list(_OUTPUTS),
                              dynamic_axes={"rgb": {0: "batch"}}, opset_version=17)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
        self.input_hw = tuple(input_hw)

    def __call__(self, rgb: torch.Tensor) -> MoveNetOutputs:
        x = np.ascontiguousarray(rgb.detach().to("cpu", torch.float32).numpy())
        maps = dict(zip(_OUTPUTS, (torch.from_numpy(a) for a in self.session.run(list(_OUTPUTS), {"rgb": x}))))
        features = (maps["fpn4"], maps["fpn8"], maps["fpn16"], None)
        return MoveNetOutputs(features=features, center=maps["center"], regress=maps["regress"],
                              heatmap=maps["heatmap"], offset=maps["offset"])


def onnx_trunk_or_none(trunk: MoveNet, input_hw: tuple[int, int], threads: int) -> OnnxTrunk | None:
    """An :class:`OnnxTrunk`, or None (with a warning) where the export or runtime is unavailable,
    in which case the PyTorch trunk is used."""
    try:
        return OnnxTrunk(trunk, input_hw, threads)
    except (ImportError, RuntimeError, ValueError) as exc:  # no exporter / runtime here: PyTorch still works
        log.warning("onnxruntime trunk unavailable (%s); running MoveNet's layers in PyTorch", exc)
        return None
