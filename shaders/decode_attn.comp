#version 450
// variant: split -DSPLIT=1
// variant: reduce
// Decode attention (the KV-cache decode path): a few query rows (P.Lq <= 4) over a long
// key sequence, split over the keys (flash-decoding). Modes row with causality (keep key
// j for row i when j <= p_i, ord_j != 0 and (ord_j, j) >= tau_i; tau from select_topw or
// the plan), shared with causality (the same with the last row's tau for every row: the
// rows sit at the end, so the last row's prefix holds every key) and none (j <= p_i when
// causal, ord_j != 0); spec section 3's scores:
// scale * q.k + weight, softcap; fp32, fp16 or bf16 storage (STORE).
//
// variant split: workgroup (slice s, group of GH query heads of one kv head, batch b), NT
//   = 128 invocations, rows r = g * Lq + i (GH heads x Lq rows, at most NR). Built for a
//   short critical path when a slice keeps few keys (about 3 memory latencies):
//   1. Compaction: each invocation reads the ord of KPI keys of a window (coalesced,
//      independent loads; the next window's are issued before this one is tested), tests
//      them for every row, and appends the kept keys to a shared list at its exclusive
//      prefix count (subgroup scans + per-subgroup totals): a fixed order, no atomics.
//      Windows go on until the list could overflow or the slice ends.
//   2. The list in batches of NB keys: a team of TL lanes per key reads its K row (QPL
//      quads per lane), dot products with every row's q from shared memory, a
//      reduce-scatter over the team by shuffles leaves each lane its rows' scores; the V
//      rows the batch needs are read at the same time (their loads do not wait on the
//      scores), so a batch costs about one memory latency.
//   3. Online softmax per batch: batch maxima per row (team shuffles, per-subgroup
//      maxima in shared memory), a running max m the same in every invocation, p of each
//      (row, key) to shared memory (-1 where the row drops the key), then key group g of
//      KG accumulates l and o (OWN owners x EPP pairs of D) over its KPG keys of the batch.
//   4. The key groups' o and l are summed in order; one partial per slice,
//      part[b][h][i][s] = (m, l, o).
// variant reduce: workgroup (row i, head h, batch b) merges the partials in a fixed
//   order: O = sum_s o_s e^(m_s - M) / L, L = sum_s l_s e^(m_s - M), LSE = M + log L; a
//   row with no kept key (every l_s = 0) gets O = 0, LSE = -inf; a row with a NaN or
//   +inf score (some l_s NaN) gets NaN for both.
// Slice s takes the blocks of BK keys s, s + slices, s + 2 slices, ... (push constant
// slices, the split grid's x) of the P.Lk keys: one recorded grid serves every cache
// length up to the one it was sized for, and keys kept in a cluster spread over slices.
// ord of (b, hb) starts at P.ordOff + (b * Hb + hb) * P.ordSL (P.ordSL 0: Lk).
// A row only ever adds p v for the keys it keeps, so a NaN or Inf in V reaches exactly
// the rows that keep its key. Sums run in a fixed order: the same inputs give the same
// bits.
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_KHR_shader_subgroup_shuffle : require

layout(local_size_x_id = 2) in;  // split: NT (128); reduce: RED (256)

#include "dma_common.glsl"

layout(constant_id = 0) const uint DH = 64;     // head dimension: a multiple of 8
layout(constant_id = 1) const uint STORE = 0u;  // P.storage (STORAGE_*), fixed per pipeline
layout(constant_id = 3) const uint SG = 32;     // subgroup size (the pipeline pins it)
layout(constant_id = 4) const uint NR = 4;      // most rows (query heads x rows) of a workgroup
const bool packed16 = STORE != STORAGE_F32, bf16 = STORE == STORAGE_BF16;

// Query heads per split workgroup: the largest divisor of G whose rows fit NR.
uint headsPerGroup() {
	uint best = 1u;
	for (uint g = 1u; g <= P.G; g++)
		if (P.G % g == 0u && g * P.Lq <= NR) best = g;
	return best;
}

layout(std430, binding = 1) readonly buffer BufQ { uint qbuf[]; };
layout(std430, binding = 2) readonly buffer BufK { uint kbuf[]; };
layout(std430, binding = 3) readonly buffer BufV { uint vbuf[]; };
layout(std430, binding = 4) readonly buffer BufOrd { uint ordb[]; };   // rows of Lk keys, see above
layout(std430, binding = 5) readonly buffer BufTau { uvec2 taub[]; };  // [B*Hb][Lq]
layout(std430, binding = 6) buffer BufPart { float part[]; };          // [B][H][Lq][slices][DH + 2]
layout(std430, binding = 7) buffer BufO { uint ob[]; };
layout(std430, binding = 8) writeonly buffer BufLSE { float lseb[]; };

