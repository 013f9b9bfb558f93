#version 450
// Portable DMA attention forward (spec section 3; the plan contract: internal/kern/doc.go).
// No subgroup operation, no 16-bit arithmetic: runs on any Vulkan device whatever its
// subgroup size. fp32, fp16 or bf16 storage of Q/K/V/O (P.storage; 16-bit tensors are
// packed, element e in word e >> 1), float32 math throughout.
//
// A workgroup owns a tile of BR query rows of one (batch, head): tile t covers key
// positions [t*BR, (t+1)*BR) (rows i = position - posOffset), so a tile never straddles
// a selection block (BR divides 64, the block size a multiple of 64). Thread (r, l), with
// r = tid / 8 and l = tid % 8, owns row r and the output columns d = l + 8k.
//
// The key side is gathered: the tile walks its candidates (U_b for mode row causal,
// S_final for mode shared or row non-causal, keys 0..last otherwise), tests each one
// against the tile as a whole (is it kept by at least one row of the tile?) and compacts
// the survivors into a shared list (stream compaction, a shared-memory scan). Every BC
// kept keys, their K and V rows are loaded into shared memory and the tile computes
// scores, the online softmax (FlashAttention-2) and P V. Work is thus proportional to the
// kept keys, plus a test per candidate, however the kept keys are scattered.
//
// Specialization: DH (= P.D, a multiple of 8, at most 256), BR rows, BC keys per chunk
// (a multiple of 8), NT = 8 * BR invocations.

#include "dma_common.glsl"

layout(constant_id = 0) const uint DH = 64;
layout(constant_id = 1) const uint BR = 16;
layout(constant_id = 2) const uint BC = 32;
layout(local_size_x_id = 3) in;  // NT = 8 * BR
const uint NT = 8 * BR;
const uint DK = DH / 8;          // output columns per invocation

layout(std430, binding = 1) readonly buffer BufQ { uint qbuf[]; };
layout(std430, binding = 2) readonly buffer BufK { uint kbuf[]; };
layout(std430, binding = 3) readonly buffer BufV { uint vbuf[]; };
layout(std430, binding = 4) readonly buffer BufOrd { uint ordb[]; };
layout(std430, binding = 5) readonly buffer BufU { uvec2 ub[]; };
layout(std430, binding = 6) readonly buffer BufUC { uint ucount[]; };
layout(std430, binding = 7) readonly buffer BufTau { uvec2 taub[]; };
layout(std430, binding = 8) readonly buffer BufMask { uint maskb[]; };
layout(std430, binding = 9) readonly buffer BufBias { float biasb[]; };
layout(std430, binding = 10) buffer BufO { uint ob[]; };
layout(std430, binding = 11) writeonly buffer BufLSE { float lseb[]; };

const uint QS = DH + 1;  // padded row strides keep the score loop off shared-memory bank conflicts
const uint KS = DH + 1;
const uint SS = BC + 1;

shared float Qs[BR * QS];   // query tile; at the end the 16-bit output staging area
shared float Ks[BC * KS];
shared float Vs[BC * DH];
shared float Ss[BR * SS];   // scores of the chunk
shared float Ps[BR * SS];   // probabilities of the chunk
shared uint klist[BC + NT]; // gathered key indices
shared uint kord[BC];
shared float kdel[BC];
shared uint scanb[NT];
shared uvec2 tauS[BR];
shared uint stopFlag;

const float NEG_INF = -1.0 / 0.0;

bool packed16, bf16;  // P.storage, read once by main
float loadQ(uint e) { return packed16 ? unpack16(qbuf[e >> 1], e, bf16) : uintBitsToFloat(qbuf[e]); }
float loadK(uint e) { return packed16 ? unpack16(kbuf[e >> 1], e, bf16) : uintBitsToFloat(kbuf[e]); }
float loadV(uint e) { return packed16 ? unpack16(vbuf[e >> 1], e, bf16) : uintBitsToFloat(vbuf[e]); }

uint bIdx, hIdx, bhPlan, maskHead, biasHead;

