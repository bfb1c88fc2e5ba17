// Packed lanes: the vector types of the packed int8 kernels (packed.inc).
//
// A packed weight interleaves sixteen rows, so that lane n of every vector belongs to output row n and
// no horizontal sum is ever needed. A pass covers PL of those rows: all sixteen on AVX-512 and in plain
// C++, eight on AVX2 (whose sixteen registers cannot hold sixteen rows of four accumulators), taking
// bytes [4 PL h, 4 PL (h + 1)) of each 64-byte code vector in pass h. A code vector (PB) holds four
// consecutive codes of each of its PL rows, at bytes 4n..4n+3; an int32 vector (PI) one sum per row.
//
// Integer sums are exact, so the instruction sets may group them differently (AVX2 sums code products
// in int16 lanes first, VNNI straight into int32), and still give the same integers; the float
// operations on them are the same, in the same order, on every instruction set: the same bits.
// No int16 lane can overflow: Q4_K codes are 4 bits, Q6_K codes 6 bits, activations lie in [-127, 127].
#pragma once
#include "simd.h"

namespace NX_NS {

inline int32_t ld32(const void* p) { int32_t v; std::memcpy(&v, p, 4); return v; }

#if defined(NX_AVX512)
constexpr int PL = 16;
struct PB { __m512i v; };
struct PI { __m512i v; };
struct PF { __m512 v; };
inline PB pb_load(const uint8_t* p) { return {_mm512_loadu_si512(p)}; }
inline void pb_split4(const uint8_t* p, PB& lo, PB& hi) {   // low and high nibble of each byte
    __m512i q = _mm512_loadu_si512(p), m = _mm512_set1_epi8(0x0F);
    lo.v = _mm512_and_si512(q, m);
    hi.v = _mm512_and_si512(_mm512_srli_epi16(q, 4), m);
}
template <int S> inline PB pb_hi2(PB lo, PB h) {   // lo | ((h >> S) & 3) << 4, per byte
    __m512i t = S < 4 ? _mm512_slli_epi16(h.v, 4 - S) : S > 4 ? _mm512_srli_epi16(h.v, S - 4) : h.v;
    return {_mm512_ternarylogic_epi32(lo.v, t, _mm512_set1_epi8(0x30), 0xF8)};
}
inline PI pi_zero() { return {_mm512_setzero_si512()}; }
inline PI pi_scale_u8(const uint8_t* p) { return {_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)p))}; }
inline PI pi_scale_i8(const uint8_t* p) { return {_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)p))}; }
inline __m512i dp4(__m512i acc, PB u, const int8_t* x) { return _mm512_dpbusd_epi32(acc, u.v, _mm512_set1_epi32(ld32(x))); }
// acc + sc * sum_t (q[t] . x[4t..4t+3]), t < 8 (Q4_K: 32 codes, one scale)
inline PI q4_sub(PI acc, const PB* q, const int8_t* x, PI sc) {
    __m512i s = _mm512_setzero_si512();
    for (int t = 0; t < 8; t++) s = dp4(s, q[t], x + 4 * t);
    return {_mm512_add_epi32(acc.v, _mm512_mullo_epi32(s, sc.v))};
}
// acc + sc * (sum_t (q[t] . x[4t..4t+3]) - 32 s16), t < 4 (Q6_K: 16 codes - 32, one scale; s16 = sum of x)
inline PI q6_sub(PI acc, const PB* q, const int8_t* x, int s16, PI sc) {
    __m512i s = _mm512_set1_epi32(-32 * s16);
    for (int t = 0; t < 4; t++) s = dp4(s, q[t], x + 4 * t);
    return {_mm512_add_epi32(acc.v, _mm512_mullo_epi32(s, sc.v))};
}
// sum_t ((q[t] - 128) . x[4t..4t+3]), t < 8 (Q8_0: codes stored as w + 128; s32 = sum of x)
inline PI q8_dot(const PB* q, const int8_t* x, int s32) {
    __m512i s = _mm512_set1_epi32(-128 * s32);
    for (int t = 0; t < 8; t++) s = dp4(s, q[t], x + 4 * t);
    return {s};
}
// acc lane n + p[2n] lo(s2) + p[2n+1] hi(s2): 2 PL unsigned bytes against two int16 in s2
inline PI pi_dp_pairs(PI acc, const uint8_t* p, int32_t s2) {
    return {_mm512_dpwssd_epi32(acc.v, _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i*)p)), _mm512_set1_epi32(s2))};
}
inline PF pf_zero() { return {_mm512_setzero_ps()}; }
inline PF pf_set1(float x) { return {_mm512_set1_ps(x)}; }
inline PF pf_of(PI a) { return {_mm512_cvtepi32_ps(a.v)}; }
inline PF pf_f16(const uint8_t* p) { return {_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)p))}; }
inline PF pf_load(const float* p) { return {_mm512_loadu_ps(p)}; }
inline void pf_store(float* p, PF a) { _mm512_storeu_ps(p, a.v); }
inline PF operator+(PF a, PF b) { return {_mm512_add_ps(a.v, b.v)}; }
inline PF operator*(PF a, PF b) { return {_mm512_mul_ps(a.v, b.v)}; }
inline PF fma(PF a, PF b, PF c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }

