// GGUF weight formats, decoded 32 weights at a time into two Vecs of floats.
//
// Written from the format definitions. Each decoder performs exactly the float operations of
// gguf-py's reference dequantization (`gguf.quants`), in the same order, so the values it produces
// are bit-for-bit gguf-py's: e.g. Q4_K computes (d * sc) * q - (dmin * m) as a multiply then a
// subtract, never a fused multiply-add (the build uses -ffp-contract=off).
#pragma once
#include "simd.h"

namespace NX_NS {

inline float f16(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, man = h & 0x3FF, bits;
    if (exp == 0x1F) bits = sign | 0x7F800000 | (man << 13);
    else if (exp != 0) bits = sign | ((exp + 112) << 23) | (man << 13);
    else if (man == 0) bits = sign;
    else {  // subnormal half: normalise
        int e = -1;
        do { man <<= 1; e++; } while (!(man & 0x400));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3FF) << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}
#ifdef NX_HAVE_SSE
inline float f16at(const uint8_t* p) { uint16_t h; std::memcpy(&h, p, 2); return _cvtsh_ss(h); }   // F16C: exact
#else
inline float f16at(const uint8_t* p) { uint16_t h; std::memcpy(&h, p, 2); return f16(h); }
#endif

#ifndef NX_AVX512
#ifndef NX_AVX2
inline Vec Vec::from_f16(const uint16_t* p) { Vec r; for (int i = 0; i < 16; i++) r.x[i] = f16(p[i]); return r; }
#endif
#endif

// ---- 16 bytes at a time ------------------------------------------------------------------------
#ifdef NX_HAVE_SSE
using B16 = __m128i;
inline B16 ld16(const uint8_t* p) { return _mm_loadu_si128((const __m128i*)p); }
inline B16 set16(int v) { return _mm_set1_epi8((char)v); }
inline B16 band(B16 a, B16 b) { return _mm_and_si128(a, b); }
inline B16 bor(B16 a, B16 b) { return _mm_or_si128(a, b); }
inline B16 bsub(B16 a, B16 b) { return _mm_sub_epi8(a, b); }
inline B16 shr(B16 a, int n) { return _mm_and_si128(_mm_srl_epi16(a, _mm_cvtsi32_si128(n)), _mm_set1_epi8((char)(0xFF >> n))); }
inline B16 shl(B16 a, int n) { return _mm_and_si128(_mm_sll_epi16(a, _mm_cvtsi32_si128(n)), _mm_set1_epi8((char)(0xFF << n))); }
inline B16 lut(const int8_t* table16, B16 idx) { return _mm_shuffle_epi8(_mm_loadu_si128((const __m128i*)table16), idx); }
inline Vec u8f(B16 b) { return Vec::from_u8x16(b); }
inline Vec i8f(B16 b) { return Vec::from_i8x16(b); }
// bit i of a 16-bit mask as byte i (0 or 1)
inline B16 bits16(uint32_t m) {
    const B16 pick = _mm_setr_epi8(1, 2, 4, 8, 16, 32, 64, (char)128, 1, 2, 4, 8, 16, 32, 64, (char)128);
    B16 b = _mm_set_epi64x((long long)(0x0101010101010101ULL * ((m >> 8) & 0xFF)), (long long)(0x0101010101010101ULL * (m & 0xFF)));
    return _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(b, pick), pick), _mm_set1_epi8(1));
}
#else
struct B16 { uint8_t b[16]; };
inline B16 ld16(const uint8_t* p) { B16 r; std::memcpy(r.b, p, 16); return r; }
inline B16 set16(int v) { B16 r; for (int i = 0; i < 16; i++) r.b[i] = (uint8_t)v; return r; }
inline B16 band(B16 a, B16 b) { for (int i = 0; i < 16; i++) a.b[i] &= b.b[i]; return a; }
inline B16 bor(B16 a, B16 b) { for (int i = 0; i < 16; i++) a.b[i] |= b.b[i]; return a; }
inline B16 bsub(B16 a, B16 b) { for (int i = 0; i < 16; i++) a.b[i] = (uint8_t)(a.b[i] - b.b[i]); return a; }
inline B16 shr(B16 a, int n) { for (int i = 0; i < 16; i++) a.b[i] = (uint8_t)(a.b[i] >> n); return a; }
inline B16 shl(B16 a, int n) { for (int i = 0; i < 16; i++) a.b[i] = (uint8_t)(a.b[i] << n); return a; }
inline B16 lut(const int8_t* t, B16 idx) { for (int i = 0; i < 16; i++) idx.b[i] = (uint8_t)t[idx.b[i] & 15]; return idx; }
inline Vec u8f(B16 b) { Vec r; for (int i = 0; i < 16; i++) r.x[i] = (float)b.b[i]; return r; }
inline Vec i8f(B16 b) { Vec r; for (int i = 0; i < 16; i++) r.x[i] = (float)(int8_t)b.b[i]; return r; }
inline B16 bits16(uint32_t m) { B16 r; for (int i = 0; i < 16; i++) r.b[i] = (m >> i) & 1; return r; }
inline IVec widen(B16 b) { IVec r; for (int i = 0; i < 16; i++) r.x[i] = b.b[i]; return r; }
#endif
#ifdef NX_HAVE_SSE
inline IVec widen(B16 b) { return IVec::from_u8x16(b); }
#endif

