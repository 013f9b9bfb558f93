#version 460
// DMA attention forward on tensor cores through VK_KHR_cooperative_matrix (spec section
// 3; the plan contract: internal/kern/doc.go). fp16 storage of Q/K/V/O only (P.storage
// fp16), fp16 operands and fp32 accumulation; scores, softmax and O accumulate in float32.
// Same bindings, parameter block, plan contract and outputs as attention.comp.
//
// A workgroup is NSG subgroups of SG invocations and owns a tile of BR = NSG * MS query
// rows of one (batch, head), aligned on key positions as in attention.comp (BR divides
// 64, so a tile never straddles a selection block). Subgroup g owns the band of MS rows
// [g * MS, (g + 1) * MS): its Q fragments (A operands, loaded once per tile), its O
// accumulators (DH / NS cooperative matrices, for the whole tile) and its softmax state
// live in registers, and everything between the shared K/V rows and O stays inside the
// subgroup: only the K/V loads need workgroup barriers.
//
// The gather is attention.comp's: the tile walks its candidates NT at a time, keeps those
// kept by at least one of its rows and compacts them (subgroup ballots plus a per-subgroup
// count table: one workgroup barrier per NT candidates) into a ring of gathered keys.
// Per chunk of BC gathered keys:
//   1. K and V rows -> shared fp16 (16-byte global loads when the offsets and strides
//      allow, else pairs), with each key's index and weight (rows past the chunk's end
//      are zero); one workgroup barrier.
//   2. each subgroup: S = Q K^T for its band (coopMatMulAdd), stored to its own fp32
//      scratch;
//   3. the TPR = SG / MS lanes of each row apply scale, + delta, bias, softcap and the
//      per-element keep test and run the online softmax in fp32; P = exp(s - m) (in
//      [0, 1]) goes to the subgroup's fp16 P area. KHR cooperative matrices have no
//      defined element -> (row, column) map, so the per-row rescale O *= alpha is an
//      element-by-element product with a matrix loaded (same shape, same layout) from a
//      scratch whose row r holds alpha_r: exact, and O never leaves the registers;
//   4. each subgroup: O += P V by coopMatMulAdd straight into its accumulators;
//   5. a workgroup barrier before the next chunk's rows overwrite K/V.
// A chunk whose V holds a non-finite value computes PV by scalar loops that skip P == 0
// instead (added to the accumulators through the scratch), so a NaN or Inf value reaches
// exactly the rows that keep its key (as in attention.comp); 0 * NaN inside a matrix
// product would spread it to the whole band.
//
// Specialization: DH (a multiple of 16 and of NS and KS, at most 256), BR (NSG * MS), BC
// (a multiple of 16), the cooperative-matrix shape MS x NS x KS, SG (subgroup size, a
// multiple of MS), NSG (subgroups), local size NSG * SG. The host
// (internal/kern/attention_cm.go) checks these and (MS * NS) % (2 * SG) == 0.
#pragma use_vulkan_memory_model
#extension GL_KHR_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#extension GL_KHR_shader_subgroup_ballot : require

#include "dma_common.glsl"

layout(constant_id = 0) const uint DH = 64;
layout(constant_id = 1) const uint BR = 64;
layout(constant_id = 2) const uint BC = 32;
layout(constant_id = 3) const uint MS = 16;
layout(constant_id = 4) const uint NS = 16;
layout(constant_id = 5) const uint KS = 16;
layout(constant_id = 6) const uint SG = 32;
layout(constant_id = 7) const uint NSG = 4;
layout(local_size_x_id = 8) in;  // NT = NSG * SG
const uint NT = NSG * SG;
const uint TPR = SG / MS;          // lanes per row in the softmax
const uint KT = DH / KS;           // k steps of S = Q K^T
const uint OTC = DH / NS;          // O tiles of a band
const uint LK = DH + 8;            // row stride of K/V/Q staging, halves
const uint LK4 = LK / 4u;          // the same in f16vec4 units
const uint LS = BC + 4u;           // row stride of the score scratch, floats
const uint LP = BC + 8u;           // row stride of P, halves
const uint KCAP = BC + NT;         // ring of gathered keys
const uint QP = BR < 2u * BC ? BR : 2u * BC;  // query rows staged at once (K/V area)
const uint SGC = (2u * NSG + 3u) / 4u * 4u;
const uint LPT = (BC * DH / 8u + NT - 1u) / NT;  // 8-half K (and V) items per invocation

