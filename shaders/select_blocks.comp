#version 450
// Selection plan, pass A (internal/kern/doc.go): one workgroup per (batch, bias head)
// walks the nb = P.nblocks key blocks of C = P.blockC keys in order. Step b sorts the
// block's keys by kappa = (ord, idx) descending (bitonic network, padded virtually to a
// power of two), merges them with S_b (sorted, from step b-1) by ranking every item in
// the other list with a binary search (all kappas are distinct, so the ranks form a
// permutation), and writes U_b and ucount[b]; S_{b+1} is the first min(w, ucount[b])
// entries of U_b. Keys with ord 0 (padded) sort last and are dropped. Finally
// U_nb = S_final. It also writes vcount[b] = V_b, the number of valid keys before
// block b (b = 0..nb), into the plan's scratch buffer. Exact integer work: the result
// is bit-identical to BuildPlanCPU.
//
// Variant "shared": S_b (spec constant SCAP >= w items) and the block (BCAP >= C items)
// live in shared memory, 8 (SCAP + BCAP) bytes. Variant "global" keeps nothing in shared
// memory: S_b is read in place from U_{b-1} and block b is sorted in the region of
// U_{b+1}, not yet written (ncap >= C entries; for the last block the region of U_nb,
// written only after the sort). Neither needs a subgroup operation or sort scratch.
//
// Work per (batch, head), n = Lk: nb sorts of C items, O(n log^2 C), and nb merges of
// w + C items, O(n (1 + w/C) log(w + C)). Barriers: O(nb log^2 C).
//
// variant: shared
// variant: global -DGLOBAL_SORT=1

layout(local_size_x = 256) in;

#include "dma_common.glsl"

layout(std430, binding = 1) readonly buffer Ord { uint ord[]; };       // [B][Hb][Lk]
layout(std430, binding = 2) coherent buffer UBuf { uvec2 U[]; };       // [B*Hb][nb+1][ncap]
layout(std430, binding = 3) writeonly buffer UCount { uint ucount[]; }; // [B*Hb][nb+1]
// vcount[bh][b] = V_b, the number of valid keys in [0, b*C), b = 0..nb (the plan's
// scratch buffer). select_tau needs it: S_b holds min(w, V_b) keys, and whether the
// prefix holds more than w valid keys cannot be read from U_b when V_b >= w.
layout(std430, binding = 4) writeonly buffer VCount { uint vcount[]; }; // [B*Hb][nb+1]

const uint WG = gl_WorkGroupSize.x;

bool keyGT(uvec2 a, uvec2 b) { return a.x > b.x || (a.x == b.x && a.y > b.y); }

#ifdef GLOBAL_SORT
uint sOff, bOff; // U offsets of S_b (U_{b-1}) and of the block being sorted (U_{b+1})
#define SGET(i) U[sOff + (i)]
#define BGET(i) U[bOff + (i)]
#define BSET(i, v) U[bOff + (i)] = (v)
#else
layout(constant_id = 0) const uint SCAP = 64;
layout(constant_id = 1) const uint BCAP = 64;
shared uvec2 sS[SCAP];
shared uvec2 sB[BCAP];
#define SGET(i) sS[i]
#define BGET(i) sB[i]
#define BSET(i, v) sB[i] = (v)
#endif

void sync() {
	memoryBarrierShared();
	memoryBarrierBuffer();
	barrier();
}

// Number of entries of S[0, len) (sorted descending) that rank above x.
uint aboveS(uvec2 x, uint len) {
	uint lo = 0u, hi = len;
	while (lo < hi) {
		uint mid = (lo + hi) >> 1;
		if (keyGT(SGET(mid), x)) lo = mid + 1u; else hi = mid;
	}
	return lo;
}

// Number of entries of the sorted block [0, len) that rank above x.
uint aboveB(uvec2 x, uint len) {
	uint lo = 0u, hi = len;
	while (lo < hi) {
		uint mid = (lo + hi) >> 1;
		if (keyGT(BGET(mid), x)) lo = mid + 1u; else hi = mid;
	}
	return lo;
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
	for (uint bh = gl_WorkGroupID.x; bh < BH; bh += gl_NumWorkGroups.x) {
		uint ordBase = bh * Lk;
		uint uBase = bh * (nb + 1u) * ncap;
		uint ucBase = bh * (nb + 1u);
		uint s = 0u; // |S_b|
		uint v = 0u; // V_b
		for (uint blk = 0u; blk < nb; blk++) {
			uint lo = blk * C;
			uint n = min(C, Lk - lo);
			uint ub = uBase + blk * ncap;
#ifdef GLOBAL_SORT
			sOff = blk > 0u ? ub - ncap : ub;
			bOff = ub + ncap;
#endif
			for (uint i = lid; i < n; i += WG) BSET(i, uvec2(ord[ordBase + lo + i], lo + i));
			sync();
			sortBlock(n);
			// Valid keys (ord != 0) come first: count them.
			uint clo = 0u, chi = n;
			while (clo < chi) {
				uint mid = (clo + chi) >> 1;
				if (BGET(mid).x != 0u) clo = mid + 1u; else chi = mid;
			}
			uint cnt = clo;
			for (uint i = lid; i < s; i += WG) {
				uvec2 x = SGET(i);
				U[ub + i + aboveB(x, cnt)] = x;
			}
			for (uint i = lid; i < cnt; i += WG) {
				uvec2 y = BGET(i);
				U[ub + i + aboveS(y, s)] = y;
			}
			uint total = s + cnt;
			if (lid == 0u) {
				ucount[ucBase + blk] = total;
				vcount[ucBase + blk] = v;
			}
			v += cnt;
			sync();
			s = min(w, total);
#ifndef GLOBAL_SORT
			for (uint i = lid; i < s; i += WG) sS[i] = U[ub + i];
			sync();
#endif
		}
		// U_nb = S_final.
		if (nb > 0u) {
			uint uf = uBase + nb * ncap;
			for (uint i = lid; i < s; i += WG) {
#ifdef GLOBAL_SORT
				U[uf + i] = U[uf - ncap + i];
#else
				U[uf + i] = sS[i];
#endif
			}
		}
		if (lid == 0u) {
			ucount[ucBase + nb] = s;
			vcount[ucBase + nb] = v;
		}
		sync();
	}
}
