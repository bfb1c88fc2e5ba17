// The kernels for the avx512 instruction set: kernels.inc compiled in namespace avx512.
// Library headers come first, outside the target pragma, so that no library code is built for it.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

#include "ops.h"
#include "pool.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c,bmi2")
#define NX_AVX512 1
#define NX_NS avx512
#include "kernels.inc"
namespace avx512 {
bool supported() { return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"); }
}
#pragma GCC pop_options
#else
namespace avx512 {
void fill_table(nx::OpFn*) {}
bool supported() { return false; }
}
#endif
