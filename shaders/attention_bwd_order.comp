#version 450
// The order of the keys for the key pass of the deterministic backward
// (attention_bwd_kv.comp; host side: internal/kern/backward.go): permb[b][kvh][0, Lk)
// lists every key once, runs of 256 consecutive keys each sorted by the end of the rows
// that keep them (the largest over the query heads of the kv head; 0 for a key no row
// keeps), then by position. A key tile then holds keys kept by about the same rows, and
// the rows it loads are close to the pairs it computes: a tile of consecutive keys mixes
// keys evicted after w rows with the few kept for thousands. Only the speed depends on
// this order: each key's sums run in row order whatever tile holds it.
//
// One workgroup of 256 invocations per run (x), kv head (y) and batch (z): keyRows per
// key (a binary search over tau in mode row), then a bitonic sort in shared memory.
// No subgroup operation.

#include "dma_common.glsl"

layout(local_size_x = 256) in;

#include "attention_bwd_common.glsl"

shared uvec2 sk[256];

void main() {
	uint tid = gl_LocalInvocationID.x;
	bIdx = gl_WorkGroupID.z;
	uint kvh = gl_WorkGroupID.y;
	uint j = gl_WorkGroupID.x * 256u + tid;
	uint end = 0u;
	if (j < P.Lk) {
		// With Hb = Hkv every head of the group reads one plan.
		uint heads = P.Hb == P.H ? P.G : 1u;
		for (uint g = 0u; g < heads; g++) {
			uint hb = P.Hb == P.H ? kvh * P.G + g : kvh;
			uint lo, hi, o;
			keyRows(j, bIdx * P.Hb + hb, lo, hi, o);
			if (hi > lo) end = max(end, hi);
		}
	}
	sk[tid] = j < P.Lk ? uvec2(end, j) : uvec2(0xffffffffu);  // past Lk: last
	barrier();
	// Ascending by (end, j); all entries distinct.
	for (uint k = 2u; k <= 256u; k <<= 1) {
		for (uint s = k >> 1; s > 0u; s >>= 1) {
			uint o = tid ^ s;
			if (o > tid) {
				uvec2 a = sk[tid], b = sk[o];
				bool gt = a.x > b.x || (a.x == b.x && a.y > b.y);
				if (gt == ((tid & k) == 0u)) {
					sk[tid] = b;
					sk[o] = a;
				}
			}
			barrier();
		}
	}
	if (j < P.Lk) permb[(bIdx * P.Hkv + kvh) * P.Lk + j] = sk[tid].y;
}
