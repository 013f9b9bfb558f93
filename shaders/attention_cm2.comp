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
// The keys come as one contiguous matrix per tile, so the kernel is a FlashAttention
// loop over chunks of BC rows (the walk), then, with causality, over the tile's own
// positions (the diagonal):
//   mode row, causal: the walk reads the packed rows (select_pack) of U_b, b the tile's
//     selection block, in U_b's order (kappa descending); tile row r keeps packed row e
//     when e < rowT[r] (kappa_e >= tau_r: U_b holds tau_r at position rowT[r] - 1) and
//     idx_e <= p_r;
//   mode shared, row without causality: the packed rows of S_final, kept when
//     idx_e <= p_r (causal) or always;
//   mode none: K and V themselves, key e kept when ord_e != 0 (not padded) and e <= p_r
//     (causal).
// With causality the walk leaves out every key at or after the tile's first position
// p_0: those are the diagonal's, BR keys of K and V read in place (bindings 12 and 13)
// and kept by row r when at most p_r, valid and ranked at least rowTau[r] (tau_r; the
// smallest entry of S_final in mode shared). So in the walk a key is either taken by
// every row, up to each row's rank limit rowT, or by none: the keep test of the walk is
// a column's, and the weights with it enter the score through a product. Each chunk's
// weights over the scale, w / scale, split into NPART 16-bit parts (hi, lo, ...: rows of
// a KW x BC matrix, -inf for a column no row takes), so that S = scale (Q K^T + ones W)
// with ones a BR x KW matrix of ones: no per-element operation reads shared memory. The
// chunks that need one are few: those past the smallest rank limit (some row stops in
// them) and those whose w / scale overflows the parts; they take the per-element score
// (scoreOp), as does every chunk on the non-finite route.
//
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
// The product sees every pair, kept or not: a NaN or an infinity in Q or K would reach
// pairs that contribute nothing, and 0 * NaN in P V every row of the tile. A head whose
// V, K or Q holds a non-finite value (select_vcheck's flags: V and K at [b][kvh], Q at
// [b][h] from word FLAGQ) takes an exact slower route: every score per element, the
// keep test before the product's value, and P V through shared memory (-1 marking the
// pairs that contribute nothing), each O element summing only the keys its row keeps,
// so a NaN or Inf reaches exactly the rows that keep its key. That route is a pipeline
// of its own (NFROUTE = 1, dispatched after the other over the same grid; each returns
// at once for the other's heads), so that the fast route declares no P scratch and
// leaves the shared memory to the driver's staging. A NaN or +inf weight or score
// reaches its row only (spec section 7): its P, the row's L and O are NaN, and the
// epilogue tells l = NaN (LSE NaN) from l = 0 (no kept key).
//
// Specialization: DH (head dimension), BR (query rows per tile, divides 64), BC (keys
// per chunk, divides 128: packed regions hold PackRows = 2 * blockC rows, a multiple of
// 128, so a chunk never leaves its region; the _eq variants use DH instead), NT
// (invocations: the subgroup size with subgroup scope, the device's workgroup-scope
// invocation count otherwise), NW and KW (the shape's N and K granularity). The host
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
#define NPART 3
#define HIMASK 0xffff0000u  // the bits of a float32 that a bfloat16 holds
#else
#define T16 float16_t
#define NPART 2
#define HIMASK 0xffffe000u  // a float16's 11 significant bits
#endif

#include "dma_common.glsl"

// Build switches (the committed variants above; the others are for measurements, see
// bench/NOTES.md): WIDE (statistics as wide as the score tile), EQ (chunks of DH keys),
// SUMMMA (row sums as a product with a matrix of ones), KHRLOAD (K and V through plain
// KHR loads instead of tensor layouts), NOSCORE (timing only: the plain scaled score, no
// weights or keep test; wrong results), SCOREOP (every chunk of the walk through the
// per-element score, the kernel before the weights' product).
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
#ifndef SCOREOP
#define SCOREOP 0
#endif
// Part k of a chunk's weights: row k of its half's KW x BC matrix.
#define WROW(k) ((k) * BC)
#define WHALF (KW * BC)

layout(constant_id = 0) const uint DH = 64;
layout(constant_id = 1) const uint BR = 16;
layout(constant_id = 2) const uint BCSPEC = 16;
layout(local_size_x_id = 3) in;
layout(constant_id = 4) const uint NW = 8;  // the shape's N granularity
layout(constant_id = 5) const uint NFROUTE = 0;  // 1: the heads with non-finite V, K or Q only
layout(constant_id = 6) const uint KW = 16;  // the shape's K granularity: the weights' product depth

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
#define VMAT coopmat<T16, SCOPE, BC, DH, gl_MatrixUseB>

