// The native ops: one C function per op, all taking the same argument record, so that Python can
// call them one at a time (eager) or record them into a plan and replay the whole decode forward in
// one call (plan.cpp). Argument layouts are listed in kernels.inc beside each op.
#pragma once
#include <cstdint>

namespace nx {

struct Args {
    int64_t i[40];
    double f[8];
};
using OpFn = void (*)(const Args&);

// Order matters: op ids are indices into this list (nextn/kernels/native.py reads the names).
#define NX_OPS(X) \
    X(matmul) X(dequant) X(embed) X(rmsnorm) X(add) X(silu_mul) X(sigmoid_mul) X(add_gated) X(argmax) \
    X(attention) X(deltanet) X(deltanet_commit) X(moe_route) X(moe_experts) X(copy_rows) X(probs) X(penalize) X(repack) \
    X(matmul_heads) X(mla_attention)

enum OpId {
#define NX_ENUM(name) OP_##name,
    NX_OPS(NX_ENUM)
#undef NX_ENUM
    OP_COUNT
};

// GGUF type ids (ggml_type) the kernels read
enum QType { T_F32 = 0, T_F16 = 1, T_Q4_0 = 2, T_Q4_1 = 3, T_Q5_0 = 6, T_Q5_1 = 7, T_Q8_0 = 8, T_Q2_K = 10,
             T_Q3_K = 11, T_Q4_K = 12, T_Q5_K = 13, T_Q6_K = 14, T_IQ4_NL = 20, T_IQ4_XS = 23, T_BF16 = 30 };

// a matmul's type id may carry this flag: quantize the activations to int8 where the type has such a kernel
constexpr int INT8 = 0x100;
// or this one: the weight is packed (csrc/packed.inc), its products run on int8 activations
constexpr int PACKED = 0x200;

}  // namespace nx

#define NX_DECLARE_TABLE(ns) namespace ns { void fill_table(nx::OpFn* table); bool supported(); }
NX_DECLARE_TABLE(avx512)
NX_DECLARE_TABLE(avx2)
NX_DECLARE_TABLE(generic)
