#version 450
// Decode selection: the thresholds of mode row, causal, for a few query rows, straight
// from ord, without the block lists (the KV-cache decode path, dma.KVCache). Same
// output contract as select_tau (internal/kern/doc.go): tau[bh][i] for query row i at key
// position p = i + P.posOffset is the w-th best valid key of [0, p] by kappa = (ord, idx),
// or (0, 0) when [0, p] holds at most w valid keys (and for p < 0).
//
// A radix select over the 64-bit kappa = ord << 32 | idx of the valid keys of [0, p],
// spread over many workgroups (a decode step has a few rows and a handful of bias heads,
// so one workgroup per row would leave the GPU idle): six digits, of 11, 11 and 10 bits
// of ord then of idx, each taking two dispatches:
//   variant hist, grid (slices, rows, B*Hb): each workgroup histograms the keys of its
//     slice of [0, p] that match the digits chosen so far (shared memory), then adds its
//     bins to the row's global histogram.
//   variant choose, grid (rows, B*Hb): picks the digit holding the k-th largest key,
//     k = w less the keys above it, fixes it in the row's state and clears the bins.
// When a digit holds a single candidate it is the answer, whatever digits remain: the
// next hist dispatch finds it and writes tau (phase SINGLE), and later dispatches of the
// row return at once (phase DONE): usually after two or three digits of ord. The last
// choose has every digit fixed and writes the key itself. Exact, ties falling to the
// later key as kappa orders them; at most 6 (p + 1) reads per row, all coalesced.
//
// The slice length follows from P.Lk and the grid, so one recorded grid serves every
// length up to the one it was sized for (repeated decode steps reuse it). ord of (b, hb)
// starts at P.ordOff + (b * Hb + hb) * P.ordSL (P.ordSL 0: Lk).
//
// variant: hist -DHIST=1
// variant: choose

layout(local_size_x = 256) in;

#include "dma_common.glsl"

layout(std430, binding = 1) readonly buffer Ord { uint ord[]; };
layout(std430, binding = 2) buffer Tau { uvec2 tau[]; };  // [B*Hb][Lq]
layout(std430, binding = 3) buffer Sel { uint sel[]; };   // [B*Hb][Lq] records, zeroed before pass 0

layout(push_constant) uniform Push { uint pass; } pc;

// A row's record: STATE words, then NBINS bins of the current digit's histogram.
const uint NBINS = 2048u, STATE = 8u, NPASS = 6u;
const uint ST_PHASE = 0u, ST_ABOVE = 1u, ST_ORDPRE = 2u, ST_ORDMASK = 3u, ST_IDXPRE = 4u, ST_IDXMASK = 5u;
const uint ACTIVE = 0u, SINGLE = 1u, DONE = 2u;

uint digitShift(uint t) { return t % 3u == 0u ? 21u : (t % 3u == 1u ? 10u : 0u); }
uint digitMask(uint t) { return t % 3u == 2u ? 1023u : 2047u; }

shared uint hist[NBINS];

