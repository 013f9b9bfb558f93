#version 460
// variant: row -DROWPASS=1
// variant: key
// DMA attention backward through VK_KHR_cooperative_matrix (spec section 4; host side:
// internal/kern/backward_cm.go), for devices without VK_NV_cooperative_matrix2. fp16
// storage and operands, fp32 scores, probabilities, accumulators and gradients; modes
// row and shared over the packed kept keys (select_pack's GK, GV). The passes and their
// sums are attention_bwd_cm2.comp's (read its header): a row pass (Dsum, dQ) over the
// forward's query tiles and chunks of BC packed keys, and a key pass (dK, dV, dDelta per
// packed region into PdK, PdV, PdD) over tiles of packed keys and chunks of KC rows,
// followed by attention_bwd_cm2_reduce.comp. No float atomics: bit-identical run to run.
//
// KHR cooperative matrices have no per-element operations and no defined element ->
// (row, column) map, so the scores S (and dP) go to shared memory, where the
// invocations apply scale, weight, softcap, the keep test, exp and dS element by
// element; P and dS come back as fp16 A operands. The chunk's rows (k and v in the row
// pass, q and dO in the key pass) go through shared memory too, as in
// attention_cm.comp: lavapipe crashes on some loads of them straight from the storage
// buffers (not isolated further). A workgroup is NSG subgroups of SG
// invocations; subgroup g owns the band of MS rows [g MS, (g + 1) MS) of the tile
// (query rows in the row pass, packed keys in the key pass) with its accumulators (dQ;
// dK and dV) in registers, MS x NS each, DH / NS of them. A chunk whose raw products hold
// a NaN or an infinity (a non-finite K, or Q or dO) adds its terms by scalar loops over
// the pairs that contribute (as attention_cm2.comp's non-finite V route), through a
// per-subgroup MS x NS scratch loaded as an accumulator.
//
// Specialization: DH (a multiple of 16, NS and KS), BC (row pass: keys per chunk; key
// pass: rows per chunk; a multiple of NS, KS, and dividing 64), the shape MS x NS x KS,
// SG, NSG, local size NSG * SG. BR = NSG * MS divides 64.
#pragma use_vulkan_memory_model
#extension GL_KHR_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_shader_16bit_storage : require
#extension GL_KHR_shader_subgroup_basic : require

#include "dma_common.glsl"

layout(constant_id = 0) const uint DH = 64;
layout(constant_id = 1) const uint BC = 16;
layout(constant_id = 2) const uint MS = 16;
layout(constant_id = 3) const uint NS = 16;
layout(constant_id = 4) const uint KS = 16;
layout(constant_id = 5) const uint SG = 32;
layout(constant_id = 6) const uint NSG = 4;
layout(local_size_x_id = 7) in;
const uint NT = NSG * SG;
const uint BR = NSG * MS;
const uint DN = DH / NS;  // accumulators per band
const uint DK = DH / KS;  // k-steps over the head dimension

layout(std430, binding = 1) readonly buffer BufQ { float16_t q16[]; };
layout(std430, binding = 2) readonly buffer BufK { float16_t k16[]; };  // packed GK
layout(std430, binding = 3) readonly buffer BufV { float16_t v16[]; };  // packed GV
layout(std430, binding = 4) readonly buffer BufOrd { uint ordb[]; };
layout(std430, binding = 5) readonly buffer BufU { uvec2 ub[]; };
layout(std430, binding = 6) readonly buffer BufUC { uint ucount[]; };
layout(std430, binding = 7) readonly buffer BufTau { uvec2 taub[]; };
layout(std430, binding = 8) readonly buffer BufO { float16_t o16[]; };
layout(std430, binding = 9) readonly buffer BufLSE { float lseb[]; };
layout(std430, binding = 10) readonly buffer BufDO { float16_t do16[]; };
layout(std430, binding = 11) buffer BufDQ { float dqb[]; };
layout(std430, binding = 12) buffer BufDK { float dkb[]; };
layout(std430, binding = 13) buffer BufDV { float dvb[]; };
layout(std430, binding = 14) buffer BufDD { float ddb[]; };
layout(std430, binding = 15) buffer BufDsum { float dsumb[]; };
layout(std430, binding = 16) buffer BufPdK { float pdk[]; };
layout(std430, binding = 17) buffer BufPdV { float pdv[]; };
layout(std430, binding = 18) buffer BufPdD { float pdd[]; };

