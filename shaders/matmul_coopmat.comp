#version 460
// Tiled matrix product on tensor cores through VK_KHR_cooperative_matrix:
// C[M,N] (f32) = A[M,K] * B[K,N] with fp16 inputs (packed two per uint, row-major) and
// fp32 accumulation. Generic over the device's cooperative-matrix shape: MS x NS x KS
// come in as specialization constants (16x16x16 on NVIDIA and AMD, 8x8x8 on Mesa's
// lavapipe), as do the subgroup size and the tiling, which the host chooses from the
// shape, the subgroup size and the shared memory (internal/matmul/matmul.go).
//
// variant tiled (the default): a workgroup is WM x WN subgroups and owns a BM x BN tile
// of C, BM = WM * TM * MS, BN = WN * TN * NS (128 x 128 on NVIDIA: 2 x 4 subgroups of
// 4 x 2 accumulators of 16 x 16). K advances BK (32) at a time through double-buffered
// shared tiles of A (BM x BK) and B (BK x BN): while the subgroups multiply tile t out
// of one buffer, each invocation already holds its share of tile t + 1 in registers and
// writes it to the other buffer afterwards, so one barrier per K step suffices. Shared
// tiles are arrays of uvec4 (8 halves, 16 bytes): rows padded by 16 bytes off the power
// of two (no bank conflicts for the row-wise fragment loads), every offset and stride a
// whole number of 16-byte units (NVIDIA needs 16-byte aligned cooperative-matrix
// loads and stores in shared memory); coopMatLoad takes offsets and strides in uvec4.
// When K and N are multiples of 8 every row of A and B starts on a 16-byte boundary and
// global reads are uvec4 too (one bounds test per 8 halves); otherwise each half is
// read and bounds-tested alone. Out-of-range elements are zero, so M, N and K need not
// be multiples of anything. Workgroups wholly inside C (with N a multiple of 8) store
// their accumulators straight to C; the others go tile by tile through a per-subgroup
// fp32 scratch in the (then idle) A buffer and write only the elements inside C, since
// KHR cooperative matrices define no element -> (row, column) map.
//
// variant small (-DSMALL=1): the original 2 x 2 subgroup kernel with fp16 shared arrays,
// kept for shapes the tiled variant cannot take (KS or NS not a multiple of 8) and
// devices whose shared memory is too small for it.
//
// variant: tiled
// variant: small -DSMALL=1
#pragma use_vulkan_memory_model
#extension GL_KHR_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_shader_subgroup_basic : require

layout(constant_id = 0) const uint MS = 16;
layout(constant_id = 1) const uint NS = 16;
layout(constant_id = 2) const uint KS = 16;
layout(constant_id = 3) const uint SG = 32;  // subgroup size
layout(constant_id = 4) const uint TM = 4;   // accumulator tiles per subgroup, rows
layout(constant_id = 5) const uint TN = 2;   // and columns
layout(local_size_x_id = 6) in;              // WM * WN * SG (small: 4 * SG)

layout(std430, binding = 2) writeonly buffer BufC { float c[]; };
layout(push_constant) uniform Push { uint M, N, K; } pc;

#ifdef SMALL

layout(std430, binding = 0) readonly buffer BufA { uint a[]; };
layout(std430, binding = 1) readonly buffer BufB { uint b[]; };

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

#else  // tiled

// The host checks: KS % 8 == 0, NS % 8 == 0, BK % KS == 0, BK % 8 == 0, MS * NS % 4 == 0,
// WM * WN * MS * NS / 4 <= 2 * BM * LA (the epilogue scratch fits the A buffers).
layout(constant_id = 7) const uint WM = 2;   // subgroups, rows
layout(constant_id = 8) const uint WN = 4;   // and columns
layout(constant_id = 9) const uint BK = 32;  // K step