bool maskAt(uint i, uint j) {
	uint e = P.maskOff + bIdx * P.maskSB + maskHead * P.maskSH + i * P.maskSI + j * P.maskSJ;
	return ((maskb[e >> 2] >> ((e & 3u) * 8u)) & 0xffu) != 0u;
}

float biasAt(uint i, uint j) {
	return biasb[P.biasOff + bIdx * P.biasSB + biasHead * P.biasSH + i * P.biasSI + j * P.biasSJ];
}

// tanh without overflow for any finite x.
float safeTanh(float x) {
	float t = exp(-2.0 * abs(x));
	float y = (1.0 - t) / (1.0 + t);
	return x < 0.0 ? -y : y;
}

void main() {
	uint tid = gl_LocalInvocationID.x;
	uint r = tid >> 3, l = tid & 7u;
	bIdx = gl_WorkGroupID.z;
	hIdx = gl_WorkGroupID.y;
	uint kvh = hIdx / P.G;
	uint hb = P.Hb == P.H ? hIdx : hIdx / P.G;
	bhPlan = bIdx * P.Hb + hb;
	maskHead = hIdx / max(P.maskHDiv, 1u);
	biasHead = hIdx / max(P.biasHDiv, 1u);
	bool causal = P.causal != 0u;
	packed16 = P.storage != STORAGE_F32;
	bf16 = P.storage == STORAGE_BF16;

	// Tile geometry, in key positions (signed: rows may sit before key 0 when Lq > Lk).
	int t0 = P.posOffset >= 0 ? P.posOffset / int(BR) : -((-P.posOffset + int(BR) - 1) / int(BR));
	int tpos = (t0 + int(gl_WorkGroupID.x)) * int(BR);       // position of tile row 0
	int firstPos = max(tpos, P.posOffset);                     // first real row's position
	int lastPos = min(tpos + int(BR) - 1, P.posOffset + int(P.Lq) - 1);
	int myPos = tpos + int(r);
	int myRowS = myPos - P.posOffset;
	bool real = myRowS >= 0 && myRowS < int(P.Lq);
	uint myRow = uint(max(myRowS, 0));

	// Query tile.
	uint qBase = P.qOff + bIdx * P.qSB + hIdx * P.qSH;
	for (uint e = tid; e < BR * DH; e += NT) {
		uint rr = e / DH, d = e - rr * DH;
		int ri = tpos + int(rr) - P.posOffset;
		Qs[rr * QS + d] = (ri >= 0 && ri < int(P.Lq)) ? loadQ(qBase + uint(ri) * P.qSL + d) : 0.0;
	}

	// Candidates of the tile.
	uint ordBase = bhPlan * P.Lk;
	bool rowCausal = P.mode == MODE_ROW && causal;
	bool fromU = P.mode == MODE_ROW || P.mode == MODE_SHARED;
	// Largest key index any row may keep under causality (-1: none).
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

	float mrow = NEG_INF, lrow = 0.0;
	float acc[DK];
	for (uint k = 0u; k < DK; k++) acc[k] = 0.0;
	uvec2 myTau = (rowCausal && real) ? tauS[r] : uvec2(0u);
	float scale = P.scale, softcap = P.softcap;
	uint kBase = P.kOff + bIdx * P.kSB + kvh * P.kSH;
	uint vBase = P.vOff + bIdx * P.vSB + kvh * P.vSH;
	bool explicitMode = P.mode == MODE_EXPLICIT;
	bool hasMask = explicitMode && P.hasMask != 0u;
	bool hasBias = explicitMode && P.hasBias != 0u;

	uint cursor = 0u, nbuf = 0u;
	for (;;) {
		// Fill the list with kept candidates, NT at a time, until a chunk is full.
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
							stopFlag = 1u;  // sorted descending: nothing after this is kept
						} else {
							// The row most likely to keep key idx is the first one at or after it
							// (tau never decreases down the tile).
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
						// Kept when some real row of the tile (at or after it, if causal) allows it.
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

		// Load the chunk's keys and values.
		for (uint e = tid; e < n * DH; e += NT) {
			uint c = e / DH, d = e - c * DH;
			uint j = klist[c];
			Ks[c * KS + d] = loadK(kBase + j * P.kSL + d);
			Vs[c * DH + d] = loadV(vBase + j * P.vSL + d);
		}
		if (tid < n) {
			uint o = ordb[ordBase + klist[tid]];
			kord[tid] = o;
			kdel[tid] = unord(o);
		}
		barrier();

		// Scores.
		for (uint c = l; c < BC; c += 8u) {
			float s = NEG_INF;
			if (c < n && real) {
				uint j = klist[c];
				bool keep = !causal || int(j) <= myPos;
				if (keep && rowCausal) keep = keyGE(uvec2(kord[c], j), myTau);
				if (keep && hasMask) keep = maskAt(myRow, j);
				if (keep) {
					float dot = 0.0;
					for (uint d = 0u; d < DH; d++) dot = fma(Qs[r * QS + d], Ks[c * KS + d], dot);
					s = scale * dot + kdel[c];
					if (hasBias) s += biasAt(myRow, j);
					if (softcap > 0.0) s = softcap * safeTanh(s / softcap);
				}
			}
			Ss[r * SS + c] = s;
		}
		barrier();

		// Online softmax. A NaN or +inf score makes its p NaN (max may or may not pass a
		// NaN on; exp(+inf - +inf) is NaN), and so lrow and the row's acc. A pair that
		// contributes nothing (not kept, or score -inf) gets p = -1, so that a kept key
		// whose p underflows to 0 still passes a NaN in its V on (spec section 7).
		float mx = mrow;
		for (uint c = 0u; c < n; c++) mx = max(mx, Ss[r * SS + c]);
		for (uint c = l; c < n; c += 8u) {
			float s = Ss[r * SS + c];
			Ps[r * SS + c] = isNegInfF(s) ? -1.0 : exp(s - mx);
		}
		barrier();
		float alpha = isNegInfF(mrow) ? 0.0 : exp(mrow - mx);
		lrow *= alpha;
		for (uint k = 0u; k < DK; k++) acc[k] *= alpha;
		for (uint c = 0u; c < n; c++) {
			float p = Ps[r * SS + c];
			if (!isNoneMark(p)) {  // a key the row does not keep never touches it (its V may be NaN)
				lrow += p;
				for (uint k = 0u; k < DK; k++) acc[k] = fma(p, Vs[c * DH + l + 8u * k], acc[k]);
			}
		}
		mrow = mx;

		// Drop the chunk from the list.
		uint rem = nbuf - n;
		uint keepIdx = tid < rem ? klist[n + tid] : 0u;
		barrier();
		if (tid < rem) klist[tid] = keepIdx;
		barrier();
		nbuf = rem;
	}

	// Epilogue: O = acc / l, LSE = m + log l; a row without kept keys (l = 0) gets 0 and
	// -inf, a row with a NaN or +inf score (l NaN) NaN and NaN.
	bool any = !isZeroF(lrow);  // true for NaN
	float inv = any ? 1.0 / lrow : 0.0;
	if (real && l == 0u) lseb[(bIdx * P.H + hIdx) * P.Lq + myRow] = any ? mrow + log(lrow) : NEG_INF;
	uint oBase = P.oOff + bIdx * P.oSB + hIdx * P.oSH;
	if (!packed16) {
		if (real)
			for (uint k = 0u; k < DK; k++) ob[oBase + myRow * P.oSL + l + 8u * k] = floatBitsToUint(acc[k] * inv);
	} else {
		// Pairs of 16-bit elements leave as whole words (offsets and strides are even): stage
		// the tile.
		barrier();
		for (uint k = 0u; k < DK; k++) Qs[r * QS + l + 8u * k] = acc[k] * inv;
		barrier();
		for (uint e = tid; e < BR * DH / 2u; e += NT) {
			uint rr = e / (DH / 2u), d = 2u * (e - rr * (DH / 2u));
			int ri = tpos + int(rr) - P.posOffset;
			if (ri >= 0 && ri < int(P.Lq))
				ob[(oBase + uint(ri) * P.oSL + d) >> 1] = pack16(Qs[rr * QS + d], Qs[rr * QS + d + 1u], bf16);
		}
	}
}
