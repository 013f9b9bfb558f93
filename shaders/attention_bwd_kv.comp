#version 450
// Portable DMA attention backward, key pass (the deterministic mode; host side:
// internal/kern/backward.go). Runs after attention_bwd.comp with SCATTER = 0, which wrote
// dQ and Dsum_i = dot(dO_i, O_i), and attention_bwd_order.comp, which ordered the keys. No atomics, no subgroup operation: every gradient
// element is summed by one invocation in a fixed order, so results are bit-identical run
// to run (on one device and driver).
//
// A workgroup owns a tile of BK keys of one (batch, kv head): entries t*BK .. t*BK+BK-1 of
// permb, the keys in the order attention_bwd_order.comp chose (within each run of 256
// consecutive keys, by the end of the rows that keep them, so that a tile's keys are
// kept by about the same rows). Thread (c, l), c = tid / 8, l = tid % 8, owns key c and
// the columns d = l + 8k of its dK and dV rows, in registers. For each query head h of
// the kv head's group, in order, it finds the rows that keep each key of the tile from
// the plan (keyRows, attention_bwd_common.glsl), walks the union of the tile's ranges in
// chunks of BRK rows, recomputing P and dS (exactly as the query pass does) for the pairs
// kept, and accumulates
//   dV_j += P_ij dO_i,  dK_j += dS_ij q_i,  dDelta_j += dS_ij
// row by row. Work: scores only for the kept pairs; rows loaded: the union of each tile's
// ranges, for random weights (mode row, causal, L = 4K to 16K, w = 256 to 2048, BK = 16)
// 1.15 to 1.4 times the kept pairs with the order above, 4 to 7 times with tiles of
// consecutive keys. Memory: the order, 4 bytes per key and kv head.
//
// Specialization: DH, BK keys (local size 8 * BK), BRK rows per chunk (a multiple of 8).

#include "dma_common.glsl"

layout(constant_id = 0) const uint DH = 64;
layout(constant_id = 1) const uint BK = 16;
layout(constant_id = 2) const uint BRK = 16;
layout(local_size_x_id = 3) in;  // NT = 8 * BK
const uint NT = 8 * BK;
const uint DK = DH / 8;

#include "attention_bwd_common.glsl"

const uint RS = DH + 1;
const uint PS = BK + 1;

shared float Ks[BK * RS];
shared float Vs[BK * RS];
shared float Qs[BRK * RS];
shared float dOs[BRK * RS];
shared float Ps[BRK * PS];
shared float dSs[BRK * PS];
shared float rowLse[BRK];
shared float rowDsum[BRK];
shared uint kLo[BK], kHi[BK], kord[BK], tileKey[BK];
shared float kdel[BK];
shared uint rangeLo, rangeHi;

