#version 460
// variant: sg -DSCOPE=gl_ScopeSubgroup -DWIDE=1 -DKHRLOAD=1
// variant: wg -DSCOPE=gl_ScopeWorkgroup -DWIDE=1
// variant: sg_bf16 -DSCOPE=gl_ScopeSubgroup -DWIDE=1 -DBF16=1 -DKHRLOAD=1
// variant: wg_bf16 -DSCOPE=gl_ScopeWorkgroup -DWIDE=1 -DBF16=1
// DMA attention forward through VK_NV_cooperative_matrix2 (spec section 3; the plan and
// pack contracts: internal/kern/doc.go). fp16 (bf16 in the _bf16 variants) Q/K/V/O and
// operands, fp32 scores, softmax and accumulators. Modes row, shared and none (explicit
// masks and biases stay on attention_cm.comp).
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
// round trip of S or P). The running row max M and row sum L are BR x SW matrices whose
// every column holds the row's value: with SW = BC (the wide variants) they have the
// score tile's shape, so the max reduction lands in it directly and P = exp(S - M) needs
// no smear; the rescale of O needs one smear of exp(Mold - M) to O's shape, none at all
// when BC = DH (the EQ build switch, measured slower on the H200). The narrow variants (SW = NW,
// the shape's N granularity) keep fewer registers and smear M back each chunk. K and V
// come in through tensor layouts whose strides are multiples of 8 elements (16-byte
// rows) and which never clamp: every chunk lies inside its packed region or inside K/V.
// The chunk's keys (positions, weights) are staged in shared memory one chunk ahead,
// double-buffered, so a chunk costs one barrier.
//
// A head whose V holds a non-finite value (select_vcheck's flag) takes an exact slower
// route for P V: P goes to shared memory (-1 marking the pairs that contribute nothing)
// and each O element sums only the keys its row keeps, so a NaN or Inf reaches exactly
// the rows that keep its key; inside a matrix product 0 * NaN would reach every row of
// the tile. That route is a pipeline of its own (NFROUTE = 1, dispatched after the
// other over the same grid; each returns at once for the other's heads), so that the
// fast route declares no P scratch and leaves the shared memory to the driver's staging. A NaN or +inf score reaches its row only (spec section 7): its P, the row's
// L and O are NaN, and the epilogue tells l = NaN (LSE NaN) from l = 0 (no kept key).
//
// Specialization: DH (head dimension), BR (query rows per tile, divides 64), BC (keys
// per chunk, divides 128: packed regions hold PackRows = 2 * blockC rows, a multiple of
// 128, so a chunk never leaves its region; the _eq variants use DH instead), NT
// (invocations: the subgroup size with subgroup scope, the device's workgroup-scope
// invocation count otherwise), NW (the shape's N granularity). The host
// (internal/kern/attention_cm2.go) checks them against the device's flexible shapes.
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

// Build switches (the committed variants above; the others are for measurements, see
// bench/NOTES.md): WIDE (statistics as wide as the score tile), EQ (chunks of DH keys),
// SUMMMA (row sums as a product with a matrix of ones), KHRLOAD (K and V through plain
// KHR loads instead of tensor layouts), NOSCORE (timing only: the plain scaled score, no
// weights or keep test; wrong results), PACKCOL (the keep test reads one packed word
// per key, below), INITW (with PACKCOL: the weights enter the score through the
// product's accumulator, below). PACKCOL with INITW measured 20% slower on the H200
// (bench/NOTES.md): the broadcast load from shared memory costs more than it saves.
#ifndef WIDE
#define WIDE 0
#endif
#ifndef EQ
#define EQ 0
#endif
#ifndef SUMMMA
#define SUMMMA 0
#endif
#ifndef KHRLOAD
#define KHRLOAD 0
#endif
#ifndef NOSCORE
#define NOSCORE 0
#endif
#ifndef PACKCOL
#define PACKCOL 0
#endif
#ifndef INITW
#define INITW 0
#endif

layout(constant_id = 0) const uint DH = 64;
layout(constant_id = 1) const uint BR = 16;
layout(constant_id = 2) const uint BCSPEC = 16;
layout(local_size_x_id = 3) in;
layout(constant_id = 4) const uint NW = 8;  // the shape's N granularity
layout(constant_id = 5) const uint NFROUTE = 0;  // 1: the heads with non-finite V only

