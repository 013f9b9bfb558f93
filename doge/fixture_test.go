package doge_test

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"testing"

	"github.com/dmavk/dmavk/checkpoint"
	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/doge"
	"github.com/dmavk/dmavk/internal/vktest"
	"github.com/dmavk/dmavk/nn"
	"github.com/stretchr/testify/require"
)

func openNN(t testing.TB) *nn.Device {
	t.Helper()
	in := vktest.Instance(t)
	pd, err := in.Choose()
	require.NoError(t, err)
	d, err := dma.OpenOn(in, pd, dma.Config{})
	require.NoError(t, err)
	n, err := nn.New(d)
	require.NoError(t, err)
	t.Cleanup(func() { n.Close(); d.Close() })
	return n
}

// fixture is a reference file of testdata/doge.
type fixture struct{ f *checkpoint.File }

func (r fixture) floats(t testing.TB, name string) []float32 {
	x, err := r.f.Tensor(name)
	require.NoError(t, err)
	v, err := x.Float32s()
	require.NoError(t, err)
	return v
}

func (r fixture) ints(t testing.TB, name string) []int {
	x, err := r.f.Tensor(name)
	require.NoError(t, err)
	v, err := x.Int64s()
	require.NoError(t, err)
	out := make([]int, len(v))
	for i, y := range v {
		out[i] = int(y)
	}
	return out
}

func fixtureDir(name string) string { return filepath.Join("..", "testdata", "doge", name) }

func loadFixture(t testing.TB, n *nn.Device, name string, o doge.Options) (*doge.Model, fixture) {
	t.Helper()
	m, err := doge.Load(context.Background(), n, fixtureDir(name), o)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	f, err := checkpoint.OpenFile(filepath.Join(fixtureDir(name), "reference.safetensors"))
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return m, fixture{f}
}

// closeRows checks got against want row by row ([rows, vocab]): every row within
// tol * max |want row|.
func closeRows(t testing.TB, want, got []float32, vocab int, tol float64, what string) {
	t.Helper()
	require.Equal(t, len(want), len(got), what)
	worst := 0.0
	defer func() { t.Logf("%s: worst row error %.2e of its max |logit|", what, worst) }()
	for r := 0; r < len(want)/vocab; r++ {
		m, e := 0.0, 0.0
		for c := 0; c < vocab; c++ {
			i := r*vocab + c
			m = max(m, math.Abs(float64(want[i])))
			e = max(e, math.Abs(float64(want[i])-float64(got[i])))
		}
		worst = max(worst, e/m)
		require.LessOrEqualf(t, e, tol*m, "%s row %d: max error %.3g of max |logit| %.3g (rel %.3g)", what, r, e, m, e/m)
	}
}