layout(push_constant) uniform Push {
	uint doOff, doSB, doSL, doSH;
	uint dqOff, dqSB, dqSL, dqSH;
	uint dkOff, dkSB, dkSL, dkSH;
	uint dvOff, dvSB, dvSL, dvSH;
} PC;

const float NEG_INF = -1.0 / 0.0;

bool finite32(float x) { return (floatBitsToUint(x) & 0x7f800000u) != 0x7f800000u; }

float safeTanh(float x) {
	float t = exp(-2.0 * abs(x));
	float y = (1.0 - t) / (1.0 + t);
	return x < 0.0 ? -y : y;
}

#define ACC coopmat<float, gl_ScopeSubgroup, MS, NS, gl_MatrixUseAccumulator>
#define MATA coopmat<float16_t, gl_ScopeSubgroup, MS, KS, gl_MatrixUseA>
#define MATB coopmat<float16_t, gl_ScopeSubgroup, KS, NS, gl_MatrixUseB>

// Every shared array is a whole number of 16-byte units and there is no lone scalar:
// drivers lay shared variables out by their own alignment, and a cooperative-matrix
// load or store from shared memory needs 16-byte aligned addresses (NVIDIA's does;
// lavapipe's does not care). Hence the flag and the row range as uvec4.
shared float Ssh[BR * BC];      // raw S, then the score (-inf: no contribution)
shared float Psh[BR * BC];      // raw dP, then P (-1: no contribution)
shared float16_t Ash[BR * BC];  // the A operand: dS (row pass) or P, then dS (key pass)
shared float Dsh[BR * BC];      // fp32 dS, for the exact route
shared float scratch[NSG * MS * NS];
shared uvec4 chunkFlag;  // x: a non-finite raw product in the chunk

bool causal, rowCausal;

// The pair (band row a, chunk column c) of the tile: score, P and dS from Ssh and Psh,
// written back (Ssh: score, Psh: P or -1, Dsh and Ash: dS). kept says whether the pair
// is kept; del its key's weight, lse and dsum its row's.
void pairOps(uint e, bool kept, float del, float lse, float dsum) {
	float raw = Ssh[e], dp = Psh[e];
	if (!finite32(raw) || !finite32(dp)) atomicOr(chunkFlag.x, 1u);
	float s = NEG_INF, p = -1.0, ds = 0.0;
	if (kept) {
		s = P.scale * raw + del;
		float capd = 1.0;
		if (P.softcap > 0.0) {
			float t = safeTanh(s / P.softcap);
			s = P.softcap * t;
			capd = 1.0 - t * t;
		}
		if (!isNegInfF(s)) {
			p = exp(s - lse);
			ds = p * (dp - dsum) * capd;
		}
	}
	Ssh[e] = s;
	Psh[e] = p;
	Dsh[e] = ds;
}

#ifdef ROWPASS
shared uint rowT[BR];
shared float rowLse[BR], rowDsum[BR];
shared uint colIdx[BC];
shared float colDelta[BC];
shared float16_t Qsh[BR * DH], dOsh[BR * DH];
shared float16_t Kc[BC * DH], Vc[BC * DH];  // the chunk's packed k and v rows