layout(std430, binding = 1) readonly buffer BufQ { uint qbuf[]; };
layout(std430, binding = 2) readonly buffer BufK { uint kbuf[]; };
layout(std430, binding = 2) readonly buffer BufK4 { uvec4 kbuf4[]; };
layout(std430, binding = 3) readonly buffer BufV { uint vbuf[]; };
layout(std430, binding = 3) readonly buffer BufV4 { uvec4 vbuf4[]; };
layout(std430, binding = 4) readonly buffer BufOrd { uint ordb[]; };
layout(std430, binding = 5) readonly buffer BufU { uvec2 ub[]; };
layout(std430, binding = 6) readonly buffer BufUC { uint ucount[]; };
layout(std430, binding = 7) readonly buffer BufTau { uvec2 taub[]; };
layout(std430, binding = 8) readonly buffer BufMask { uint maskb[]; };
layout(std430, binding = 9) readonly buffer BufBias { float biasb[]; };
layout(std430, binding = 10) buffer BufO { uint ob[]; };
layout(std430, binding = 11) writeonly buffer BufLSE { float lseb[]; };

// Every shared array is a whole number of 16-byte units and there is no lone scalar:
// drivers lay shared variables out by their own alignment, and a cooperative-matrix
// load or store needs a 16-byte aligned address (NVIDIA returns garbage otherwise).
// Offsets and strides of every cooperative-matrix access are multiples of 16 bytes.
shared f16vec4 KV4[2u * BC * LK4];  // K rows [0, BC), V rows [BC, 2 BC); Q staging first
shared float Ss[NSG * MS * LS];     // per subgroup: scores of the chunk, then scratch
shared float16_t Ps[NSG * MS * LP]; // per subgroup: probabilities of the chunk
shared uint klist[KCAP];            // ring of gathered key indices
shared uint kidx[BC];               // the chunk's keys, their ord and weight
shared uint kord[BC];
shared float kdel[BC];
shared uvec2 tauS[BR];
shared uint sgCnt[SGC];             // gather: kept count (| stop bit) per subgroup, 2 slots
shared uint flagsS[4];              // non-finite V in the chunk, 2 slots
shared float rowA[BR];              // per-row 1 / l at the end (and DEBUG_NO_SHUFFLE)

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

// Two consecutive halves starting at element e of a packed fp16 buffer, as the word
// that holds them (element e in the low half).
uint wordQ(uint e) {
	if ((e & 1u) == 0u) return qbuf[e >> 1];
	return (qbuf[e >> 1] >> 16) | (qbuf[(e >> 1) + 1u] << 16);
}
uint wordK(uint e) {
	if ((e & 1u) == 0u) return kbuf[e >> 1];
	return (kbuf[e >> 1] >> 16) | (kbuf[(e >> 1) + 1u] << 16);
}
uint wordV(uint e) {
	if ((e & 1u) == 0u) return vbuf[e >> 1];
	return (vbuf[e >> 1] >> 16) | (vbuf[(e >> 1) + 1u] << 16);
}

f16vec4 h4(uint a, uint b) { return f16vec4(unpackFloat2x16(a), unpackFloat2x16(b)); }

// Whether both halves of a word are finite (exponent not all ones).
bool finiteW(uint w) { return (w & 0x7c00u) != 0x7c00u && (w & 0x7c000000u) != 0x7c000000u; }

// Max and sum over the TPR adjacent lanes of a row (row: tile row, for the debugging
// variant that goes through shared memory instead of shuffles).
float rowMax(float v, uint row, uint sp) {
#ifdef DEBUG_NO_SHUFFLE
	for (uint x = 0u; x < TPR; x++) {
		if (sp == x) rowA[row] = x == 0u ? v : max(rowA[row], v);
		subgroupMemoryBarrierShared();
		subgroupBarrier();
	}
	v = rowA[row];
	subgroupMemoryBarrierShared();
	subgroupBarrier();
#else
	for (uint off = 1u; off < TPR; off <<= 1) v = max(v, subgroupShuffleXor(v, off));
#endif
	return v;
}
float rowSum(float v, uint row, uint sp) {
#ifdef DEBUG_NO_SHUFFLE
	for (uint x = 0u; x < TPR; x++) {
		if (sp == x) rowA[row] = x == 0u ? v : rowA[row] + v;
		subgroupMemoryBarrierShared();
		subgroupBarrier();
	}
	v = rowA[row];
	subgroupMemoryBarrierShared();
	subgroupBarrier();
#else
	for (uint off = 1u; off < TPR; off <<= 1) v += subgroupShuffleXor(v, off);
#endif
	return v;
}

