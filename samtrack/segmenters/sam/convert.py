"""Convert the MobileSAM ONNX pair (the ``mobilesam-onnx`` weights) into a PyTorch state_dict.

The result has exactly the keys and shapes of the official MobileSAM ``vit_t`` model (those of
``mobile_sam.pt``), so it loads with ``load_state_dict(sd, strict=True)`` into the official
``Sam`` as well as into ours.

What the two graphs hold, and how each tensor is recovered:

- Initializers that kept their PyTorch name are the raw parameters (the exporter writes a
  parameter under its own name only when it is used as is), taken unchanged. The encoder was
  exported from the TinyViT itself, so its names get the ``image_encoder.`` prefix; the
  decoder was exported from ``SamOnnxModel``, whose ``model.`` prefix is dropped.
- Anonymous initializers (``onnx::MatMul_*``, ``onnx::Conv_*``, ...) are tensors the exporter
  computed by constant folding. Each is mapped by the node that consumes it: the node's name is
  its module's scope (``/layers.1/blocks.0/attn/qkv/MatMul`` -> ``layers.1.blocks.0.attn.qkv``)
  and its op and input slot say which tensor of that module it is:

  - ``MatMul`` input 1: a ``Linear`` weight stored transposed (``x @ W.T``);
  - ``Conv``/``ConvTranspose`` inputs 1 and 2: weight and bias. In TinyViT's ``Conv2d_BN``
    (scope ``<m>.c``) the BatchNorm was folded into the convolution, so the folded weight is
    ``<m>.c.weight`` and the folded bias goes to ``<m>.bn.bias``, with identity statistics in
    the BatchNorm (below);
  - ``Mul``/``Add`` in a ``LayerNorm2d`` scope: its weight and bias, stored as ``[C, 1, 1]``;
  - two scope-less decoder tensors, recognised by what they combine with:
    ``(1 - has_mask_input) * T`` is ``no_mask_embed`` (reshaped to ``[1, 256, 1, 1]``) and the
    ``Expand``-ed ``[1, 1 + 4, 256]`` table concatenated with the sparse prompt embeddings is
    ``cat(iou_token, mask_tokens)``.
- TinyViT's ``attention_biases`` are not initializers: in eval mode the model indexes them into
  a ``[heads, N, N]`` table (``attention_biases[:, attention_bias_idxs]``), which the exporter
  folded into a ``Constant`` added to the attention logits. The per-offset biases are read back
  from that table, and the table is checked to be exactly the one they index.

Filled, because the export cannot hold them (:func:`convert_mobilesam_onnx` lists them):

- every ``Conv2d_BN``'s BatchNorm ``weight`` (1), ``running_mean`` (0), ``running_var``
  (``1 - eps``, so that ``sqrt(var + eps) = 1``) and ``num_batches_tracked`` (0): with the
  folded bias in ``bn.bias`` this BatchNorm is the identity plus that bias, so the module
  computes exactly the folded convolution;
- TinyViT's classification head (``image_encoder.norm_head``, ``image_encoder.head``), which SAM
  never runs: LayerNorm weight 1 and bias 0 (its initial values), head weight and bias 0 (an
  all-zero classifier, obviously not trained).

Everything else must come from the graphs: a tensor that cannot be mapped, a key mapped twice,
a shape that disagrees with the architecture or a key left missing raises
:class:`ConversionError` naming it.
"""
from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Iterator

import numpy as np

from samtrack.errors import WeightsError
from samtrack.weights import require_optional

if TYPE_CHECKING:  # the imports themselves are lazy: samtrack runs without torch and onnx
    import onnx
    import torch

# torch.nn.BatchNorm2d's default eps, which TinyViT's Conv2d_BN uses.
BN_EPS = 1e-5
# SamOnnxModel calls these submodules directly, not through prompt_encoder/mask_decoder's
# forward, so the decoder graph's scopes start below the module that owns them.
_DECODER_SCOPE_OWNERS = {
    "transformer": "mask_decoder",
    "output_upscaling": "mask_decoder",
    "output_hypernetworks_mlps": "mask_decoder",
    "iou_prediction_head": "mask_decoder",
    "mask_downscaling": "prompt_encoder",
    "pe_layer": "prompt_encoder",
}
_DECODER_INPUTS = {"image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size"}

Shape = tuple[int, ...]


class ConversionError(WeightsError):
    """The ONNX pair does not convert to the MobileSAM state_dict (the message names the tensor)."""


