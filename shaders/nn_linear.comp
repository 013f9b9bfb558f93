#version 450
// Linear layer for many rows (prefill), portable path: Y[M,N] (float32) = X[M,K] * W[K,N]
// (+ bias[N]), W the layer's weight stored transposed ([in, out], row-major). X and W
// each float32, float16 or bfloat16 (specialization constants), read as 32-bit words and
// widened; arithmetic float32 with fma. Each 16x16 workgroup computes a 64x64 tile of Y,
// 4x4 per invocation, walking K in steps of 16 through shared memory; out-of-range
// elements load as zero, so any M, N, K works. No subgroup operation.

#include "nn_common.glsl"

layout(local_size_x = 16, local_size_y = 16) in;
layout(constant_id = 0) const uint XT = 0; // dtype of X
layout(constant_id = 1) const uint WT = 0; // dtype of W

layout(std430, binding = 0) readonly buffer BufX { uint x[]; };
layout(std430, binding = 1) readonly buffer BufW { uint w[]; };
layout(std430, binding = 2) readonly buffer BufBias { float bias[]; };
layout(std430, binding = 3) writeonly buffer BufY { float y[]; };

layout(push_constant) uniform Push { uint M, N, K, hasBias; } pc;

const uint BM = 64, BN = 64, BK = 16, TM = 4, TN = 4;
shared float Xs[BK][BM];
shared float Ws[BK][BN];

float loadX(uint e) { return widen(x[wordOf(e, XT)], e, XT); }
float loadW(uint e) { return widen(w[wordOf(e, WT)], e, WT); }

void main() {
	uint tx = gl_LocalInvocationID.x, ty = gl_LocalInvocationID.y;
	uint tid = ty * 16 + tx;
	uint row0 = gl_WorkGroupID.y * BM, col0 = gl_WorkGroupID.x * BN;
	float acc[TM][TN];
	for (uint i = 0; i < TM; i++)
		for (uint j = 0; j < TN; j++) acc[i][j] = 0.0;
	for (uint k0 = 0; k0 < pc.K; k0 += BK) {
		for (uint e = tid; e < BM * BK; e += 256) {
			uint r = e / BK, k = e % BK;
			uint gr = row0 + r, gk = k0 + k;
			Xs[k][r] = (gr < pc.M && gk < pc.K) ? loadX(gr * pc.K + gk) : 0.0;
		}
		for (uint e = tid; e < BK * BN; e += 256) {
			uint k = e / BN, c = e % BN;
			uint gk = k0 + k, gc = col0 + c;
			Ws[k][c] = (gk < pc.K && gc < pc.N) ? loadW(gk * pc.N + gc) : 0.0;
		}
		barrier();
		for (uint k = 0; k < BK; k++) {
			float av[TM], bv[TN];
			for (uint i = 0; i < TM; i++) av[i] = Xs[k][ty + 16 * i];
			for (uint j = 0; j < TN; j++) bv[j] = Ws[k][tx + 16 * j];
			for (uint i = 0; i < TM; i++)
				for (uint j = 0; j < TN; j++) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
		}
		barrier();
	}
	for (uint i = 0; i < TM; i++) {
		uint r = row0 + ty + 16 * i;
		for (uint j = 0; j < TN; j++) {
			uint c = col0 + tx + 16 * j;
			if (r < pc.M && c < pc.N) y[r * pc.N + c] = acc[i][j] + (pc.hasBias != 0u ? bias[c] : 0.0);
		}
	}
}