// A and B are read as 32-bit words and, on the fast path, as 16-byte vectors.
layout(std430, binding = 0) readonly buffer BufA { uint a[]; };
layout(std430, binding = 0) readonly buffer BufA4 { uvec4 a4[]; };
layout(std430, binding = 1) readonly buffer BufB { uint b[]; };
layout(std430, binding = 1) readonly buffer BufB4 { uvec4 b4[]; };

const uint NT = WM * WN * SG;
const uint BM = WM * TM * MS, BN = WN * TN * NS;
const uint KV = BK / 8, NV = BN / 8;    // uvec4 per row of an A / B tile
const uint LA = KV + 1, LB = NV + 1;    // padded row strides, in uvec4
const uint ASZ = BM * LA, BSZ = BK * LB; // uvec4 per shared buffer
const uint AV = BM * KV, BV = BK * NV;  // uvec4 per tile
const uint AR = (AV + NT - 1) / NT, BR = (BV + NT - 1) / NT;  // per invocation
const uint CV = MS * NS / 4;            // uvec4 of one fp32 accumulator tile

shared uvec4 As[2 * ASZ];
shared uvec4 Bs[2 * BSZ];

uint half_bits(uint w, uint idx) { return (w >> ((idx & 1u) << 4)) & 0xffffu; }

// The e-th 8 halves of the A tile at (row0, k0): row e / KV, halves (e % KV) * 8 on.
uvec4 fetch_a(uint e, uint row0, uint k0, bool vec) {
	uint gr = row0 + e / KV, gk = k0 + (e % KV) * 8u;
	if (vec)
		return (gr < pc.M && gk < pc.K) ? a4[(gr * pc.K + gk) >> 3] : uvec4(0);
	uvec4 v = uvec4(0);
	for (uint i = 0; i < 8u; i++) {
		uint idx = gr * pc.K + gk + i;
		if (gr < pc.M && gk + i < pc.K)
			v[i >> 1] |= half_bits(a[idx >> 1], idx) << ((i & 1u) << 4);
	}
	return v;
}

// The e-th 8 halves of the B tile at (k0, col0): row e / NV, columns (e % NV) * 8 on.
uvec4 fetch_b(uint e, uint k0, uint col0, bool vec) {
	uint gk = k0 + e / NV, gc = col0 + (e % NV) * 8u;
	if (vec)
		return (gk < pc.K && gc < pc.N) ? b4[(gk * pc.N + gc) >> 3] : uvec4(0);
	uvec4 v = uvec4(0);
	for (uint i = 0; i < 8u; i++) {
		uint idx = gk * pc.N + gc + i;
		if (gk < pc.K && gc + i < pc.N)
			v[i >> 1] |= half_bits(b[idx >> 1], idx) << ((i & 1u) << 4);
	}
	return v;
}

