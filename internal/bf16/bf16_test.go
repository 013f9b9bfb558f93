package bf16

import (
	"math"
	"math/rand/v2"
	"testing"
)

// nearest rounds f to bfloat16 by brute force: the closer of the two bfloat16 values
// around it (float64 arithmetic, exact here), the even one on a tie.
func nearest(f float32) uint16 {
	b := math.Float32bits(f)
	lo := uint16(b >> 16) // truncation: toward zero
	if b&0xffff == 0 {
		return lo
	}
	hi := lo + 1 // away from zero (may reach the infinity bit pattern)
	x := math.Abs(float64(f))
	dl := x - math.Abs(float64(ToFloat32(lo)))
	var dh float64
	if hi&0x7fff == 0x7f80 {
		// Infinity: compare with where the next binade's first value would be, 2^128.
		dh = math.Ldexp(1, 128) - x
	} else {
		dh = math.Abs(float64(ToFloat32(hi))) - x
	}
	switch {
	case dl < dh:
		return lo
	case dh < dl:
		return hi
	case lo&1 == 0:
		return lo
	}
	return hi
}

func TestFromFloat32Values(t *testing.T) {
	for _, c := range []struct {
		f    float32
		want uint16
	}{
		{0, 0x0000},
		{float32(math.Copysign(0, -1)), 0x8000},
		{1, 0x3f80},
		{-2, 0xc000},
		{float32(math.Inf(1)), 0x7f80},
		{float32(math.Inf(-1)), 0xff80},
		{math.Float32frombits(0x3f808000), 0x3f80}, // tie, even below
		{math.Float32frombits(0x3f818000), 0x3f82}, // tie, even above
		{math.Float32frombits(0x3f808001), 0x3f81}, // just over the tie
		{math.Float32frombits(0x3f807fff), 0x3f80}, // just under the tie
		{math.MaxFloat32, 0x7f80},                  // rounds to infinity
		{math.Float32frombits(0x7f7f7fff), 0x7f7f}, // largest finite stays
		{math.Float32frombits(0x00000001), 0x0000}, // smallest subnormal rounds to 0
		{math.Float32frombits(0x00008000), 0x0000}, // subnormal tie, even below
		{math.Float32frombits(0x00018000), 0x0002}, // subnormal tie, even above
		{math.Float32frombits(0x007fffff), 0x0080}, // largest subnormal carries into the exponent
	} {
		if got := FromFloat32(c.f); got != c.want {
			t.Errorf("FromFloat32(%g = %#08x) = %#04x, want %#04x", c.f, math.Float32bits(c.f), got, c.want)
		}
	}
}

func TestNaN(t *testing.T) {
	for _, b := range []uint32{0x7fc00000, 0x7f800001, 0x7f80ffff, 0xff800001, 0x7fffffff, 0xffc01234} {
		h := FromFloat32(math.Float32frombits(b))
		f := ToFloat32(h)
		if !math.IsNaN(float64(f)) {
			t.Errorf("NaN %#08x became %#04x (%g)", b, h, f)
		}
		if h>>15 != uint16(b>>31) {
			t.Errorf("NaN %#08x lost its sign: %#04x", b, h)
		}
	}
}

// Every bfloat16 value widens exactly and narrows back to itself (NaN made quiet).
func TestRoundTrip(t *testing.T) {
	for i := range 1 << 16 {
		h := uint16(i)
		f := ToFloat32(h)
		if math.Float32bits(f) != uint32(h)<<16 {
			t.Fatalf("ToFloat32(%#04x) = %#08x", h, math.Float32bits(f))
		}
		got := FromFloat32(f)
		if math.IsNaN(float64(f)) {
			if got != h|0x40 {
				t.Fatalf("NaN %#04x narrowed to %#04x", h, got)
			}
			continue
		}
		if got != h {
			t.Fatalf("%#04x narrowed back to %#04x", h, got)
		}
	}
}

// FromFloat32 agrees with brute-force nearest-even rounding: on every float32 of a
// stride through the whole encoding space, around every tie of a sample of exponents,
// and on random values.
func TestNearestEven(t *testing.T) {
	check := func(b uint32) {
		f := math.Float32frombits(b)
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			return
		}
		if got, want := FromFloat32(f), nearest(f); got != want {
			t.Fatalf("FromFloat32(%#08x) = %#04x, want %#04x", b, got, want)
		}
	}
	for b := uint64(0); b < 1<<32; b += 65521 { // a prime stride: every low-bit pattern shows
		check(uint32(b))
	}
	for hi := uint32(0); hi < 1<<16; hi += 97 {
		for _, lo := range []uint32{0x0000, 0x0001, 0x7fff, 0x8000, 0x8001, 0xffff} {
			check(hi<<16 | lo)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 1 << 20 {
		check(rng.Uint32())
	}
}
