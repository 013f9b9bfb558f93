#version 450
// The picture of what DMA keeps, one invocation per pixel, for one (batch, head):
//   heat map  rows (queries) down, keys across; colour = the key's weight, kept keys
//             bright, candidates the row drops dim, keys past a causal row dark;
//   right     each row's threshold (the weight of its w-th best key) in the same
//             colours; grey where the row keeps every candidate;
//   bottom    the weights along the sequence as bars, bright where the cursor row
//             keeps the key, with the cursor row's threshold as a white line.
// Kept is decided exactly as the attention kernels decide it, from the selection
// plan's ord (order-preserving weight bits per key) and tau (the (ord, key) threshold
// per key position, (0, 0) = keep all).
// Output: packed 8-bit RGBA (or BGRA) words, row-major, width * height.

layout(local_size_x = 16, local_size_y = 16) in;

layout(std430, binding = 0) readonly buffer Ord { uint ord[]; };   // [B*Hb][Lk]
layout(std430, binding = 1) readonly buffer Tau { uvec2 tau[]; };  // [B*Hb][Lk] by key position
layout(std430, binding = 2) writeonly buffer Img { uint img[]; };  // [height][width]

layout(push_constant) uniform Push {
	uint width, height;   // the image
	uint mapW, mapH;      // the heat map's area, from (0, 0); strips right and below it
	uint bh;              // batch * Hb + bias head
	uint lq, lk;          // rows and keys
	int posOffset;        // key position of row 0 (Lk - Lq)
	uint mode;            // 0 row, 1 shared, 2 none
	uint causal;
	uint bgra;            // 1: write B, G, R, A byte order
	uint cursor;          // the row the bottom strip shows
	float row0, key0;     // first row and key of the view
	float rowsPerPx, keysPerPx;
	float wmin, wmax;     // finite weight range, for the colours
} P;

const uint gap = 2u; // pixels between the heat map and the strips

bool keyGE(uvec2 a, uvec2 b) { return a.x > b.x || (a.x == b.x && a.y >= b.y); }

// The float32 weight of order bits o (ordBits' inverse; 0 and 1 read as 0).
float weightOf(uint o) {
	uint u = (o & 0x80000000u) != 0u ? (o & 0x7fffffffu) : ~o;
	return uintBitsToFloat(u);
}

// A perceptual ramp from dark violet through red to pale yellow ("inferno"-like).
vec3 ramp(float t) {
	t = clamp(t, 0.0, 1.0);
	vec3 c0 = vec3(0.05, 0.02, 0.20), c1 = vec3(0.55, 0.10, 0.45), c2 = vec3(0.93, 0.35, 0.15), c3 = vec3(0.99, 0.95, 0.55);
	if (t < 1.0 / 3.0) return mix(c0, c1, t * 3.0);
	if (t < 2.0 / 3.0) return mix(c1, c2, t * 3.0 - 1.0);
	return mix(c2, c3, t * 3.0 - 2.0);
}

vec3 weightColour(float w) {
	if (isnan(w)) return vec3(1.0, 0.0, 1.0);
	float span = P.wmax - P.wmin;
	return ramp(span > 0.0 ? (w - P.wmin) / span : 1.0);
}

// The threshold of key position p under the mode; (0, 0) keeps every candidate.
uvec2 threshold(uint p) {
	if (P.mode == 2u) return uvec2(0u);
	if (P.mode == 1u || P.causal == 0u) return tau[P.bh * P.lk + P.lk - 1u]; // one top-w over all keys
	return tau[P.bh * P.lk + p];
}

// 0: not a candidate (past a causal row), 1: a candidate the row drops, 2: kept.
uint keeps(uint i, uint j) {
	int p = int(i) + P.posOffset;
	if (P.causal != 0u && int(j) > p) return 0u;
	if (ord[P.bh * P.lk + j] == 0u) return 0u; // removed by key padding
	uvec2 t = threshold(uint(max(p, 0)));
	return keyGE(uvec2(ord[P.bh * P.lk + j], j), t) ? 2u : 1u;
}

uint pack(vec3 c) {
	uvec3 u = uvec3(clamp(c, 0.0, 1.0) * 255.0 + 0.5);
	if (P.bgra != 0u) u = u.bgr;
	return u.r | u.g << 8 | u.b << 16 | 0xff000000u;
}

void main() {
	uint x = gl_GlobalInvocationID.x, y = gl_GlobalInvocationID.y;
	if (x >= P.width || y >= P.height) return;
	vec3 c = vec3(0.08);
	if (x < P.mapW && y < P.mapH) {
		uint i = uint(P.row0 + (float(y) + 0.5) * P.rowsPerPx);
		uint j = uint(P.key0 + (float(x) + 0.5) * P.keysPerPx);
		if (i < P.lq && j < P.lk) {
			uint k = keeps(i, j);
			vec3 w = weightColour(weightOf(ord[P.bh * P.lk + j]));
			c = k == 2u ? w : k == 1u ? w * 0.22 : vec3(0.02, 0.02, 0.04);
		}
	} else if (x >= P.mapW + gap && y < P.mapH) {
		uint i = uint(P.row0 + (float(y) + 0.5) * P.rowsPerPx);
		if (i < P.lq) {
			int p = int(i) + P.posOffset;
			uvec2 t = threshold(uint(max(p, 0)));
			c = t == uvec2(0u) ? vec3(0.45) : weightColour(weightOf(t.x));
		}
	} else if (y >= P.mapH + gap && x < P.mapW) {
		uint j = uint(P.key0 + (float(x) + 0.5) * P.keysPerPx);
		uint stripH = P.height - P.mapH - gap;
		if (j < P.lk && stripH > 0u) {
			float w = weightOf(ord[P.bh * P.lk + j]);
			float span = P.wmax - P.wmin;
			float t = isnan(w) ? 1.0 : clamp(span > 0.0 ? (w - P.wmin) / span : 1.0, 0.0, 1.0);
			uint bar = uint(t * float(stripH - 1u)) + 1u;       // pixels, from the bottom
			uint up = P.height - 1u - y;                         // this pixel, from the bottom
			uint i = min(P.cursor, P.lq - 1u);
			uint k = keeps(i, j);
			uvec2 tc = threshold(uint(max(int(i) + P.posOffset, 0)));
			float tw = weightOf(tc.x);
			float tt = clamp(span > 0.0 ? (tw - P.wmin) / span : 1.0, 0.0, 1.0);
			uint line = uint(tt * float(stripH - 1u)) + 1u;
			if (tc != uvec2(0u) && up + 1u == line) c = vec3(1.0);
			else if (up < bar) c = k == 2u ? weightColour(w) : weightColour(w) * 0.3;
		}
	}
	img[y * P.width + x] = pack(c);
}