// T16: float16_t, or bfloat16_t in the bf16 variants (operands of the products too).
layout(std430, binding = 1) readonly buffer BufQ { T16 q16[]; };
layout(std430, binding = 2) readonly buffer BufK { T16 k16[]; };  // K, or packed GK
layout(std430, binding = 3) readonly buffer BufV { T16 v16[]; };  // V, or packed GV
layout(std430, binding = 4) readonly buffer BufOrd { uint ordb[]; };
layout(std430, binding = 5) readonly buffer BufU { uvec2 ub[]; };
layout(std430, binding = 6) readonly buffer BufUC { uint ucount[]; };
layout(std430, binding = 7) readonly buffer BufTau { uvec2 taub[]; };
layout(std430, binding = 8) readonly buffer BufFlags { uint vflags[]; };  // above
layout(std430, binding = 10) buffer BufO { T16 o16[]; };
layout(std430, binding = 11) writeonly buffer BufLSE { float lseb[]; };
layout(std430, binding = 12) readonly buffer BufKR { T16 kr16[]; };  // K (the diagonal)
layout(std430, binding = 13) readonly buffer BufVR { T16 vr16[]; };  // V (the diagonal)

// The packed K/V bound here may hold only some (batch, bias head) pairs (the host splits
// them over buffers below the device's allocation limit): bh in [rg.bhFirst, +bhCount).
layout(push_constant) uniform Range { uint bhFirst, bhCount; } rg;

shared uint rowT[BR];              // entries of the list a tile row may keep (0: none)
shared uvec2 rowTau[BR];           // the least kappa a row keeps on the diagonal
// Two chunks' keys (chunk j in half j & 1): position (~0u: no row takes it from the
// walk), weight (-inf then), and w / scale in parts (rows 0 .. NPART-1 of a KW x BC
// matrix a half; the other rows stay 0).
shared uint colIdx[2 * BC];
shared float colDelta[2 * BC];
shared T16 colW[2 * WHALF];
// chunkSlow[j & 1] == j + 1: chunk j needs the per-element score (never reset: chunk
// numbers only grow).
shared uint chunkSlow[2];
shared uint diagOrd[BC];           // ord of the diagonal chunk's keys (0: not one)
// P of the chunk, on the non-finite route only.
const uint PSH = NFROUTE * BR * BC + 1u;
shared float16_t Psh[PSH];

const float NEG_INF = -1.0 / 0.0;

// Per-tile state the per-element operations read.
uint qBase, oBase, listBase, ordBase, nList;
int tilePos;
bool packed, causal, rowCausal;
uint lid;

// Where Q's flags start (kern.cm2FlagQ).
uint flagQ() { return (P.B * P.Hkv + 63u) / 64u * 64u; }

bool finite32(float x) { return (floatBitsToUint(x) & 0x7f800000u) != 0x7f800000u; }

float safeTanh(float x) {
	float t = exp(-2.0 * abs(x));
	float y = (1.0 - t) / (1.0 + t);
	return x < 0.0 ? -y : y;
}

// The softcap of a product's score; -inf (a column no row takes) stays. A weight of -inf
// caps to -softcap: chunks with a non-finite weight take scoreOp under a softcap.
float capOp(const in uint r, const in uint c, const in float v) { return isNegInfF(v) ? v : P.softcap * safeTanh(v / P.softcap); }

// Q element (r, c) of the tile; rows outside [0, Lq) are zero.
float loadQ(const in uint r, const in uint c, const in float x) {
	int ri = tilePos + int(r) - P.posOffset;
	if (ri < 0 || ri >= int(P.Lq)) return 0.0;
	return float(q16[qBase + uint(ri) * P.qSL + c]);
}

// Score of tile row r and column c of a walk chunk from the raw product s: scaled, plus
// the key's weight, softcapped; -inf when the row does not keep the key (the chunk's
// keys in half h of colIdx/colDelta, e0 its first list entry). The keep test comes
// first: on the non-finite route s may be NaN for a pair that is not kept.
float scoreOp(const in uint r, const in uint c, const in float s, const in uint e0, const in uint h) {
	if (colIdx[h + c] == ~0u || e0 + c >= rowT[r]) return NEG_INF;
	float v = fma(P.scale, s, colDelta[h + c]);
	if (P.softcap > 0.0) v = P.softcap * safeTanh(v / P.softcap);
	return v;
}

