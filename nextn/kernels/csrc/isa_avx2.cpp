// The kernels for the avx2 instruction set: kernels.inc compiled in namespace avx2.
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
#pragma GCC target("avx2,fma,f16c,bmi2")
#define NX_AVX2 1
#define NX_NS avx2
#include "kernels.inc"
namespace avx2 {
bool supported() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"); }
}
#pragma GCC pop_options
#else
namespace avx2 {
void fill_table(nx::OpFn*) {}
bool supported() { return false; }
}
#endif
