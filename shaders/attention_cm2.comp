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
// FlashAttention loop over chunks of BC rows with a keep test:
//   mode row, causal: the packed rows (select_pack) of U_b, b the tile's selection
//     block, in U_b's order (kappa descending); tile row r keeps packed row e when
//     e < rowT[r] (kappa_e >= tau_r: U_b holds tau_r at position rowT[r] - 1) and
//     idx_e <= p_r;
//   mode shared, row without causality: the packed rows of S_final, kept when
//     idx_e <= p_r (causal) or always;
//   mode none: K and V themselves, key e kept when ord_e != 0 (not padded) and e <= p_r
//     (causal).
// With causality the packed walk leaves out every key at or after the tile's first
// position (idx >= tilePos: kept by no row, or by only some of them) and a last "diagonal"
// walk takes the tile's own positions from K and V in place (bindings 12, 13), kept when
// ord_q != 0, q <= p_r and kappa_q >= tau_r (mode row; tau_r = (0, 0): every valid key)
// or kappa_q >= the last entry of S_final (mode shared). Those keys lie all over the
// kappa order, so without this nearly every packed chunk would hold one and need the
// per-element test; now a packed chunk needs it only past the tile's smallest rowT. A
// column no row keeps has position ~0u and scores -inf whatever its product (a NaN in
// a dropped key's K reaches no row).
// Everything between the loads and O stays in cooperative matrices (no shared-memory
// round trip of S or P). The running row max M and row sum L are BR x SW matrices whose
// every column holds the row's value: with SW = BC (the wide variants) they have the
// score tile's shape, so the max reduction lands in it directly and P = exp(S - M) needs
// no smear; the rescale of O needs one smear of exp(Mold - M) to O's shape. The narrow
// builds (SW = NW, the shape's N granularity) smear M back each chunk. K and V
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
// 128, so a chunk never leaves its region), NT
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
// bench/NOTES.md): WIDE (statistics as wide as the score tile), SUMMMA (row sums as a product with a matrix of ones), KHRLOAD (K and V through plain
// KHR loads instead of tensor layouts), NOSCORE (timing only: the plain scaled score, no
// weights or keep test; wrong results).
#ifndef WIDE
#define WIDE 0
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

layout(constant_id = 0) const uint DH = 64;
layout(constant_id = 1) const uint BR = 16;
layout(constant_id = 2) const uint BCSPEC = 16;
layout(local_size_x_id = 3) in;
layout(constant_id = 4) const uint NW = 8;  // the shape's N granularity
layout(constant_id = 5) const uint NFROUTE = 0;  // 1: the heads with non-finite V only

#define BC BCSPEC
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
layout(std430, binding = 12) readonly buffer BufK0 { T16 k0[]; };  // K in place
layout(std430, binding = 13) readonly buffer BufV0 { T16 v0[]; };  // V in place

// The packed K/V bound here may hold only some (batch, bias head) pairs (the host splits
// them over buffers below the device's allocation limit): bh in [rg.bhFirst, +bhCount).
layout(push_constant) uniform Range { uint bhFirst, bhCount; } rg;

shared uint rowT[BR];              // entries of the list a tile row may keep (0: none)
shared uvec2 rowTau[BR];           // the diagonal walk's threshold ((0, 0): all; ~0: none)
// Two chunks' keys (chunk j in half j & 1): position (~0u: kept by no row of the tile),
// weight, and ord (the diagonal walk's kappa test).
shared uint colIdx[2 * BC];
shared float colDelta[2 * BC];
shared uint colOrd[2 * BC];
// chunkMasked[j & 1] == j + 1: some row drops some key of chunk j (never reset: chunk
// numbers only grow).
shared uint chunkMasked[2];
// P of the chunk, on the non-finite V route only.
const uint PSH = NFROUTE * BR * BC + 1u;
shared float16_t Psh[PSH];

const float NEG_INF = -1.0 / 0.0;

