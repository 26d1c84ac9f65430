"""export_model.py: the Hugging Face folder computes gpt-2-simple's logits,
the GGUF file holds the checkpoint's tensors, and bad input fails in one line
leaving nothing behind."""
import json
import os
import shutil
import subprocess
import sys

import gguf
import numpy as np
import pytest
from safetensors.numpy import load_file

import export_model
from app.engine.checkpoint import WeightReader, open_checkpoint
from engine_models import copy_tiny_run, perturb_weights, reference_logits
from pokegen.gpt2_format import END_OF_TEXT
from pokegen.service_stack import ROOT

TOKENS = [314, 265, 317, 375, 287, 220, 53, 72, 81, 72, 67, 72, 64, 77, 220, 34, 274, 88]
LOGITS_TOLERANCE = 1e-4  # absolute; the perturbed model's logits reach a few units


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    checkpoint_dir = str(tmp_path_factory.mktemp("checkpoint"))
    run_dir = copy_tiny_run(checkpoint_dir)
    perturb_weights(run_dir)  # layer norms and biases away from 1 and 0, so each one counts
    return run_dir


@pytest.fixture(scope="module")
def weights(run_dir):
    reader = WeightReader(open_checkpoint(os.path.dirname(run_dir), "run1"))
    return {name: reader.read(name) for name in reader.reader.get_variable_to_shape_map()
            if name.startswith("model/")}


def hf_logits(folder, tokens):
    """GPT2LMHeadModel's forward pass in numpy, from the folder's config and safetensors."""
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    w = {k.removeprefix("transformer."): v.astype(np.float64)
         for k, v in load_file(os.path.join(folder, "model.safetensors")).items()}
    n_head, eps = config["n_head"], config["layer_norm_epsilon"]

    def norm(x, p):
        return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps) * w[f"{p}.weight"] + w[f"{p}.bias"]

    def gelu_new(x):
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))

    t = len(tokens)
    x = w["wte.weight"][tokens] + w["wpe.weight"][:t]  # [t, e]
    mask = np.triu(np.full((t, t), -np.inf), 1)
    for i in range(config["n_layer"]):
        p = f"h.{i}"
        qkv = norm(x, f"{p}.ln_1") @ w[f"{p}.attn.c_attn.weight"] + w[f"{p}.attn.c_attn.bias"]  # [t, 3e]
        q, k, v = (m.reshape(t, n_head, -1).transpose(1, 0, 2) for m in np.split(qkv, 3, -1))  # [h, t, d]
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1]) + mask  # [h, t, t]
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        a = (scores / scores.sum(-1, keepdims=True) @ v).transpose(1, 0, 2).reshape(t, -1)  # [t, e]
        x = x + a @ w[f"{p}.attn.c_proj.weight"] + w[f"{p}.attn.c_proj.bias"]
        h = gelu_new(norm(x, f"{p}.ln_2") @ w[f"{p}.mlp.c_fc.weight"] + w[f"{p}.mlp.c_fc.bias"])  # [t, 4e]
        x = x + h @ w[f"{p}.mlp.c_proj.weight"] + w[f"{p}.mlp.c_proj.bias"]
    return norm(x, "ln_f") @ w["wte.weight"].T  # [t, vocab], tied to the embeddings


@pytest.fixture(scope="module")
def hf_folder(run_dir, tmp_path_factory):
    return export_model.export(run_dir, str(tmp_path_factory.mktemp("hf") / "model"), "hf")


def test_hf_folder_gives_gpt2_simple_logits(run_dir, hf_folder):
    expected = reference_logits(open_checkpoint(os.path.dirname(run_dir), "run1"), TOKENS)
    ours = hf_logits(hf_folder, TOKENS)
    assert expected.std() > 0.5  # real signal, not a flat model
    np.testing.assert_allclose(ours, expected, rtol=0, atol=LOGITS_TOLERANCE)


def test_hf_folder_carries_the_tokenizer_and_config(run_dir, hf_folder):
    with open(os.path.join(run_dir, "encoder.json"), encoding="utf-8") as f:
        encoder = json.load(f)
    with open(os.path.join(hf_folder, "vocab.json"), encoding="utf-8") as f:
        assert json.load(f) == encoder
    with open(os.path.join(run_dir, "vocab.bpe"), encoding="utf-8") as f:
        merges = export_model.merges_of(f.read())
    with open(os.path.join(hf_folder, "merges.txt"), encoding="utf-8") as f:
        assert export_model.merges_of(f.read()) == merges
    with open(os.path.join(hf_folder, "config.json")) as f:
        config = json.load(f)
    assert config["architectures"] == ["GPT2LMHeadModel"]
    assert config["vocab_size"] == len(encoder) and config["eos_token_id"] == encoder[END_OF_TEXT]
    for name in ("tokenizer_config.json", "generation_config.json"):
        assert os.path.isfile(os.path.join(hf_folder, name))


