#version 460
// DMA attention forward through VK_NV_cooperative_matrix2 (spec section 3; the plan and
// pack contracts: internal/kern/doc.go). fp16 (bf16 in the _bf16 variants) Q/K/V/O and
// operands, fp32 scores, softmax and accumulators. Modes row, shared and none (explicit masks and biases stay
// on attention_cm.comp).
//
// The keys come as one contiguous matrix per tile, so the kernel is a plain
// FlashAttention loop over chunks of BC rows with a per-element keep test:
//   mode row, causal: the packed rows (select_pack) of U_b, b the tile's selection
//     block, in U_b's order (kappa descending); tile row r keeps packed row e when
//     e < rowT[r] (kappa_e >= tau_r: U_b holds tau_r at position rowT[r] - 1) and
//     idx_e <= p_r;
//   mode shared, row without causality: the packed rows of S_final, kept when
//     idx_e <= p_r (causal) or always;
//   mode none: K and V themselves, key e kept when ord_e != 0 (not padded) and e <= p_r
//     (causal).
// Everything between the loads and O stays in cooperative matrices (no shared-memory
// round trip of S or P): per-element operations apply scale, weight, softcap and the
// keep test; row reductions give the running max and P's row sums; the
// per-row rescale of O is a row reduction "smeared" to O's shape. With workgroup scope
// (variant wg) the driver stages operands through shared memory itself.
//
// A head whose V holds a non-finite value (select_vcheck's flag) takes an exact slower
// route for P V: P goes to shared memory (-1 marking the pairs that contribute nothing)
// and each O element sums only the keys its row keeps, so a NaN or Inf reaches exactly
// the rows that keep its key; inside a matrix product 0 * NaN would reach every row of
// the tile. A NaN or +inf score reaches its row only (spec section 7): its P, the row's
// L and O are NaN, and the epilogue tells l = NaN (LSE NaN) from l = 0 (no kept key).
//
// Specialization: DH (head dimension), BR (query rows per tile, divides 64), BC (keys
// per chunk, divides 128: packed regions hold PackRows = 2 * blockC rows, a multiple of
// 128, so a chunk never leaves its region), NT (invocations: the subgroup size with subgroup scope, the
// device's workgroup-scope invocation count otherwise), NW (columns of the per-row
// statistics, the shape's N granularity). The host
// (internal/kern/attention_cm2.go) checks them against the device's flexible shapes.
//
// variant: sg -DSCOPE=gl_ScopeSubgroup
// variant: wg -DSCOPE=gl_ScopeWorkgroup
// variant: sg_bf16 -DSCOPE=gl_ScopeSubgroup -DBF16=1
// variant: wg_bf16 -DSCOPE=gl_ScopeWorkgroup -DBF16=1
#pragma use_vulkan_memory_model
#extension GL_KHR_cooperative_matrix : require
#extension GL_NV_cooperative_matrix2 : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_control_flow_attributes : require
#ifdef BF16
#extension GL_EXT_bfloat16 : require
#define T16 bfloat16_t
#else
#define T16 float16_t
#endif

#include "dma_common.glsl"

layout(constant_id = 0) const uint DH = 64;
layout(constant_id = 1) const uint BR = 16;
layout(constant_id = 2) const uint BC = 16;
layout(local_size_x_id = 3) in;
layout(constant_id = 4) const uint NW = 8;  // columns of the per-row statistics (N granularity)

// T16: float16_t, or bfloat16_t in the bf16 variants (operands of the products too).
layout(std430, binding = 1) readonly buffer BufQ { T16 q16[]; };
layout(std430, binding = 2) readonly buffer BufK { T16 k16[]; };  // K, or packed GK
layout(std430, binding = 3) readonly buffer BufV { T16 v16[]; };  // V, or packed GV
layout(std430, binding = 4) readonly buffer BufOrd { uint ordb[]; };
layout(std430, binding = 5) readonly buffer BufU { uvec2 ub[]; };
layout(std430, binding = 6) readonly buffer BufUC { uint ucount[]; };
layout(std430, binding = 7) readonly buffer BufTau { uvec2 taub[]; };
layout(std430, binding = 8) readonly buffer BufFlags { uint vflags[]; };  // [B*Hkv]
layout(std430, binding = 10) buffer BufO { T16 o16[]; };
layout(std430, binding = 11) writeonly buffer BufLSE { float lseb[]; };

