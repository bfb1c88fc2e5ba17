// Integer dot products of 64 bytes: the int8-activation matmul (`--kernels int8`).
//
// B64 holds 64 bytes, I32 sixteen int32 lanes, I16 thirty-two int16 lanes. Lane i of an I32 always
// holds bytes 4i..4i+3 of the 64, on every instruction set, and integer sums are exact, so the three
// implementations (AVX-512 VNNI, AVX2, plain C++) give the same integers and, after the same float
// operations, the same bits. No product here can overflow an int16 pair sum: weights are at most 6
// bits when unsigned (Q4_K, Q6_K codes) and activations lie in [-127, 127].
#pragma once
#include "simd.h"

namespace NX_NS {

// F4: four float lanes; f4_dot8: lane l += (a[2l] b[2l] + a[2l+1] b[2l+1]) * s, the int16 products exact
#ifdef NX_HAVE_SSE
struct F4 { __m128 v; };
struct U8x8 { __m128i v; };   // eight bytes as int16 lanes
inline U8x8 u8x8(uint64_t bytes) { return {_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)bytes))}; }
inline F4 f4_zero() { return {_mm_setzero_ps()}; }
inline F4 f4_dot8(F4 acc, U8x8 a, const int16_t* b, float s) {
    __m128i p = _mm_madd_epi16(a.v, _mm_loadu_si128((const __m128i*)b));
    return {_mm_fmadd_ps(_mm_cvtepi32_ps(p), _mm_set1_ps(s), acc.v)};
}
inline float f4_sum(F4 a) { float x[4]; _mm_storeu_ps(x, a.v); return (x[0] + x[1]) + (x[2] + x[3]); }
#else
struct F4 { float x[4]; };
struct U8x8 { int16_t x[8]; };
inline U8x8 u8x8(uint64_t bytes) { U8x8 r; for (int k = 0; k < 8; k++) r.x[k] = (int16_t)((bytes >> (8 * k)) & 0xFF); return r; }
inline F4 f4_zero() { return {{0.f, 0.f, 0.f, 0.f}}; }
inline F4 f4_dot8(F4 acc, U8x8 a, const int16_t* b, float s) {
    for (int l = 0; l < 4; l++) acc.x[l] = std::fma((float)(a.x[2 * l] * b[2 * l] + a.x[2 * l + 1] * b[2 * l + 1]), s, acc.x[l]);
    return acc;
}
inline float f4_sum(F4 a) { return (a.x[0] + a.x[1]) + (a.x[2] + a.x[3]); }
#endif

