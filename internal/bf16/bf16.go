// Package bf16 converts between float32 and bfloat16 bits: the high 16 bits of a
// float32 (sign, the 8-bit exponent, 7 stored mantissa bits). Widening is exact;
// narrowing rounds to nearest even, keeps infinities, and keeps NaN a (quiet) NaN.
package bf16

import "math"

// FromFloat32 rounds f to the nearest bfloat16 value (ties to even). Values beyond the
// largest finite bfloat16 by half an ulp or more become infinities (correct rounding);
// subnormals round like any other value, as bfloat16 shares float32's exponent range.
// A NaN stays a NaN of the same sign, made quiet so that truncating its payload can
// never leave an infinity.
func FromFloat32(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 { // NaN
		return uint16(b>>16) | 0x0040
	}
	// Add just under half an ulp, plus the lowest kept bit: a tie rounds up exactly
	// when that bit is odd. A carry into the exponent is the correct result.
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// ToFloat32 widens bfloat16 bits exactly.
func ToFloat32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// Round is f rounded to the nearest bfloat16 value, as a float32.
func Round(f float32) float32 { return ToFloat32(FromFloat32(f)) }