#if EQ
#define BC DH
#else
#define BC BCSPEC
#endif
#if WIDE
#define SW BC
#else
#define SW NW
#endif
// The per-row statistics, and O-shaped matrices.
#define STAT coopmat<float, SCOPE, BR, SW, gl_MatrixUseAccumulator>
#define OACC coopmat<float, SCOPE, BR, DH, gl_MatrixUseAccumulator>
#define SACC coopmat<float, SCOPE, BR, BC, gl_MatrixUseAccumulator>

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
// Two chunks' keys (chunk j in half j & 1): position (~0u: not a key, or done) and weight.
#if PACKCOL
// PACKCOL: the score is scale * S + add. A key's colData: x, the tile rows that keep
// it, [x & 0xffff, x >> 16] (rows keep list entries up to their rowT, which never grows
// with the row, and keys at or before their position), y, add's bits: the weight w, or
// with INITW 0, the product's accumulator starting from the chunk's w / scale (colInit,
// one row read for every row: stride 0), so that a chunk whose rows keep every key
// needs no per-element operation (unless a weight's w / scale is not finite: then
// colInit 0 and add w, the plain score).
shared float colInit[2 * BC];
shared uvec2 colData[2 * BC];
// chunkAdded[j & 1] == j + 1: some key of chunk j has add != 0.
shared uint chunkAdded[2];
#else
shared uint colIdx[2 * BC];
shared float colDelta[2 * BC];
#endif
// chunkMasked[j & 1] == j + 1: some row drops some key of chunk j (never reset: chunk
// numbers only grow).
shared uint chunkMasked[2];
// P of the chunk, on the non-finite V route only.
const uint PSH = NFROUTE * BR * BC + 1u;
shared float16_t Psh[PSH];

const float NEG_INF = -1.0 / 0.0;

// Per-tile state the per-element operations read.
uint qBase, oBase, listBase, ordBase, kvBase, vStride, nList;
int tilePos;
#if PACKCOL
uint rowA, rowB;  // the tile rows that may keep keys: [rowA, rowB] (PACKCOL)
#endif
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

#if PACKCOL
// Score of tile row r and chunk column c from the accumulated product s (-inf where the
// row does not keep the key; the chunk's keys in half h).
float scoreOp(const in uint r, const in uint c, const in float s, const in uint h) {
	uvec2 cd = colData[h + c];
	if (r < (cd.x & 0xffffu) || r > (cd.x >> 16)) return NEG_INF;
	float v = fma(P.scale, s, uintBitsToFloat(cd.y));
	if (P.softcap > 0.0) v = P.softcap * safeTanh(v / P.softcap);
	return v;
}

// The score of a chunk every row keeps whole, with an add or a softcap.
float scoreAllOp(const in uint r, const in uint c, const in float s, const in uint h) {
	float v = fma(P.scale, s, uintBitsToFloat(colData[h + c].y));
	if (P.softcap > 0.0) v = P.softcap * safeTanh(v / P.softcap);
	return v;
}
#else
// Score of tile row r and chunk column c from the raw product s: scaled, plus the key's
// weight, softcapped; -inf when the row does not keep the key (the chunk's keys in half
// h of colIdx/colDelta, e0 its first list entry).
float scoreOp(const in uint r, const in uint c, const in float s, const in uint e0, const in uint h) {
	uint idx = colIdx[h + c];
	if (e0 + c >= rowT[r] || (causal && int(idx) > tilePos + int(r)) || idx == ~0u) return NEG_INF;
	float v = fma(P.scale, s, colDelta[h + c]);
	if (P.softcap > 0.0) v = P.softcap * safeTanh(v / P.softcap);
	return v;
}

// The score of a chunk every row keeps whole: no test needed.
float scoreAllOp(const in uint r, const in uint c, const in float s, const in uint h) {
	float v = fma(P.scale, s, colDelta[h + c]);
	if (P.softcap > 0.0) v = P.softcap * safeTanh(v / P.softcap);
	return v;
}
#endif

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

#if PACKCOL
bool finite32(float x) { return (floatBitsToUint(x) & 0x7f800000u) != 0x7f800000u; }
#endif

// Stages chunk j (walk entries from e0 = j * BC) into half (j & 1) of the key arrays,
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
#if PACKCOL
		// Rows [lo, hi] keep entry e: rows from rowA at or after idx (causal), up to the
		// last whose rowT is above e (rowT never grows from rowA to rowB).
		uint lo = 0xffffu, hi = 0u;
		if (idx != ~0u && rowA <= rowB && e < rowT[rowA]) {
			int first = causal ? int(idx) - tilePos : 0;
			lo = uint(max(first, int(rowA)));
			uint a = rowA, b = rowB;  // the last row in [a, b] with rowT > e
			while (a < b) {
				uint m = (a + b + 1u) >> 1;
				if (rowT[m] > e) a = m; else b = m - 1u;
			}
			hi = a;
			if (lo > hi) lo = 0xffffu, hi = 0u;
		}
		float init = dl / P.scale, add = 0.0;
		if (INITW == 0 || !finite32(init)) {
			init = 0.0;
			add = dl;
			atomicMax(chunkAdded[j & 1u], j + 1u);
		}
		colInit[h + c] = init;
		colData[h + c] = uvec2(lo | (hi << 16), floatBitsToUint(add));
