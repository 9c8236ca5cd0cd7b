"""MoveNet's layers through OpenVINO, for CPU inference.

OpenVINO's CPU plugin runs MoveNet's MobileNetV2 + FPN 1.7× faster than onnxruntime and about 3×
faster than PyTorch eager on the 2-core machine (13.2 vs 22.4 ms per 256×256 crop on two threads,
one process, same batch; PyTorch: 41 ms NCHW), mostly in the depthwise convolutions. The graph is
converted from our PyTorch port (4-6 s on two cores) and kept in the user cache
(``$XDG_CACHE_HOME/posecli/openvino``, 25 MB per checkpoint and crop size), named by a hash of the
trunk's weights, the crop size and the OpenVINO version, so that it always holds the checkpoint's own
weights; a later load reads it in 0.1 s. Outputs agree with PyTorch within float rounding
(``tests/test_diffpose_movenet.py``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from .movenet import MoveNet, MoveNetOutputs

log = logging.getLogger("posecli.models")

_OUTPUTS = ("fpn4", "fpn8", "fpn16", "heatmap", "center", "regress", "offset")
# Crops per OpenVINO call. Its CPU plugin holds the activations of a whole call (about 45 MiB per
# 256×256 crop); larger calls are not faster (13.2 ms per crop for 1, 13.7 for 16).
CHUNK = 2


class _TrunkGraph(torch.nn.Module):
    """MoveNet as a function of plain tensors (what the converter traces); the /32 tap is unused."""

    def __init__(self, trunk: MoveNet) -> None:
        super().__init__()
        self.trunk = trunk

    def forward(self, rgb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.trunk(rgb)
        return (*out.features[:3], out.heatmap, out.center, out.regress, out.offset)


def graph_key(trunk: MoveNet, input_hw: tuple[int, int]) -> str:
    """Hex digest naming a converted graph: the trunk's tensors (names, shapes, values), the crop
    size and the OpenVINO version."""
    import openvino

    digest = hashlib.sha256(f"{openvino.__version__} {tuple(input_hw)}".encode())
    for name, tensor in trunk.state_dict().items():
        value = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name} {tuple(value.shape)} {value.dtype}".encode())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()


def _convert(trunk: MoveNet, input_hw: tuple[int, int]):  # noqa: ANN202 - openvino.Model
    import openvino

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer notes on the shape checks
        return openvino.convert_model(_TrunkGraph(trunk).eval(), example_input=torch.zeros(1, 3, *input_hw),
                                      input=[(-1, 3, *input_hw)])


def _save_atomically(graph, xml: Path) -> None:  # noqa: ANN001 - openvino.Model
    """Write ``xml`` and its ``.bin`` so that the ``.xml`` appears last, when both are whole."""
    import openvino

    xml.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=xml.parent, prefix=".partial-") as partial:
        written = Path(partial) / xml.name
        openvino.save_model(graph, written, compress_to_fp16=False)
        os.replace(written.with_suffix(".bin"), xml.with_suffix(".bin"))
        os.replace(written, xml)


def cached_graph(trunk: MoveNet, input_hw: tuple[int, int], folder: Path):  # noqa: ANN201 - openvino.Model
    """The trunk's OpenVINO graph, read from ``folder`` when converted before, else converted and
    written there. An unreadable cached file is converted again; an unwritable folder only costs
    the next load its conversion."""
    import openvino

    xml = folder / f"movenet-{graph_key(trunk, input_hw)[:24]}.xml"
    if xml.exists():
        try:
            return openvino.Core().read_model(xml)
        except RuntimeError as exc:
            log.warning("%s: unreadable (%s); converting MoveNet's layers again", xml, exc)
    graph = _convert(trunk, input_hw)
    try:
        _save_atomically(graph, xml)
    except (OSError, RuntimeError) as exc:
        log.info("OpenVINO graph not cached in %s (%s)", folder, exc)
    return graph


class OpenVinoTrunk:
    """Callable like ``MoveNet``: RGB 0..255 [B, 3, H, W] → :class:`MoveNetOutputs` (CPU tensors).

    Args:
        trunk: the PyTorch trunk (its weights are converted).
        input_hw: crop size (H, W); the batch size stays dynamic.
        threads: OpenVINO inference threads.
        cache: folder of converted graphs (:func:`cached_graph`); None converts without caching.
    """

    def __init__(self, trunk: MoveNet, input_hw: tuple[int, int], threads: int, cache: Path | None = None) -> None:
        import openvino

        graph = _convert(trunk, input_hw) if cache is None else cached_graph(trunk, input_hw, cache)
        # The crops arrive channels-last (NHWC in memory); OpenVINO's own transpose takes them as they are.
        steps = openvino.preprocess.PrePostProcessor(graph)
        steps.input().tensor().set_layout(openvino.Layout("NHWC"))
        steps.input().model().set_layout(openvino.Layout("NCHW"))
        graph = steps.build()
        self.compiled = openvino.Core().compile_model(graph, "CPU", {
            "INFERENCE_NUM_THREADS": max(1, threads), "PERFORMANCE_HINT": "LATENCY",
            # float32 throughout: MoveNet's peaks move under bfloat16 (see diffpose_movenet.py).
            "INFERENCE_PRECISION_HINT": "f32"})
        self.request = self.compiled.create_infer_request()
        self.input_hw = tuple(input_hw)

    def __call__(self, rgb: torch.Tensor) -> MoveNetOutputs:
        x = np.ascontiguousarray(rgb.detach().to("cpu", torch.float32).permute(0, 2, 3, 1).numpy())  # NHWC
        parts = []
        for start in range(0, len(x), CHUNK):
            result = self.request.infer({0: x[start:start + CHUNK]})
            parts.append([np.array(result[self.compiled.output(i)]) for i in range(len(_OUTPUTS))])
        maps = {name: torch.from_numpy(np.concatenate([p[i] for p in parts])) for i, name in enumerate(_OUTPUTS)}
        features = (maps["fpn4"], maps["fpn8"], maps["fpn16"], None)
        return MoveNetOutputs(features=features, center=maps["center"], regress=maps["regress"],
                              heatmap=maps["heatmap"], offset=maps["offset"])


def openvino_trunk_or_none(trunk: MoveNet, input_hw: tuple[int, int], threads: int) -> OpenVinoTrunk | None:
    """An :class:`OpenVinoTrunk` with its graph in the user cache, or None (with a warning) where the
    conversion or runtime is unavailable, in which case the PyTorch trunk is used."""
    from posecli.weights import cache_dir

    try:
        return OpenVinoTrunk(trunk, input_hw, threads, cache=cache_dir() / "openvino")
    except (ImportError, RuntimeError, ValueError) as exc:  # no runtime here: PyTorch still works
        log.warning("OpenVINO trunk unavailable (%s); running MoveNet's layers in PyTorch", exc)
        return None
