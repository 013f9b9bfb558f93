#version 450
// Decode selection: the thresholds of mode row, causal, for a few query rows, straight
// from ord, without the block lists (the KV-cache decode path, dma.KVCache). Same
// output contract as select_tau (internal/kern/doc.go): tau[bh][i] for query row i at key
// position p = i + P.posOffset is the w-th best valid key of [0, p] by kappa = (ord, idx),
// or (0, 0) when [0, p] holds at most w valid keys (and for p < 0).
//
// One workgroup per (row, bh) runs a radix select over the 64-bit kappa = ord << 32 | idx
// of the valid keys of [0, p]: a pass per 8-bit digit, from ord's top digit to idx's
// bottom one, each a shared-memory histogram of the keys that still match the digits
// chosen so far, then the digit holding the k-th largest (k = w less the keys above it).
// Exact (ties fall to the later key as kappa orders them). As soon as a single candidate
// is left, one more pass finds it (usually after the 4 passes over ord). Work at most
// O(8 (p + 1)) per row,
// ord read coalesced: meant for decode steps (Lq of a few rows over long caches), where
// the block lists of select_sort/select_blocks cost O(Lk) per step anyway and tau's walk
// needs them.

layout(local_size_x = 256) in;

#include "dma_common.glsl"

layout(std430, binding = 1) readonly buffer Ord { uint ord[]; };     // [B*Hb][Lk]
layout(std430, binding = 2) writeonly buffer Tau { uvec2 tau[]; };   // [B*Hb][Lq]

shared uint hist[256];
shared uint chosen[3];   // the digit, how many candidate keys lie above it, and in it

const uint NONE = 0xffffffffu;

void main() {
	uint i = gl_WorkGroupID.x, bh = gl_WorkGroupID.y, lid = gl_LocalInvocationID.x;
	int pi = int(i) + P.posOffset;
	if (pi < 0) {
		if (lid == 0u) tau[bh * P.Lq + i] = uvec2(0u);
		return;
	}
	uint p = min(uint(pi), P.Lk - 1u);
	uint base = bh * P.Lk;
	uint k = P.window;  // rank (1-based) of the wanted key among the candidates
	// Digits fixed so far: of ord (passes 0-3), then of idx (passes 4-7).
	uint ordPre = 0u, ordMask = 0u, idxPre = 0u, idxMask = 0u;
	for (uint pass = 0u; pass < 8u; pass++) {
		for (uint d = lid; d < 256u; d += gl_WorkGroupSize.x) hist[d] = 0u;
		barrier();
		uint shift = 24u - 8u * (pass & 3u);
		for (uint j = lid; j <= p; j += gl_WorkGroupSize.x) {
			uint o = ord[base + j];
			if (o == 0u || (o & ordMask) != ordPre || (j & idxMask) != idxPre) continue;
			uint digit = pass < 4u ? (o >> shift) & 255u : (j >> shift) & 255u;
			atomicAdd(hist[digit], 1u);
		}
		barrier();
		if (lid == 0u) {
			uint above = 0u, total = 0u;
			for (uint d = 0u; d < 256u; d++) total += hist[d];
			chosen[0] = NONE;
			// Pass 0 counts every valid key of [0, p]: at most w of them keep all.
			if (pass > 0u || total > k) {
				for (int d = 255; d >= 0; d--) {
					uint h = hist[uint(d)];
					if (above + h >= k) {
						chosen[0] = uint(d);
						chosen[1] = above;
						chosen[2] = h;
						break;
					}
					above += h;
				}
			}
		}
		barrier();
		uint dsel = chosen[0], above = chosen[1], inDigit = chosen[2];
		if (dsel == NONE) {
			if (lid == 0u) tau[bh * P.Lq + i] = uvec2(0u);
			return;
		}
		k -= above;
		if (pass < 4u) {
			ordPre |= dsel << shift;
			ordMask |= 255u << shift;
		} else {
			idxPre |= dsel << shift;
			idxMask |= 255u << shift;
		}
		barrier();  // chosen[] and hist[] are read before the next pass clears them
		if (inDigit == 1u) {
			// One candidate left (k is 1): it is the answer, whatever digits remain; one
			// pass finds it (usually after the 4 passes over ord: ties are rare).
			for (uint j = lid; j <= p; j += gl_WorkGroupSize.x) {
				uint o = ord[base + j];
				if (o != 0u && (o & ordMask) == ordPre && (j & idxMask) == idxPre) tau[bh * P.Lq + i] = uvec2(o, j);
			}
			return;
		}
	}
	if (lid == 0u) tau[bh * P.Lq + i] = uvec2(ordPre, idxPre);
}