#else
		colIdx[h + c] = idx;
		colDelta[h + c] = dl;
#endif
		// Row r keeps key c when c0 + c < rowT[r] and idx <= tilePos + r: for every row
		// when c0 + c < minT and idx <= tilePos (row 0, the smallest position).
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
	if (packed && (bh < rg.bhFirst || bh - rg.bhFirst >= rg.bhCount)) return;  // another buffer's
	bool vBad = vflags[bIdx * P.Hkv + kvh] != 0u;
	if (vBad != (NFROUTE != 0u)) return;  // the other route's head

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
	if (lid < 2u) chunkMasked[lid] = 0u;
#if PACKCOL
	if (lid < 2u) chunkAdded[lid] = 0u;
#endif
	barrier();
	uint nWalk = 0u, minT = ~0u;
	for (uint r = 0u; r < BR; r++) {
		nWalk = max(nWalk, rowT[r]);
		minT = min(minT, rowT[r]);
	}
#if PACKCOL
	rowA = BR;
	rowB = 0u;
	for (uint r = 0u; r < BR; r++) {
		if (rowT[r] > 0u) {
			rowA = min(rowA, r);
			rowB = r;
		}
	}
#endif
	barrier();  // chunkMasked cleared before the first stage marks it
	if (nWalk > 0u) stageChunk(0u, minT);

	uint kSrc, vSrc, kStride, nRows;
	if (packed) {
		kSrc = region * np * DH;
		vSrc = kSrc;
		kStride = DH;
		vStride = DH;
		nRows = np;
	} else {
		// The host checks that offsets and strides are multiples of 8 elements; saying so
		// lets the compiler load whole 16-byte rows.
		kSrc = (P.kOff + bIdx * P.kSB + kvh * P.kSH) & ~7u;
		vSrc = (P.vOff + bIdx * P.vSB + kvh * P.vSH) & ~7u;
		kStride = P.kSL & ~7u;
		vStride = P.vSL & ~7u;
		nRows = P.Lk;
	}
	kvBase = vSrc;

#if !KHRLOAD
	// Row-major K and V of nRows rows from kSrc / vSrc; unclamped (every chunk is inside).
	tensorLayoutNV<2> tK = createTensorLayoutNV(2);
	tK = setTensorLayoutDimensionNV(tK, nRows, DH);
	tK = setTensorLayoutStrideNV(tK, kStride, 1);
	tensorLayoutNV<2> tV = createTensorLayoutNV(2);
	tV = setTensorLayoutDimensionNV(tV, nRows, DH);
	tV = setTensorLayoutStrideNV(tV, vStride, 1);
	tensorViewNV<2, false, 1, 0> transposed = createTensorViewNV(2, false, 1, 0);
#endif

	// Q through an fp32 accumulator (exact for 16-bit values): bf16 has no 16-bit
	// accumulator shape.
	OACC qacc;
	coopMatPerElementNV(qacc, qacc, loadQ);
	coopmat<T16, SCOPE, BR, DH, gl_MatrixUseA> qa = coopmat<T16, SCOPE, BR, DH, gl_MatrixUseA>(qacc);

	OACC O = OACC(0.0);
	STAT M = STAT(NEG_INF);
	STAT L = STAT(0.0);
#if SUMMMA
	coopmat<T16, SCOPE, BC, SW, gl_MatrixUseB> ones = coopmat<T16, SCOPE, BC, SW, gl_MatrixUseB>(1.0);
