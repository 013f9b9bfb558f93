#version 460
// variant: f16
// variant: bf16 -DBF16=1
//
// DMA attention forward on tensor cores through VK_KHR_cooperative_matrix (spec section
// 3; the plan contract: internal/kern/doc.go). fp16 storage of Q/K/V/O (bf16 in the bf16
// variant), operands of the same type and fp32 accumulation; scores, softmax and O
// accumulate in float32. Same bindings, parameter block, plan contract and outputs as
// attention.comp.
//
// A workgroup is NSG subgroups of SG invocations and owns a tile of BR = NSG * MS query
// rows of one (batch, head), aligned on key positions as in attention.comp (BR divides
// 64, so a tile never straddles a selection block). Subgroup g owns the band of MS rows
// [g * MS, (g + 1) * MS): its Q fragments (A operands, loaded once), its O accumulators
// (DH / NS cooperative matrices) and its softmax state live in registers; only the
// shared K and V rows need workgroup barriers.
//
// Keys. Modes row and shared walk the tile's candidates (a U list) NT at a time, keep
// those kept by at least one row of the tile and compact them (subgroup ballots, a count
// per subgroup, one barrier per NT candidates) into a ring of (idx, ord) entries filled
// at least two chunks ahead, so the rows of the next chunk are known before this chunk
// computes. Modes none and explicit take the keys 0..last in place: chunk c is keys
// [c BC, (c + 1) BC), their ord read beside the K rows into the same ring slots.
//
// Per chunk of BC keys (K already in shared memory), two workgroup barriers:
//   1. each subgroup: S = Q K^T for its band (every score tile at once, independent
//      product chains), stored to its fp32 scratch; meanwhile the chunk's V rows are in
//      flight (16-byte global loads into registers);
//   2. the TPR = SG / MS lanes of each row apply scale, + delta, bias, softcap and the
//      keep test to the scores (held in registers), run the online softmax in fp32 and
//      write P = exp(s - m) (in [0, 1]) in the operand type; V goes to shared memory;
//      barrier;
//   3. the next chunk's K rows are requested; each subgroup rescales O by alpha (below)
//      and adds P V (coopMatMulAdd into its accumulators); the K rows go to shared
//      memory, the ring is topped up; barrier.
// KHR cooperative matrices have no defined element -> (row, column) map, but it is the
// same for every matrix of one type: two accumulators loaded once from row and column
// numbers tell each invocation the (row, column) of each of its elements, so the per-row
// rescale O *= alpha is a shuffle of the row's alpha into each element, in registers.
// A band skips a chunk that starts after its last row (modes none and explicit, causal),
// and skips the keep test on a whole chunk that each of its rows keeps entirely (known
// from a flag per chunk set beside the K loads: a padded key in mode none, the largest
// key index in modes row and shared; and in mode row the chunk's last, lowest ranked key
// against the band's highest threshold).
//
// A chunk whose V rows hold a non-finite value computes P V by scalar sums instead, each
// element over the keys its row keeps (recomputed from the raw scores, which stay in the
// scratch), so a NaN or Inf reaches exactly the rows that keep its key (as in
// attention.comp); 0 * NaN inside a matrix product would spread it to the whole band.
//
// Specialization: DH (a multiple of 16 and of NS and KS, at most 256), BR (NSG * MS), BC
// (a multiple of 16, at most 64), the cooperative-matrix shape MS x NS x KS, SG
// (subgroup size, a multiple of MS), NSG (subgroups), local size NSG * SG. The host
// (internal/kern/attention_cm.go) checks these, (MS * NS) % (2 * SG) == 0 and
// 2 BC + NT <= 512 (the ring).
//
// Build switches (ablations and debugging, bench/cm-builds.sh; none is set in the
// committed SPIR-V): V_BEFORE_S requests V before S instead of after it (and stores it
// before the softmax); K_LATE requests the next chunk's K after P V instead of before
// (fewer live registers, latency exposed); S_SERIAL computes the score tiles one after
// another (fewer live registers); DEBUG_SCALAR_PV takes the scalar P V route on every
// chunk.
#pragma use_vulkan_memory_model
#extension GL_KHR_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_control_flow_attributes : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#extension GL_KHR_shader_subgroup_ballot : require
#ifdef BF16
#extension GL_EXT_bfloat16 : require
#extension GL_EXT_shader_explicit_arithmetic_types_int16 : require
#define T16 bfloat16_t
#define T16V4 bf16vec4
#else
#define T16 float16_t
#define T16V4 f16vec4
#endif

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
const uint CPL = BC / TPR;         // columns per lane in the softmax
const uint KT = DH / KS;           // k steps of S = Q K^T
const uint OTC = DH / NS;          // O tiles of a band
const uint NTS = BC / NS;          // score tiles of a chunk
const uint LK = DH + 8;            // row stride of K/V/Q staging, halves
const uint LK4 = LK / 4u;          // the same in f16vec4 units
const uint LS = BC + 4u;           // row stride of the score scratch, floats
const uint LP = BC % 32u == 0u ? BC + 8u : BC;  // row stride of P, halves (no bank aliasing)
const uint KCAP = 2u * BC + NT <= 256u ? 256u : 512u;  // ring of keys, a power of two >= 2 BC + NT
const uint QP = BR < 2u * BC ? BR : 2u * BC;  // query rows staged at once (K/V area)
const uint SGC = (2u * NSG + 3u) / 4u * 4u;
const uint LPT = (BC * DH / 8u + NT - 1u) / NT;  // 8-half K (and V) items per invocation
const uint MPT = (BC + NT - 1u) / NT;            // keys' ord per invocation (none, explicit)

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
shared T16V4 KV4[2u * BC * LK4];  // K rows [0, BC), V rows [BC, 2 BC); Q staging first
shared float Ss[NSG * MS * LS];     // per subgroup: raw scores of the chunk, then scratch
shared T16 Ps[NSG * MS * LP];    // per subgroup: probabilities of the chunk
shared uvec2 ring[KCAP];            // keys (idx, ord) in walk order, slot = position % KCAP
shared uvec2 tauS[BR];
shared uint sgCnt[SGC];             // gather: kept count (| stop bit) per subgroup, 2 slots
shared uint flagsS[4];              // per chunk parity: non-finite V; a padded key (mode
                                    // none) or the largest key index (modes row, shared)

