#version 460
// DMA attention forward on tensor cores through VK_KHR_cooperative_matrix (spec section
// 3; the plan contract: internal/kern/doc.go). fp16 storage of Q/K/V/O only (P.f16 == 1),
// fp16 operands and fp32 accumulation; scores, softmax and O accumulate in float32.
// Same bindings, parameter block, plan contract and outputs as attention.comp.
//
// A workgroup is NSG subgroups of SG invocations and owns a tile of BR query rows of one
// (batch, head), aligned on key positions as in attention.comp (BR divides 64, so a tile
// never straddles a selection block). The gather is attention.comp's: the tile walks its
// candidates, keeps those kept by at least one of its rows and compacts them into a
// shared key list. Per chunk of BC gathered keys:
//   1. K rows -> shared fp16 [BC x DH] (rows past the chunk's end are zero);
//   2. S = Q K^T by coopMatMulAdd (Q as A fragments, K as column-major B fragments),
//      stored to shared fp32;
//   3. each row's TPR = NT / BR invocations apply scale, + delta, bias, softcap and the
//      per-element keep test, and run the online softmax in fp32 (row max and row sum
//      reduced across the TPR lanes by subgroup shuffles); P = exp(s - m) (in [0, 1]) goes
//      to shared as fp16, alpha = exp(m_old - m_new) to shared fp32;
//   4. V rows -> shared fp16 (the K area);
//   5. PV = P V by coopMatMulAdd into zeroed accumulators; each subgroup stores one
//      MS x NS tile at a time to its own fp32 scratch and its lanes, which own fixed
//      elements of fixed O tiles in registers, do O = O * alpha + PV. KHR cooperative
//      matrices have no defined element -> (row, column) map, so the per-row rescale
//      goes through shared memory, exactly.
// A chunk whose V holds a non-finite value computes PV by scalar loops that skip P == 0
// instead, so a NaN or Inf value reaches exactly the rows that keep its key (as in
// attention.comp); 0 * NaN inside a matrix product would spread it to the whole tile.
//
// Specialization: DH (a multiple of 16 and of NS and KS, at most 256), BR, BC, the
// cooperative-matrix shape MS x NS x KS, SG (subgroup size), NSG (subgroups), SSZ (floats
// of the score / scratch area: max(BR * (BC + 4), NSG * MS * NS)), local size NSG * SG.
// The host (internal/kern/attention_cm.go) checks: BR % MS == 0, BC % NS == 0,
// BC % KS == 0, NT % BR == 0, NT / BR <= SG, (BR/MS) * (DH/NS) % NSG == 0,
// (MS * NS) % SG == 0.
#pragma use_vulkan_memory_model
#extension GL_KHR_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require

#include "dma_common.glsl"

layout(constant_id = 0) const uint DH = 64;
layout(constant_id = 1) const uint BR = 64;
layout(constant_id = 2) const uint BC = 32;
layout(constant_id = 3) const uint MS = 16;
layout(constant_id = 4) const uint NS = 16;
layout(constant_id = 5) const uint KS = 16;
layout(constant_id = 6) const uint SG = 32;
layout(constant_id = 7) const uint NSG = 4;
layout(constant_id = 8) const uint SSZ = 2304;
layout(local_size_x_id = 9) in;  // NT = NSG * SG
const uint NT = NSG * SG;
const uint TPR = NT / BR;                          // invocations per row in the softmax
const uint EPL = (MS * NS) / SG;                   // elements of one O tile per lane
const uint OT = (BR / MS) * (DH / NS) / NSG;       // O tiles per subgroup
const uint NO = OT * EPL;                          // O elements per invocation

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

// Row strides, in elements: multiples of 8 halves / 4 floats (16 bytes), padded off the
// power of two.
const uint LQ = DH + 8;
const uint LK = DH + 8;
const uint LS = BC + 4;
const uint LP = BC + 8;

shared float16_t Qs[BR * LQ];   // query tile; at the end the fp16 output staging area
shared float16_t KVs[BC * LK];  // K rows of the chunk, then its V rows
shared float Ss[SSZ];           // scores of the chunk; then the subgroups' PV scratch
shared float16_t Ps[BR * LP];   // probabilities of the chunk
shared uint klist[BC + NT];     // gathered key indices
shared uint kord[BC];
shared float kdel[BC];
shared uint scanb[NT];
shared uvec2 tauS[BR];
shared float alphaS[BR];        // per-row rescale of the chunk; at the end 1 / l
// Every shared array is a whole number of 16-byte units and there is no lone scalar:
// drivers lay shared variables out by their own alignment, and a cooperative-matrix
// load or store needs a 16-byte aligned address (NVIDIA returns garbage otherwise).
shared uint flagsS[4];
#define stopFlag flagsS[0]
#define vBad flagsS[1]