layout(push_constant) uniform Push { uint slices; } pc;  // the split grid's x

const float NEG_INF = -1.0 / 0.0;

// Keys are dealt to the slices in blocks of BK, in turn: block c (keys c*BK ...) goes to
// slice c % slices. Kept keys that cluster (the last w keys when the weights are equal,
// sliding-window attention) then spread over up to w / BK slices instead of one or two.
const uint BK = 32u;
uint blocks() { return (P.Lk + BK - 1u) / BK; }

float loadQ(uint e) { return packed16 ? unpack16(qbuf[e >> 1], e, bf16) : uintBitsToFloat(qbuf[e]); }

float safeTanh(float x) {
	float t = exp(-2.0 * abs(x));
	float y = (1.0 - t) / (1.0 + t);
	return x < 0.0 ? -y : y;
}

#ifdef SPLIT
// Split-pass shape (all specialization constants or derived from them):
const uint NT = 128u;                       // invocations (the pipeline's local size)
const uint NSG = NT / SG;                   // subgroups
const uint HP = DH / 2u;                    // element pairs of a row
const uint P2 = HP & (~HP + 1u);            // largest power of two dividing HP
// Lanes of a team (one kept key's scores): 4 (8 above D = 128), fewer where D / 4 has
// fewer factors of two (every lane takes whole quads).
const uint TLM = DH > 128u ? 8u : 4u;
const uint TL = TLM <= P2 / 2u ? TLM : P2 / 2u;
const uint TLOG = TL >= 8u ? 3u : TL >= 4u ? 2u : TL >= 2u ? 1u : 0u;
const uint SGLOG = SG >= 128u ? 7u : SG >= 64u ? 6u : SG >= 32u ? 5u : SG >= 16u ? 4u : SG >= 8u ? 3u : 2u;
const uint NB = NT / TL;                    // kept keys per batch (one per team)
const uint QPL = DH / (4u * TL);            // K quads per team lane
const uint OWN = P2 < NT ? P2 : NT;         // owners of V pairs, EPP pairs each
const uint EPP = HP / OWN;
const uint KG = NT / OWN;                   // key groups of the V pass
const uint KPG = NB / KG;                   // keys of a batch per key group
const uint NRP = (NR + TL - 1u) / TL * TL;  // rows padded to whole teams
const uint KPI = 8u;                        // keys per invocation per window
const uint WIN = NT * KPI;                  // keys per compaction window
// Key i (0 .. WIN-1) of window w of slice s: block s + slices * (w * WIN / BK + i / BK).
uint keyAt(uint s, uint w, uint i) { return (s + pc.slices * (w * (WIN / BK) + i / BK)) * BK + i % BK; }
// The list of kept keys; it also holds the key groups' merge (R x DH floats).
const uint MRG = KG > 1u ? NR * DH : 0u;
const uint CAP = MRG > 2u * WIN ? MRG : 2u * WIN;

shared vec4 Qs[NR * DH / 4u];     // the rows' q
shared uint listS[CAP];           // kept keys (index), in a fixed order
shared float PS[NRP * NB];        // a batch's p per (row, key); -1: the row drops the key
shared float MxS[NSG * NRP];      // the subgroups' batch maxima
shared uint totS[NSG];            // the subgroups' counts of kept keys (the scan)
shared uvec2 tauS[NR];            // tau of each test row
shared float LsS[NR];             // the key groups' merge of l

// The workgroup's rows r = g * n + i: query head h0 + g, query row i; see main.
uint n, R, h0, kvh, bI;
bool causal, rowCausal, sharedBias, oneOrd;

// Where ord of row r's bias head starts.
uint ordBase(uint r) { return ordRow(bI * P.Hb + (sharedBias ? kvh : h0 + r / n)); }
// The test row of row r: with one bias head for every head (sharedBias) the keep test
// depends on i only.
uint testRow(uint r) { return sharedBias ? r % n : r; }

// Whether test row t keeps key j of ord od (tau of test rows in tauS).
bool keepTest(uint t, uint j, uint od) {
	bool k = od != 0u && (!causal || int(j) <= int(t % n) + P.posOffset);
	if (rowCausal) k = k && keyGE(uvec2(od, j), tauS[t]);
	return k;
}