#endif
	barrier();  // chunk 0 staged
	[[dont_unroll]]
	for (uint j = 0u; j * BC < nWalk; j++) {
		uint e0 = j * BC, c0 = chunkStart(e0), h = (j & 1u) * BC;
		// The next chunk's keys, read while this one computes.
		if (e0 + BC < nWalk) stageChunk(j + 1u, minT);
		bool masked = chunkMasked[j & 1u] == j + 1u;

		coopmat<T16, SCOPE, DH, BC, gl_MatrixUseB> kt;
#if KHRLOAD
		coopMatLoad(kt, k16, kSrc + c0 * kStride, kStride, gl_CooperativeMatrixLayoutColumnMajor);
#else
		coopMatLoadTensorNV(kt, k16, kSrc, sliceTensorLayoutNV(tK, c0, BC, 0, DH), transposed);
#endif
#if PACKCOL
		SACC S;
#if INITW
		coopMatLoad(S, colInit, h, 0, gl_CooperativeMatrixLayoutRowMajor);  // w / scale, every row
#else
		S = SACC(0.0);
#endif
		S = coopMatMulAdd(qa, kt, S);
		if (masked) {
			coopMatPerElementNV(S, S, scoreOp, h);
		} else if (INITW == 0 || chunkAdded[j & 1u] == j + 1u || P.softcap > 0.0) {
			coopMatPerElementNV(S, S, scoreAllOp, h);
		} else {
			S = S * P.scale;
		}
#else
		SACC S = SACC(0.0);
		S = coopMatMulAdd(qa, kt, S);
#endif
#if NOSCORE
		S = S * P.scale;
#elif !PACKCOL
		if (masked) {
			coopMatPerElementNV(S, S, scoreOp, c0, h);
		} else {
			coopMatPerElementNV(S, S, scoreAllOp, h);
		}
#endif

		STAT rmax, Mold, eM, rsum;
		coopMatReduceNV(rmax, S, gl_CooperativeMatrixReduceRowNV, maxOp);
		Mold = M;
		coopMatPerElementNV(M, rmax, max2, Mold);
		coopMatPerElementNV(eM, Mold, expSub, M);
#if WIDE
#define MW M
#else
		SACC Mw;
		coopMatReduceNV(Mw, M, gl_CooperativeMatrixReduceRowNV, smearOp);
#define MW Mw
#endif
#if EQ
#define EMO eM
#else
		OACC eMo;
		coopMatReduceNV(eMo, eM, gl_CooperativeMatrixReduceRowNV, smearOp);
#define EMO eMo
#endif
		// A NaN or +inf score makes P, and so L and the row of O, NaN (a row only).
		if (NFROUTE == 0u) {
			coopMatPerElementNV(S, S, expSub, MW);  // S now holds P, in fp32
			coopmat<T16, SCOPE, BR, BC, gl_MatrixUseA> pa = coopmat<T16, SCOPE, BR, BC, gl_MatrixUseA>(S);
#if SUMMMA
			rsum = STAT(0.0);
			rsum = coopMatMulAdd(pa, ones, rsum);
#else
			coopMatReduceNV(rsum, S, gl_CooperativeMatrixReduceRowNV, addOp);
#endif
			L = eM * L + rsum;
			O = O * EMO;
			coopmat<T16, SCOPE, BC, DH, gl_MatrixUseB> vm;
#if KHRLOAD
			coopMatLoad(vm, v16, vSrc + c0 * vStride, vStride, gl_CooperativeMatrixLayoutRowMajor);
#else
			coopMatLoadTensorNV(vm, v16, vSrc, sliceTensorLayoutNV(tV, c0, BC, 0, DH));
#endif
			O = coopMatMulAdd(pa, vm, O);
		} else {
			coopMatPerElementNV(S, S, expSubMark, MW);  // P, -1 where nothing is contributed
			coopmat<float16_t, SCOPE, BR, BC, gl_MatrixUseAccumulator> ph = coopmat<float16_t, SCOPE, BR, BC, gl_MatrixUseAccumulator>(S);
			coopMatStore(ph, Psh, 0, BC, gl_CooperativeMatrixLayoutRowMajor);
			coopMatPerElementNV(S, S, noneToZero);
			coopMatReduceNV(rsum, S, gl_CooperativeMatrixReduceRowNV, addOp);
			L = eM * L + rsum;
			O = O * EMO;
			barrier();
			coopMatPerElementNV(O, O, addPV, c0);
		}
		barrier();  // chunk j + 1 staged; chunk j's half free for chunk j + 2
	}

	// O / l and LSE = m + log l; a row without kept keys gets 0 and -inf.
	STAT il;
	coopMatPerElementNV(il, L, invOrZero);
#if EQ
	O = O * il;
#else
	OACC ilo;
	coopMatReduceNV(ilo, il, gl_CooperativeMatrixReduceRowNV, smearOp);
	O = O * ilo;
#endif
	coopMatPerElementNV(O, O, storeO);
	coopMatPerElementNV(M, M, storeLSE, L, (bIdx * P.H + hIdx) * P.Lq);
}
