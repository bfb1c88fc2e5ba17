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
from nextn.kernels.weights import INT8_TYPES, SUPPORTED, QWeight, from_gguf, row_range, take_rows
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


INT8_LAYOUTS = [q.name for q in INT8_TYPES] + [f"{q.name}@packed" for q in INT8_TYPES]


def int8_weight(layout: str, rows: int, cols: int, seed: int = 0) -> tuple[QWeight, np.ndarray]:
    """A weight on the int8 kernels, in the file's layout ('Q4_K') or packed sixteen rows at a time
    ('Q4_K@packed', as Model.load holds such weights)."""
    name, _, packed = layout.partition("@")
    w, raw = weight(Q[name], rows, cols, seed)
    w.int8 = True
    return (w.pack() if packed else w), raw


@pytest.mark.parametrize("layout", INT8_LAYOUTS)
def test_int8_products_are_exact_on_int8_activations(layout):
    """`--kernels int8`: the product of the weight (bit for bit gguf-py's) with the documented int8
    quantization of x, up to float rounding; and within int8 error of the exact product. The same for a
    packed weight."""
    name = layout.partition("@")[0]
    w, raw = int8_weight(layout, 48, 768, seed=5)
    exact = torch.from_numpy(dequantize(raw, Q[name]).reshape(48, 768)).double()
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


@pytest.mark.parametrize("name", TYPES + [f"{q.name}@int8" for q in INT8_TYPES] + INT8_LAYOUTS[len(INT8_TYPES):])
def test_a_rows_result_does_not_depend_on_its_batch(name):
    if name.endswith("@int8"):
        w, _ = int8_weight(name.partition("@")[0], 48, 512, seed=9)
    elif "@" in name:
        w, _ = int8_weight(name, 48, 512, seed=9)
    else:
        w, _ = weight(Q[name], 33, 512, seed=9)
    x = torch.randn(9, 512, generator=torch.Generator().manual_seed(1))
    alone = torch.cat([w.linear(x[i:i + 1]) for i in range(9)])
    for M in (2, 3, 4, 5, 9):
        assert torch.equal(torch.cat([w.linear(x[i:i + M]) for i in range(0, 9, M)]), alone)


@pytest.mark.parametrize("layout", ["Q4_K", "Q4_K@packed", "Q6_K@packed"])
def test_thread_count_does_not_change_results(layout):
    w, _ = int8_weight(layout, 304, 1024, seed=2) if "@" in layout else weight(Q.Q4_K, 300, 1024, seed=2)
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
        p = QWeight(torch.from_numpy(random_rows(q, 32, 512, 11)), q, (32, 512), int8=True).pack()
        out[q.name + "@packed"] = [p.linear(x[:m]).view(torch.int32).sum().item() for m in (1, 5)]
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


@pytest.mark.parametrize("layout", INT8_LAYOUTS)
def test_a_prompt_sized_product_on_int8_activations_is_row_by_row_decode(layout):
    """Prefill runs the int8 kernel too (not dequantized tiles + GEMM): every row of a 300-row product is
    bit for bit what that row gives alone, as in decoding."""
    w, _ = int8_weight(layout, 48, 512, seed=3)
    x = torch.randn(300, 512, generator=torch.Generator().manual_seed(2))
    alone = torch.cat([w.linear(x[i:i + 1]) for i in range(300)])
    assert torch.equal(w.linear(x), alone)
    w = w.unpacked()
    w.int8 = False                                   # --kernels exact: many rows still go through the GEMM
    assert (w.linear(x) - alone).abs().max() > 0