vec2 unpack2(uint w) {
	return bf16 ? vec2(uintBitsToFloat(w << 16), uintBitsToFloat(w & 0xffff0000u)) : unpackHalf2x16(w);
}
// The 16 bits of element e of a packed tensor, from word w = buf[e >> 1].
uint half16(uint w, uint e) { return (e & 1u) != 0u ? w >> 16 : w & 0xffffu; }

// Elements e .. e+3 of K (al: e is even).
vec4 loadK4(uint e, bool al) {
	if (!packed16) return uintBitsToFloat(uvec4(kbuf[e], kbuf[e + 1u], kbuf[e + 2u], kbuf[e + 3u]));
	uint w0, w1;
	if (al) {
		w0 = kbuf[e >> 1];
		w1 = kbuf[(e >> 1) + 1u];
	} else {
		w0 = half16(kbuf[e >> 1], e) | (half16(kbuf[(e + 1u) >> 1], e + 1u) << 16);
		w1 = half16(kbuf[(e + 2u) >> 1], e + 2u) | (half16(kbuf[(e + 3u) >> 1], e + 3u) << 16);
	}
	return vec4(unpack2(w0), unpack2(w1));
}
// Elements e, e+1 of V, undecoded: two float32 words, or both halves in x.
uvec2 loadV2(uint e, bool al) {
	if (!packed16) return uvec2(vbuf[e], vbuf[e + 1u]);
	if (al) return uvec2(vbuf[e >> 1], 0u);
	return uvec2(half16(vbuf[e >> 1], e) | (half16(vbuf[(e + 1u) >> 1], e + 1u) << 16), 0u);
}
vec2 decodeV2(uvec2 w) { return packed16 ? unpack2(w.x) : uintBitsToFloat(w); }