inline B16 lo4(B16 b) { return band(b, set16(0x0F)); }
inline B16 b16_of(uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
    uint32_t w[4] = {a, b, c, d};
    return ld16(reinterpret_cast<const uint8_t*>(w));
}
inline B16 hi4(B16 b) { return shr(b, 4); }

alignas(16) static const int8_t IQ4_VALUES[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
alignas(64) static const float IQ4_FLOATS[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
inline Vec iq4_values() { return Vec::load(IQ4_FLOATS); }

// ---- the formats -------------------------------------------------------------------------------
// QK: weights per block; BYTES: bytes per block; prep(block, P): what a block's 32-weight pieces share
// (scales), computed once per block; sub(block, P, j, a, b): the floats of weights 32j .. 32j+31.

// FLOAT formats may have rows of any length; `at` reads one element of a partial block.
struct F32 {
    static constexpr int QK = 32, BYTES = 128;
    static constexpr bool FLOAT = true;
    struct P {};
    static void prep(const uint8_t*, P&) {}
    static float at(const uint8_t* p, int i) { float f; std::memcpy(&f, p + 4 * i, 4); return f; }
    static void sub(const uint8_t* p, const P&, int, Vec& a, Vec& b) { a = Vec::load((const float*)p); b = Vec::load((const float*)p + 16); }
};
struct F16 {
    static constexpr int QK = 32, BYTES = 64;
    static constexpr bool FLOAT = true;
    struct P {};
    static void prep(const uint8_t*, P&) {}
    static float at(const uint8_t* p, int i) { uint16_t h; std::memcpy(&h, p + 2 * i, 2); return f16(h); }
    static void sub(const uint8_t* p, const P&, int, Vec& a, Vec& b) { a = Vec::from_f16((const uint16_t*)p); b = Vec::from_f16((const uint16_t*)p + 16); }
};
struct BF16 {
    static constexpr int QK = 32, BYTES = 64;
    static constexpr bool FLOAT = true;
    struct P {};
    static void prep(const uint8_t*, P&) {}
    static float at(const uint8_t* p, int i) { uint32_t u = (uint32_t)(p[2 * i] | (p[2 * i + 1] << 8)) << 16; float f; std::memcpy(&f, &u, 4); return f; }
    static void sub(const uint8_t* p, const P&, int, Vec& a, Vec& b) { a = Vec::from_bf16((const uint16_t*)p); b = Vec::from_bf16((const uint16_t*)p + 16); }
};

struct DM { float d, m; };   // the scale (and offset) of a 32-weight block

struct Q8_0 {
    static constexpr int QK = 32, BYTES = 34;
    static constexpr bool FLOAT = false;
    using P = DM;
    static void prep(const uint8_t* p, P& s) { s.d = f16at(p); }
    static void sub(const uint8_t* p, const P& s, int, Vec& a, Vec& b) {
        Vec d = Vec::set1(s.d);
        a = Vec::from_i8((const int8_t*)p + 2) * d;
        b = Vec::from_i8((const int8_t*)p + 18) * d;
    }
};

struct Q4_0 {
    static constexpr int QK = 32, BYTES = 18;
    static constexpr bool FLOAT = false;
    using P = DM;
    static void prep(const uint8_t* p, P& s) { s.d = f16at(p); }
    static void sub(const uint8_t* p, const P& s, int, Vec& a, Vec& b) {   // table[q] = d * (q - 8)
        Vec t = Vec::set1(s.d) * (iota16() - Vec::set1(8.f));
        IVec q = widen(ld16(p + 2));
        a = lut16(t, q);
        b = lut16(t, q.shr4());
    }
};

struct Q4_1 {
    static constexpr int QK = 32, BYTES = 20;
    static constexpr bool FLOAT = false;
    using P = DM;
    static void prep(const uint8_t* p, P& s) { s.d = f16at(p); s.m = f16at(p + 2); }
    static void sub(const uint8_t* p, const P& s, int, Vec& a, Vec& b) {   // table[q] = d * q + m
        Vec t = Vec::set1(s.d) * iota16() + Vec::set1(s.m);
        IVec q = widen(ld16(p + 4));
        a = lut16(t, q);
        b = lut16(t, q.shr4());
    }
};

struct Q5_0 {
    static constexpr int QK = 32, BYTES = 22;
    static constexpr bool FLOAT = false;
    using P = DM;
    static void prep(const uint8_t* p, P& s) { s.d = f16at(p); }
    static void sub(const uint8_t* p, const P& s, int, Vec& a, Vec& b) {
        Vec d = Vec::set1(s.d);
        uint32_t qh;
        std::memcpy(&qh, p + 2, 4);
        B16 q = ld16(p + 6);
        B16 lo = bor(lo4(q), shl(bits16(qh & 0xFFFF), 4)), hi = bor(hi4(q), shl(bits16(qh >> 16), 4));
        a = d * i8f(bsub(lo, set16(16)));
        b = d * i8f(bsub(hi, set16(16)));
    }
};

struct Q5_1 {
    static constexpr int QK = 32, BYTES = 24;
    static constexpr bool FLOAT = false;
    using P = DM;
    static void prep(const uint8_t* p, P& s) { s.d = f16at(p); s.m = f16at(p + 2); }
    static void sub(const uint8_t* p, const P& s, int, Vec& a, Vec& b) {
        Vec d = Vec::set1(s.d), m = Vec::set1(s.m);
        uint32_t qh;
        std::memcpy(&qh, p + 4, 4);
        B16 q = ld16(p + 8);
        a = d * u8f(bor(lo4(q), shl(bits16(qh & 0xFFFF), 4))) + m;
        b = d * u8f(bor(hi4(q), shl(bits16(qh >> 16), 4))) + m;
    }
};

struct IQ4_NL {
    static constexpr int QK = 32, BYTES = 18;
    static constexpr bool FLOAT = false;
    using P = DM;
    static void prep(const uint8_t* p, P& s) { s.d = f16at(p); }
    static void sub(const uint8_t* p, const P& s, int, Vec& a, Vec& b) {   // table[q] = d * value[q]
        Vec t = Vec::set1(s.d) * iq4_values();
        IVec q = widen(ld16(p + 2));
        a = lut16(t, q);
        b = lut16(t, q.shr4());
    }
};

// K-quants: per 16- or 32-weight group scales, prepared once per 256-weight block as floats
struct S16 { float d[16], m[16]; };
struct S8 { float dm[16]; };   // Q4_K / Q5_K: eight scales in dm[0..7], eight mins in dm[8..15]

struct Q2_K {   // scales[16] qs[64] d dmin
    static constexpr int QK = 256, BYTES = 84;
    static constexpr bool FLOAT = false;
    using P = S16;
    static void prep(const uint8_t* p, P& s) {
        B16 sc = ld16(p);
        (u8f(lo4(sc)) * Vec::set1(f16at(p + 80))).store(s.d);
        (u8f(hi4(sc)) * Vec::set1(f16at(p + 82))).store(s.m);
    }
    static void sub(const uint8_t* p, const P& s, int j, Vec& a, Vec& b) {
        const uint8_t* qs = p + 16 + 32 * (j / 4);
        int sh = 2 * (j % 4);
        a = Vec::set1(s.d[2 * j]) * u8f(band(shr(ld16(qs), sh), set16(3))) - Vec::set1(s.m[2 * j]);
        b = Vec::set1(s.d[2 * j + 1]) * u8f(band(shr(ld16(qs + 16), sh), set16(3))) - Vec::set1(s.m[2 * j + 1]);
    }
};

struct Q3_K {   // hmask[32] qs[64] scales[12] d
    static constexpr int QK = 256, BYTES = 110;
    static constexpr bool FLOAT = false;
    using P = S16;
    static void prep(const uint8_t* p, P& s) {   // scale k: low 4 bits from byte k % 8, high 2 from byte 8 + k % 4
        const uint8_t* sc = p + 96;
        uint32_t l0, l1, h;
        std::memcpy(&l0, sc, 4); std::memcpy(&l1, sc + 4, 4); std::memcpy(&h, sc + 8, 4);
        const uint32_t M4 = 0x0F0F0F0F, M2 = 0x03030303;
        B16 lo = b16_of(l0 & M4, l1 & M4, (l0 >> 4) & M4, (l1 >> 4) & M4);
        B16 hi = b16_of(h & M2, (h >> 2) & M2, (h >> 4) & M2, (h >> 6) & M2);
        (i8f(bsub(bor(lo, shl(hi, 4)), set16(32))) * Vec::set1(f16at(p + 108))).store(s.d);
    }
    static void sub(const uint8_t* p, const P& s, int j, Vec& a, Vec& b) {
        const uint8_t* qs = p + 32 + 32 * (j / 4);
        int sh = 2 * (j % 4);
        B16 one = set16(1), three = set16(3);
        B16 ha = band(shr(ld16(p), j), one), hb = band(shr(ld16(p + 16), j), one);
        B16 qa = bsub(band(shr(ld16(qs), sh), three), shl(bsub(one, ha), 2));
        B16 qb = bsub(band(shr(ld16(qs + 16), sh), three), shl(bsub(one, hb), 2));
        a = Vec::set1(s.d[2 * j]) * i8f(qa);
        b = Vec::set1(s.d[2 * j + 1]) * i8f(qb);
    }
};

// Q4_K / Q5_K: eight 6-bit scales and mins packed in 12 bytes (j < 4: low 6 bits of bytes j and j + 4;
// j >= 4: nibbles of byte j + 4, top bits from bytes j - 4 and j). Returns the eight scales (byte j of `sc`)
// and the eight mins (byte j of `mn`).
inline void k_scale_bytes(const uint8_t* p, uint64_t& sc, uint64_t& mn) {
    uint32_t a0, a1, a2;
    std::memcpy(&a0, p + 4, 4); std::memcpy(&a1, p + 8, 4); std::memcpy(&a2, p + 12, 4);
    const uint32_t M6 = 0x3F3F3F3F, M4 = 0x0F0F0F0F, T2 = 0x30303030;
    sc = (uint64_t)(a0 & M6) | (uint64_t)((a2 & M4) | ((a0 >> 2) & T2)) << 32;
    mn = (uint64_t)(a1 & M6) | (uint64_t)(((a2 >> 4) & M4) | ((a1 >> 2) & T2)) << 32;
}
inline void k_scales(const uint8_t* p, S8& s) {
    uint64_t sc, mn;
    k_scale_bytes(p, sc, mn);
    B16 q = b16_of((uint32_t)sc, (uint32_t)(sc >> 32), (uint32_t)mn, (uint32_t)(mn >> 32));
    (u8f(q) * Vec::two(f16at(p), f16at(p + 2))).store(s.dm);
}

struct Q4_K {   // d dmin scales[12] qs[128]
    static constexpr int QK = 256, BYTES = 144;
    static constexpr bool FLOAT = false;
    using P = S8;
    static void prep(const uint8_t* p, P& s) { k_scales(p, s); }
    static void sub(const uint8_t* p, const P& s, int j, Vec& a, Vec& b) {   // table[q] = (d sc) * q - dmin m
        const uint8_t* qs = p + 16 + 32 * (j / 2);
        Vec t = Vec::set1(s.dm[j]) * iota16() - Vec::set1(s.dm[8 + j]);
        IVec q0 = widen(ld16(qs)), q1 = widen(ld16(qs + 16));
        if (j % 2) { q0 = q0.shr4(); q1 = q1.shr4(); }
        a = lut16(t, q0);
        b = lut16(t, q1);
    }
};

struct Q5_K {   // d dmin scales[12] qh[32] qs[128]
    static constexpr int QK = 256, BYTES = 176;
    static constexpr bool FLOAT = false;
    using P = S8;
    static void prep(const uint8_t* p, P& s) { k_scales(p, s); }
    static void sub(const uint8_t* p, const P& s, int j, Vec& a, Vec& b) {
        const uint8_t* qh = p + 16;
        const uint8_t* qs = p + 48 + 32 * (j / 2);
        B16 q0 = ld16(qs), q1 = ld16(qs + 16);
        if (j % 2) { q0 = hi4(q0); q1 = hi4(q1); } else { q0 = lo4(q0); q1 = lo4(q1); }
        B16 one = set16(1);
        q0 = bor(q0, shl(band(shr(ld16(qh), j), one), 4));
        q1 = bor(q1, shl(band(shr(ld16(qh + 16), j), one), 4));
        Vec dd = Vec::set1(s.dm[j]), dm = Vec::set1(s.dm[8 + j]);
        a = dd * u8f(q0) - dm;
        b = dd * u8f(q1) - dm;
    }
};

struct Q6_K {   // ql[128] qh[64] scales[16] d
    static constexpr int QK = 256, BYTES = 210;
    static constexpr bool FLOAT = false;
    using P = S16;
    static void prep(const uint8_t* p, P& s) { (i8f(ld16(p + 192)) * Vec::set1(f16at(p + 208))).store(s.d); }
    static void sub(const uint8_t* p, const P& s, int j, Vec& a, Vec& b) {
        int h = j / 4, o = 32 * (j % 4), sh = 2 * (j % 4);
        const uint8_t* ql = p + 64 * h + (o % 64);
        const uint8_t* qh = p + 128 + 32 * h;
        B16 l0 = ld16(ql), l1 = ld16(ql + 16);
        if (o >= 64) { l0 = hi4(l0); l1 = hi4(l1); } else { l0 = lo4(l0); l1 = lo4(l1); }
        B16 three = set16(3), k32 = set16(32);
        B16 q0 = bsub(bor(l0, shl(band(shr(ld16(qh), sh), three), 4)), k32);
        B16 q1 = bsub(bor(l1, shl(band(shr(ld16(qh + 16), sh), three), 4)), k32);
        a = Vec::set1(s.d[2 * j]) * i8f(q0);
        b = Vec::set1(s.d[2 * j + 1]) * i8f(q1);
    }
};

struct IQ4_XS {   // d scales_h(u16) scales_l[4] qs[128]
    static constexpr int QK = 256, BYTES = 136;
    static constexpr bool FLOAT = false;
    using P = S16;
    static void prep(const uint8_t* p, P& s) {
        float d = f16at(p);
        uint16_t sh;
        std::memcpy(&sh, p + 2, 2);
        for (int j = 0; j < 8; j++) {
            int lo = (p[4 + j / 2] >> (4 * (j % 2))) & 0xF, hi = (sh >> (2 * j)) & 3;
            s.d[j] = d * (float)((lo | (hi << 4)) - 32);
        }
    }
    static void sub(const uint8_t* p, const P& s, int j, Vec& a, Vec& b) {   // table[q] = dl * value[q]
        Vec t = Vec::set1(s.d[j]) * iq4_values();
        IVec q = widen(ld16(p + 8 + 16 * j));
        a = lut16(t, q);
        b = lut16(t, q.shr4());
    }
};

}  // namespace NX_NS
