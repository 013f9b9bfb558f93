#version 450
#extension GL_EXT_control_flow_attributes : require
// Selection plan, pass A2 (internal/kern/doc.go): one workgroup per (batch, bias head)
// walks the nb = P.nblocks key blocks of C = P.blockC keys in order. Pass A1
// (select_sort) has already sorted every block: U[bh][b+1][w, w + cnt_b) holds the
// cnt_b = bcount[bh][b] valid keys of block b by kappa = (ord, idx) descending. Step b
// merges them with S_b (sorted, from step b-1) along the merge path: invocation t takes
// the t-th run of ceil(|U_b| / WG) output positions, finds where the run starts in both
// lists with one binary search on its diagonal (all kappas are distinct, so the split is
// unique) and merges the run sequentially. It writes U_b and ucount[b], and the first
// min(w, |U_b|) merged entries are S_{b+1}. Finally U_nb = S_final. It also writes
// vcount[b] = V_b = cnt_0 + ... + cnt_{b-1}, b = 0..nb. Exact integer work: the result
// is bit-identical to BuildPlanCPU.
//
// Variant "shared": S_b and S_{b+1} (two buffers of spec constant SCAP >= w items) and
// the sorted block (BCAP >= C items) live in shared memory, 8 (2 SCAP + BCAP) bytes; the
// merge writes S_{b+1} straight into the other S buffer. Each invocation loads its share
// of block b+1 into registers before merging block b, and stores it to shared memory
// after; 2 barriers per step. Variant "global" keeps nothing in shared memory: S_b is
// read in place from U_{b-1} and the block from its scratch region in U_{b+1}, which
// step b+1 overwrites only after the barrier; 1 barrier per step.
//
// Work per (batch, head), n = Lk: nb merges of at most w + C items, each
// O((w + C) / WG + log(w + C)) deep, O(n (1 + w/C) + nb WG log(w + C)) in all.
//
// variant: shared
// variant: global -DGLOBAL_SORT=1

layout(local_size_x = 256) in;

#include "dma_common.glsl"

layout(std430, binding = 1) coherent buffer UBuf { uvec2 U[]; };       // [B*Hb][nb+1][ncap]
layout(std430, binding = 2) writeonly buffer UCount { uint ucount[]; }; // [B*Hb][nb+1]
// The plan's scratch buffer: vcount [B*Hb][nb+1] (written here;
// V_b, the number of valid keys in [0, b*C). select_tau needs it: S_b holds min(w, V_b)
// keys, and whether the prefix holds more than w valid keys cannot be read from U_b when
// V_b >= w), then bcount [B*Hb][nb] (from select_sort).
layout(std430, binding = 3) buffer Counts { uint counts[]; };

const uint WG = gl_WorkGroupSize.x;

bool keyGT(uvec2 a, uvec2 b) { return a.x > b.x || (a.x == b.x && a.y > b.y); }

#ifdef GLOBAL_SORT
#define AGET(i) U[aOff + (i)]
#define BGET(i) U[bOff + (i)]
#else
layout(constant_id = 0) const uint SCAP = 64;
layout(constant_id = 1) const uint BCAP = 64;
shared uvec2 sS[2u * SCAP]; // S_b at [cur * SCAP, +SCAP), S_{b+1} in the other half
shared uvec2 sB[BCAP];
#define AGET(i) sS[aOff + (i)]
#define BGET(i) sB[i]
// Items of the next block each invocation holds in registers across the merge.
const uint PF = 8u;
#endif

void sync() {
	memoryBarrierShared();
	memoryBarrierBuffer();
	barrier();
}

