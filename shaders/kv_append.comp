#version 450
// KV-cache append (dma.KVCache.Append): n = P.Lq new keys into a cache at key position
// a = P.posOffset: their K and V rows ([n][Hkv][D] elements, contiguous, the cache's
// storage) to element P.kOff + a * P.kSL of the cache's K and V (which share a layout),
// and the ord of their float32 weights ([Hb][n]) to P.ordOff + hb * P.ordSL + a + j.
// Everything about where comes from the parameters, so one recording serves every step.
//
// 16-bit rows need not start on a word: each invocation writes whole destination words,
// taking each half from the source or, at the two ends, keeping what is there.

layout(local_size_x = 256) in;

#include "dma_common.glsl"

layout(std430, binding = 1) readonly buffer SrcK { uint srcK[]; };
layout(std430, binding = 2) readonly buffer SrcV { uint srcV[]; };
layout(std430, binding = 3) readonly buffer Weights { uint weightBits[]; };  // float32 [Hb][n]
layout(std430, binding = 4) buffer DstK { uint dstK[]; };
layout(std430, binding = 5) buffer DstV { uint dstV[]; };
layout(std430, binding = 6) writeonly buffer Ord { uint ord[]; };

// Half h of word w.
uint half16(uint w, uint h) { return h == 0u ? (w & 0xffffu) : (w >> 16); }

void main() {
	uint n = P.Lq, a = uint(P.posOffset);
	uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
	uint elems = n * P.Hkv * P.D, first = P.kOff + a * P.kSL;
	if (P.storage == STORAGE_F32) {
		for (uint e = gl_GlobalInvocationID.x; e < elems; e += stride) {
			dstK[first + e] = srcK[e];
			dstV[first + e] = srcV[e];
		}
	} else {
		uint w0 = first >> 1, w1 = (first + elems - 1u) >> 1;
		for (uint wd = w0 + gl_GlobalInvocationID.x; wd <= w1; wd += stride) {
			uint k = dstK[wd], v = dstV[wd];
			uint kh[2] = uint[2](k & 0xffffu, k >> 16), vh[2] = uint[2](v & 0xffffu, v >> 16);
			for (uint h = 0u; h < 2u; h++) {
				uint g = 2u * wd + h;
				if (g < first || g >= first + elems) continue;
				uint s = g - first;
				kh[h] = half16(srcK[s >> 1], s & 1u);
				vh[h] = half16(srcV[s >> 1], s & 1u);
			}
			dstK[wd] = kh[0] | (kh[1] << 16);
			dstV[wd] = vh[0] | (vh[1] << 16);
		}
	}
	for (uint e = gl_GlobalInvocationID.x; e < P.Hb * n; e += stride) {
		uint hb = e / n, j = e - hb * n;
		ord[P.ordOff + hb * P.ordSL + a + j] = ordBits(weightBits[e]);
	}
}
