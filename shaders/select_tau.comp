#version 450
// Selection plan, pass B (mode row, causal; internal/kern/doc.go): tau[bh][i] for the
// query row i at key position p = i + P.posOffset: the w-th best valid key of [0, p],
// or (0, 0) when [0, p] holds at most w valid keys (and for p < 0).
//
// One workgroup of R = 64 invocations handles the R key positions [c, c + R) of a chunk
// (c a multiple of R, so the chunk lies in one block b = c / C, C being a multiple of 64),
// invocation t the row at position c + t, if there is one. An entry of U_b is a valid key
// of [0, p] exactly when idx <= p (S_b's keys all precede the block), so:
//
//  1. Walk. E0, the entries of U_b with idx <= c, are counted from the top of U_b in
//     tiles of K*R = 256 entries (entry tile + k*R + t read by invocation t: K independent
//     loads each, and the next tile's loads are issued before the current tile is
//     counted). The eligibility bits of a tile are gathered in shared memory (no subgroup
//     operation: any subgroup size), which gives every entry its rank in E0; the entries
//     of ranks base+1 .. w, base = max(w - R, 0), are kept in shared memory (W). The walk
//     stops after the tile where the count n0 exceeds w, or at the end of U_b: at most
//     ucount <= w + C entries, with 2 barriers and one round of loads per tile.
//  2. Rows. Row c + r adds N_r, the valid keys of (c, c + r] (r < R of them), to E0, so
//     its threshold, the w-th of E0 u N_r, is either a key of N_r or an entry of E0 of
//     rank w - |N_r| .. w, which W holds since |N_r| < R. A candidate x (invocation t
//     has two: W's entry t, and key c + t from row t on) ranks a(x) + #{keys of N_r
//     at or above x} in row r, with a(x) = #{E0 >= x}: exact for W's entries, and
//     base + #{W > x} for a key x, too large only when x ranks above all of W, where
//     that sum stays below w anyway. One pass over the chunk's keys, in order, gives a
//     candidate its rank in every row, and it claims the rows where that rank is w (at
//     most one claimer per row). Row r holds n0 + |N_r| valid keys, or more than w
//     whenever V_b (pass A's vcount) > w, since S_b keeps only w of those V_b keys; with
//     at most w of them, its tau is (0, 0), whatever claimed it.
//
// Work: O(w + C) loads per chunk and O(R) shared-memory steps per row, i.e. O(w + C)
// per row at worst and O(Lq (w + C) / R + Lq R) in all. Exact integer work: bit-identical
// to BuildPlanCPU.

layout(local_size_x = 64) in;

#include "dma_common.glsl"

const uint R = 64u;       // rows (key positions) per workgroup = invocations
const uint K = 4u;        // U_b entries per invocation and tile
const uint TILE = K * R;  // entries per tile
const uint NMASK = R / 8u; // words of sMask: 8 invocations of K = 4 bits each

layout(std430, binding = 1) readonly buffer UBuf { uvec2 U[]; };        // [B*Hb][nb+1][ncap]
layout(std430, binding = 2) readonly buffer UCount { uint ucount[]; };  // [B*Hb][nb+1]
layout(std430, binding = 3) writeonly buffer Tau { uvec2 tau[]; };      // [B*Hb][Lq]
layout(std430, binding = 4) readonly buffer Ord { uint ord[]; };        // [B][Hb][Lk]
layout(std430, binding = 5) readonly buffer VCount { uint vcount[]; };  // [B*Hb][nb+1]: V_b

shared uint sFlag[R];     // per tile: bit k of invocation t: entry tile + k*R + t is in E0
shared uint sMask[NMASK]; // word g: the bits of invocations 8g .. 8g+7, 4 bits apiece
shared uvec2 sW[R];       // W: the entries of E0 of ranks base+1 .. min(w, n0)
shared uvec2 sN[R];       // key c + t (ord 0: none, or t = 0)
shared uvec2 sTau[R];     // the candidate that claims row c + t

bool keyGT(uvec2 a, uvec2 b) { return a.x > b.x || (a.x == b.x && a.y > b.y); }

