#version 450
// Non-finite check of V (internal/kern/doc.go, "Packed K and V"): flags[b * Hkv + kvh]
// is set to 1 when an element of V[b, 0..Lk), kvh, 0..D) is NaN or +-Inf (exponent
// all ones: fp16 0x7c00, bf16 0x7f80, float32 0x7f800000, by P.storage); the host
// zero-fills flags first, and nothing else is written, so racing stores agree. Only the
// elements of the view are looked at: a neighbouring element that shares a word with
// one of them (16-bit storage, odd offsets or D) is masked out.
//
// One invocation checks one unit of a row (b, j, kvh): a uvec4 in variant "vec" (8
// 16-bit or 4 float32 elements; every offset and stride that matters, and D, are
// multiples of that), else one word's worth, 2 elements (16-bit) or 1 (float32).
// Grid-stride loop over B * Lk * Hkv * units: any number of workgroups works.
//
// variant: vec -DVEC=1
// variant: word

layout(local_size_x = 256) in;

#include "dma_common.glsl"

#ifdef VEC
layout(std430, binding = 1) readonly buffer VBuf { uvec4 vIn[]; };
#else
layout(std430, binding = 1) readonly buffer VBuf { uint vIn[]; };
#endif
layout(std430, binding = 2) writeonly buffer Flags { uint flags[]; }; // [B][Hkv]

// Whether either 16-bit half of w, whose exponent field is e (0x7c00 or 0x7f80), is
// non-finite; lo / hi: whether that half counts.
bool bad16(uint w, uint e, bool lo, bool hi) {
	return (lo && (w & e) == e) || (hi && ((w >> 16) & e) == e);
}

bool bad32(uint w) { return (w & 0x7f800000u) == 0x7f800000u; }

void main() {
	const uint Lk = P.Lk, Hkv = P.Hkv, D = P.D;
	const bool packed = P.storage != STORAGE_F32;
	const uint e16 = P.storage == STORAGE_BF16 ? 0x7f80u : 0x7c00u;
#ifdef VEC
	const uint per = packed ? 8u : 4u;
#else
	const uint per = packed ? 2u : 1u;
#endif
	const uint upr = (D + per - 1u) / per;
	const uint n = P.B * Lk * Hkv * upr; // < 2^31 (checked by the host)
	const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
	for (uint q = gl_GlobalInvocationID.x; q < n; q += stride) {
		uint t = q / upr, c = q - t * upr;
		uint kvh = t % Hkv;
		t /= Hkv;
		uint j = t % Lk, b = t / Lk;
		uint s = P.vOff + b * P.vSB + j * P.vSL + kvh * P.vSH + c * per; // first element
		bool bad;
#ifdef VEC
		uvec4 x = vIn[s / per];
		if (packed) {
			bad = bad16(x.x, e16, true, true) || bad16(x.y, e16, true, true) ||
				bad16(x.z, e16, true, true) || bad16(x.w, e16, true, true);
		} else {
			bad = bad32(x.x) || bad32(x.y) || bad32(x.z) || bad32(x.w);
		}
#else
		if (packed) {
			// Elements s and s + 1 (the latter only when inside the row).
			bool two = c * 2u + 1u < D;
			if ((s & 1u) == 0u) {
				bad = bad16(vIn[s >> 1], e16, true, two);
			} else {
				bad = bad16(vIn[s >> 1], e16, false, true) ||
					(two && bad16(vIn[(s >> 1) + 1u], e16, true, false));
			}
		} else {
			bad = bad32(vIn[s]);
		}
#endif
		if (bad) flags[b * Hkv + kvh] = 1u;
	}
}
