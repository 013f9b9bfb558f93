#version 450
// Portable DMA attention backward, query pass (spec section 4; the plan contract:
// internal/kern/doc.go; host side: internal/kern/backward.go). No subgroup operation:
// any subgroup size. fp32, fp16 or bf16 storage of Q/K/V/O/dO, float32 math and float32
// gradients.
//
// A workgroup owns the tile of BR query rows of one (batch, head) that attention.comp's
// workgroup owns, and walks the same candidates with the same gather (a copy of the
// forward's fill loop: a tile's kept keys are found among U_b, so work is proportional to
// the kept keys, plus a test per candidate). Per row i it first forms
// Dsum_i = dot(dO_i, O_i) (written to dsumb for the key pass). Per chunk of BC kept keys:
//   P_ij  = exp(s_ij - lse_i)                (s recomputed exactly as the forward does)
//   dS_ij = P_ij * (dot(dO_i, v_j) - Dsum_i) * softcap'(raw_ij)
//   dQ_i += scale * dS_ij k_j                 (registers: thread (r, l) owns row r,
//                                              columns l + 8k, as in the forward)
// and, when SCATTER = 1 (the fast mode), adds the tile's partial sums
//   dK_j += scale * sum_i dS_ij q_i,  dV_j += sum_i P_ij dO_i,  dDelta_j += sum_i dS_ij
// into the float32 outputs with compare-and-swap atomics (zeroed by the host first): the
// order of those additions, and so their last bits, vary from run to run. With
// SCATTER = 0 only dQ and Dsum are written; attention_bwd_kv.comp then computes dK, dV
// and dDelta key-major, in a fixed order (the deterministic mode).
// Non-finite values (spec section 7, ref.Backward): a row whose LSE is NaN has P NaN on
// its kept keys; a pair with score -inf, or not kept, contributes nothing, a term with
// dS = 0 adds nothing to dQ or dK (not even 0 * inf), and a tile with a non-finite q or
// dO sums only such terms and contributing pairs into dK and dV (P = -1 marks the
// others), so nothing reaches a key that no affected row keeps.
//
// Specialization: DH (= P.D, a multiple of 8, at most 256), BR rows, BC keys per chunk
// (a multiple of 8), NT = 8 * BR invocations, SCATTER.

#include "dma_common.glsl"

layout(constant_id = 0) const uint DH = 64;
layout(constant_id = 1) const uint BR = 16;
layout(constant_id = 2) const uint BC = 32;
layout(local_size_x_id = 3) in;  // NT = 8 * BR
layout(constant_id = 4) const uint SCATTER = 1;
const uint NT = 8 * BR;
const uint DK = DH / 8;

#include "attention_bwd_common.glsl"

const uint RS = DH + 1;  // padded row strides: the dot-product loops stay off bank conflicts
const uint SS = BC + 1;

shared float Qs[BR * RS];
shared float dOs[BR * RS];
shared float Ks[BC * RS];
shared float Vs[BC * RS];
shared float Ps[BR * SS];
shared float dSs[BR * SS];
shared uint klist[BC + NT];
shared uint kord[BC];
shared float kdel[BC];
shared uint scanb[NT];
shared float red[NT];
shared uvec2 tauS[BR];
shared uint stopFlag;
shared uint tileBad;  // a real row's q or dO holds a NaN or an infinity