def convert_mobilesam_onnx(
    encoder_path: str | Path, decoder_path: str | Path
) -> tuple[dict[str, "torch.Tensor"], list[str]]:
    """Build the official MobileSAM ``vit_t`` state_dict from ``encoder.onnx`` and ``sam.onnx``.

    Returns:
        ``(state_dict, filled)``: the state_dict, in the official key order, and one
        ``"key: why"`` line for each key that the ONNX files cannot hold and was filled.

    Raises:
        ConversionError: a graph is not the expected export, a tensor cannot be mapped or has
            the wrong shape, or a key stays missing.
        WeightsError: torch or onnx is not installed (one line saying how to install them).
    """
    torch = require_optional("torch", "converting ONNX weights to PyTorch")
    onnx = require_optional("onnx", "converting ONNX weights to PyTorch")

    from .build import build_mobilesam

    # Our model is the architecture: its state_dict has the official keys and shapes (a test
    # checks them against the official model's).
    model = build_mobilesam()
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    found: dict[str, np.ndarray] = {}
    origin: dict[str, str] = {}

    encoder = _load(onnx, Path(encoder_path))
    _check_io(encoder, Path(encoder_path), {"input"})
    for key, value, source in _map_graph(encoder, "image_encoder."):
        _put(found, origin, expected, key, value, f"encoder.onnx {source}")
    for key, value, source in _attention_biases(encoder, expected, model):
        _put(found, origin, expected, key, value, f"encoder.onnx {source}")

    decoder = _load(onnx, Path(decoder_path))
    _check_io(decoder, Path(decoder_path), _DECODER_INPUTS)
    for key, value, source in _map_graph(decoder, None):
        _put(found, origin, expected, key, value, f"sam.onnx {source}")

    filled = _fill(found, expected)
    missing = [key for key in expected if key not in found]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ConversionError(f"the ONNX pair lacks {len(missing)} MobileSAM tensor(s): {shown}")

    state: dict[str, torch.Tensor] = {}
    for key, shape in expected.items():
        value = found[key]
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(int(value), dtype=torch.long)
        else:
            state[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32).reshape(shape).copy())
    return state, filled


# -- reading the graphs ------------------------------------------------------------------------


def _load(onnx: ModuleType, path: Path) -> "onnx.GraphProto":
    try:
        return onnx.load(str(path)).graph
    except FileNotFoundError:
        raise ConversionError("no such ONNX file", path) from None
    except Exception as exc:  # protobuf raises its own DecodeError for a file that is not ONNX
        raise ConversionError(f"not an ONNX model ({' '.join(str(exc).split())[:200]})", path) from None


def _check_io(graph: "onnx.GraphProto", path: Path, inputs: set[str]) -> None:
    initializers = {t.name for t in graph.initializer}
    names = {i.name for i in graph.input if i.name not in initializers}
    if names != inputs:
        raise ConversionError(f"unexpected graph inputs {sorted(names)} (expected {sorted(inputs)})", path)


def _module_path(node_name: str) -> str:
    """The dotted module path of an exported node: ``/patch_embed/seq/seq.0/c/Conv`` ->
    ``patch_embed.seq.0.c``.

    A scope inside a ``Sequential`` repeats its parent (``seq`` then ``seq.0``), so a component
    that extends the previous one replaces it. The last component is the op's own name.
    """
    parts: list[str] = []
    for comp in node_name.strip("/").split("/")[:-1]:
        if parts and comp.startswith(parts[-1] + "."):
            parts[-1] = comp
        else:
            parts.append(comp)
    return ".".join(parts)


def _producers(graph: "onnx.GraphProto") -> dict[str, "onnx.NodeProto"]:
    return {out: node for node in graph.node for out in node.output}


def _consumers(graph: "onnx.GraphProto") -> dict[str, list[tuple["onnx.NodeProto", int]]]:
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for slot, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, slot))
    return consumers


def _depends_on(name: str, graph_input: str, producers: dict[str, "onnx.NodeProto"]) -> bool:
    """Whether tensor ``name`` is computed from ``graph_input``."""
    stack, seen = [name], set()
    while stack:
        current = stack.pop()
        if current == graph_input:
            return True
        node = producers.get(current)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        stack.extend(node.input)
    return False


