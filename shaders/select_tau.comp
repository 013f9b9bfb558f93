#version 450
// Selection plan, pass B (mode row, causal; internal/kern/doc.go): tau[bh][i] for the
// query row i at key position p = i + P.posOffset: the w-th best valid key of [0, p],
// or (0, 0) when [0, p] holds at most w valid keys (and for p < 0).
//
// With b = p / C, the w best valid keys of [0, p] lie in U_b, and an entry of U_b is a
// valid key of [0, p] exactly when idx <= p (S_b's keys all precede the block). One
// invocation handles R consecutive rows (spec constant 0). For its first row in a block
// it walks U_b from the top, counting entries with idx <= p up to the (w+1)-th, and
// keeps t, the position of the min(count, w)-th; the count is then raised to w + 1 when
// V_b (pass A's vcount) > w, as S_b keeps only w of those V_b keys. For the next row,
// p + 1, only key p + 1 joins (if valid): while count < w, t moves to it when it ranks
// lower (found by binary search in U_b); once count >= w, t moves up to the previous
// eligible entry when the new key ranks above U_b[t], else stays. t moves down only while count < w and
// up only after, so a run of R rows costs O(w + C + R log(w + C)), and a row O(w + C)
// at worst. Exact integer work: bit-identical to BuildPlanCPU.

layout(local_size_x = 64) in;

#include "dma_common.glsl"

layout(constant_id = 0) const uint R = 32; // rows per invocation

layout(std430, binding = 1) readonly buffer UBuf { uvec2 U[]; };        // [B*Hb][nb+1][ncap]
layout(std430, binding = 2) readonly buffer UCount { uint ucount[]; };  // [B*Hb][nb+1]
layout(std430, binding = 3) writeonly buffer Tau { uvec2 tau[]; };      // [B*Hb][Lq]
layout(std430, binding = 4) readonly buffer Ord { uint ord[]; };        // [B][Hb][Lk]
layout(std430, binding = 5) readonly buffer VCount { uint vcount[]; };  // [B*Hb][nb+1]: V_b

bool keyGT(uvec2 a, uvec2 b) { return a.x > b.x || (a.x == b.x && a.y > b.y); }

void main() {
	uint w = P.window, C = P.blockC, nb = P.nblocks, ncap = P.ncap, Lq = P.Lq, Lk = P.Lk;
	uint BH = P.B * P.Hb;
	uint chunks = (Lq + R - 1u) / R;
	uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
	for (uint bh = gl_WorkGroupID.y; bh < BH; bh += gl_NumWorkGroups.y) {
		uint uBase = bh * (nb + 1u) * ncap;
		uint ucBase = bh * (nb + 1u);
		uint ordBase = bh * Lk;
		for (uint c = gl_GlobalInvocationID.x; c < chunks; c += stride) {
			uint i1 = min(c * R + R, Lq);
			uint cur = 0xffffffffu; // block of the previous row
			uint ub = 0u, m = 0u, t = 0u, cnt = 0u;
			for (uint i = c * R; i < i1; i++) {
				int pi = int(i) + P.posOffset;
				if (pi < 0) {
					tau[bh * Lq + i] = uvec2(0u);
					continue;
				}
				uint p = uint(pi);
				uint blk = p / C;
				if (blk != cur) {
					cur = blk;
					ub = uBase + blk * ncap;
					m = ucount[ucBase + blk];
					cnt = 0u;
					t = 0u;
					for (uint q = 0u; q < m; q++) {
						if (U[ub + q].y <= p) {
							cnt++;
							if (cnt > w) break;
							t = q;
						}
					}
					// S_b keeps only w of the V_b valid keys before the block: when V_b > w
					// the prefix holds more than w valid keys, though the walk may count
					// only w (the w of S_b, before any valid key of the block).
					if (vcount[ucBase + blk] > w) cnt = w + 1u;
				} else {
					uint o = ord[ordBase + p]; // key p joins
					if (o != 0u) {
						uvec2 k = uvec2(o, p);
						if (cnt < w) {
							uint lo = 0u, hi = m; // position of k in U_b
							while (lo < hi) {
								uint mid = (lo + hi) >> 1;
								if (keyGT(U[ub + mid], k)) lo = mid + 1u; else hi = mid;
							}
							t = cnt == 0u ? lo : max(t, lo);
							cnt++;
						} else {
							cnt = w + 1u;
							if (keyGT(k, U[ub + t])) {
								do {
									t--;
								} while (U[ub + t].y > p);
							}
						}
					}
				}
				tau[bh * Lq + i] = cnt > w ? U[ub + t] : uvec2(0u);
			}
		}
	}
}