def gguf_expected(weights):
    """GGUF name -> the checkpoint's array in llama.cpp's orientation."""
    expected = {}
    for name, (_, gg) in export_model.TOP_NAMES.items():
        expected[gg] = weights[name]
    layers = {int(n.split("/")[1][1:]) for n in weights if n.startswith("model/h")}
    for i in layers:
        for name, (_, gg) in export_model.LAYER_NAMES.items():
            value = weights[f"model/h{i}/{name}"]
            expected[f"blk.{i}.{gg}"] = value[0].T if value.ndim == 3 else value
    return expected


@pytest.fixture(scope="module", params=["f32", "q8_0"])
def gguf_file(request, run_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / f"model-{request.param}.gguf"
    return request.param, gguf.GGUFReader(export_model.export(run_dir, str(path), "gguf", request.param))


def test_gguf_tensors_match_the_checkpoint(gguf_file, weights):
    outtype, reader = gguf_file
    expected = gguf_expected(weights)
    stored = {t.name: t for t in reader.tensors}
    assert set(stored) == set(expected)
    for name, want in expected.items():
        tensor = stored[name]
        got = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(want.shape)
        if tensor.tensor_type == gguf.GGMLQuantizationType.F32:
            assert want.ndim == 1 or outtype == "f32" or name.startswith("position_embd"), name
            np.testing.assert_array_equal(got, want, err_msg=name)
        else:
            assert tensor.tensor_type == gguf.GGMLQuantizationType.Q8_0, name
            # Q8_0: blocks of 32 share one float16 scale max|x|/127, so each value is
            # off by half a step plus the scale's own float16 rounding (127 * 2**-11 steps).
            blocks = want.reshape(-1, 32)
            step = np.abs(blocks).max(-1, keepdims=True) / 127
            assert np.all(np.abs(got.reshape(-1, 32) - blocks) <= (0.5 + 127 * 2 ** -11) * step), name


def test_gguf_metadata_describes_gpt2_and_its_tokenizer(gguf_file, run_dir):
    _, reader = gguf_file
    with open(os.path.join(run_dir, "encoder.json"), encoding="utf-8") as f:
        encoder = json.load(f)
    with open(os.path.join(run_dir, "vocab.bpe"), encoding="utf-8") as f:
        merges = export_model.merges_of(f.read())

    def field(key):
        return reader.fields[key].contents()

    assert field("general.architecture") == "gpt2"
    assert field("tokenizer.ggml.model") == "gpt2"
    tokens = field("tokenizer.ggml.tokens")
    assert tokens == sorted(encoder, key=encoder.get)
    assert field("tokenizer.ggml.merges") == merges
    eot = encoder[END_OF_TEXT]
    assert field("tokenizer.ggml.bos_token_id") == field("tokenizer.ggml.eos_token_id") == eot
    assert field("tokenizer.ggml.token_type")[eot] == gguf.TokenType.CONTROL


def run_cli(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "export_model.py"), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def assert_one_line_failure(done, words):
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], done.stderr


def test_missing_folder_unknown_format_and_existing_output_fail_in_one_line(run_dir, tmp_path):
    assert_one_line_failure(run_cli(str(tmp_path / "nothing"), "--format", "hf",
                                    "--output", str(tmp_path / "out")), "does not exist")
    assert_one_line_failure(run_cli(run_dir, "--format", "onnx", "--output", str(tmp_path / "out")),
                            "invalid choice")
    (tmp_path / "taken.gguf").write_text("keep me")
    assert_one_line_failure(run_cli(run_dir, "--format", "gguf", "--output", str(tmp_path / "taken.gguf")),
                            "--force")
    assert (tmp_path / "taken.gguf").read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == ["taken.gguf"]


def test_force_replaces_an_existing_output(run_dir, tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "stale.txt").write_text("old")
    done = run_cli(run_dir, "--format", "hf", "--output", str(tmp_path / "model"), "--force")
    assert done.returncode == 0, done.stderr
    assert "stale.txt" not in os.listdir(tmp_path / "model")
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_unreadable_weights_leave_nothing_behind(run_dir, tmp_path):
    broken = tmp_path / "checkpoint" / "run1"
    shutil.copytree(run_dir, broken)
    data = next(p for p in broken.iterdir() if ".data-" in p.name and p.name.startswith("model-2"))
    data.write_bytes(data.read_bytes()[:1000])  # truncated half-way through the first weights
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(export_model.ExportError):
        export_model.export(str(broken), str(out / "model.gguf"), "gguf", "q8_0")
    assert os.listdir(out) == []