def _map_graph(graph: "onnx.GraphProto", prefix: str | None) -> Iterator[tuple[str, np.ndarray, str]]:
    """``(key, value, source)`` for every initializer of ``graph``.

    ``prefix`` is prepended to the encoder's module paths; the decoder (``prefix=None``) takes
    the owner of each top scope from ``_DECODER_SCOPE_OWNERS`` instead.
    """
    from onnx import numpy_helper

    consumers = _consumers(graph)
    producers = _producers(graph)
    for init in graph.initializer:
        value = numpy_helper.to_array(init)
        uses = consumers.get(init.name, [])
        if not uses:
            raise ConversionError(f"initializer {init.name} {list(value.shape)} is used by no node")
        if not init.name.startswith("onnx::"):
            # A named initializer is the parameter itself, used as is.
            key = init.name.removeprefix("model.")
            yield (prefix or "") + key, value, init.name
            continue
        roles = {_anonymous_role(init.name, value, node, slot, prefix, producers, consumers) for node, slot in uses}
        if len(roles) != 1:
            raise ConversionError(f"initializer {init.name} is used as several tensors: {sorted(k for k, _ in roles)}")
        ((key, transform),) = roles
        source = f"{init.name} ({uses[0][0].name})"
        if transform == "transpose":
            yield key, value.T, source
        elif transform == "tokens":
            # cat([iou_token.weight, mask_tokens.weight]).unsqueeze(0): split it back.
            yield "mask_decoder.iou_token.weight", value[0, :1], source
            yield "mask_decoder.mask_tokens.weight", value[0, 1:], source
        else:
            yield key, value, source


def _anonymous_role(
    name: str,
    value: np.ndarray,
    node: "onnx.NodeProto",
    slot: int,
    prefix: str | None,
    producers: dict[str, "onnx.NodeProto"],
    consumers: dict[str, list[tuple["onnx.NodeProto", int]]],
) -> tuple[str, str]:
    """``(key, transform)`` of a folded initializer, from the node that consumes it."""
    module = _module_path(node.name)
    op = node.op_type
    where = f"initializer {name} {list(value.shape)} (input {slot} of {op} node {node.name!r})"
    if not module:
        return _toplevel_role(name, value, node, slot, producers, consumers, where)
    if prefix is not None:
        owner = prefix.rstrip(".")
    else:
        owner = _DECODER_SCOPE_OWNERS.get(module.split(".")[0])
        if owner is None:
            raise ConversionError(f"{where}: no module owns the decoder scope {module!r}")
    key = f"{owner}.{module}"
    if op == "MatMul" and slot == 1 and value.ndim == 2:
        return f"{key}.weight", "transpose"
    if op in ("Conv", "ConvTranspose") and slot in (1, 2):
        if module.endswith(".c") or module == "c":
            # Conv2d_BN with its BatchNorm folded in: the bias belongs to the BatchNorm.
            base = key[: -len(".c")]
            return (f"{base}.c.weight", "") if slot == 1 else (f"{base}.bn.bias", "")
        return f"{key}.{'weight' if slot == 1 else 'bias'}", ""
    if op == "Gemm" and slot in (1, 2):
        attrs = {a.name: a.i for a in node.attribute}
        if slot == 1:
            return f"{key}.weight", "" if attrs.get("transB", 0) else "transpose"
        return f"{key}.bias", ""
    if op in ("Mul", "Add") and value.ndim >= 2 and value.shape[-2:] == (1, 1):
        # LayerNorm2d: weight[:, None, None] * x_hat + bias[:, None, None].
        return f"{key}.{'weight' if op == 'Mul' else 'bias'}", ""
    raise ConversionError(f"{where}: cannot tell which tensor of {key} this is")


def _toplevel_role(
    name: str,
    value: np.ndarray,
    node: "onnx.NodeProto",
    slot: int,
    producers: dict[str, "onnx.NodeProto"],
    consumers: dict[str, list[tuple["onnx.NodeProto", int]]],
    where: str,
) -> tuple[str, str]:
    """The two folded decoder tensors that SamOnnxModel computes outside any submodule."""
    others = [x for i, x in enumerate(node.input) if i != slot]
    if node.op_type == "Mul" and any(_depends_on(x, "has_mask_input", producers) for x in others):
        # (1 - has_mask_input) * no_mask_embed.weight.reshape(1, -1, 1, 1)
        return "prompt_encoder.no_mask_embed.weight", ""
    if node.op_type == "Expand" and slot == 0 and value.ndim == 3:
        for concat, _ in consumers.get(node.output[0], []):
            joined = [x for x in concat.input if x != node.output[0]]
            if concat.op_type == "Concat" and any(_depends_on(x, "point_labels", producers) for x in joined):
                # The output tokens, expanded over the batch and put before the prompt tokens.
                return "mask_decoder.iou_token.weight", "tokens"
    raise ConversionError(f"{where}: not a tensor SamOnnxModel computes outside its submodules")