@pytest.mark.parametrize("name", [q.name for q in INT8_TYPES])
def test_a_packed_weight_is_the_files_weight(name):
    """Packing is a same-size rearrangement: unpacking gives the file's bytes back, and every way of reading
    the weight (rows, dequantize, views of row groups, taken rows, the experts of a stack) reads the same
    numbers as the file's layout."""
    qtype = Q[name]
    E, N, K = 2, 48, 512
    raw = torch.from_numpy(random_rows(qtype, E * N, K, seed=6)).reshape(E, N, -1)
    stack = QWeight(raw, qtype, (E, N, K), int8=True)
    packed = stack.pack()
    assert packed.packed and not stack.packed and packed.nbytes <= raw.numel() * 1.03
    assert torch.equal(packed.unpacked().data, raw)
    assert torch.equal(packed.dense(), stack.dense())
    x = torch.randn(3, K, generator=torch.Generator().manual_seed(0))
    for e in range(E):
        p, w = packed.expert(e), stack.expert(e)
        assert torch.equal(p.rows(torch.tensor([0, 17, 47]), torch.float32), w.rows(torch.tensor([0, 17, 47]), torch.float32))
        assert torch.equal(p.dequantize(slice(5, 9)), w.dequantize(slice(5, 9)))
        assert torch.equal(p.linear(x), w.pack().linear(x))
        for a, b in ((16, 48), (3, 40)):             # whole groups: a view; otherwise a repacked copy
            part = row_range(p, a, b)
            assert part.shape == (b - a, K) and torch.equal(part.unpacked().data, w.data[a:b])
            assert (part.data.data_ptr() == p.data.data_ptr() + a * p.row_bytes) == (a % 16 == 0)
            assert torch.equal(part.linear(x), row_range(w, a, b).linear(x) if not part.packed else
                               QWeight(w.data[a:b].contiguous(), qtype, (b - a, K), int8=True).pack().linear(x))
        ids = torch.tensor(list(range(47, -1, -1)))
        taken = take_rows(p, ids)
        assert taken.packed and torch.equal(taken.unpacked().data, w.data[ids])


def test_a_loaded_quantized_model_holds_one_copy_of_its_weights(demo_q8, monkeypatch):
    """Model.load packs the int8-kernel matrices and drops its resident pages of their bytes in the file, so
    the process holds the weights once (not file pages + packed copy); embeddings stay in the file's layout.
    (Q8_0 is packed on every CPU but AVX2 ones: here it is packed whatever this CPU is.)"""
    from nextn.kernels import weights
    from nextn.models.loader import load

    monkeypatch.setattr(weights, "PACK_TYPES", INT8_TYPES)

    _, model, _, gf = load(demo_q8, use_mtp=True, progress=False)
    mats = [t for w in model.layers for t in w.values() if isinstance(t, QWeight)]
    assert all(t.packed for t in mats if t.N % 16 == 0 and t.K % 256 == 0) and model.head.packed
    assert not model.tok_embd.packed
    size = demo_q8.stat().st_size
    resident = _resident_bytes(demo_q8)
    assert resident < 0.15 * size, (resident, size)      # the packed weights alone would leave ~0.8 of it
    in_file = sum(t.n_bytes for n, t in gf.tensors.items() if n != "token_embd.weight")
    assert model.nbytes() - model.tok_embd.nbytes <= in_file


def _resident_bytes(path) -> int:
    """This process's resident bytes of every mapping of `path` (/proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5:       # a mapping's first line
                inside = line.rstrip().endswith(str(path))
            elif inside and head and head[0] == "Rss:":
                total += int(head[1]) * 1024
    return total


def test_argmax_is_the_first_index_of_the_largest_value():
    from nextn.kernels import ops
    V = 3 * 512 + 37                                    # whole blocks and a tail
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, V, generator=g)
    plants = [[5, 900], [1200, 1300], [V - 3, V - 1], [0, 700], [1536, V - 1], [600, 601], [511, 512], [1100]]
    for r, where in enumerate(plants):
        x[r, where] = 9.0                              # ties: the first wins
    x[3, 700] = float("nan")                           # NaN never wins
    x[7, 10] = float("nan")
    ids = torch.zeros(8, dtype=torch.int32)
    ops.argmax(x, ids, 8)
    assert ids.tolist() == [w[0] for w in plants]
    x[6] = -torch.arange(V, dtype=torch.float32)       # the largest value at index 0
    ops.argmax(x, ids, 8)
    assert ids[6] == 0
