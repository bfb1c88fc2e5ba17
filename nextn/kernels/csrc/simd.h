// Vec: 16 float lanes, the one vector type every kernel is written in.
//
// Three implementations of the same arithmetic: AVX-512 (one zmm), AVX2 (two ymm) and plain C++
// (16 floats). Every kernel accumulates in 16 lanes and reduces them with the same fixed tree
// (`hsum`), and the build forbids contracting a*b+c into FMA behind our back (-ffp-contract=off),
// so all three give bit-identical results: the ISA a machine has never changes a token.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(NX_AVX512) || defined(NX_AVX2)
#include <immintrin.h>
#endif

namespace NX_NS {

#if defined(NX_AVX512)
struct Vec {
    __m512 v;
    static Vec zero() { return {_mm512_setzero_ps()}; }
    static Vec set1(float x) { return {_mm512_set1_ps(x)}; }
    static Vec two(float lo, float hi) { return {_mm512_insertf32x8(_mm512_set1_ps(lo), _mm256_set1_ps(hi), 1)}; }
    static Vec load(const float* p) { return {_mm512_loadu_ps(p)}; }
    void store(float* p) const { _mm512_storeu_ps(p, v); }
    void stream(float* p) const { _mm512_stream_ps(p, v); }   // non-temporal; p 64-byte aligned
    // 16 signed / unsigned bytes (or 16-bit values) widened to floats
    static Vec from_i8(const int8_t* p) { return {_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)p)))}; }
    static Vec from_u8x16(__m128i b) { return {_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(b))}; }
    static Vec from_i8x16(__m128i b) { return {_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b))}; }
    static Vec from_f16(const uint16_t* p) { return {_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)p))}; }
    static Vec from_bf16(const uint16_t* p) {
        __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p));
        return {_mm512_castsi512_ps(_mm512_slli_epi32(w, 16))};
    }
};
inline Vec operator+(Vec a, Vec b) { return {_mm512_add_ps(a.v, b.v)}; }
inline Vec operator-(Vec a, Vec b) { return {_mm512_sub_ps(a.v, b.v)}; }
inline Vec operator*(Vec a, Vec b) { return {_mm512_mul_ps(a.v, b.v)}; }
inline Vec fma(Vec a, Vec b, Vec c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
inline Vec vmax(Vec a, Vec b) { return {_mm512_max_ps(a.v, b.v)}; }
inline Vec iota16() { return {_mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)}; }
inline Vec operator/(Vec a, Vec b) { return {_mm512_div_ps(a.v, b.v)}; }
inline Vec vmin(Vec a, Vec b) { return {_mm512_min_ps(a.v, b.v)}; }
inline Vec round_even(Vec a) { return {_mm512_roundscale_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)}; }
inline Vec pow2(Vec n) {   // 2^n for integer-valued n in [-126, 127]
    return {_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n.v), _mm512_set1_epi32(127)), 23))};
}
inline void halves(Vec a, float* lo8, float* hi8) {
    _mm256_storeu_ps(lo8, _mm512_castps512_ps256(a.v));
    _mm256_storeu_ps(hi8, _mm512_extractf32x8_ps(a.v, 1));
}
// 16 int32 lanes: small codes on their way to a table lookup
struct IVec {
    __m512i v;
    static IVec from_u8x16(__m128i b) { return {_mm512_cvtepu8_epi32(b)}; }
    IVec shr4() const { return {_mm512_srli_epi32(v, 4)}; }
};
inline Vec lut16(Vec table, IVec i) { return {_mm512_permutexvar_ps(i.v, table.v)}; }   // table[i & 15]
#define NX_HAVE_SSE 1

