#version 450
// RMSNorm of each row of X [R, C] (float32): Y = weight * (X * inversesqrt(mean(X^2) +
// eps)), as HF's LlamaRMSNorm/DogeRMSNorm in float32 (the weight, of dtype WT, is
// applied after the normalization). One workgroup per row; the sum of squares is
// reduced in shared memory in a fixed order.

#include "nn_common.glsl"

layout(local_size_x = 256) in;
layout(constant_id = 0) const uint WT = 0;

layout(std430, binding = 0) readonly buffer BufX { float x[]; };
layout(std430, binding = 1) readonly buffer BufW { uint w[]; };
layout(std430, binding = 2) writeonly buffer BufY { float y[]; };

layout(push_constant) uniform Push { uint R, C; float eps; } pc;

shared float red[256];

void main() {
	uint row = gl_WorkGroupID.x + gl_WorkGroupID.y * 65535u;
	if (row >= pc.R) return;
	uint t = gl_LocalInvocationID.x;
	uint base = row * pc.C;
	float s = 0.0;
	for (uint c = t; c < pc.C; c += 256u) s = fma(x[base + c], x[base + c], s);
	red[t] = s;
	barrier();
	for (uint h = 128u; h > 0u; h >>= 1) {
		if (t < h) red[t] += red[t + h];
		barrier();
	}
	float inv = inversesqrt(red[0] / float(pc.C) + pc.eps);
	for (uint c = t; c < pc.C; c += 256u) y[base + c] = widen(w[wordOf(c, WT)], c, WT) * (x[base + c] * inv);
}