void main() {
	uint tid = gl_LocalInvocationID.x, sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
	uint bIdx = gl_WorkGroupID.z, hIdx = gl_WorkGroupID.y;
	uint hb = P.Hb == P.H ? hIdx : hIdx / P.G;
	uint bh = bIdx * P.Hb + hb;
	causal = P.causal != 0u;
	rowCausal = P.mode == MODE_ROW && causal;
	int t0 = P.posOffset >= 0 ? P.posOffset / int(BR) : -((-P.posOffset + int(BR) - 1) / int(BR));
	int tilePos = (t0 + int(gl_WorkGroupID.x)) * int(BR);
	int firstPos = max(tilePos, P.posOffset);
	int lastPos = min(tilePos + int(BR) - 1, P.posOffset + int(P.Lq) - 1);
	uint qBase = P.qOff + bIdx * P.qSB + hIdx * P.qSH;
	uint oBase = P.oOff + bIdx * P.oSB + hIdx * P.oSH;
	uint doBase = PC.doOff + bIdx * PC.doSB + hIdx * PC.doSH;
	uint lseRow0 = (bIdx * P.H + hIdx) * P.Lq;
	uint np = (P.ncap + 63u) / 64u * 64u;

	uint listBase = 0u, nList = 0u, region = 0u;
	int kLast = causal ? min(lastPos, int(P.Lk) - 1) : int(P.Lk) - 1;
	if (kLast >= 0) {
		uint blk = rowCausal ? min(uint(firstPos) / P.blockC, P.nblocks - 1u) : P.nblocks;
		uint entry = bh * (P.nblocks + 1u) + blk;
		listBase = entry * P.ncap;
		nList = ucount[entry];
		region = rowCausal ? bh * P.nblocks + blk : bh;
	}
	uint kvBase = region * np * DH;
	// Q and dO rows (zero outside [0, Lq)), rowT, LSE and Dsum of the tile's rows.
	for (uint e = tid; e < BR * DH; e += NT) {
		uint r = e / DH, d = e - r * DH;
		int ri = tilePos + int(r) - P.posOffset;
		bool ok = ri >= 0 && ri < int(P.Lq);
		Qsh[e] = ok ? q16[qBase + uint(ri) * P.qSL + d] : float16_t(0.0);
		dOsh[e] = ok ? do16[doBase + uint(ri) * PC.doSL + d] : float16_t(0.0);
	}
	for (uint r = tid; r < BR; r += NT) {
		int pr = tilePos + int(r), ri = pr - P.posOffset;
		bool real = ri >= 0 && ri < int(P.Lq);
		uint t = 0u;
		float ds = 0.0;
		if (real) {
			if (nList > 0u && (!causal || pr >= 0)) {
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
			uint ob = oBase + uint(ri) * P.oSL, db = doBase + uint(ri) * PC.doSL;
			for (uint d = 0u; d < DH; d++) ds = fma(float(do16[db + d]), float(o16[ob + d]), ds);
			dsumb[lseRow0 + uint(ri)] = ds;
		}
		rowT[r] = t;
		rowLse[r] = real ? lseb[lseRow0 + uint(ri)] : NEG_INF;
		rowDsum[r] = ds;
	}
	if (tid == 0u) chunkFlag.x = 0u;
	barrier();
	uint nWalk = 0u;
	for (uint r = 0u; r < BR; r++) nWalk = max(nWalk, rowT[r]);

	MATA qa[DK], doa[DK];
	for (uint k = 0u; k < DK; k++) {
		coopMatLoad(qa[k], Qsh, sg * MS * DH + k * KS, DH, gl_CooperativeMatrixLayoutRowMajor);
		coopMatLoad(doa[k], dOsh, sg * MS * DH + k * KS, DH, gl_CooperativeMatrixLayoutRowMajor);
	}
	ACC dq[DN];
	for (uint n = 0u; n < DN; n++) dq[n] = ACC(0.0);

	for (uint e0 = 0u; e0 < nWalk; e0 += BC) {
		for (uint c = tid; c < BC; c += NT) {
			uint e = e0 + c, idx = ~0u;
			float dl = 0.0;
			if (e < nList) {
				uvec2 ent = ub[listBase + e];
				idx = ent.y;
				dl = unord(ent.x);
			}
			colIdx[c] = idx;
			colDelta[c] = dl;
		}
		for (uint e = tid; e < BC * DH; e += NT) {
			Kc[e] = k16[kvBase + e0 * DH + e];
			Vc[e] = v16[kvBase + e0 * DH + e];
		}
		barrier();
		// S and dP of the band: fp32 to shared.
		for (uint nb = 0u; nb < BC / NS; nb++) {
			ACC s = ACC(0.0), dp = ACC(0.0);
			for (uint k = 0u; k < DK; k++) {
				MATB kt, vt;
				coopMatLoad(kt, Kc, nb * NS * DH + k * KS, DH, gl_CooperativeMatrixLayoutColumnMajor);
				coopMatLoad(vt, Vc, nb * NS * DH + k * KS, DH, gl_CooperativeMatrixLayoutColumnMajor);
				s = coopMatMulAdd(qa[k], kt, s);
				dp = coopMatMulAdd(doa[k], vt, dp);
			}
			coopMatStore(s, Ssh, sg * MS * BC + nb * NS, BC, gl_CooperativeMatrixLayoutRowMajor);
			coopMatStore(dp, Psh, sg * MS * BC + nb * NS, BC, gl_CooperativeMatrixLayoutRowMajor);
		}
		barrier();
		for (uint e = tid; e < BR * BC; e += NT) {
			uint r = e / BC, c = e - r * BC;
			uint idx = colIdx[c];
			bool kept = e0 + c < rowT[r] && idx != ~0u && !(causal && int(idx) > tilePos + int(r));
			pairOps(e, kept, colDelta[c], rowLse[r], rowDsum[r]);
			Ash[e] = float16_t(Dsh[e]);
		}
		barrier();
		if (chunkFlag.x == 0u) {
			for (uint k = 0u; k < BC / KS; k++) {
				MATA dsa;
				coopMatLoad(dsa, Ash, sg * MS * BC + k * KS, BC, gl_CooperativeMatrixLayoutRowMajor);
				for (uint n = 0u; n < DN; n++) {
					MATB kb;
					coopMatLoad(kb, Kc, k * KS * DH + n * NS, DH, gl_CooperativeMatrixLayoutRowMajor);
					dq[n] = coopMatMulAdd(dsa, kb, dq[n]);
				}
			}
		} else {
			// Exact route: the nonzero dS only (a non-finite K reaches no other row).
			for (uint n = 0u; n < DN; n++) {
				for (uint x = lane; x < MS * NS; x += SG) {
					uint r = sg * MS + x / NS, col = n * NS + x % NS;
					float sum = 0.0;
					for (uint c = 0u; c < BC; c++) {
						float ds = Dsh[r * BC + c];
						if (!isZeroF(ds)) sum = fma(ds, float(Kc[c * DH + col]), sum);
					}
					scratch[sg * MS * NS + x] = sum;
				}
				subgroupMemoryBarrierShared();
				subgroupBarrier();
				ACC add;
				coopMatLoad(add, scratch, sg * MS * NS, NS, gl_CooperativeMatrixLayoutRowMajor);
				dq[n] = dq[n] + add;
				subgroupBarrier();
			}
		}
		barrier();
		if (tid == 0u) chunkFlag.x = 0u;
	}
	// dQ rows of the band through the scratch (rows outside [0, Lq) are not written).
	uint dqBase = PC.dqOff + bIdx * PC.dqSB + hIdx * PC.dqSH;
	for (uint n = 0u; n < DN; n++) {
		coopMatStore(dq[n], scratch, sg * MS * NS, NS, gl_CooperativeMatrixLayoutRowMajor);
		subgroupMemoryBarrierShared();
		subgroupBarrier();
		for (uint x = lane; x < MS * NS; x += SG) {
			uint r = sg * MS + x / NS, col = n * NS + x % NS;
			int ri = tilePos + int(r) - P.posOffset;
			if (ri >= 0 && ri < int(P.Lq)) dqb[dqBase + uint(ri) * PC.dqSL + col] = P.scale * scratch[sg * MS * NS + x];
		}
		subgroupBarrier();
	}
}

#else
shared uvec2 keyEnt[BR];
shared float keyDelta[BR];
shared float keyDD[BR];
shared uvec2 rowTau[BC];
shared float rowLse[BC], rowDsum[BC];
shared uvec4 rowRange;  // x, y: the rows [lo, hi) the tile's keys reach
shared float16_t Qc[BC * DH], dOc[BC * DH];  // the chunk's q and dO rows
shared float16_t Kt[BR * DH], Vt[BR * DH];    // the tile's packed k and v rows

void main() {
	uint tid = gl_LocalInvocationID.x, sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
	causal = P.causal != 0u;
	rowCausal = P.mode == MODE_ROW && causal;
	uint np = (P.ncap + 63u) / 64u * 64u;
	bool perHeadBias = P.Hb == P.H;
	uint region = gl_WorkGroupID.y;
	uint nbr = rowCausal ? P.nblocks : 1u;
	uint bh = region / nbr, blk = region - bh * nbr;
	uint bIdx = bh / P.Hb, hb = bh - bIdx * P.Hb;
	uint kvh = perHeadBias ? hb / P.G : hb;
	uint entry = bh * (P.nblocks + 1u) + (rowCausal ? blk : P.nblocks);
	uint listBase = entry * P.ncap, nList = ucount[entry], x0 = gl_WorkGroupID.x * BR;
	if (x0 >= nList && x0 > 0u) return;  // past the list (the first tile always writes)
	int blockLo = 0, blockHi = int(P.Lk);
	if (rowCausal) {
		blockLo = int(blk * P.blockC);
		blockHi = blk + 1u == P.nblocks ? int(P.Lk) : int((blk + 1u) * P.blockC);
	}
	uint tileOut = region * np + x0;
	for (uint x = tid; x < BR; x += NT) {
		uvec2 ent = uvec2(0u, ~0u);
		if (x0 + x < nList) ent = ub[listBase + x0 + x];
		keyEnt[x] = ent;
		keyDelta[x] = unord(ent.x);
		keyDD[x] = 0.0;
	}
	for (uint e = tid; e < BR * DH; e += NT) {
		Kt[e] = k16[tileOut * DH + e];
		Vt[e] = v16[tileOut * DH + e];
	}
	barrier();
	MATA ka[DK], va[DK];
	for (uint k = 0u; k < DK; k++) {
		coopMatLoad(ka[k], Kt, sg * MS * DH + k * KS, DH, gl_CooperativeMatrixLayoutRowMajor);
		coopMatLoad(va[k], Vt, sg * MS * DH + k * KS, DH, gl_CooperativeMatrixLayoutRowMajor);
	}
	ACC dk[DN], dv[DN];
	for (uint n = 0u; n < DN; n++) {
		dk[n] = ACC(0.0);
		dv[n] = ACC(0.0);
	}
	uint hFirst = perHeadBias ? hb : kvh * P.G, hCount = perHeadBias ? 1u : P.G;
	for (uint g = 0u; g < hCount; g++) {
		uint h = hFirst + g;
		barrier();
		if (tid == 0u) {
			chunkFlag.x = 0u;
			int pLo = blockHi;
			for (uint x = 0u; x < BR; x++) {
				uint idx = keyEnt[x].y;
				if (idx != ~0u) pLo = min(pLo, causal ? max(int(idx), blockLo) : blockLo);
			}
			int pHi = blockHi;
			if (rowCausal && keyEnt[0].y != ~0u) {
				int a = max(pLo - P.posOffset, 0), b = min(pHi - P.posOffset, int(P.Lq));
				uvec2 kap = keyEnt[0];
				while (a < b) {
					int m = (a + b) >> 1;
					if (keyGE(kap, taub[bh * P.Lq + uint(m)])) a = m + 1; else b = m;
				}
				pHi = a + P.posOffset;
			}
			int lo = causal ? max(pLo - P.posOffset, 0) : 0;
			int hi = causal ? min(pHi - P.posOffset, int(P.Lq)) : int(P.Lq);
			if (keyEnt[0].y == ~0u) hi = lo;
			rowRange.x = uint(max(lo, 0));
			rowRange.y = uint(max(max(hi, lo), 0));
		}
		barrier();
		uint rLo = rowRange.x, rHi = rowRange.y;
		uint qBase = P.qOff + bIdx * P.qSB + h * P.qSH;
		uint doBase = PC.doOff + bIdx * PC.doSB + h * PC.doSH;
		uint lseRow0 = (bIdx * P.H + h) * P.Lq;
		for (uint i0 = rLo; i0 < rHi; i0 += BC) {
			uint c0 = min(i0, P.Lq - BC);  // the last chunk starts earlier (Lq >= BC)
			for (uint r = tid; r < BC; r += NT) {
				uint i = c0 + r;
				rowTau[r] = rowCausal ? taub[bh * P.Lq + i] : uvec2(0u);
				rowLse[r] = lseb[lseRow0 + i];
				rowDsum[r] = dsumb[lseRow0 + i];
			}
			for (uint e = tid; e < BC * DH; e += NT) {
				uint r = e / DH, d = e - r * DH;
				Qc[e] = q16[qBase + (c0 + r) * P.qSL + d];
				dOc[e] = do16[doBase + (c0 + r) * PC.doSL + d];
			}
			barrier();
			// S^T and dP^T of the band (keys x rows).
			for (uint nb = 0u; nb < BC / NS; nb++) {
				ACC s = ACC(0.0), dp = ACC(0.0);
				for (uint k = 0u; k < DK; k++) {
					MATB qt, dot;
					coopMatLoad(qt, Qc, nb * NS * DH + k * KS, DH, gl_CooperativeMatrixLayoutColumnMajor);
					coopMatLoad(dot, dOc, nb * NS * DH + k * KS, DH, gl_CooperativeMatrixLayoutColumnMajor);
					s = coopMatMulAdd(ka[k], qt, s);
					dp = coopMatMulAdd(va[k], dot, dp);
				}
				coopMatStore(s, Ssh, sg * MS * BC + nb * NS, BC, gl_CooperativeMatrixLayoutRowMajor);
				coopMatStore(dp, Psh, sg * MS * BC + nb * NS, BC, gl_CooperativeMatrixLayoutRowMajor);
			}
			barrier();
			for (uint e = tid; e < BR * BC; e += NT) {
				uint x = e / BC, r = e - x * BC, i = c0 + r;
				uvec2 ent = keyEnt[x];
				bool kept = i >= i0 && i < rHi && ent.y != ~0u && !(causal && int(ent.y) > int(i) + P.posOffset) &&
					!(rowCausal && !keyGE(ent, rowTau[r]));
				pairOps(e, kept, keyDelta[x], rowLse[r], rowDsum[r]);
				Ash[e] = float16_t(isNoneMark(Psh[e]) ? 0.0 : Psh[e]);  // P, 0 for the pairs without
			}
			barrier();
			// dDelta: one invocation per key, the chunk's rows in order.
			for (uint x = tid; x < BR; x += NT) {
				float sd = keyDD[x];
				for (uint r = 0u; r < BC; r++) sd += Dsh[x * BC + r];
				keyDD[x] = sd;
			}
			if (chunkFlag.x == 0u) {
				for (uint k = 0u; k < BC / KS; k++) {
					MATA pa;
					coopMatLoad(pa, Ash, sg * MS * BC + k * KS, BC, gl_CooperativeMatrixLayoutRowMajor);
					for (uint n = 0u; n < DN; n++) {
						MATB dob;
						coopMatLoad(dob, dOc, k * KS * DH + n * NS, DH, gl_CooperativeMatrixLayoutRowMajor);
						dv[n] = coopMatMulAdd(pa, dob, dv[n]);
					}
				}
				barrier();
				for (uint e = tid; e < BR * BC; e += NT) Ash[e] = float16_t(Dsh[e]);
				barrier();
				for (uint k = 0u; k < BC / KS; k++) {
					MATA dsa;
					coopMatLoad(dsa, Ash, sg * MS * BC + k * KS, BC, gl_CooperativeMatrixLayoutRowMajor);
					for (uint n = 0u; n < DN; n++) {
						MATB qb;
						coopMatLoad(qb, Qc, k * KS * DH + n * NS, DH, gl_CooperativeMatrixLayoutRowMajor);
						dk[n] = coopMatMulAdd(dsa, qb, dk[n]);
					}
				}
			} else {
				// Exact route: contributing pairs into dV, nonzero dS into dK.
				for (uint n = 0u; n < DN; n++) {
					for (uint pass = 0u; pass < 2u; pass++) {
						for (uint y = lane; y < MS * NS; y += SG) {
							uint x = sg * MS + y / NS, col = n * NS + y % NS;
							float sum = 0.0;
							for (uint r = 0u; r < BC; r++) {
								uint e = x * BC + r;
								if (pass == 0u) {
									float p = Psh[e];
									if (!isNoneMark(p)) sum = fma(p, float(dOc[r * DH + col]), sum);
								} else {
									float ds = Dsh[e];
									if (!isZeroF(ds)) sum = fma(ds, float(Qc[r * DH + col]), sum);
								}
							}
							scratch[sg * MS * NS + y] = sum;
						}
						subgroupMemoryBarrierShared();
						subgroupBarrier();
						ACC add;
						coopMatLoad(add, scratch, sg * MS * NS, NS, gl_CooperativeMatrixLayoutRowMajor);
						if (pass == 0u) dv[n] = dv[n] + add; else dk[n] = dk[n] + add;
						subgroupBarrier();
					}
				}
			}
			barrier();
			if (tid == 0u) chunkFlag.x = 0u;
		}
	}
	for (uint n = 0u; n < DN; n++) {
		coopMatStore(dk[n], pdk, (tileOut + sg * MS) * DH + n * NS, DH, gl_CooperativeMatrixLayoutRowMajor);
		coopMatStore(dv[n], pdv, (tileOut + sg * MS) * DH + n * NS, DH, gl_CooperativeMatrixLayoutRowMajor);
	}
	barrier();
	for (uint x = tid; x < BR; x += NT) pdd[tileOut + x] = keyDD[x];
}
#endif