void main() {
	uint s = gl_WorkGroupID.x, hg = gl_WorkGroupID.y;
	bI = gl_WorkGroupID.z;
	uint sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
	uint lin = sg * SG + lane;  // the invocation's index; teams are lanes of one subgroup
	n = P.Lq;
	uint nb = blocks();
	if (s >= nb) return;  // no block: the merge reads no partial of this slice
	uint jEnd = P.Lk;
	causal = P.causal != 0u;
	rowCausal = (P.mode == MODE_ROW || P.mode == MODE_SHARED) && causal;
	if (causal) jEnd = uint(clamp(int(n) + P.posOffset, 0, int(jEnd)));  // past every row
	// The query heads of this workgroup: GH of one kv head's group (GH divides G, GH * n
	// <= NR), so their K and V rows are read once for all of them.
	uint GH = headsPerGroup();
	h0 = hg * GH;
	kvh = h0 / P.G;
	R = GH * n;
	sharedBias = P.Hb != P.H;         // one bias head (the kv head's) for every head here
	oneOrd = sharedBias || GH == 1u;  // then every row reads one row of ord
	uint nTest = sharedBias ? n : R;  // distinct keep tests
	uint o0 = ordBase(0u);

	// Window 0's ord first (its latency overlaps q's and tau's).
	uint mine = (nb - s + pc.slices - 1u) / pc.slices;  // this slice's blocks
	uint nWin = (mine + WIN / BK - 1u) / (WIN / BK);
	uint onx[KPI];
	for (uint u = 0u; u < KPI; u++) {
		uint j = keyAt(s, 0u, lin + NT * u);
		onx[u] = (oneOrd && j < jEnd) ? ordb[o0 + j] : 0u;
	}
	for (uint e = lin; e < R * DH / 4u; e += NT) {
		uint r = e / (DH / 4u), g = r / n, i = r - g * n, d = 4u * (e - r * (DH / 4u));
		uint qb = P.qOff + bI * P.qSB + (h0 + g) * P.qSH + i * P.qSL + d;
		Qs[e] = vec4(loadQ(qb), loadQ(qb + 1u), loadQ(qb + 2u), loadQ(qb + 3u));
	}
	if (lin < nTest) {
		uint hb = sharedBias ? kvh : h0 + lin / n;
		// Mode shared: one selection over every key, the last row's threshold, for all rows.
		uint ti = P.mode == MODE_SHARED ? n - 1u : lin % n;
		tauS[lin] = rowCausal ? taub[(bI * P.Hb + hb) * P.Lq + ti] : uvec2(0u);
	}

	// Running max m (the same in every invocation), and per key group sum l and o (this
	// invocation's pairs own + OWN * y of D).
	uint tm = lin / TL, tl = lane % TL;   // team tm scores key tm of a batch
	uint g = lin / OWN, own = lin % OWN;  // key group g accumulates keys g*KPG .. of a batch
	float m[NRP], l[NRP];
	vec2 o[NRP][EPP];
	for (uint r = 0u; r < NRP; r++) {
		m[r] = NEG_INF;
		l[r] = 0.0;
		for (uint y = 0u; y < EPP; y++) o[r][y] = vec2(0.0);
	}
	uint kBase = P.kOff + bI * P.kSB + kvh * P.kSH, vBase = P.vOff + bI * P.vSB + kvh * P.vSH;
	bool kAl = ((P.kOff | P.kSB | P.kSH | P.kSL) & 1u) == 0u;  // 16-bit rows start on a word
	bool vAl = ((P.vOff | P.vSB | P.vSH | P.vSL) & 1u) == 0u;
	barrier();  // Qs, tauS

	// Every loop below runs the same trips in every invocation (the counts come from
	// shared memory): barriers and subgroup operations stay in uniform control flow.
	uint cnt = 0u;
	for (uint w = 0u; w < nWin; w++) {
		// Compaction: invocation lin tests keys keyAt(s, w, lin + NT*u) (coalesced ord
		// reads: BK consecutive keys per block; window w+1's issued now) and appends those
		// some row keeps to the list at its exclusive prefix count: list order
		// (invocation, u), the same every run.
		uint oc[KPI];
		for (uint u = 0u; u < KPI; u++) oc[u] = onx[u];
		if (oneOrd && w + 1u < nWin) {
			for (uint u = 0u; u < KPI; u++) {
				uint j = keyAt(s, w + 1u, lin + NT * u);
				onx[u] = j < jEnd ? ordb[o0 + j] : 0u;
			}
		}
		uint kmask = 0u, c = 0u;
		for (uint u = 0u; u < KPI; u++) {
			uint j = keyAt(s, w, lin + NT * u);
			bool any = false;
			if (j < jEnd) {
				for (uint t = 0u; t < NR; t++) {
					if (t >= nTest) break;
					uint od = oneOrd ? oc[u] : ordb[ordBase(t) + j];
					bool k = keepTest(t, j, od);
					any = any || k;
				}
			}
			if (any) {
				kmask |= 1u << u;
				c++;
			}
		}
		uint incl = subgroupInclusiveAdd(c);
		if (lane == SG - 1u) totS[sg] = incl;
		barrier();
		uint at = cnt + incl - c, tot = 0u;
		for (uint z = 0u; z < NSG; z++) {
			uint tz = totS[z];
			if (z < sg) at += tz;
			tot += tz;
		}
		for (uint u = 0u; u < KPI; u++)
			if ((kmask & (1u << u)) != 0u) listS[at++] = keyAt(s, w, lin + NT * u);
		cnt += tot;
		barrier();  // the list; totS is read before it is written again
		if (cnt + WIN <= CAP && w + 1u < nWin) continue;  // room for another window

		// The list, in batches of NB keys: about one memory latency per batch (K, V and
		// ord of the batch's keys are read at once).
		for (uint b0 = 0u; b0 < cnt; b0 += NB) {
			uint kk = b0 + tm;
			bool valid = kk < cnt;
			uint j = valid ? listS[kk] : 0u;
			uint kb = kBase + j * P.kSL;
			vec4 kq[QPL];
			for (uint x = 0u; x < QPL; x++) kq[x] = valid ? loadK4(kb + 4u * (tl + TL * x), kAl) : vec4(0.0);
			uint od[NRP / TL];  // ord of the team lane's rows y*TL + tl
			uint ow = valid && oneOrd ? ordb[o0 + j] : 0u;
			for (uint y = 0u; y < NRP / TL; y++) {
				uint r = y * TL + tl;
				od[y] = (valid && !oneOrd && r < R) ? ordb[ordBase(r) + j] : ow;
			}
			uvec2 vr[KPG][EPP];  // V of key group g's keys, pairs own + OWN*y
			for (uint x = 0u; x < KPG; x++) {
				uint kv = b0 + g * KPG + x;
				bool vv = kv < cnt;
				uint vb = vBase + (vv ? listS[kv] : 0u) * P.vSL;
				for (uint y = 0u; y < EPP; y++) vr[x][y] = vv ? loadV2(vb + 2u * (own + OWN * y), vAl) : uvec2(0u);
			}
			// Partial q.k over the lane's quads for every row, then a reduce-scatter over
			// the team: lane tl ends with the sums of rows y*TL + tl.
			float a[NRP];
			for (uint r = 0u; r < NRP; r++) {
				vec4 acc = vec4(0.0);
				if (r < R)
					for (uint x = 0u; x < QPL; x++) acc = fma(Qs[r * (DH / 4u) + tl + TL * x], kq[x], acc);
				a[r] = (acc.x + acc.y) + (acc.z + acc.w);
			}
			for (uint lv = 0u; lv < TLOG; lv++) {
				bool hi = ((tl >> lv) & 1u) != 0u;
				for (uint y = 0u; y < (NRP >> (lv + 1u)); y++) {
					float lo = a[2u * y], up = a[2u * y + 1u];
					a[y] = (hi ? up : lo) + subgroupShuffleXor(hi ? lo : up, 1u << lv);
				}
			}
			// Scores of the lane's rows (-inf where the row drops the key), their maxima
			// over the subgroup's teams, and the batch maximum per row.
			float sc[NRP / TL];
			uint kept = 0u;
			for (uint y = 0u; y < NRP / TL; y++) {
				uint r = y * TL + tl;
				float v = NEG_INF;
				if (valid && r < R && keepTest(testRow(r), j, od[y])) {
					kept |= 1u << y;
					v = P.scale * a[y] + unord(od[y]);
					if (P.softcap > 0.0) v = P.softcap * safeTanh(v / P.softcap);
				}
				sc[y] = v;
				for (uint lv = TLOG; lv < SGLOG; lv++) v = max(v, subgroupShuffleXor(v, 1u << lv));
				if (lane < TL) MxS[sg * NRP + r] = v;
			}
			barrier();
			for (uint r = 0u; r < NRP; r++) {
				if (r >= R) break;
				float mb = m[r];
				for (uint z = 0u; z < NSG; z++) mb = max(mb, MxS[z * NRP + r]);
				float alpha = isNegInfF(m[r]) ? 0.0 : exp(m[r] - mb);
				l[r] *= alpha;
				for (uint y = 0u; y < EPP; y++) o[r][y] *= alpha;
				m[r] = mb;
			}
			for (uint y = 0u; y < NRP / TL; y++) {
				uint r = y * TL + tl;
				float mr = m[y * TL];
				for (uint c2 = 1u; c2 < TL; c2++) mr = tl == c2 ? m[y * TL + c2] : mr;
				// -1: the pair contributes nothing (not kept, or score -inf); a NaN or +inf
				// score gives p NaN, which reaches the row's l and o only.
				float p = ((kept & (1u << y)) == 0u || isNegInfF(sc[y])) ? -1.0 : exp(sc[y] - mr);
				if (r < R) PS[r * NB + tm] = p;
			}
			barrier();
			// o += p v over key group g's keys of the batch, skipping the (row, key)
			// pairs the row drops (so a NaN in V reaches only rows that keep its key).
			for (uint x = 0u; x < KPG; x++) {
				vec2 v[EPP];
				for (uint y = 0u; y < EPP; y++) v[y] = decodeV2(vr[x][y]);
				for (uint r = 0u; r < NRP; r++) {
					if (r >= R) break;
					float p = PS[r * NB + g * KPG + x];
					if (!isNoneMark(p)) {  // kept: p >= 0, or NaN
						l[r] += p;
						for (uint y = 0u; y < EPP; y++) o[r][y] = fma(vec2(p), v[y], o[r][y]);
					}
				}
			}
		}
		cnt = 0u;
	}

	// Merge the key groups in order (listS holds the sums), and leave one partial per
	// slice: part[b][h][i][s] = (m, l, o).
	if (KG > 1u) {
		barrier();
		for (uint gg = 0u; gg + 1u < KG; gg++) {
			if (g == gg) {
				for (uint r = 0u; r < NRP; r++) {
					if (r >= R) break;
					for (uint y = 0u; y < EPP; y++) {
						uint e = r * DH + 2u * (own + OWN * y);
						vec2 acc = o[r][y];
						if (gg > 0u) acc = vec2(uintBitsToFloat(listS[e]), uintBitsToFloat(listS[e + 1u])) + acc;
						listS[e] = floatBitsToUint(acc.x);
						listS[e + 1u] = floatBitsToUint(acc.y);
					}
					if (own == 0u) LsS[r] = gg > 0u ? LsS[r] + l[r] : l[r];
				}
			}
			barrier();
		}
	}
	if (g == KG - 1u) {
		for (uint r = 0u; r < NRP; r++) {
			if (r >= R) break;
			uint gr = r / n, i = r - gr * n;
			uint at = (((bI * P.H + h0 + gr) * P.Lq + i) * pc.slices + s) * (DH + 2u);
			for (uint y = 0u; y < EPP; y++) {
				uint e = r * DH + 2u * (own + OWN * y);
				vec2 acc = o[r][y];
				if (KG > 1u) acc = vec2(uintBitsToFloat(listS[e]), uintBitsToFloat(listS[e + 1u])) + acc;
				part[at + 2u + 2u * (own + OWN * y)] = acc.x;
				part[at + 3u + 2u * (own + OWN * y)] = acc.y;
			}
			if (own == 0u) {
				part[at] = m[r];
				part[at + 1u] = KG > 1u ? LsS[r] + l[r] : l[r];
			}
		}
	}
}
#else
const uint RED = 256u;    // the merge's workgroup size (the pipeline's)
const uint NPAIR = DH / 2u, NGR = RED / NPAIR;  // O pairs; groups of partials summed apart
shared float red[RED];
shared vec2 accS[RED];

