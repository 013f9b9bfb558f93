#version 450
// Second pass of nn_gemv: Y[m][n] = sum over slices s of part[s][m][n] (+ bias[n]), in
// slice order.

layout(local_size_x = 256) in;

layout(std430, binding = 0) readonly buffer BufP { float part[]; };
layout(std430, binding = 1) readonly buffer BufBias { float bias[]; };
layout(std430, binding = 2) writeonly buffer BufY { float y[]; };

layout(push_constant) uniform Push { uint M, N, slices, hasBias; } pc;

void main() {
	uint i = gl_GlobalInvocationID.x;
	uint mn = pc.M * pc.N;
	if (i >= mn) return;
	float s = 0.0;
	for (uint k = 0; k < pc.slices; k++) s += part[k * mn + i];
	if (pc.hasBias != 0u) s += bias[i % pc.N];
	y[i] = s;
}
