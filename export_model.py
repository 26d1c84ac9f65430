"""Export a gpt-2-simple checkpoint for other runtimes: a Hugging Face
GPT2LMHeadModel folder (transformers, CTranslate2's converter) or a GGUF file
(llama.cpp).

    python export_model.py checkpoint/run1 --format hf --output build/export/run1-hf
    python export_model.py checkpoint/run1 --format gguf --outtype q8_0 --output build/export/run1.gguf

The output is written next to its destination and renamed into place, so a
failed export never leaves a half-written folder or file behind.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile

import numpy as np

from pokegen.atomic_files import move_into_place
from pokegen.gpt2_format import END_OF_TEXT

# The engine's modules import TensorFlow, whose start-up notes (some of which no
# setting silences) would come before a bad argument's one-line error: they are
# imported where a checkpoint is really read.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FORMATS = ("hf", "gguf")
OUTTYPES = ("f32", "f16", "bf16", "q8_0")
LAYER_NORM_EPSILON = 1e-5  # gpt-2-simple's norm() default

# gpt-2-simple variable inside model/h<i>/ -> (HF name inside transformer.h.<i>., GGUF name inside blk.<i>.)
LAYER_NAMES = {
    "ln_1/g": ("ln_1.weight", "attn_norm.weight"),
    "ln_1/b": ("ln_1.bias", "attn_norm.bias"),
    "attn/c_attn/w": ("attn.c_attn.weight", "attn_qkv.weight"),
    "attn/c_attn/b": ("attn.c_attn.bias", "attn_qkv.bias"),
    "attn/c_proj/w": ("attn.c_proj.weight", "attn_output.weight"),
    "attn/c_proj/b": ("attn.c_proj.bias", "attn_output.bias"),
    "ln_2/g": ("ln_2.weight", "ffn_norm.weight"),
    "ln_2/b": ("ln_2.bias", "ffn_norm.bias"),
    "mlp/c_fc/w": ("mlp.c_fc.weight", "ffn_up.weight"),
    "mlp/c_fc/b": ("mlp.c_fc.bias", "ffn_up.bias"),
    "mlp/c_proj/w": ("mlp.c_proj.weight", "ffn_down.weight"),
    "mlp/c_proj/b": ("mlp.c_proj.bias", "ffn_down.bias"),
}
TOP_NAMES = {
    "model/wte": ("transformer.wte.weight", "token_embd.weight"),
    "model/wpe": ("transformer.wpe.weight", "position_embd.weight"),
    "model/ln_f/g": ("transformer.ln_f.weight", "output_norm.weight"),
    "model/ln_f/b": ("transformer.ln_f.bias", "output_norm.bias"),
}


class ExportError(Exception):
    """Bad input or output; its message is the one line the command prints."""


# ------------------------------------------------------------------ reading

def open_run(run_dir: str):
    """The checkpoint, its weight reader and its tokenizer files (vocabulary by id, merges)."""
    run_dir = os.path.abspath(run_dir)
    if not os.path.isdir(run_dir):
        raise ExportError(f"checkpoint folder {run_dir} does not exist")
    from app.engine.checkpoint import WeightReader, first_line, open_checkpoint
    from app.engine.types import ModelLoadError
    try:
        checkpoint = open_checkpoint(os.path.dirname(run_dir), os.path.basename(run_dir))
        reader = WeightReader(checkpoint)
    except ModelLoadError as e:
        raise ExportError(str(e)) from None
    try:
        with open(os.path.join(run_dir, "encoder.json"), encoding="utf-8") as f:
            encoder = json.load(f)
        with open(os.path.join(run_dir, "vocab.bpe"), encoding="utf-8") as f:
            bpe_text = f.read()
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot read the tokenizer in {run_dir}: {first_line(e)}") from None
    n_vocab = checkpoint.hparams.n_vocab
    if not encoder or max(encoder.values()) >= n_vocab:
        raise ExportError(f"encoder.json in {run_dir} does not fit the model's {n_vocab}-token vocabulary")
    return checkpoint, reader, encoder, bpe_text


def merges_of(bpe_text: str) -> list[str]:
    """Merge rules "a b" by rank, as gpt-2-simple's encoder reads vocab.bpe (first line is a header)."""
    return [line for line in bpe_text.split("\n")[1:-1] if line.strip()]