void main() {
	uint w = P.window, C = P.blockC, nb = P.nblocks, ncap = P.ncap, Lq = P.Lq, Lk = P.Lk;
	uint t = gl_LocalInvocationID.x;
	uint BH = P.B * P.Hb;
	int pFirst = max(P.posOffset, 0);           // position of the first row with p >= 0
	int pLast = P.posOffset + int(Lq) - 1;      // position of the last row
	uint chunks = pLast >= pFirst ? uint(pLast) / R - uint(pFirst) / R + 1u : 0u;
	uint nNeg = uint(clamp(-P.posOffset, 0, int(Lq))); // rows with p < 0
	uint base = w > R ? w - R : 0u;
	for (uint bh = gl_WorkGroupID.y; bh < BH; bh += gl_NumWorkGroups.y) {
		uint uBase = bh * (nb + 1u) * ncap;
		uint ucBase = bh * (nb + 1u);
		uint ordBase = bh * Lk;
		for (uint i = gl_WorkGroupID.x * R + t; i < nNeg; i += gl_NumWorkGroups.x * R) {
			tau[bh * Lq + i] = uvec2(0u);
		}
		for (uint ci = gl_WorkGroupID.x; ci < chunks; ci += gl_NumWorkGroups.x) {
			uint c = (uint(pFirst) / R + ci) * R;
			uint blk = c / C;
			uint ub = uBase + blk * ncap;
			uint m = ucount[ucBase + blk];
			bool bigV = vcount[ucBase + blk] > w;
			uint p = c + t;
			// Previous chunk's readers of sN, sW and sTau are past its last barrier.
			sN[t] = uvec2(t > 0u && p < Lk ? ord[ordBase + p] : 0u, p);

			// 1. Walk. Entries past m read as idx 0xffffffff: never in E0.
			uvec2 cur[K], nxt[K];
			for (uint k = 0u; k < K; k++) {
				uint q = k * R + t;
				cur[k] = q < m ? U[ub + q] : uvec2(0u, 0xffffffffu);
			}
			uint n0 = 0u; // entries of E0 in the tiles so far
			for (uint tile = 0u;; tile += TILE) {
				bool more = tile + TILE < m; // uniform
				if (more) {
					for (uint k = 0u; k < K; k++) {
						uint q = tile + TILE + k * R + t;
						nxt[k] = q < m ? U[ub + q] : uvec2(0u, 0xffffffffu);
					}
				}
				uint f = 0u;
				for (uint k = 0u; k < K; k++) {
					if (cur[k].y <= c) f |= 1u << k;
				}
				sFlag[t] = f;
				barrier();
				if (t < NMASK) {
					uint mk = 0u;
					for (uint j = 0u; j < 8u; j++) mk |= sFlag[8u * t + j] << (4u * j);
					sMask[t] = mk;
				}
				barrier();
				uint tot = 0u; // E0's entries in the tile
				for (uint g = 0u; g < NMASK; g++) tot += bitCount(sMask[g]);
				if (n0 + tot > base && n0 < w) { // uniform: the tile holds ranks of W
					// Rank in E0 of entry tile + k*R + t: n0, the tile's entries of
					// columns k' < k, those of column k before invocation t, plus one.
					uint g0 = t >> 3;
					uint low = (1u << (4u * (t & 7u))) - 1u; // invocations 8 g0 .. t-1
					uint rank = n0 + 1u;
					for (uint k = 0u; k < K; k++) {
						uint col = 0x11111111u << k;
						uint below = 0u, after = 0u;
						for (uint g = 0u; g < NMASK; g++) {
							uint x = sMask[g] & col;
							if (g == g0) {
								below += bitCount(x & low);
								after += bitCount(x & ~low);
							} else if (g < g0) {
								below += bitCount(x);
							} else {
								after += bitCount(x);
							}
						}
						rank += below;
						if ((f & (1u << k)) != 0u && rank > base && rank <= w) sW[rank - base - 1u] = cur[k];
						rank += after;
					}
				}
				n0 += tot;
				// sFlag is next written after this barrier's readers, sMask after the
				// next tile's first barrier: no third barrier.
				if (n0 > w || !more) break;
				for (uint k = 0u; k < K; k++) cur[k] = nxt[k];
			}
			barrier(); // sW and sN complete

			// 2. Rows. Candidate A: W's entry t, rank base + 1 + t in E0.
			uint top = min(w, n0);
			uint nW = top > base ? top - base : 0u;
			bool hasA = t < nW;
			uvec2 xA = hasA ? sW[t] : uvec2(0u);
			uint rA = base + 1u + t;
			// Candidate B: key c + t, joining at row t; rB starts at a(x), #{E0 > x}.
			uvec2 xB = sN[t];
			bool hasB = xB.x != 0u;
			// Every key of the chunk follows E0's keys: on equal ord it ranks above them.
			uint lo = 0u;
			if (hasB) {
				uint hi = nW;
				while (lo < hi) {
					uint mid = (lo + hi) >> 1;
					if (sW[mid].x > xB.x) lo = mid + 1u; else hi = mid;
				}
			}
			uint rB = base + lo;
			// No claim without a candidate: ranks that never reach w.
			if (!hasA) rA = 0x80000000u;
			if (!hasB) rB = 0x80000000u;
			uint nv = 0u; // |N_t|
			for (uint r = 0u; r < R; r++) {
				// Key c + r against the candidates, by ord (a padded key, ord 0, ranks
				// below every valid one); against key c + t it ranks above on equal ord
				// when r > t, and counts itself for r = t.
				uint o = sN[r].x;
				if (o >= xA.x) rA++;
				if (r < t ? o > xB.x : o >= xB.x) rB++;
				if (o != 0u && r <= t) nv++;
				if (rA == w) sTau[r] = xA;
				if (rB == w && r >= t) sTau[r] = xB;
			}
			barrier(); // sTau complete
			if (int(p) >= pFirst && int(p) <= pLast) {
				tau[bh * Lq + uint(int(p) - P.posOffset)] = bigV || n0 + nv > w ? sTau[t] : uvec2(0u);
			}
		}
	}
}
