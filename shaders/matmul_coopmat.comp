#version 460
// Tiled matrix product on tensor cores through VK_KHR_cooperative_matrix:
// C[M,N] (f32) = A[M,K] * B[K,N] with fp16 inputs (packed two per uint) and fp32
// accumulation. Generic over the device's cooperative-matrix shape: MS x NS x KS come
// in as specialization constants (16x16x16 on NVIDIA and AMD, 8x8x8 on Mesa's
// lavapipe), as does the subgroup size. A workgroup is 4 subgroups in a 2x2 grid; each
// subgroup owns TM x TN accumulator tiles. Tiles of A and B are staged in shared memory
// with zero fill, so M, N and K need not be multiples of anything, and C leaves through
// shared memory for the same reason.
#pragma use_vulkan_memory_model
#extension GL_KHR_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_shader_subgroup_basic : require

layout(constant_id = 0) const uint MS = 16;
layout(constant_id = 1) const uint NS = 16;
layout(constant_id = 2) const uint KS = 16;
layout(constant_id = 3) const uint SG = 32;  // subgroup size; local size is 4 * SG
layout(constant_id = 4) const uint TM = 2;   // accumulator tiles per subgroup, rows
layout(constant_id = 5) const uint TN = 2;   // and columns
layout(local_size_x_id = 6) in;              // must be 4 * SG

layout(std430, binding = 0) readonly buffer BufA { uint a[]; };
layout(std430, binding = 1) readonly buffer BufB { uint b[]; };
layout(std430, binding = 2) writeonly buffer BufC { float c[]; };
layout(push_constant) uniform Push { uint M, N, K; } pc;

const uint BM = 2 * TM * MS, BN = 2 * TN * NS, BK = 2 * KS;
const uint PAD = 8;  // keeps rows of shared tiles off the same banks
const uint LDA = BK + PAD, LDB = BN + PAD, LDC = BN + PAD;
shared float16_t As[BM * LDA];
shared float16_t Bs[BK * LDB];
shared float Cs[BM * LDC];

float16_t half_at(uint w, uint i) { return float16_t(unpackHalf2x16(w)[i & 1u]); }

void main() {
	uint tid = gl_LocalInvocationID.x, nthreads = 4 * SG;
	uint sg = tid / SG;  // subgroup index in the 2x2 grid
	uint sgr = sg / 2, sgc = sg % 2;
	uint row0 = gl_WorkGroupID.y * BM, col0 = gl_WorkGroupID.x * BN;

	coopmat<float, gl_ScopeSubgroup, MS, NS, gl_MatrixUseAccumulator> acc[TM * TN];
	for (uint t = 0; t < TM * TN; t++)
		acc[t] = coopmat<float, gl_ScopeSubgroup, MS, NS, gl_MatrixUseAccumulator>(0.0);

	for (uint k0 = 0; k0 < pc.K; k0 += BK) {
		for (uint e = tid; e < BM * BK; e += nthreads) {
			uint r = e / BK, k = e % BK, gr = row0 + r, gk = k0 + k;
			uint idx = gr * pc.K + gk;
			As[r * LDA + k] = (gr < pc.M && gk < pc.K) ? half_at(a[idx >> 1], idx) : float16_t(0);
		}
		for (uint e = tid; e < BK * BN; e += nthreads) {
			uint k = e / BN, cc = e % BN, gk = k0 + k, gc = col0 + cc;
			uint idx = gk * pc.N + gc;
			Bs[k * LDB + cc] = (gk < pc.K && gc < pc.N) ? half_at(b[idx >> 1], idx) : float16_t(0);
		}
		barrier();
		for (uint kk = 0; kk < BK; kk += KS) {
			coopmat<float16_t, gl_ScopeSubgroup, MS, KS, gl_MatrixUseA> ma[TM];
			for (uint i = 0; i < TM; i++)
				coopMatLoad(ma[i], As, (sgr * TM * MS + i * MS) * LDA + kk, LDA,
					gl_CooperativeMatrixLayoutRowMajor);
			for (uint j = 0; j < TN; j++) {
				coopmat<float16_t, gl_ScopeSubgroup, KS, NS, gl_MatrixUseB> mb;
				coopMatLoad(mb, Bs, kk * LDB + sgc * TN * NS + j * NS, LDB,
					gl_CooperativeMatrixLayoutRowMajor);
				for (uint i = 0; i < TM; i++)
					acc[i * TN + j] = coopMatMulAdd(ma[i], mb, acc[i * TN + j]);
			}
		}
		barrier();
	}
	for (uint i = 0; i < TM; i++)
		for (uint j = 0; j < TN; j++)
			coopMatStore(acc[i * TN + j], Cs, (sgr * TM * MS + i * MS) * LDC + sgc * TN * NS + j * NS,
				LDC, gl_CooperativeMatrixLayoutRowMajor);
	barrier();
	for (uint e = tid; e < BM * BN; e += nthreads) {
		uint r = e / BN, cc = e % BN, gr = row0 + r, gc = col0 + cc;
		if (gr < pc.M && gc < pc.N) c[gr * pc.N + gc] = Cs[r * LDC + cc];
	}
}