void main() {
	uint sgid = gl_SubgroupID, lane = gl_SubgroupInvocationID;
	uint u = sgid * SG + lane;
	// Softmax role: band row r (tile row sr), part sp of TPR; the TPR lanes of a row are
	// adjacent lanes (TPR divides SG), so xor shuffles below TPR stay within the row.
	uint r = lane / TPR, sp = lane % TPR;
	uint sr = sgid * MS + r;

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

	// Query fragments of the band, staged through the K/V area QP rows at a time (rows
	// outside [0, Lq) are zero).
	uint qBase = P.qOff + bIdx * P.qSB + hIdx * P.qSH;
	coopmat<float16_t, gl_ScopeSubgroup, MS, KS, gl_MatrixUseA> qf[KT];
	for (uint r0 = 0u; r0 < BR; r0 += QP) {
		for (uint e = u; e < QP * DH / 4u; e += NT) {
			uint rr = e / (DH / 4u), d = 4u * (e - rr * (DH / 4u));
			int ri = tpos + int(r0 + rr) - P.posOffset;
			uvec2 w = uvec2(0u);
			if (ri >= 0 && ri < int(P.Lq)) {
				uint q0 = qBase + uint(ri) * P.qSL + d;
				w = uvec2(wordQ(q0), wordQ(q0 + 2u));
			}
			KV4[rr * LK4 + d / 4u] = h4(w.x, w.y);
		}
		barrier();
		if (sgid * MS >= r0 && sgid * MS < r0 + QP) {
			for (uint kk = 0u; kk < KT; kk++)
				coopMatLoad(qf[kk], KV4, (sgid * MS - r0) * LK4 + kk * KS / 4u, LK4, gl_CooperativeMatrixLayoutRowMajor);
		}
		barrier();
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
			for (uint t = u; t < BR; t += NT) {
				int ri = tpos + int(t) - P.posOffset;
				tauS[t] = (ri >= 0 && ri < int(P.Lq)) ? taub[bhPlan * P.Lq + uint(ri)] : uvec2(0xffffffffu);
			}
		} else if (fromU) {
			uBase = (bhPlan * (P.nblocks + 1u) + P.nblocks) * P.ncap;
			ncand = ucount[bhPlan * (P.nblocks + 1u) + P.nblocks];
		} else {
			ncand = uint(kLast) + 1u;
		}
	}
	if (u < 4u) flagsS[u] = 0u;
	barrier();

	// Softmax state of row sr (identical on its TPR lanes): running max and sum.
	float mrow = NEG_INF, lrow = 0.0;
	coopmat<float, gl_ScopeSubgroup, MS, NS, gl_MatrixUseAccumulator> oacc[OTC];
	for (uint q = 0u; q < OTC; q++)
		oacc[q] = coopmat<float, gl_ScopeSubgroup, MS, NS, gl_MatrixUseAccumulator>(0.0);
	uvec2 myTau = (rowCausal && real) ? tauS[sr] : uvec2(0u);
	float scale = P.scale, softcap = P.softcap;
	uint kBase = P.kOff + bIdx * P.kSB + kvh * P.kSH;
	uint vBase = P.vOff + bIdx * P.vSB + kvh * P.vSH;
	// 16-byte loads of K/V rows: every row starts on a multiple of 8 halves.
	bool kVec = (kBase & 7u) == 0u && (P.kSL & 7u) == 0u;
	bool vVec = (vBase & 7u) == 0u && (P.vSL & 7u) == 0u;
	bool explicitMode = P.mode == MODE_EXPLICIT;
	bool hasMask = explicitMode && P.hasMask != 0u;
	bool hasBias = explicitMode && P.hasBias != 0u;
	uint sBase = sgid * MS * LS;   // this subgroup's scores / scratch
	uint pBase = sgid * MS * LP;   // this subgroup's P

	uint cursor = 0u, nbuf = 0u, head = 0u, par = 0u, cpar = 0u;
	for (;;) {
		// Fill the ring with kept candidates, NT at a time, until a chunk is full.
		bool filled = false;
		while (nbuf < BC && cursor < ncand) {
			uint kc = cursor + u;
			bool keep = false, stop = false;
			uint idx = 0u;
			if (kc < ncand) {
				if (fromU) {
					uvec2 ent = ub[uBase + kc];
					idx = ent.y;
					if (rowCausal) {
						if (!keyGE(ent, tauMin)) {
							stop = true;  // sorted descending: nothing after this is kept
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
			uvec4 bk = subgroupBallot(keep);
			uvec4 bs = subgroupBallot(stop);
			uint excl = subgroupBallotExclusiveBitCount(bk);
			if (lane == 0u)
				sgCnt[par * NSG + sgid] = subgroupBallotBitCount(bk) | (subgroupBallotBitCount(bs) != 0u ? 0x80000000u : 0u);
			barrier();
			uint off = 0u, tot = 0u;
			bool anyStop = false;
			for (uint g = 0u; g < NSG; g++) {
				uint v = sgCnt[par * NSG + g];
				uint c = v & 0x7fffffffu;
				off += g < sgid ? c : 0u;
				tot += c;
				anyStop = anyStop || v >= 0x80000000u;
			}
			if (keep) klist[(head + nbuf + off + excl) % KCAP] = idx;
			nbuf += tot;
			cursor += NT;
			if (anyStop) cursor = ncand;
			par ^= 1u;  // the other slot: no barrier needed before the next round writes
			filled = true;
		}
		if (filled) barrier();  // the ring is written
		if (nbuf == 0u) break;
		uint n = min(nbuf, BC);
		uint nk = (n + KS - 1u) / KS * KS;  // keys the products cover (the rest is zero)
		uint nt = (n + NS - 1u) / NS;       // score tiles that hold keys

		// 1. K and V rows of the chunk, 8 halves per item.
		if (u < 2u) flagsS[2u * (cpar ^ 1u) + u] = 0u;  // the next chunk's slot
		// All of an invocation's global loads are issued before any shared store.
		uvec4 wk[LPT], wv[LPT];
		bool bad = false;
		for (uint x = 0u; x < LPT; x++) {
			uint e = u + NT * x;
			uint c = e / (DH / 8u), d = 8u * (e - c * (DH / 8u));
			wk[x] = uvec4(0u);
			wv[x] = uvec4(0u);
			if (c < n && e < BC * DH / 8u) {
				uint j = klist[(head + c) % KCAP];
				uint ke = kBase + j * P.kSL + d, ve = vBase + j * P.vSL + d;
				if (kVec) {
					wk[x] = kbuf4[ke >> 3];
				} else {
					wk[x] = uvec4(wordK(ke), wordK(ke + 2u), wordK(ke + 4u), wordK(ke + 6u));
				}
				if (vVec) {
					wv[x] = vbuf4[ve >> 3];
				} else {
					wv[x] = uvec4(wordV(ve), wordV(ve + 2u), wordV(ve + 4u), wordV(ve + 6u));
				}
			}
		}
		for (uint x = 0u; x < LPT; x++) {
			uint e = u + NT * x;
			if (e < BC * DH / 8u) {
				uint c = e / (DH / 8u), d = 8u * (e - c * (DH / 8u));
				bad = bad || !(finiteW(wv[x].x) && finiteW(wv[x].y) && finiteW(wv[x].z) && finiteW(wv[x].w));
				uint ko = c * LK4 + d / 4u, vo = (BC + c) * LK4 + d / 4u;
				KV4[ko] = h4(wk[x].x, wk[x].y);
				KV4[ko + 1u] = h4(wk[x].z, wk[x].w);
				KV4[vo] = h4(wv[x].x, wv[x].y);
				KV4[vo + 1u] = h4(wv[x].z, wv[x].w);
			}
		}
		for (uint c = u; c < n; c += NT) {
			uint j = klist[(head + c) % KCAP];
			uint o = ordb[ordBase + j];
			kidx[c] = j;
			kord[c] = o;
			kdel[c] = unord(o);
		}
		if (bad) flagsS[2u * cpar] = 1u;
#ifdef DEBUG_SCALAR_PV
		flagsS[2u * cpar] = 1u;
#endif
		barrier();
		bool vBad = flagsS[2u * cpar] != 0u;

		// 2. S = Q K^T for the band, tile by tile.
#ifdef DEBUG_SCALAR_S
		// Scalar scores (Q read again from the buffer): a bisection hook.
		for (uint e = lane; e < MS * BC; e += SG) {
			uint rr = e / BC, c = e % BC;
			int ri = tpos + int(sgid * MS + rr) - P.posOffset;
			float acc0 = 0.0;
			if (ri >= 0 && ri < int(P.Lq)) {
				for (uint d = 0u; d < DH; d += 2u) {
					vec2 qv = unpackHalf2x16(wordQ(qBase + uint(ri) * P.qSL + d));
					acc0 += qv.x * float(KV4[c * LK4 + d / 4u][d % 4u]) + qv.y * float(KV4[c * LK4 + d / 4u][d % 4u + 1u]);
				}
			}
			Ss[sBase + rr * LS + c] = acc0;
		}
		for (uint tj = 0u; tj < 0u; tj++) {
#else
		for (uint tj = 0u; tj < nt; tj++) {
#endif
			coopmat<float, gl_ScopeSubgroup, MS, NS, gl_MatrixUseAccumulator> sacc =
				coopmat<float, gl_ScopeSubgroup, MS, NS, gl_MatrixUseAccumulator>(0.0);
			for (uint kk = 0u; kk < KT; kk++) {
				coopmat<float16_t, gl_ScopeSubgroup, KS, NS, gl_MatrixUseB> kb;
				coopMatLoad(kb, KV4, tj * NS * LK4 + kk * KS / 4u, LK4, gl_CooperativeMatrixLayoutColumnMajor);
				sacc = coopMatMulAdd(qf[kk], kb, sacc);
			}
			coopMatStore(sacc, Ss, sBase + tj * NS, LS, gl_CooperativeMatrixLayoutRowMajor);
		}
		subgroupMemoryBarrierShared();
		subgroupBarrier();

		// 3. Online softmax, row sr, columns sp + TPR * x.
		float mx = NEG_INF;
		for (uint c = sp; c < BC; c += TPR) {
			float s = NEG_INF;
			if (c < n && real) {
				uint j = kidx[c];
				bool keep = !causal || int(j) <= myPos;
				if (keep && rowCausal) keep = keyGE(uvec2(kord[c], j), myTau);
				if (keep && hasMask) keep = maskAt(myRow, j);
				if (keep) {
					s = scale * Ss[sBase + r * LS + c] + kdel[c];
					if (hasBias) s += biasAt(myRow, j);
					if (softcap > 0.0) s = softcap * safeTanh(s / softcap);
				}
			}
			Ss[sBase + r * LS + c] = s;
			mx = max(mx, s);
		}
		mx = rowMax(mx, sgid * MS + r, sp);
		float mnew = max(mrow, mx);
		float alpha = isNegInfF(mrow) ? 0.0 : exp(mrow - mnew);
		// A NaN or +inf score makes p, and so lrow and the row of O, NaN. On the scalar
		// P V route a pair that contributes nothing (not kept, score -inf) is marked
		// P = -1, so that a kept key whose P rounds to 0 still passes a NaN in V on.
		float psum = 0.0, pNone = vBad ? -1.0 : 0.0;
		for (uint c = sp; c < BC; c += TPR) {
			float s = Ss[sBase + r * LS + c];
			float p = isNegInfF(s) ? 0.0 : exp(s - mnew);
			psum += p;
			Ps[pBase + r * LP + c] = float16_t(isNegInfF(s) ? pNone : p);
		}
		psum = rowSum(psum, sgid * MS + r, sp);
		lrow = lrow * alpha + psum;
		mrow = mnew;
		subgroupMemoryBarrierShared();
		subgroupBarrier();  // P complete; the scores are no longer needed

		// O *= alpha, row by row, in the accumulators: a matrix of the same shape and
		// layout whose row r holds alpha_r everywhere, multiplied element by element, so
		// the unknown element -> (row, column) map never matters.
		for (uint c = sp; c < NS; c += TPR) Ss[sBase + r * NS + c] = alpha;
		subgroupMemoryBarrierShared();
		subgroupBarrier();
		{
			coopmat<float, gl_ScopeSubgroup, MS, NS, gl_MatrixUseAccumulator> am;
			coopMatLoad(am, Ss, sBase, NS, gl_CooperativeMatrixLayoutRowMajor);
			for (uint q = 0u; q < OTC; q++) oacc[q] = oacc[q] * am;
		}
		subgroupMemoryBarrierShared();
		subgroupBarrier();  // the scratch is free again

		// 4. O += P V.
		if (!vBad) {
			for (uint kk = 0u; kk < nk; kk += KS) {
				coopmat<float16_t, gl_ScopeSubgroup, MS, KS, gl_MatrixUseA> pa;
				coopMatLoad(pa, Ps, pBase + kk, LP, gl_CooperativeMatrixLayoutRowMajor);
				for (uint q = 0u; q < OTC; q++) {
					coopmat<float16_t, gl_ScopeSubgroup, KS, NS, gl_MatrixUseB> vb;
					coopMatLoad(vb, KV4, (BC + kk) * LK4 + q * NS / 4u, LK4, gl_CooperativeMatrixLayoutRowMajor);
					oacc[q] = coopMatMulAdd(pa, vb, oacc[q]);
				}
			}
		} else {
			// Scalar P V for a chunk with a non-finite V value: a row only touches the keys
			// it keeps (P >= 0 or NaN; -1 marks the others).
			for (uint q = 0u; q < OTC; q++) {
				for (uint x = lane; x < MS * NS; x += SG) {
					uint row = x / NS, col = q * NS + x % NS;
					float sum = 0.0;
					for (uint c = 0u; c < n; c++) {
						float p = float(Ps[pBase + row * LP + c]);
						if (!isNoneMark(p)) sum = fma(p, float(KV4[(BC + c) * LK4 + col / 4u][col % 4u]), sum);
					}
					Ss[sBase + x] = sum;
				}
				subgroupMemoryBarrierShared();
				subgroupBarrier();
				coopmat<float, gl_ScopeSubgroup, MS, NS, gl_MatrixUseAccumulator> t;
				coopMatLoad(t, Ss, sBase, NS, gl_CooperativeMatrixLayoutRowMajor);
				oacc[q] = oacc[q] + t;
				subgroupMemoryBarrierShared();
				subgroupBarrier();
			}
		}

		head = (head + n) % KCAP;
		nbuf -= n;
		cpar ^= 1u;
		barrier();  // K/V, the chunk's keys and the ring slots may be rewritten
	}

	// Epilogue: O = acc / l, LSE = m + log l; a row without kept keys (l = 0) gets 0 and
	// -inf, a row with a NaN or +inf score (l NaN) NaN and NaN.
	bool anyKept = !isZeroF(lrow);  // true for NaN
	if (sp == 0u && real) lseb[(bIdx * P.H + hIdx) * P.Lq + myRow] = anyKept ? mrow + log(lrow) : NEG_INF;
	if (sp == 0u) rowA[sr] = anyKept ? 1.0 / lrow : 0.0;
	// Pairs of halves leave as whole words (offsets and strides of O are even).
	uint oBase = P.oOff + bIdx * P.oSB + hIdx * P.oSH;
	for (uint q = 0u; q < OTC; q++) {
		coopMatStore(oacc[q], Ss, sBase, NS, gl_CooperativeMatrixLayoutRowMajor);
		subgroupMemoryBarrierShared();
		subgroupBarrier();
		for (uint x = 2u * lane; x < MS * NS; x += 2u * SG) {
			uint row = x / NS, col = q * NS + x % NS;
			float il = rowA[sgid * MS + row];
			int ri = tpos + int(sgid * MS + row) - P.posOffset;
			if (ri >= 0 && ri < int(P.Lq))
				ob[(oBase + uint(ri) * P.oSL + col) >> 1] = packFloat2x16(f16vec2(vec2(Ss[sBase + x], Ss[sBase + x + 1u]) * il));
		}
		subgroupMemoryBarrierShared();
		subgroupBarrier();
	}
}