#if defined(NX_AVX512)
struct B64 { __m512i v; };
struct I32 { __m512i v; };
struct I16 { __m512i v; };
inline I32 izero() { return {_mm512_setzero_si512()}; }
inline B64 ld64(const void* p) { return {_mm512_loadu_si512(p)}; }
inline B64 cat64(const void* a, const void* b) {   // 32 bytes from a, 32 from b
    return {_mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i*)a)),
                               _mm256_loadu_si256((const __m256i*)b), 1)};
}
// c0: the low nibbles of p[0..31], then their high nibbles; c1: the same for p[32..63] (one 64-byte load)
inline void nibbles2(const uint8_t* p, B64& c0, B64& c1) {
    __m512i q = _mm512_loadu_si512(p), m = _mm512_set1_epi8(0x0F);
    __m512i lo = _mm512_and_si512(q, m), hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m);
    c0.v = _mm512_shuffle_i64x2(lo, hi, 0x44);
    c1.v = _mm512_shuffle_i64x2(lo, hi, 0xEE);
}
// The 128 six-bit codes of a Q6_K half block (ql 64 bytes, qh 32): c0 = low nibbles of ql | qh bits 0-1 (first 32)
// and bits 2-3 (next 32) as bits 4-5; c1 = high nibbles | qh bits 4-5 and 6-7
inline void six_bits2(const uint8_t* ql, const uint8_t* qh, B64& c0, B64& c1) {
    __m512i l = _mm512_loadu_si512(ql), m = _mm512_set1_epi8(0x0F), t = _mm512_set1_epi8(0x30);
    __m512i h = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i*)qh));
    const __m512i up = _mm512_set_epi64(2, 2, 2, 2, 4, 4, 4, 4), down = _mm512_set_epi64(2, 2, 2, 2, 0, 0, 0, 0);
    c0.v = _mm512_ternarylogic_epi32(_mm512_and_si512(l, m), _mm512_sllv_epi64(h, up), t, 0xF8);   // a | (b & c)
    c1.v = _mm512_ternarylogic_epi32(_mm512_and_si512(_mm512_srli_epi16(l, 4), m), _mm512_srlv_epi64(h, down), t, 0xF8);
}
// Sixteen int16 scales in a register. pick(s, c, 2): int16 lanes 0-15 get scale 2c, 16-31 scale 2c + 1 (Q4_K: one
// per 32 weights); pick(s, c, 4): 8 lanes each of scales 4c..4c+3 (Q6_K: one per 16 weights)
struct SC16 { __m256i v; };
inline SC16 sc16_u8x8(uint64_t b) { return {_mm256_castsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)b)))}; }
inline SC16 sc16_i8(const int8_t* p) { return {_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)p))}; }
inline I16 pick(SC16 s, int c, int per) {
    alignas(64) static const int16_t idx2[4][32] = {
#define NX_R(a, b) {a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,a,b,b,b,b,b,b,b,b,b,b,b,b,b,b,b,b}
        NX_R(0, 1), NX_R(2, 3), NX_R(4, 5), NX_R(6, 7)};
#undef NX_R
    alignas(64) static const int16_t idx4[4][32] = {
#define NX_R(a, b, c, d) {a,a,a,a,a,a,a,a,b,b,b,b,b,b,b,b,c,c,c,c,c,c,c,c,d,d,d,d,d,d,d,d}
        NX_R(0, 1, 2, 3), NX_R(4, 5, 6, 7), NX_R(8, 9, 10, 11), NX_R(12, 13, 14, 15)};
#undef NX_R
    const int16_t* idx = per == 2 ? idx2[c] : idx4[c];
    return {_mm512_permutexvar_epi16(_mm512_load_si512(idx), _mm512_castsi256_si512(s.v))};
}
// acc[i] += s[2i] (u[4i] v[4i] + u[4i+1] v[4i+1]) + s[2i+1] (u[4i+2] v[4i+2] + u[4i+3] v[4i+3]), u unsigned, v signed
inline I32 dot_scaled(I32 acc, B64 u, B64 v, I16 s) { return {_mm512_dpwssd_epi32(acc.v, _mm512_maddubs_epi16(u.v, v.v), s.v)}; }
// Products of signed weights w: signed_start(w) + dot_signed(., w, x, xu) adds sum of w[4i+k] x[4i+k] to
// lane i. VNNI multiplies the unsigned xu = x + 128 by w, so the start takes 128 sum(w) off first.
inline I32 signed_start(B64 w) { return {_mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8((char)0x80), w.v))}; }
inline I32 dot_signed(I32 acc, B64 w, B64, B64 xu) { return {_mm512_dpbusd_epi32(acc.v, xu.v, w.v)}; }
inline B64 b64_set(int v) { return {_mm512_set1_epi8((char)v)}; }
inline B64 b64_sub(B64 a, int v) { return {_mm512_sub_epi8(a.v, _mm512_set1_epi8((char)v))}; }
inline I32 ineg(I32 a) { return {_mm512_sub_epi32(_mm512_setzero_si512(), a.v)}; }
inline Vec to_vec(I32 a) { return {_mm512_cvtepi32_ps(a.v)}; }