#elif defined(NX_AVX2)
struct Vec {
    __m256 lo, hi;
    static Vec zero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
    static Vec set1(float x) { return {_mm256_set1_ps(x), _mm256_set1_ps(x)}; }
    static Vec two(float lo, float hi) { return {_mm256_set1_ps(lo), _mm256_set1_ps(hi)}; }
    static Vec load(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
    void store(float* p) const { _mm256_storeu_ps(p, lo); _mm256_storeu_ps(p + 8, hi); }
    void stream(float* p) const { _mm256_stream_ps(p, lo); _mm256_stream_ps(p + 8, hi); }
    static Vec from_i8x16(__m128i b) {
        return {_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)), _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(b, 8)))};
    }
    static Vec from_u8x16(__m128i b) {
        return {_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b)), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(b, 8)))};
    }
    static Vec from_i8(const int8_t* p) { return from_i8x16(_mm_loadu_si128((const __m128i*)p)); }
    static Vec from_f16(const uint16_t* p) {
        return {_mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p)), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(p + 8)))};
    }
    static Vec from_bf16(const uint16_t* p) {
        __m256i a = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p));
        __m256i b = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(p + 8)));
        return {_mm256_castsi256_ps(_mm256_slli_epi32(a, 16)), _mm256_castsi256_ps(_mm256_slli_epi32(b, 16))};
    }
};
inline Vec operator+(Vec a, Vec b) { return {_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)}; }
inline Vec operator-(Vec a, Vec b) { return {_mm256_sub_ps(a.lo, b.lo), _mm256_sub_ps(a.hi, b.hi)}; }
inline Vec operator*(Vec a, Vec b) { return {_mm256_mul_ps(a.lo, b.lo), _mm256_mul_ps(a.hi, b.hi)}; }
inline Vec fma(Vec a, Vec b, Vec c) { return {_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)}; }
inline Vec vmax(Vec a, Vec b) { return {_mm256_max_ps(a.lo, b.lo), _mm256_max_ps(a.hi, b.hi)}; }
inline Vec iota16() { return {_mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7), _mm256_setr_ps(8, 9, 10, 11, 12, 13, 14, 15)}; }
inline Vec operator/(Vec a, Vec b) { return {_mm256_div_ps(a.lo, b.lo), _mm256_div_ps(a.hi, b.hi)}; }
inline Vec vmin(Vec a, Vec b) { return {_mm256_min_ps(a.lo, b.lo), _mm256_min_ps(a.hi, b.hi)}; }
inline Vec round_even(Vec a) {
    const int m = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    return {_mm256_round_ps(a.lo, m), _mm256_round_ps(a.hi, m)};
}
inline __m256 pow2_8(__m256 n) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
}
inline Vec pow2(Vec n) { return {pow2_8(n.lo), pow2_8(n.hi)}; }
inline void halves(Vec a, float* lo8, float* hi8) { _mm256_storeu_ps(lo8, a.lo); _mm256_storeu_ps(hi8, a.hi); }
struct IVec {
    __m256i lo, hi;
    static IVec from_u8x16(__m128i b) { return {_mm256_cvtepu8_epi32(b), _mm256_cvtepu8_epi32(_mm_srli_si128(b, 8))}; }
    IVec shr4() const { return {_mm256_srli_epi32(lo, 4), _mm256_srli_epi32(hi, 4)}; }
};
inline __m256 lut8x2(Vec t, __m256i i) {   // table[i & 15]: bits 0-2 pick within a half, bit 3 the half
    __m256 a = _mm256_permutevar8x32_ps(t.lo, i), b = _mm256_permutevar8x32_ps(t.hi, i);
    return _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32(i, 28)));
}
inline Vec lut16(Vec table, IVec i) { return {lut8x2(table, i.lo), lut8x2(table, i.hi)}; }
#define NX_HAVE_SSE 1

#else
struct Vec {
    float x[16];
    static Vec zero() { Vec r; for (int i = 0; i < 16; i++) r.x[i] = 0.f; return r; }
    static Vec set1(float v) { Vec r; for (int i = 0; i < 16; i++) r.x[i] = v; return r; }
    static Vec two(float lo, float hi) { Vec r; for (int i = 0; i < 16; i++) r.x[i] = i < 8 ? lo : hi; return r; }
    static Vec load(const float* p) { Vec r; std::memcpy(r.x, p, sizeof r.x); return r; }
    void store(float* p) const { std::memcpy(p, x, sizeof x); }
    void stream(float* p) const { store(p); }
    static Vec from_i8(const int8_t* p) { Vec r; for (int i = 0; i < 16; i++) r.x[i] = (float)p[i]; return r; }
    static Vec from_f16(const uint16_t* p);
    static Vec from_bf16(const uint16_t* p) {
        Vec r;
        for (int i = 0; i < 16; i++) { uint32_t u = (uint32_t)p[i] << 16; std::memcpy(&r.x[i], &u, 4); }
        return r;
    }
};
inline Vec operator+(Vec a, Vec b) { for (int i = 0; i < 16; i++) a.x[i] = a.x[i] + b.x[i]; return a; }
inline Vec operator-(Vec a, Vec b) { for (int i = 0; i < 16; i++) a.x[i] = a.x[i] - b.x[i]; return a; }
inline Vec operator*(Vec a, Vec b) { for (int i = 0; i < 16; i++) a.x[i] = a.x[i] * b.x[i]; return a; }
inline Vec fma(Vec a, Vec b, Vec c) { for (int i = 0; i < 16; i++) c.x[i] = std::fma(a.x[i], b.x[i], c.x[i]); return c; }
inline Vec vmax(Vec a, Vec b) { for (int i = 0; i < 16; i++) a.x[i] = a.x[i] > b.x[i] ? a.x[i] : b.x[i]; return a; }
inline Vec iota16() { Vec r; for (int i = 0; i < 16; i++) r.x[i] = (float)i; return r; }
inline Vec operator/(Vec a, Vec b) { for (int i = 0; i < 16; i++) a.x[i] = a.x[i] / b.x[i]; return a; }
inline Vec vmin(Vec a, Vec b) { for (int i = 0; i < 16; i++) a.x[i] = a.x[i] < b.x[i] ? a.x[i] : b.x[i]; return a; }
inline Vec round_even(Vec a) { for (int i = 0; i < 16; i++) a.x[i] = std::nearbyint(a.x[i]); return a; }
inline Vec pow2(Vec n) {
    Vec r;
    for (int i = 0; i < 16; i++) { uint32_t b = (uint32_t)((int32_t)n.x[i] + 127) << 23; std::memcpy(&r.x[i], &b, 4); }
    return r;
}
inline void halves(Vec a, float* lo8, float* hi8) { std::memcpy(lo8, a.x, 32); std::memcpy(hi8, a.x + 8, 32); }
struct IVec {
    int32_t x[16];
    IVec shr4() const { IVec r; for (int i = 0; i < 16; i++) r.x[i] = x[i] >> 4; return r; }
};
inline Vec lut16(Vec table, IVec i) { Vec r; for (int k = 0; k < 16; k++) r.x[k] = table.x[i.x[k] & 15]; return r; }
#endif