def end_of_text_id(encoder: dict, n_vocab: int) -> int:
    return encoder.get(END_OF_TEXT, n_vocab - 1)


def tensors(checkpoint, reader):
    """(gpt-2-simple name, HF name, GGUF name, float32 array in HF's Conv1D [nx, nf] orientation)."""
    for name, (hf, gg) in TOP_NAMES.items():
        yield name, hf, gg, reader.read(name)
    for i in range(checkpoint.hparams.n_layer):
        for name, (hf, gg) in LAYER_NAMES.items():
            value = reader.read(f"model/h{i}/{name}")
            if value.ndim == 3:  # gpt-2-simple's conv1d keeps a leading 1: [1, nx, nf]
                value = value[0]
            yield f"model/h{i}/{name}", f"transformer.h.{i}.{hf}", f"blk.{i}.{gg}", value


# ------------------------------------------------------------------ Hugging Face

def hf_config(hparams, eot: int) -> dict:
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": hparams.n_vocab,
        "n_positions": hparams.n_ctx,
        "n_embd": hparams.n_embd,
        "n_layer": hparams.n_layer,
        "n_head": hparams.n_head,
        "n_inner": None,
        "activation_function": "gelu_new",  # gpt-2-simple's tanh approximation
        "layer_norm_epsilon": LAYER_NORM_EPSILON,
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,  # gpt-2-simple has no dropout
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "tie_word_embeddings": True,  # logits come from wte, as in gpt-2-simple
        "use_cache": True,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "torch_dtype": "float32",
    }


def write_hf(out_dir: str, checkpoint, reader, encoder: dict, bpe_text: str) -> None:
    from safetensors.numpy import save_file

    hparams = checkpoint.hparams
    eot = end_of_text_id(encoder, hparams.n_vocab)
    eot_token = next(t for t, i in encoder.items() if i == eot) if eot in encoder.values() else END_OF_TEXT
    weights = {hf: np.ascontiguousarray(value) for _, hf, _, value in tensors(checkpoint, reader)}
    save_file(weights, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    write_json(os.path.join(out_dir, "config.json"), hf_config(hparams, eot))
    write_json(os.path.join(out_dir, "generation_config.json"),
               {"bos_token_id": eot, "eos_token_id": eot})
    write_json(os.path.join(out_dir, "vocab.json"), encoder)
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(m + "\n" for m in merges_of(bpe_text)))
    write_json(os.path.join(out_dir, "tokenizer_config.json"), {
        "tokenizer_class": "GPT2Tokenizer",
        "model_max_length": hparams.n_ctx,
        "bos_token": eot_token, "eos_token": eot_token, "unk_token": eot_token,
        "add_prefix_space": False,
    })


def write_json(path: str, value) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, ensure_ascii=False, indent=2)
        f.write("\n")


# ------------------------------------------------------------------ GGUF

def gguf_tensor_type(gguf_name: str, value: np.ndarray, outtype: str):
    """As llama.cpp's converter decides: vectors, norms and position embeddings stay float32."""
    import gguf

    if value.ndim <= 1 or gguf_name.startswith("position_embd"):
        return gguf.GGMLQuantizationType.F32
    return {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
            "bf16": gguf.GGMLQuantizationType.BF16, "q8_0": gguf.GGMLQuantizationType.Q8_0}[outtype]


