#version 460
// Matrix product through VK_NV_cooperative_matrix2 with workgroup-scope matrices and
// tensor addressing: C[M,N] (f32, row-major) = A[M,K] * B[K,N] (fp16, row-major), fp32
// accumulation. Same bindings (0 A, 1 B, 2 C) and push constants (M, N, K) as
// matmul.comp and matmul_coopmat.comp.
//
// One workgroup owns one BM x BN tile of C as a single workgroup-scope accumulator and
// steps through K by BK: each step loads the BM x BK slice of A and the BK x BN slice of
// B with coopMatLoadTensorNV and multiplies. The driver stages the operands through
// shared memory itself (this kernel declares none).
//
// Two loops. A tile that lies wholly inside C, with K a multiple of BK and rows that
// start 16-byte aligned (K and N multiples of 8), takes the fast loop: layouts without
// clamping (no bounds test per element) and UNROLL steps of K per iteration, so that
// the loads of the next steps are in flight while the tensor cores work. Every other
// tile takes the clamped loop: elements outside A or B read as 0 and elements outside
// C are not written, so M, N and K need not be multiples of anything. Every load and
// store starts at element 0 of its buffer (16-byte aligned base); the slices do the
// offsetting.
//
// Specialization: BM, BN, BK (multiples of the M, N and K granularity of a
// workgroup-scope f16*f16+f32 flexible-dimension shape) and the invocation count (that
// shape's workgroupInvocations). The host (internal/matmul/matmul.go) checks them.
#pragma use_vulkan_memory_model
#extension GL_KHR_cooperative_matrix : require
#extension GL_NV_cooperative_matrix2 : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_control_flow_attributes : require

layout(constant_id = 0) const uint BM = 128;
layout(constant_id = 1) const uint BN = 256;
layout(constant_id = 2) const uint BK = 64;
layout(local_size_x_id = 3) in;
// K steps per iteration of the fast loop.
const uint UNROLL = 4;

layout(std430, binding = 0) readonly buffer BufA { float16_t a[]; };
layout(std430, binding = 1) readonly buffer BufB { float16_t b[]; };
layout(std430, binding = 2) writeonly buffer BufC { float c[]; };
layout(push_constant) uniform Push { uint M, N, K; } pc;

void main() {
	uint row0 = gl_WorkGroupID.y * BM, col0 = gl_WorkGroupID.x * BN;

	coopmat<float, gl_ScopeWorkgroup, BM, BN, gl_MatrixUseAccumulator> acc =
		coopmat<float, gl_ScopeWorkgroup, BM, BN, gl_MatrixUseAccumulator>(0.0);

	tensorLayoutNV<2, gl_CooperativeMatrixClampModeConstantNV> tC =
		createTensorLayoutNV(2, gl_CooperativeMatrixClampModeConstantNV);
	tC = setTensorLayoutDimensionNV(tC, pc.M, pc.N);

	bool interior = row0 + BM <= pc.M && col0 + BN <= pc.N && pc.K % BK == 0 &&
		pc.K % 8 == 0 && pc.N % 8 == 0;
	if (interior) {
		// Row strides that are multiples of 8 halves tell the compiler that every row
		// starts 16-byte aligned.
		uint strideA = pc.K & ~7u, strideB = pc.N & ~7u;
		tensorLayoutNV<2> tA = createTensorLayoutNV(2);
		tA = setTensorLayoutDimensionNV(tA, pc.M, pc.K);
		tA = setTensorLayoutStrideNV(tA, strideA, 1);
		tensorLayoutNV<2> tB = createTensorLayoutNV(2);
		tB = setTensorLayoutDimensionNV(tB, pc.K, pc.N);
		tB = setTensorLayoutStrideNV(tB, strideB, 1);
		uint k0 = 0;
		[[dont_unroll]]
		for (; k0 + UNROLL * BK <= pc.K; k0 += UNROLL * BK) {
			[[unroll]] for (uint u = 0; u < UNROLL; u++) {
				coopmat<float16_t, gl_ScopeWorkgroup, BM, BK, gl_MatrixUseA> ma;
				coopmat<float16_t, gl_ScopeWorkgroup, BK, BN, gl_MatrixUseB> mb;
				coopMatLoadTensorNV(ma, a, 0, sliceTensorLayoutNV(tA, row0, BM, k0 + u * BK, BK));
				coopMatLoadTensorNV(mb, b, 0, sliceTensorLayoutNV(tB, k0 + u * BK, BK, col0, BN));
				acc = coopMatMulAdd(ma, mb, acc);
			}
		}
		[[dont_unroll]]
		for (; k0 < pc.K; k0 += BK) {
			coopmat<float16_t, gl_ScopeWorkgroup, BM, BK, gl_MatrixUseA> ma;
			coopmat<float16_t, gl_ScopeWorkgroup, BK, BN, gl_MatrixUseB> mb;
			coopMatLoadTensorNV(ma, a, 0, sliceTensorLayoutNV(tA, row0, BM, k0, BK));
			coopMatLoadTensorNV(mb, b, 0, sliceTensorLayoutNV(tB, k0, BK, col0, BN));
			acc = coopMatMulAdd(ma, mb, acc);
		}
	} else {
		// Row-major 2D layouts: setTensorLayoutDimensionNV sets strides (cols, 1). The
		// clamp value (0: out-of-range A and B elements read as +0.0) is the default.
		tensorLayoutNV<2, gl_CooperativeMatrixClampModeConstantNV> tA =
			createTensorLayoutNV(2, gl_CooperativeMatrixClampModeConstantNV);
		tA = setTensorLayoutDimensionNV(tA, pc.M, pc.K);
		tensorLayoutNV<2, gl_CooperativeMatrixClampModeConstantNV> tB =
			createTensorLayoutNV(2, gl_CooperativeMatrixClampModeConstantNV);
		tB = setTensorLayoutDimensionNV(tB, pc.K, pc.N);
		[[dont_unroll]]
		for (uint k0 = 0; k0 < pc.K; k0 += BK) {
			coopmat<float16_t, gl_ScopeWorkgroup, BM, BK, gl_MatrixUseA> ma;
			coopmat<float16_t, gl_ScopeWorkgroup, BK, BN, gl_MatrixUseB> mb;
			coopMatLoadTensorNV(ma, a, 0, sliceTensorLayoutNV(tA, row0, BM, k0, BK));
			coopMatLoadTensorNV(mb, b, 0, sliceTensorLayoutNV(tB, k0, BK, col0, BN));
			acc = coopMatMulAdd(ma, mb, acc);
		}
	}

	coopMatStoreTensorNV(acc, c, 0, sliceTensorLayoutNV(tC, row0, BM, col0, BN));
}