// Workgroup-wide max (op 0) or sum (op 1) of x, in a fixed order.
float reduce(float x, uint op) {
	uint lid = gl_LocalInvocationID.x;
	red[lid] = x;
	barrier();
	for (uint off = RED / 2u; off > 0u; off >>= 1u) {
		if (lid < off) red[lid] = op == 0u ? max(red[lid], red[lid + off]) : red[lid] + red[lid + off];
		barrier();
	}
	float r = red[0];
	barrier();
	return r;
}

void main() {
	uint i = gl_WorkGroupID.x, h = gl_WorkGroupID.y, b = gl_WorkGroupID.z;
	uint lid = gl_LocalInvocationID.x;
	uint np = min(pc.slices, blocks());  // partials written: one per slice with a block
	uint pBase = (((b * P.H + h) * P.Lq) + i) * pc.slices;
	const uint W = DH + 2u;
	float mx = NEG_INF;
	for (uint q = lid; q < np; q += RED) mx = max(mx, part[(pBase + q) * W]);
	float M = reduce(mx, 0u);
	// A partial with l = 0 has no kept key; one with l NaN (a NaN or +inf score, its m
	// possibly -inf) makes L, so the row's LSE and o, NaN (spec section 7).
	float ls = 0.0;
	for (uint q = lid; q < np; q += RED) {
		float lq = part[(pBase + q) * W + 1u];
		if (!isZeroF(lq)) ls += exp(part[(pBase + q) * W] - M) * lq;
	}
	float L = reduce(ls, 1u);
	if (lid == 0u) lseb[(b * P.H + h) * P.Lq + i] = !isZeroF(L) ? M + log(L) : NEG_INF;
	// Invocation (group gi, pair dp) sums the partials gi, gi + NGR, ... of elements
	// 2dp, 2dp + 1; then group 0 adds the groups up in order.
	uint gi = lid / NPAIR, dp = lid - gi * NPAIR;
	vec2 acc = vec2(0.0);
	if (gi < NGR) {
		for (uint q = gi; q < np; q += NGR) {
			if (isZeroF(part[(pBase + q) * W + 1u])) continue;  // no kept key there (its o is 0)
			uint e = (pBase + q) * W + 2u + 2u * dp;
			acc += exp(part[(pBase + q) * W] - M) * vec2(part[e], part[e + 1u]);
		}
	}
	accS[lid] = acc;
	barrier();
	if (gi != 0u) return;
	for (uint z = 1u; z < NGR; z++) acc += accS[z * NPAIR + dp];
	vec2 v = !isZeroF(L) ? acc / L : vec2(0.0);
	uint d = 2u * dp;
	uint oBase = P.oOff + b * P.oSB + h * P.oSH + i * P.oSL;
	if (packed16) ob[(oBase + d) >> 1] = pack16(v.x, v.y, bf16);
	else {
		ob[oBase + d] = floatBitsToUint(v.x);
		ob[oBase + d + 1u] = floatBitsToUint(v.y);
	}
}
#endif
