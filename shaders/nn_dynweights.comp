#version 450
// DMA's dynamic weights from rows [row0, row0+T) of dt (the value projection dt_proj of
// a key's flattened values, float32 [rows, Hb], bias included): delta[h][off + t] = exp(A[h] * softplus(dt[t, h]))
// into float32 weights rows stride apart (dma.Weights [1, Hb, Lk]). softplus as
// shaders/weights.comp computes it (max(x, 0) + log1p(exp(-|x|))).

layout(local_size_x = 256) in;

layout(std430, binding = 0) readonly buffer BufDt { float dt[]; };
layout(std430, binding = 1) readonly buffer BufA { float A[]; };
layout(std430, binding = 2) writeonly buffer BufW { float delta[]; };

layout(push_constant) uniform Push { uint T, Hb, stride, off, row0; } pc;

float log1pSmall(float e) {
	float s = e / (2.0 + e);
	float s2 = s * s;
	float p = 1.0 / 15.0;
	p = fma(p, s2, 1.0 / 13.0);
	p = fma(p, s2, 1.0 / 11.0);
	p = fma(p, s2, 1.0 / 9.0);
	p = fma(p, s2, 1.0 / 7.0);
	p = fma(p, s2, 1.0 / 5.0);
	p = fma(p, s2, 1.0 / 3.0);
	p = fma(p, s2, 1.0);
	return 2.0 * s * p;
}

float softplus(float x) { return max(x, 0.0) + log1pSmall(exp(-abs(x))); }

void main() {
	uint i = gl_GlobalInvocationID.x;
	if (i >= pc.T * pc.Hb) return;
	uint t = i / pc.Hb, h = i % pc.Hb;
	delta[h * pc.stride + pc.off + t] = exp(A[h] * softplus(dt[pc.row0 * pc.Hb + i]));
}
