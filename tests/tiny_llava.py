"""A tiny random LLaVA-1.5-style model pair for tests: a Llama text model GGUF and a CLIP mmproj GGUF.

Written directly with the `gguf` package (no torch, no converter), seeded, so every run writes the same
bytes. llama.cpp (the copy bundled with llama-cpp-python 0.3.36) loads the pair as LLaVA 1.5: the text
model is arch `llama` with a sentencepiece ("llama") vocabulary; the projector file carries the keys and
tensor names that `tools/mtmd/clip.cpp` reads for `clip.projector_type = "mlp"`.

The weights are random, with one deliberate bias so that grammar-constrained JSON ends quickly: every
token embedding carries a constant component along hidden dimension 0 and the blocks write only a small
residual, so the last hidden state points that way whatever the prompt or image; the output matrix's
column 0 then ranks the tokens. JSON's closing characters rank first (`"` then `}` `]` `,` `0`), so under a
JSON-schema grammar strings close at once, numbers stay `0`, optional members are left out, arrays hold
at most one item, and the answer ends with `</s>` within about a hundred tokens, e.g.
`{"contains_sensitive" :true,"categories" : ["bank_document"],"confidence" :0,"description" :""}`.
Which enum value it picks is arbitrary; the answer does not depend on the image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TEXT_FILE = "tiny-llava-text.gguf"
MMPROJ_FILE = "tiny-llava-mmproj.gguf"

# text model
N_EMBD = 64
N_LAYER = 2
N_HEAD = 4
N_FF = 128
N_CTX_TRAIN = 4096
# vision tower and projector
V_EMBD = 32
V_LAYER = 2  # LLaVA takes the penultimate layer's output, so one block actually runs
V_HEAD = 4
V_FF = 64
IMAGE_SIZE = 56
PATCH_SIZE = 14
MM_HIDDEN = 64

SEED = 20261
# Ranking of tokens at the output (column 0 of output.weight); everything else gets ~0, bytes below that.
_PREFERENCE = {'"': 8.0, "}": 7.0, "]": 6.0, ",": 5.0, "0": 4.0, "t": 1.0, "f": 0.9, "n": 0.8}
_EOS_PREFERENCE = 3.0

# gguf.TokenType values, spelled out so that importing this module needs only numpy
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _BYTE = 1, 2, 3, 4, 6
_SPACE = "\u2581"  # sentencepiece's word-boundary marker


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and types: specials, the 256 byte-fallback pieces, printable ASCII."""
    tokens = ["<unk>", "<s>", "</s>", "<image>"]
    types = [_UNKNOWN, _CONTROL, _CONTROL, _USER_DEFINED]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [_BYTE] * 256
    chars = [_SPACE] + [chr(c) for c in range(0x21, 0x7F)]
    tokens += chars
    types += [_NORMAL] * len(chars)
    # sentencepiece scores only rank merges; with single characters there is nothing to merge
    scores = [0.0] * 260 + [-1.0] * len(chars)
    return tokens, scores, types


def _rng() -> np.random.Generator:
    return np.random.default_rng(SEED)


def _normal(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    return (rng.standard_normal(shape) * std).astype(np.float32)


def write_text_model(path: Path) -> Path:
    import gguf

    tokens, scores, types = vocabulary()
    n_vocab = len(tokens)
    rng = _rng()
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("dropwarden tiny llava text (random)")
    writer.add_file_type(0)  # all F32
    writer.add_context_length(N_CTX_TRAIN)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)

    embd = _normal(rng, (n_vocab, N_EMBD), 0.02)
    embd[:, 0] = 1.0  # the constant direction (see the module docstring)
    writer.add_tensor("token_embd.weight", embd)
    for i in range(N_LAYER):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v"):
            writer.add_tensor(f"blk.{i}.{name}.weight", _normal(rng, (N_EMBD, N_EMBD), 0.1))
        writer.add_tensor(f"blk.{i}.attn_output.weight", _normal(rng, (N_EMBD, N_EMBD), 0.002))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", _normal(rng, (N_FF, N_EMBD), 0.1))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", _normal(rng, (N_FF, N_EMBD), 0.1))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", _normal(rng, (N_EMBD, N_FF), 0.002))
    writer.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    output = _normal(rng, (n_vocab, N_EMBD), 0.02)
    output[:, 0] = 0.0
    for index, (token, kind) in enumerate(zip(tokens, types, strict=True)):
        if kind == _BYTE:
            output[index, 0] = -2.0
        elif token in _PREFERENCE:
            output[index, 0] = _PREFERENCE[token]
    output[2, 0] = _EOS_PREFERENCE
    output[[0, 1, 3], 0] = -4.0  # never <unk>, <s>, <image>
    writer.add_tensor("output.weight", output)
    _finish(writer)
    return path