#elif defined(NX_AVX2)
constexpr int PL = 8;
struct PB { __m256i v; };
struct PI { __m256i v; };
struct PF { __m256 v; };
inline PB pb_load(const uint8_t* p) { return {_mm256_loadu_si256((const __m256i*)p)}; }
inline void pb_split4(const uint8_t* p, PB& lo, PB& hi) {
    __m256i q = _mm256_loadu_si256((const __m256i*)p), m = _mm256_set1_epi8(0x0F);
    lo.v = _mm256_and_si256(q, m);
    hi.v = _mm256_and_si256(_mm256_srli_epi16(q, 4), m);
}
template <int S> inline PB pb_hi2(PB lo, PB h) {
    __m256i t = S < 4 ? _mm256_slli_epi16(h.v, 4 - S) : S > 4 ? _mm256_srli_epi16(h.v, S - 4) : h.v;
    return {_mm256_or_si256(lo.v, _mm256_and_si256(t, _mm256_set1_epi8(0x30)))};
}
inline PI pi_zero() { return {_mm256_setzero_si256()}; }
// eight scale bytes as madd takes them: each byte twice, widened, so that an int32 lane holds the same int16 twice
inline __m128i twice8(const uint8_t* p) {
    return _mm_shuffle_epi8(_mm_loadl_epi64((const __m128i*)p), _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7));
}
inline PI pi_scale_u8(const uint8_t* p) { return {_mm256_cvtepu8_epi16(twice8(p))}; }
inline PI pi_scale_i8(const uint8_t* p) { return {_mm256_cvtepi8_epi16(twice8(p))}; }
inline __m256i dp2(PB u, const int8_t* x) { return _mm256_maddubs_epi16(u.v, _mm256_set1_epi32(ld32(x))); }   // int16 pair sums
// the int16 sums of eight quads of 4-bit codes stay below 8 * 2 * 15 * 127 = 30480
inline PI q4_sub(PI acc, const PB* q, const int8_t* x, PI sc) {
    __m256i s = dp2(q[0], x);
    for (int t = 1; t < 8; t++) s = _mm256_add_epi16(s, dp2(q[t], x + 4 * t));
    return {_mm256_add_epi32(acc.v, _mm256_madd_epi16(s, sc.v))};
}
// two quads of 6-bit codes: below 2 * 2 * 63 * 127 = 32004; the offset -32 s16 as 2 x (-16 s16), |16 s16| <= 32512
inline PI q6_sub(PI acc, const PB* q, const int8_t* x, int s16, PI sc) {
    __m256i a = _mm256_add_epi16(dp2(q[0], x), dp2(q[1], x + 4)), b = _mm256_add_epi16(dp2(q[2], x + 8), dp2(q[3], x + 12));
    __m256i s = _mm256_add_epi32(_mm256_madd_epi16(a, sc.v), _mm256_madd_epi16(b, sc.v));
    s = _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_set1_epi16((short)(-16 * s16)), sc.v));
    return {_mm256_add_epi32(acc.v, s)};
}
inline PI q8_dot(const PB* q, const int8_t* x, int) {   // |w| times x with w's sign, w = code - 128
    const __m256i f = _mm256_set1_epi8((char)0x80), one = _mm256_set1_epi16(1);
    __m256i s = _mm256_setzero_si256();
    for (int t = 0; t < 8; t++) {
        __m256i w = _mm256_xor_si256(q[t].v, f), xv = _mm256_set1_epi32(ld32(x + 4 * t));
        s = _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(xv, w)), one));
    }
    return {s};
}
inline PI pi_dp_pairs(PI acc, const uint8_t* p, int32_t s2) {
    return {_mm256_add_epi32(acc.v, _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)p)), _mm256_set1_epi32(s2)))};
}
inline PF pf_zero() { return {_mm256_setzero_ps()}; }
inline PF pf_set1(float x) { return {_mm256_set1_ps(x)}; }
inline PF pf_of(PI a) { return {_mm256_cvtepi32_ps(a.v)}; }
inline PF pf_f16(const uint8_t* p) { return {_mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p))}; }
inline PF pf_load(const float* p) { return {_mm256_loadu_ps(p)}; }
inline void pf_store(float* p, PF a) { _mm256_storeu_ps(p, a.v); }
inline PF operator+(PF a, PF b) { return {_mm256_add_ps(a.v, b.v)}; }
inline PF operator*(PF a, PF b) { return {_mm256_mul_ps(a.v, b.v)}; }
inline PF fma(PF a, PF b, PF c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }

#else
constexpr int PL = 16;
struct PB { uint8_t b[64]; };
struct PI { int32_t x[16]; };
struct PF { float x[16]; };
inline PB pb_load(const uint8_t* p) { PB r; std::memcpy(r.b, p, 64); return r; }
inline void pb_split4(const uint8_t* p, PB& lo, PB& hi) {
    for (int i = 0; i < 64; i++) { lo.b[i] = p[i] & 0x0F; hi.b[i] = p[i] >> 4; }
}
template <int S> inline PB pb_hi2(PB lo, PB h) {
    for (int i = 0; i < 64; i++) lo.b[i] = (uint8_t)(lo.b[i] | (((h.b[i] >> S) & 3) << 4));
    return lo;
}
inline PI pi_zero() { PI r; for (int n = 0; n < 16; n++) r.x[n] = 0; return r; }
inline PI pi_scale_u8(const uint8_t* p) { PI r; for (int n = 0; n < 16; n++) r.x[n] = p[n]; return r; }
inline PI pi_scale_i8(const uint8_t* p) { PI r; for (int n = 0; n < 16; n++) r.x[n] = (int8_t)p[n]; return r; }
inline int dot4(const PB& u, int n, const int8_t* x, int offset) {
    int s = 0;
    for (int i = 0; i < 4; i++) s += (u.b[4 * n + i] - offset) * x[i];
    return s;
}
inline PI q4_sub(PI acc, const PB* q, const int8_t* x, PI sc) {
    for (int n = 0; n < 16; n++) {
        int s = 0;
        for (int t = 0; t < 8; t++) s += dot4(q[t], n, x + 4 * t, 0);
        acc.x[n] += s * sc.x[n];
    }
    return acc;
}
inline PI q6_sub(PI acc, const PB* q, const int8_t* x, int s16, PI sc) {
    for (int n = 0; n < 16; n++) {
        int s = -32 * s16;
        for (int t = 0; t < 4; t++) s += dot4(q[t], n, x + 4 * t, 0);
        acc.x[n] += s * sc.x[n];
    }
    return acc;
}
inline PI q8_dot(const PB* q, const int8_t* x, int) {
    PI r;
    for (int n = 0; n < 16; n++) {
        r.x[n] = 0;
        for (int t = 0; t < 8; t++) r.x[n] += dot4(q[t], n, x + 4 * t, 128);
    }
    return r;
}
inline PI pi_dp_pairs(PI acc, const uint8_t* p, int32_t s2) {
    int16_t s[2];
    std::memcpy(s, &s2, 4);
    for (int n = 0; n < 16; n++) acc.x[n] += p[2 * n] * s[0] + p[2 * n + 1] * s[1];
    return acc;
}
inline PF pf_zero() { PF r; for (int n = 0; n < 16; n++) r.x[n] = 0.0f; return r; }
inline PF pf_set1(float x) { PF r; for (int n = 0; n < 16; n++) r.x[n] = x; return r; }
inline PF pf_of(PI a) { PF r; for (int n = 0; n < 16; n++) r.x[n] = (float)a.x[n]; return r; }
inline PF pf_f16(const uint8_t* p) { Vec v = Vec::from_f16((const uint16_t*)p); PF r; std::memcpy(r.x, v.x, 64); return r; }
inline PF pf_load(const float* p) { PF r; std::memcpy(r.x, p, 64); return r; }
inline void pf_store(float* p, PF a) { std::memcpy(p, a.x, 64); }
inline PF operator+(PF a, PF b) { for (int n = 0; n < 16; n++) a.x[n] = a.x[n] + b.x[n]; return a; }
inline PF operator*(PF a, PF b) { for (int n = 0; n < 16; n++) a.x[n] = a.x[n] * b.x[n]; return a; }
inline PF fma(PF a, PF b, PF c) { for (int n = 0; n < 16; n++) c.x[n] = std::fma(a.x[n], b.x[n], c.x[n]); return c; }
#endif

}  // namespace NX_NS