const float NEG_INF = -1.0 / 0.0;
const uint KMASK = KCAP - 1u;

uint bIdx, hIdx, bhPlan, maskHead, biasHead, ordBase, kBase, vBase;
int tpos, firstPos, lastPos;
bool causal, rowCausal, fromU, explicitMode, hasMask, hasBias, kVec, vVec;
uint ncand, uBase;
uvec2 tauMin;

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

uvec4 loadK(uint e) {
	if (kVec) return kbuf4[e >> 3];
	return uvec4(wordK(e), wordK(e + 2u), wordK(e + 4u), wordK(e + 6u));
}
uvec4 loadV(uint e) {
	if (vVec) return vbuf4[e >> 3];
	return uvec4(wordV(e), wordV(e + 2u), wordV(e + 4u), wordV(e + 6u));
}

// Four 16-bit elements from two words (low half first).
#ifdef BF16
bf16vec2 bf2(uint a) { return uintBitsToBFloat16EXT(u16vec2(a & 0xffffu, a >> 16)); }
T16V4 h4(uint a, uint b) { return bf16vec4(bf2(a), bf2(b)); }
#else
T16V4 h4(uint a, uint b) { return f16vec4(unpackFloat2x16(a), unpackFloat2x16(b)); }
#endif

// Non-finite elements of a word: the exponent field (bits 10-14 of each half; bf16: 7-14)
// plus one carries into the element's sign bit exactly when it is all ones; OR the
// results of many words and test the sign bits once.
#ifdef BF16
uint nonFiniteBits(uint w) { return (w & 0x7f807f80u) + 0x00800080u; }
#else
uint nonFiniteBits(uint w) { return (w & 0x7c007c00u) + 0x04000400u; }
#endif
bool anyNonFinite(uint acc) { return (acc & 0x80008000u) != 0u; }

// A chunk's K or V rows, 8 halves per item: item x of invocation u is key c of the
// chunk (walk position head + c; zero past its n keys), halves [d, d + 8).
void rowsLoad(bool isV, uint u, uint head, uint n, out uvec4 w[LPT]) {
	[[unroll]] for (uint x = 0u; x < LPT; x++) {
		uint e = u + NT * x;
		uint c = e / (DH / 8u), d = 8u * (e - c * (DH / 8u));
		w[x] = uvec4(0u);
		if (c < n && e < BC * DH / 8u) {
			uint j = fromU ? ring[(head + c) & KMASK].x : head + c;
			w[x] = isV ? loadV(vBase + j * P.vSL + d) : loadK(kBase + j * P.kSL + d);
		}
	}
}