def write_gguf(path: str, checkpoint, reader, encoder: dict, bpe_text: str, outtype: str) -> None:
    import gguf

    hparams = checkpoint.hparams
    eot = end_of_text_id(encoder, hparams.n_vocab)
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[outtype]
    writer = gguf.GGUFWriter(path, "gpt2")
    writer.add_name(os.path.basename(checkpoint.run_dir))
    writer.add_block_count(hparams.n_layer)
    writer.add_context_length(hparams.n_ctx)
    writer.add_embedding_length(hparams.n_embd)
    writer.add_feed_forward_length(4 * hparams.n_embd)
    writer.add_head_count(hparams.n_head)
    writer.add_layer_norm_eps(LAYER_NORM_EPSILON)
    writer.add_file_type(file_type)

    by_id = {i: token for token, i in encoder.items()}
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(hparams.n_vocab)]
    types = [gguf.TokenType.UNUSED if i not in by_id else
             gguf.TokenType.CONTROL if by_id[i] == END_OF_TEXT else gguf.TokenType.NORMAL
             for i in range(hparams.n_vocab)]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges_of(bpe_text))
    writer.add_bos_token_id(eot)
    writer.add_eos_token_id(eot)
    writer.add_add_bos_token(False)

    for _, _, name, value in tensors(checkpoint, reader):
        if value.ndim == 2 and name.startswith("blk."):
            value = value.T  # llama.cpp wants [nf, nx] (its ne order is [nx, nf]), like nn.Linear
        qtype = gguf_tensor_type(name, value, outtype)
        try:
            data = gguf.quants.quantize(np.ascontiguousarray(value), qtype)
        except gguf.QuantError:  # rows not a multiple of the block size, as the converter does
            qtype = gguf.GGMLQuantizationType.F16
            data = gguf.quants.quantize(np.ascontiguousarray(value), qtype)
        writer.add_tensor(name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# ------------------------------------------------------------------ output

def export(run_dir: str, output: str, fmt: str, outtype: str = "f32", force: bool = False) -> str:
    """Writes the export to `output` (a folder for hf, a file for gguf); returns its path."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if outtype not in OUTTYPES:
        raise ExportError(f"unknown outtype {outtype!r}; choose one of: {', '.join(OUTTYPES)}")
    if fmt == "hf" and outtype != "f32":
        raise ExportError("--format hf writes float32 weights only (--outtype f32)")
    output = os.path.abspath(output)
    if os.path.lexists(output) and not force:
        raise ExportError(f"{output} exists; pass --force to replace it")
    checkpoint, reader, encoder, bpe_text = open_run(run_dir)

    parent = os.path.dirname(output)
    os.makedirs(parent, exist_ok=True)
    from app.engine.types import ModelLoadError

    build_dir = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(output)}.exporting-")
    try:
        if fmt == "hf":
            write_hf(build_dir, checkpoint, reader, encoder, bpe_text)
            for name in os.listdir(build_dir):
                share(os.path.join(build_dir, name), 0o666)
            share(build_dir, 0o777)
            move_into_place(build_dir, output)
        else:
            built = os.path.join(build_dir, os.path.basename(output))
            write_gguf(built, checkpoint, reader, encoder, bpe_text, outtype)
            share(built, 0o666)
            move_into_place(built, output)
    except ModelLoadError as e:  # a weight that cannot be read half-way through
        raise ExportError(str(e)) from None
    finally:
        shutil.rmtree(build_dir, ignore_errors=True)
    return output


def share(path: str, mode: int) -> None:
    """The usual permissions (mode less the umask): mkdtemp and safetensors make files private."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(1, f"{self.prog}: error: {message}\n")


def main(argv=None) -> None:
    parser = OneLineParser(description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a gpt-2-simple run folder, e.g. checkpoint/run1")
    parser.add_argument("--format", required=True, choices=FORMATS,
                        help="hf: a GPT2LMHeadModel folder; gguf: a llama.cpp file")
    parser.add_argument("--output", required=True, help="the folder (hf) or file (gguf) to write")
    parser.add_argument("--outtype", default="f32", choices=OUTTYPES,
                        help="weight type of the matrices (gguf only; default f32)")
    parser.add_argument("--force", action="store_true", help="replace an existing output")
    args = parser.parse_args(argv)
    try:
        path = export(args.run_dir, args.output, args.format, args.outtype, args.force)
    except ExportError as e:
        parser.exit(1, f"{parser.prog}: error: {e}\n")
    except OSError as e:
        reason = (e.strerror or str(e)).splitlines()[0]
        parser.exit(1, f"{parser.prog}: error: cannot write {args.output}: {reason}\n")
    print(path)


if __name__ == "__main__":
    main()
