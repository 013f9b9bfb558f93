#version 460
// variant: row_sg -DROWPASS=1 -DSCOPE=gl_ScopeSubgroup -DKHRLOAD=1
// variant: row_wg -DROWPASS=1 -DSCOPE=gl_ScopeWorkgroup
// variant: row_sg_bf16 -DROWPASS=1 -DSCOPE=gl_ScopeSubgroup -DBF16=1 -DKHRLOAD=1
// variant: row_wg_bf16 -DROWPASS=1 -DSCOPE=gl_ScopeWorkgroup -DBF16=1
// variant: key_sg -DSCOPE=gl_ScopeSubgroup -DKHRLOAD=1
// variant: key_wg -DSCOPE=gl_ScopeWorkgroup
// variant: key_sg_bf16 -DSCOPE=gl_ScopeSubgroup -DBF16=1 -DKHRLOAD=1
// variant: key_wg_bf16 -DSCOPE=gl_ScopeWorkgroup -DBF16=1
// DMA attention backward through VK_NV_cooperative_matrix2 (spec section 4; the plan and
// pack contracts: internal/kern/doc.go; host side: internal/kern/backward_cm2.go). fp16
// (bf16 in the _bf16 variants) Q/K/V/O/dO and operands, fp32 scores, probabilities,
// accumulators and gradients. Modes row, shared and none, as attention_cm2.comp.
//
// Two passes, no atomics on gradients (every sum in a fixed order: bit-identical run to
// run), both recomputing P = exp(s - lse) from Q, K and the forward's LSE:
//
// ROWPASS (variants row_*): the forward's query tiles of BR rows over the same keys
// (packed rows of U_b, of S_final, or K itself) in chunks of BC:
//   Dsum_i = dot(dO_i, O_i) (written for the key pass), S = Q K^T, dP = dO V^T,
//   dS = P (dP - Dsum) softcap'(raw), dQ += dS K   (dQ an accumulator in registers).
// key pass (variants key_*): a tile of BR packed rows (modes row and shared: one region
// of GK/GV, entries x0 .. x0+BR of its list; mode none: BR keys of K) stays put while
// the rows that may keep it stream by in chunks of BC:
//   S^T = K Q^T, dP^T = V dO^T, dV += P^T dO, dK += dS^T Q, dDelta += rows of dS^T.
// In mode row with causality the rows that keep entry x of U_b are the rows of block b
// from max(idx_x, bC) while tau_i <= kappa_x: tau never decreases, so one binary search
// over tau for the tile's first (largest) entry bounds the tile's rows. With Hb = Hkv
// the tile sums over the G query heads of its kv head (they share the plan). Modes row
// and shared write the tile's sums per region (PdK, PdV, PdD, float32 [R][NP][D] and
// [R][NP]); attention_bwd_cm2_reduce.comp adds each key's regions. Mode none writes
// dK, dV and dDelta itself.
//
// Non-finite values (spec section 7): per-element operations give every pair not kept
// P = 0 and dS = 0, so a NaN or Inf in a key's V, a weight, or a NaN row's P reaches
// exactly the rows and keys the chain rule takes it to. Inside a matrix product 0 * NaN
// is NaN, though: a non-finite K (row pass) or Q or dO (key pass) would reach rows or
// keys through pairs that contribute nothing. A check before the passes (select_vcheck
// on K, Q and dO) flags the heads with such an operand (flags: K's [B][Hkv] from word
// 0, Q's and dO's [B][H] from words FlagQ and FlagDO, each list a multiple of 64 words
// apart); their tiles take an exact slower route, a pipeline of its own (NFROUTE = 1,
// dispatched after the other over the same grid; each returns at once for the other's
// tiles): P and dS through shared memory and sums of the pairs that contribute only (as
// attention_cm2.comp's non-finite V route). The fast route so declares no scratch and
// tests nothing per element beyond the keep test.
//
// Both passes take their streamed operands (K and V in the row pass, Q and dO in the
// key pass) through tensor layouts at workgroup scope (plain KHR loads with KHRLOAD, the
// subgroup-scope variants: Mesa's lavapipe has no tensor addressing), and stage the next
// chunk's keys (rows) in shared memory while one computes, double-buffered, so a chunk
// costs one barrier; a chunk whose every pair is kept skips the keep test.
//
// Specialization: DH (head dimension), BR and BC (above), NT invocations (the subgroup
// size with subgroup scope, the device's workgroup-scope invocation count otherwise),
// NW (columns of per-row statistics, the N granularity), NFROUTE (above).
//
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
layout(constant_id = 4) const uint NW = 8;
layout(constant_id = 5) const uint NFROUTE = 0;  // 1: the tiles with a non-finite operand only

#ifndef KHRLOAD
#define KHRLOAD 0
#endif

