#version 450
// Routing of product-key experts (Doge's CDMoE): for token n of N, from the router's
// output R [N, 2K] read as transformers views it (R.view(2, N, K): the x scores of token
// n are R's flat elements [nK, nK + K), its y scores [(N + n)K, (N + n)K + K)), the top
// `top` experts e = a*K + b by score x[a] + y[b], in descending order (ties: the smaller
// sorted position first), and the softmax of their scores (normalized again when norm
// is set). x and y are sorted first (descending, ties by index); a pair of sorted
// positions (i, j) can be among the top only if (i+1)(j+1) <= top, since the (i+1)(j+1)
// pairs at or before it in both orders score at least as much. Each candidate's rank
// is the number of candidates that beat it. One workgroup per token (x + 65535 y); K <= 256,
// top <= 256.

layout(local_size_x = 256) in;

layout(std430, binding = 0) readonly buffer BufR { float R[]; };
layout(std430, binding = 1) writeonly buffer BufIdx { uint idx[]; };
layout(std430, binding = 2) writeonly buffer BufW { float rw[]; };

layout(push_constant) uniform Push { uint N, K, top, norm; } pc;

const uint MAXC = 2048; // candidates: top * H(top) < 2048 for top <= 256
shared float sv[2][256];
shared uint si[2][256];
shared float cs[MAXC];
shared uint ce[MAXC];
shared uint ncand;
shared float topS[256];
shared uint topE[256];
shared float red[256];

// a beats b: a higher score, or an equal one at a smaller (sorted) position.
bool beats(float sa, uint pa, float sb, uint pb) { return sa > sb || (sa == sb && pa < pb); }

void main() {
	uint n = gl_WorkGroupID.x + gl_WorkGroupID.y * 65535u, t = gl_LocalInvocationID.x;
	if (n >= pc.N) return;
	uint K = pc.K;
	// Rank sort of x (s = 0) and y (s = 1).
	for (uint s = 0; s < 2u; s++) {
		uint base = (s * pc.N + n) * K;
		float v = 0.0;
		if (t < K) v = R[base + t];
		barrier();
		if (t < K) sv[s][t] = v;
		barrier();
		if (t < K) {
			uint rank = 0;
			for (uint o = 0; o < K; o++) {
				float w = sv[s][o];
				if (w > v || (w == v && o < t)) rank++;
			}
			si[s][rank] = t;
		}
		barrier();
	}
	// Sorted values.
	float xs = t < K ? sv[0][si[0][t]] : 0.0;
	float ys = t < K ? sv[1][si[1][t]] : 0.0;
	barrier();
	if (t < K) {
		sv[0][t] = xs;
		sv[1][t] = ys;
	}
	if (t == 0u) {
		uint c = 0;
		for (uint i = 0; i < min(K, pc.top); i++) {
			uint jn = min(K, pc.top / (i + 1u));
			for (uint j = 0; j < jn && c < MAXC; j++) {
				ce[c] = i * 256u + j; // sorted positions, packed
				c++;
			}
		}
		ncand = c;
	}
	barrier();
	uint nc = ncand;
	for (uint c = t; c < nc; c += 256u) cs[c] = sv[0][ce[c] >> 8] + sv[1][ce[c] & 255u];
	barrier();
	// Ties at equal sums: the smaller flattened sorted position i*K + j first, as the
	// flattened topk over all pairs would order them.
	for (uint c = t; c < nc; c += 256u) {
		float s = cs[c];
		uint p = (ce[c] >> 8) * K + (ce[c] & 255u);
		uint rank = 0;
		for (uint o = 0; o < nc; o++) {
			uint po = (ce[o] >> 8) * K + (ce[o] & 255u);
			if (beats(cs[o], po, s, p)) rank++;
		}
		if (rank < pc.top) {
			topS[rank] = s;
			topE[rank] = si[0][ce[c] >> 8] * K + si[1][ce[c] & 255u];
		}
	}
	barrier();
	// Softmax over the chosen scores (the first is the largest).
	float e = t < pc.top ? exp(topS[t] - topS[0]) : 0.0;
	red[t] = e;
	barrier();
	for (uint h = 128u; h > 0u; h >>= 1) {
		if (t < h) red[t] += red[t + h];
		barrier();
	}
	float w = e / red[0];
	if (pc.norm != 0u) {
		barrier();
		red[t] = w;
		barrier();
		for (uint h = 128u; h > 0u; h >>= 1) {
			if (t < h) red[t] += red[t + h];
			barrier();
		}
		w /= red[0];
	}
	if (t < pc.top) {
		idx[n * pc.top + t] = topE[t];
		rw[n * pc.top + t] = w;
	}
}