// The packed K/V bound here may hold only some (batch, bias head) pairs (the host splits
// them over buffers below the device's allocation limit): bh in [rg.bhFirst, +bhCount).
layout(push_constant) uniform Range { uint bhFirst, bhCount; } rg;

shared uint rowT[BR];              // entries of the list a tile row may keep (0: none)
shared uint colIdx[BC];            // the chunk's keys: position (~0u: not a key, or done)
shared float colDelta[BC];         // and weight
shared uint chunkMasked[4];        // per chunk parity: some row drops some key of the chunk
shared float16_t Psh[BR * BC];     // P of the chunk, on the non-finite V route only

const float NEG_INF = -1.0 / 0.0;

// Per-tile state the per-element operations read.
uint qBase, oBase, listBase, ordBase, kvBase, vStride, nList;
int tilePos;
bool packed, causal, rowCausal;
uint lid;

float safeTanh(float x) {
	float t = exp(-2.0 * abs(x));
	float y = (1.0 - t) / (1.0 + t);
	return x < 0.0 ? -y : y;
}

// Q element (r, c) of the tile; rows outside [0, Lq) are zero.
float loadQ(const in uint r, const in uint c, const in float x) {
	int ri = tilePos + int(r) - P.posOffset;
	if (ri < 0 || ri >= int(P.Lq)) return 0.0;
	return float(q16[qBase + uint(ri) * P.qSL + c]);
}

// Score of tile row r and chunk column c from the raw product s: scaled, plus the key's
// weight, softcapped; -inf when the row does not keep the key (colIdx/colDelta hold the
// chunk's keys, e0 its first list entry).
float scoreOp(const in uint r, const in uint c, const in float s, const in uint e0) {
	uint idx = colIdx[c];
	if (e0 + c >= rowT[r] || (causal && int(idx) > tilePos + int(r)) || idx == ~0u) return NEG_INF;
	float v = P.scale * s + colDelta[c];
	if (P.softcap > 0.0) v = P.softcap * safeTanh(v / P.softcap);
	return v;
}

// The score of a chunk every row keeps whole: no test needed.
float scoreAllOp(const in uint r, const in uint c, const in float s) {
	float v = P.scale * s + colDelta[c];
	if (P.softcap > 0.0) v = P.softcap * safeTanh(v / P.softcap);
	return v;
}

// First key (list entry) of the chunk that starts the walk at e0. Mode none reads K and
// V in place: a last chunk past the end starts earlier instead (the host guarantees
// Lk >= BC), and the caller skips the columns already done.
uint chunkStart(uint e0) { return (!packed && e0 + BC > P.Lk) ? P.Lk - BC : e0; }

float maxOp(const in float a, const in float b) { return max(a, b); }
float addOp(const in float a, const in float b) { return a + b; }
float smearOp(const in float a, const in float b) { return a; }
float max2(const in uint r, const in uint c, const in float a, const in float b) { return max(a, b); }
// exp(a - m), 0 for a = -inf (also when m = -inf: no kept key so far).
float expSub(const in uint r, const in uint c, const in float a, const in float m) {
	return isNegInfF(a) ? 0.0 : exp(a - m);
}
// The non-finite V route's P: exp(a - m), and -1 for a pair that contributes nothing
// (a = -inf: not kept, or score -inf), so that a kept key whose P rounds to 0 still
// passes a NaN in V on; noneToZero then gives the row sums their 0.
float expSubMark(const in uint r, const in uint c, const in float a, const in float m) {
	return isNegInfF(a) ? -1.0 : exp(a - m);
}
float noneToZero(const in uint r, const in uint c, const in float p) { return isNoneMark(p) ? 0.0 : p; }
// 1 / l, 0 for a row without kept keys (l = 0); NaN for a row with a NaN or +inf score.
float invOrZero(const in uint r, const in uint c, const in float l) { return !isZeroF(l) ? 1.0 / l : 0.0; }