// Per-tile state the per-element operations read.
uint qBase, oBase, listBase, ordBase, kvBase, vStride, nList;
uint kvBase0, vStride0;            // V in place
int tilePos, kLast;
bool packed, causal, rowCausal, splitDiag;
uint lid;
uint nWalk, minT, nMain, dq0;      // the packed walk's length and chunks; the diagonal's start
float gScale, gCap;                // P.scale and P.softcap, read once

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

// The score from the raw product s and the key's weight d: scaled, plus d, softcapped.
float finish(const in float s, const in float d) {
	float v = fma(gScale, s, d);
	if (gCap > 0.0) v = gCap * safeTanh(v / gCap);
	return v;
}

// Score of tile row r and chunk column c (half h of colIdx/colDelta; c0 the list entry
// of column 0): -inf when the row does not keep the key.
float scoreOp(const in uint r, const in uint c, const in float s, const in uint c0, const in uint h) {
	uint idx = colIdx[h + c];
	if (idx == ~0u || c0 + c >= rowT[r] || (causal && int(idx) > tilePos + int(r))) return NEG_INF;
	return finish(s, colDelta[h + c]);
}

// The score of a chunk whose keys every row keeps, but for those that no row keeps.
float dropOp(const in uint r, const in uint c, const in float s, const in uint h) {
	return colIdx[h + c] == ~0u ? NEG_INF : finish(s, colDelta[h + c]);
}

