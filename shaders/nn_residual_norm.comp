#version 450
// A gated residual then an RMSNorm, over each row of [R, C] float32 tensors, in one pass
// (a decode step's layers end and begin with them):
//   X = G * X + A                                      (G dtype GT; in place)
//   Y = W * (X * inversesqrt(mean(X^2) + eps))         (W dtype WT)
// with the arithmetic of nn_eltwise's residual and nn_rmsnorm (the same bits). A may be
// the slices partial sums of nn_gemv (A = sum over s of A[s][R][C], in slice order, as
// nn_gemv_reduce adds them): the product's last pass and this one in one. One workgroup
// per row.

#include "nn_common.glsl"

layout(local_size_x = 256) in;
layout(constant_id = 0) const uint GT = 0;
layout(constant_id = 1) const uint WT = 0;

layout(std430, binding = 0) buffer BufX { float x[]; };
layout(std430, binding = 1) readonly buffer BufA { float a[]; };
layout(std430, binding = 2) readonly buffer BufG { uint g[]; };
layout(std430, binding = 3) readonly buffer BufW { uint w[]; };
layout(std430, binding = 4) writeonly buffer BufY { float y[]; };

layout(push_constant) uniform Push { uint R, C; float eps; uint slices; } pc;

shared float red[256];

void main() {
	uint row = gl_WorkGroupID.x + gl_WorkGroupID.y * 65535u;
	if (row >= pc.R) return;
	uint t = gl_LocalInvocationID.x;
	uint base = row * pc.C;
	float s = 0.0;
	for (uint c = t; c < pc.C; c += 256u) {
		float av = 0.0;
		for (uint k = 0; k < pc.slices; k++) av += a[k * pc.R * pc.C + base + c];
		float v = fma(widen(g[wordOf(c, GT)], c, GT), x[base + c], av);
		x[base + c] = v;
		s = fma(v, v, s);
	}
	red[t] = s;
	barrier();
	for (uint h = 128u; h > 0u; h >>= 1) {
		if (t < h) red[t] += red[t + h];
		barrier();
	}
	float inv = inversesqrt(red[0] / float(pc.C) + pc.eps);
	for (uint c = t; c < pc.C; c += 256u) y[base + c] = widen(w[wordOf(c, WT)], c, WT) * (x[base + c] * inv);
}