const float NEG_INF = -1.0 / 0.0;

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

// Two consecutive halves starting at element e of a packed fp16 buffer.
vec2 pairQ(uint e) {
	if ((e & 1u) == 0u) return unpackHalf2x16(qbuf[e >> 1]);
	return vec2(unpackHalf2x16(qbuf[e >> 1]).y, unpackHalf2x16(qbuf[(e >> 1) + 1u]).x);
}
vec2 pairK(uint e) {
	if ((e & 1u) == 0u) return unpackHalf2x16(kbuf[e >> 1]);
	return vec2(unpackHalf2x16(kbuf[e >> 1]).y, unpackHalf2x16(kbuf[(e >> 1) + 1u]).x);
}
vec2 pairV(uint e) {
	if ((e & 1u) == 0u) return unpackHalf2x16(vbuf[e >> 1]);
	return vec2(unpackHalf2x16(vbuf[e >> 1]).y, unpackHalf2x16(vbuf[(e >> 1) + 1u]).x);
}

bool finite2(vec2 x) { return !any(isnan(x)) && !any(isinf(x)); }

void main() {
	uint tid = gl_LocalInvocationID.x;
	uint sgid = gl_SubgroupID, lane = gl_SubgroupInvocationID;
	// Softmax role: row sr, part sp of TPR; the TPR lanes of a row are adjacent lanes of
	// one subgroup (TPR divides SG), so xor shuffles below TPR stay within the row.
	uint u = sgid * SG + lane;
	uint sr = u / TPR, sp = u % TPR;

	bIdx = gl_WorkGroupID.z;
	hIdx = gl_WorkGroupID.y;
	uint kvh = hIdx / P.G;
	uint hb = P.Hb == P.H ? hIdx : hIdx / P.G;
	bhPlan = bIdx * P.Hb + hb;
	maskHead = hIdx / max(P.maskHDiv, 1u);
	biasHead = hIdx / max(P.biasHDiv, 1u);
	bool causal = P.causal != 0u;

	// Tile geometry, in key positions (signed: rows may sit before key 0 when Lq > Lk).
	int t0 = P.posOffset >= 0 ? P.posOffset / int(BR) : -((-P.posOffset + int(BR) - 1) / int(BR));
	int tpos = (t0 + int(gl_WorkGroupID.x)) * int(BR);       // position of tile row 0
	int firstPos = max(tpos, P.posOffset);                     // first real row's position
	int lastPos = min(tpos + int(BR) - 1, P.posOffset + int(P.Lq) - 1);
	int myPos = tpos + int(sr);
	int myRowS = myPos - P.posOffset;
	bool real = myRowS >= 0 && myRowS < int(P.Lq);
	uint myRow = uint(max(myRowS, 0));

	// Query tile, fp16 (rows outside [0, Lq) are zero).
	uint qBase = P.qOff + bIdx * P.qSB + hIdx * P.qSH;
	for (uint e = tid; e < BR * DH / 2u; e += NT) {
		uint rr = e / (DH / 2u), d = 2u * (e - rr * (DH / 2u));
		int ri = tpos + int(rr) - P.posOffset;
		vec2 x = (ri >= 0 && ri < int(P.Lq)) ? pairQ(qBase + uint(ri) * P.qSL + d) : vec2(0.0);
		Qs[rr * LQ + d] = float16_t(x.x);
		Qs[rr * LQ + d + 1u] = float16_t(x.y);
	}

	// Candidates of the tile (as attention.comp).
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

	// Softmax state of row sr (identical on its TPR lanes) and the O elements this
	// invocation owns: element q of its O tile ot is row/column oRow/oCol below.
	float mrow = NEG_INF, lrow = 0.0;
	float acc[NO];
	for (uint x = 0u; x < NO; x++) acc[x] = 0.0;
	uvec2 myTau = (rowCausal && real) ? tauS[sr] : uvec2(0u);
	float scale = P.scale, softcap = P.softcap;
	uint kBase = P.kOff + bIdx * P.kSB + kvh * P.kSH;
	uint vBase = P.vOff + bIdx * P.vSB + kvh * P.vSH;
	bool explicitMode = P.mode == MODE_EXPLICIT;
	bool hasMask = explicitMode && P.hasMask != 0u;
	bool hasBias = explicitMode && P.hasBias != 0u;
	const uint OTC = DH / NS;  // O tiles per tile row

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
		uint nk = (n + KS - 1u) / KS * KS;  // keys the products cover (the rest is zero)
		uint nt = (n + NS - 1u) / NS;       // score tile columns that hold keys

		// 1. K rows of the chunk.
		for (uint e = tid; e < BC * DH / 2u; e += NT) {
			uint c = e / (DH / 2u), d = 2u * (e - c * (DH / 2u));
			vec2 x = c < n ? pairK(kBase + klist[c] * P.kSL + d) : vec2(0.0);
			KVs[c * LK + d] = float16_t(x.x);
			KVs[c * LK + d + 1u] = float16_t(x.y);
		}
		for (uint c = tid; c < n; c += NT) {
			uint o = ordb[ordBase + klist[c]];
			kord[c] = o;
			kdel[c] = unord(o);
		}
		if (tid == 0u) vBad = 0u;
		barrier();

		// 2. S = Q K^T, tile by tile.
#ifdef DEBUG_SCALAR_S
		for (uint e = tid; e < BR * BC; e += NT) {
			uint r = e / BC, c = e % BC;
			float acc0 = 0.0;
			for (uint d = 0u; d < DH; d++) acc0 += float(Qs[r * LQ + d]) * float(KVs[c * LK + d]);
			Ss[r * LS + c] = acc0;
		}
		for (uint t = sgid; t < 0u; t += NSG) {
#else
		for (uint t = sgid; t < (BR / MS) * nt; t += NSG) {
#endif
			uint ti = t / nt, tj = t - ti * nt;
			coopmat<float, gl_ScopeSubgroup, MS, NS, gl_MatrixUseAccumulator> sacc =
				coopmat<float, gl_ScopeSubgroup, MS, NS, gl_MatrixUseAccumulator>(0.0);
			for (uint kk = 0u; kk < DH; kk += KS) {
				coopmat<float16_t, gl_ScopeSubgroup, MS, KS, gl_MatrixUseA> qa;
				coopmat<float16_t, gl_ScopeSubgroup, KS, NS, gl_MatrixUseB> kb;
				coopMatLoad(qa, Qs, ti * MS * LQ + kk, LQ, gl_CooperativeMatrixLayoutRowMajor);
				coopMatLoad(kb, KVs, tj * NS * LK + kk, LK, gl_CooperativeMatrixLayoutColumnMajor);
				sacc = coopMatMulAdd(qa, kb, sacc);
			}
			coopMatStore(sacc, Ss, ti * MS * LS + tj * NS, LS, gl_CooperativeMatrixLayoutRowMajor);
		}
		barrier();

		// 3. Online softmax, row sr, columns sp + TPR * x.
		float mx = mrow;
		for (uint c = sp; c < BC; c += TPR) {
			float s = NEG_INF;
			if (c < n && real) {
				uint j = klist[c];
				bool keep = !causal || int(j) <= myPos;
				if (keep && rowCausal) keep = keyGE(uvec2(kord[c], j), myTau);
				if (keep && hasMask) keep = maskAt(myRow, j);
				if (keep) {
					s = scale * Ss[sr * LS + c] + kdel[c];
					if (hasBias) s += biasAt(myRow, j);
					if (softcap > 0.0) s = softcap * safeTanh(s / softcap);
				}
			}
			Ss[sr * LS + c] = s;
			mx = max(mx, s);
		}
#ifdef DEBUG_NO_SHUFFLE
		alphaS[sr] = NEG_INF;
		barrier();
		for (uint x = 0u; x < TPR; x++) { if (sp == x) alphaS[sr] = max(alphaS[sr], mx); barrier(); }
		mx = alphaS[sr];
		barrier();
#else
		for (uint off = 1u; off < TPR; off <<= 1) mx = max(mx, subgroupShuffleXor(mx, off));
#endif
		float psum = 0.0;
		for (uint c = sp; c < BC; c += TPR) {
			float s = Ss[sr * LS + c];
			float p = s == NEG_INF ? 0.0 : exp(s - mx);
			psum += p;
			Ps[sr * LP + c] = float16_t(p);
		}
#ifdef DEBUG_NO_SHUFFLE
		alphaS[sr] = 0.0;
		barrier();
		for (uint x = 0u; x < TPR; x++) { if (sp == x) alphaS[sr] += psum; barrier(); }
		psum = alphaS[sr];
		barrier();
#else
		for (uint off = 1u; off < TPR; off <<= 1) psum += subgroupShuffleXor(psum, off);
#endif
		float alpha = mrow == NEG_INF ? 0.0 : exp(mrow - mx);
		lrow = lrow * alpha + psum;
		mrow = mx;
		if (sp == 0u) alphaS[sr] = alpha;
		barrier();  // P and alpha are complete; the K rows are no longer needed

		// 4. V rows of the chunk, into the K area.
		bool bad = false;
		for (uint e = tid; e < BC * DH / 2u; e += NT) {
			uint c = e / (DH / 2u), d = 2u * (e - c * (DH / 2u));
			vec2 x = c < n ? pairV(vBase + klist[c] * P.vSL + d) : vec2(0.0);
			bad = bad || !finite2(x);
			KVs[c * LK + d] = float16_t(x.x);
			KVs[c * LK + d + 1u] = float16_t(x.y);
		}
		if (bad) vBad = 1u;
#ifdef DEBUG_SCALAR_PV
		vBad = 1u;
#endif
		barrier();

		// 5. O = O * alpha + P V.
		if (vBad == 0u) {
			uint scr = sgid * MS * NS;  // this subgroup's scratch in Ss
			for (uint q = 0u; q < OT; q++) {
				uint t = sgid + NSG * q;
				uint ti = t / OTC, tj = t - ti * OTC;
				coopmat<float, gl_ScopeSubgroup, MS, NS, gl_MatrixUseAccumulator> oacc =
					coopmat<float, gl_ScopeSubgroup, MS, NS, gl_MatrixUseAccumulator>(0.0);
				for (uint kk = 0u; kk < nk; kk += KS) {
					coopmat<float16_t, gl_ScopeSubgroup, MS, KS, gl_MatrixUseA> pa;
					coopmat<float16_t, gl_ScopeSubgroup, KS, NS, gl_MatrixUseB> vb;
					coopMatLoad(pa, Ps, ti * MS * LP + kk, LP, gl_CooperativeMatrixLayoutRowMajor);
					coopMatLoad(vb, KVs, kk * LK + tj * NS, LK, gl_CooperativeMatrixLayoutRowMajor);
					oacc = coopMatMulAdd(pa, vb, oacc);
				}
				subgroupMemoryBarrierShared();
				subgroupBarrier();  // the previous tile's scratch has been read
				coopMatStore(oacc, Ss, scr, NS, gl_CooperativeMatrixLayoutRowMajor);
				subgroupMemoryBarrierShared();
				subgroupBarrier();
				for (uint x = 0u; x < EPL; x++) {
					uint e = lane + SG * x;
					uint row = ti * MS + e / NS;
					acc[q * EPL + x] = fma(acc[q * EPL + x], alphaS[row], Ss[scr + e]);
				}
			}
		} else {
			// Scalar P V for a chunk with a non-finite V value: a row only touches the keys
			// it keeps (P != 0).
			for (uint q = 0u; q < OT; q++) {
				uint t = sgid + NSG * q;
				uint ti = t / OTC, tj = t - ti * OTC;
				for (uint x = 0u; x < EPL; x++) {
					uint e = lane + SG * x;
					uint row = ti * MS + e / NS, col = tj * NS + e % NS;
					float sum = 0.0;
					for (uint c = 0u; c < n; c++) {
						float p = float(Ps[row * LP + c]);
						if (p != 0.0) sum = fma(p, float(KVs[c * LK + col]), sum);
					}
					acc[q * EPL + x] = fma(acc[q * EPL + x], alphaS[row], sum);
				}
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

	// Epilogue: O = acc / l, LSE = m + log l; a row without kept keys gets 0 and -inf.
	bool anyKept = lrow > 0.0;
	if (sp == 0u) {
		if (real) lseb[(bIdx * P.H + hIdx) * P.Lq + myRow] = anyKept ? mrow + log(lrow) : NEG_INF;
		alphaS[sr] = anyKept ? 1.0 / lrow : 0.0;
	}
	barrier();
	for (uint q = 0u; q < OT; q++) {
		uint t = sgid + NSG * q;
		uint ti = t / OTC, tj = t - ti * OTC;
		for (uint x = 0u; x < EPL; x++) {
			uint e = lane + SG * x;
			uint row = ti * MS + e / NS, col = tj * NS + e % NS;
			Qs[row * LQ + col] = float16_t(acc[q * EPL + x] * alphaS[row]);
		}
	}
	barrier();
	// Pairs of halves leave as whole words (offsets and strides of O are even).
	uint oBase = P.oOff + bIdx * P.oSB + hIdx * P.oSH;
	for (uint e = tid; e < BR * DH / 2u; e += NT) {
		uint rr = e / (DH / 2u), d = 2u * (e - rr * (DH / 2u));
		int ri = tpos + int(rr) - P.posOffset;
		if (ri >= 0 && ri < int(P.Lq))
			ob[(oBase + uint(ri) * P.oSL + d) >> 1] =
				packHalf2x16(vec2(float(Qs[rr * LQ + d]), float(Qs[rr * LQ + d + 1u])));
	}
}