// The diagonal walk's score: key q kept when q <= p_r and kappa_q >= rowTau[r].
float diagOp(const in uint r, const in uint c, const in float s, const in uint h) {
	uint q = colIdx[h + c];
	if (q == ~0u || int(q) > tilePos + int(r)) return NEG_INF;
	uvec2 t = rowTau[r];
	if (t != uvec2(0u) && !keyGE(uvec2(colOrd[h + c], q), t)) return NEG_INF;
	return finish(s, colDelta[h + c]);
}

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
// the non-finite V route (inPlace: a diagonal chunk, V read in place).
float addPV(const in uint r, const in uint c, const in float o, const in uint c0, const in bool inPlace) {
	float sum = o;
	[[dont_unroll]]
	for (uint k = 0u; k < BC; k++) {
		float p = float(Psh[r * BC + k]);
		if (isNoneMark(p)) continue;
		float v = inPlace ? float(v0[kvBase0 + (c0 + k) * vStride0 + c]) : float(v16[kvBase + (c0 + k) * vStride + c]);
		sum = fma(p, v, sum);
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

// Where chunk j starts (c0: list entry, or key position, of its column 0) and the
// first column not already done (columns below skip are). Chunks j < nMain walk the
// list (mode none: K in place, whose last chunk starts earlier when it would pass Lk;
// the host guarantees Lk >= BC), the others the tile's own positions from dq0 on.
void chunkAt(uint j, out uint c0, out uint skip) {
	uint s = j < nMain ? j * BC : dq0 + (j - nMain) * BC;
	c0 = ((!packed || j >= nMain) && s + BC > P.Lk) ? P.Lk - BC : s;
	skip = s;
}

// Stages chunk j into half (j & 1) of colIdx/colDelta/colOrd, and marks it in
// chunkMasked when some row of the tile keeps some of its keys and another does not.
void stageChunk(uint j) {
	uint c0, skip, h = (j & 1u) * BC;
	chunkAt(j, c0, skip);
	bool diag = j >= nMain;
	for (uint c = lid; c < BC; c += gl_WorkGroupSize.x) {
		uint e = c0 + c, idx = ~0u, o = 0u;
		float dl = 0.0;
		if (diag) {
			if (e >= skip && int(e) <= kLast) {
				o = ordb[ordBase + e];
				if (o != 0u) idx = e;
			}
		} else if (e >= skip && e < nWalk) {
			if (packed) {
				uvec2 ent = ub[listBase + e];
				o = ent.x;
				idx = ent.y;
				if (splitDiag && int(idx) >= tilePos) idx = ~0u;  // the diagonal walk's, or no row's
			} else {
				o = ordb[ordBase + e];
				idx = o != 0u ? e : ~0u;
			}
		}
		if (idx != ~0u) dl = unord(o);
		colIdx[h + c] = idx;
		colDelta[h + c] = dl;
		colOrd[h + c] = o;
		// Row r keeps list entry e when e < rowT[r] and idx <= tilePos + r: every row
		// when e < minT and idx <= tilePos (row 0, the smallest position).
		if (!diag && idx != ~0u && (e >= minT || (causal && int(idx) > tilePos))) atomicMax(chunkMasked[j & 1u], j + 1u);
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
	splitDiag = packed && causal;
	gScale = P.scale;
	gCap = P.softcap;
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
	kLast = causal ? min(lastPos, int(P.Lk) - 1) : int(P.Lk) - 1;
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
		uvec2 dt = uvec2(~0u);
		if (ri >= 0 && ri < int(P.Lq) && nList > 0u && (!causal || pr >= 0)) {
			t = nList;
			dt = uvec2(0u);
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
				dt = tau;
			} else if (splitDiag) {
				dt = ub[listBase + nList - 1u];  // S_final's last (smallest) entry
			}
		}
		rowT[r] = t;
		rowTau[r] = dt;
	}
	if (lid < 2u) chunkMasked[lid] = 0u;
	barrier();
	nWalk = 0u;
	minT = ~0u;
	for (uint r = 0u; r < BR; r++) {
		nWalk = max(nWalk, rowT[r]);
		minT = min(minT, rowT[r]);
	}
	// The chunks: the list's (or K's), then the diagonal's, keys dq0 .. kLast in place.
	nMain = (nWalk + BC - 1u) / BC;
	dq0 = uint(max(tilePos, 0));
	uint nChunks = nMain;
	if (splitDiag && nWalk > 0u && kLast >= int(dq0)) nChunks += (uint(kLast) - dq0 + BC) / BC;
	barrier();  // chunkMasked cleared before the first stage marks it
	if (nChunks > 0u) stageChunk(0u);

	uint kSrc, vSrc, kStride;
	// K and V in place. The host checks that offsets and strides are multiples of 8
	// elements; saying so lets the compiler load whole 16-byte rows.
	uint kSrc0 = (P.kOff + bIdx * P.kSB + kvh * P.kSH) & ~7u, kStride0 = P.kSL & ~7u;
	kvBase0 = (P.vOff + bIdx * P.vSB + kvh * P.vSH) & ~7u;
	vStride0 = P.vSL & ~7u;
	if (packed) {
		kSrc = region * np * DH;
		vSrc = kSrc;
		kStride = DH;
		vStride = DH;
	} else {
		kSrc = kSrc0;
		vSrc = kvBase0;
		kStride = kStride0;
		vStride = vStride0;
	}
	kvBase = vSrc;

#if !KHRLOAD
	// Row-major K and V: the packed region (np rows) or K/V in place (Lk rows); unclamped,
	// every chunk lies inside.
	tensorLayoutNV<2> tK = createTensorLayoutNV(2);
	tK = setTensorLayoutDimensionNV(tK, packed ? np : P.Lk, DH);
	tK = setTensorLayoutStrideNV(tK, kStride, 1);
	tensorLayoutNV<2> tV = createTensorLayoutNV(2);
	tV = setTensorLayoutDimensionNV(tV, packed ? np : P.Lk, DH);
	tV = setTensorLayoutStrideNV(tV, vStride, 1);
	tensorLayoutNV<2> tK0 = createTensorLayoutNV(2);
	tK0 = setTensorLayoutDimensionNV(tK0, P.Lk, DH);
	tK0 = setTensorLayoutStrideNV(tK0, kStride0, 1);
	tensorLayoutNV<2> tV0 = createTensorLayoutNV(2);
	tV0 = setTensorLayoutDimensionNV(tV0, P.Lk, DH);
	tV0 = setTensorLayoutStrideNV(tV0, vStride0, 1);
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
	for (uint j = 0u; j < nChunks; j++) {
		uint c0, skip, h = (j & 1u) * BC;
		chunkAt(j, c0, skip);
		bool diag = j >= nMain;
		// The next chunk's keys, read while this one computes.
		if (j + 1u < nChunks) stageChunk(j + 1u);
		bool masked = chunkMasked[j & 1u] == j + 1u;

		coopmat<T16, SCOPE, DH, BC, gl_MatrixUseB> kt;
#if KHRLOAD
		if (diag) coopMatLoad(kt, k0, kSrc0 + c0 * kStride0, kStride0, gl_CooperativeMatrixLayoutColumnMajor);
		else coopMatLoad(kt, k16, kSrc + c0 * kStride, kStride, gl_CooperativeMatrixLayoutColumnMajor);
#else
		if (diag) coopMatLoadTensorNV(kt, k0, kSrc0, sliceTensorLayoutNV(tK0, c0, BC, 0, DH), transposed);
		else coopMatLoadTensorNV(kt, k16, kSrc, sliceTensorLayoutNV(tK, c0, BC, 0, DH), transposed);
#endif
		SACC S = SACC(0.0);
		S = coopMatMulAdd(qa, kt, S);
#if NOSCORE
		S = S * gScale;
#else
		if (diag) {
			coopMatPerElementNV(S, S, diagOp, h);
		} else if (masked) {
			coopMatPerElementNV(S, S, scoreOp, c0, h);
		} else {
			coopMatPerElementNV(S, S, dropOp, h);
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
		OACC eMo;
		coopMatReduceNV(eMo, eM, gl_CooperativeMatrixReduceRowNV, smearOp);
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
			O = O * eMo;
			coopmat<T16, SCOPE, BC, DH, gl_MatrixUseB> vm;
#if KHRLOAD
			if (diag) coopMatLoad(vm, v0, kvBase0 + c0 * vStride0, vStride0, gl_CooperativeMatrixLayoutRowMajor);
			else coopMatLoad(vm, v16, vSrc + c0 * vStride, vStride, gl_CooperativeMatrixLayoutRowMajor);
#else
			if (diag) coopMatLoadTensorNV(vm, v0, kvBase0, sliceTensorLayoutNV(tV0, c0, BC, 0, DH));
			else coopMatLoadTensorNV(vm, v16, vSrc, sliceTensorLayoutNV(tV, c0, BC, 0, DH));
#endif
			O = coopMatMulAdd(pa, vm, O);
		} else {
			coopMatPerElementNV(S, S, expSubMark, MW);  // P, -1 where nothing is contributed
			coopmat<float16_t, SCOPE, BR, BC, gl_MatrixUseAccumulator> ph = coopmat<float16_t, SCOPE, BR, BC, gl_MatrixUseAccumulator>(S);
			coopMatStore(ph, Psh, 0, BC, gl_CooperativeMatrixLayoutRowMajor);
			coopMatPerElementNV(S, S, noneToZero);
			coopMatReduceNV(rsum, S, gl_CooperativeMatrixReduceRowNV, addOp);
			L = eM * L + rsum;
			O = O * eMo;
			barrier();
			coopMatPerElementNV(O, O, addPV, c0, diag);
		}
		barrier();  // chunk j + 1 staged; chunk j's half free for chunk j + 2
	}

	// O / l and LSE = m + log l; a row without kept keys gets 0 and -inf.
	STAT il;
	coopMatPerElementNV(il, L, invOrZero);
	OACC ilo;
	coopMatReduceNV(ilo, il, gl_CooperativeMatrixReduceRowNV, smearOp);
	O = O * ilo;
	coopMatPerElementNV(O, O, storeO);
	coopMatPerElementNV(M, M, storeLSE, L, (bIdx * P.H + hIdx) * P.Lq);
}
