#version 450
// Selection plan, pass A1 (internal/kern/doc.go): sorts every key block of every
// (batch, bias head) on its own, all of them in parallel. Workgroup g (looping over
// g < B*Hb*nb, g = bh * nb + b) sorts the n = min(C, Lk - b*C) keys of block b by
// kappa = (ord, idx) descending (bitonic network, padded virtually to a power of two),
// writes the cnt valid ones (ord != 0: they sort first) to the scratch region of
// U_{b+1}, U[bh][b+1][w, w + cnt), and cnt to bcount[bh][b]. Pass A2 (select_blocks)
// then only merges. That region (C entries, as ncap = w + C) is free until pass A2
// writes U_{b+1}, which happens only after it has merged block b into U_b; U_nb
// (S_final) gets at most w entries. Exact integer work.
//
// Variant "shared": the block lives in shared memory (spec constant BCAP >= C items,
// 8 BCAP bytes). Variant "global": it is sorted in place in its scratch region (whose
// entries [cnt, n) then hold the padded keys, which nobody reads).
//
// Work per block: O(C log^2 C), log2(C) (log2(C) + 1) / 2 barrier stages; the blocks
// run in parallel, so the depth of the pass is that of one block.
//
// variant: shared
// variant: global -DGLOBAL_SORT=1

layout(local_size_x = 256) in;

#include "dma_common.glsl"

layout(std430, binding = 1) readonly buffer Ord { uint ord[]; };        // [B][Hb][Lk]
// The plan's scratch buffer: vcount [B*Hb][nb+1] (pass A2 writes it), then
// bcount [B*Hb][nb], the number of valid keys of each block.
layout(std430, binding = 2) writeonly buffer Counts { uint counts[]; };
layout(std430, binding = 3) coherent buffer UBuf { uvec2 U[]; };       // [B*Hb][nb+1][ncap]

const uint WG = gl_WorkGroupSize.x;

bool keyGT(uvec2 a, uvec2 b) { return a.x > b.x || (a.x == b.x && a.y > b.y); }

#ifdef GLOBAL_SORT
uint bOff; // U offset of the block's scratch region
#define BGET(i) U[bOff + (i)]
#define BSET(i, v) U[bOff + (i)] = (v)
#else
layout(constant_id = 0) const uint BCAP = 64;
shared uvec2 sB[BCAP];
#define BGET(i) sB[i]
#define BSET(i, v) sB[i] = (v)
#endif

void sync() {
	memoryBarrierShared();
	memoryBarrierBuffer();
	barrier();
}

// Bitonic sort, descending, of block[0, n), virtually padded with -inf to N = 2^k >= n.
// Every comparator (a, l), a < l, moves the larger item to a (the first merge stage of
// each size compares mirrored positions), so a pad item never moves and comparators
// that reach past n can be skipped.
void sortBlock(uint n) {
	uint N = 1u;
	while (N < n) N <<= 1;
	uint lid = gl_LocalInvocationID.x;
	for (uint k = 2u; k <= N; k <<= 1) {
		for (uint j = k >> 1; j > 0u; j >>= 1) {
			for (uint t = lid; t < (N >> 1); t += WG) {
				uint a, l;
				if (j == (k >> 1)) { // mirrored compare within each run of k
					uint q = t & (j - 1u);
					uint base = (t - q) << 1;
					a = base + q;
					l = base + k - 1u - q;
				} else { // half-cleaner at distance j
					a = ((t & ~(j - 1u)) << 1) | (t & (j - 1u));
					l = a + j;
				}
				if (l < n) {
					uvec2 x = BGET(a), y = BGET(l);
					if (keyGT(y, x)) {
						BSET(a, y);
						BSET(l, x);
					}
				}
			}
			sync();
		}
	}
}

void main() {
	uint w = P.window, C = P.blockC, nb = P.nblocks, ncap = P.ncap, Lk = P.Lk;
	uint lid = gl_LocalInvocationID.x;
	uint BH = P.B * P.Hb;
	uint total = BH * nb;
	for (uint g = gl_WorkGroupID.x; g < total; g += gl_NumWorkGroups.x) {
		uint bh = g / nb, blk = g - bh * nb;
		uint lo = blk * C;
		uint n = min(C, Lk - lo);
		uint src = bh * Lk + lo;
		uint dst = (g + bh + 1u) * ncap + w; // U[bh][blk + 1][w]
#ifdef GLOBAL_SORT
		bOff = dst;
#endif
		for (uint i = lid; i < n; i += WG) BSET(i, uvec2(ord[src + i], lo + i));
		sync();
		sortBlock(n);
		// Valid keys (ord != 0) come first: count them.
		uint clo = 0u, chi = n;
		while (clo < chi) {
			uint mid = (clo + chi) >> 1;
			if (BGET(mid).x != 0u) clo = mid + 1u; else chi = mid;
		}
#ifndef GLOBAL_SORT
		for (uint i = lid; i < clo; i += WG) U[dst + i] = sB[i];
#endif
		if (lid == 0u) counts[BH * (nb + 1u) + g] = clo;
		sync(); // the next block reuses the storage
	}
}
