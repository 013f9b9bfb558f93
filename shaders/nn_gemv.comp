#version 450
// Linear layer for a few rows (decode): the partial sums of Y[M,N] = X[M,K] * W[K,N],
// M <= 4, W stored transposed ([in, out], row-major). Workgroup (x, s) owns 128 columns
// (two adjacent ones per invocation: one 32-bit word of a 16-bit W) and the K rows
// [s*KC, (s+1)*KC), split over the workgroup's 4 row groups of 64 invocations; it writes
// its sum to part[s][M][N]. nn_gemv_reduce adds the slices (and the bias) in order, or
// the consumer does (nn_residual_norm).
// Splitting K over workgroups keeps a wide GPU's memory busy on narrow layers.

// variant: plain
// variant: gated -DGATED=1

#include "nn_common.glsl"

layout(local_size_x = 256) in;
layout(constant_id = 0) const uint XT = 0;
layout(constant_id = 1) const uint WT = 0;

layout(std430, binding = 0) readonly buffer BufX { uint x[]; };
layout(std430, binding = 1) readonly buffer BufW { uint w[]; };
layout(std430, binding = 2) writeonly buffer BufP { float part[]; };
#ifdef GATED
// The gated MLP's down projection: X = silu(X) * U, as nn_eltwise's silu_mul computes
// it, formed as it is staged (X and U float32).
layout(std430, binding = 3) readonly buffer BufU { float u[]; };
float loadX(uint e) {
	float v = uintBitsToFloat(x[e]);
	return v / (1.0 + exp(-v)) * u[e];
}
#else
float loadX(uint e) { return widen(x[wordOf(e, XT)], e, XT); }
#endif

layout(push_constant) uniform Push { uint M, N, K, KC; } pc;

const uint MR = 4, COLS = 128, GROUPS = 4;
shared vec2 red[GROUPS][MR][64];
shared float xs[MR][256];

void main() {
	uint lane = gl_LocalInvocationID.x % 64u, g = gl_LocalInvocationID.x / 64u;
	uint c = gl_WorkGroupID.x * COLS + 2u * lane;
	uint k0 = gl_WorkGroupID.y * pc.KC, k1 = min(k0 + pc.KC, pc.K);
	vec2 acc[MR];
	for (uint m = 0; m < MR; m++) acc[m] = vec2(0.0);
	for (uint kb = k0; kb < k1; kb += 256u) {
		// Stage 256 values of each row of X.
		barrier();
		uint kk = kb + gl_LocalInvocationID.x;
		for (uint m = 0; m < MR; m++) xs[m][gl_LocalInvocationID.x] = (m < pc.M && kk < k1) ? loadX(m * pc.K + kk) : 0.0;
		barrier();
		uint kend = min(256u, k1 - kb);
		for (uint kr = g; kr < kend; kr += GROUPS) {
			uint k = kb + kr;
			uint e = k * pc.N + c;
			vec2 wv;
			if (WT == DT_F32) {
				wv.x = c < pc.N ? uintBitsToFloat(w[e]) : 0.0;
				wv.y = c + 1u < pc.N ? uintBitsToFloat(w[e + 1u]) : 0.0;
			} else if ((pc.N & 1u) == 0u) {
				// Even N: the two columns share one word.
				uint word = c < pc.N ? w[e >> 1] : 0u;
				wv = vec2(widen(word, 0u, WT), widen(word, 1u, WT));
			} else {
				wv.x = c < pc.N ? widen(w[e >> 1], e, WT) : 0.0;
				wv.y = c + 1u < pc.N ? widen(w[(e + 1u) >> 1], e + 1u, WT) : 0.0;
			}
			for (uint m = 0; m < MR; m++) acc[m] = fma(vec2(xs[m][kr]), wv, acc[m]);
		}
	}
	for (uint m = 0; m < MR; m++) red[g][m][lane] = acc[m];
	barrier();
	if (g == 0u) {
		for (uint m = 0; m < pc.M; m++) {
			vec2 s = red[0][m][lane] + red[1][m][lane] + red[2][m][lane] + red[3][m][lane];
			uint base = (gl_WorkGroupID.y * pc.M + m) * pc.N;
			if (c < pc.N) part[base + c] = s.x;
			if (c + 1u < pc.N) part[base + c + 1u] = s.y;
		}
	}
}
