#version 450
// Per-head RMSNorm then rotary embedding, as HF's Doge attention does to queries and
// keys: for row t and head h of X [T, heads, D] (float32),
//   a = weight * (x * inversesqrt(mean(x^2) + eps))            (weight [D], dtype WT)
//   out[i]       = a[i] * cos[t][i] - a[i + D/2] * sin[t][i]    i < D/2
//   out[i + D/2] = a[i + D/2] * cos[t][i] + a[i] * sin[t][i]
// cos/sin come from the table cs [T][D/2][2] (the host computes it, attention scaling
// included); hasNorm 0 skips the norm. The result goes to Out [T, heads, D] of dtype OT,
// each invocation writing two adjacent elements (one word of a 16-bit tensor).
// One workgroup per (row, head), D <= 256, D even.

#include "nn_common.glsl"

layout(local_size_x = 128) in;
layout(constant_id = 0) const uint WT = 0;
layout(constant_id = 1) const uint OT = 0;

layout(std430, binding = 0) readonly buffer BufX { float x[]; };
layout(std430, binding = 1) readonly buffer BufW { uint w[]; };
layout(std430, binding = 2) readonly buffer BufCS { vec2 cs[]; };
layout(std430, binding = 3) buffer BufO { uint o[]; };

layout(push_constant) uniform Push { uint T, heads, D, hasNorm; float eps; } pc;

shared float a[256];
shared float red[128];

void main() {
	uint t = gl_WorkGroupID.x, h = gl_WorkGroupID.y;
	uint l = gl_LocalInvocationID.x;
	uint D = pc.D, half_ = D / 2u;
	uint base = (t * pc.heads + h) * D;
	float s = 0.0;
	for (uint i = l; i < D; i += 128u) {
		float v = x[base + i];
		a[i] = v;
		s = fma(v, v, s);
	}
	red[l] = s;
	barrier();
	for (uint k = 64u; k > 0u; k >>= 1) {
		if (l < k) red[l] += red[l + k];
		barrier();
	}
	if (pc.hasNorm != 0u) {
		float inv = inversesqrt(red[0] / float(D) + pc.eps);
		for (uint i = l; i < D; i += 128u) a[i] = widen(w[wordOf(i, WT)], i, WT) * (a[i] * inv);
	}
	barrier();
	// Invocation l writes elements 2l and 2l+1.
	for (uint p = l; 2u * p < D; p += 128u) {
		float r[2];
		for (uint q = 0; q < 2u; q++) {
			uint i = 2u * p + q;
			uint f = i < half_ ? i : i - half_;
			vec2 c = cs[t * half_ + f];
			float rot = i < half_ ? -a[i + half_] : a[i - half_];
			r[q] = a[i] * c.x + rot * c.y;
		}
		uint e = base + 2u * p;
		if (OT == DT_F32) {
			o[e] = floatBitsToUint(r[0]);
			o[e + 1u] = floatBitsToUint(r[1]);
		} else {
			o[e >> 1] = pack16(r[0], r[1], OT);
		}
	}
}
