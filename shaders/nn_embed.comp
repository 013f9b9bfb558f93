#version 450
// Embedding lookup: Y[t, c] (float32) = table[ids[t], c], table [V, C] of dtype TT. The
// host checks the ids; an id out of range reads row 0.

#include "nn_common.glsl"

layout(local_size_x = 256) in;
layout(constant_id = 0) const uint TT = 0;

layout(std430, binding = 0) readonly buffer BufIds { uint ids[]; };
layout(std430, binding = 1) readonly buffer BufT { uint tab[]; };
layout(std430, binding = 2) writeonly buffer BufY { float y[]; };

layout(push_constant) uniform Push { uint T, C, V; } pc;

void main() {
	uint t = gl_WorkGroupID.y;
	uint c = gl_GlobalInvocationID.x;
	if (t >= pc.T || c >= pc.C) return;
	uint id = ids[t];
	if (id >= pc.V) id = 0u;
	uint e = id * pc.C + c;
	y[t * pc.C + c] = widen(tab[wordOf(e, TT)], e, TT);
}