void main() {
	uint tid = gl_LocalInvocationID.x;
	uint r = tid >> 3, l = tid & 7u;
	bIdx = gl_WorkGroupID.z;
	uint hIdx = gl_WorkGroupID.y;
	uint kvh = hIdx / P.G;
	uint hb = P.Hb == P.H ? hIdx : hIdx / P.G;
	uint bhPlan = bIdx * P.Hb + hb;
	maskHead = hIdx / max(P.maskHDiv, 1u);
	biasHead = hIdx / max(P.biasHDiv, 1u);
	bool causal = P.causal != 0u;
	packed16 = P.storage != STORAGE_F32;
	bf16 = P.storage == STORAGE_BF16;

	// Tile geometry, as attention.comp.
	int t0 = P.posOffset >= 0 ? P.posOffset / int(BR) : -((-P.posOffset + int(BR) - 1) / int(BR));
	int tpos = (t0 + int(gl_WorkGroupID.x)) * int(BR);
	int firstPos = max(tpos, P.posOffset);
	int lastPos = min(tpos + int(BR) - 1, P.posOffset + int(P.Lq) - 1);
	int myPos = tpos + int(r);
	int myRowS = myPos - P.posOffset;
	bool real = myRowS >= 0 && myRowS < int(P.Lq);
	uint myRow = uint(max(myRowS, 0));

	// q and dO rows of the tile (zero for rows that do not exist).
	uint qBase = P.qOff + bIdx * P.qSB + hIdx * P.qSH;
	uint doBase = PC.doOff + bIdx * PC.doSB + hIdx * PC.doSH;
	if (tid == 0u) tileBad = 0u;
	bool myBad = false;
	for (uint e = tid; e < BR * DH; e += NT) {
		uint rr = e / DH, d = e - rr * DH;
		int ri = tpos + int(rr) - P.posOffset;
		bool ok = ri >= 0 && ri < int(P.Lq);
		float qv = ok ? loadQ(qBase + uint(ri) * P.qSL + d) : 0.0;
		float dov = ok ? loadDO(doBase + uint(ri) * PC.doSL + d) : 0.0;
		myBad = myBad || !finite32(qv) || !finite32(dov);
		Qs[rr * RS + d] = qv;
		dOs[rr * RS + d] = dov;
	}
	barrier();
	if (myBad) tileBad = 1u;  // read after the barrier below

	// Dsum_i = dot(dO_i, O_i): 8 partial sums per row, added in a fixed order.
	uint lseAt = (bIdx * P.H + hIdx) * P.Lq + myRow;
	{
		float part = 0.0;
		if (real) {
			uint oBase = P.oOff + bIdx * P.oSB + hIdx * P.oSH + myRow * P.oSL;
			for (uint k = 0u; k < DK; k++) part = fma(dOs[r * RS + l + 8u * k], loadO(oBase + l + 8u * k), part);
		}
		red[tid] = part;
	}
	barrier();
	float dsum = 0.0;
	for (uint x = 0u; x < 8u; x++) dsum += red[r * 8u + x];
	// With a non-finite q or dO in the tile, the key sums below add only the terms with a
	// nonzero dS (dK) and the pairs that contribute (dV; P marked -1 elsewhere): 0 * NaN
	// would reach keys the row does not keep.
	bool guardSums = tileBad != 0u;
	float pNone = guardSums ? -1.0 : 0.0;
	float lse = real ? lseb[lseAt] : NEG_INF;
	if (real && l == 0u) dsumb[lseAt] = dsum;

	// Candidates of the tile, as attention.comp.
	uint ordBase = bhPlan * P.Lk;
	bool rowCausal = P.mode == MODE_ROW && causal;
	bool fromU = P.mode == MODE_ROW || P.mode == MODE_SHARED;
	int kLast = causal ? min(lastPos, int(P.Lk) - 1) : int(P.Lk) - 1;
	uint ncand = 0u, uBase = 0u;
	uvec2 tauMin = uvec2(0u);
	if (kLast >= 0) {
		if (rowCausal) {
			uint blk = min(uint(firstPos) / P.blockC, P.nblocks - 1u);
			uBase = (bhPlan * (P.nblocks + 1u) + blk) * P.ncap;
			ncand = ucount[bhPlan * (P.nblocks + 1u) + blk];
			uint fr = uint(firstPos - P.posOffset);
			tauMin = taub[bhPlan * P.Lq + fr];
			if (tid < BR) {
				int ri = tpos + int(tid) - P.posOffset;
				tauS[tid] = (ri >= 0 && ri < int(P.Lq)) ? taub[bhPlan * P.Lq + uint(ri)] : uvec2(0xffffffffu);
			}
		} else if (fromU) {
			uBase = (bhPlan * (P.nblocks + 1u) + P.nblocks) * P.ncap;
			ncand = ucount[bhPlan * (P.nblocks + 1u) + P.nblocks];
		} else {
			ncand = uint(kLast) + 1u;
		}
	}
	if (tid == 0u) stopFlag = 0u;
	barrier();

	float dq[DK];
	for (uint k = 0u; k < DK; k++) dq[k] = 0.0;
	uvec2 myTau = (rowCausal && real) ? tauS[r] : uvec2(0u);
	float scale = P.scale;
	uint kBase = P.kOff + bIdx * P.kSB + kvh * P.kSH;
	uint vBase = P.vOff + bIdx * P.vSB + kvh * P.vSH;
	bool explicitMode = P.mode == MODE_EXPLICIT;
	bool hasMask = explicitMode && P.hasMask != 0u;
	bool hasBias = explicitMode && P.hasBias != 0u;
	bool rowLive = real && !isNegInfF(lse);  // an empty row has P = 0 everywhere
	uint dkBase = PC.dkOff + bIdx * PC.dkSB + kvh * PC.dkSH;
	uint dvBase = PC.dvOff + bIdx * PC.dvSB + kvh * PC.dvSH;
	uint ddBase = bhPlan * P.Lk;

	uint cursor = 0u, nbuf = 0u;
	for (;;) {
		// Fill the list with kept candidates (attention.comp's loop, unchanged).
		while (nbuf < BC && cursor < ncand) {
			uint kc = cursor + tid;
			bool keep = false;
			uint idx = 0u;
			if (kc < ncand) {
				if (fromU) {
					uvec2 ent = ub[uBase + kc];
					idx = ent.y;
					if (rowCausal) {
						if (!keyGE(ent, tauMin)) {
							stopFlag = 1u;
						} else {
							int ps = max(int(idx), firstPos);
							keep = ps <= lastPos && keyGE(ent, tauS[ps - tpos]);
						}
					} else {
						keep = !causal || int(idx) <= lastPos;
					}
				} else {
					idx = kc;
					keep = ordb[ordBase + idx] != 0u;
					if (keep && hasMask) {
						int ps = causal ? max(int(idx), firstPos) : firstPos;
						keep = false;
						for (int p = ps; p <= lastPos && !keep; p++) keep = maskAt(uint(p - P.posOffset), idx);
					}
				}
			}
			scanb[tid] = keep ? 1u : 0u;
			barrier();
			for (uint off = 1u; off < NT; off <<= 1) {
				uint v = tid >= off ? scanb[tid - off] : 0u;
				barrier();
				scanb[tid] += v;
				barrier();
			}
			if (keep) klist[nbuf + scanb[tid] - 1u] = idx;
			nbuf += scanb[NT - 1u];
			cursor += NT;
			if (stopFlag != 0u) cursor = ncand;
			barrier();
		}
		if (nbuf == 0u) break;
		uint n = min(nbuf, BC);

		for (uint e = tid; e < n * DH; e += NT) {
			uint c = e / DH, d = e - c * DH;
			uint j = klist[c];
			Ks[c * RS + d] = loadK(kBase + j * P.kSL + d);
			Vs[c * RS + d] = loadV(vBase + j * P.vSL + d);
		}
		if (tid < n) {
			uint o = ordb[ordBase + klist[tid]];
			kord[tid] = o;
			kdel[tid] = unord(o);
		}
		barrier();

		// P and dS of the chunk (0 where the row does not keep the key: such a key's V,
		// possibly NaN, is never read into a product; P = pNone where the pair contributes
		// nothing, score -inf included).
		for (uint c = l; c < BC; c += 8u) {
			float p = pNone, ds = 0.0;
			if (c < n && rowLive) {
				uint j = klist[c];
				bool keep = !causal || int(j) <= myPos;
				if (keep && rowCausal) keep = keyGE(uvec2(kord[c], j), myTau);
				if (keep && hasMask) keep = maskAt(myRow, j);
				if (keep) {
					float dot = 0.0, dp = 0.0;
					for (uint d = 0u; d < DH; d++) {
						dot = fma(Qs[r * RS + d], Ks[c * RS + d], dot);
						dp = fma(dOs[r * RS + d], Vs[c * RS + d], dp);
					}
					float capd;
					float s = pairScore(dot, kdel[c], hasBias, myRow, j, capd);
					if (!isNegInfF(s)) {  // P = 0 exactly: nothing of V or dO passes (spec section 7)
						p = exp(s - lse);
						ds = p * (dp - dsum) * capd;
					}
				}
			}
			Ps[r * SS + c] = p;
			dSs[r * SS + c] = ds;
		}
		barrier();

		for (uint c = 0u; c < n; c++) {
			float ds = dSs[r * SS + c];
			if (!isZeroF(ds))
				for (uint k = 0u; k < DK; k++) dq[k] = fma(ds, Ks[c * RS + l + 8u * k], dq[k]);
		}
		if (SCATTER != 0u) {
			for (uint e = tid; e < n * DH; e += NT) {
				uint c = e / DH, d = e - c * DH;
				float sk = 0.0, sv = 0.0;
				if (!guardSums) {
					for (uint rr = 0u; rr < BR; rr++) {
						sk = fma(dSs[rr * SS + c], Qs[rr * RS + d], sk);
						sv = fma(Ps[rr * SS + c], dOs[rr * RS + d], sv);
					}
				} else {
					for (uint rr = 0u; rr < BR; rr++) {
						float pp = Ps[rr * SS + c], ds = dSs[rr * SS + c];
						if (!isZeroF(ds)) sk = fma(ds, Qs[rr * RS + d], sk);
						if (!isNoneMark(pp)) sv = fma(pp, dOs[rr * RS + d], sv);
					}
				}
				uint j = klist[c];
				if (!isZeroF(sk)) atomicAddDK(dkBase + j * PC.dkSL + d, scale * sk);
				if (!isZeroF(sv)) atomicAddDV(dvBase + j * PC.dvSL + d, sv);
			}
			if (tid < n) {
				float sd = 0.0;
				for (uint rr = 0u; rr < BR; rr++) sd += dSs[rr * SS + tid];
				if (!isZeroF(sd)) atomicAddDD(ddBase + klist[tid], sd);
			}
		}

		// Drop the chunk from the list.
		uint rem = nbuf - n;
		uint keepIdx = tid < rem ? klist[n + tid] : 0u;
		barrier();
		if (tid < rem) klist[tid] = keepIdx;
		barrier();
		nbuf = rem;
	}

	if (real) {
		uint dqBase = PC.dqOff + bIdx * PC.dqSB + hIdx * PC.dqSH + myRow * PC.dqSL;
		for (uint k = 0u; k < DK; k++) dqb[dqBase + l + 8u * k] = scale * dq[k];
	}
}
