#version 450
// Decode selection carried from step to step (dma.KVCache): the threshold of a one-row
// step at key position p = P.Lk - 1, mode row, causal, from the previous step's threshold
// (over the first p keys, same window), instead of a radix select over all P.Lk keys.
// Same output as select_topw for that row (tau[bh], Lq = 1), bit-identical.
//
// tau_p is the w-th best key of [0, p] by kappa = (ord, idx). When [0, p-1] holds more
// than w keys, its best w are exactly the keys >= tau_{p-1}. Key p either ranks below
// tau_{p-1} (the best w do not change: tau_p = tau_{p-1}) or joins them and pushes out
// their worst, tau_{p-1}; then tau_p is the smallest kappa above tau_{p-1} in [0, p] (key p
// is one, so it exists). The caller guarantees the precondition (tau_{p-1} is a key).
//
// One dispatch, grid (slices, 1, B*Hb). Every workgroup reads tau_{p-1} (state) and key
// p. If key p ranks below, workgroup 0 copies tau_{p-1} to tau and all return: the usual
// case once the cache is much longer than w (random weights: key p joins with chance
// w / p), so a step costs one short dispatch. Otherwise each workgroup finds the smallest
// kappa above tau_{p-1} in its slice, and the last workgroup of the row to finish (a
// counter per row, which it resets to 0 for the next step) takes the smallest of the
// slices' and writes tau and the state.
//
// The slice length follows from P.Lk and the grid, so one recorded grid serves every
// length up to the one it was sized for. ord of (b, hb) starts at P.ordOff + (b * Hb +
// hb) * P.ordSL (P.ordSL 0: Lk).

layout(local_size_x = 256) in;

#include "dma_common.glsl"

layout(std430, binding = 1) readonly buffer Ord { uint ord[]; };
layout(std430, binding = 2) writeonly buffer Tau { uvec2 tau[]; };   // [B*Hb] (one row)
layout(std430, binding = 3) coherent buffer State { uvec2 state[]; };  // tau, at pc.stateOff + bh
// From pc.scratchOff: a counter per row, then a partial (uvec2) per (row, slice). The
// counters are zero before the first run; every run leaves them zero.
layout(std430, binding = 4) coherent buffer Scratch { uint scratch[]; };

layout(push_constant) uniform Push { uint stateOff, scratchOff; } pc;

const uint NT = 256u;
const uvec2 NONE = uvec2(0xffffffffu);  // above every key (idx < 2^32 - 1)

bool keyGT(uvec2 a, uvec2 b) { return a.x > b.x || (a.x == b.x && a.y > b.y); }
uvec2 keyMin(uvec2 a, uvec2 b) { return keyGT(a, b) ? b : a; }

shared uvec2 best[NT];
shared bool isLast;

// The smallest of every invocation's x, in best[0].
void reduceMin(uvec2 x) {
	uint lid = gl_LocalInvocationID.x;
	best[lid] = x;
	barrier();
	for (uint off = NT / 2u; off > 0u; off >>= 1u) {
		if (lid < off) best[lid] = keyMin(best[lid], best[lid + off]);
		barrier();
	}
}

void main() {
	uint s = gl_WorkGroupID.x, bh = gl_WorkGroupID.z, lid = gl_LocalInvocationID.x;
	uint nws = gl_NumWorkGroups.x, rows = gl_NumWorkGroups.z;
	uint p = P.Lk - 1u, base = ordRow(bh);
	uvec2 prev = state[pc.stateOff + bh];
	uvec2 key = uvec2(ord[base + p], p);
	if (key.x == 0u || !keyGT(key, prev)) {
		// Key p is not among the best w (or not a candidate): tau stays.
		if (s == 0u && lid == 0u) tau[bh] = prev;
		return;
	}
	uint sliceLen = ((P.Lk + nws - 1u) / nws + NT - 1u) / NT * NT;
	uint j0 = s * sliceLen, j1 = min(j0 + sliceLen, P.Lk);
	uvec2 m = NONE;
	for (uint j = j0 + lid; j < j1; j += NT) {
		uvec2 k = uvec2(ord[base + j], j);
		if (k.x != 0u && keyGT(k, prev)) m = keyMin(m, k);
	}
	reduceMin(m);
	uint part = pc.scratchOff + rows + (bh * nws + s) * 2u;
	if (lid == 0u) {
		scratch[part] = best[0].x;
		scratch[part + 1u] = best[0].y;
		memoryBarrierBuffer();  // the partial is visible before the count says so
		isLast = atomicAdd(scratch[pc.scratchOff + bh], 1u) == nws - 1u;
	}
	barrier();
	if (!isLast) return;
	memoryBarrierBuffer();
	uvec2 mm = NONE;
	for (uint q = lid; q < nws; q += NT) {
		uint at = pc.scratchOff + rows + (bh * nws + q) * 2u;
		mm = keyMin(mm, uvec2(scratch[at], scratch[at + 1u]));
	}
	reduceMin(mm);
	if (lid == 0u) {
		tau[bh] = best[0];
		state[pc.stateOff + bh] = best[0];
		scratch[pc.scratchOff + bh] = 0u;
	}
}
