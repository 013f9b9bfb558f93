#version 450
// The routed experts of Doge's CDMoE for token n: with the experts e_i and routing
// weights w_i of nn_experts_route,
//   s_i = silu(down[e_i] . h_n) * w_i,     Y[n] += sum_i s_i * up[e_i]
// (down and up: [experts, C] tables of dtype TT; h, Y float32 [N, C]). One workgroup
// per token (x + 65535 y); each dot product is reduced in shared memory in a fixed order.

#include "nn_common.glsl"

layout(local_size_x = 256) in;
layout(constant_id = 0) const uint TT = 0;

layout(std430, binding = 0) readonly buffer BufH { float h[]; };
layout(std430, binding = 1) readonly buffer BufIdx { uint idx[]; };
layout(std430, binding = 2) readonly buffer BufW { float rw[]; };
layout(std430, binding = 3) readonly buffer BufDown { uint down[]; };
layout(std430, binding = 4) readonly buffer BufUp { uint up[]; };
layout(std430, binding = 5) buffer BufY { float y[]; };

layout(push_constant) uniform Push { uint N, C, top, experts; } pc;

shared float red[256];
shared float s[256];

void main() {
	uint n = gl_WorkGroupID.x + gl_WorkGroupID.y * 65535u, t = gl_LocalInvocationID.x;
	if (n >= pc.N) return;
	uint C = pc.C;
	for (uint i = 0; i < pc.top; i++) {
		uint e = min(idx[n * pc.top + i], pc.experts - 1u);
		float p = 0.0;
		for (uint c = t; c < C; c += 256u) {
			uint el = e * C + c;
			p = fma(widen(down[wordOf(el, TT)], el, TT), h[n * C + c], p);
		}
		red[t] = p;
		barrier();
		for (uint k = 128u; k > 0u; k >>= 1) {
			if (t < k) red[t] += red[t + k];
			barrier();
		}
		if (t == 0u) {
			float d = red[0];
			s[i] = d / (1.0 + exp(-d)) * rw[n * pc.top + i];
		}
		barrier();
	}
	for (uint c = t; c < C; c += 256u) {
		float acc = 0.0;
		for (uint i = 0; i < pc.top; i++) {
			uint e = min(idx[n * pc.top + i], pc.experts - 1u);
			uint el = e * C + c;
			acc = fma(s[i], widen(up[wordOf(el, TT)], el, TT), acc);
		}
		y[n * C + c] += acc;
	}
}
