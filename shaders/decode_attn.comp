#version 450
// Decode attention (the KV-cache decode path): a few query rows (P.Lq <= 4) over a long key sequence, split over the keys (flash-decoding). Modes row with
// causality (keep key j for row i when j <= p_i, ord_j != 0 and (ord_j, j) >= tau_i;
// tau from select_topw or the plan) and none (j <= p_i when causal, ord_j != 0); spec
// section 3's scores: scale * q.k + weight, softcap; fp32, fp16 or bf16 storage.
//
// variant split: workgroup (slice s, group of GH query heads of one kv head, batch b)
//   walks the keys of slice s. Each subgroup takes chunks of SG consecutive keys: every
//   lane tests one key for every row (ord and tau only, one coalesced 4-byte read per
//   bias head: a dropped key costs nothing more), a ballot collects the chunk's kept
//   keys, and for each the subgroup reads its K and V rows once for all GH heads (lanes
//   over D), so the traffic is that of the kept keys. Per row (GH heads x Lq rows, at
//   most NR) it keeps a running max m, sum l and o (lanes hold DPL = DH / SG elements),
//   and the subgroups merge theirs into one (m, l, o) per slice, part[b][h][i][s].
// variant reduce: workgroup (row i, head h, batch b) merges the partials in a fixed
//   order: O = sum_s o_s e^(m_s - M) / L, L = sum_s l_s e^(m_s - M), LSE = M + log L; a
//   row with no kept key gets O = 0, LSE = -inf.
// The slice length follows from P.Lk and the split grid (push constant slices): one
// recorded grid serves every cache length up to the one it was sized for. ord of
// (b, hb) starts at P.ordOff + (b * Hb + hb) * P.ordSL (P.ordSL 0: Lk).
// A row only ever touches the keys it keeps, so a NaN or Inf in V reaches exactly the
// rows that keep its key.
//
// variant: split -DSPLIT=1
// variant: reduce
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_KHR_shader_subgroup_ballot : require

layout(local_size_x_id = 2) in;  // split: NSGW subgroups (NT = NSGW * SG); reduce: any

#include "dma_common.glsl"

layout(constant_id = 0) const uint DH = 64;   // head dimension, a multiple of SG
layout(constant_id = 3) const uint SG = 32;   // subgroup size (the pipeline pins it)
layout(constant_id = 4) const uint NR = 4;    // most rows (query heads x rows) of a workgroup
const uint DPL = DH / SG;
const uint NSGW = 4u;                          // subgroups of a split workgroup

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

// Keys per slice: Lk over the slices, in whole subgroup chunks.
uint sliceLength() { return ((P.Lk + pc.slices - 1u) / pc.slices + SG - 1u) / SG * SG; }


bool packed16, bf16;
float loadQ(uint e) { return packed16 ? unpack16(qbuf[e >> 1], e, bf16) : uintBitsToFloat(qbuf[e]); }
float loadK(uint e) { return packed16 ? unpack16(kbuf[e >> 1], e, bf16) : uintBitsToFloat(kbuf[e]); }
float loadV(uint e) { return packed16 ? unpack16(vbuf[e >> 1], e, bf16) : uintBitsToFloat(vbuf[e]); }

float safeTanh(float x) {
	float t = exp(-2.0 * abs(x));
	float y = (1.0 - t) / (1.0 + t);
	return x < 0.0 ? -y : y;
}

#ifdef SPLIT
shared float Qs[NR * DH];
const uint UNR = 4u;           // chunks of SG keys a subgroup tests at once
const uint KW = (SG + 31u) / 32u;
shared uint keepS[NSGW * UNR * SG];  // the chunks' keep bits (bit r: row r keeps the key)
shared uint ordS[NSGW * UNR * SG];   // and their ord when the heads share one bias head
shared float Ms[NSGW * NR], Ls[NSGW * NR];  // each subgroup's running max and sum