layout(std430, binding = 1) readonly buffer BufQ { T16 q16[]; };
layout(std430, binding = 2) readonly buffer BufK { T16 k16[]; };  // K, or packed GK
layout(std430, binding = 3) readonly buffer BufV { T16 v16[]; };  // V, or packed GV
layout(std430, binding = 4) readonly buffer BufOrd { uint ordb[]; };
layout(std430, binding = 5) readonly buffer BufU { uvec2 ub[]; };
layout(std430, binding = 6) readonly buffer BufUC { uint ucount[]; };
layout(std430, binding = 7) readonly buffer BufTau { uvec2 taub[]; };
layout(std430, binding = 8) readonly buffer BufO { T16 o16[]; };
layout(std430, binding = 9) readonly buffer BufLSE { float lseb[]; };
layout(std430, binding = 10) readonly buffer BufDO { T16 do16[]; };
layout(std430, binding = 11) buffer BufDQ { float dqb[]; };
layout(std430, binding = 12) buffer BufDK { float dkb[]; };
layout(std430, binding = 13) buffer BufDV { float dvb[]; };
layout(std430, binding = 14) buffer BufDD { float ddb[]; };     // [B][Hb][Lk]
layout(std430, binding = 15) buffer BufDsum { float dsumb[]; };  // [B][H][Lq]
layout(std430, binding = 16) buffer BufPdK { float pdk[]; };     // [R][NP][D]
layout(std430, binding = 17) buffer BufPdV { float pdv[]; };
layout(std430, binding = 18) buffer BufPdD { float pdd[]; };     // [R][NP]
layout(std430, binding = 19) readonly buffer BufFlags { uint flagb[]; };  // K, Q, dO (above)

layout(push_constant) uniform Push {
	uint doOff, doSB, doSL, doSH;
	uint dqOff, dqSB, dqSL, dqSH;
	uint dkOff, dkSB, dkSL, dkSH;
	uint dvOff, dvSB, dvSL, dvSH;
} PC;

const float NEG_INF = -1.0 / 0.0;

float safeTanh(float x) {
	float t = exp(-2.0 * abs(x));
	float y = (1.0 - t) / (1.0 + t);
	return x < 0.0 ? -y : y;
}

// The score from the raw product (scaled, weighted, softcapped).
float capScore(float raw, float del) {
	float v = P.scale * raw + del;
	if (P.softcap > 0.0) v = P.softcap * safeTanh(v / P.softcap);
	return v;
}

// softcap'(raw) from the capped score s = softcap * tanh(..): 1 - tanh^2 (1 when off).
float capDeriv(float s) {
	if (P.softcap > 0.0) {
		float t = s / P.softcap;
		return 1.0 - t * t;
	}
	return 1.0;
}

float addOp(const in float a, const in float b) { return a + b; }
float smearOp(const in float a, const in float b) { return a; }
float mulOp(const in uint r, const in uint c, const in float a, const in float b) { return a * b; }

bool causal, rowCausal, packed;
uint lid;

// Where Q's and dO's flags start in flagb (kern.bwdFlagWords).
uint flagQ() { return (P.B * P.Hkv + 63u) / 64u * 64u; }
uint flagDO() { return flagQ() + (P.B * P.H + 63u) / 64u * 64u; }

// Scratch of the exact route only (BR x BC floats; one element on the fast route).
const uint XSH = NFROUTE * BR * BC + 1u;
// chunkMasked[j & 1] == j + 1: some pair of chunk j is not kept (never reset: chunk
// numbers only grow).
shared uint chunkMasked[2];

#ifdef ROWPASS
// ---------------------------------------------------------------- row pass (dQ, Dsum)

shared uint rowT[BR];        // list entries a tile row may keep (0: none)
shared float rowLse[BR];
shared float rowDsum[BR];
// Two chunks' keys (chunk j in half j & 1): position (~0u: not a key, or done), weight.
shared uint colIdx[2 * BC];
shared float colDelta[2 * BC];
shared float Dsh[XSH];       // dS of the chunk, on the exact route only

uint qBase, oBase, doBase, listBase, ordBase, kvBase, kStride, nList;
int tilePos;

bool rowReal(uint r) {
	int ri = tilePos + int(r) - P.posOffset;
	return ri >= 0 && ri < int(P.Lq);
}

float loadQ(const in uint r, const in uint c, const in float x) {
	if (!rowReal(r)) return 0.0;
	return float(q16[qBase + uint(tilePos + int(r) - P.posOffset) * P.qSL + c]);
}
float loadDO(const in uint r, const in uint c, const in float x) {
	if (!rowReal(r)) return 0.0;
	return float(do16[doBase + uint(tilePos + int(r) - P.posOffset) * PC.doSL + c]);
}
float loadO(const in uint r, const in uint c, const in float x) {
	if (!rowReal(r)) return 0.0;
	return float(o16[oBase + uint(tilePos + int(r) - P.posOffset) * P.oSL + c]);
}

// Score of tile row r and chunk column c (-inf where the row does not keep the key; the
// chunk's keys in half h, e0 its first list entry).
float scoreOp(const in uint r, const in uint c, const in float s, const in uint e0, const in uint h) {
	uint idx = colIdx[h + c];
	if (e0 + c >= rowT[r] || (causal && int(idx) > tilePos + int(r)) || idx == ~0u) return NEG_INF;
	return capScore(s, colDelta[h + c]);
}