void main() {
	uint tid = gl_LocalInvocationID.x;
	uint c = tid >> 3, l = tid & 7u;
	bIdx = gl_WorkGroupID.z;
	uint kvh = gl_WorkGroupID.y;
	// The tile's keys (Lk past the end).
	uint permBase = (bIdx * P.Hkv + kvh) * P.Lk;
	uint e0 = gl_WorkGroupID.x * BK;
	if (tid < BK) tileKey[tid] = e0 + tid < P.Lk ? permb[permBase + e0 + tid] : P.Lk;
	barrier();
	uint myJ = tileKey[c];
	bool realKey = myJ < P.Lk;
	packed16 = P.storage != STORAGE_F32;
	bf16 = P.storage == STORAGE_BF16;
	bool explicitMode = P.mode == MODE_EXPLICIT;
	bool hasMask = explicitMode && P.hasMask != 0u;
	bool hasBias = explicitMode && P.hasBias != 0u;
	bool perHeadBias = P.Hb == P.H;  // else Hb = Hkv: the whole group adds into one row

	// The tile's K and V rows (zero past Lk).
	uint kBase = P.kOff + bIdx * P.kSB + kvh * P.kSH;
	uint vBase = P.vOff + bIdx * P.vSB + kvh * P.vSH;
	for (uint e = tid; e < BK * DH; e += NT) {
		uint cc = e / DH, d = e - cc * DH;
		uint j = tileKey[cc];
		bool ok = j < P.Lk;
		Ks[cc * RS + d] = ok ? loadK(kBase + j * P.kSL + d) : 0.0;
		Vs[cc * RS + d] = ok ? loadV(vBase + j * P.vSL + d) : 0.0;
	}

	float dk[DK], dv[DK];
	for (uint k = 0u; k < DK; k++) {
		dk[k] = 0.0;
		dv[k] = 0.0;
	}
	float dd = 0.0;

	for (uint g = 0u; g < P.G; g++) {
		uint h = kvh * P.G + g;
		uint hb = perHeadBias ? h : kvh;
		uint bhPlan = bIdx * P.Hb + hb;
		maskHead = h / max(P.maskHDiv, 1u);
		biasHead = h / max(P.biasHDiv, 1u);

		// Rows [lo, hi) that keep each key of the tile (lo = hi: none).
		if (tid == 0u) {
			rangeLo = 0xffffffffu;
			rangeHi = 0u;
		}
		barrier();
		if (tid < BK) {
			uint j = tileKey[tid];
			uint lo = 0u, hi = 0u, o = 0u;
			if (j < P.Lk) keyRows(j, bhPlan, lo, hi, o);
			kLo[tid] = lo;
			kHi[tid] = hi;
			kord[tid] = o;
			kdel[tid] = unord(o);
			if (hi > lo) {
				atomicMin(rangeLo, lo);
				atomicMax(rangeHi, hi);
			}
		}
		barrier();
		uint rLo = rangeLo, rHi = rangeHi;
		uint myLo = kLo[c], myHi = kHi[c];
		uint qBase = P.qOff + bIdx * P.qSB + h * P.qSH;
		uint doBase = PC.doOff + bIdx * PC.doSB + h * PC.doSH;
		uint lseBase = (bIdx * P.H + h) * P.Lq;

		for (uint i0 = rLo; i0 < rHi; i0 += BRK) {
			for (uint e = tid; e < BRK * DH; e += NT) {
				uint rr = e / DH, d = e - rr * DH;
				uint i = i0 + rr;
				bool ok = i < rHi;
				Qs[rr * RS + d] = ok ? loadQ(qBase + i * P.qSL + d) : 0.0;
				dOs[rr * RS + d] = ok ? loadDO(doBase + i * PC.doSL + d) : 0.0;
			}
			if (tid < BRK) {
				uint i = i0 + tid;
				rowLse[tid] = i < rHi ? lseb[lseBase + i] : NEG_INF;
				rowDsum[tid] = i < rHi ? dsumb[lseBase + i] : 0.0;
			}
			barrier();

			for (uint r = l; r < BRK; r += 8u) {
				uint i = i0 + r;
				float p = -1.0, ds = 0.0;  // p = -1: the pair contributes nothing
				float lse = rowLse[r];
				if (i >= myLo && i < myHi && !isNegInfF(lse) && (!hasMask || maskAt(i, myJ))) {
					float dot = 0.0, dp = 0.0;
					for (uint d = 0u; d < DH; d++) {
						dot = fma(Qs[r * RS + d], Ks[c * RS + d], dot);
						dp = fma(dOs[r * RS + d], Vs[c * RS + d], dp);
					}
					float capd;
					float s = pairScore(dot, kdel[c], hasBias, i, myJ, capd);
					if (!isNegInfF(s)) {  // P = 0 exactly: nothing of V or dO passes (spec section 7)
						p = exp(s - lse);
						ds = p * (dp - rowDsum[r]) * capd;
					}
				}
				Ps[r * PS + c] = p;
				dSs[r * PS + c] = ds;
			}
			barrier();

			// Only contributing pairs into dV, only nonzero dS into dK (not even 0 * NaN:
			// spec section 7, ref.Backward).
			for (uint r = 0u; r < BRK; r++) {
				float p = Ps[r * PS + c], ds = dSs[r * PS + c];
				if (!isNoneMark(p))
					for (uint k = 0u; k < DK; k++) dv[k] = fma(p, dOs[r * RS + l + 8u * k], dv[k]);
				if (!isZeroF(ds)) {
					for (uint k = 0u; k < DK; k++) dk[k] = fma(ds, Qs[r * RS + l + 8u * k], dk[k]);
					dd += ds;
				}
			}
			barrier();
		}
		if (perHeadBias) {
			if (realKey && l == 0u) ddb[bhPlan * P.Lk + myJ] = floatBitsToUint(dd);
			dd = 0.0;
		}
	}

	if (realKey) {
		uint dkAt = PC.dkOff + bIdx * PC.dkSB + kvh * PC.dkSH + myJ * PC.dkSL;
		uint dvAt = PC.dvOff + bIdx * PC.dvSB + kvh * PC.dvSH + myJ * PC.dvSL;
		for (uint k = 0u; k < DK; k++) {
			dkb[dkAt + l + 8u * k] = floatBitsToUint(P.scale * dk[k]);
			dvb[dvAt + l + 8u * k] = floatBitsToUint(dv[k]);
		}
		if (!perHeadBias && l == 0u) ddb[(bIdx * P.Hb + kvh) * P.Lk + myJ] = floatBitsToUint(dd);
	}
}