// O(r, c) + sum over the chunk's keys k that row r keeps (P not -1) of P(r, k) V(k, c):
// the non-finite V route.
float addPV(const in uint r, const in uint c, const in float o, const in uint e0) {
	float sum = o;
	[[dont_unroll]]
	for (uint k = 0u; k < BC; k++) {
		float p = float(Psh[r * BC + k]);
		if (!isNoneMark(p)) sum = fma(p, float(v16[kvBase + (e0 + k) * vStride + c]), sum);
	}
	return sum;
}

float storeO(const in uint r, const in uint c, const in float x) {
	int ri = tilePos + int(r) - P.posOffset;
	if (ri >= 0 && ri < int(P.Lq)) o16[oBase + uint(ri) * P.oSL + c] = T16(x);
	return x;
}

float storeLSE(const in uint r, const in uint c, const in float m, const in float l, const in uint lseRow0) {
	int ri = tilePos + int(r) - P.posOffset;
	if (c == 0u && ri >= 0 && ri < int(P.Lq)) lseb[lseRow0 + uint(ri)] = !isZeroF(l) ? m + log(l) : NEG_INF;
	return m;
}

void main() {
	uint bIdx = gl_WorkGroupID.z, hIdx = gl_WorkGroupID.y;
	lid = gl_LocalInvocationID.x;
	uint kvh = hIdx / P.G;
	uint hb = P.Hb == P.H ? hIdx : hIdx / P.G;
	uint bh = bIdx * P.Hb + hb;
	causal = P.causal != 0u;
	rowCausal = P.mode == MODE_ROW && causal;
	packed = P.mode == MODE_ROW || P.mode == MODE_SHARED;
	if (packed && (bh < rg.bhFirst || bh - rg.bhFirst >= rg.bhCount)) return;  // another buffer's

	int t0 = P.posOffset >= 0 ? P.posOffset / int(BR) : -((-P.posOffset + int(BR) - 1) / int(BR));
	tilePos = (t0 + int(gl_WorkGroupID.x)) * int(BR);
	int firstPos = max(tilePos, P.posOffset);
	int lastPos = min(tilePos + int(BR) - 1, P.posOffset + int(P.Lq) - 1);

	qBase = P.qOff + bIdx * P.qSB + hIdx * P.qSH;
	oBase = P.oOff + bIdx * P.oSB + hIdx * P.oSH;
	ordBase = bh * P.Lk;

	// The tile's key list: its length nList, where its rows start, and how far each row
	// may go (rowT).
	uint np = (P.ncap + 63u) / 64u * 64u;
	uint region = 0u;
	nList = 0u;
	int kLast = causal ? min(lastPos, int(P.Lk) - 1) : int(P.Lk) - 1;
	if (kLast >= 0) {
		if (rowCausal) {
			uint blk = min(uint(firstPos) / P.blockC, P.nblocks - 1u);
			uint entry = bh * (P.nblocks + 1u) + blk;
			listBase = entry * P.ncap;
			nList = ucount[entry];
			region = (bh - rg.bhFirst) * P.nblocks + blk;
		} else if (packed) {
			uint entry = bh * (P.nblocks + 1u) + P.nblocks;
			listBase = entry * P.ncap;
			nList = ucount[entry];
			region = bh - rg.bhFirst;
		} else {
			nList = uint(kLast) + 1u;
		}
	}
	for (uint r = lid; r < BR; r += gl_WorkGroupSize.x) {
		int pr = tilePos + int(r);
		int ri = pr - P.posOffset;
		uint t = 0u;
		if (ri >= 0 && ri < int(P.Lq) && nList > 0u && (!causal || pr >= 0)) {
			t = nList;
			if (rowCausal) {
				uvec2 tau = taub[bh * P.Lq + uint(ri)];
				if (tau != uvec2(0u)) {
					// Entries ranked strictly above tau: U_b is sorted by kappa, descending.
					uint lo = 0u, hi = nList;
					while (lo < hi) {
						uint mid = (lo + hi) >> 1;
						uvec2 u = ub[listBase + mid];
						if (u.x > tau.x || (u.x == tau.x && u.y > tau.y)) lo = mid + 1u; else hi = mid;
					}
					t = lo + 1u;
				}
			}
		}
		rowT[r] = t;
	}
	barrier();
	uint nWalk = 0u, minT = ~0u;
	for (uint r = 0u; r < BR; r++) {
		nWalk = max(nWalk, rowT[r]);
		minT = min(minT, rowT[r]);
	}
	if (lid < 4u) chunkMasked[lid] = 0u;

	uint kSrc, vSrc, kStride;
	if (packed) {
		kSrc = region * np * DH;
		vSrc = kSrc;
		kStride = DH;
		vStride = DH;
	} else {
		kSrc = P.kOff + bIdx * P.kSB + kvh * P.kSH;
		vSrc = P.vOff + bIdx * P.vSB + kvh * P.vSH;
		kStride = P.kSL;
		vStride = P.vSL;
	}
	kvBase = vSrc;
	bool vBad = vflags[bIdx * P.Hkv + kvh] != 0u;

	// Q through an fp32 accumulator (exact for 16-bit values): bf16 has no 16-bit
	// accumulator shape.
	coopmat<float, SCOPE, BR, DH, gl_MatrixUseAccumulator> qacc;
	coopMatPerElementNV(qacc, qacc, loadQ);
	coopmat<T16, SCOPE, BR, DH, gl_MatrixUseA> qa = coopmat<T16, SCOPE, BR, DH, gl_MatrixUseA>(qacc);

	coopmat<float, SCOPE, BR, DH, gl_MatrixUseAccumulator> O = coopmat<float, SCOPE, BR, DH, gl_MatrixUseAccumulator>(0.0);
	// Per-row running max and sum, as narrow BR x NW matrices (every column holds the
	// row's value): fewer registers than BR x BC ones.
	coopmat<float, SCOPE, BR, NW, gl_MatrixUseAccumulator> M = coopmat<float, SCOPE, BR, NW, gl_MatrixUseAccumulator>(NEG_INF);
	coopmat<float, SCOPE, BR, NW, gl_MatrixUseAccumulator> L = coopmat<float, SCOPE, BR, NW, gl_MatrixUseAccumulator>(0.0);
	[[dont_unroll]]
	for (uint e0 = 0u; e0 < nWalk; e0 += BC) {
		uint c0 = chunkStart(e0), skip = c0 != e0 ? e0 : 0u;
		// The chunk's keys: list entries (or key positions) c0 + c, those below skip done.
		// chunkMasked[par] tells whether any row drops any of them (else the plain score).
		uint par = (e0 / BC) & 1u;
		if (lid == 0u) chunkMasked[par] = 0u;  // last read two chunks ago
		barrier();  // the previous chunk's score pass is over
		for (uint c = lid; c < BC; c += gl_WorkGroupSize.x) {
			uint e = c0 + c, idx = ~0u;
			float dl = 0.0;
			if (e >= skip && e < nList) {
				uint o;
				if (packed) {
					uvec2 ent = ub[listBase + e];
					o = ent.x;
					idx = ent.y;
				} else {
					o = ordb[ordBase + e];
					idx = o != 0u ? e : ~0u;
				}
				dl = unord(o);
			}
			colIdx[c] = idx;
			colDelta[c] = dl;
			// Row r keeps key c when c0 + c < rowT[r] and idx <= tilePos + r: for every
			// row when c0 + c < minT and idx <= tilePos (row 0, the smallest position).
			if (idx == ~0u || c0 + c >= minT || (causal && int(idx) > tilePos)) atomicOr(chunkMasked[par], 1u);
		}
		barrier();
		bool masked = chunkMasked[par] != 0u;
		coopmat<T16, SCOPE, DH, BC, gl_MatrixUseB> kt;
		coopMatLoad(kt, k16, kSrc + c0 * kStride, kStride, gl_CooperativeMatrixLayoutColumnMajor);
		coopmat<float, SCOPE, BR, BC, gl_MatrixUseAccumulator> S = coopmat<float, SCOPE, BR, BC, gl_MatrixUseAccumulator>(0.0);
		S = coopMatMulAdd(qa, kt, S);
		if (masked) {
			coopMatPerElementNV(S, S, scoreOp, c0);
		} else {
			coopMatPerElementNV(S, S, scoreAllOp);
		}

		coopmat<float, SCOPE, BR, NW, gl_MatrixUseAccumulator> rmax, Mold, eM, rsum;
		coopMatReduceNV(rmax, S, gl_CooperativeMatrixReduceRowNV, maxOp);
		Mold = M;
		coopMatPerElementNV(M, rmax, max2, Mold);
		coopMatPerElementNV(eM, Mold, expSub, M);
		coopmat<float, SCOPE, BR, BC, gl_MatrixUseAccumulator> Mw;
		coopMatReduceNV(Mw, M, gl_CooperativeMatrixReduceRowNV, smearOp);
		coopmat<float, SCOPE, BR, DH, gl_MatrixUseAccumulator> eMo;
		coopMatReduceNV(eMo, eM, gl_CooperativeMatrixReduceRowNV, smearOp);
		// A NaN or +inf score makes P, and so L and the row of O, NaN (a row only).
		if (!vBad) {
			coopMatPerElementNV(S, S, expSub, Mw);  // S now holds P, in fp32
			// Row sums in fp32 (LSE keeps float32 accuracy; only P V sees the fp16 P).
			coopMatReduceNV(rsum, S, gl_CooperativeMatrixReduceRowNV, addOp);
			L = eM * L + rsum;
			coopmat<T16, SCOPE, BR, BC, gl_MatrixUseA> pa = coopmat<T16, SCOPE, BR, BC, gl_MatrixUseA>(S);
			O = O * eMo;
			coopmat<T16, SCOPE, BC, DH, gl_MatrixUseB> vm;
			coopMatLoad(vm, v16, vSrc + c0 * vStride, vStride, gl_CooperativeMatrixLayoutRowMajor);
			O = coopMatMulAdd(pa, vm, O);
		} else {
			coopMatPerElementNV(S, S, expSubMark, Mw);  // P, -1 where nothing is contributed
			coopmat<float16_t, SCOPE, BR, BC, gl_MatrixUseAccumulator> ph = coopmat<float16_t, SCOPE, BR, BC, gl_MatrixUseAccumulator>(S);
			coopMatStore(ph, Psh, 0, BC, gl_CooperativeMatrixLayoutRowMajor);
			coopMatPerElementNV(S, S, noneToZero);
			coopMatReduceNV(rsum, S, gl_CooperativeMatrixReduceRowNV, addOp);
			L = eM * L + rsum;
			O = O * eMo;
			barrier();
			coopMatPerElementNV(O, O, addPV, c0);
			barrier();
		}
	}

	// O / l and LSE = m + log l; a row without kept keys gets 0 and -inf.
	coopmat<float, SCOPE, BR, NW, gl_MatrixUseAccumulator> il;
	coopMatPerElementNV(il, L, invOrZero);
	coopmat<float, SCOPE, BR, DH, gl_MatrixUseAccumulator> ilo;
	coopMatReduceNV(ilo, il, gl_CooperativeMatrixReduceRowNV, smearOp);
	O = O * ilo;
	coopMatPerElementNV(O, O, storeO);
	coopMatPerElementNV(M, M, storeLSE, L, (bIdx * P.H + hIdx) * P.Lq);
}