// The score of a chunk every row keeps whole.
float scoreAllOp(const in uint r, const in uint c, const in float s, const in uint h) {
	return capScore(s, colDelta[h + c]);
}

float probOp(const in uint r, const in uint c, const in float s) {
	return isNegInfF(s) ? 0.0 : exp(s - rowLse[r]);
}

// dS from dP, the score and P: 0 for a pair that contributes nothing.
float dsOp(const in uint r, const in uint c, const in float dp, const in float s, const in float p) {
	return isNegInfF(s) ? 0.0 : p * (dp - rowDsum[r]) * capDeriv(s);
}

// dQ(r, c) + sum over the chunk's keys of the nonzero dS(r, k) K(k, c): the exact route.
float addDSK(const in uint r, const in uint c, const in float q, const in uint c0) {
	float sum = q;
	[[dont_unroll]]
	for (uint k = 0u; k < BC; k++) {
		float ds = Dsh[r * BC + k];
		if (!isZeroF(ds)) sum = fma(ds, float(k16[kvBase + (c0 + k) * kStride + c]), sum);
	}
	return sum;
}

float storeDsum(const in uint r, const in uint c, const in float x, const in uint row0) {
	if (c == 0u) {
		rowDsum[r] = x;
		if (rowReal(r)) dsumb[row0 + uint(tilePos + int(r) - P.posOffset)] = x;
	}
	return x;
}

float storeDQ(const in uint r, const in uint c, const in float x, const in uint base) {
	if (rowReal(r)) dqb[base + uint(tilePos + int(r) - P.posOffset) * PC.dqSL + c] = P.scale * x;
	return x;
}

uint chunkStart(uint e0) { return (!packed && e0 + BC > P.Lk) ? P.Lk - BC : e0; }