#elif defined(NX_AVX2)
struct B64 { __m256i lo, hi; };
struct I32 { __m256i lo, hi; };
struct I16 { __m256i lo, hi; };
inline I32 izero() { return {_mm256_setzero_si256(), _mm256_setzero_si256()}; }
inline B64 ld64(const void* p) { return {_mm256_loadu_si256((const __m256i*)p), _mm256_loadu_si256((const __m256i*)p + 1)}; }
inline B64 cat64(const void* a, const void* b) { return {_mm256_loadu_si256((const __m256i*)a), _mm256_loadu_si256((const __m256i*)b)}; }
inline B64 nibbles(const uint8_t* p) {
    __m256i q = _mm256_loadu_si256((const __m256i*)p), m = _mm256_set1_epi8(0x0F);
    return {_mm256_and_si256(q, m), _mm256_and_si256(_mm256_srli_epi16(q, 4), m)};
}
inline B64 six_bits(const uint8_t* ql, const uint8_t* qh, int hi, int sh) {
    __m256i m = _mm256_set1_epi8(0x0F), three = _mm256_set1_epi8(3);
    __m256i l0 = _mm256_loadu_si256((const __m256i*)ql), l1 = _mm256_loadu_si256((const __m256i*)ql + 1);
    if (hi) { l0 = _mm256_srli_epi16(l0, 4); l1 = _mm256_srli_epi16(l1, 4); }
    __m256i h = _mm256_loadu_si256((const __m256i*)qh);
    __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, sh), three), 4);
    __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, sh + 2), three), 4);
    return {_mm256_or_si256(_mm256_and_si256(l0, m), h0), _mm256_or_si256(_mm256_and_si256(l1, m), h1)};
}
inline I16 sc2(int a, int b) { return {_mm256_set1_epi16((short)a), _mm256_set1_epi16((short)b)}; }
inline I16 sc4(int a, int b, int c, int d) {
    return {_mm256_set_m128i(_mm_set1_epi16((short)b), _mm_set1_epi16((short)a)),
            _mm256_set_m128i(_mm_set1_epi16((short)d), _mm_set1_epi16((short)c))};
}
inline I32 dot_scaled(I32 acc, B64 w, B64 x, I16 s) {
    return {_mm256_add_epi32(acc.lo, _mm256_madd_epi16(_mm256_maddubs_epi16(w.lo, x.lo), s.lo)),
            _mm256_add_epi32(acc.hi, _mm256_madd_epi16(_mm256_maddubs_epi16(w.hi, x.hi), s.hi))};
}
inline __m256i dot_signed8(__m256i acc, __m256i w, __m256i x) {   // |w| times x with w's sign
    __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
}
inline I32 signed_start(B64) { return izero(); }
inline I32 dot_signed(I32 acc, B64 w, B64 x, B64) { return {dot_signed8(acc.lo, w.lo, x.lo), dot_signed8(acc.hi, w.hi, x.hi)}; }
inline B64 b64_set(int v) { return {_mm256_set1_epi8((char)v), _mm256_set1_epi8((char)v)}; }
inline B64 b64_sub(B64 a, int v) { __m256i s = _mm256_set1_epi8((char)v); return {_mm256_sub_epi8(a.lo, s), _mm256_sub_epi8(a.hi, s)}; }
inline I32 ineg(I32 a) { __m256i z = _mm256_setzero_si256(); return {_mm256_sub_epi32(z, a.lo), _mm256_sub_epi32(z, a.hi)}; }
inline Vec to_vec(I32 a) { return {_mm256_cvtepi32_ps(a.lo), _mm256_cvtepi32_ps(a.hi)}; }

#endif


