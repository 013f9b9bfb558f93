// Shared by the layer kernels (nn_*.comp, Go side: package nn). Tensors are row-major
// arrays of 32-bit words: float32 bits, or two 16-bit elements per word (fp16 or bf16),
// element e in the low (e even) or high (e odd) half of word e >> 1. A dtype code says
// which: 0 float32, 1 float16, 2 bfloat16 (dma.DType's order).

const uint DT_F32 = 0u, DT_F16 = 1u, DT_BF16 = 2u;

// Element e of a tensor of dtype dt from its word w (w = buf[e] for float32, buf[e >> 1]
// otherwise).
float widen(uint w, uint e, uint dt) {
	if (dt == DT_F32) return uintBitsToFloat(w);
	if (dt == DT_BF16) return uintBitsToFloat((e & 1u) != 0u ? (w & 0xffff0000u) : (w << 16));
	return unpackHalf2x16(w)[e & 1u];
}

// The word that holds element e.
uint wordOf(uint e, uint dt) { return dt == DT_F32 ? e : e >> 1; }

// x rounded to bfloat16 bits (nearest, ties to even; a NaN stays a quiet NaN).
uint bf16Bits(float x) {
	uint u = floatBitsToUint(x);
	if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
	return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

// Two consecutive elements (a first) of a 16-bit tensor as one word.
uint pack16(float a, float b, uint dt) {
	if (dt == DT_BF16) return bf16Bits(a) | (bf16Bits(b) << 16);
	return packHalf2x16(vec2(a, b));
}