// Stages chunk j (walk entries from e0 = j * BC) into half (j & 1) of colIdx/colDelta,
// and marks it in chunkMasked when some row of the tile drops some of its keys.
void stageChunk(uint j, uint minT) {
	uint e0 = j * BC, c0 = chunkStart(e0), skip = c0 != e0 ? e0 : 0u, h = (j & 1u) * BC;
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
		colIdx[h + c] = idx;
		colDelta[h + c] = dl;
		// Every row keeps key c when c0 + c < minT and idx <= tilePos (row 0's position).
		if (idx == ~0u || c0 + c >= minT || (causal && int(idx) > tilePos)) atomicMax(chunkMasked[j & 1u], j + 1u);
	}
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
	bool bad = flagb[bIdx * P.Hkv + kvh] != 0u;
	if (bad != (NFROUTE != 0u)) return;  // the other route's tile

	int t0 = P.posOffset >= 0 ? P.posOffset / int(BR) : -((-P.posOffset + int(BR) - 1) / int(BR));
	tilePos = (t0 + int(gl_WorkGroupID.x)) * int(BR);
	int firstPos = max(tilePos, P.posOffset);
	int lastPos = min(tilePos + int(BR) - 1, P.posOffset + int(P.Lq) - 1);

	qBase = P.qOff + bIdx * P.qSB + hIdx * P.qSH;
	oBase = P.oOff + bIdx * P.oSB + hIdx * P.oSH;
	doBase = PC.doOff + bIdx * PC.doSB + hIdx * PC.doSH;
	ordBase = bh * P.Lk;
	uint lseRow0 = (bIdx * P.H + hIdx) * P.Lq;

	// The tile's key list, as attention_cm2.comp.
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
			region = bh * P.nblocks + blk;
		} else if (packed) {
			uint entry = bh * (P.nblocks + 1u) + P.nblocks;
			listBase = entry * P.ncap;
			nList = ucount[entry];
			region = bh;
		} else {
			nList = uint(kLast) + 1u;
		}
	}
	for (uint r = lid; r < BR; r += gl_WorkGroupSize.x) {
		int pr = tilePos + int(r);
		int ri = pr - P.posOffset;
		uint t = 0u;
		bool real = ri >= 0 && ri < int(P.Lq);
		if (real && nList > 0u && (!causal || pr >= 0)) {
			t = nList;
			if (rowCausal) {
				uvec2 tau = taub[bh * P.Lq + uint(ri)];
				if (tau != uvec2(0u)) {
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
		rowLse[r] = real ? lseb[lseRow0 + uint(ri)] : NEG_INF;
	}
	if (lid < 2u) chunkMasked[lid] = 0u;
	barrier();
	uint nWalk = 0u, minT = ~0u;
	for (uint r = 0u; r < BR; r++) {
		nWalk = max(nWalk, rowT[r]);
		minT = min(minT, rowT[r]);
	}
	barrier();  // chunkMasked cleared before the first stage marks it
	if (nWalk > 0u) stageChunk(0u, minT);

	uint kSrc, vSrc, vStride, nRows;
	if (packed) {
		kSrc = region * np * DH;
		vSrc = kSrc;
		kStride = DH;
		vStride = DH;
		nRows = np;
	} else {
		// Offsets and strides are multiples of 8 elements (the host checks): whole
		// 16-byte rows.
		kSrc = (P.kOff + bIdx * P.kSB + kvh * P.kSH) & ~7u;
		vSrc = (P.vOff + bIdx * P.vSB + kvh * P.vSH) & ~7u;
		kStride = P.kSL & ~7u;
		vStride = P.vSL & ~7u;
		nRows = P.Lk;
	}
	kvBase = kSrc;
#if !KHRLOAD
	tensorLayoutNV<2> tK = createTensorLayoutNV(2);
	tK = setTensorLayoutDimensionNV(tK, nRows, DH);
	tK = setTensorLayoutStrideNV(tK, kStride, 1);
	tensorLayoutNV<2> tV = createTensorLayoutNV(2);
	tV = setTensorLayoutDimensionNV(tV, nRows, DH);
	tV = setTensorLayoutStrideNV(tV, vStride, 1);
	tensorViewNV<2, false, 1, 0> transposed = createTensorViewNV(2, false, 1, 0);
#endif

	// Q and dO through fp32 accumulators (rows outside [0, Lq) zero); Dsum from dO and O.
	coopmat<float, SCOPE, BR, DH, gl_MatrixUseAccumulator> acc;
	coopMatPerElementNV(acc, acc, loadQ);
	coopmat<T16, SCOPE, BR, DH, gl_MatrixUseA> qa = coopmat<T16, SCOPE, BR, DH, gl_MatrixUseA>(acc);
	coopmat<float, SCOPE, BR, DH, gl_MatrixUseAccumulator> oacc;
	coopMatPerElementNV(oacc, oacc, loadO);
	coopMatPerElementNV(acc, acc, loadDO);
	coopmat<T16, SCOPE, BR, DH, gl_MatrixUseA> doa = coopmat<T16, SCOPE, BR, DH, gl_MatrixUseA>(acc);
	coopMatPerElementNV(oacc, oacc, mulOp, acc);
	coopmat<float, SCOPE, BR, NW, gl_MatrixUseAccumulator> dsum;
	coopMatReduceNV(dsum, oacc, gl_CooperativeMatrixReduceRowNV, addOp);
	coopMatPerElementNV(dsum, dsum, storeDsum, lseRow0);
	barrier();  // rowDsum written; chunk 0 staged

	coopmat<float, SCOPE, BR, DH, gl_MatrixUseAccumulator> dQ = coopmat<float, SCOPE, BR, DH, gl_MatrixUseAccumulator>(0.0);
	[[dont_unroll]]
	for (uint j = 0u; j * BC < nWalk; j++) {
		uint e0 = j * BC, c0 = chunkStart(e0), h = (j & 1u) * BC;
		if (e0 + BC < nWalk) stageChunk(j + 1u, minT);
		bool masked = chunkMasked[j & 1u] == j + 1u;

		coopmat<T16, SCOPE, DH, BC, gl_MatrixUseB> kt;
#if KHRLOAD
		coopMatLoad(kt, k16, kSrc + c0 * kStride, kStride, gl_CooperativeMatrixLayoutColumnMajor);
#else
		coopMatLoadTensorNV(kt, k16, kSrc, sliceTensorLayoutNV(tK, c0, BC, 0, DH), transposed);
#endif
		coopmat<float, SCOPE, BR, BC, gl_MatrixUseAccumulator> S = coopmat<float, SCOPE, BR, BC, gl_MatrixUseAccumulator>(0.0);
		S = coopMatMulAdd(qa, kt, S);
		if (masked) {
			coopMatPerElementNV(S, S, scoreOp, c0, h);
		} else {
			coopMatPerElementNV(S, S, scoreAllOp, h);
		}
		coopmat<float, SCOPE, BR, BC, gl_MatrixUseAccumulator> Pm;
		coopMatPerElementNV(Pm, S, probOp);
		coopmat<T16, SCOPE, DH, BC, gl_MatrixUseB> vt;
#if KHRLOAD
		coopMatLoad(vt, v16, vSrc + c0 * vStride, vStride, gl_CooperativeMatrixLayoutColumnMajor);
#else
		coopMatLoadTensorNV(vt, v16, vSrc, sliceTensorLayoutNV(tV, c0, BC, 0, DH), transposed);
#endif
		coopmat<float, SCOPE, BR, BC, gl_MatrixUseAccumulator> dP = coopmat<float, SCOPE, BR, BC, gl_MatrixUseAccumulator>(0.0);
		dP = coopMatMulAdd(doa, vt, dP);
		coopMatPerElementNV(dP, dP, dsOp, S, Pm);  // dP now holds dS
		if (NFROUTE == 0u) {
			coopmat<T16, SCOPE, BR, BC, gl_MatrixUseA> dsa = coopmat<T16, SCOPE, BR, BC, gl_MatrixUseA>(dP);
			coopmat<T16, SCOPE, BC, DH, gl_MatrixUseB> kb;
#if KHRLOAD
			coopMatLoad(kb, k16, kSrc + c0 * kStride, kStride, gl_CooperativeMatrixLayoutRowMajor);
#else
			coopMatLoadTensorNV(kb, k16, kSrc, sliceTensorLayoutNV(tK, c0, BC, 0, DH));
#endif
			dQ = coopMatMulAdd(dsa, kb, dQ);
		} else {
			coopMatStore(dP, Dsh, 0, BC, gl_CooperativeMatrixLayoutRowMajor);
			barrier();
			coopMatPerElementNV(dQ, dQ, addDSK, c0);
		}
		barrier();  // chunk j + 1 staged; chunk j's half (and Dsh) free
	}
	coopMatPerElementNV(dQ, dQ, storeDQ, PC.dqOff + bIdx * PC.dqSB + hIdx * PC.dqSH);
}

#else
// ---------------------------------------------------------------- key pass (dK, dV, dDelta)

shared uvec2 keyEnt[BR];     // the tile's entries: (ord, idx); idx ~0u: none
shared float keyDelta[BR];
// Two chunks' rows (chunk j in half j & 1): threshold, lse, Dsum.
shared uvec2 rowTau[2 * BC];
shared float rowLse[2 * BC];
shared float rowDsum[2 * BC];
// The rows [rangeLo, rangeHi) that may keep a key of the tile; tileAll: every entry of
// the tile is a key of this pass (so that a chunk can keep the whole tile); tileMin:
// the tile's smallest entry, tileMaxIdx its largest position.
shared uvec4 tileInfo;       // rangeLo, rangeHi, tileAll, tileMaxIdx
shared uvec2 tileMin;
shared float Ksh[XSH];       // P^T or dS^T of the chunk, on the exact route only

uint qBase, doBase, rowC0, rowSkip, rowHi, keySkip, tileOut, ddOut;

// Whether tile entry x and row r of the chunk in half h (rows from c0, those below skip
// done) form a kept pair.
bool keptPair(uint x, uint r, uint h, uint c0, uint skip) {
	uint i = c0 + r;
	uvec2 ent = keyEnt[x];
	if (i < skip || i >= rowHi || ent.y == ~0u || x < keySkip) return false;
	if (causal && int(ent.y) > int(i) + P.posOffset) return false;
	if (rowCausal && !keyGE(ent, rowTau[h + r])) return false;
	return true;
}

float scoreOp(const in uint x, const in uint r, const in float s, const in uint h, const in uint c0, const in uint skip) {
	if (!keptPair(x, r, h, c0, skip)) return NEG_INF;
	return capScore(s, keyDelta[x]);
}

float scoreAllOp(const in uint x, const in uint r, const in float s) {
	return capScore(s, keyDelta[x]);
}

float probOp(const in uint x, const in uint r, const in float s, const in uint h) {
	return isNegInfF(s) ? 0.0 : exp(s - rowLse[h + r]);
}

// P with -1 for the pairs that contribute nothing (the exact route's dV sums).
float markOp(const in uint x, const in uint r, const in float p, const in float s) {
	return isNegInfF(s) ? -1.0 : p;
}

float dsOp(const in uint x, const in uint r, const in float dp, const in float s, const in float p, const in uint h) {
	return isNegInfF(s) ? 0.0 : p * (dp - rowDsum[h + r]) * capDeriv(s);
}

// dV(x, c) + the pairs' P(x, r) dO(r, c), dK(x, c) + the nonzero dS(x, r) Q(r, c).
float addPdO(const in uint x, const in uint c, const in float v) {
	float sum = v;
	[[dont_unroll]]
	for (uint r = 0u; r < BC; r++) {
		float p = Ksh[x * BC + r];
		if (!isNoneMark(p)) sum = fma(p, float(do16[doBase + (rowC0 + r) * PC.doSL + c]), sum);
	}
	return sum;
}
float addDSQ(const in uint x, const in uint c, const in float k) {
	float sum = k;
	[[dont_unroll]]
	for (uint r = 0u; r < BC; r++) {
		float ds = Ksh[x * BC + r];
		if (!isZeroF(ds)) sum = fma(ds, float(q16[qBase + (rowC0 + r) * P.qSL + c]), sum);
	}
	return sum;
}

// Mode none: the final gradients of the tile's keys (x0 + x), those below keySkip done
// by the previous tile.
float storeDK(const in uint x, const in uint c, const in float v, const in uint base) {
	if (x >= keySkip && tileOut + x < P.Lk) dkb[base + (tileOut + x) * PC.dkSL + c] = P.scale * v;
	return v;
}
float storeDV(const in uint x, const in uint c, const in float v, const in uint base) {
	if (x >= keySkip && tileOut + x < P.Lk) dvb[base + (tileOut + x) * PC.dvSL + c] = v;
	return v;
}
float storeDD(const in uint x, const in uint c, const in float v) {
	if (c == 0u && x >= keySkip && tileOut + x < P.Lk) ddb[ddOut + tileOut + x] = v;
	return v;
}
// Modes row and shared: the region's partial sums, entry x0 + x (dK unscaled).
float storePD(const in uint x, const in uint c, const in float v) {
	if (c == 0u) pdd[tileOut + x] = v;
	return v;
}

// Stages chunk j (the head's chunk n: rows from rLo + n * BC) into half (j & 1) of the
// row arrays, and marks it in chunkMasked when some of its pairs with the tile are not
// kept.
void stageRows(uint j, uint n, uint rLo, uint bhPlan, uint lseRow0, bool all, int maxIdx, uvec2 minEnt) {
	uint i0 = rLo + n * BC, c0 = min(i0, P.Lq - BC), h = (j & 1u) * BC;
	for (uint r = lid; r < BC; r += gl_WorkGroupSize.x) {
		uint i = c0 + r;
		uvec2 tau = rowCausal ? taub[bhPlan * P.Lq + i] : uvec2(0u);
		rowTau[h + r] = tau;
		rowLse[h + r] = lseb[lseRow0 + i];
		rowDsum[h + r] = dsumb[lseRow0 + i];
		// Row i keeps the whole tile when it is one of the range's, comes after the
		// tile's last position and its threshold is at most the tile's smallest entry.
		if (!all || i < i0 || i >= rowHi || (causal && maxIdx > int(i) + P.posOffset) || (rowCausal && !keyGE(minEnt, tau)))
			atomicMax(chunkMasked[j & 1u], j + 1u);
	}
}

void main() {
	lid = gl_LocalInvocationID.x;
	causal = P.causal != 0u;
	rowCausal = P.mode == MODE_ROW && causal;
	packed = P.mode == MODE_ROW || P.mode == MODE_SHARED;
	uint np = (P.ncap + 63u) / 64u * 64u;
	bool perHeadBias = P.Hb == P.H;

	// The tile: (batch, kv head) and its packed region or keys.
	uint bIdx, kvh, bh, region = 0u, listBase = 0u, nList, x0 = gl_WorkGroupID.x * BR;
	int blockLo = 0, blockHi = int(P.Lk);  // positions whose rows read this region
	uint kSrc, vSrc, kStride;
	keySkip = 0u;
	if (packed) {
		region = gl_WorkGroupID.y;
		uint nbr = rowCausal ? P.nblocks : 1u;
		bh = region / nbr;
		uint blk = region - bh * nbr;
		bIdx = bh / P.Hb;
		uint hb = bh - bIdx * P.Hb;
		kvh = perHeadBias ? hb / P.G : hb;
		uint entry = bh * (P.nblocks + 1u) + (rowCausal ? blk : P.nblocks);
		listBase = entry * P.ncap;
		nList = ucount[entry];
		if (rowCausal) {
			blockLo = int(blk * P.blockC);
			blockHi = blk + 1u == P.nblocks ? int(P.Lk) : int((blk + 1u) * P.blockC);
		}
		kSrc = (region * np + x0) * DH;
		vSrc = kSrc;
		kStride = DH;
		tileOut = region * np + x0;
	} else {
		bIdx = gl_WorkGroupID.z;
		kvh = gl_WorkGroupID.y;
		bh = 0u;
		nList = P.Lk;
		uint j0 = x0 + BR > P.Lk ? P.Lk - BR : x0;  // the last tile starts earlier (Lk >= BR)
		keySkip = x0 - j0;
		x0 = j0;
		kSrc = P.kOff + bIdx * P.kSB + kvh * P.kSH + x0 * P.kSL;
		vSrc = P.vOff + bIdx * P.vSB + kvh * P.vSH + x0 * P.vSL;
		kStride = P.kSL;
		tileOut = x0;
	}

	// Query heads: with Hb = H a region belongs to one head; else the kv head's group.
	uint hFirst, hCount;
	if (packed && perHeadBias) {
		hFirst = bh - bIdx * P.Hb;
		hCount = 1u;
	} else {
		hFirst = kvh * P.G;
		hCount = P.G;
	}
	bool bad = false;
	for (uint g = 0u; g < hCount; g++) {
		uint f = bIdx * P.H + hFirst + g;
		bad = bad || flagb[flagQ() + f] != 0u || flagb[flagDO() + f] != 0u;
	}
	if (bad != (NFROUTE != 0u)) return;  // the other route's tile
	if (packed && x0 >= nList && x0 > 0u) return;  // past the list (the first tile always writes)

	coopmat<T16, SCOPE, BR, DH, gl_MatrixUseA> ka, va;
	coopMatLoad(ka, k16, kSrc, kStride, gl_CooperativeMatrixLayoutRowMajor);
	coopMatLoad(va, v16, vSrc, packed ? DH : P.vSL, gl_CooperativeMatrixLayoutRowMajor);

	coopmat<float, SCOPE, BR, DH, gl_MatrixUseAccumulator> dK = coopmat<float, SCOPE, BR, DH, gl_MatrixUseAccumulator>(0.0);
	coopmat<float, SCOPE, BR, DH, gl_MatrixUseAccumulator> dV = coopmat<float, SCOPE, BR, DH, gl_MatrixUseAccumulator>(0.0);
	coopmat<float, SCOPE, BR, NW, gl_MatrixUseAccumulator> dD = coopmat<float, SCOPE, BR, NW, gl_MatrixUseAccumulator>(0.0);

	// Q and dO of a head: Lq rows of DH from qBase / doBase (offsets and strides
	// multiples of 8 elements, checked by the host).
	uint qStride = P.qSL & ~7u, doStride = PC.doSL & ~7u;
#if !KHRLOAD
	tensorLayoutNV<2> tQ = createTensorLayoutNV(2);
	tQ = setTensorLayoutDimensionNV(tQ, P.Lq, DH);
	tQ = setTensorLayoutStrideNV(tQ, qStride, 1);
	tensorLayoutNV<2> tDO = createTensorLayoutNV(2);
	tDO = setTensorLayoutDimensionNV(tDO, P.Lq, DH);
	tDO = setTensorLayoutStrideNV(tDO, doStride, 1);
	tensorViewNV<2, false, 1, 0> transposed = createTensorViewNV(2, false, 1, 0);
#endif

	if (lid < 2u) chunkMasked[lid] = 0u;
	uint jAll = 0u;  // chunks so far, over all heads (chunkMasked's numbers)
	[[dont_unroll]]
	for (uint g = 0u; g < hCount; g++) {
		uint h = hFirst + g;
		uint hbh = perHeadBias ? h : kvh;
		uint bhPlan = bIdx * P.Hb + hbh;
		if (!packed) {
			// Mode none: the keys' weights in this head's row of ord.
			for (uint x = lid; x < BR; x += gl_WorkGroupSize.x) {
				uint j = x0 + x;
				uint o = ordb[bhPlan * P.Lk + j];
				keyEnt[x] = uvec2(o, o != 0u ? j : ~0u);
				keyDelta[x] = unord(o);
			}
		} else if (g == 0u) {
			for (uint x = lid; x < BR; x += gl_WorkGroupSize.x) {
				uvec2 ent = uvec2(0u, ~0u);
				if (x0 + x < nList) ent = ub[listBase + x0 + x];
				keyEnt[x] = ent;
				keyDelta[x] = unord(ent.x);
			}
		}
		barrier();
		if (lid == 0u) {
			// Rows [lo, hi) that may keep a key of the tile.
			int pLo = blockHi, maxIdx = -1;
			bool all = keySkip == 0u;
			for (uint x = 0u; x < BR; x++) {
				uint idx = keyEnt[x].y;
				if (idx == ~0u) {
					all = false;
				} else if (x >= keySkip) {
					pLo = min(pLo, causal ? max(int(idx), blockLo) : blockLo);
					maxIdx = max(maxIdx, int(idx));
				}
			}
			int pHi = blockHi;
			if (rowCausal && keyEnt[0].y != ~0u) {
				// The first row from pLo on whose threshold is above the tile's best entry.
				int a = max(pLo - P.posOffset, 0), b = min(pHi - P.posOffset, int(P.Lq));
				uvec2 kap = keyEnt[0];
				while (a < b) {
					int m = (a + b) >> 1;
					if (keyGE(kap, taub[bhPlan * P.Lq + uint(m)])) a = m + 1; else b = m;
				}
				pHi = a + P.posOffset;
			}
			int lo = causal ? max(pLo - P.posOffset, 0) : 0;
			int hi = min(pHi - P.posOffset, int(P.Lq));
			if (!causal) hi = int(P.Lq);
			if (keyEnt[0].y == ~0u && packed) hi = lo;  // an empty tile
			uint rl = uint(max(lo, 0));
			tileInfo = uvec4(rl, uint(max(max(hi, lo), 0)), all ? 1u : 0u, uint(maxIdx));
			// Entries are sorted by kappa descending (packed), so the last is the smallest.
			tileMin = packed ? keyEnt[BR - 1u] : uvec2(0u);
		}
		barrier();
		uint rLo = tileInfo.x;
		rowHi = tileInfo.y;
		bool tileAll = tileInfo.z != 0u;
		int maxIdx = int(tileInfo.w);
		uvec2 minEnt = tileMin;
		qBase = (P.qOff + bIdx * P.qSB + h * P.qSH) & ~7u;
		doBase = (PC.doOff + bIdx * PC.doSB + h * PC.doSH) & ~7u;
		uint lseRow0 = (bIdx * P.H + h) * P.Lq;
		uint nChunks = (rowHi - rLo + BC - 1u) / BC;
		if (nChunks > 0u) stageRows(jAll, 0u, rLo, bhPlan, lseRow0, tileAll, maxIdx, minEnt);
		barrier();  // chunk 0 staged

		[[dont_unroll]]
		for (uint n = 0u; n < nChunks; n++) {
			uint j = jAll + n, hh = (j & 1u) * BC;
			uint i0 = rLo + n * BC;
			rowC0 = min(i0, P.Lq - BC);  // the last chunk starts earlier (Lq >= BC)
			rowSkip = i0;
			if (n + 1u < nChunks) stageRows(j + 1u, n + 1u, rLo, bhPlan, lseRow0, tileAll, maxIdx, minEnt);
			bool masked = chunkMasked[j & 1u] == j + 1u;

			coopmat<T16, SCOPE, DH, BC, gl_MatrixUseB> qt, dot;
#if KHRLOAD
			coopMatLoad(qt, q16, qBase + rowC0 * qStride, qStride, gl_CooperativeMatrixLayoutColumnMajor);
			coopMatLoad(dot, do16, doBase + rowC0 * doStride, doStride, gl_CooperativeMatrixLayoutColumnMajor);
#else
			coopMatLoadTensorNV(qt, q16, qBase, sliceTensorLayoutNV(tQ, rowC0, BC, 0, DH), transposed);
			coopMatLoadTensorNV(dot, do16, doBase, sliceTensorLayoutNV(tDO, rowC0, BC, 0, DH), transposed);
#endif
			coopmat<float, SCOPE, BR, BC, gl_MatrixUseAccumulator> S = coopmat<float, SCOPE, BR, BC, gl_MatrixUseAccumulator>(0.0);
			S = coopMatMulAdd(ka, qt, S);
			if (masked) {
				coopMatPerElementNV(S, S, scoreOp, hh, rowC0, rowSkip);
			} else {
				coopMatPerElementNV(S, S, scoreAllOp);
			}
			coopmat<float, SCOPE, BR, BC, gl_MatrixUseAccumulator> Pm;
			coopMatPerElementNV(Pm, S, probOp, hh);
			coopmat<float, SCOPE, BR, BC, gl_MatrixUseAccumulator> dS = coopmat<float, SCOPE, BR, BC, gl_MatrixUseAccumulator>(0.0);
			dS = coopMatMulAdd(va, dot, dS);
			coopMatPerElementNV(dS, dS, dsOp, S, Pm, hh);
			coopmat<float, SCOPE, BR, NW, gl_MatrixUseAccumulator> rs;
			coopMatReduceNV(rs, dS, gl_CooperativeMatrixReduceRowNV, addOp);
			dD = dD + rs;
			if (NFROUTE == 0u) {
				coopmat<T16, SCOPE, BC, DH, gl_MatrixUseB> qb, dob;
#if KHRLOAD
				coopMatLoad(dob, do16, doBase + rowC0 * doStride, doStride, gl_CooperativeMatrixLayoutRowMajor);
#else
				coopMatLoadTensorNV(dob, do16, doBase, sliceTensorLayoutNV(tDO, rowC0, BC, 0, DH));
#endif
				coopmat<T16, SCOPE, BR, BC, gl_MatrixUseA> pa = coopmat<T16, SCOPE, BR, BC, gl_MatrixUseA>(Pm);
				dV = coopMatMulAdd(pa, dob, dV);
#if KHRLOAD
				coopMatLoad(qb, q16, qBase + rowC0 * qStride, qStride, gl_CooperativeMatrixLayoutRowMajor);
#else
				coopMatLoadTensorNV(qb, q16, qBase, sliceTensorLayoutNV(tQ, rowC0, BC, 0, DH));
#endif
				coopmat<T16, SCOPE, BR, BC, gl_MatrixUseA> dsa = coopmat<T16, SCOPE, BR, BC, gl_MatrixUseA>(dS);
				dK = coopMatMulAdd(dsa, qb, dK);
			} else {
				coopMatPerElementNV(Pm, Pm, markOp, S);
				coopMatStore(Pm, Ksh, 0, BC, gl_CooperativeMatrixLayoutRowMajor);
				barrier();
				coopMatPerElementNV(dV, dV, addPdO);
				barrier();
				coopMatStore(dS, Ksh, 0, BC, gl_CooperativeMatrixLayoutRowMajor);
				barrier();
				coopMatPerElementNV(dK, dK, addDSQ);
			}
			barrier();  // chunk j + 1 staged; chunk j's half (and Ksh) free
		}
		jAll += nChunks;
		if (!packed && perHeadBias) {
			// Mode none, a bias head per query head: this head's dDelta row.
			ddOut = bhPlan * P.Lk;
			coopMatPerElementNV(dD, dD, storeDD);
			dD = coopmat<float, SCOPE, BR, NW, gl_MatrixUseAccumulator>(0.0);
		}
		barrier();  // keyEnt and tileInfo are rewritten by the next head
	}

	if (packed) {
		coopMatStore(dK, pdk, tileOut * DH, DH, gl_CooperativeMatrixLayoutRowMajor);
		coopMatStore(dV, pdv, tileOut * DH, DH, gl_CooperativeMatrixLayoutRowMajor);
		coopMatPerElementNV(dD, dD, storePD);
	} else {
		coopMatPerElementNV(dK, dK, storeDK, PC.dkOff + bIdx * PC.dkSB + kvh * PC.dkSH);
		coopMatPerElementNV(dV, dV, storeDV, PC.dvOff + bIdx * PC.dvSB + kvh * PC.dvSH);
		if (!perHeadBias) {
			ddOut = (bIdx * P.Hb + kvh) * P.Lk;
			coopMatPerElementNV(dD, dD, storeDD);
		}
	}
}
#endif