void main() {
	uint s = gl_WorkGroupID.x, hg = gl_WorkGroupID.y, b = gl_WorkGroupID.z;
	uint sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
	uint lid = gl_LocalInvocationID.x;
	packed16 = P.storage != STORAGE_F32;
	bf16 = P.storage == STORAGE_BF16;
	uint n = P.Lq, sliceLen = sliceLength();
	uint j0 = s * sliceLen;
	if (j0 >= P.Lk) return;  // past the keys: the merge reads no partial of this slice
	uint jEnd = min(j0 + sliceLen, P.Lk);
	bool causal = P.causal != 0u, rowCausal = P.mode == MODE_ROW && causal;
	if (causal) jEnd = uint(clamp(int(n) + P.posOffset, int(j0), int(jEnd)));  // past every row
	// The query heads of this workgroup: GH of one kv head's group (GH divides G, GH * n
	// <= NR), so their K and V rows are read once for all of them.
	uint GH = headsPerGroup();
	uint h0 = hg * GH, kvh = h0 / P.G, R = GH * n;  // rows r = g * n + i, head h0 + g
	bool sharedBias = P.Hb != P.H;  // one bias head (the kv head's) for every head here
	for (uint e = lid; e < R * DH; e += gl_WorkGroupSize.x) {
		uint r = e / DH, g = r / n, i = r - g * n;
		Qs[e] = loadQ(P.qOff + b * P.qSB + (h0 + g) * P.qSH + i * P.qSL + e % DH);
	}
	uvec2 tau[NR];
	int pos[NR];
	uint obase[NR];
	for (uint r = 0u; r < NR; r++) {
		uint g = min(r, R - 1u) / n, i = min(r, R - 1u) - g * n;
		uint hb = sharedBias ? kvh : h0 + g;
		obase[r] = ordRow(b * P.Hb + hb);
		pos[r] = int(i) + P.posOffset;
		tau[r] = (r < R && rowCausal) ? taub[(b * P.Hb + hb) * P.Lq + i] : uvec2(0u);
	}
	barrier();

	float m[NR], l[NR], o[NR][DPL];
	for (uint r = 0u; r < NR; r++) {
		m[r] = NEG_INF;
		l[r] = 0.0;
		for (uint x = 0u; x < DPL; x++) o[r][x] = 0.0;
	}
	uint kBase = P.kOff + b * P.kSB + kvh * P.kSH, vBase = P.vOff + b * P.vSB + kvh * P.vSH;
	// Each subgroup takes UNR chunks of SG keys at a time: their ord loads are
	// independent, so several are in flight (the walk over dropped keys is latency-bound).
	// Chunk t of the slice (keys j0 + t*SG ...) belongs to subgroup t % NSGW, so short
	// slices still spread over every subgroup; a round takes UNR chunks of each subgroup.
	// Every subgroup runs every round (keys past jEnd are masked): the subgroup barriers
	// stay in workgroup-uniform control flow, which Mesa 26's lavapipe needs.
	for (uint c0 = j0; c0 < jEnd; c0 += NSGW * UNR * SG) {
		uint c = c0 + sg * SG;
		uint ojs[UNR];
		for (uint u = 0u; u < UNR; u++) {
			uint j = c + u * NSGW * SG + lane;
			ojs[u] = (sharedBias && j < jEnd) ? ordb[obase[0] + j] : 0u;
		}
		uvec4 kept[UNR];  // which lanes' keys some row keeps
		for (uint u = 0u; u < UNR; u++) {
			// Lane-parallel keep test: bit r set when row r keeps key j.
			uint j = c + u * NSGW * SG + lane, keep = 0u;
			if (j < jEnd) {
				for (uint r = 0u; r < NR; r++) {
					if (r >= R) break;
					uint ojr = sharedBias ? ojs[u] : ordb[obase[r] + j];
					bool k = ojr != 0u && (!causal || int(j) <= pos[r]);
					if (k && rowCausal) k = keyGE(uvec2(ojr, j), tau[r]);
					if (k) keep |= 1u << r;
				}
			}
			keepS[(sg * UNR + u) * SG + lane] = keep;
			ordS[(sg * UNR + u) * SG + lane] = ojs[u];
			kept[u] = subgroupBallot(keep != 0u);
		}
		subgroupMemoryBarrierShared();
		subgroupBarrier();
		for (uint u = 0u; u < UNR; u++) {
			for (uint wd = 0u; wd < KW; wd++) {
				uint bits = kept[u][wd];
				while (bits != 0u) {
					uint bit = wd * 32u + uint(findLSB(bits));
					bits &= bits - 1u;
					uint at = (sg * UNR + u) * SG + bit, jj = c + u * NSGW * SG + bit, kp = keepS[at];
					float kv[DPL], vv[DPL];
					for (uint x = 0u; x < DPL; x++) kv[x] = loadK(kBase + jj * P.kSL + lane + SG * x);
					for (uint x = 0u; x < DPL; x++) vv[x] = loadV(vBase + jj * P.vSL + lane + SG * x);
					for (uint r = 0u; r < NR; r++) {
						if ((kp & (1u << r)) == 0u) continue;  // uniform: kp is the subgroup's
						float delta = unord(sharedBias ? ordS[at] : ordb[obase[r] + jj]);
						float acc = 0.0;
						for (uint x = 0u; x < DPL; x++) acc = fma(Qs[r * DH + lane + SG * x], kv[x], acc);
						float sc = P.scale * subgroupAdd(acc) + delta;
						if (P.softcap > 0.0) sc = P.softcap * safeTanh(sc / P.softcap);
						float mn = max(m[r], sc);
						float alpha = m[r] == NEG_INF ? 0.0 : exp(m[r] - mn);
						float pj = exp(sc - mn);
						l[r] = l[r] * alpha + pj;
						for (uint x = 0u; x < DPL; x++) o[r][x] = o[r][x] * alpha + pj * vv[x];
						m[r] = mn;
					}
				}
			}
		}
		subgroupBarrier();  // keepS is read before the next chunks overwrite it
	}
	// Merge the subgroups' partials in shared memory (Qs, done with, holds the sum), in
	// subgroup order, and leave one partial per slice: part[b][h][i][s].
	if (lane == 0u) {
		for (uint r = 0u; r < NR; r++) {
			Ms[sg * NR + r] = m[r];
			Ls[sg * NR + r] = l[r];
		}
	}
	barrier();
	for (uint u = 0u; u < NSGW; u++) {
		if (sg == u) {
			for (uint r = 0u; r < NR; r++) {
				if (r >= R) break;
				float M = NEG_INF;
				for (uint z = 0u; z < NSGW; z++) M = max(M, Ms[z * NR + r]);
				float f = m[r] == NEG_INF ? 0.0 : exp(m[r] - M);
				for (uint x = 0u; x < DPL; x++) {
					uint e = r * DH + lane + SG * x;
					Qs[e] = (u == 0u ? 0.0 : Qs[e]) + f * o[r][x];
				}
			}
		}
		barrier();
	}
	for (uint e = lid; e < R * DH; e += gl_WorkGroupSize.x) {
		uint r = e / DH, d = e - r * DH, g = r / n, i = r - g * n;
		uint at = (((b * P.H + h0 + g) * P.Lq + i) * pc.slices + s) * (DH + 2u);
		if (d == 0u) {
			float M = NEG_INF, L = 0.0;
			for (uint z = 0u; z < NSGW; z++) M = max(M, Ms[z * NR + r]);
			for (uint z = 0u; z < NSGW; z++)
				if (Ms[z * NR + r] != NEG_INF) L += exp(Ms[z * NR + r] - M) * Ls[z * NR + r];
			part[at] = M;
			part[at + 1u] = L;
		}
		part[at + 2u + d] = Qs[e];
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
	packed16 = P.storage != STORAGE_F32;
	bf16 = P.storage == STORAGE_BF16;
	uint sliceLen = sliceLength();
	uint np = (P.Lk + sliceLen - 1u) / sliceLen;  // partials written: one per slice
	uint pBase = (((b * P.H + h) * P.Lq) + i) * pc.slices;
	const uint W = DH + 2u;
	float mx = NEG_INF;
	for (uint q = lid; q < np; q += RED) mx = max(mx, part[(pBase + q) * W]);
	float M = reduce(mx, 0u);
	float ls = 0.0;
	for (uint q = lid; q < np; q += RED) {
		float ms = part[(pBase + q) * W];
		if (ms != NEG_INF) ls += exp(ms - M) * part[(pBase + q) * W + 1u];
	}
	float L = reduce(ls, 1u);
	if (lid == 0u) lseb[(b * P.H + h) * P.Lq + i] = L > 0.0 ? M + log(L) : NEG_INF;
	// Invocation (group gi, pair dp) sums the partials gi, gi + NGR, ... of elements
	// 2dp, 2dp + 1; then group 0 adds the groups up in order.
	uint gi = lid / NPAIR, dp = lid - gi * NPAIR;
	vec2 acc = vec2(0.0);
	if (gi < NGR) {
		for (uint q = gi; q < np; q += NGR) {
			float ms = part[(pBase + q) * W];
			if (ms == NEG_INF) continue;  // no kept key there (its o is 0)
			uint e = (pBase + q) * W + 2u + 2u * dp;
			acc += exp(ms - M) * vec2(part[e], part[e + 1u]);
		}
	}
	accS[lid] = acc;
	barrier();
	if (gi != 0u) return;
	for (uint z = 1u; z < NGR; z++) acc += accS[z * NPAIR + dp];
	vec2 v = L > 0.0 ? acc / L : vec2(0.0);
	uint d = 2u * dp;
	uint oBase = P.oOff + b * P.oSB + h * P.oSH + i * P.oSL;
	if (packed16) ob[(oBase + d) >> 1] = pack16(v.x, v.y, bf16);
	else {
		ob[oBase + d] = floatBitsToUint(v.x);
		ob[oBase + d + 1u] = floatBitsToUint(v.y);
	}
}
#endif