def _attention_biases(
    graph: "onnx.GraphProto", expected: dict[str, Shape], model: "torch.nn.Module"
) -> Iterator[tuple[str, np.ndarray, str]]:
    """Read each block's ``attention_biases`` back from the folded ``[heads, N, N]`` table."""
    from onnx import numpy_helper

    consumers = _consumers(graph)
    tables: dict[str, list[tuple[np.ndarray, str]]] = {}
    for node in graph.node:
        if node.op_type != "Constant" or not node.attribute or node.attribute[0].name != "value":
            continue
        value = numpy_helper.to_array(node.attribute[0].t)
        if value.ndim != 3 or value.dtype != np.float32 or value.shape[1] != value.shape[2]:
            continue
        if any(n.op_type == "Add" for n, _ in consumers.get(node.output[0], [])):
            tables.setdefault(f"image_encoder.{_module_path(node.name)}.attention_biases", []).append((value, node.name))
    for key, shape in expected.items():
        if not key.endswith(".attention_biases"):
            continue
        found = tables.pop(key, [])
        if len(found) != 1:
            raise ConversionError(f"{key}: expected one folded attention-bias table in the encoder, found {len(found)}")
        table, node_name = found[0]
        heads, n = shape
        idxs = model.get_submodule(key.removesuffix(".attention_biases")).attention_bias_idxs.numpy()
        if table.shape != (heads, n, n):
            raise ConversionError(f"{key}: the table in {node_name} is {list(table.shape)}, expected {[heads, n, n]}")
        biases = np.zeros((heads, n), dtype=np.float32)
        biases[:, idxs.ravel()] = table.reshape(heads, -1)
        if not np.array_equal(biases[:, idxs], table):
            raise ConversionError(f"{key}: the table in {node_name} is not indexed by TinyViT's offsets")
        yield key, biases, f"{node_name} (folded attention_biases[:, attention_bias_idxs])"
    if tables:
        raise ConversionError(f"attention-bias tables in unexpected scopes: {', '.join(sorted(tables))}")


# -- assembling --------------------------------------------------------------------------------


def _put(
    found: dict[str, np.ndarray],
    origin: dict[str, str],
    expected: dict[str, Shape],
    key: str,
    value: np.ndarray,
    source: str,
) -> None:
    if key not in expected:
        raise ConversionError(f"{source} maps to {key}, which MobileSAM does not have")
    if key in found:
        raise ConversionError(f"{key} comes both from {origin[key]} and from {source}")
    shape = expected[key]
    # Folded tensors keep broadcast dimensions ([C, 1, 1], [1, C, 1, 1]); nothing else may differ.
    if tuple(value.shape) != shape and _squeezed(value.shape) != _squeezed(shape):
        raise ConversionError(f"{key}: {source} is {list(value.shape)}, expected {list(shape)}")
    found[key] = value.reshape(shape)
    origin[key] = source


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def _fill(found: dict[str, np.ndarray], expected: dict[str, Shape]) -> list[str]:
    """Fill what the export cannot hold (see the module docstring); returns ``"key: why"`` lines."""
    filled: list[str] = []

    def put(key: str, value: np.ndarray | int, why: str) -> None:
        if key in found:
            raise ConversionError(f"{key} is in the ONNX pair although the export should have folded it away")
        found[key] = np.asarray(value, dtype=np.float32 if not isinstance(value, int) else np.int64)
        filled.append(f"{key}: {why}")

    folded = "BatchNorm folded into the preceding conv by the export"
    for key, shape in expected.items():
        if not key.endswith(".bn.running_mean"):
            continue
        bn = key[: -len(".running_mean")]
        if f"{bn}.bias" not in found or f"{bn[: -len('.bn')]}.c.weight" not in found:
            continue  # reported as missing
        put(f"{bn}.weight", np.ones(shape, np.float32), f"{folded}; identity scale 1")
        put(f"{bn}.running_mean", np.zeros(shape, np.float32), f"{folded}; mean 0")
        put(f"{bn}.running_var", np.full(shape, 1.0 - BN_EPS, np.float32), f"{folded}; var 1 - eps so sqrt(var + eps) = 1")
        put(f"{bn}.num_batches_tracked", 0, f"{folded}; training counter 0")
    unused = "TinyViT classification head, never run by SAM and absent from the export"
    for key, shape in expected.items():
        if key.startswith(("image_encoder.norm_head.", "image_encoder.head.")):
            neutral = np.ones(shape, np.float32) if key == "image_encoder.norm_head.weight" else np.zeros(shape, np.float32)
            put(key, neutral, f"{unused}; {'1 (LayerNorm identity)' if neutral.any() else '0'}")
    return filled
