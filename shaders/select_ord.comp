#version 450
// Selection plan, pass 0 (internal/kern/doc.go): ord[b][hb][j] = the order-preserving
// bits of the float32 weight delta[b][hb][j] (kern.Ord), or 0 for a key that the key
// padding mask (uint8 [B][Lk], nonzero = valid) removes.
//
// The weight is read as raw bits and mapped with integer operations only, so no float
// compare can flush a denormal to zero or fold -0: the result is bit-identical to
// kern.Ord on every device. Grid-stride loop: any number of workgroups works.

layout(local_size_x = 256) in;

#include "dma_common.glsl"

layout(std430, binding = 1) readonly buffer Delta { uint deltaBits[]; }; // float32 [B][Hb][Lk]
layout(std430, binding = 2) readonly buffer Pad { uint pad[]; };         // uint8 [B][Lk], 4 per word
layout(std430, binding = 3) writeonly buffer Ord { uint ordOut[]; };    // [B][Hb][Lk]

void main() {
	uint n = P.B * P.Hb * P.Lk;
	uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
	for (uint e = gl_GlobalInvocationID.x; e < n; e += stride) {
		uint o = ordBits(deltaBits[e]);
		if (P.keyPadding != 0u) {
			uint j = e % P.Lk;
			uint b = e / (P.Hb * P.Lk);
			uint k = b * P.Lk + j;
			if (((pad[k >> 2] >> (8u * (k & 3u))) & 0xffu) == 0u) o = 0u;
		}
		ordOut[e] = o;
	}
}