// U[ub, ub + s + cnt) = merge of A[0, s) (S_b) and B[0, cnt) (the sorted block), both
// descending and holding valid keys only; the shared variant also writes the first w
// entries to sS[nOff...]. (0, 0) ranks below every valid key: it stands for an exhausted
// list.
void mergeStep(uint aOff, uint bOff, uint nOff, uint s, uint cnt, uint ub, uint w) {
	uint total = s + cnt;
	uint per = (total + WG - 1u) / WG;
	uint d = min(gl_LocalInvocationID.x * per, total);
	uint dEnd = min(d + per, total);
	if (d >= dEnd) return;
	// Merge path: ia = the number of A items among the first d outputs.
	uint lo = d > cnt ? d - cnt : 0u, hi = min(d, s);
	while (lo < hi) {
		uint mid = (lo + hi) >> 1;
		if (keyGT(AGET(mid), BGET(d - 1u - mid))) lo = mid + 1u; else hi = mid;
	}
	uint ia = lo, jb = d - lo;
	uvec2 a = ia < s ? AGET(ia) : uvec2(0u);
	uvec2 b = jb < cnt ? BGET(jb) : uvec2(0u);
	for (uint pos = d; pos < dEnd; pos++) {
		uvec2 x;
		if (keyGT(a, b)) {
			x = a;
			ia++;
			a = ia < s ? AGET(ia) : uvec2(0u);
		} else {
			x = b;
			jb++;
			b = jb < cnt ? BGET(jb) : uvec2(0u);
		}
		U[ub + pos] = x;
#ifndef GLOBAL_SORT
		if (pos < w) sS[nOff + pos] = x;
#endif
	}
}

void main() {
	uint w = P.window, C = P.blockC, nb = P.nblocks, ncap = P.ncap;
	uint lid = gl_LocalInvocationID.x;
	uint BH = P.B * P.Hb;
	for (uint bh = gl_WorkGroupID.x; bh < BH; bh += gl_NumWorkGroups.x) {
		uint uBase = bh * (nb + 1u) * ncap;
		uint vBase = bh * (nb + 1u);          // vcount and ucount
		uint cBase = BH * (nb + 1u) + bh * nb; // bcount
		uint sBase = uBase + ncap + w;        // sorted block 0; block b at + b * ncap
		uint s = 0u; // |S_b|
		uint v = 0u; // V_b
#ifdef GLOBAL_SORT
		for (uint blk = 0u; blk < nb; blk++) {
			uint ub = uBase + blk * ncap;
			uint cnt = counts[cBase + blk];
			mergeStep(blk > 0u ? ub - ncap : ub, sBase + blk * ncap, 0u, s, cnt, ub, w);
			if (lid == 0u) {
				ucount[vBase + blk] = s + cnt;
				counts[vBase + blk] = v;
			}
			v += cnt;
			s = min(w, s + cnt);
			sync(); // U_b is S_{b+1}
		}
		uint last = uBase + (nb - 1u) * ncap; // S_final, read in place
#else
		uint cnt = counts[cBase];
		for (uint i = lid; i < cnt; i += WG) sB[i] = U[sBase + i];
		sync();
		uint cur = 0u;
		for (uint blk = 0u; blk < nb; blk++) {
			uint ub = uBase + blk * ncap;
			bool more = blk + 1u < nb;
			uint next = sBase + (blk + 1u) * ncap;
			uint cnt1 = more ? counts[cBase + blk + 1u] : 0u;
			// Prefetch block blk+1 (up to C entries, past cnt1 unused) into registers.
			uvec2 pf[PF];
			[[unroll]] for (uint k = 0u; k < PF; k++) {
				uint i = lid + k * WG;
				pf[k] = uvec2(0u);
				if (more && i < C) pf[k] = U[next + i];
			}
			mergeStep(cur * SCAP, 0u, (cur ^ 1u) * SCAP, s, cnt, ub, w);
			if (lid == 0u) {
				ucount[vBase + blk] = s + cnt;
				counts[vBase + blk] = v;
			}
			v += cnt;
			s = min(w, s + cnt);
			cur ^= 1u;
			sync(); // the merge is done with sB and S_b
			[[unroll]] for (uint k = 0u; k < PF; k++) {
				uint i = lid + k * WG;
				if (i < cnt1) sB[i] = pf[k];
			}
			for (uint i = lid + PF * WG; i < cnt1; i += WG) sB[i] = U[next + i];
			cnt = cnt1;
			sync(); // block blk+1 and S_{b+1} are in place
		}
#endif
		// U_nb = S_final.
		uint uf = uBase + nb * ncap;
		for (uint i = lid; i < s; i += WG) {
#ifdef GLOBAL_SORT
			U[uf + i] = U[last + i];
#else
			U[uf + i] = sS[cur * SCAP + i];
#endif
		}
		if (lid == 0u) {
			ucount[vBase + nb] = s;
			counts[vBase + nb] = v;
		}
		sync();
	}
}
