#version 450
// Element-wise layer arithmetic over n float32 elements (two per invocation, so that
// a 16-bit output is written a word at a time):
//   silu_mul:  Y = silu(A) * B                         (the gated MLP's activation)
//   residual:  Y = G[i % C] * B + A                    (Doge's residual gates; G dtype GT)
//   cast:      Y (dtype OT) = A                         (to a 16-bit tensor; n even)

#include "nn_common.glsl"

// variant: silu_mul -DOP_SILU_MUL=1
// variant: residual -DOP_RESIDUAL=1
// variant: cast -DOP_CAST=1

layout(local_size_x = 256) in;
layout(constant_id = 0) const uint GT = 0;
layout(constant_id = 1) const uint OT = 0;

layout(std430, binding = 0) readonly buffer BufA { float a[]; };
layout(std430, binding = 1) readonly buffer BufB { float b[]; };
layout(std430, binding = 2) readonly buffer BufG { uint g[]; };
layout(std430, binding = 3) buffer BufY { uint y[]; };

layout(push_constant) uniform Push { uint n, C; } pc;

float op(uint i) {
#if defined(OP_SILU_MUL)
	float v = a[i];
	return v / (1.0 + exp(-v)) * b[i];
#elif defined(OP_RESIDUAL)
	uint c = i % pc.C;
	return fma(widen(g[wordOf(c, GT)], c, GT), b[i], a[i]);
#else
	return a[i];
#endif
}

void main() {
	// Workgroups spread over x and y (more than 65535 of them for long prompts).
	uint i = 2u * ((gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * 256u + gl_LocalInvocationID.x);
	if (i >= pc.n) return;
#if defined(OP_CAST)
	if (OT != DT_F32) {
		y[i >> 1] = pack16(op(i), i + 1u < pc.n ? op(i + 1u) : 0.0, OT);
		return;
	}
#endif
	y[i] = floatBitsToUint(op(i));
	if (i + 1u < pc.n) y[i + 1u] = floatBitsToUint(op(i + 1u));
}