// Stores the items of rowsLoad at K/V row r0 + c of the shared rows; returns their
// nonFiniteBits.
uint rowsStore(uint u, uint r0, uvec4 w[LPT]) {
	uint acc = 0u;
	[[unroll]] for (uint x = 0u; x < LPT; x++) {
		uint e = u + NT * x;
		if (e < BC * DH / 8u) {
			uint c = e / (DH / 8u), d = 8u * (e - c * (DH / 8u));
			acc |= nonFiniteBits(w[x].x) | nonFiniteBits(w[x].y) | nonFiniteBits(w[x].z) | nonFiniteBits(w[x].w);
			uint o = (r0 + c) * LK4 + d / 4u;
			KV4[o] = h4(w[x].x, w[x].y);
			KV4[o + 1u] = h4(w[x].z, w[x].w);
		}
	}
	return acc;
}

// Max and sum over the TPR adjacent lanes of a row.
float rowMax(float v) {
	[[unroll]] for (uint off = 1u; off < TPR; off <<= 1) v = max(v, subgroupShuffleXor(v, off));
	return v;
}
float rowSum(float v) {
	[[unroll]] for (uint off = 1u; off < TPR; off <<= 1) v += subgroupShuffleXor(v, off);
	return v;
}

// The DMA score of a pair from its raw product q.k: -inf when the row (at key position
// pos, query row i, threshold tau) does not keep the key (ring entry ent; ent.x = ~0u
// for a column past the chunk's keys).
float score(float raw, uvec2 ent, int pos, uint i, uvec2 tau) {
	uint j = ent.x, o = ent.y;
	bool keep = j != ~0u && (!causal || int(j) <= pos);
	if (!fromU) keep = keep && o != 0u;
	if (rowCausal) keep = keep && keyGE(uvec2(o, j), tau);
	if (hasMask) keep = keep && maskAt(i, j);
	if (!keep) return NEG_INF;
	float s = P.scale * raw + unord(o);
	if (hasBias) s += biasAt(i, j);
	if (P.softcap > 0.0) s = P.softcap * safeTanh(s / P.softcap);
	return s;
}

// Ring slot of the chunk column c (the chunk starts at walk position head).
uvec2 entryAt(uint head, uint c, uint n) { return c < n ? ring[(head + c) & KMASK] : uvec2(~0u, 0u); }

// Records key e of a chunk (walk position e; o its ord, read in place in modes none and
// explicit) for the chunk's flag slot: mode none notes a padded key, modes row and shared
// the largest key index.
void chunkKey(uint e, uint o, uint slot) {
	if (fromU) {
		atomicMax(flagsS[slot], ring[e & KMASK].x);
	} else {
		ring[e & KMASK] = uvec2(e, o);
		if (o == 0u) flagsS[slot] = 1u;
	}
}