#if !defined(NX_AVX512) && !defined(NX_AVX2)
struct B64 { uint8_t b[64]; };
struct I32 { int32_t x[16]; };
struct I16 { int16_t x[32]; };
inline I32 izero() { I32 r; for (int i = 0; i < 16; i++) r.x[i] = 0; return r; }
inline B64 ld64(const void* p) { B64 r; std::memcpy(r.b, p, 64); return r; }
inline B64 cat64(const void* a, const void* b) { B64 r; std::memcpy(r.b, a, 32); std::memcpy(r.b + 32, b, 32); return r; }
inline B64 nibbles(const uint8_t* p) {
    B64 r;
    for (int i = 0; i < 32; i++) { r.b[i] = p[i] & 0x0F; r.b[32 + i] = p[i] >> 4; }
    return r;
}
inline B64 six_bits(const uint8_t* ql, const uint8_t* qh, int hi, int sh) {
    B64 r;
    for (int i = 0; i < 64; i++) {
        int l = hi ? ql[i] >> 4 : ql[i] & 0x0F, s = i < 32 ? sh : sh + 2;
        r.b[i] = (uint8_t)(l | (((qh[i % 32] >> s) & 3) << 4));
    }
    return r;
}
inline I16 sc2(int a, int b) { I16 r; for (int i = 0; i < 32; i++) r.x[i] = (int16_t)(i < 16 ? a : b); return r; }
inline I16 sc4(int a, int b, int c, int d) {
    const int v[4] = {a, b, c, d};
    I16 r;
    for (int i = 0; i < 32; i++) r.x[i] = (int16_t)v[i / 8];
    return r;
}
inline I32 dot_scaled(I32 acc, B64 w, B64 x, I16 s) {
    for (int i = 0; i < 16; i++) {
        int p0 = w.b[4 * i] * (int8_t)x.b[4 * i] + w.b[4 * i + 1] * (int8_t)x.b[4 * i + 1];
        int p1 = w.b[4 * i + 2] * (int8_t)x.b[4 * i + 2] + w.b[4 * i + 3] * (int8_t)x.b[4 * i + 3];
        acc.x[i] += s.x[2 * i] * p0 + s.x[2 * i + 1] * p1;
    }
    return acc;
}
inline I32 signed_start(B64) { return izero(); }
inline B64 b64_set(int v) { B64 r; std::memset(r.b, v, 64); return r; }
inline B64 b64_sub(B64 a, int v) { for (int i = 0; i < 64; i++) a.b[i] = (uint8_t)(a.b[i] - v); return a; }
inline I32 ineg(I32 a) { for (int i = 0; i < 16; i++) a.x[i] = -a.x[i]; return a; }
inline I32 dot_signed(I32 acc, B64 w, B64 x, B64) {
    for (int i = 0; i < 16; i++)
        for (int k = 0; k < 4; k++) acc.x[i] += (int8_t)w.b[4 * i + k] * (int8_t)x.b[4 * i + k];
    return acc;
}
inline Vec to_vec(I32 a) { Vec r; for (int i = 0; i < 16; i++) r.x[i] = (float)a.x[i]; return r; }
#endif

#if !defined(NX_AVX512)
inline void nibbles2(const uint8_t* p, B64& c0, B64& c1) { c0 = nibbles(p); c1 = nibbles(p + 32); }
inline void six_bits2(const uint8_t* ql, const uint8_t* qh, B64& c0, B64& c1) { c0 = six_bits(ql, qh, 0, 0); c1 = six_bits(ql, qh, 1, 4); }
struct SC16 { int16_t x[16]; };
inline SC16 sc16_u8x8(uint64_t b) { SC16 r{}; for (int k = 0; k < 8; k++) r.x[k] = (int16_t)((b >> (8 * k)) & 0xFF); return r; }
inline SC16 sc16_i8(const int8_t* p) { SC16 r; for (int k = 0; k < 16; k++) r.x[k] = p[k]; return r; }
inline I16 pick(const SC16& s, int c, int per) {
    return per == 2 ? sc2(s.x[2 * c], s.x[2 * c + 1]) : sc4(s.x[4 * c], s.x[4 * c + 1], s.x[4 * c + 2], s.x[4 * c + 3]);
}
#endif

}  // namespace NX_NS