func argmax(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

// TestFixtures runs each fixture model's prompt and greedy continuation and compares
// with transformers' float32 logits: within 1e-4 of max |logit|, the same greedy tokens;
// with the prompt in one chunk and in several.
func TestFixtures(t *testing.T) {
	n := openNN(t)
	ctx := context.Background()
	const tol = 1e-4
	for _, c := range []struct {
		name  string
		chunk int
	}{{"tiny", 0}, {"moe", 0}, {"rope", 0}, {"tiny", 64}, {"moe", 96}} {
		name := c.name
		t.Run(fmt.Sprintf("%s/chunk=%d", name, c.chunk), func(t *testing.T) {
			m, ref := loadFixture(t, n, name, doge.Options{PrefillChunk: c.chunk})
			vocab := m.Cfg.VocabSize
			ids := ref.ints(t, "prompt_ids")
			st, err := m.NewState(1, len(ids)+16)
			require.NoError(t, err)
			defer st.Close()
			all, err := st.PrefillAll(ctx, 0, ids)
			require.NoError(t, err)
			positions := ref.ints(t, "positions")
			var got []float32
			for _, p := range positions {
				got = append(got, all[p*vocab:(p+1)*vocab]...)
			}
			closeRows(t, ref.floats(t, "prefill_logits"), got, vocab, tol, "prefill")
			// Argmax at every prompt position, where the reference's choice is clear.
			wantArg, wantMax := ref.ints(t, "prefill_argmax"), ref.floats(t, "prefill_max")
			for p := range ids {
				row := all[p*vocab : (p+1)*vocab]
				if a := argmax(row); a != wantArg[p] {
					require.LessOrEqualf(t, math.Abs(float64(row[a]-row[wantArg[p]])), 2*tol*math.Abs(float64(wantMax[p])),
						"position %d: argmax %d, transformers %d", p, a, wantArg[p])
				}
			}
			greedy := ref.ints(t, "greedy_ids")
			stepWant := ref.floats(t, "step_logits")
			last := all[(len(ids)-1)*vocab:]
			steps := append([]float32(nil), last...)
			tok := argmax(last)
			require.Equal(t, greedy[0], tok, "first greedy token")
			for i := 1; i < len(greedy); i++ {
				logits, err := st.Step(ctx, []int{0}, []int{tok})
				require.NoError(t, err)
				steps = append(steps, logits...)
				tok = argmax(logits)
				require.Equalf(t, greedy[i], tok, "greedy token %d", i)
			}
			closeRows(t, stepWant, steps, vocab, tol, "decode")
		})
	}
}

// TestFixturesHalf runs the half-precision checkpoints with Half: DMA in the checkpoint's
// dtype, tensor-core products where the device has them. The logits stay within the
// dtype's rounding of the float32 reference (fp16 2e-3, bf16 1e-2 of max |logit|).
func TestFixturesHalf(t *testing.T) {
	n := openNN(t)
	ctx := context.Background()
	for _, c := range []struct {
		name  string
		tol   float64
		chunk int
	}{{"moe", 1e-2, 0}, {"rope", 2e-3, 0}, {"rope", 2e-3, 96}} {
		t.Run(fmt.Sprintf("%s/chunk=%d", c.name, c.chunk), func(t *testing.T) {
			m, ref := loadFixture(t, n, c.name, doge.Options{Half: true, PrefillChunk: c.chunk})
			require.NotEqual(t, dma.Float32, m.DType)
			vocab := m.Cfg.VocabSize
			ids := ref.ints(t, "prompt_ids")
			st, err := m.NewState(1, len(ids)+16)
			require.NoError(t, err)
			defer st.Close()
			all, err := st.PrefillAll(ctx, 0, ids)
			require.NoError(t, err)
			var got []float32
			for _, p := range ref.ints(t, "positions") {
				got = append(got, all[p*vocab:(p+1)*vocab]...)
			}
			closeRows(t, ref.floats(t, "prefill_logits"), got, vocab, c.tol, "prefill")
			greedy := ref.ints(t, "greedy_ids")
			steps := append([]float32(nil), all[(len(ids)-1)*vocab:]...)
			for i := 1; i < len(greedy); i++ {
				l, err := st.Step(ctx, []int{0}, []int{greedy[i-1]})
				require.NoError(t, err)
				steps = append(steps, l...)
			}
			closeRows(t, ref.floats(t, "step_logits"), steps, vocab, c.tol, "decode")
		})
	}
}

// TestRoPEFrequencies: the prefill's inverse frequencies are transformers' (dynamic
// RoPE at 300 positions over max_position_embeddings 256, and the default).
func TestRoPEFrequencies(t *testing.T) {
	for _, name := range []string{"rope", "tiny"} {
		ck, err := checkpoint.Open(fixtureDir(name))
		require.NoError(t, err)
		defer ck.Close()
		f, err := checkpoint.OpenFile(filepath.Join(fixtureDir(name), "reference.safetensors"))
		require.NoError(t, err)
		defer f.Close()
		want := fixture{f}.floats(t, "inv_freq_prefill")
		got := doge.RoPEOf(ck.Config).InvFreqFor(300)
		require.Len(t, got, len(want))
		for i := range want {
			// torch's float32 pow is not always correctly rounded: one unit in the last
			// place apart at most.
			w := want[i]
			require.Truef(t, got[i] == w || got[i] == math.Nextafter32(w, 0) || got[i] == math.Nextafter32(w, 1), "%s: inv_freq[%d] %v, transformers %v", name, i, got[i], w)
		}
	}
}