// Tops the ring up with kept candidates, NT at a time, until it holds 2 BC keys from
// head on (nbuf of them) or the candidates run out. Modes row and shared only. Each round
// ends its counts with a barrier; the entries it writes are visible after the next one.
void fillRing(uint head, inout uint nbuf, inout uint cursor, inout uint par) {
	uint sgid = gl_SubgroupID, lane = gl_SubgroupInvocationID, u = sgid * SG + lane;
	while (nbuf < 2u * BC && cursor < ncand) {
		uint kc = cursor + u;
		bool keep = false, stop = false;
		uvec2 ent = uvec2(0u);
		if (kc < ncand) {
			ent = ub[uBase + kc];
			uint idx = ent.y;
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
		if (keep) ring[(head + nbuf + off + excl) & KMASK] = uvec2(ent.y, ent.x);  // (idx, ord)
		nbuf += tot;
		cursor += NT;
		if (anyStop) cursor = ncand;
		par ^= 1u;  // the other slot: no barrier needed before the next round writes
	}
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
	causal = P.causal != 0u;

	// Tile geometry, in key positions (signed: rows may sit before key 0 when Lq > Lk).
	// With causality the last tiles have the most keys: they start first, so that the
	// short ones fill the end of the dispatch.
	uint tile = causal ? gl_NumWorkGroups.x - 1u - gl_WorkGroupID.x : gl_WorkGroupID.x;
	int t0 = P.posOffset >= 0 ? P.posOffset / int(BR) : -((-P.posOffset + int(BR) - 1) / int(BR));
	tpos = (t0 + int(tile)) * int(BR);                     // position of tile row 0
	firstPos = max(tpos, P.posOffset);                     // first real row's position
	lastPos = min(tpos + int(BR) - 1, P.posOffset + int(P.Lq) - 1);
	int myPos = tpos + int(sr);
	int myRowS = myPos - P.posOffset;
	bool real = myRowS >= 0 && myRowS < int(P.Lq);
	uint myRow = uint(max(myRowS, 0));
	// The band's positions, and whether it holds a real row at all.
	int bandFirst = tpos + int(sgid * MS), bandLast = bandFirst + int(MS) - 1;
	bool bandReal = bandLast >= firstPos && bandFirst <= lastPos;

	// Query fragments of the band, staged through the K/V area QP rows at a time (rows
	// outside [0, Lq) are zero).
	uint qBase = P.qOff + bIdx * P.qSB + hIdx * P.qSH;
	coopmat<T16, gl_ScopeSubgroup, MS, KS, gl_MatrixUseA> qf[KT];
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
			[[unroll]] for (uint kk = 0u; kk < KT; kk++)
				coopMatLoad(qf[kk], KV4, (sgid * MS - r0) * LK4 + kk * KS / 4u, LK4, gl_CooperativeMatrixLayoutRowMajor);
		}
		barrier();
	}

	// Candidates of the tile (as attention.comp).
	ordBase = bhPlan * P.Lk;
	rowCausal = P.mode == MODE_ROW && causal;
	fromU = P.mode == MODE_ROW || P.mode == MODE_SHARED;
	explicitMode = P.mode == MODE_EXPLICIT;
	hasMask = explicitMode && P.hasMask != 0u;
	hasBias = explicitMode && P.hasBias != 0u;
	int kLast = causal ? min(lastPos, int(P.Lk) - 1) : int(P.Lk) - 1;
	ncand = 0u;
	uBase = 0u;
	tauMin = uvec2(0u);
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

	// Each invocation's (row, column) of the elements of an MS x NS accumulator: matrices
	// of row and column numbers, loaded once through the subgroup's scratch.
	uint sBase = sgid * MS * LS;   // this subgroup's scores / scratch
	uint pBase = sgid * MS * LP;   // this subgroup's P
	coopmat<float, gl_ScopeSubgroup, MS, NS, gl_MatrixUseAccumulator> rowId, colId;
	for (uint x = lane; x < MS * NS; x += SG) Ss[sBase + x] = float(x / NS);
	subgroupMemoryBarrierShared();
	subgroupBarrier();
	coopMatLoad(rowId, Ss, sBase, NS, gl_CooperativeMatrixLayoutRowMajor);
	subgroupMemoryBarrierShared();
	subgroupBarrier();
	for (uint x = lane; x < MS * NS; x += SG) Ss[sBase + x] = float(x % NS);
	subgroupMemoryBarrierShared();
	subgroupBarrier();
	coopMatLoad(colId, Ss, sBase, NS, gl_CooperativeMatrixLayoutRowMajor);
	barrier();  // tauS, flags; the scratch may be rewritten

	// Softmax state of row sr (identical on its TPR lanes): running max and sum.
	float mrow = NEG_INF, lrow = 0.0;
	coopmat<float, gl_ScopeSubgroup, MS, NS, gl_MatrixUseAccumulator> oacc[OTC];
	[[unroll]] for (uint q = 0u; q < OTC; q++)
		oacc[q] = coopmat<float, gl_ScopeSubgroup, MS, NS, gl_MatrixUseAccumulator>(0.0);
	uvec2 myTau = (rowCausal && real) ? tauS[sr] : uvec2(0u);
	// The band's highest threshold, over its real rows (xor shuffles).
	uvec2 bandTau = myTau;
	for (uint off = 1u; off < SG; off <<= 1) {
		uvec2 o = subgroupShuffleXor(bandTau, off);
		if (keyGE(o, bandTau)) bandTau = o;
	}
	kBase = P.kOff + bIdx * P.kSB + kvh * P.kSH;
	vBase = P.vOff + bIdx * P.vSB + kvh * P.vSH;
	// 16-byte loads of K/V rows: every row starts on a multiple of 8 halves.
	kVec = (kBase & 7u) == 0u && (P.kSL & 7u) == 0u;
	vVec = (vBase & 7u) == 0u && (P.vSL & 7u) == 0u;

	// The walk: keys at walk positions [head, head + nbuf) are known (ring slots; modes
	// none and explicit: position = key, slots written with each chunk's K rows).
	uint head = 0u, nbuf = 0u, cursor = 0u, par = 0u;
	if (fromU) {
		fillRing(head, nbuf, cursor, par);
		barrier();  // the ring is written
	} else {
		nbuf = ncand;
	}

	// Chunk 0's K rows (and, in place, its keys' ord).
	uint n = min(nbuf, BC);
	{
		uvec4 wk[LPT];
		uint ordv[MPT];
		rowsLoad(false, u, head, n, wk);
		[[unroll]] for (uint x = 0u; x < MPT; x++) {
			uint c = u + NT * x;
			ordv[x] = (!fromU && c < n) ? ordb[ordBase + head + c] : 0u;
		}
		rowsStore(u, 0u, wk);
		[[unroll]] for (uint x = 0u; x < MPT; x++) {
			uint c = u + NT * x;
			if (c < n) chunkKey(head + c, ordv[x], 1u);
		}
	}
	barrier();

	uint cpar = 0u;
	while (n > 0u) {
		// A band computes this chunk unless it has no real row or, with causality and the
		// keys in place (ascending), the chunk starts after its last row.
		bool bandOn = bandReal && (fromU || !causal || int(head) <= bandLast);
		uvec4 wv[LPT];
		uint vBits = 0u;
#ifdef V_BEFORE_S
		rowsLoad(true, u, head, n, wv);
#endif

		// 1. S = Q K^T for the band.
		if (bandOn) {
#ifdef S_SERIAL
			[[unroll]] for (uint tj = 0u; tj < NTS; tj++) {
				coopmat<float, gl_ScopeSubgroup, MS, NS, gl_MatrixUseAccumulator> sacc =
					coopmat<float, gl_ScopeSubgroup, MS, NS, gl_MatrixUseAccumulator>(0.0);
				[[unroll]] for (uint kk = 0u; kk < KT; kk++) {
					coopmat<T16, gl_ScopeSubgroup, KS, NS, gl_MatrixUseB> kb;
					coopMatLoad(kb, KV4, tj * NS * LK4 + kk * KS / 4u, LK4, gl_CooperativeMatrixLayoutColumnMajor);
					sacc = coopMatMulAdd(qf[kk], kb, sacc);
				}
				coopMatStore(sacc, Ss, sBase + tj * NS, LS, gl_CooperativeMatrixLayoutRowMajor);
			}
#else
			coopmat<float, gl_ScopeSubgroup, MS, NS, gl_MatrixUseAccumulator> sacc[NTS];
			[[unroll]] for (uint tj = 0u; tj < NTS; tj++)
				sacc[tj] = coopmat<float, gl_ScopeSubgroup, MS, NS, gl_MatrixUseAccumulator>(0.0);
			[[unroll]] for (uint kk = 0u; kk < KT; kk++) {
				[[unroll]] for (uint tj = 0u; tj < NTS; tj++) {
					coopmat<T16, gl_ScopeSubgroup, KS, NS, gl_MatrixUseB> kb;
					coopMatLoad(kb, KV4, tj * NS * LK4 + kk * KS / 4u, LK4, gl_CooperativeMatrixLayoutColumnMajor);
					sacc[tj] = coopMatMulAdd(qf[kk], kb, sacc[tj]);
				}
			}
			[[unroll]] for (uint tj = 0u; tj < NTS; tj++)
				coopMatStore(sacc[tj], Ss, sBase + tj * NS, LS, gl_CooperativeMatrixLayoutRowMajor);
#endif
		}
		// Outside the branch: lavapipe pairs subgroup barriers across the whole workgroup.
		subgroupMemoryBarrierShared();
		subgroupBarrier();

#ifdef V_BEFORE_S
		vBits = rowsStore(u, BC, wv);  // V to shared memory while the softmax runs
#else
		rowsLoad(true, u, head, n, wv);
#endif

		// 2. Online softmax, row sr, columns sp + TPR * x; the raw scores stay in the
		// scratch (the scalar P V route reads them again).
		float alpha = 1.0;
		if (bandOn) {
			float sv[CPL];
			float mx = NEG_INF;
			// A whole chunk that every real row of the band keeps entirely needs no keep
			// test: mode none, no padded key; with causality every key at or before the
			// band's first row; mode row, causal: its last (lowest ranked) key at or above
			// every threshold of the band.
			uint cflag = flagsS[2u * cpar + 1u];
			bool whole = n == BC;
			if (P.mode == MODE_NONE) {
				whole = whole && cflag == 0u && (!causal || int(head + BC - 1u) <= bandFirst);
			} else if (fromU) {
				uvec2 last = ring[(head + BC - 1u) & KMASK];
				whole = whole && (!causal || int(cflag) <= bandFirst) && (!rowCausal || keyGE(uvec2(last.y, last.x), bandTau));
			} else {
				whole = false;
			}
			if (whole) {
				[[unroll]] for (uint x = 0u; x < CPL; x++) {
					uint c = sp + TPR * x;
					float s = P.scale * Ss[sBase + r * LS + c] + unord(ring[(head + c) & KMASK].y);
					if (P.softcap > 0.0) s = P.softcap * safeTanh(s / P.softcap);
					sv[x] = real ? s : NEG_INF;
					mx = max(mx, sv[x]);
				}
			} else {
				[[unroll]] for (uint x = 0u; x < CPL; x++) {
					uint c = sp + TPR * x;
					float s = NEG_INF;
					if (real) s = score(Ss[sBase + r * LS + c], entryAt(head, c, n), myPos, myRow, myTau);
					sv[x] = s;
					mx = max(mx, s);
				}
			}
			mx = rowMax(mx);
			float mnew = max(mrow, mx);
			alpha = isNegInfF(mrow) ? 0.0 : exp(mrow - mnew);
			// A NaN or +inf score makes p, and so lrow and the row of O, NaN.
			float psum = 0.0;
			[[unroll]] for (uint x = 0u; x < CPL; x++) {
				float p = isNegInfF(sv[x]) ? 0.0 : exp(sv[x] - mnew);
				psum += p;
				Ps[pBase + r * LP + sp + TPR * x] = T16(p);
			}
			psum = rowSum(psum);
			lrow = lrow * alpha + psum;
			mrow = mnew;
		}

		// V rows to shared memory; a non-finite value sends the chunk to the scalar route.
#ifndef V_BEFORE_S
		vBits = rowsStore(u, BC, wv);
#endif
		if (anyNonFinite(vBits)) flagsS[2u * cpar] = 1u;
#ifdef DEBUG_SCALAR_PV
		flagsS[2u * cpar] = 1u;
#endif
		barrier();  // V and P complete; every band is done with K
		bool vBad = flagsS[2u * cpar] != 0u;

		// 3. The next chunk's K rows (and ord), requested before this chunk's P V.
		uint nNext = min(nbuf - n, BC), headNext = head + n;
		uvec4 wk[LPT];
		uint ordv[MPT];
#ifndef K_LATE
		rowsLoad(false, u, headNext, nNext, wk);
#endif
		[[unroll]] for (uint x = 0u; x < MPT; x++) {
			uint c = u + NT * x;
			ordv[x] = (!fromU && c < nNext) ? ordb[ordBase + headNext + c] : 0u;
		}

		if (bandOn) {
			// O *= alpha, row by row: each element takes its row's alpha from that row's
			// first softmax lane.
			coopmat<float, gl_ScopeSubgroup, MS, NS, gl_MatrixUseAccumulator> am;
			// (Unrolled: constant element indices keep the accumulators in registers.)
			[[unroll]] for (int i = 0; i < am.length(); i++) am[i] = subgroupShuffle(alpha, uint(rowId[i]) * TPR);
			[[unroll]] for (uint q = 0u; q < OTC; q++) oacc[q] = oacc[q] * am;

			if (!vBad) {
				// O += P V.
				[[unroll]] for (uint kk = 0u; kk < BC; kk += KS) {
					coopmat<T16, gl_ScopeSubgroup, MS, KS, gl_MatrixUseA> pa;
					coopMatLoad(pa, Ps, pBase + kk, LP, gl_CooperativeMatrixLayoutRowMajor);
					[[unroll]] for (uint q = 0u; q < OTC; q++) {
						coopmat<T16, gl_ScopeSubgroup, KS, NS, gl_MatrixUseB> vb;
						coopMatLoad(vb, KV4, (BC + kk) * LK4 + q * NS / 4u, LK4, gl_CooperativeMatrixLayoutRowMajor);
						oacc[q] = coopMatMulAdd(pa, vb, oacc[q]);
					}
				}
			} else {
				// Scalar P V: each element sums the keys its row keeps (score not -inf).
				[[unroll]] for (int i = 0; i < am.length(); i++) {
					uint row = uint(rowId[i]), col = uint(colId[i]);
					int pos = bandFirst + int(row);
					int ri = pos - P.posOffset;
					bool rowReal = ri >= 0 && ri < int(P.Lq);
					uvec2 tau = rowCausal && rowReal ? taub[bhPlan * P.Lq + uint(ri)] : uvec2(0u);
					float sum[OTC];
					[[unroll]] for (uint q = 0u; q < OTC; q++) sum[q] = 0.0;
					for (uint c = 0u; c < (rowReal ? n : 0u); c++) {
						float s = score(Ss[sBase + row * LS + c], entryAt(head, c, n), pos, uint(ri), tau);
						if (isNegInfF(s)) continue;
						float p = float(Ps[pBase + row * LP + c]);
						[[unroll]] for (uint q = 0u; q < OTC; q++) {
							uint d = q * NS + col;
							sum[q] = fma(p, float(KV4[(BC + c) * LK4 + d / 4u][d % 4u]), sum[q]);
						}
					}
					[[unroll]] for (uint q = 0u; q < OTC; q++) oacc[q][i] += sum[q];
				}
			}
		}

		// The next chunk's K rows and keys to shared memory; the ring topped up.
#ifdef K_LATE
		rowsLoad(false, u, headNext, nNext, wk);
#endif
		rowsStore(u, 0u, wk);
		[[unroll]] for (uint x = 0u; x < MPT; x++) {
			uint c = u + NT * x;
			if (c < nNext) chunkKey(headNext + c, ordv[x], 2u * (cpar ^ 1u) + 1u);
		}
		if (u == 0u) {
			flagsS[2u * (cpar ^ 1u)] = 0u;  // the next chunk's V slot, last read a chunk ago
			flagsS[2u * cpar + 1u] = 0u;    // this chunk's key slot, for the one after next
		}
		head = headNext;
		nbuf -= n;
		if (fromU) fillRing(head, nbuf, cursor, par);
		barrier();  // K, the ring and the flags of the next chunk are written; V is free
		n = nNext;
		cpar ^= 1u;
	}

	// Epilogue: O = acc / l, LSE = m + log l; a row without kept keys (l = 0) gets 0 and
	// -inf, a row with a NaN or +inf score (l NaN) NaN and NaN.
	bool anyKept = !isZeroF(lrow);  // true for NaN
	if (sp == 0u && real) lseb[(bIdx * P.H + hIdx) * P.Lq + myRow] = anyKept ? mrow + log(lrow) : NEG_INF;
	float il = anyKept ? 1.0 / lrow : 0.0;
	coopmat<float, gl_ScopeSubgroup, MS, NS, gl_MatrixUseAccumulator> im;
	[[unroll]] for (int i = 0; i < im.length(); i++) im[i] = subgroupShuffle(il, uint(rowId[i]) * TPR);
	// Pairs of halves leave as whole words (offsets and strides of O are even).
	uint oBase = P.oOff + bIdx * P.oSB + hIdx * P.oSH;
	[[unroll]] for (uint q = 0u; q < OTC; q++) {
		coopMatStore(oacc[q] * im, Ss, sBase, NS, gl_CooperativeMatrixLayoutRowMajor);
		subgroupMemoryBarrierShared();
		subgroupBarrier();
		for (uint x = 2u * lane; x < MS * NS; x += 2u * SG) {
			uint row = x / NS, col = q * NS + x % NS;
			int ri = bandFirst + int(row) - P.posOffset;
			if (ri >= 0 && ri < int(P.Lq))
#ifdef BF16
				ob[(oBase + uint(ri) * P.oSL + col) >> 1] = pack16(Ss[sBase + x], Ss[sBase + x + 1u], true);
#else
				ob[(oBase + uint(ri) * P.oSL + col) >> 1] = packFloat2x16(f16vec2(Ss[sBase + x], Ss[sBase + x + 1u]));
#endif
		}
		subgroupMemoryBarrierShared();
		subgroupBarrier();
	}
}