// e^x, written once in Vec operations (the same bits on every instruction set): x = n ln2 + r with
// |r| <= ln2 / 2, e^r by a degree-6 polynomial (Cephes' expf), times 2^n. Relative error ~1e-7.
inline Vec vexp(Vec x) {
    x = vmin(vmax(x, Vec::set1(-87.3f)), Vec::set1(88.3f));
    Vec n = round_even(x * Vec::set1(1.44269504088896341f));
    Vec r = x - n * Vec::set1(0.693359375f);
    r = r - n * Vec::set1(-2.12194440e-4f);
    Vec p = Vec::set1(1.9875691500e-4f);
    p = fma(p, r, Vec::set1(1.3981999507e-3f));
    p = fma(p, r, Vec::set1(8.3334519073e-3f));
    p = fma(p, r, Vec::set1(4.1665795894e-2f));
    p = fma(p, r, Vec::set1(1.6666665459e-1f));
    p = fma(p, r, Vec::set1(5.0000001201e-1f));
    p = fma(p, r * r, r + Vec::set1(1.0f));
    return p * pow2(n);
}
inline Vec vsilu(Vec x) { return x / (Vec::set1(1.0f) + vexp(Vec::set1(0.0f) - x)); }
inline Vec vsigmoid(Vec x) { return Vec::set1(1.0f) / (Vec::set1(1.0f) + vexp(Vec::set1(0.0f) - x)); }

// orders the non-temporal stores (Vec::stream) before what follows
#if defined(NX_HAVE_SSE)
inline void stream_fence() { _mm_sfence(); }
#else
inline void stream_fence() {}
#endif

// The one reduction order of 16 lanes: halves (i + 8), then quarters (i + 4), pairs (i + 2), last pair.
#if defined(NX_HAVE_SSE)
inline float hsum8(__m256 s8) {   // the tree below from its first level on, in registers
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));   // s8[i] + s8[i + 4]
    __m128 t = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));                                  // s4[0] + s4[2], s4[1] + s4[3]
    return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));                      // s0 + s1
}
#endif
#if defined(NX_AVX512)
inline float hsum(Vec a) { return hsum8(_mm256_add_ps(_mm512_castps512_ps256(a.v), _mm512_extractf32x8_ps(a.v, 1))); }
#elif defined(NX_AVX2)
inline float hsum(Vec a) { return hsum8(_mm256_add_ps(a.lo, a.hi)); }
#else
inline float hsum(Vec a) {
    float lo[8], hi[8];
    halves(a, lo, hi);
    float s8[8], s4[4];
    for (int i = 0; i < 8; i++) s8[i] = lo[i] + hi[i];
    for (int i = 0; i < 4; i++) s4[i] = s8[i] + s8[i + 4];
    float s0 = s4[0] + s4[2], s1 = s4[1] + s4[3];
    return s0 + s1;
}
#endif

inline float hmax(Vec a) {
    float lo[8], hi[8];
    halves(a, lo, hi);
    float m = lo[0];
    for (int i = 0; i < 8; i++) { m = lo[i] > m ? lo[i] : m; m = hi[i] > m ? hi[i] : m; }
    return m;
}

}  // namespace NX_NS
