package doge_test

import (
	"context"
	"testing"

	"github.com/dmavk/dmavk/doge"
	"github.com/stretchr/testify/require"
)

// TestBatchedStepsMatchAlone: sequences of different lengths stepped together (one
// submission per step; the shorter one crosses the window, so its recording changes
// phase mid-way; one leaves the batch early) give the logits each gives alone.
func TestBatchedStepsMatchAlone(t *testing.T) {
	n := openNN(t)
	ctx := context.Background()
	m, ref := loadFixture(t, n, "tiny", doge.Options{})
	ids := ref.ints(t, "prompt_ids")
	prompts := [][]int{ids[:200], ids[:50], ids[100:161]}
	const steps = 20
	feed := func(seq, i int) int { return ids[(seq*37+i*11)%len(ids)] }
	alone := make([][]float32, len(prompts))
	for s, p := range prompts {
		st, err := m.NewState(1, 256)
		require.NoError(t, err)
		defer st.Close()
		_, err = st.Prefill(ctx, 0, p)
		require.NoError(t, err)
		for i := 0; i < steps; i++ {
			l, err := st.Step(ctx, []int{0}, []int{feed(s, i)})
			require.NoError(t, err)
			alone[s] = append(alone[s], l...)
		}
	}
	st, err := m.NewState(3, 256)
	require.NoError(t, err)
	defer st.Close()
	for s, p := range prompts {
		_, err = st.Prefill(ctx, s, p)
		require.NoError(t, err)
	}
	v := m.Cfg.VocabSize
	together := make([][]float32, len(prompts))
	for i := 0; i < steps; i++ {
		seqs := []int{2, 0, 1}
		if i >= steps-5 {
			seqs = []int{0, 2} // sequence 1 is done
		}
		toks := make([]int, len(seqs))
		for j, s := range seqs {
			toks[j] = feed(s, i)
		}
		l, err := st.Step(ctx, seqs, toks)
		require.NoError(t, err)
		for j, s := range seqs {
			together[s] = append(together[s], l[j*v:(j+1)*v]...)
		}
	}
	for s := range prompts {
		want := alone[s]
		if s == 1 {
			want = want[:(steps-5)*v]
		}
		closeRows(t, want, together[s], v, 1e-6, "batched")
		require.Equal(t, len(prompts[s])+len(together[s])/v, st.Len(s))
	}
}

func TestStateErrors(t *testing.T) {
	n := openNN(t)
	ctx := context.Background()
	m, _ := loadFixture(t, n, "tiny", doge.Options{})
	st, err := m.NewState(2, 8)
	require.NoError(t, err)
	_, err = st.Step(ctx, []int{0}, []int{1})
	require.ErrorContains(t, err, "empty")
	_, err = st.Prefill(ctx, 0, []int{1, 2, 5000})
	require.ErrorContains(t, err, "outside the vocabulary")
	_, err = st.Prefill(ctx, 0, make([]int, 9))
	require.ErrorContains(t, err, "capacity")
	_, err = st.Prefill(ctx, 2, []int{1})
	require.ErrorContains(t, err, "sequence 2 of 2")
	_, err = st.Prefill(ctx, 0, []int{1, 2, 3, 4, 5, 6, 7})
	require.NoError(t, err)
	_, err = st.Prefill(ctx, 0, []int{1, 2})
	require.ErrorContains(t, err, "sequence 0 holds 7 tokens: 2 more exceed the capacity 8")
	require.Equal(t, 7, st.Len(0))
	_, err = st.Step(ctx, []int{0, 0}, []int{1, 1})
	require.ErrorContains(t, err, "twice")
	_, err = st.Step(ctx, []int{0}, []int{1, 2})
	require.ErrorContains(t, err, "1 sequences for 2 tokens")
	_, err = st.Step(ctx, []int{0}, []int{3})
	require.NoError(t, err)
	_, err = st.Step(ctx, []int{0}, []int{3})
	require.ErrorContains(t, err, "full")
	require.Equal(t, 8, st.Len(0))
	require.NoError(t, st.Reset(0))
	require.Equal(t, 0, st.Len(0))
	_, err = st.Prefill(ctx, 0, []int{4})
	require.NoError(t, err)
	require.NoError(t, st.Close())
	require.NoError(t, st.Close())
	_, err = st.Step(ctx, []int{0}, []int{1})
	require.ErrorContains(t, err, "closed")
}

// TestStatesConcurrent: two states of one model, used from two goroutines at once,
// give what each gives alone.
func TestStatesConcurrent(t *testing.T) {
	n := openNN(t)
	ctx := context.Background()
	m, ref := loadFixture(t, n, "moe", doge.Options{})
	ids := ref.ints(t, "prompt_ids")
	run := func(p []int) ([]float32, error) {
		st, err := m.NewState(1, 128)
		if err != nil {
			return nil, err
		}
		defer st.Close()
		out, err := st.Prefill(ctx, 0, p)
		if err != nil {
			return nil, err
		}
		for i := 0; i < 5; i++ {
			l, err := st.Step(ctx, []int{0}, []int{p[i]})
			if err != nil {
				return nil, err
			}
			out = append(out, l...)
		}
		return out, nil
	}
	prompts := [][]int{ids[:90], ids[40:117]}
	want := make([][]float32, 2)
	for i, p := range prompts {
		var err error
		want[i], err = run(p)
		require.NoError(t, err)
	}
	got := make([][]float32, 2)
	errs := make([]error, 2)
	done := make(chan int)
	for i, p := range prompts {
		go func() {
			got[i], errs[i] = run(p)
			done <- i
		}()
	}
	<-done
	<-done
	for i := range prompts {
		require.NoError(t, errs[i])
		require.Equal(t, want[i], got[i])
	}
}

// TestCloseOrder: a model closed before its state makes the state's calls fail with
// an error; closing twice, and in either order, is safe.
func TestCloseOrder(t *testing.T) {
	n := openNN(t)
	ctx := context.Background()
	m, _ := loadFixture(t, n, "tiny", doge.Options{})
	st, err := m.NewState(1, 16)
	require.NoError(t, err)
	_, err = st.Prefill(ctx, 0, []int{0, 5, 6})
	require.NoError(t, err)
	_, err = st.Step(ctx, []int{0}, []int{7})
	require.NoError(t, err)
	require.NoError(t, m.Close())
	require.NoError(t, m.Close())
	_, err = st.Step(ctx, []int{0}, []int{7})
	require.ErrorContains(t, err, "model is closed")
	_, err = m.NewState(1, 4)
	require.ErrorContains(t, err, "model is closed")
	require.NoError(t, st.Close())
	require.NoError(t, st.Close())
}