def write_mmproj(path: Path) -> Path:
    import gguf

    rng = _rng()
    n_pos = (IMAGE_SIZE // PATCH_SIZE) ** 2 + 1  # patches plus the class embedding
    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_name("dropwarden tiny llava mmproj (random)")
    writer.add_file_type(0)
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.has_text_encoder", False)
    writer.add_bool("clip.has_llava_projector", True)
    writer.add_string("clip.projector_type", "mlp")
    writer.add_bool("clip.use_gelu", False)  # CLIP's quick GELU
    writer.add_uint32("clip.vision.image_size", IMAGE_SIZE)
    writer.add_uint32("clip.vision.patch_size", PATCH_SIZE)
    writer.add_uint32("clip.vision.embedding_length", V_EMBD)
    writer.add_uint32("clip.vision.feed_forward_length", V_FF)
    writer.add_uint32("clip.vision.projection_dim", N_EMBD)
    writer.add_uint32("clip.vision.block_count", V_LAYER)
    writer.add_uint32("clip.vision.attention.head_count", V_HEAD)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    writer.add_array("clip.vision.image_mean", [0.48145466, 0.4578275, 0.40821073])
    writer.add_array("clip.vision.image_std", [0.26862954, 0.26130258, 0.27577711])

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    def zeros(n: int) -> np.ndarray:
        return np.zeros(n, dtype=np.float32)

    # numpy shapes are ggml's ne reversed: (out, in) for matrices, (out, channels, kh, kw) for the conv
    writer.add_tensor("v.patch_embd.weight", _normal(rng, (V_EMBD, 3, PATCH_SIZE, PATCH_SIZE), 0.02))
    writer.add_tensor("v.class_embd", _normal(rng, (V_EMBD,), 0.02))
    writer.add_tensor("v.position_embd.weight", _normal(rng, (n_pos, V_EMBD), 0.02))
    writer.add_tensor("v.pre_ln.weight", ones(V_EMBD))
    writer.add_tensor("v.pre_ln.bias", zeros(V_EMBD))
    for i in range(V_LAYER):
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            writer.add_tensor(f"v.blk.{i}.{name}.weight", _normal(rng, (V_EMBD, V_EMBD), 0.1))
            writer.add_tensor(f"v.blk.{i}.{name}.bias", zeros(V_EMBD))
        for name in ("ln1", "ln2"):
            writer.add_tensor(f"v.blk.{i}.{name}.weight", ones(V_EMBD))
            writer.add_tensor(f"v.blk.{i}.{name}.bias", zeros(V_EMBD))
        writer.add_tensor(f"v.blk.{i}.ffn_up.weight", _normal(rng, (V_FF, V_EMBD), 0.1))
        writer.add_tensor(f"v.blk.{i}.ffn_up.bias", zeros(V_FF))
        writer.add_tensor(f"v.blk.{i}.ffn_down.weight", _normal(rng, (V_EMBD, V_FF), 0.1))
        writer.add_tensor(f"v.blk.{i}.ffn_down.bias", zeros(V_EMBD))
    writer.add_tensor("mm.0.weight", _normal(rng, (MM_HIDDEN, V_EMBD), 0.1))
    writer.add_tensor("mm.0.bias", zeros(MM_HIDDEN))
    writer.add_tensor("mm.2.weight", _normal(rng, (N_EMBD, MM_HIDDEN), 0.1))
    writer.add_tensor("mm.2.bias", zeros(N_EMBD))
    _finish(writer)
    return path


def _finish(writer) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_tiny_llava(directory: Path) -> tuple[Path, Path]:
    """Write the text model and the mmproj into `directory`; returns (model path, mmproj path)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return write_text_model(directory / TEXT_FILE), write_mmproj(directory / MMPROJ_FILE)


if __name__ == "__main__":
    import sys

    for written in write_tiny_llava(Path(sys.argv[1] if len(sys.argv) > 1 else ".")):
        print(written, written.stat().st_size)