#ifdef HIST
void main() {
	uint s = gl_WorkGroupID.x, i = gl_WorkGroupID.y, bh = gl_WorkGroupID.z, lid = gl_LocalInvocationID.x;
	uint rec = (bh * P.Lq + i) * (STATE + NBINS);
	int pi = int(i) + P.posOffset;
	uint phase = sel[rec + ST_PHASE];
	if (pi < 0 || phase == DONE) return;
	uint p = min(uint(pi), P.Lk - 1u);
	uint nws = gl_NumWorkGroups.x;
	uint sliceLen = ((P.Lk + nws - 1u) / nws + 255u) & ~255u;
	uint j0 = s * sliceLen;
	if (j0 > p) return;
	uint j1 = min(j0 + sliceLen, p + 1u);
	uint ordPre = sel[rec + ST_ORDPRE], ordMask = sel[rec + ST_ORDMASK];
	uint idxPre = sel[rec + ST_IDXPRE], idxMask = sel[rec + ST_IDXMASK];
	uint base = ordRow(bh);
	if (phase == SINGLE) {
		// The one key left matching the prefix is the threshold.
		for (uint j = j0 + lid; j < j1; j += gl_WorkGroupSize.x) {
			uint o = ord[base + j];
			if (o != 0u && (o & ordMask) == ordPre && (j & idxMask) == idxPre) tau[bh * P.Lq + i] = uvec2(o, j);
		}
		return;
	}
	for (uint d = lid; d < NBINS; d += gl_WorkGroupSize.x) hist[d] = 0u;
	barrier();
	uint shift = digitShift(pc.pass), dmask = digitMask(pc.pass);
	for (uint j = j0 + lid; j < j1; j += gl_WorkGroupSize.x) {
		uint o = ord[base + j];
		if (o == 0u || (o & ordMask) != ordPre || (j & idxMask) != idxPre) continue;
		atomicAdd(hist[((pc.pass < 3u ? o : j) >> shift) & dmask], 1u);
	}
	barrier();
	for (uint d = lid; d < NBINS; d += gl_WorkGroupSize.x)
		if (hist[d] != 0u) atomicAdd(sel[rec + STATE + d], hist[d]);
}
#else
// Per invocation t: the bins [8t, 8t + 8); suffix sums of their totals over t.
const uint PER = NBINS / 256u;
shared uint suffix[256];

void main() {
	uint i = gl_WorkGroupID.x, bh = gl_WorkGroupID.y, lid = gl_LocalInvocationID.x;
	uint rec = (bh * P.Lq + i) * (STATE + NBINS);
	uint phase = sel[rec + ST_PHASE];
	if (phase == DONE) return;
	if (phase == SINGLE) {
		// The hist dispatch just before found the key and wrote tau.
		if (lid == 0u) sel[rec + ST_PHASE] = DONE;
		return;
	}
	uint c[PER];
	uint mine = 0u;
	for (uint x = 0u; x < PER; x++) {
		c[x] = sel[rec + STATE + lid * PER + x];
		mine += c[x];
	}
	// Inclusive suffix sums over the invocations (Hillis-Steele in shared memory).
	suffix[lid] = mine;
	barrier();
	for (uint off = 1u; off < 256u; off <<= 1u) {
		uint add = lid + off < 256u ? suffix[lid + off] : 0u;
		barrier();
		suffix[lid] += add;
		barrier();
	}
	uint total = suffix[0];
	uint after = suffix[lid] - mine;  // candidates in the bins above mine
	uint above = sel[rec + ST_ABOVE];
	uint k = P.window - above;  // rank of the wanted key among the candidates
	barrier();  // every record read is done before the bins are cleared
	for (uint x = 0u; x < PER; x++) sel[rec + STATE + lid * PER + x] = 0u;
	int pi = int(i) + P.posOffset;
	if (pc.pass == 0u && (pi < 0 || total <= k)) {
		// At most w valid keys in [0, p]: every one is kept.
		if (lid == 0u) {
			tau[bh * P.Lq + i] = uvec2(0u);
			sel[rec + ST_PHASE] = DONE;
		}
		return;
	}
	if (!(after < k && k <= after + mine)) return;
	// This invocation's bins hold the k-th largest: walk them from the top.
	uint d = PER - 1u, run = after;
	for (; d > 0u; d--) {
		if (run + c[d] >= k) break;
		run += c[d];
	}
	uint digit = lid * PER + d, shift = digitShift(pc.pass), dmask = digitMask(pc.pass);
	if (pc.pass < 3u) {
		sel[rec + ST_ORDPRE] |= digit << shift;
		sel[rec + ST_ORDMASK] |= dmask << shift;
	} else {
		sel[rec + ST_IDXPRE] |= digit << shift;
		sel[rec + ST_IDXMASK] |= dmask << shift;
	}
	sel[rec + ST_ABOVE] = above + run;
	if (pc.pass == NPASS - 1u) {
		// Every digit fixed: the key itself.
		tau[bh * P.Lq + i] = uvec2(sel[rec + ST_ORDPRE], sel[rec + ST_IDXPRE]);
		sel[rec + ST_PHASE] = DONE;
	} else if (c[d] == 1u) {
		sel[rec + ST_PHASE] = SINGLE;
	}
}
#endif
