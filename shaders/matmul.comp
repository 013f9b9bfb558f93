#version 450
// Tiled matrix product, portable path: C[M,N] (f32) = A[M,K] * B[K,N], row-major.
// Needs no subgroup operation and no 16-bit feature, so it runs on any Vulkan device:
// fp16 inputs arrive as packed halves (two per uint) and are widened with
// unpackHalf2x16. Each 16x16 workgroup computes a 64x64 tile of C, 4x4 per invocation,
// walking K in steps of 16 through shared memory. Out-of-range elements load as zero.
//
// variant: f32
// variant: f16 -DA_F16=1

layout(local_size_x = 16, local_size_y = 16) in;

#ifdef A_F16
layout(std430, binding = 0) readonly buffer BufA { uint a[]; };
layout(std430, binding = 1) readonly buffer BufB { uint b[]; };
float loadA(uint i) { return unpackHalf2x16(a[i >> 1])[i & 1u]; }
float loadB(uint i) { return unpackHalf2x16(b[i >> 1])[i & 1u]; }
#else
layout(std430, binding = 0) readonly buffer BufA { float a[]; };
layout(std430, binding = 1) readonly buffer BufB { float b[]; };
float loadA(uint i) { return a[i]; }
float loadB(uint i) { return b[i]; }
#endif
layout(std430, binding = 2) writeonly buffer BufC { float c[]; };

layout(push_constant) uniform Push { uint M, N, K; } pc;

const uint BM = 64, BN = 64, BK = 16, TM = 4, TN = 4;
shared float As[BK][BM];
shared float Bs[BK][BN];

void main() {
	uint tx = gl_LocalInvocationID.x, ty = gl_LocalInvocationID.y;
	uint tid = ty * 16 + tx;
	uint row0 = gl_WorkGroupID.y * BM, col0 = gl_WorkGroupID.x * BN;
	float acc[TM][TN];
	for (uint i = 0; i < TM; i++)
		for (uint j = 0; j < TN; j++) acc[i][j] = 0.0;

	for (uint k0 = 0; k0 < pc.K; k0 += BK) {
		// 1024 elements of each tile, 4 per invocation.
		for (uint e = tid; e < BM * BK; e += 256) {
			uint r = e / BK, k = e % BK;
			uint gr = row0 + r, gk = k0 + k;
			As[k][r] = (gr < pc.M && gk < pc.K) ? loadA(gr * pc.K + gk) : 0.0;
		}
		for (uint e = tid; e < BK * BN; e += 256) {
			uint k = e / BN, cc = e % BN;
			uint gk = k0 + k, gc = col0 + cc;
			Bs[k][cc] = (gk < pc.K && gc < pc.N) ? loadB(gk * pc.N + gc) : 0.0;
		}
		barrier();
		for (uint k = 0; k < BK; k++) {
			float av[TM], bv[TN];
			for (uint i = 0; i < TM; i++) av[i] = As[k][ty + 16 * i];
			for (uint j = 0; j < TN; j++) bv[j] = Bs[k][tx + 16 * j];
			for (uint i = 0; i < TM; i++)
				for (uint j = 0; j < TN; j++) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
		}
		barrier();
	}
	for (uint i = 0; i < TM; i++) {
		uint r = row0 + ty + 16 * i;
		for (uint j = 0; j < TN; j++) {
			uint cc = col0 + tx + 16 * j;
			if (r < pc.M && cc < pc.N) c[r * pc.N + cc] = acc[i][j];
		}
	}
}
