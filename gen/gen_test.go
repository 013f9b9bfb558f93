package gen_test

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/dmavk/dmavk/gen"
	"github.com/stretchr/testify/require"
)

// counter is a model whose next token is (last + seq + 1) mod vocab, made the argmax
// by a margin; it records the steps it was given.
type counter struct {
	vocab int
	last  map[int]int
	steps [][]int
}

func (c *counter) Vocab() int { return c.vocab }

func (c *counter) logits(seq int) []float32 {
	l := make([]float32, c.vocab)
	for i := range l {
		l[i] = float32(i%3) * 0.1
	}
	l[(c.last[seq]+seq+1)%c.vocab] = 5
	return l
}

func (c *counter) Prefill(ctx context.Context, seq int, tokens []int) ([]float32, error) {
	c.last[seq] = tokens[len(tokens)-1]
	return c.logits(seq), nil
}

func (c *counter) Step(ctx context.Context, seqs, tokens []int) ([]float32, error) {
	c.steps = append(c.steps, append([]int(nil), seqs...))
	var out []float32
	for i, s := range seqs {
		c.last[s] = tokens[i]
		out = append(out, c.logits(s)...)
	}
	return out, nil
}

func TestGreedyBatchedStops(t *testing.T) {
	m := &counter{vocab: 50, last: map[int]int{}}
	res, err := gen.Generate(context.Background(), m, [][]int{{1, 2}, {7}, {3, 3, 3}}, gen.Options{MaxTokens: 5, Stop: []int{12}}, nil)
	require.NoError(t, err)
	require.Equal(t, []int{3, 4, 5, 6, 7}, res.Tokens[0])
	require.Equal(t, []int{9, 11, 13, 15, 17}, res.Tokens[1])
	require.Equal(t, []int{6, 9, 12}, res.Tokens[2], "a stop token ends its sequence and is kept")
	require.Equal(t, 6, res.PromptTokens)
	require.Equal(t, 13, res.Generated)
	require.Equal(t, [][]int{{0, 1, 2}, {0, 1, 2}, {0, 1}, {0, 1}}, m.steps, "finished sequences leave the batch")
}

func TestEmitErrorStops(t *testing.T) {
	m := &counter{vocab: 10, last: map[int]int{}}
	boom := errors.New("boom")
	n := 0
	_, err := gen.Generate(context.Background(), m, [][]int{{1}}, gen.Options{MaxTokens: 9}, func(seq, tok int) error {
		n++
		if n == 3 {
			return boom
		}
		return nil
	})
	require.ErrorIs(t, err, boom)
	require.Equal(t, 3, n)
}

func TestOptionsChecked(t *testing.T) {
	m := &counter{vocab: 10, last: map[int]int{}}
	for _, o := range []gen.Options{{MaxTokens: -1}, {Temperature: -1}, {Temperature: math.NaN()}, {TopK: -2}, {TopP: 1.5}, {RepetitionPenalty: math.Inf(1)}} {
		_, err := gen.Generate(context.Background(), m, [][]int{{1}}, o, nil)
		require.Error(t, err, "%+v", o)
	}
	_, err := gen.Generate(context.Background(), m, [][]int{{}}, gen.Options{}, nil)
	require.ErrorContains(t, err, "empty")
}

// frequencies samples logits n times.
func frequencies(logits []float32, opt gen.Options, n int, seen map[int]bool) []float64 {
	rng := rand.New(rand.NewPCG(1, 2))
	f := make([]float64, len(logits))
	for i := 0; i < n; i++ {
		f[gen.Pick(logits, seen, opt, rng)]++
	}
	for i := range f {
		f[i] /= float64(n)
	}
	return f
}

func TestSamplingDistribution(t *testing.T) {
	logits := []float32{1, 2, 0.5, 3, -1, 2}
	const n = 200000
	softmax := func(x []float64) []float64 {
		m := math.Inf(-1)
		for _, v := range x {
			m = max(m, v)
		}
		s := 0.0
		out := make([]float64, len(x))
		for i, v := range x {
			out[i] = math.Exp(v - m)
			s += out[i]
		}
		for i := range out {
			out[i] /= s
		}
		return out
	}
	scaled := func(t float64, keep []bool, pen map[int]float64) []float64 {
		x := make([]float64, len(logits))
		for i, l := range logits {
			v := float64(l)
			if p, ok := pen[i]; ok {
				if v < 0 {
					v *= p
				} else {
					v /= p
				}
			}
			x[i] = v / t
			if keep != nil && !keep[i] {
				x[i] = math.Inf(-1)
			}
		}
		return softmax(x)
	}
	check := func(want, got []float64, what string) {
		t.Helper()
		for i := range want {
			require.InDeltaf(t, want[i], got[i], 0.005, "%s: token %d", what, i)
		}
	}
	check(scaled(0.7, nil, nil), frequencies(logits, gen.Options{Temperature: 0.7}, n, nil), "temperature")
	// Top-2 keeps 3 and both 2s (ties with the second logit stay).
	check(scaled(1, []bool{false, true, false, true, false, true}, nil), frequencies(logits, gen.Options{Temperature: 1, TopK: 2}, n, nil), "top-k")
	// Top-p 0.5: token 3 alone has p = 0.51 at temperature 1.
	p := scaled(1, nil, nil)
	require.Greater(t, p[3], 0.5)
	check([]float64{0, 0, 0, 1, 0, 0}, frequencies(logits, gen.Options{Temperature: 1, TopP: 0.5}, n, nil), "top-p")
	check(scaled(1, nil, map[int]float64{3: 2, 4: 2}), frequencies(logits, gen.Options{Temperature: 1, RepetitionPenalty: 2}, n, map[int]bool{3: true, 4: true}), "repetition penalty")
	// Greedy with the penalty: 3 drops to 1.5 below the 2s; the first 2 wins.
	require.Equal(t, 1, gen.Pick(logits, map[int]bool{3: true}, gen.Options{RepetitionPenalty: 2}, nil))
}

func TestSeedReproducible(t *testing.T) {
	run := func(seed uint64) [][]int {
		m := &counter{vocab: 50, last: map[int]int{}}
		res, err := gen.Generate(context.Background(), m, [][]int{{1}, {2}}, gen.Options{MaxTokens: 20, Temperature: 3, Seed: seed}, nil)
		require.NoError(t, err)
		return res.Tokens
	}
	require.Equal(t, run(7), run(7))
	require.NotEqual(t, run(7), run(8))
}
