"""The native kernels: every GGUF type dequantizes bit for bit as gguf-py does, products are exact up to
float rounding, and no result depends on how many rows share a product, on the thread count or on
the instruction set."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from gguf import GGUFWriter, GGMLQuantizationType as Q
from gguf.quants import dequantize

from nextn.gguf.reader import open_gguf
from nextn.kernels import native
from nextn.kernels.weights import INT8_TYPES, SUPPORTED, QWeight, from_gguf
from nextn_dev.quant_blocks import random_rows

TYPES = [q.name for q in SUPPORTED]


def weight(qtype: Q, rows: int, cols: int, seed: int = 0) -> tuple[QWeight, np.ndarray]:
    raw = random_rows(qtype, rows, cols, seed)
    return QWeight(torch.from_numpy(raw.copy()), qtype, (rows, cols)), raw


@pytest.mark.parametrize("name", TYPES)
def test_dequantization_is_gguf_pys_bit_for_bit(tmp_path, name):
    qtype = Q[name]
    rows, cols = 7, 512
    raw = random_rows(qtype, rows, cols, seed=3)
    path = tmp_path / "t.gguf"
    w = GGUFWriter(str(path), "qwen35")
    w.add_tensor("blk.0.ffn_up.weight", raw, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    loaded = from_gguf(open_gguf(path).tensor("blk.0.ffn_up.weight"), path)
    assert isinstance(loaded, QWeight) and loaded.shape == (rows, cols)
    ours = loaded.dequantize()
    ref = torch.from_numpy(dequantize(raw, qtype).reshape(rows, cols).astype(np.float32))
    assert torch.equal(ours.view(torch.int32), ref.view(torch.int32))          # the same bits, NaN-safe
    assert torch.equal(loaded.dequantize(slice(2, 5)), ours[2:5])


@pytest.mark.parametrize("name", TYPES)
def test_products_are_exact_up_to_float_rounding(name):
    w, raw = weight(Q[name], 45, 768, seed=5)
    exact = torch.from_numpy(dequantize(raw, Q[name]).reshape(45, 768)).double()
    for M in (1, 2, 3, 4, 5, 8, 9, 40):                  # 40 rows: dequantized tiles + torch GEMM
        x = torch.randn(M, 768, generator=torch.Generator().manual_seed(M))
        ref = x.double() @ exact.T
        err = (w.linear(x).double() - ref).abs().max() / ref.abs().max()
        assert err < 2e-6, (M, float(err))


def int8_reference(x: torch.Tensor) -> torch.Tensor:
    """x as the int8 kernels see it: per 256 values, d = max|x| / 127 and codes round(x / d) (ties to even)."""
    xb = x.reshape(x.shape[0], -1, 256)
    d = xb.abs().amax(-1, keepdim=True) / 127
    inv = torch.where(d > 0, 1 / d, torch.zeros_like(d))
    return (torch.round(xb * inv).clamp(-127, 127).double() * d.double()).reshape(x.shape)


@pytest.mark.parametrize("name", [q.name for q in INT8_TYPES])
def test_int8_products_are_exact_on_int8_activations(name):
    """`--kernels int8`: the product of the weight (bit for bit gguf-py's) with the documented int8
    quantization of x, up to float rounding; and within int8 error of the exact product."""
    w, raw = weight(Q[name], 45, 768, seed=5)
    w.int8 = True
    exact = torch.from_numpy(dequantize(raw, Q[name]).reshape(45, 768)).double()
    for M in (1, 2, 3, 4, 5, 8, 9, 16):
        x = torch.randn(M, 768, generator=torch.Generator().manual_seed(M))
        x[0, :256] = 0.0                                 # an all-zero block: scale 0, codes 0
        y = w.linear(x).double()
        ref = int8_reference(x) @ exact.T
        assert ((y - ref).abs().max() / ref.abs().max()).item() < 2e-6, M
        full = x.double() @ exact.T
        assert 1e-5 < ((y - full).abs().max() / full.abs().max()).item() < 3e-2, M   # really int8, and close


@pytest.mark.parametrize("name", ["Q5_K", "Q4_0", "F16"])
def test_int8_flag_on_types_without_an_int8_kernel_keeps_them_exact(name):
    w, _ = weight(Q[name], 20, 512, seed=4)
    x = torch.randn(3, 512, generator=torch.Generator().manual_seed(0))
    exact = w.linear(x)
    w.int8 = True
    assert torch.equal(w.linear(x), exact)
    q8, _ = weight(Q.Q8_0, 20, 96, seed=4)               # rows not a multiple of 256: exact kernel too
    x = torch.randn(3, 96, generator=torch.Generator().manual_seed(0))
    exact = q8.linear(x)
    q8.int8 = True
    assert torch.equal(q8.linear(x), exact)


@pytest.mark.parametrize("name", TYPES + [f"{q.name}@int8" for q in INT8_TYPES])
def test_a_rows_result_does_not_depend_on_its_batch(name):
    name, _, int8 = name.partition("@")
    w, _ = weight(Q[name], 33, 512, seed=9)
    w.int8 = bool(int8)
    x = torch.randn(8, 512, generator=torch.Generator().manual_seed(1))
    alone = torch.cat([w.linear(x[i:i + 1]) for i in range(8)])
    for M in (2, 3, 4, 8):
        assert torch.equal(torch.cat([w.linear(x[i:i + M]) for i in range(0, 8, M)]), alone)


def test_thread_count_does_not_change_results():
    w, _ = weight(Q.Q4_K, 300, 1024, seed=2)
    x = torch.randn(4, 1024, generator=torch.Generator().manual_seed(2))
    before = native.threads()
    try:
        native.set_threads(1)
        one = w.linear(x)
        native.set_threads(2)
        two = w.linear(x)
    finally:
        native.set_threads(before)
    assert torch.equal(one, two)



def test_a_decode_step_does_not_depend_on_thread_count(demo_model):
    """The attention op groups the query heads of a KV head into one task when there are enough tasks for the
    threads, one task per head otherwise: the scores and outputs are the same bits either way."""
    from nextn.engine.engine import Engine
    from nextn.engine.params import SamplingParams
    before, runs = native.threads(), []
    try:
        for threads in (1, 4):          # 2 KV heads: grouped at 1 thread, per head at 4
            e = Engine(model=demo_model, spec="none", progress=False, threads=threads)
            c = e.generate("def parse_args(argv):", SamplingParams(max_tokens=24, temperature=0, logprobs=5))
            runs.append(c.logprobs)
    finally:
        native.set_threads(before)
    assert runs[0] == runs[1]

PROBE = """
import json, sys, torch
from gguf import GGMLQuantizationType as Q
from nextn.kernels import native
from nextn.kernels.weights import INT8_TYPES, SUPPORTED, QWeight
from nextn_dev.quant_blocks import random_rows
out = {"isa": native.isa()}
for q in SUPPORTED:
    w = QWeight(torch.from_numpy(random_rows(q, 19, 512, 11)), q, (19, 512))
    x = torch.randn(5, 512, generator=torch.Generator().manual_seed(0))
    out[q.name] = [w.linear(x).view(torch.int32).sum().item(), w.dequantize().view(torch.int32).sum().item()]
    if q in INT8_TYPES:
        w.int8 = True
        out[q.name + "@int8"] = [w.linear(x[:m]).view(torch.int32).sum().item() for m in (1, 5)]
print(json.dumps(out))
"""


def test_every_instruction_set_gives_the_same_bits():
    results = {}
    for isa in ("avx512", "avx2", "generic"):
        proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                              env={**os.environ, "NEXTN_ISA": isa}, timeout=120)
        if proc.returncode != 0:
            assert "not supported by this CPU" in proc.stderr, proc.stderr
            continue
        results[isa] = json.loads(proc.stdout)
    assert "generic" in results and len(results) >= 2
    first = next(iter(results.values()))
    for isa, res in results.items():
        assert res["isa"] == isa
        assert {k: v for k, v in res.items() if k != "isa"} == {k: v for k, v in first.items() if k != "isa"}, isa


def test_unsupported_type_is_refused_by_name(tmp_path):
    path = tmp_path / "t.gguf"
    w = GGUFWriter(str(path), "qwen35")
    w.add_tensor("blk.0.ffn_up.weight", np.zeros((4, 256 // 256 * 66), dtype=np.uint8), raw_dtype=Q.IQ2_XXS)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    from nextn.errors import ModelFileError

    with pytest.raises(ModelFileError, match=r"tensor 'blk\.0\.ffn_up\.weight' has type IQ2_XXS, which nextn cannot run"):
        from_gguf(open_gguf(path).tensor("blk.0.ffn_up.weight"), path)


def test_a_stack_of_matrices_dequantizes_whole_in_its_shape():
    """Expert stacks and MLA's per-head matrices: dense() gives every matrix, each as dequantize() does."""
    E, N, K = 3, 8, 256
    raw = torch.from_numpy(random_rows(Q.Q4_K, E * N, K, seed=2)).reshape(E, N, -1)
    stack = QWeight(raw, Q.Q4_K, (E, N, K))
    dense = stack.dense()
    assert dense.shape == (E, N, K)
    for e in range(E):
        assert torch.equal(dense[e], stack.expert(e).dequantize())


@pytest.mark.parametrize("name", [q.name for q in INT8_TYPES])
def test_a_prompt_sized_product_on_int8_activations_is_row_by_row_decode(name):
    """Prefill runs the int8 kernel too (not dequantized tiles + GEMM): every row of a 300-row product is
    bit for bit what that row gives alone, as in decoding."""
    w, _ = weight(Q[name], 40, 512, seed=3)
    w.int8 = True
    x = torch.randn(300, 512, generator=torch.Generator().manual_seed(2))
    alone = torch.cat([w.linear(x[i:i + 1]) for i in range(300)])
    assert torch.equal(w.linear(x), alone)
    w.int8 = False                                   # --kernels exact: many rows still go through the GEMM
    assert (w.linear(x) - alone).abs().max() > 0