void main() {
	uint tid = gl_LocalInvocationID.x;
	uint sg = gl_SubgroupID, sgr = sg / WN, sgc = sg % WN;
	uint row0 = gl_WorkGroupID.y * BM, col0 = gl_WorkGroupID.x * BN;
	bool vec = (pc.K & 7u) == 0u && (pc.N & 7u) == 0u;

	coopmat<float, gl_ScopeSubgroup, MS, NS, gl_MatrixUseAccumulator> acc[TM * TN];
	for (uint t = 0; t < TM * TN; t++)
		acc[t] = coopmat<float, gl_ScopeSubgroup, MS, NS, gl_MatrixUseAccumulator>(0.0);

	uvec4 ra[AR], rb[BR];
	for (uint i = 0; i < AR; i++) {
		uint e = tid + i * NT;
		if (AV % NT == 0u || e < AV) As[(e / KV) * LA + e % KV] = fetch_a(e, row0, 0u, vec);
	}
	for (uint i = 0; i < BR; i++) {
		uint e = tid + i * NT;
		if (BV % NT == 0u || e < BV) Bs[(e / NV) * LB + e % NV] = fetch_b(e, 0u, col0, vec);
	}
	barrier();

	uint nk = (pc.K + BK - 1u) / BK;
	for (uint t = 0; t < nk; t++) {
		uint cur = t & 1u;
		bool more = t + 1u < nk;
		if (more) {  // tile t + 1 into registers; the loads are in flight during the products
			uint k1 = (t + 1u) * BK;
			for (uint i = 0; i < AR; i++) {
				uint e = tid + i * NT;
				if (AV % NT == 0u || e < AV) ra[i] = fetch_a(e, row0, k1, vec);
			}
			for (uint i = 0; i < BR; i++) {
				uint e = tid + i * NT;
				if (BV % NT == 0u || e < BV) rb[i] = fetch_b(e, k1, col0, vec);
			}
		}
		uint ao = cur * ASZ + sgr * TM * MS * LA, bo = cur * BSZ + (sgc * TN * NS) / 8u;
		for (uint kk = 0; kk < BK; kk += KS) {
			coopmat<float16_t, gl_ScopeSubgroup, MS, KS, gl_MatrixUseA> ma[TM];
			coopmat<float16_t, gl_ScopeSubgroup, KS, NS, gl_MatrixUseB> mb[TN];
			for (uint i = 0; i < TM; i++)
				coopMatLoad(ma[i], As, ao + i * MS * LA + kk / 8u, LA, gl_CooperativeMatrixLayoutRowMajor);
			for (uint j = 0; j < TN; j++)
				coopMatLoad(mb[j], Bs, bo + kk * LB + j * NS / 8u, LB, gl_CooperativeMatrixLayoutRowMajor);
			for (uint i = 0; i < TM; i++)
				for (uint j = 0; j < TN; j++)
					acc[i * TN + j] = coopMatMulAdd(ma[i], mb[j], acc[i * TN + j]);
		}
		if (more) {  // into the other buffer, last read before the previous barrier
			uint nxt = cur ^ 1u;
			for (uint i = 0; i < AR; i++) {
				uint e = tid + i * NT;
				if (AV % NT == 0u || e < AV) As[nxt * ASZ + (e / KV) * LA + e % KV] = ra[i];
			}
			for (uint i = 0; i < BR; i++) {
				uint e = tid + i * NT;
				if (BV % NT == 0u || e < BV) Bs[nxt * BSZ + (e / NV) * LB + e % NV] = rb[i];
			}
		}
		barrier();
	}

	uint r0 = row0 + sgr * TM * MS, c0 = col0 + sgc * TN * NS;
	if (vec && row0 + BM <= pc.M && col0 + BN <= pc.N) {
		// Wholly inside C, rows 16-byte aligned: straight to global memory.
		for (uint i = 0; i < TM; i++)
			for (uint j = 0; j < TN; j++)
				coopMatStore(acc[i * TN + j], c, (r0 + i * MS) * pc.N + c0 + j * NS, pc.N,
					gl_CooperativeMatrixLayoutRowMajor);
	} else {
		// The loop ended on a barrier: the A buffers are free. Each subgroup owns CV
		// uvec4 of them as fp32 scratch.
		uint so = sg * CV;
		for (uint i = 0; i < TM; i++) {
			for (uint j = 0; j < TN; j++) {
				coopMatStore(acc[i * TN + j], As, so, NS / 4u, gl_CooperativeMatrixLayoutRowMajor);
				subgroupBarrier();
				for (uint e = gl_SubgroupInvocationID; e < MS * NS; e += SG) {
					uint r = e / NS, cc = e % NS, gr = r0 + i * MS + r, gc = c0 + j * NS + cc;
					if (gr < pc.M && gc < pc.N)
						c[gr * pc.N + gc] = uintBitsToFloat(As[so + r * (NS / 4u) + cc / 4u][cc % 4u]);
				}
				subgroupBarrier();  // read before the next tile overwrites it
			}
		}
	}
}

#endif