// Score of tile row r and column c of a diagonal chunk from key s0 on (keys of the walk
// or past the tile have ord 0 in diagOrd).
float diagOp(const in uint r, const in uint c, const in float s, const in uint s0) {
	uint o = diagOrd[c], q = s0 + c;
	if (o == 0u || int(q) > tilePos + int(r) || rowT[r] == 0u || !keyGE(uvec2(o, q), rowTau[r])) return NEG_INF;
	float v = fma(P.scale, s, unord(o));
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
// The non-finite route's P: exp(a - m), and -1 for a pair that contributes nothing
// (a = -inf: not kept, or score -inf), so that a kept key whose P rounds to 0 still
// passes a NaN in V on; noneToZero then gives the row sums their 0.
float expSubMark(const in uint r, const in uint c, const in float a, const in float m) {
	return isNegInfF(a) ? -1.0 : exp(a - m);
}
float noneToZero(const in uint r, const in uint c, const in float p) { return isNoneMark(p) ? 0.0 : p; }
// 1 / l, 0 for a row without kept keys (l = 0); NaN for a row with a NaN or +inf score.
float invOrZero(const in uint r, const in uint c, const in float l) { return !isZeroF(l) ? 1.0 / l : 0.0; }

// O(r, c) + sum over the chunk's keys k that row r keeps (P not -1) of P(r, k) V(k, c),
// V's rows from vRow0 (packed V, or V itself on the diagonal): the non-finite route.
float addPV(const in uint r, const in uint c, const in float o, const in uint vRow0, const in uint vStride, const in bool raw) {
	float sum = o;
	[[dont_unroll]]
	for (uint k = 0u; k < BC; k++) {
		float p = float(Psh[r * BC + k]);
		uint at = vRow0 + k * vStride + c;
		if (!isNoneMark(p)) sum = fma(p, float(raw ? vr16[at] : v16[at]), sum);
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

// Stages chunk j of the walk (entries from e0 = j * BC, those before walkEnd) into half
// (j & 1) of the key arrays, and marks it in chunkSlow when it needs the per-element
// score: some row stops in it (an entry at or past minT, the tile's smallest rowT), a
// w / scale overflows its parts, or a weight is not finite under a softcap.
void stageChunk(uint j, uint minT, uint walkEnd) {
	uint e0 = j * BC, c0 = chunkStart(e0), skip = c0 != e0 ? e0 : 0u, h = (j & 1u) * BC;
	uint hw = (j & 1u) * WHALF;
	for (uint c = lid; c < BC; c += gl_WorkGroupSize.x) {
		uint e = c0 + c, idx = ~0u, o = 0u;
		if (e >= skip && e < walkEnd) {
			if (packed) {
				uvec2 ent = ub[listBase + e];
				o = ent.x;
				idx = ent.y;
			} else {
				o = ordb[ordBase + e];
				idx = o != 0u ? e : ~0u;
			}
			// The tile's own positions and later: the diagonal's, or no row's.
			if (causal && int(idx) >= tilePos) idx = ~0u;
		}
		float dl = idx != ~0u ? unord(o) : NEG_INF;
		colIdx[h + c] = idx;
		colDelta[h + c] = dl;
		// w / scale in parts cut from its bits, so that each converts exactly (a compiler
		// may fold float(T16(x)) back to x); a non-finite one is the first part alone.
		float v = dl / P.scale;
		bool fin = finite32(v);
		float hi = fin ? uintBitsToFloat(floatBitsToUint(v) & HIMASK) : v;
		float rest = fin ? v - hi : 0.0;
		colW[hw + WROW(0u) + c] = T16(hi);
#if NPART > 2
		float mid = uintBitsToFloat(floatBitsToUint(rest) & HIMASK);
		colW[hw + WROW(1u) + c] = T16(mid);
		colW[hw + WROW(2u) + c] = T16(rest - mid);
		bool overflow = false;
#else
		colW[hw + WROW(1u) + c] = T16(rest);
		bool overflow = fin && abs(hi) > 65504.0;  // past float16's range
#endif
		if (idx != ~0u && (e >= minT || overflow || (!fin && P.softcap > 0.0))) atomicMax(chunkSlow[j & 1u], j + 1u);
	}
}

// Folds the chunk's scores S into the running statistics and O: P = exp(S - M) with the
// new row max M, L and O rescaled, O += P V (vm), or on the non-finite route through
// shared memory and addPV from V's rows at vRow0.
void absorb(inout SACC S, inout OACC O, inout STAT M, inout STAT L, const in VMAT vm, uint vRow0, uint vStride, bool raw) {
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
		coopmat<T16, SCOPE, BC, SW, gl_MatrixUseB> ones = coopmat<T16, SCOPE, BC, SW, gl_MatrixUseB>(1.0);
		rsum = STAT(0.0);
		rsum = coopMatMulAdd(pa, ones, rsum);
#else
		coopMatReduceNV(rsum, S, gl_CooperativeMatrixReduceRowNV, addOp);
#endif
		L = eM * L + rsum;
		O = O * EMO;
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
		coopMatPerElementNV(O, O, addPV, vRow0, vStride, raw);
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
	bool bad = vflags[bIdx * P.Hkv + kvh] != 0u || vflags[flagQ() + bIdx * P.H + hIdx] != 0u;
	if (bad != (NFROUTE != 0u)) return;  // the other route's head

	int t0 = P.posOffset >= 0 ? P.posOffset / int(BR) : -((-P.posOffset + int(BR) - 1) / int(BR));
	tilePos = (t0 + int(gl_WorkGroupID.x)) * int(BR);
	int firstPos = max(tilePos, P.posOffset);
	int lastPos = min(tilePos + int(BR) - 1, P.posOffset + int(P.Lq) - 1);

	qBase = P.qOff + bIdx * P.qSB + hIdx * P.qSH;
	oBase = P.oOff + bIdx * P.oSB + hIdx * P.oSH;
	ordBase = bh * P.Lk;

	// The tile's key list: its length nList, where its rows start, how far each row may
	// go (rowT) and, for the diagonal, the least key each row keeps (rowTau).
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
	// S_final's smallest entry (mode shared, causal): what a diagonal key must reach.
	uvec2 least = uvec2(0u);
	if (packed && !rowCausal && nList > 0u) least = ub[listBase + nList - 1u];
	for (uint r = lid; r < BR; r += gl_WorkGroupSize.x) {
		int pr = tilePos + int(r);
		int ri = pr - P.posOffset;
		uint t = 0u;
		uvec2 tau = least;
		if (ri >= 0 && ri < int(P.Lq) && nList > 0u && (!causal || pr >= 0)) {
			t = nList;
			if (rowCausal) {
				tau = taub[bh * P.Lq + uint(ri)];
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
		rowTau[r] = tau;
	}
	if (lid < 2u) chunkSlow[lid] = 0u;
	for (uint i = lid; i < 2u * WHALF; i += gl_WorkGroupSize.x) colW[i] = T16(0.0);
	barrier();
	// The walk: entries [0, walkEnd) of the list, or keys of K (mode none; with
	// causality those before the tile), chunks up to the largest rowT (nWalk). minT: the
	// smallest rowT of the tile's rows in [0, Lq) (rows past it compute unread values).
	uint nWalk = 0u, minT = ~0u;
	for (uint r = 0u; r < BR; r++) {
		nWalk = max(nWalk, rowT[r]);
		int ri = tilePos + int(r) - P.posOffset;
		if (ri >= 0 && ri < int(P.Lq)) minT = min(minT, rowT[r]);
	}
	uint walkEnd = nList;
	if (!packed && causal) {
		walkEnd = uint(clamp(tilePos, 0, int(nList)));
		nWalk = min(nWalk, walkEnd);
	}
	if (nWalk > 0u) stageChunk(0u, minT, walkEnd);

	uint kSrc, vSrc, kStride, vStride, nRows;
	// K and V in place: the host checks that offsets and strides are multiples of 8
	// elements; saying so lets the compiler load whole 16-byte rows.
	uint kRaw = (P.kOff + bIdx * P.kSB + kvh * P.kSH) & ~7u;
	uint vRaw = (P.vOff + bIdx * P.vSB + kvh * P.vSH) & ~7u;
	uint kRawStride = P.kSL & ~7u, vRawStride = P.vSL & ~7u;
	if (packed) {
		kSrc = region * np * DH;
		vSrc = kSrc;
		kStride = DH;
		vStride = DH;
		nRows = np;
	} else {
		kSrc = kRaw;
		vSrc = vRaw;
		kStride = kRawStride;
		vStride = vRawStride;
		nRows = P.Lk;
	}

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
	coopmat<T16, SCOPE, BR, KW, gl_MatrixUseA> ones = coopmat<T16, SCOPE, BR, KW, gl_MatrixUseA>(1.0);

	OACC O = OACC(0.0);
	STAT M = STAT(NEG_INF);
	STAT L = STAT(0.0);
	barrier();  // chunk 0 staged
	[[dont_unroll]]
	for (uint j = 0u; j * BC < nWalk; j++) {
		uint e0 = j * BC, c0 = chunkStart(e0), h = (j & 1u) * BC;
		// The next chunk's keys, read while this one computes.
		if (e0 + BC < nWalk) stageChunk(j + 1u, minT, walkEnd);

		coopmat<T16, SCOPE, DH, BC, gl_MatrixUseB> kt;
#if KHRLOAD
		coopMatLoad(kt, k16, kSrc + c0 * kStride, kStride, gl_CooperativeMatrixLayoutColumnMajor);
#else
		coopMatLoadTensorNV(kt, k16, kSrc, sliceTensorLayoutNV(tK, c0, BC, 0, DH), transposed);
#endif
		SACC S = SACC(0.0);
		S = coopMatMulAdd(qa, kt, S);
#if NOSCORE
		S = S * P.scale;
#else
		if (NFROUTE != 0u || SCOREOP != 0 || chunkSlow[j & 1u] == j + 1u) {
			coopMatPerElementNV(S, S, scoreOp, c0, h);
		} else {
			// S = scale (Q K^T + ones W): the weights, and -inf for a column no row takes.
			coopmat<T16, SCOPE, KW, BC, gl_MatrixUseB> wt;
			coopMatLoad(wt, colW, (j & 1u) * WHALF, BC, gl_CooperativeMatrixLayoutRowMajor);
			S = coopMatMulAdd(ones, wt, S);
			S = S * P.scale;
			if (P.softcap > 0.0) coopMatPerElementNV(S, S, capOp);
		}
#endif
		VMAT vm;
#if KHRLOAD
		coopMatLoad(vm, v16, vSrc + c0 * vStride, vStride, gl_CooperativeMatrixLayoutRowMajor);
#else
		coopMatLoadTensorNV(vm, v16, vSrc, sliceTensorLayoutNV(tV, c0, BC, 0, DH));
#endif
		absorb(S, O, M, L, vm, vSrc + c0 * vStride, vStride, false);
		barrier();  // chunk j + 1 staged; chunk j's half free for chunk j + 2
	}

	// The diagonal: keys [dLo, dHi), the tile's positions, read in place in chunks of
	// BC (a last chunk past Lk starts earlier; its keys before the chunk's are left out).
	int dLo = max(tilePos, 0), dHi = min(tilePos + int(BR), kLast + 1);
	if (causal && nList > 0u) {
#if !KHRLOAD
		tensorLayoutNV<2> tKR = createTensorLayoutNV(2);
		tKR = setTensorLayoutDimensionNV(tKR, P.Lk, DH);
		tKR = setTensorLayoutStrideNV(tKR, kRawStride, 1);
		tensorLayoutNV<2> tVR = createTensorLayoutNV(2);
		tVR = setTensorLayoutDimensionNV(tVR, P.Lk, DH);
		tVR = setTensorLayoutStrideNV(tVR, vRawStride, 1);
#endif
		[[dont_unroll]]
		for (int d0 = dLo; d0 < dHi; d0 += int(BC)) {
			uint s0 = min(uint(d0), P.Lk - BC);
			for (uint c = lid; c < BC; c += gl_WorkGroupSize.x) {
				uint q = s0 + c;
				diagOrd[c] = int(q) >= d0 && int(q) < dHi ? ordb[ordBase + q] : 0u;
			}
			barrier();
			coopmat<T16, SCOPE, DH, BC, gl_MatrixUseB> kt;
#if KHRLOAD
			coopMatLoad(kt, kr16, kRaw + s0 * kRawStride, kRawStride, gl_CooperativeMatrixLayoutColumnMajor);
#else
			coopMatLoadTensorNV(kt, kr16, kRaw, sliceTensorLayoutNV(tKR, s0, BC, 0, DH), transposed);
#endif
			SACC S = SACC(0.0);
			S = coopMatMulAdd(qa, kt, S);
			coopMatPerElementNV(S, S, diagOp, s0);
			VMAT vm;
#if KHRLOAD
			coopMatLoad(vm, vr16, vRaw + s0 * vRawStride, vRawStride, gl_CooperativeMatrixLayoutRowMajor);
#else
			coopMatLoadTensorNV(vm, vr16, vRaw, sliceTensorLayoutNV(tVR, s0, BC, 0, DH));
#endif
			absorb(S, O, M, L, vm, vRaw + s0 * vRawStride, vRawStride, true);
			barrier();  // diagOrd (and Psh) free
		}
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
